//! Paths relative to a context or layer root, as bytes: `a/b` joined from
//! the walk's parts, with no leading slash for the root itself.

use bstr::BString;

/// `base/name`, or `name` when `base` is the root (empty).
pub(super) fn join(base: &[u8], name: &[u8]) -> BString {
    if base.is_empty() {
        name.into()
    } else {
        [base, b"/", name].concat().into()
    }
}

#[cfg(test)]
mod tests {
    use super::join;

    #[test]
    fn joins_below_the_root_and_at_it() {
        assert_eq!(join(b"", b"a"), "a");
        assert_eq!(join(b"a/b", b"c"), "a/b/c");
    }
}
