//! Facts about the user namespace this process runs in that decide how
//! overlay behaves: which xattr prefix it uses, whether `userxattr` is needed.

use std::fs;

/// Whether this process runs in a user namespace other than the initial one.
pub fn in_user_namespace() -> bool {
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"],
        Err(_) => false,
    }
}
