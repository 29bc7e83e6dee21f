//! The record of an owner the namespace lacks: `uid:gid:0mode` in
//! [`OVERRIDE_STAT_XATTR`](super::OVERRIDE_STAT_XATTR), as containers/storage writes it.

/// `uid:gid:0mode`, as containers/storage writes it.
pub(super) fn format_override(uid: u32, gid: u32, mode: u32) -> String {
    format!("{uid}:{gid}:0{:o}", mode & 0o7777)
}

/// Parses a record (a trailing `:type` field is allowed and ignored).
pub(super) fn parse_override(value: &[u8]) -> Option<(u32, u32, u32)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(':');
    let uid = parts.next()?.parse().ok()?;
    let gid = parts.next()?.parse().ok()?;
    let mode = u32::from_str_radix(parts.next()?, 8).ok()?;
    Some((uid, gid, mode & 0o7777))
}

/// The mode a chown leaves on a non-directory: like the kernel, it drops
/// setuid, and setgid when group execute is set (without it the bit means
/// mandatory locking, not privilege).
pub(super) fn mode_after_chown(mode: u32) -> u32 {
    let mut mode = mode & !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        mode &= !libc::S_ISGID;
    }
    mode
}
