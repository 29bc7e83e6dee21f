//! `registries.conf` (containers-registries.conf(5)), read for one thing:
//! which registries are insecure (HTTPS without verification, or plain HTTP).
//! Both the v2 `[[registry]]` tables and v1 `[registries.insecure]` count.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
struct RegistriesConf {
    #[serde(default)]
    registry: Vec<RegistryEntry>,
    #[serde(default)]
    registries: Option<V1Tables>,
}

#[derive(Debug, Default, Deserialize)]
struct RegistryEntry {
    #[serde(default)]
    location: String,
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    insecure: bool,
}

#[derive(Debug, Default, Deserialize)]
struct V1Tables {
    #[serde(default)]
    insecure: Option<V1List>,
}

#[derive(Debug, Default, Deserialize)]
struct V1List {
    #[serde(default)]
    registries: Vec<String>,
}

/// `$CONTAINERS_REGISTRIES_CONF`, else the user's file, else the system's.
fn conf_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CONTAINERS_REGISTRIES_CONF").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    let user = config.map(|c| c.join("containers/registries.conf"));
    user.into_iter().chain([PathBuf::from("/etc/containers/registries.conf")]).find(|p| p.is_file())
}

/// Whether registries.conf marks `registry` (`host[:port]`) insecure.
pub fn is_insecure(registry: &str) -> bool {
    conf_path().is_some_and(|p| insecure_in(&p, registry))
}

fn insecure_in(path: &Path, registry: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    let conf: RegistriesConf = match toml::from_str(&text) {
        Ok(c) => c,
        Err(e) => {
            log::warn!("ignoring {}: {e}", path.display());
            return false;
        }
    };
    let v2 = conf.registry.iter().any(|r| {
        let name = if r.prefix.is_empty() { &r.location } else { &r.prefix };
        r.insecure && matches(name, registry)
    });
    let v1 =
        conf.registries.and_then(|t| t.insecure).is_some_and(|l| l.registries.iter().any(|n| matches(n, registry)));
    v2 || v1
}

/// `name` is the registry itself or a `*.domain` wildcard covering it.
fn matches(name: &str, registry: &str) -> bool {
    let name = name.split('/').next().unwrap_or(name);
    match name.strip_prefix("*.") {
        Some(domain) => registry.ends_with(&format!(".{domain}")),
        None => name == registry,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_insecure_registries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registries.conf");
        std::fs::write(
            &path,
            "unqualified-search-registries = [\"docker.io\"]\n\n[[registry]]\nlocation = \"reg.internal:5000\"\ninsecure = true\n\n[[registry]]\nlocation = \"safe.example\"\n\n[[registry]]\nprefix = \"*.lab.example\"\nlocation = \"mirror.example\"\ninsecure = true\n\n[registries.insecure]\nregistries = [\"old.example\"]\n",
        )
        .unwrap();
        assert!(insecure_in(&path, "reg.internal:5000"));
        assert!(!insecure_in(&path, "reg.internal"));
        assert!(!insecure_in(&path, "safe.example"));
        assert!(insecure_in(&path, "a.lab.example"));
        assert!(insecure_in(&path, "old.example"));
        std::fs::write(&path, "not [ toml").unwrap();
        assert!(!insecure_in(&path, "old.example"));
    }
}
