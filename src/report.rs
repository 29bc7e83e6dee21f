//! Rendering errors for users: `error:` with the Dockerfile snippet where
//! one applies, then each `caused by:` in the chain, then hints.

use std::error::Error;
use std::fmt;

use kiln::dockerfile::DockerfileError;
use kiln::exec::ExecError;

/// An error that happened at a place in a Dockerfile, carried with the
/// Dockerfile's text so the report can quote the line.
#[derive(Debug)]
pub struct SourceError {
    pub error: Box<dyn Error + Send + Sync>,
    pub text: String,
}

impl SourceError {
    pub fn new(error: impl Error + Send + Sync + 'static, text: &str) -> Self {
        SourceError { error: Box::new(error), text: text.to_string() }
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl Error for SourceError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.error.source()
    }
}

/// The whole report for `err`, ready to print to stderr.
pub fn render(err: &anyhow::Error) -> String {
    let Some(src) = err.downcast_ref::<SourceError>() else {
        return chain("error: ", err.chain());
    };
    if let Some(d) = src.error.downcast_ref::<DockerfileError>() {
        return format!("error: {}", d.render(&src.text));
    }
    if let Some(ExecError::Step { file, line, column, instruction, source, hint }) =
        src.error.downcast_ref::<ExecError>()
    {
        let located = DockerfileError::new(file, *line, *column, format!("{} failed", instruction));
        let mut out = format!("error: {}", located.render(&src.text));
        let mut cause: Option<&(dyn Error + 'static)> = Some(source.as_ref());
        while let Some(c) = cause {
            out.push_str(&format!("caused by: {}\n", c));
            cause = c.source();
        }
        if let Some(hint) = hint {
            out.push_str(&format!("hint: {}\n", hint));
        }
        return out;
    }
    chain("error: ", err.chain())
}

fn chain<'a>(first: &str, errors: impl Iterator<Item = &'a (dyn Error + 'static)>) -> String {
    let mut out = String::new();
    for (i, e) in errors.enumerate() {
        out.push_str(if i == 0 { first } else { "caused by: " });
        out.push_str(&e.to_string());
        out.push('\n');
    }
    out
}

/// The line to add when `err` failed for want of disk space (ENOSPC or
/// EDQUOT anywhere in its chain): which store filled up and what to do.
pub fn disk_full_hint(err: &anyhow::Error, store: &std::path::Path) -> Option<String> {
    let full = err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| code == libc::ENOSPC || code == libc::EDQUOT)
    });
    full.then(|| {
        format!(
            "hint: the disk holding the image store {} is full: free space there (`kiln system prune` removes \
             unused images and build cache), or choose a store on another disk with --root\n",
            store.display()
        )
    })
}

#[cfg(test)]
mod disk_full_tests {
    use super::disk_full_hint;
    use std::path::Path;

    #[test]
    fn names_the_store_only_when_the_disk_is_full() {
        let full = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOSPC)).context("write layer entry");
        let hint = disk_full_hint(&full, Path::new("/s/store")).expect("ENOSPC gets a hint");
        assert!(hint.contains("/s/store") && hint.contains("is full"), "{hint}");
        let other = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EACCES)).context("write layer entry");
        assert_eq!(disk_full_hint(&other, Path::new("/s/store")), None);
    }

    #[test]
    fn a_step_that_filled_the_disk_shows_each_cause_once_and_the_hint() {
        use kiln::exec::ExecError;
        let full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let step = ExecError::Step {
            file: "Dockerfile".into(),
            line: 2,
            column: 1,
            instruction: "RUN make".into(),
            source: Box::new(ExecError::Layer(full).into()),
            hint: None,
        };
        let err = anyhow::Error::new(super::SourceError::new(step, "FROM scratch\nRUN make\n"));
        let text = super::render(&err);
        assert!(text.contains("RUN make failed"), "{text}");
        assert!(text.contains("caused by: write layer\ncaused by: No space left on device"), "{text}");
        assert_eq!(text.matches("No space left on device").count(), 1, "{text}");
        assert!(disk_full_hint(&err, Path::new("/s/store")).is_some(), "{text}");
    }
}
