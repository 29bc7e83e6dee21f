//! Sources that live elsewhere: git repositories (cloned with the `git`
//! command) and files behind http(s) URLs (fetched with ureq). Used for
//! remote build contexts and for `ADD <url>`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::net::{self, Paced};

use super::{BuildContext, ContextError};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("run git to {what} ({url}): is git installed?")]
    GitMissing {
        what: &'static str,
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("git failed to {what} {url}: {stderr}")]
    Git { what: &'static str, url: String, stderr: String },
    #[error("the git reference {reference:?} of {url} has no directory {subdir:?}")]
    NoSubdir { url: String, reference: String, subdir: String },
    #[error("download {url}")]
    Http {
        url: String,
        #[source]
        source: ureq::Error,
    },
    #[error("download {url}")]
    Net {
        url: String,
        #[source]
        source: net::NetError,
    },
    #[error("download {url}: reading from {host} failed")]
    Read {
        url: String,
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("download {url}: {detail}")]
    Redirect { url: String, detail: String },
    #[error("{url} served neither an archive nor a Dockerfile of at most {}", net::human_bytes(*.limit))]
    DockerfileTooLarge { url: String, limit: u64 },
    #[error("--build-context {url}: the URL serves neither a git repository nor a tar archive")]
    NotAnArchive { url: String },
    #[error("download {url}: the server answered {status}")]
    Status { url: String, status: u16 },
    #[error("write the download of {url}")]
    Write {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error("create a temporary directory for {url}")]
    TempDir {
        url: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Context(#[from] ContextError),
}

/// Where a remote source lives, by the docker CLI's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    Git(GitUrl),
    Http(String),
}

/// A git URL split as docker reads `repo#ref:subdir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitUrl {
    pub repo: String,
    /// Branch, tag or commit; `None` is the remote's default branch.
    pub reference: Option<String>,
    /// Directory inside the repository; `None` is its root.
    pub subdir: Option<String>,
}

/// Classifies a context argument or ADD source: `git://`, `ssh://`,
/// `git@…` and `github.com/…` are git, as is an http(s) URL whose path ends
/// in `.git`; any other http(s) URL is a plain download. Local paths are `None`.
pub fn classify(word: &str) -> Option<Remote> {
    let is_http = word.starts_with("http://") || word.starts_with("https://");
    let before_fragment = word.split('#').next().unwrap_or(word);
    let git = ["git://", "ssh://", "git@", "github.com/"].iter().any(|p| word.starts_with(p))
        || (is_http && before_fragment.ends_with(".git"));
    if git {
        Some(Remote::Git(GitUrl::parse(word)))
    } else if is_http {
        Some(Remote::Http(word.to_string()))
    } else {
        None
    }
}

/// Whether `word` names a remote source rather than a context path.
pub fn is_remote(word: &str) -> bool {
    classify(word).is_some()
}

impl GitUrl {
    pub fn parse(word: &str) -> GitUrl {
        let (repo, fragment) = match word.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (word, None),
        };
        let repo = if repo.starts_with("github.com/") { format!("https://{}", repo) } else { repo.to_string() };
        let (reference, subdir) = match fragment {
            Some(f) => match f.split_once(':') {
                Some((r, s)) => (r, s),
                None => (f, ""),
            },
            None => ("", ""),
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        GitUrl { repo, reference: some(reference), subdir: some(subdir.trim_matches('/')) }
    }

    /// Clones into the empty directory `dest` at the reference, with
    /// submodules, as shallow as the server allows. Without `keep_git_dir`
    /// the `.git` directory is removed. Returns the commit checked out.
    pub fn clone_into(&self, dest: &Path, keep_git_dir: bool) -> Result<String, RemoteError> {
        self.git(dest, "create a repository for", &["init", "-q"])?;
        self.git(dest, "add the remote", &["remote", "add", "origin", &self.repo])?;
        let reference = self.reference.as_deref().unwrap_or("HEAD");
        // A server may refuse a shallow fetch of a commit id: then fetch
        // everything and look the reference up among commits and branches.
        let target = if self.git(dest, "fetch", &["fetch", "-q", "--depth=1", "origin", reference]).is_ok() {
            "FETCH_HEAD".to_string()
        } else {
            self.git(dest, "fetch", &["fetch", "-q", "--tags", "origin"])?;
            let exists = |r: &str| {
                self.git(dest, "resolve", &["rev-parse", "-q", "--verify", &format!("{r}^{{commit}}")]).is_ok()
            };
            let branch = format!("origin/{reference}");
            if !exists(reference) && exists(&branch) {
                branch
            } else {
                reference.to_string()
            }
        };
        self.git(dest, "check out", &["checkout", "-q", "--detach", &target])?;
        self.git(dest, "fetch the submodules of", &["submodule", "update", "-q", "--init", "--recursive", "--depth=1"])
            .or_else(|_| {
                self.git(dest, "fetch the submodules of", &["submodule", "update", "-q", "--init", "--recursive"])
            })?;
        let commit = self.git(dest, "resolve the commit of", &["rev-parse", "HEAD"])?;
        if !keep_git_dir {
            remove_git_dirs(dest).map_err(|source| RemoteError::Write { url: self.repo.clone(), source })?;
        }
        Ok(commit.trim().to_string())
    }

    fn git(&self, dir: &Path, what: &'static str, args: &[&str]) -> Result<String, RemoteError> {
        // Over http(s), git gives up on a transfer slower than the minimum
        // rate for the length of the deadline, as kiln's own downloads do.
        let limits = net::Limits::from_env();
        let out = Command::new("git")
            .args(["-c", "advice.detachedHead=false"])
            .arg("-c")
            .arg(format!("http.lowSpeedLimit={}", limits.min_rate))
            .arg("-c")
            .arg(format!("http.lowSpeedTime={}", limits.deadline.as_secs().max(1)))
            .args(args)
            .current_dir(dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| RemoteError::GitMissing { what, url: net::redact(&self.repo), source })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(RemoteError::Git { what, url: net::redact(&self.repo), stderr });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Removes `.git` everywhere in a checkout: the top directory and the
/// `.git` files of submodules (git never tracks a path named `.git`).
fn remove_git_dirs(root: &Path) -> io::Result<()> {
    let mut found = Vec::new();
    let mut walk = walkdir::WalkDir::new(root).min_depth(1).into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(io::Error::other)?;
        if entry.file_name() == ".git" {
            if entry.file_type().is_dir() {
                walk.skip_current_dir();
            }
            found.push((entry.path().to_path_buf(), entry.file_type().is_dir()));
        }
    }
    for (path, is_dir) in found {
        if is_dir {
            std::fs::remove_dir_all(path)?;
        } else {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

/// A file fetched over http(s).
#[derive(Debug, Clone)]
pub struct Download {
    pub path: PathBuf,
    /// The last component of the URL's path, as docker names the file.
    pub name: String,
    /// From `Last-Modified`; `None` when the server sent none.
    pub mtime: Option<i64>,
    /// `sha256:<hex>` of the content.
    pub digest: String,
    pub size: u64,
}

/// The most a remote context or an `ADD <url>` download may hold by
/// default (`--max-context-size`).
pub const DEFAULT_MAX_SIZE: u64 = 2 << 30;
/// The largest Dockerfile a URL may serve in place of a context: it is read
/// into memory whole.
pub const MAX_REMOTE_DOCKERFILE: u64 = 16 << 20;

/// What one download may take: deadlines, and a size beyond which it stops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DownloadLimits {
    pub net: net::Limits,
    /// Bytes; `--max-context-size`.
    pub max_size: u64,
}

impl DownloadLimits {
    /// `max_size`, with deadlines from the environment.
    pub fn new(max_size: u64) -> DownloadLimits {
        DownloadLimits { net: net::Limits::from_env(), max_size }
    }
}

impl Default for DownloadLimits {
    fn default() -> Self {
        DownloadLimits::new(DEFAULT_MAX_SIZE)
    }
}

/// How a size limit is raised, for errors.
const MAX_SIZE_HINT: &str = "the limit of --max-context-size";

/// Downloads `url` into a new file in `dir`, streaming it to disk under
/// `limits`; nothing is left behind when it fails. Redirects are followed
/// here: credentials in the URL (`user:password@`) stay with its origin.
pub fn download(url: &str, dir: &Path, limits: &DownloadLimits) -> Result<Download, RemoteError> {
    let shown = net::redact(url);
    let agent: ureq::Agent = limits.net.agent_builder().build().into();
    let mut current = url.to_string();
    let mut hops = 0;
    let mut resp = loop {
        let host = net::host_of(&current);
        let resp = agent.get(&current).call().map_err(|e| match e {
            ureq::Error::Timeout(t) => match net::timeout_error(&host, t, &limits.net) {
                Some(source) => RemoteError::Net { url: shown.clone(), source },
                None => RemoteError::Http { url: shown.clone(), source: ureq::Error::Timeout(t) },
            },
            source => RemoteError::Http { url: shown.clone(), source },
        })?;
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok());
        match location {
            Some(location) if matches!(status, 301 | 302 | 303 | 307 | 308) => {
                hops += 1;
                if hops > net::MAX_REDIRECTS {
                    let detail = format!("more than {} redirects", net::MAX_REDIRECTS);
                    return Err(RemoteError::Redirect { url: shown, detail });
                }
                current = net::join(&current, location).ok_or_else(|| RemoteError::Redirect {
                    url: shown.clone(),
                    detail: format!("{} sent {:?}, which is not an http(s) URL", host, net::redact(location)),
                })?;
                log::debug!("{shown}: {host} redirects to {}", net::host_of(&current));
            }
            _ => break resp,
        }
    };
    let host = net::host_of(&current);
    let status = resp.status().as_u16();
    if !(200..300).contains(&status) {
        return Err(RemoteError::Status { url: shown, status });
    }
    let too_large = || RemoteError::Net {
        url: shown.clone(),
        source: net::NetError::TooLarge {
            what: "the download".into(),
            host: host.clone(),
            limit: limits.max_size,
            hint: MAX_SIZE_HINT.into(),
        },
    };
    let announced =
        resp.headers().get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limits.max_size) {
        return Err(too_large());
    }
    let mtime = resp.headers().get("last-modified").and_then(|v| v.to_str().ok()).and_then(parse_http_date);
    let werr = |source| RemoteError::Write { url: shown.clone(), source };
    // Removed on any error below; kept only once the whole body is in.
    let mut file = tempfile::Builder::new().prefix("download-").tempfile_in(dir).map_err(werr)?;
    let mut hasher = Sha256::new();
    let mut reader = Paced::new(resp.body_mut().as_reader(), &host, limits.net).take(limits.max_size.saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(match net::into_net_error(e) {
                    Ok(source) => RemoteError::Net { url: shown, source },
                    Err(source) => RemoteError::Read { url: shown, host, source },
                })
            }
        };
        size += n as u64;
        if size > limits.max_size {
            return Err(too_large());
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n]).map_err(werr)?;
    }
    file.flush().map_err(werr)?;
    let (_, path) = file.keep().map_err(|e| werr(e.error))?;
    Ok(Download {
        path,
        name: url_file_name(url),
        mtime,
        digest: format!("sha256:{}", hex::encode(hasher.finalize())),
        size,
    })
}

/// docker's name for a downloaded file: the URL path's last component.
pub fn url_file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    match path.trim_end_matches('/').rsplit('/').next() {
        Some(name) if !name.is_empty() && name != "." && name != ".." => name.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

fn parse_http_date(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc2822(s.trim()).ok().map(|t| t.timestamp())
}

/// What a remote build context turned out to be.
pub enum RemoteContext {
    Context(BuildContext),
    /// A URL that served a Dockerfile rather than an archive: the build
    /// has an empty context.
    Dockerfile(String),
}

/// Opens a context argument that is a git or http(s) URL; a download (and
/// the archive it unpacks to) may hold at most `limits.max_size` bytes.
pub fn open_context(remote: &Remote, limits: &DownloadLimits) -> Result<RemoteContext, RemoteError> {
    match remote {
        Remote::Git(git) => {
            let temp = tempfile::Builder::new()
                .prefix("kiln-context-")
                .tempdir()
                .map_err(|source| RemoteError::TempDir { url: crate::net::redact(&git.repo), source })?;
            git.clone_into(temp.path(), false)?;
            let subdir = git.subdir.clone().unwrap_or_default();
            if subdir.split('/').any(|c| c == "..") || (!subdir.is_empty() && !temp.path().join(&subdir).is_dir()) {
                return Err(RemoteError::NoSubdir {
                    url: crate::net::redact(&git.repo),
                    reference: git.reference.clone().unwrap_or_else(|| "HEAD".into()),
                    subdir,
                });
            }
            Ok(RemoteContext::Context(BuildContext::from_temp_dir(temp, &subdir, true)?))
        }
        Remote::Http(url) => {
            let temp = tempfile::Builder::new()
                .prefix("kiln-download-")
                .tempdir()
                .map_err(|source| RemoteError::TempDir { url: net::redact(url), source })?;
            let d = download(url, temp.path(), limits)?;
            let shown = net::redact(url);
            let werr = |source| RemoteError::Write { url: shown.clone(), source };
            if kiln_overlay::compress::is_archive(File::open(&d.path).map_err(werr)?).map_err(werr)? {
                let archive = File::open(&d.path).map_err(werr)?;
                let ctx = BuildContext::from_tar_limited(archive, true, limits.max_size, MAX_SIZE_HINT)?;
                return Ok(RemoteContext::Context(ctx));
            }
            if d.size > MAX_REMOTE_DOCKERFILE {
                return Err(RemoteError::DockerfileTooLarge { url: shown, limit: MAX_REMOTE_DOCKERFILE });
            }
            let text = std::fs::read(&d.path).map_err(werr)?;
            Ok(RemoteContext::Dockerfile(String::from_utf8_lossy(&text).into_owned()))
        }
    }
}

/// Opens a `--build-context NAME=URL` value: a git repository or an
/// http(s) tar archive, filtered by its own ignore file as the main
/// context is. A URL serving a lone file is not a context here.
pub fn open_named(remote: &Remote, limits: &DownloadLimits) -> Result<BuildContext, RemoteError> {
    match open_context(remote, limits)? {
        RemoteContext::Context(ctx) => Ok(ctx),
        RemoteContext::Dockerfile(_) => Err(RemoteError::NotAnArchive {
            url: match remote {
                Remote::Git(g) => net::redact(&g.repo),
                Remote::Http(u) => net::redact(u),
            },
        }),
    }
}

#[cfg(test)]
mod tests;
