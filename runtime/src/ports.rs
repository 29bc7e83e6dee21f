//! Published ports (`kiln run -p`), as docker writes them.

use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// `-p [IP:]HOST:CONTAINER[/tcp|udp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to listen on; every address when `None`.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        write!(f, "{}:{}/{}", self.host_port, self.container_port, self.proto.name())
    }
}

impl FromStr for PortMapping {
    type Err = String;

    fn from_str(text: &str) -> Result<PortMapping, String> {
        let bad = |why: &str| format!("invalid -p {text:?}: {why} (expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp])");
        let (rest, proto) = match text.rsplit_once('/') {
            Some((rest, "tcp")) => (rest, Proto::Tcp),
            Some((rest, "udp")) => (rest, Proto::Udp),
            Some((_, other)) => return Err(bad(&format!("unknown protocol {other:?}"))),
            None => (text, Proto::Tcp),
        };
        // An IPv6 address is written in brackets: [::1]:8080:80.
        let (host_ip, ports) = if let Some(after) = rest.strip_prefix('[') {
            let (ip, ports) = after.split_once("]:").ok_or_else(|| bad("unclosed [ around the address"))?;
            (Some(ip), ports)
        } else {
            match rest.matches(':').count() {
                1 => (None, rest),
                2 => {
                    let (ip, ports) = rest.split_once(':').expect("two colons");
                    (Some(ip), ports)
                }
                0 => return Err(bad("give the host port too; kiln publishes no random ports")),
                _ => return Err(bad("write an IPv6 address in brackets")),
            }
        };
        let host_ip = match host_ip.filter(|ip| !ip.is_empty()) {
            Some(ip) => Some(ip.parse::<IpAddr>().map_err(|_| bad(&format!("{ip:?} is not an IP address")))?),
            None => None,
        };
        let (host, container) = ports.split_once(':').ok_or_else(|| bad("missing the container port"))?;
        let port = |p: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ if p.contains('-') => Err(bad("port ranges are not supported")),
            _ => Err(bad(&format!("{p:?} is not a port number (1-65535)"))),
        };
        Ok(PortMapping { host_ip, host_port: port(host)?, container_port: port(container)?, proto })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs_follow_docker() {
        let p: PortMapping = "8080:80".parse().unwrap();
        assert_eq!(p, PortMapping { host_ip: None, host_port: 8080, container_port: 80, proto: Proto::Tcp });
        let p: PortMapping = "127.0.0.1:53:5353/udp".parse().unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!((p.host_port, p.container_port, p.proto), (53, 5353, Proto::Udp));
        let p: PortMapping = "[::1]:8443:443/tcp".parse().unwrap();
        assert_eq!(p.host_ip, Some("::1".parse().unwrap()));
        assert_eq!(p.to_string(), "[::1]:8443:443/tcp");
        for bad in ["80", "8080:80/sctp", "x:80", "8080-8081:80-81", "0:80", "1.2.3:1:2", "8080:"] {
            let err = bad.parse::<PortMapping>().unwrap_err();
            assert!(err.contains("expected [IP:]HOST_PORT:CONTAINER_PORT"), "{bad}: {err}");
        }
    }
}
