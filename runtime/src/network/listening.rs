//! Whether a published port is listening: the forwarder's own sockets,
//! not another process's, hold it.

use std::fs;

use super::{NetworkError, PortMapping, Proto};

/// pasta goes on when it cannot bind a published port (another program
/// has it): make sure each one is a listening socket of pasta's.
pub(super) fn check_listening(pid: u32, ports: &[PortMapping]) -> Result<(), NetworkError> {
    if ports.is_empty() {
        return Ok(());
    }
    let inodes: std::collections::HashSet<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    l.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')).map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    for p in ports {
        let read = |v6: &str| fs::read_to_string(format!("/proc/net/{}{v6}", p.proto.name())).unwrap_or_default();
        let (v4, v6) = (read(""), read("6"));
        let ours = |table: &str| sockets_on(table, p.host_port, p.proto).any(|i| inodes.contains(i));
        // pasta listens on one dual-stack socket, or on an IPv6-only one
        // when another program has the IPv4 port: that one must not exist
        // (nor, for an IPv6 address, an IPv6 one).
        let family = if p.host_ip.is_some_and(|ip| ip.is_ipv6()) { &v6 } else { &v4 };
        let foreign = sockets_on(family, p.host_port, p.proto).any(|i| !inodes.contains(i));
        let bound = (ours(&v4) || ours(&v6)) && !foreign;
        if !bound {
            return Err(NetworkError::Publish {
                mapping: p.to_string(),
                detail: format!(
                    "pasta could not listen on port {port}: is it in use? (`ss -lnp 'sport = :{port}'` shows by what)",
                    port = p.host_port
                ),
            });
        }
    }
    Ok(())
}

/// The inodes of the sockets in a /proc/net/{tcp,udp}[6] table that listen
/// (TCP) or are bound (UDP) on `port`.
pub(super) fn sockets_on(table: &str, port: u16, proto: Proto) -> impl Iterator<Item = &str> {
    table.lines().skip(1).filter_map(move |line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let local_port = cols.get(1)?.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok())?;
        let state = *cols.get(3)?;
        // 0A is TCP_LISTEN; a bound UDP socket shows 07 (TCP_CLOSE's number).
        let wanted = if proto == Proto::Tcp { "0A" } else { "07" };
        (local_port == port && state == wanted).then(|| cols.get(9).copied()).flatten()
    })
}
