//! Whiteouts in a layer: an opaque dir and a deleted entry, kept in overlay
//! form for a layer dir of its own or carried out on a rootfs.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;

use super::{join, nul_error, proc_fd_path, remove_existing, Applier};
use crate::whiteout::{self, WhiteoutFormat};

impl Applier<'_> {
    pub(super) fn opaque(&mut self, parent: &[OsString]) -> io::Result<()> {
        let dir = match self.opts.whiteouts {
            // Nothing to empty where there is no directory.
            WhiteoutFormat::Naive => match self.open_dir(&join(parent)) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(()),
                other => other?,
            },
            _ => self.ensure_dir(parent)?,
        };
        self.report.opaque_dirs += 1;
        match self.opts.whiteouts {
            WhiteoutFormat::Naive => {
                let rel = join(parent);
                for child in std::fs::read_dir(proc_fd_path(&dir))? {
                    let child = child?;
                    if !self.written.contains(&rel.join(child.file_name())) {
                        remove_existing(&dir, &child.file_name())?;
                    }
                }
                Ok(())
            }
            _ => whiteout::set_opaque(&dir, &self.opts.prefix),
        }
    }

    pub(super) fn whiteout(&mut self, parent: &[OsString], hidden: &OsStr) -> io::Result<()> {
        let rel = join(parent).join(hidden);
        if self.written.contains(&rel) {
            return Ok(());
        }
        let dir = match self.opts.whiteouts {
            // Nothing to delete under a parent that does not exist.
            WhiteoutFormat::Naive => match self.open_dir(&join(parent)) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => return Ok(()),
                other => other?,
            },
            _ => self.ensure_dir(parent)?,
        };
        self.report.whiteouts += 1;
        remove_existing(&dir, hidden)?;
        if self.opts.whiteouts != WhiteoutFormat::Naive {
            let name = CString::new(hidden.as_bytes()).map_err(|_| nul_error())?;
            whiteout::create_whiteout(&dir, &name, self.opts.whiteouts, &self.opts.prefix)?;
        }
        Ok(())
    }
}
