//! Fault-injection points for the kill-point tests (integration/tests/kill_points.rs).
//!
//! `fault::point("name")` marks a moment where a crash is interesting: before
//! or after a rename that changes the store's state, in the middle of a blob
//! write, and so on. With the cargo feature `fault-injection` and
//! `KILN_FAULT=name[@N]` set, the N-th time (default: the first) this process
//! reaches that point it sends SIGKILL — to its whole process group
//! (`KILN_FAULT_MODE=group`, the default; a machine or CI runner dying) or to
//! itself only (`KILN_FAULT_MODE=self`). A process that runs kiln this way must
//! give it a process group of its own. With `KILN_FAULT_FIRED=FILE` the point
//! creates FILE just before the kill, so a test knows the kill came from it.
//! Without the feature a point is an empty inline function, so release builds
//! carry no trace of it.

/// A moment at which the kill-point tests may SIGKILL kiln; see the module docs.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}

#[cfg(feature = "fault-injection")]
pub use armed::point;

#[cfg(feature = "fault-injection")]
mod armed {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;

    use nix::sys::signal::{kill, Signal};
    use nix::unistd::{getpgrp, getpid, Pid};

    /// What `KILN_FAULT` and `KILN_FAULT_MODE` asked for.
    struct Armed {
        name: String,
        nth: u64,
        group: bool,
    }

    fn armed() -> Option<&'static Armed> {
        static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
        ARMED
            .get_or_init(|| {
                let spec = std::env::var("KILN_FAULT").ok().filter(|s| !s.is_empty())?;
                let (name, nth) = match spec.split_once('@') {
                    Some((n, k)) => (n.to_string(), k.parse().unwrap_or(1).max(1)),
                    None => (spec, 1),
                };
                let group = std::env::var("KILN_FAULT_MODE").map_or(true, |m| m != "self");
                Some(Armed { name, nth, group })
            })
            .as_ref()
    }

    /// Counts how often the armed point was reached; kills on the N-th time.
    pub fn point(name: &str) {
        static HITS: AtomicU64 = AtomicU64::new(0);
        let Some(a) = armed() else { return };
        if a.name != name || HITS.fetch_add(1, Ordering::SeqCst) + 1 != a.nth {
            return;
        }
        log::debug!("fault point {name}@{}: SIGKILL", a.nth);
        if let Some(fired) = std::env::var_os("KILN_FAULT_FIRED") {
            let _ = std::fs::write(fired, format!("{name}@{}\n", a.nth));
        }
        if a.group {
            // A negative pid names the process group.
            let _ = kill(Pid::from_raw(-getpgrp().as_raw()), Signal::SIGKILL);
        }
        let _ = kill(getpid(), Signal::SIGKILL);
        // SIGKILL cannot be caught; nothing after the kill may run.
        loop {
            std::thread::park();
        }
    }
}
