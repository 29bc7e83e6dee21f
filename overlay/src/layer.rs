//! Writing a layer blob in one pass: entries go through the tar writer, a sha256 of the plain tar (the
//! diff_id), the compressor, and a sha256 and byte count of the compressed blob (its digest and size).
//! Compression runs on every core (parallel gzip blocks, zstd workers) while the caller's thread walks, tars
//! and hashes; nothing is read twice and nothing is synced here (the caller syncs the finished blob once).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::compress::{encoder_threads, Compression, Encoder};
use crate::digest::HashingWriter;
use crate::pgzip::default_threads;
use crate::tarfmt::{EntryKind, EntryMeta, TarWriter};

/// What a finished layer blob is, as a manifest and an image config name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar, for the config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// sha256 of the blob as written, for the manifest's layer descriptor.
    pub digest: String,
    /// Blob bytes as written.
    pub size: u64,
    pub compression: Compression,
}

type Stack<W> = TarWriter<HashingWriter<Encoder<HashingWriter<BufWriter<W>>>>>;

/// Output buffer: tar headers are 512-byte writes, which should not each be a syscall when uncompressed.
const OUT_BUF: usize = 128 * 1024;

/// Writes a layer blob to `out` while computing its diff_id, digest and size.
pub struct LayerWriter<W: Write + 'static> {
    tar: Stack<W>,
    compression: Compression,
}

impl<W: Write + 'static> LayerWriter<W> {
    /// A writer compressing at the default level of `compression`, on every core.
    pub fn new(out: W, compression: Compression) -> io::Result<Self> {
        Self::with_level(out, compression, None)
    }

    /// A writer compressing at `level` (None: the default). A level outside
    /// [`Compression::level_range`] is an [`io::ErrorKind::InvalidInput`] error.
    pub fn with_level(out: W, compression: Compression, level: Option<u32>) -> io::Result<Self> {
        Self::with_threads(out, compression, level, default_threads())
    }

    /// [`LayerWriter::with_level`] on `threads` compression threads; the blob does not depend on `threads`.
    pub fn with_threads(out: W, compression: Compression, level: Option<u32>, threads: usize) -> io::Result<Self> {
        let out = BufWriter::with_capacity(OUT_BUF, out);
        // An uncompressed blob is the tar itself: its digest is the diff_id,
        // so hashing it a second time would only cost time.
        let blob =
            if compression == Compression::None { HashingWriter::counting(out) } else { HashingWriter::new(out) };
        let tar = TarWriter::new(HashingWriter::new(encoder_threads(compression, level, threads, blob)?));
        Ok(LayerWriter { tar, compression })
    }

    /// Appends one entry; see [`TarWriter::append`].
    pub fn append(&mut self, meta: &EntryMeta, data: Option<&mut dyn Read>) -> io::Result<()> {
        self.tar.append(meta, data)
    }

    /// Appends the file, directory, link or node at `path` under the archive name `rel`, reading its
    /// metadata with [`entry_from_path`]. Returns the metadata written.
    pub fn append_path(&mut self, path: &Path, rel: impl AsRef<[u8]>) -> io::Result<EntryMeta> {
        let meta = entry_from_path(path, rel)?;
        if meta.kind == EntryKind::File {
            let mut f = File::open(path)?;
            self.tar.append(&meta, Some(&mut f))?;
        } else {
            self.tar.append(&meta, None)?;
        }
        Ok(meta)
    }

    /// Uncompressed tar bytes written so far.
    pub fn tar_bytes(&self) -> u64 {
        self.tar.get_ref().bytes()
    }

    /// Ends the archive, flushes the compressor, and returns the output with the layer's description.
    pub fn finish(self) -> io::Result<(W, LayerInfo)> {
        let plain = self.tar.finish()?;
        let diff_id = plain.digest();
        let blob = plain.into_inner().finish()?;
        let info = LayerInfo {
            digest: blob.try_digest().unwrap_or_else(|| diff_id.clone()),
            diff_id,
            size: blob.bytes(),
            compression: self.compression,
        };
        let out = blob.into_inner().into_inner().map_err(io::IntoInnerError::into_error)?;
        Ok((out, info))
    }
}

/// Xattrs that describe the overlay mount or the host's labelling, not the image's content.
fn skip_xattr(name: &str) -> bool {
    name.starts_with("user.overlay.") || name.starts_with("trusted.overlay.") || name == "security.selinux"
}

/// Reads the xattrs of `path` itself (not a symlink's target). A filesystem without xattr support yields none.
pub fn read_xattrs(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(e) if is_unsupported(&e) => return Ok(out),
        Err(e) => return Err(e),
    };
    for name in names {
        // A name that is not UTF-8 cannot be a PAX key; none of the namespaces images use has one.
        let Some(name) = name.to_str() else { continue };
        if skip_xattr(name) {
            continue;
        }
        match xattr::get(path, name) {
            // Gone between list and get: the attribute was removed meanwhile.
            Ok(None) => {}
            Ok(Some(value)) => {
                out.insert(name.to_string(), value);
            }
            Err(e) if is_unsupported(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn is_unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported || e.raw_os_error() == Some(libc::ENOTSUP)
}

/// Builds an entry for `path` from its lstat and xattrs, named `rel` in the archive. Sockets cannot be
/// archived (as in docker, callers skip them): they give an error of kind [`io::ErrorKind::Unsupported`].
/// Hard links are not detected here; a caller that tracks inodes turns repeats into [`EntryKind::Hardlink`].
pub fn entry_from_path(path: &Path, rel: impl AsRef<[u8]>) -> io::Result<EntryMeta> {
    let md = fs::symlink_metadata(path)?;
    let ft = md.file_type();
    let rdev = md.rdev();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        // Any bytes: a target need not be UTF-8.
        let target = fs::read_link(path)?.into_os_string().into_vec();
        EntryKind::Symlink(target.into())
    } else if ft.is_char_device() {
        EntryKind::CharDev { major: libc::major(rdev), minor: libc::minor(rdev) }
    } else if ft.is_block_device() {
        EntryKind::BlockDev { major: libc::major(rdev), minor: libc::minor(rdev) }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("archive {}: sockets cannot be stored in a layer", path.display()),
        ));
    };
    let size = if kind == EntryKind::File { md.size() } else { 0 };
    Ok(EntryMeta {
        path: rel.as_ref().into(),
        kind,
        mode: md.mode() & 0o7777,
        uid: u64::from(md.uid()),
        gid: u64::from(md.gid()),
        mtime: md.mtime(),
        size,
        xattrs: read_xattrs(path)?,
    })
}

#[cfg(test)]
mod tests;
