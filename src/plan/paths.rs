//! Lexical paths in the image: how WORKDIR, relative destinations and mount
//! targets resolve, for the planner and the executor alike.

/// `dir` joined to `current` (unless absolute), `.` and `..` resolved
/// lexically (`..` stops at `/`), as docker cleans such paths.
pub fn join_workdir(current: &str, dir: &str) -> String {
    let joined = if dir.starts_with('/') { dir.to_string() } else { format!("{}/{}", current, dir) };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}
