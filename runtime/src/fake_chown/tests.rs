use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;

use super::decode::Call;
use super::filter::{build_program, program, INTERCEPTED};
use super::*;

/// Runs the classic-BPF subset the filter uses over one seccomp_data.
fn run_bpf(prog: &[libc::sock_filter], nr: i32, arch: u32) -> u32 {
    let mut acc = 0u32;
    let mut pc = 0usize;
    loop {
        let ins = prog.get(pc).expect("the program jumps inside itself");
        let code = u32::from(ins.code);
        if code == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS {
            acc = match ins.k as usize {
                k if k == std::mem::offset_of!(libc::seccomp_data, nr) => nr as u32,
                k if k == std::mem::offset_of!(libc::seccomp_data, arch) => arch,
                k => panic!("load of offset {k}"),
            };
            pc += 1;
        } else if code == libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K {
            pc += 1 + usize::from(if acc == ins.k { ins.jt } else { ins.jf });
        } else if code == libc::BPF_RET | libc::BPF_K {
            return ins.k;
        } else {
            panic!("unexpected instruction {code:#x}");
        }
    }
}

#[test]
fn the_filter_notifies_exactly_the_chown_and_chmod_calls_of_this_architecture() {
    let prog = build_program(0xC000_003E, &[92, 94, 260]);
    for nr in [92, 94, 260] {
        assert_eq!(run_bpf(&prog, nr, 0xC000_003E), libc::SECCOMP_RET_USER_NOTIF, "nr {nr}");
        assert_eq!(run_bpf(&prog, nr, 0x4000_0003), libc::SECCOMP_RET_ALLOW, "nr {nr} of i386");
    }
    for nr in [0, 1, 93, 259, 261, 0x4000_0000 + 92] {
        assert_eq!(run_bpf(&prog, nr, 0xC000_003E), libc::SECCOMP_RET_ALLOW, "nr {nr}");
    }
    if supported() {
        let prog = program();
        for nr in INTERCEPTED {
            assert_eq!(run_bpf(&prog, *nr as i32, AUDIT_ARCH), libc::SECCOMP_RET_USER_NOTIF);
        }
        assert_eq!(run_bpf(&prog, libc::SYS_getpid as i32, AUDIT_ARCH), libc::SECCOMP_RET_ALLOW);
    }
}

#[test]
fn decodes_the_at_variants_with_their_flags() {
    let nofollow = libc::AT_SYMLINK_NOFOLLOW as u64;
    let cwd = libc::AT_FDCWD as u32 as u64;
    let call = decode(libc::SYS_fchownat, &[cwd, 0x1000, 4242, u32::MAX as u64, nofollow, 0]).unwrap();
    assert_eq!(call.op, Op::Chown { uid: Some(4242), gid: None });
    assert_eq!(call.target, Target::Path { dirfd: None, addr: 0x1000, follow: false, empty_ok: false });
    let call = decode(libc::SYS_fchownat, &[5, 0x1000, 0, 7, libc::AT_EMPTY_PATH as u64, 0]).unwrap();
    assert_eq!(call.target, Target::Path { dirfd: Some(5), addr: 0x1000, follow: true, empty_ok: true });
    // Flags the kernel would reject are left to the kernel.
    assert_eq!(decode(libc::SYS_fchownat, &[5, 0x1000, 0, 7, 0x8000_0000, 0]), None);
    let call = decode(libc::SYS_fchown, &[3, 1, 2, 0, 0, 0]).unwrap();
    assert_eq!(call, Call { op: Op::Chown { uid: Some(1), gid: Some(2) }, target: Target::Fd(3) });
    let call = decode(libc::SYS_fchmodat, &[cwd, 0x2000, 0o104755, 0, 0, 0]).unwrap();
    assert_eq!(call.op, Op::Chmod { mode: 0o4755 });
    assert_eq!(decode(libc::SYS_getpid, &[0; 6]), None);
}

#[test]
fn override_records_round_trip_in_the_containers_storage_form() {
    assert_eq!(format_override(4242, 4243, 0o100644), "4242:4243:0644");
    assert_eq!(parse_override(b"4242:4243:0644"), Some((4242, 4243, 0o644)));
    assert_eq!(parse_override(b"0:0:04755:file"), Some((0, 0, 0o4755)));
    assert_eq!(parse_override(b"x:0:0644"), None);
    assert_eq!(parse_override(b"1:2"), None);
}

#[test]
fn chown_drops_setuid_and_executable_setgid_like_the_kernel() {
    assert_eq!(mode_after_chown(0o4755), 0o755);
    assert_eq!(mode_after_chown(0o2755), 0o755);
    assert_eq!(mode_after_chown(0o2745), 0o2745);
    assert_eq!(mode_after_chown(0o1777), 0o1777);
}

#[test]
fn reads_a_path_out_of_a_process_memory() {
    let mem = File::open("/proc/self/mem").unwrap();
    let text = CString::new("/some/path/in/memory").unwrap();
    assert_eq!(read_c_string(&mem, text.as_ptr() as u64).unwrap(), b"/some/path/in/memory");
    // A string that ends right before a page boundary.
    let mut buf = vec![b'a'; 3 * 4096];
    let page_end = (buf.as_ptr() as usize / 4096 + 2) * 4096 - buf.as_ptr() as usize;
    buf[page_end - 1] = 0;
    let start = page_end - 10;
    assert_eq!(read_c_string(&mem, buf[start..].as_ptr() as u64).unwrap(), vec![b'a'; 9]);
    assert_eq!(read_c_string(&mem, 0).unwrap_err().raw_os_error(), Some(libc::EIO));
}

fn supervisor() -> Supervisor {
    let me = nix::unistd::getuid().as_raw();
    let one = |id| vec![IdMap { container: id, host: id, size: 1 }];
    Supervisor {
        proc_dir: File::open("/proc").unwrap().into(),
        uids: one(me),
        gids: one(nix::unistd::getgid().as_raw()),
        rooted: true,
        ids: Default::default(),
    }
}

fn opath(path: &Path, follow: bool) -> OwnedFd {
    let flags = libc::O_PATH | if follow { 0 } else { libc::O_NOFOLLOW };
    sys::openat2(&File::open("/").unwrap(), path, flags, 0).unwrap()
}

fn record(path: &Path) -> Option<String> {
    xattr::get(path, OVERRIDE_STAT_XATTR).unwrap().map(|v| String::from_utf8(v).unwrap())
}

#[test]
fn unmapped_owners_are_recorded_and_mapped_ones_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o4750)).unwrap();
    let sup = supervisor();
    let me = (nix::unistd::getuid().as_raw(), nix::unistd::getgid().as_raw());

    assert_eq!(sup.chown(&opath(&file, true), Some(4242), Some(4243)).unwrap(), Reply::Done);
    assert_eq!(record(&file).as_deref(), Some("4242:4243:0750"));
    // -1 keeps the recorded id, not the real one.
    assert_eq!(sup.chown(&opath(&file, true), None, Some(7)).unwrap(), Reply::Done);
    assert_eq!(record(&file).as_deref(), Some("4242:7:0750"));
    sup.chmod(&opath(&file, true), 0o640).unwrap();
    assert_eq!(record(&file).as_deref(), Some("4242:7:0640"));
    // Back to mapped ids: the record goes, the kernel does the real chown.
    assert_eq!(sup.chown(&opath(&file, true), Some(me.0), Some(me.1)).unwrap(), Reply::Continue);
    assert_eq!(record(&file), None);
    sup.chmod(&opath(&file, true), 0o600).unwrap();
    assert_eq!(record(&file), None, "chmod alone records nothing");

    // Directories keep their setgid bit; symlinks cannot carry a record.
    let sub = dir.path().join("d");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o2775)).unwrap();
    assert_eq!(sup.chown(&opath(&sub, true), Some(1000), None).unwrap(), Reply::Done);
    assert_eq!(record(&sub), Some(format!("1000:{}:02775", me.1)));
    let link = dir.path().join("l");
    std::os::unix::fs::symlink("f", &link).unwrap();
    assert_eq!(sup.chown(&opath(&link, false), Some(7), Some(7)).unwrap(), Reply::Done);
    assert_eq!(record(&file), None);
}
