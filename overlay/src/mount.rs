//! Mounting a step's filesystem: kernel overlay, fuse-overlayfs, or the plain copy driver.

/// Whether this process runs in a user namespace other than the initial one.
pub fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        Err(_) => false,
    }
}
