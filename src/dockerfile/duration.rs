//! Go `time.ParseDuration` syntax (`30s`, `1m30s`, `1.5h`, `500ms`), which is
//! what HEALTHCHECK's duration flags accept.

/// Nanoseconds for a Go duration string, or a sentence saying what is wrong.
pub fn parse_go_duration(text: &str) -> Result<i64, String> {
    let (negative, mut rest) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(format!("invalid duration {text:?}"));
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(after_dot) = rest.strip_prefix('.') {
            let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &after_dot[..frac_len];
            rest = &after_dot[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(format!("invalid duration {text:?}"));
        }
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("missing unit in duration {text:?}")),
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };
        let overflow = || format!("duration {text:?} is too large");
        let whole: u128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| overflow())? };
        let mut value = whole.checked_mul(scale).ok_or_else(overflow)?;
        if !frac_part.is_empty() {
            // Only the digits that can still matter at nanosecond precision.
            let digits = &frac_part[..frac_part.len().min(30)];
            let frac: u128 = digits.parse().map_err(|_| overflow())?;
            let denom = 10u128.pow(digits.len() as u32);
            value = value.checked_add(frac * scale / denom).ok_or_else(overflow)?;
        }
        total = total.checked_add(value).ok_or_else(overflow)?;
        if total > i64::MAX as u128 + u128::from(negative) {
            return Err(overflow());
        }
    }
    if negative {
        Ok((-(total as i128)) as i64)
    } else {
        Ok(total as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_go_duration as d;

    #[test]
    fn valid() {
        assert_eq!(d("30s"), Ok(30_000_000_000));
        assert_eq!(d("1m30s"), Ok(90_000_000_000));
        assert_eq!(d("500ms"), Ok(500_000_000));
        assert_eq!(d("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(d(".5s"), Ok(500_000_000));
        assert_eq!(d("1.s"), Ok(1_000_000_000));
        assert_eq!(d("0"), Ok(0));
        assert_eq!(d("-1s"), Ok(-1_000_000_000));
        assert_eq!(d("+2us"), Ok(2_000));
        assert_eq!(d("3µs"), Ok(3_000));
        assert_eq!(d("1h2m3s4ms5us6ns"), Ok(3_723_004_005_006));
    }

    #[test]
    fn invalid() {
        for s in ["", "s", "10", "1x", "1.2.3s", ".s", "-", "1d", "99999999999999999999h", "3000000h"] {
            assert!(d(s).is_err(), "{s}");
        }
    }
}
