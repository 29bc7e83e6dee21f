//! The capabilities a RUN step or `kiln run` keeps inside the user
//! namespace: docker's default set, changed by `--cap-add`/`--cap-drop`
//! with docker's rules (moby's `TweakCapabilities`). They are capabilities
//! in kiln's user namespace only: even `ALL` gives no power over the host.
//!
//! The set is applied as runc applies it: capabilities outside it leave the
//! bounding set (so neither exec nor a setuid program brings them back) and
//! the inheritable and ambient sets are cleared. Root keeps the whole set
//! across exec; another user starts with none, as under docker.

use std::fmt;

/// Capability names in kernel order (`CAP_` left off): bit n is `NAMES[n]`.
pub const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Docker's default set (moby `oci/caps/defaults.go`), which BuildKit's RUN
/// gets too: CapEff `00000000a80425fb`.
pub const DOCKER_DEFAULT: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// A set of capabilities, bit n for capability n.
#[derive(Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Caps(pub u64);

impl Default for Caps {
    fn default() -> Caps {
        Caps::docker_default()
    }
}

impl Caps {
    pub fn docker_default() -> Caps {
        Caps(DOCKER_DEFAULT.iter().fold(0, |acc, name| acc | bit(name)))
    }

    /// Every capability kiln knows.
    pub fn all() -> Caps {
        Caps((1u64 << NAMES.len()) - 1)
    }

    pub fn contains(self, name: &str) -> bool {
        self.0 & bit(name) != 0
    }

    /// The set after docker's `--cap-add`/`--cap-drop` on the default set:
    /// `--cap-add ALL` is every capability but the dropped ones; `--cap-drop
    /// ALL` is only the added ones; otherwise the drops come off the default
    /// and the adds go on (an add wins over a drop of the same name).
    pub fn tweak(add: &[String], drop: &[String]) -> Result<Caps, CapError> {
        let add = add.iter().map(|n| normalize(n)).collect::<Result<Vec<_>, _>>()?;
        let drop = drop.iter().map(|n| normalize(n)).collect::<Result<Vec<_>, _>>()?;
        let mask = |names: &[Option<usize>]| names.iter().flatten().fold(0u64, |acc, i| acc | 1 << i);
        let all = |names: &[Option<usize>]| names.iter().any(Option::is_none);
        let bits = if all(&add) {
            Caps::all().0 & !mask(&drop)
        } else if all(&drop) {
            mask(&add)
        } else {
            (Caps::docker_default().0 & !mask(&drop)) | mask(&add)
        };
        Ok(Caps(bits))
    }

    /// The names in the set, in kernel order.
    pub fn names(self) -> Vec<&'static str> {
        NAMES.iter().enumerate().filter(|(i, _)| self.0 & (1 << i) != 0).map(|(_, n)| *n).collect()
    }
}

impl fmt::Debug for Caps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Caps({:#x})", self.0)
    }
}

fn bit(name: &str) -> u64 {
    NAMES.iter().position(|n| *n == name).map_or(0, |i| 1 << i)
}

/// An unknown capability name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {0:?}: use a name such as NET_ADMIN or CAP_NET_ADMIN (see capabilities(7)), or ALL")]
pub struct CapError(pub String);

/// `NET_ADMIN`, `cap_net_admin` or `CAP_NET_ADMIN` as its bit number;
/// `None` for `ALL`.
fn normalize(name: &str) -> Result<Option<usize>, CapError> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(None);
    }
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    NAMES.iter().position(|n| *n == bare).map(Some).ok_or_else(|| CapError(name.to_string()))
}

/// Applies `caps` to the calling process (PID 1 of the step, before
/// `set_ids`): every other capability leaves the bounding set, and the
/// inheritable and ambient sets are emptied. Capabilities this kernel does
/// not have are skipped.
pub(crate) fn limit_bounding(caps: Caps) -> Result<(), String> {
    let last = last_cap();
    for cap in 0..=last {
        if caps.0 & (1 << cap) == 0 {
            crate::sys::drop_bounding_cap(cap).map_err(|e| {
                format!("drop CAP_{} from the bounding set: {e}", NAMES.get(cap as usize).unwrap_or(&"?"))
            })?;
        }
    }
    crate::sys::clear_ambient_caps().map_err(|e| format!("clear the ambient capabilities: {e}"))
}

/// Limits the permitted and effective sets to `caps` and empties the
/// inheritable one (after `set_ids`; a non-root user has none left anyway).
pub(crate) fn limit_sets(caps: Caps) -> Result<(), String> {
    let (effective, permitted) = crate::sys::get_caps().map_err(|e| format!("read the capabilities: {e}"))?;
    crate::sys::set_caps(effective & caps.0, permitted & caps.0, 0).map_err(|e| format!("set the capabilities: {e}"))
}

/// The highest capability number this kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(NAMES.len() as u32 - 1)
        .min(NAMES.len() as u32 - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_default_is_dockers() {
        assert_eq!(Caps::docker_default().0, 0xa80425fb);
        assert_eq!(Caps::tweak(&[], &[]).unwrap(), Caps::docker_default());
    }

    #[test]
    fn add_and_drop_follow_docker() {
        let c = Caps::tweak(&s(&["NET_ADMIN"]), &s(&["cap_net_raw"])).unwrap();
        assert!(c.contains("NET_ADMIN") && !c.contains("NET_RAW") && c.contains("CHOWN"));
        assert_eq!(c.0, 0xa80415fb);
        assert_eq!(Caps::tweak(&s(&["CAP_SYS_ADMIN"]), &s(&["ALL"])).unwrap().names(), ["SYS_ADMIN"]);
        let all_but = Caps::tweak(&s(&["all"]), &s(&["MKNOD"])).unwrap();
        assert_eq!(all_but.0, Caps::all().0 & !(1 << 27));
        assert_eq!(Caps::tweak(&[], &s(&["ALL"])).unwrap().0, 0);
        // An add wins over a drop of the same capability, as in docker.
        assert!(Caps::tweak(&s(&["KILL"]), &s(&["KILL"])).unwrap().contains("KILL"));
    }

    #[test]
    fn unknown_names_are_refused() {
        let err = Caps::tweak(&s(&["NET_ADMINN"]), &[]).unwrap_err();
        assert_eq!(err, CapError("NET_ADMINN".into()));
        assert!(err.to_string().contains("NET_ADMIN or CAP_NET_ADMIN"));
        assert!(Caps::tweak(&[], &s(&["CAP_"])).is_err());
    }
}
