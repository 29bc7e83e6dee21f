//! The image configuration JSON (OCI image config with the fields docker and
//! BuildKit add: Healthcheck, OnBuild, Shell). Field names and omission rules
//! follow docker's JSON so other tools read what kiln writes unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `application/vnd.oci.image.config.v1+json`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ImageConfig {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub variant: Option<String>,
    #[serde(rename = "os.version", skip_serializing_if = "Option::is_none", default)]
    pub os_version: Option<String>,
    #[serde(default)]
    pub config: ContainerConfig,
    pub rootfs: RootFs,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub history: Vec<History>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub env: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub volumes: Option<BTreeMap<String, Empty>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub working_dir: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub args_escaped: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub healthcheck: Option<Healthcheck>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub on_build: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shell: Option<Vec<String>>,
}

/// Serialises as `{}` (docker's set-of-strings encoding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Empty {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub test: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub interval: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timeout: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start_period: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub start_interval: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub retries: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs { kind: "layers".into(), diff_ids: Vec::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct History {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub created_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub author: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub empty_layer: bool,
}
