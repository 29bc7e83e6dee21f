//! The options `kiln build` gives every RUN step (`--add-host`, `--ulimit`,
//! `--shm-size`, `--network`, `--cap-add`/`--cap-drop`) and their part of
//! the step's cache key.

use kiln_runtime::Network;

/// What `kiln build` sets for every RUN step beyond the Dockerfile:
/// `--add-host`, `--ulimit`, `--shm-size`, `--network`, `--cap-add` and
/// `--cap-drop`. Part of each RUN's cache key, as BuildKit keeps them in the
/// exec op.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunExtras {
    /// `--add-host NAME:IP`: lines added to the step's /etc/hosts.
    pub add_hosts: Vec<(String, HostIp)>,
    pub ulimits: Vec<kiln_runtime::ulimit::Ulimit>,
    pub shm_size: Option<u64>,
    /// `--network`: the network of a RUN without its own `--network` (or
    /// with `--network=default`).
    pub network: Network,
    /// The capabilities a RUN keeps (docker's default set unless
    /// `--cap-add`/`--cap-drop` changed it).
    pub caps: kiln_runtime::caps::Caps,
}

/// The address of an `--add-host` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostIp {
    Ip(std::net::IpAddr),
    /// `host-gateway`: the host as the step's network reaches it — its
    /// loopback on the host's network, the forwarder's host address on a
    /// private one (as docker maps it to its bridge's gateway).
    HostGateway,
}

impl std::fmt::Display for HostIp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostIp::Ip(ip) => write!(f, "{ip}"),
            HostIp::HostGateway => f.write_str("host-gateway"),
        }
    }
}

impl RunExtras {
    /// Their part of a RUN's cache key: empty when none is set, so keys of
    /// builds without them stay as they were.
    pub fn cache_text(&self) -> String {
        let defaults = RunExtras::default();
        let mut text = String::new();
        if (&self.add_hosts, &self.ulimits, self.shm_size)
            != (&defaults.add_hosts, &defaults.ulimits, defaults.shm_size)
        {
            let hosts: Vec<String> = self.add_hosts.iter().map(|(n, ip)| format!("{n}={ip}")).collect();
            let limits: Vec<String> =
                self.ulimits.iter().map(|u| format!("{}={}:{}", u.name, u.soft, u.hard)).collect();
            text = format!("|hosts={}|ulimits={}|shm={:?}", hosts.join(","), limits.join(","), self.shm_size);
        }
        if self.network != defaults.network {
            text.push_str(&format!("|network={}", self.network));
        }
        if self.caps != defaults.caps {
            text.push_str(&format!("|caps={:#x}", self.caps.0));
        }
        text
    }

    /// The step's /etc/hosts with the added names: the host's file (which
    /// RUN sees by default) and then one `IP<TAB>NAME` line each, with
    /// `host-gateway` as `gateway`.
    pub(super) fn hosts_file(&self, host_hosts: &str, gateway: std::net::IpAddr) -> String {
        let mut text = host_hosts.to_string();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for (name, ip) in &self.add_hosts {
            let ip = match ip {
                HostIp::Ip(ip) => *ip,
                HostIp::HostGateway => gateway,
            };
            text.push_str(&format!("{ip}\t{name}\n"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_runtime::caps::Caps;

    #[test]
    fn run_extras_key_the_cache_only_when_set() {
        assert_eq!(RunExtras::default().cache_text(), "", "keys of builds without the flags stay as they were");
        let host = RunExtras { network: Network::Host, caps: Caps::docker_default(), ..Default::default() };
        assert_eq!(host.cache_text(), "");
        let private = RunExtras { network: Network::Private, ..Default::default() };
        assert_eq!(private.cache_text(), "|network=private");
        let none = RunExtras { network: Network::None, ..Default::default() };
        assert_ne!(none.cache_text(), private.cache_text());
        let caps = Caps::tweak(&["NET_ADMIN".into()], &[]).unwrap();
        let added = RunExtras { caps, ..Default::default() };
        assert_eq!(added.cache_text(), "|caps=0xa80435fb");
        let dropped = RunExtras { caps: Caps::tweak(&[], &["NET_RAW".into()]).unwrap(), ..Default::default() };
        assert_ne!(added.cache_text(), dropped.cache_text());
        let shm = RunExtras { shm_size: Some(1), caps, ..Default::default() };
        assert_eq!(shm.cache_text(), "|hosts=|ulimits=|shm=Some(1)|caps=0xa80435fb");
    }
}
