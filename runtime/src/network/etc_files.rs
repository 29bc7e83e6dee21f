//! What the namespace sees of the host: its resolv.conf and hosts file,
//! and the gateway pasta copies in.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};

/// The namespace's resolv.conf: the forwarder's nameserver, then the
/// host's `search` and `options` lines.
pub(super) fn resolv_conf(host: &str, dns: IpAddr) -> String {
    let mut text = format!("nameserver {dns}\n");
    for line in host.lines() {
        let word = line.split_whitespace().next().unwrap_or("");
        if matches!(word, "search" | "domain" | "options") {
            text.push_str(line);
            text.push('\n');
        }
    }
    text
}

/// The host's hosts file plus `host.containers.internal` and
/// `host.docker.internal` at the address that reaches the host.
pub fn hosts_file(host: &str, host_address: Option<IpAddr>) -> String {
    let mut text = host.to_string();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    if let Some(ip) = host_address {
        text.push_str(&format!("{ip}\thost.containers.internal host.docker.internal\n"));
    }
    text
}

/// The host's IPv4 default gateway (from /proc/net/route), which pasta
/// copies into the namespace.
pub(super) fn default_gateway() -> Option<Ipv4Addr> {
    let table = fs::read_to_string("/proc/net/route").ok()?;
    parse_default_gateway(&table)
}

pub(super) fn parse_default_gateway(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 3 || cols[1] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(cols[2], 16).ok().filter(|g| *g != 0)?;
        // The table is in host byte order (little-endian on every Linux kiln runs on).
        Some(Ipv4Addr::from(gw.to_le_bytes()))
    })
}
