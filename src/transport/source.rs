//! Read access to files of an image source: a directory, or a tar archive
//! indexed once and then read at random (the archive may list index.json
//! after the blobs, and layers should not be read twice).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use kiln_overlay::reader::Kind;
use tempfile::NamedTempFile;

use super::TransportError;

/// How many bytes of a small JSON file (index, manifest, config) we read.
const MAX_METADATA: u64 = 64 << 20;
/// How many links we follow before calling it a loop.
const MAX_LINKS: usize = 16;

pub trait Source {
    /// A name for messages.
    fn name(&self) -> String;
    /// Opens the file at `rel` (a '/'-separated relative path), or `None` if
    /// it does not exist.
    fn open(&self, rel: &str) -> Result<Option<Box<dyn Read + '_>>, TransportError>;

    /// Reads a small file whole.
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, TransportError> {
        let Some(reader) = self.open(rel)? else { return Ok(None) };
        let mut bytes = Vec::new();
        reader.take(MAX_METADATA).read_to_end(&mut bytes).map_err(|source| TransportError::Io {
            action: "read",
            path: PathBuf::from(format!("{}/{rel}", self.name())),
            source,
        })?;
        Ok(Some(bytes))
    }

    /// Like `read`, but a missing file is an error.
    fn read_required(&self, rel: &str) -> Result<Vec<u8>, TransportError> {
        self.read(rel)?.ok_or_else(|| TransportError::Missing { name: rel.to_string(), source_name: self.name() })
    }
}

pub struct DirSource {
    root: PathBuf,
}

impl DirSource {
    pub fn new(root: &Path) -> Self {
        DirSource { root: root.to_path_buf() }
    }
}

impl Source for DirSource {
    fn name(&self) -> String {
        self.root.display().to_string()
    }

    fn open(&self, rel: &str) -> Result<Option<Box<dyn Read + '_>>, TransportError> {
        let Some(rel) = normalize(rel) else { return Ok(None) };
        let path = self.root.join(rel);
        match File::open(&path) {
            Ok(file) => Ok(Some(Box::new(file))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TransportError::Io { action: "open", path, source }),
        }
    }
}

#[derive(Debug, Clone)]
enum Item {
    File {
        offset: u64,
        size: u64,
    },
    /// A symlink or hard link, resolved to an archive path.
    Link(String),
}

pub struct TarSource {
    path: PathBuf,
    file: File,
    items: HashMap<String, Item>,
    /// Holds a decompressed copy of a gzip'd archive alive.
    _decompressed: Option<NamedTempFile>,
}

impl TarSource {
    /// Indexes the archive at `path`; a gzip'd archive is first decompressed
    /// into `tmp_dir`.
    pub fn open(path: &Path, tmp_dir: &Path) -> Result<Self, TransportError> {
        let io_err = |action: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| TransportError::Io { action, path: p, source }
        };
        let file = File::open(path).map_err(io_err("open archive", path))?;
        let mut magic = [0u8; 2];
        let magic_len = file.read_at(&mut magic, 0).map_err(io_err("read archive", path))?;
        let is_gzip = magic_len == 2 && magic == [0x1f, 0x8b];
        let (file, decompressed) = if is_gzip {
            let mut tmp =
                NamedTempFile::with_prefix_in("archive-", tmp_dir).map_err(io_err("create temp file in", tmp_dir))?;
            let mut decoder = flate2::bufread::MultiGzDecoder::new(BufReader::new(&file));
            io::copy(&mut decoder, tmp.as_file_mut()).map_err(io_err("decompress archive", path))?;
            tmp.as_file_mut().flush().map_err(io_err("decompress archive", path))?;
            let file = tmp.reopen().map_err(io_err("reopen", tmp.path()))?;
            (file, Some(tmp))
        } else {
            (file, None)
        };
        let items = index_archive(&file).map_err(io_err("read archive", path))?;
        Ok(TarSource { path: path.to_path_buf(), file, items, _decompressed: decompressed })
    }

    fn lookup(&self, rel: &str) -> Result<Option<(u64, u64)>, TransportError> {
        let Some(mut current) = normalize(rel) else { return Ok(None) };
        for _ in 0..MAX_LINKS {
            match self.items.get(&current) {
                None => return Ok(None),
                Some(Item::File { offset, size }) => return Ok(Some((*offset, *size))),
                Some(Item::Link(target)) => current = target.clone(),
            }
        }
        Err(TransportError::LinkLoop(rel.to_string()))
    }
}

impl Source for TarSource {
    fn name(&self) -> String {
        self.path.display().to_string()
    }

    fn open(&self, rel: &str) -> Result<Option<Box<dyn Read + '_>>, TransportError> {
        Ok(self.lookup(rel)?.map(|(offset, size)| {
            Box::new(BufReader::with_capacity(
                256 * 1024,
                RangeReader { file: &self.file, pos: offset, end: offset.saturating_add(size) },
            )) as Box<dyn Read + '_>
        }))
    }
}

/// Reads `file[pos..end]` with positional reads, so readers share the file.
struct RangeReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "archive ends inside an entry"));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

fn index_archive(file: &File) -> io::Result<HashMap<String, Item>> {
    let mut items = HashMap::new();
    let mut reader = kiln_overlay::reader::Reader::new(file);
    while let Some(entry) = reader.next_entry_seeking()? {
        let raw_path = entry.display();
        let Some(path) = normalize(&raw_path) else { continue };
        let item = match entry.kind {
            Kind::File => Item::File { offset: reader.position(), size: entry.size },
            Kind::Hardlink | Kind::Symlink => {
                let target = String::from_utf8_lossy(&entry.link).into_owned();
                let resolved = if entry.kind == Kind::Symlink && !target.starts_with('/') {
                    let parent = path.rsplit_once('/').map_or("", |(dir, _)| dir);
                    normalize(&format!("{parent}/{target}"))
                } else {
                    normalize(&target)
                };
                match resolved {
                    Some(resolved) => Item::Link(resolved),
                    None => continue,
                }
            }
            _ => continue,
        };
        items.insert(path, item);
    }
    Ok(items)
}

/// `./a/../b//c` → `b/c`; `None` for paths that leave the root or are empty.
pub fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            _ => parts.push(part),
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalizes_archive_paths() {
        assert_eq!(normalize("./blobs/sha256/ab").as_deref(), Some("blobs/sha256/ab"));
        assert_eq!(normalize("/a//b/./c").as_deref(), Some("a/b/c"));
        assert_eq!(normalize("x/../y/layer.tar").as_deref(), Some("y/layer.tar"));
        assert_eq!(normalize("../etc/passwd"), None);
        assert_eq!(normalize("./"), None);
    }
}
