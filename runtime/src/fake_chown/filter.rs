//! The seccomp filter: the chown and chmod families of the architectures
//! kiln knows become user notifications for the supervisor.

use std::io;
use std::os::fd::AsFd;

use crate::sys;

/// linux/audit.h: AUDIT_ARCH_* of the architectures whose system call
/// numbers the filter knows (libc does not export them). Elsewhere 0, which
/// no call carries: the filter then lets everything through.
#[cfg(target_arch = "x86_64")]
pub(super) const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
pub(super) const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(super) const AUDIT_ARCH: u32 = 0;

/// fchmodat2 (Linux 6.6) has the same number on every architecture; libc
/// lacks it for some targets.
pub(super) const SYS_FCHMODAT2: i64 = 452;

/// The calls the filter sends to the supervisor on this architecture.
#[cfg(target_arch = "x86_64")]
pub(super) const INTERCEPTED: &[i64] = &[
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_chmod,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    SYS_FCHMODAT2,
];
#[cfg(target_arch = "aarch64")]
pub(super) const INTERCEPTED: &[i64] =
    &[libc::SYS_fchown, libc::SYS_fchownat, libc::SYS_fchmod, libc::SYS_fchmodat, SYS_FCHMODAT2];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(super) const INTERCEPTED: &[i64] = &[];

/// Whether this build can intercept chown (an architecture it knows).
pub fn supported() -> bool {
    AUDIT_ARCH != 0
}

/// The BPF program: calls of another architecture (i386 or arm32 compat;
/// x32 numbers differ too) and every other call pass; the intercepted ones
/// notify the listener.
pub(super) fn program() -> Vec<libc::sock_filter> {
    let mut calls = INTERCEPTED.to_vec();
    if !INTERCEPTED.is_empty() {
        calls.extend_from_slice(crate::fake_ids::CALLS);
    }
    build_program(AUDIT_ARCH, &calls)
}

pub(super) fn build_program(arch: u32, nrs: &[i64]) -> Vec<libc::sock_filter> {
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = |offset: usize| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset as u32);
    // Far fewer than 255 calls, so every jump fits its u8 offset.
    let n = nrs.len() as u8;
    let mut prog = vec![
        load(std::mem::offset_of!(libc::seccomp_data, arch)),
        // Another architecture: skip the number checks and the load, to ALLOW.
        jeq(arch, 0, n + 1),
        load(std::mem::offset_of!(libc::seccomp_data, nr)),
    ];
    for (i, nr) in nrs.iter().enumerate() {
        // On a match jump over the remaining checks and ALLOW, to USER_NOTIF.
        prog.push(jeq(*nr as u32, n - i as u8, 0));
    }
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW));
    prog.push(stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_USER_NOTIF));
    prog
}

/// In the step's PID 1, just before exec: installs the filter and sends its
/// listener to the supervisor over `sock`.
pub fn install(sock: &impl AsFd) -> io::Result<()> {
    let listener = sys::install_seccomp_listener(&program())?;
    sys::send_fd(sock, &listener)
}
