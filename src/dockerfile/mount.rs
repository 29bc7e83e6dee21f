//! `RUN --mount=` values: a CSV record of `key=value` (or bare `key`) fields.
//! The parser checks the shape (type, known keys, where a key is allowed);
//! values that may hold `$VAR`s are left raw for the planner.

use super::ast::{Mount, MountKind};

const KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "src",
    "target",
    "dst",
    "destination",
    "readonly",
    "ro",
    "readwrite",
    "rw",
    "id",
    "sharing",
    "required",
    "mode",
    "uid",
    "gid",
    "size",
    "env",
];

/// Parses one `--mount` value, or says what is wrong with it.
pub(crate) fn parse_mount(value: &str) -> Result<Mount, String> {
    let fields = csv_fields(value)?;
    let mut kind = MountKind::Bind;
    let mut options: Vec<(String, Option<String>)> = Vec::new();
    for field in fields {
        let (key, val) = match field.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (field.to_ascii_lowercase(), None),
        };
        if !KEYS.contains(&key.as_str()) {
            return Err(unknown_key(&key, &field));
        }
        if val.is_none() && !matches!(key.as_str(), "readonly" | "ro" | "readwrite" | "rw" | "required") {
            return Err(format!("invalid mount field {field:?}: it must be a key=value pair"));
        }
        if key == "type" {
            let t = val.unwrap_or_default();
            kind = match t.to_ascii_lowercase().as_str() {
                "bind" => MountKind::Bind,
                "cache" => MountKind::Cache,
                "tmpfs" => MountKind::Tmpfs,
                "secret" => MountKind::Secret,
                "ssh" => MountKind::Ssh,
                _ => return Err(format!("unsupported mount type {t:?} (use bind, cache, tmpfs, secret or ssh)")),
            };
            continue;
        }
        options.push((key, val));
    }
    check_fields(kind, &options)?;
    Ok(Mount { kind, options })
}

fn unknown_key(key: &str, field: &str) -> String {
    let close =
        KEYS.iter().map(|k| (strsim::damerau_levenshtein(k, key), *k)).filter(|(d, _)| *d <= 2 && *d < key.len()).min();
    match close {
        Some((_, k)) => {
            format!("unexpected key {key:?} in mount field {field:?} (did you mean {k:?}?)")
        }
        None => format!("unexpected key {key:?} in mount field {field:?}"),
    }
}

/// The checks docker makes that do not depend on variable values.
fn check_fields(kind: MountKind, options: &[(String, Option<String>)]) -> Result<(), String> {
    let name = kind_name(kind);
    for (key, value) in options {
        let literal = value.as_deref().filter(|v| !v.contains('$'));
        match key.as_str() {
            "mode" | "uid" | "gid" => {
                if !matches!(kind, MountKind::Secret | MountKind::Ssh | MountKind::Cache) {
                    return Err(format!("{key} is not allowed for {name} mounts"));
                }
                if let Some(v) = literal {
                    if key == "mode" {
                        if u32::from_str_radix(v, 8).is_err() {
                            return Err(format!("invalid value {v:?} for {key} of a mount"));
                        }
                    } else {
                        super::ids::parse_mount_id(v).map_err(|why| format!("invalid {key} of a mount: {why}"))?;
                    }
                }
            }
            "sharing" => {
                if kind != MountKind::Cache {
                    return Err(format!("sharing is only allowed for cache mounts, not {name}"));
                }
                if let Some(v) = literal {
                    if !matches!(v.to_ascii_lowercase().as_str(), "shared" | "private" | "locked") {
                        return Err(format!("unsupported sharing value {v:?} (use shared, private or locked)"));
                    }
                }
            }
            "required" if !matches!(kind, MountKind::Secret | MountKind::Ssh) => {
                return Err(format!("required is only allowed for secret and ssh mounts, not {name}"));
            }
            "readonly" | "ro" | "readwrite" | "rw" | "required" => {
                if let Some(v) = literal {
                    if parse_go_bool(v).is_none() {
                        return Err(format!("invalid value {v:?} for {key} of a mount"));
                    }
                }
            }
            "from" if kind == MountKind::Secret => return Err("secret mounts cannot have a from".to_string()),
            _ => {}
        }
    }
    Ok(())
}

fn kind_name(kind: MountKind) -> &'static str {
    match kind {
        MountKind::Bind => "bind",
        MountKind::Cache => "cache",
        MountKind::Tmpfs => "tmpfs",
        MountKind::Secret => "secret",
        MountKind::Ssh => "ssh",
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// One CSV record as Go's encoding/csv reads it: `,` separates fields, a field
/// that starts with `"` is quoted (`""` is a literal quote), and a quote
/// anywhere else is an error.
fn csv_fields(value: &str) -> Result<Vec<String>, String> {
    if value.is_empty() {
        return Err("empty mount specification".to_string());
    }
    let mut fields = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(format!("unterminated quote in mount {value:?}")),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err(format!("unexpected text after a closing quote in mount {value:?}")),
            }
        } else {
            loop {
                match chars.next() {
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => return Err(format!("stray quote in mount field of {value:?}")),
                    Some(c) => field.push(c),
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(m: &Mount) -> Vec<(&str, Option<&str>)> {
        m.options.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect()
    }

    #[test]
    fn default_kind_is_bind() {
        let m = parse_mount("target=/src,from=build,rw").unwrap();
        assert_eq!(m.kind, MountKind::Bind);
        assert_eq!(opts(&m), vec![("target", Some("/src")), ("from", Some("build")), ("rw", None)]);
    }

    #[test]
    fn type_anywhere_and_case_insensitive() {
        let m = parse_mount("target=/c,Type=CACHE,sharing=locked,mode=0755,uid=1").unwrap();
        assert_eq!(m.kind, MountKind::Cache);
        assert_eq!(opts(&m).len(), 4);
        assert_eq!(parse_mount("type=secret,id=aws,required").unwrap().kind, MountKind::Secret);
        assert_eq!(parse_mount("type=ssh").unwrap().kind, MountKind::Ssh);
        assert_eq!(parse_mount("type=tmpfs,target=/t,size=10m").unwrap().kind, MountKind::Tmpfs);
    }

    #[test]
    fn quoted_csv_fields() {
        let m = parse_mount(r#""target=/a,b",type=bind"#).unwrap();
        assert_eq!(opts(&m), vec![("target", Some("/a,b"))]);
    }

    #[test]
    fn errors() {
        assert!(parse_mount("type=nfs").unwrap_err().contains("unsupported mount type"));
        assert!(parse_mount("target=/a,bogus=1").unwrap_err().contains("bogus"));
        assert!(parse_mount("targte=/a").unwrap_err().contains("did you mean \"target\""));
        assert!(parse_mount("target").is_err());
        assert!(parse_mount("").is_err());
        assert!(parse_mount("type=bind,mode=0755").is_err());
        assert!(parse_mount("type=cache,sharing=sometimes").is_err());
        assert!(parse_mount("type=bind,sharing=locked").is_err());
        assert!(parse_mount("type=bind,required").is_err());
        assert!(parse_mount("type=cache,uid=abc").is_err());
        assert!(parse_mount("type=cache,target=/c,uid=4294967294").is_ok());
        assert!(parse_mount("type=cache,target=/c,uid=4294967295").is_err());
        assert!(parse_mount("type=secret,id=s,gid=99999999999").is_err());
        assert!(parse_mount("type=cache,uid=$UID").is_ok());
        assert!(parse_mount("a\"b").is_err());
        assert!(parse_mount("\"a").is_err());
    }
}
