//! EXPOSE port specs to docker's `port/proto` keys.

/// `80`, `80/UDP`, `8000-8002/tcp` (and BuildKit's tolerated
/// `[ip:]host:container` forms, of which only the container part counts)
/// to one `port/proto` per port.
pub(crate) fn normalize(spec: &str) -> Result<Vec<String>, String> {
    let mut parts = spec.rsplitn(3, ':');
    let container = parts.next().unwrap_or_default();
    if let Some(host) = parts.next().filter(|h| !h.is_empty()) {
        parse_range(host).map_err(|_| format!("invalid host port {host:?} in {spec:?}"))?;
    }
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() {
        return Err(format!("no port specified in {spec:?}"));
    }
    let proto = match proto.to_ascii_lowercase().as_str() {
        "" | "tcp" => "tcp",
        "udp" => "udp",
        "sctp" => "sctp",
        other => return Err(format!("invalid protocol {other:?} in {spec:?} (tcp, udp or sctp)")),
    };
    let (start, end) = parse_range(port).map_err(|reason| format!("invalid port {port:?}: {reason}"))?;
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

fn parse_range(text: &str) -> Result<(u16, u16), String> {
    let number = |s: &str| s.parse::<u16>().map_err(|_| "not a number from 0 to 65535".to_string());
    match text.split_once('-') {
        None => number(text).map(|p| (p, p)),
        Some((start, end)) => {
            let (start, end) = (number(start)?, number(end)?);
            if end < start {
                return Err("the range ends before it starts".into());
            }
            Ok((start, end))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn defaults_to_tcp_and_lowercases() {
        assert_eq!(normalize("80").unwrap(), ["80/tcp"]);
        assert_eq!(normalize("53/UDP").unwrap(), ["53/udp"]);
        assert_eq!(normalize("9/sctp").unwrap(), ["9/sctp"]);
    }

    #[test]
    fn expands_ranges() {
        assert_eq!(normalize("8000-8002/udp").unwrap(), ["8000/udp", "8001/udp", "8002/udp"]);
        assert!(normalize("8002-8000").is_err());
    }

    #[test]
    fn keeps_container_part_of_mappings() {
        assert_eq!(normalize("8080:80").unwrap(), ["80/tcp"]);
        assert_eq!(normalize("127.0.0.1:8080:80/udp").unwrap(), ["80/udp"]);
        assert!(normalize("x:80").is_err());
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in ["", "/tcp", "http", "70000", "80/icmp", "1-2-3"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }
}
