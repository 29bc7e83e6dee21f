//! An entry's owner, mode, xattrs and times, set on the file created for it;
//! an owner the namespace lacks is recorded in [`OVERRIDE_STAT_XATTR`].

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use nix::fcntl::AtFlags;
use nix::sys::stat::{fchmod, fchmodat, utimensat, FchmodatFlags, Mode, UtimensatFlags};
use nix::unistd::{fchown, fchownat, Gid, Uid};
use xattr::FileExt;

use super::{proc_fd_path, Applier, Item, OVERRIDE_STAT_XATTR};
use crate::reader::Kind;
use crate::whiteout::is_overlay_xattr;

impl Applier<'_> {
    /// Owner, mode and xattrs of an entry open as `f` (a file or directory).
    pub(super) fn set_fd_meta(&mut self, f: &File, item: &Item) -> io::Result<()> {
        let mut xattrs = self.filter_xattrs(item);
        let chown =
            if self.opts.owners { fchown(f.as_raw_fd(), Some(uid(item.uid)?), Some(gid(item.gid)?)) } else { Ok(()) };
        match chown {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) if self.opts.record_unmapped_owners => {
                self.report.unmapped_owners += 1;
                xattrs.insert(OVERRIDE_STAT_XATTR.into(), override_stat(item));
            }
            Err(e) => return Err(e.into()),
        }
        // After chown, which clears setuid and setgid. A directory stays writable for its owner until
        // `finish` gives it its mode, so its entries can be created in it.
        let mode = if item.kind == Kind::Dir { item.mode | 0o700 } else { item.mode };
        fchmod(f.as_raw_fd(), Mode::from_bits_truncate(mode))?;
        for (name, value) in &xattrs {
            if let Err(e) = f.set_xattr(name, value) {
                self.refused_xattr(item, name, e)?;
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs and mtime of a symlink or node `last` in `parent`, without opening it.
    pub(super) fn set_at_meta(&mut self, parent: &File, last: &OsStr, item: &Item, symlink: bool) -> io::Result<()> {
        let mut xattrs = self.filter_xattrs(item);
        let res = if self.opts.owners {
            fchownat(
                Some(parent.as_raw_fd()),
                last,
                Some(uid(item.uid)?),
                Some(gid(item.gid)?),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
        } else {
            Ok(())
        };
        match res {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL) if self.opts.record_unmapped_owners => {
                self.report.unmapped_owners += 1;
                // user.* xattrs are not allowed on symlinks.
                if !symlink {
                    xattrs.insert(OVERRIDE_STAT_XATTR.into(), override_stat(item));
                }
            }
            Err(e) => return Err(e.into()),
        }
        if !symlink {
            // A node just created by mknodat: not a symlink, so following is the same as not.
            fchmodat(
                Some(parent.as_raw_fd()),
                last,
                Mode::from_bits_truncate(item.mode),
                FchmodatFlags::FollowSymlink,
            )?;
        }
        let path = proc_fd_path(parent).join(last);
        for (name, value) in &xattrs {
            if let Err(e) = xattr::set(&path, name, value) {
                self.refused_xattr(item, name, e)?;
            }
        }
        utimensat(Some(parent.as_raw_fd()), last, &item.mtime, &item.mtime, UtimensatFlags::NoFollowSymlink)?;
        Ok(())
    }

    fn filter_xattrs(&mut self, item: &Item) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for (name, value) in &item.xattrs {
            if is_overlay_xattr(name) {
                self.report.dropped_overlay_xattrs += 1;
            } else {
                out.insert(name.clone(), value.clone());
            }
        }
        out
    }

    /// An xattr the kernel refuses is skipped with a warning (as `trusted.*` in a user namespace);
    /// other failures are errors.
    fn refused_xattr(&mut self, item: &Item, name: &str, e: io::Error) -> io::Result<()> {
        match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::ENOTSUP) | Some(libc::EACCES) => {
                log::warn!("layer entry {:?}: xattr {name} not permitted here; skipped", item.name);
                self.report.refused_xattrs.push(format!("{}: {name}", item.name));
                Ok(())
            }
            _ => Err(e),
        }
    }
}

fn override_stat(item: &Item) -> Vec<u8> {
    format!("{}:{}:0{:o}", item.uid, item.gid, item.mode).into_bytes()
}

fn uid(id: u64) -> io::Result<Uid> {
    u32::try_from(id).map(Uid::from_raw).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "uid out of range"))
}

fn gid(id: u64) -> io::Result<Gid> {
    u32::try_from(id).map(Gid::from_raw).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "gid out of range"))
}
