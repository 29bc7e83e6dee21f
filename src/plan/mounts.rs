//! `RUN --mount` options to typed mounts (`types::Mount`), with docker's aliases
//! (`dst`/`destination`, `src`, `readonly`/`readwrite`) and defaults, so an
//! invalid option fails when planning, at its Dockerfile line, before
//! anything runs. The executor only turns these into runtime mounts.
//!
//! Targets of bind, cache and tmpfs mounts stay as written: a relative one
//! is relative to the step's WORKDIR, which depends on the base image's
//! config (read only when the planner could look the image up) and is
//! exact only in the executor's stage state. Secret and ssh targets are
//! relative to `/` and are made absolute here.

use crate::dockerfile::ast::{Mount as WrittenMount, MountKind};

use super::paths::join_workdir;
use super::types::{CopyFrom, Mount, MountFrom, Sharing};

/// An invalid `--mount` option, worded as the executor worded it before
/// options were checked when planning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("RUN --mount type={kind}: {message}")]
pub struct MountOptionError {
    pub kind: &'static str,
    pub message: String,
}

impl Mount {
    /// The typed mount of `written` (its values already expanded);
    /// `resolve` says what a `from=` names.
    pub fn from_written(written: &WrittenMount, resolve: &dyn Fn(&str) -> CopyFrom) -> Result<Mount, MountOptionError> {
        let o = Options::new(written);
        let from = || o.get("from").map(|name| MountFrom { name: name.to_string(), source: resolve(name) });
        Ok(match written.kind {
            MountKind::Bind => Mount::Bind {
                target: o.target()?,
                from: from(),
                source: o.get("source").unwrap_or(".").to_string(),
                readonly: o.readonly(true)?,
            },
            MountKind::Cache => Mount::Cache {
                target: o.target()?,
                id: o.get("id").map(str::to_string),
                readonly: o.readonly(false)?,
                sharing: match o.get("sharing").map(str::to_ascii_lowercase).as_deref() {
                    None | Some("shared") => Sharing::Shared,
                    Some("private") => Sharing::Private,
                    Some("locked") => Sharing::Locked,
                    Some(other) => {
                        return Err(o.invalid(format!("sharing={other:?}: expected shared, private or locked")))
                    }
                },
                uid: o.id("uid")?.unwrap_or(0),
                gid: o.id("gid")?.unwrap_or(0),
                mode: o.mode()?.unwrap_or(0o755),
                from: from(),
                source: o.get("source").unwrap_or(".").to_string(),
            },
            MountKind::Tmpfs => Mount::Tmpfs {
                size: o
                    .get("size")
                    .map(|s| parse_size(s).ok_or_else(|| o.invalid(format!("size={s:?} is not a size"))))
                    .transpose()?,
                target: o.target()?,
            },
            MountKind::Secret => {
                let named = o.get("target").and_then(|t| std::path::Path::new(t).file_name()?.to_str());
                let id = o.get("id").or(named).ok_or_else(|| o.invalid("id or target is required".into()))?;
                let env = o.get("env").map(str::to_string);
                let target = match (o.get("target"), &env) {
                    (Some(t), _) => Some(join_workdir("/", t)),
                    (None, Some(_)) => None,
                    (None, None) => Some(format!("/run/secrets/{id}")),
                };
                Mount::Secret {
                    id: id.to_string(),
                    target,
                    env,
                    required: o.flag("required")?.unwrap_or(false),
                    uid: o.id("uid")?.unwrap_or(0),
                    gid: o.id("gid")?.unwrap_or(0),
                    mode: o.mode()?.unwrap_or(0o400),
                }
            }
            MountKind::Ssh => {
                // The socket is bound as it is: mode, uid and gid are
                // checked but change nothing.
                o.id("uid")?;
                o.id("gid")?;
                o.mode()?;
                Mount::Ssh {
                    id: o.get("id").unwrap_or("default").to_string(),
                    target: o
                        .get("target")
                        .map_or_else(|| "/run/buildkit/ssh_agent.0".to_string(), |t| join_workdir("/", t)),
                    required: o.flag("required")?.unwrap_or(false),
                }
            }
        })
    }

    /// `bind`, `cache`, … as `type=` names it.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Mount::Bind { .. } => "bind",
            Mount::Cache { .. } => "cache",
            Mount::Tmpfs { .. } => "tmpfs",
            Mount::Secret { .. } => "secret",
            Mount::Ssh { .. } => "ssh",
        }
    }
}

/// The key/value options of one `--mount`, docker's aliases folded; a
/// later key wins over an earlier one.
struct Options<'a> {
    kind: &'static str,
    map: std::collections::HashMap<&'a str, Option<&'a str>>,
}

impl<'a> Options<'a> {
    fn new(m: &'a WrittenMount) -> Self {
        let kind = match m.kind {
            MountKind::Bind => "bind",
            MountKind::Cache => "cache",
            MountKind::Tmpfs => "tmpfs",
            MountKind::Secret => "secret",
            MountKind::Ssh => "ssh",
        };
        let map = m
            .options
            .iter()
            .map(|(k, v)| {
                let k = match k.as_str() {
                    "dst" | "destination" => "target",
                    "src" => "source",
                    "readonly" => "ro",
                    "readwrite" => "rw",
                    other => other,
                };
                (k, v.as_deref())
            })
            .collect();
        Options { kind, map }
    }

    /// A value; an empty one counts as not given.
    fn get(&self, key: &str) -> Option<&'a str> {
        self.map.get(key).copied().flatten().filter(|v| !v.is_empty())
    }

    /// A bare key is true.
    fn flag(&self, key: &str) -> Result<Option<bool>, MountOptionError> {
        match self.map.get(key) {
            None => Ok(None),
            Some(None) => Ok(Some(true)),
            Some(Some(v)) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(Some(true)),
                "false" | "0" | "no" => Ok(Some(false)),
                _ => Err(self.invalid(format!("{key}={v:?} is not a boolean"))),
            },
        }
    }

    /// `ro`/`rw`, with the mount type's default.
    fn readonly(&self, default: bool) -> Result<bool, MountOptionError> {
        Ok(match (self.flag("ro")?, self.flag("rw")?) {
            (Some(ro), _) => ro,
            (None, Some(rw)) => !rw,
            (None, None) => default,
        })
    }

    /// `uid` or `gid`.
    fn id(&self, key: &str) -> Result<Option<u32>, MountOptionError> {
        self.get(key)
            .map(|v| crate::dockerfile::ids::parse_mount_id(v).map_err(|why| self.invalid(format!("{key}: {why}"))))
            .transpose()
    }

    /// `mode`, in octal.
    fn mode(&self) -> Result<Option<u32>, MountOptionError> {
        self.get("mode")
            .map(|v| u32::from_str_radix(v, 8).map_err(|_| self.invalid(format!("mode={v:?} is not a number"))))
            .transpose()
    }

    fn target(&self) -> Result<String, MountOptionError> {
        self.get("target").map(str::to_string).ok_or_else(|| self.invalid("target is required".into()))
    }

    fn invalid(&self, message: String) -> MountOptionError {
        MountOptionError { kind: self.kind, message }
    }
}

/// Bytes, with an optional k/m/g suffix (docker's RAM sizes, 1024-based).
fn parse_size(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.trim_end_matches('b');
    let (digits, unit) = match lower.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => lower.split_at(i),
        None => (lower, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// A `--mount` of `kind` with options `opts` (`k=v,k,…`) as the planner
/// types it, `from=` naming an image: for the unit tests here and in exec.
#[cfg(test)]
pub(crate) fn typed_for_tests(kind: MountKind, opts: &str) -> Result<Mount, MountOptionError> {
    let options = opts
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (kv.to_string(), None),
        })
        .collect();
    Mount::from_written(&WrittenMount { kind, options }, &|name| CopyFrom::Image(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(kind: MountKind, opts: &str) -> Result<Mount, MountOptionError> {
        typed_for_tests(kind, opts)
    }

    #[test]
    fn aliases_and_defaults() {
        let bind = typed(MountKind::Bind, "dst=/s,src=app").unwrap();
        assert_eq!(bind, Mount::Bind { target: "/s".into(), from: None, source: "app".into(), readonly: true });
        let rw = typed(MountKind::Bind, "destination=/s,from=build,readwrite").unwrap();
        let build = MountFrom { name: "build".into(), source: CopyFrom::Image("build".into()) };
        assert!(
            matches!(rw, Mount::Bind { readonly: false, source, from: Some(f), .. } if source == "." && f == build)
        );
        let cache = typed(MountKind::Cache, "target=go,sharing=LOCKED,mode=0700,uid=5,gid=6,ro").unwrap();
        assert_eq!(
            cache,
            Mount::Cache {
                id: None,
                target: "go".into(),
                sharing: Sharing::Locked,
                from: None,
                source: ".".into(),
                mode: 0o700,
                uid: 5,
                gid: 6,
                readonly: true,
            }
        );
        assert!(matches!(
            typed(MountKind::Cache, "target=/c").unwrap(),
            Mount::Cache { sharing: Sharing::Shared, mode: 0o755, readonly: false, .. }
        ));
        assert_eq!(
            typed(MountKind::Tmpfs, "target=/t,size=64m").unwrap(),
            Mount::Tmpfs { target: "/t".into(), size: Some(64 << 20) }
        );
        assert_eq!(parse_size("1000"), Some(1000));
    }

    #[test]
    fn secrets_and_ssh_are_absolute() {
        let by_target = typed(MountKind::Secret, "target=etc/tok,required").unwrap();
        assert!(matches!(by_target, Mount::Secret { id, target: Some(t), required: true, mode: 0o400, .. }
            if id == "tok" && t == "/etc/tok"));
        let env_only = typed(MountKind::Secret, "id=a,env=A").unwrap();
        assert!(matches!(env_only, Mount::Secret { target: None, env: Some(_), .. }));
        let file = typed(MountKind::Secret, "id=a").unwrap();
        assert!(matches!(file, Mount::Secret { target: Some(t), .. } if t == "/run/secrets/a"));
        let ssh = typed(MountKind::Ssh, "").unwrap();
        assert_eq!(
            ssh,
            Mount::Ssh { id: "default".into(), target: "/run/buildkit/ssh_agent.0".into(), required: false }
        );
    }

    #[test]
    fn invalid_options_say_which() {
        let err = |kind, opts| typed(kind, opts).unwrap_err().to_string();
        assert_eq!(err(MountKind::Bind, "source=src"), "RUN --mount type=bind: target is required");
        assert_eq!(err(MountKind::Bind, "target=/s,ro=maybe"), "RUN --mount type=bind: ro=\"maybe\" is not a boolean");
        assert!(err(MountKind::Cache, "target=/c,sharing=sometimes").contains("expected shared, private or locked"));
        assert!(err(MountKind::Cache, "target=/c,mode=9").contains("mode=\"9\" is not a number"));
        assert!(err(MountKind::Cache, "target=/c,uid=x").contains("uid: "));
        assert!(err(MountKind::Tmpfs, "target=/t,size=lots").contains("size=\"lots\" is not a size"));
        assert_eq!(err(MountKind::Secret, "env=A"), "RUN --mount type=secret: id or target is required");
        assert!(err(MountKind::Ssh, "required=perhaps").contains("not a boolean"));
    }
}
