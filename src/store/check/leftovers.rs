//! Layer dirs and what interrupted kilns left: every layer dir carries a
//! `verified` marker naming its own chain id and some image or record uses
//! that chain; nothing stays in `kiln/tmp/` or as a scratch dir.

use std::fs;
use std::path::PathBuf;

use super::super::layers::MARKER;
use super::super::{layer_dir_chain_id, StoreError, LAYERS_DIR};
use super::report::{Defect, Fix};
use super::{entries, Walk};

/// Prefixes of the scratch dirs kiln keeps beside the layer dirs.
const SCRATCH_PREFIXES: &[&str] = &[".step-", ".unpack-", ".stale-", super::super::remove::TRASH_PREFIX];

impl Walk<'_> {
    pub(super) fn layer_dirs(&mut self) -> Result<(), StoreError> {
        let root = self.store.private_dir().join(LAYERS_DIR);
        for (path, meta) in entries(&root)? {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.starts_with('.') {
                if SCRATCH_PREFIXES.iter().any(|p| name.starts_with(p)) {
                    self.leftover(path);
                }
                continue;
            }
            // `empty/` stands as an image's root; other names are no layer dir of kiln's.
            let Some(chain) = layer_dir_chain_id(&name).filter(|_| meta.is_dir()) else { continue };
            self.report.layer_dirs += 1;
            let defect = match fs::read_to_string(path.join(MARKER)) {
                Err(_) => Some(Defect::NoMarker),
                Ok(text) if text.lines().next() != Some(chain.as_str()) => {
                    Some(Defect::WrongMarker { named: text.lines().next().unwrap_or_default().to_string() })
                }
                Ok(_) if !path.join(kiln_overlay::rootfs::UPPER_DIR).is_dir() => Some(Defect::NoDiff),
                Ok(_) if !self.chains.contains(&chain) => {
                    if self.busy {
                        // A running build commits layers before the record or image that uses them.
                        self.report.in_use.push(path);
                        continue;
                    }
                    Some(Defect::Unreferenced)
                }
                Ok(_) => None,
            };
            if let Some(defect) = defect {
                self.problem(path.clone(), defect, Fix::Remove(vec![path]));
            }
        }
        Ok(())
    }

    pub(super) fn temp_files(&mut self) -> Result<(), StoreError> {
        for (path, _) in entries(&self.store.tmp_dir())? {
            self.leftover(path);
        }
        Ok(())
    }

    pub(super) fn leftover(&mut self, path: PathBuf) {
        if self.busy {
            self.report.in_use.push(path);
        } else {
            self.problem(path.clone(), Defect::Leftover, Fix::Remove(vec![path]));
        }
    }
}
