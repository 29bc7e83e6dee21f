//! Where the Dockerfile and the context come from: a directory, stdin, a
//! tar, a git or http(s) URL, `--build-context`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kiln::context::BuildContext;
use kiln::exec;

use super::{BuildArgs, Input};
pub(super) fn read_input(args: &BuildArgs) -> anyhow::Result<Input> {
    let stdin_file = args.file.as_deref() == Some(Path::new("-"));
    if args.context == "-" {
        anyhow::ensure!(!stdin_file, "cannot read both the Dockerfile (-f -) and the context (-) from stdin");
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).context("read the build context from stdin")?;
        return stdin_context(bytes, args);
    }
    if let Some(remote) = kiln::context::remote::classify(&args.context) {
        return remote_input(&remote, args, stdin_file);
    }
    if stdin_file {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("read the Dockerfile from stdin")?;
        // docker: `-f -` with no context argument builds with an empty context.
        let context = if args.context == "." && !Path::new(".").join("Dockerfile").exists() {
            Some(BuildContext::empty())
        } else {
            None
        };
        return Ok(Input { text, display: "Dockerfile".into(), dockerfile_path: None, context });
    }
    let path = dockerfile_path(args)?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let display = path.strip_prefix("./").unwrap_or(&path).display().to_string();
    Ok(Input { text, display, dockerfile_path: Some(path), context: None })
}

/// Context `-`: a tar (any compression) holding the Dockerfile, or, as docker
/// allows, a bare Dockerfile with no context at all.
pub(super) fn stdin_context(bytes: Vec<u8>, args: &BuildArgs) -> anyhow::Result<Input> {
    if kiln_overlay::compress::is_archive(std::io::Cursor::new(bytes.clone()))? {
        let ctx =
            BuildContext::from_tar(std::io::Cursor::new(bytes), true).context("unpack the build context from stdin")?;
        return context_input(ctx, args, "the context on stdin");
    }
    let text = String::from_utf8(bytes).context("stdin is neither a tar archive nor a Dockerfile")?;
    Ok(Input { text, display: "Dockerfile".into(), dockerfile_path: None, context: Some(BuildContext::empty()) })
}

/// The Dockerfile inside a context that came as a whole (a tar, a clone):
/// `-f` names a path in it.
pub(super) fn context_input(ctx: BuildContext, args: &BuildArgs, what: &str) -> anyhow::Result<Input> {
    let name = args.file.clone().unwrap_or_else(|| PathBuf::from("Dockerfile"));
    let path = ctx.root().join(&name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("{} has no {}", what, name.display()))?;
    Ok(Input { text, display: name.display().to_string(), dockerfile_path: None, context: Some(ctx) })
}

/// A git or http(s) URL context, as the docker CLI takes it: a repository
/// (`#ref:subdir`), a tar in any compression, or a bare Dockerfile.
pub(super) fn remote_input(
    remote: &kiln::context::remote::Remote,
    args: &BuildArgs,
    stdin_file: bool,
) -> anyhow::Result<Input> {
    use kiln::context::remote::{open_context, DownloadLimits, RemoteContext};
    let limits = DownloadLimits::new(args.max_context_size);
    let shown = kiln::net::redact(&args.context);
    let opened = open_context(remote, &limits).with_context(|| format!("open the build context {shown}"))?;
    match opened {
        RemoteContext::Context(ctx) if stdin_file => {
            let mut text = String::new();
            std::io::stdin().read_to_string(&mut text).context("read the Dockerfile from stdin")?;
            Ok(Input { text, display: "Dockerfile".into(), dockerfile_path: None, context: Some(ctx) })
        }
        RemoteContext::Context(ctx) => context_input(ctx, args, &format!("the build context {shown}")),
        RemoteContext::Dockerfile(text) => Ok(Input {
            text,
            display: "Dockerfile".into(),
            dockerfile_path: None,
            context: Some(BuildContext::empty()),
        }),
    }
}

pub(super) fn dockerfile_path(args: &BuildArgs) -> anyhow::Result<PathBuf> {
    if let Some(f) = &args.file {
        return Ok(f.clone());
    }
    let dir = Path::new(&args.context);
    anyhow::ensure!(dir.is_dir(), "the build context {} is not a directory", dir.display());
    for name in ["Dockerfile", "Containerfile"] {
        let p = dir.join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    anyhow::bail!("no Dockerfile or Containerfile in {}: pass one with -f", dir.display())
}

pub(super) fn open_context(args: &BuildArgs, dockerfile: Option<&Path>) -> anyhow::Result<BuildContext> {
    let dir = Path::new(&args.context);
    anyhow::ensure!(dir.is_dir(), "the build context {} is not a directory", dir.display());
    let ignore = match &args.ignorefile {
        Some(file) => {
            anyhow::ensure!(file.is_file(), "--ignorefile {}: no such file", file.display());
            Some(file.clone())
        }
        None => BuildContext::find_ignore_file(dir, dockerfile),
    };
    BuildContext::from_dir(dir, ignore.as_deref()).with_context(|| format!("open the build context {}", dir.display()))
}

/// `--build-context` values, as docker buildx spells them.
pub(super) fn named_contexts(raw: &[String]) -> anyhow::Result<std::collections::HashMap<String, exec::NamedContext>> {
    let mut out = std::collections::HashMap::new();
    for r in raw {
        let (name, value) = r
            .split_once('=')
            .filter(|(n, v)| !n.is_empty() && !v.is_empty())
            .with_context(|| format!("--build-context {:?}: expected NAME=VALUE", r))?;
        let ctx = if let Some(image) = value.strip_prefix("docker-image://") {
            exec::NamedContext::Image(image.to_string())
        } else if let Some(layout) = value.strip_prefix("oci-layout://") {
            exec::NamedContext::Image(format!("oci:{}", layout))
        } else if kiln::context::remote::is_remote(value) {
            // Fetched by the build when a step first uses it.
            exec::NamedContext::Remote(value.to_string())
        } else if value.contains("://") {
            anyhow::bail!(
                "--build-context {:?}: expected a directory, a git or http(s) URL, docker-image://REF or oci-layout://DIR",
                r
            );
        } else {
            let dir = PathBuf::from(value);
            anyhow::ensure!(dir.is_dir(), "--build-context {:?}: {} is not a directory", r, dir.display());
            exec::NamedContext::Dir(dir.canonicalize()?)
        };
        out.insert(name.to_string(), ctx);
    }
    Ok(out)
}

/// What makes two builds "the same Dockerfile" for explaining cache misses.
pub(super) fn cache_identity(args: &BuildArgs, dockerfile: Option<&Path>, ctx: &BuildContext) -> String {
    let df =
        dockerfile.and_then(|p| p.canonicalize().ok()).map_or_else(|| "-".to_string(), |p| p.display().to_string());
    format!("{}\0{}\0{}", df, ctx.root().display(), args.target.as_deref().unwrap_or(""))
}
