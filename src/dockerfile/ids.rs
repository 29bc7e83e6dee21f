//! Numeric user and group ids, as `COPY --chown`, `ADD --chown` and the
//! `uid=`/`gid=` of a RUN mount give them. An id the kernel cannot store
//! must be refused where the Dockerfile names it: accepted, it breaks a
//! later step far from the line that caused it.

/// The largest id a file can have. 2^32−1 is `(uid_t)-1`, which chown(2)
/// reads as "leave unchanged" and no user namespace can map.
pub const MAX_ID: u64 = u32::MAX as u64 - 1;

/// Why an id was refused, as a sentence naming the value.
fn out_of_range(text: &str) -> String {
    format!("{text:?} is not a valid user or group id: numeric ids go from 0 to {MAX_ID}")
}

/// True when `part` is written as a number (digits, maybe after a `+`, as
/// Go's and Rust's integer parsers accept), whatever its size.
fn is_numeric(part: &str) -> bool {
    let digits = part.strip_prefix('+').unwrap_or(part);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A numeric id in range; `None` for a name.
pub fn numeric_id(part: &str) -> Result<Option<u64>, String> {
    if !is_numeric(part) {
        return Ok(None);
    }
    match part.parse::<u64>() {
        Ok(id) if id <= MAX_ID => Ok(Some(id)),
        _ => Err(out_of_range(part)),
    }
}

/// Checks the numeric parts of a `--chown` value (`user` or
/// `user:group`); names are looked up in the image when the step runs.
pub fn check_chown(spec: &str) -> Result<(), String> {
    let (user, group) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    numeric_id(user)?;
    group.map(numeric_id).transpose()?;
    Ok(())
}

/// A mount's `uid=` or `gid=`: a decimal number from 0 to [`MAX_ID`].
pub fn parse_mount_id(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(id) if u64::from(id) <= MAX_ID => Ok(id),
        Ok(_) => Err(out_of_range(text)),
        Err(_) if is_numeric(text) => Err(out_of_range(text)),
        Err(_) => Err(format!("{text:?} is not a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chown_ids_stop_below_minus_one() {
        for ok in ["0", "4294967294", "app", "app:staff", "10:4294967294", "1:", "+5", "u-1"] {
            assert_eq!(check_chown(ok), Ok(()), "{ok}");
        }
        for bad in ["4294967295", "99999999999", "1:4294967295", "app:99999999999", "99999999999999999999999"] {
            let err = check_chown(bad).unwrap_err();
            assert!(err.contains("from 0 to 4294967294"), "{bad}: {err}");
        }
    }

    #[test]
    fn mount_ids() {
        assert_eq!(parse_mount_id("0"), Ok(0));
        assert_eq!(parse_mount_id("4294967294"), Ok(4294967294));
        assert!(parse_mount_id("4294967295").unwrap_err().contains("not a valid user or group id"));
        assert!(parse_mount_id("99999999999").unwrap_err().contains("not a valid user or group id"));
        assert!(parse_mount_id("abc").unwrap_err().contains("not a number"));
        assert!(parse_mount_id("-1").is_err());
    }
}
