//! Decoding a notification into the call it stands for: chown or chmod,
//! of a path or an open file.

use super::filter::SYS_FCHMODAT2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    /// `None` is -1: keep that id.
    Chown {
        uid: Option<u32>,
        gid: Option<u32>,
    },
    Chmod {
        mode: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    /// The open file itself (fchown, fchmod).
    Fd(i32),
    /// A path (address in the caller's memory) from a directory descriptor
    /// (`None`: the working directory).
    Path { dirfd: Option<i32>, addr: u64, follow: bool, empty_ok: bool },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Call {
    pub(super) op: Op,
    pub(super) target: Target,
}

fn id(arg: u64) -> Option<u32> {
    // uid_t is 32 bits: the kernel ignores the upper half.
    Some(arg as u32).filter(|id| *id != u32::MAX)
}

fn dirfd(arg: u64) -> Option<i32> {
    Some(arg as i32).filter(|fd| *fd != libc::AT_FDCWD)
}

/// The call a notification stands for; `None` for anything the kernel
/// should judge itself (unknown flags, other calls).
pub(super) fn decode(nr: i64, a: &[u64; 6]) -> Option<Call> {
    let path = |dirfd, addr, follow| Target::Path { dirfd, addr, follow, empty_ok: false };
    let at_path = |dir: u64, addr: u64, flags: u64| {
        let known = (libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH) as u64;
        (flags & !known == 0).then_some(Target::Path {
            dirfd: dirfd(dir),
            addr,
            follow: flags & libc::AT_SYMLINK_NOFOLLOW as u64 == 0,
            empty_ok: flags & libc::AT_EMPTY_PATH as u64 != 0,
        })
    };
    let chown = |a1: u64, a2: u64| Op::Chown { uid: id(a1), gid: id(a2) };
    let chmod = |m: u64| Op::Chmod { mode: m as u32 & 0o7777 };
    let call = |op, target| Some(Call { op, target });
    #[cfg(target_arch = "x86_64")]
    match nr {
        libc::SYS_chown => return call(chown(a[1], a[2]), path(None, a[0], true)),
        libc::SYS_lchown => return call(chown(a[1], a[2]), path(None, a[0], false)),
        libc::SYS_chmod => return call(chmod(a[1]), path(None, a[0], true)),
        _ => {}
    }
    match nr {
        libc::SYS_fchown => call(chown(a[1], a[2]), Target::Fd(a[0] as i32)),
        libc::SYS_fchownat => call(chown(a[2], a[3]), at_path(a[0], a[1], a[4])?),
        libc::SYS_fchmod => call(chmod(a[1]), Target::Fd(a[0] as i32)),
        libc::SYS_fchmodat => call(chmod(a[2]), path(dirfd(a[0]), a[1], true)),
        SYS_FCHMODAT2 => call(chmod(a[2]), at_path(a[0], a[1], a[3])?),
        _ => None,
    }
}
