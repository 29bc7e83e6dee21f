//! `--ulimit NAME=SOFT[:HARD]`: resource limits a RUN step starts with, by
//! the names docker takes (setrlimit(2) without the RLIMIT_ prefix).

use nix::sys::resource::{setrlimit, Resource};
use serde::{Deserialize, Serialize};

/// One limit. `u64::MAX` is unlimited (`-1` on the command line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

const NAMES: &[(&str, Resource)] = &[
    ("as", Resource::RLIMIT_AS),
    ("core", Resource::RLIMIT_CORE),
    ("cpu", Resource::RLIMIT_CPU),
    ("data", Resource::RLIMIT_DATA),
    ("fsize", Resource::RLIMIT_FSIZE),
    ("locks", Resource::RLIMIT_LOCKS),
    ("memlock", Resource::RLIMIT_MEMLOCK),
    ("msgqueue", Resource::RLIMIT_MSGQUEUE),
    ("nice", Resource::RLIMIT_NICE),
    ("nofile", Resource::RLIMIT_NOFILE),
    ("nproc", Resource::RLIMIT_NPROC),
    ("rss", Resource::RLIMIT_RSS),
    ("rtprio", Resource::RLIMIT_RTPRIO),
    ("rttime", Resource::RLIMIT_RTTIME),
    ("sigpending", Resource::RLIMIT_SIGPENDING),
    ("stack", Resource::RLIMIT_STACK),
];

fn resource(name: &str) -> Option<Resource> {
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

fn value(text: &str) -> Option<u64> {
    if text == "-1" || text == "unlimited" {
        return Some(u64::MAX);
    }
    text.parse().ok()
}

impl std::str::FromStr for Ulimit {
    type Err = String;

    /// `nofile=1024:2048`, `nproc=512` (hard = soft), `core=-1`.
    fn from_str(text: &str) -> Result<Ulimit, String> {
        let (name, limits) = text
            .split_once('=')
            .ok_or_else(|| format!("--ulimit {text:?}: expected NAME=SOFT[:HARD], e.g. nofile=1024:2048"))?;
        if resource(name).is_none() {
            let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            return Err(format!("--ulimit {text:?}: unknown limit {name:?}; known: {}", known.join(", ")));
        }
        let (soft, hard) = limits.split_once(':').unwrap_or((limits, limits));
        let bad = || format!("--ulimit {text:?}: limits are numbers (or -1 for unlimited)");
        let (soft, hard) = (value(soft).ok_or_else(bad)?, value(hard).ok_or_else(bad)?);
        if soft > hard {
            return Err(format!("--ulimit {text:?}: the soft limit {soft} is above the hard limit {hard}"));
        }
        Ok(Ulimit { name: name.to_string(), soft, hard })
    }
}

/// Applies the limits to this process (inherited across exec). Raising a
/// hard limit needs CAP_SYS_RESOURCE in the initial namespace, which a
/// rootless build lacks: that error says so.
pub fn apply(limits: &[Ulimit]) -> Result<(), String> {
    for l in limits {
        let r = resource(&l.name).ok_or_else(|| format!("unknown ulimit {}", l.name))?;
        setrlimit(r, l.soft, l.hard).map_err(|e| {
            let (_, hard_now) = nix::sys::resource::getrlimit(r).unwrap_or((0, 0));
            let shown = |v: u64| if v == u64::MAX { "unlimited".to_string() } else { v.to_string() };
            format!(
                "set ulimit {}={}:{}: {e} (the hard limit here is {}, and only root on the host can raise it)",
                l.name,
                shown(l.soft),
                shown(l.hard),
                shown(hard_now)
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let u: Ulimit = "nofile=1024:2048".parse().unwrap();
        assert_eq!(u, Ulimit { name: "nofile".into(), soft: 1024, hard: 2048 });
        let u: Ulimit = "nproc=512".parse().unwrap();
        assert_eq!((u.soft, u.hard), (512, 512));
        let u: Ulimit = "core=-1".parse().unwrap();
        assert_eq!((u.soft, u.hard), (u64::MAX, u64::MAX));
        for bad in ["nofile", "nofiles=1", "nofile=a", "nofile=10:5", "nofile=1:x"] {
            assert!(bad.parse::<Ulimit>().is_err(), "{bad}");
        }
        assert!("nofiles=1".parse::<Ulimit>().unwrap_err().contains("known: as, core"));
    }
}
