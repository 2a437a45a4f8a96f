//! Cached results (libcni's `cachedInfo`, kind `cniCacheV1`, at
//! `<cache dir>/results/<network>-<container id>-<ifname>`): what ADD returned and the
//! config it ran with, so that CHECK and DEL get the `prevResult` the spec asks for, and a
//! DEL after the agent restarted (or the conf dir changed) runs with the config of its ADD.
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::Error;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedInfo {
    pub kind: String,
    #[serde(rename = "containerId")]
    pub container_id: String,
    /// The network config list's bytes, base64 (Go's encoding of []byte).
    pub config: String,
    #[serde(rename = "ifName")]
    pub if_name: String,
    #[serde(rename = "networkName")]
    pub network_name: String,
    #[serde(rename = "netns", default, skip_serializing_if = "String::is_empty")]
    pub netns: String,
    #[serde(rename = "cniArgs", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<[String; 2]>,
    #[serde(
        rename = "capabilityArgs",
        default,
        skip_serializing_if = "Map::is_empty"
    )]
    pub capability_args: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

pub const CACHE_KIND: &str = "cniCacheV1";

impl CachedInfo {
    pub fn config_bytes(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.config)
            .unwrap_or_default()
    }

    pub fn encode_config(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }
}

/// The cache file of one attachment.
pub fn result_path(cache_dir: &Path, network: &str, container_id: &str, if_name: &str) -> PathBuf {
    cache_dir
        .join("results")
        .join(format!("{network}-{container_id}-{if_name}"))
}

fn cache_error(path: &Path, source: std::io::Error) -> Error {
    Error::Cache {
        path: path.display().to_string(),
        source,
    }
}

/// Writes `info` (atomically: a temporary file renamed over it).
pub fn write(path: &Path, info: &CachedInfo) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| cache_error(dir, e))?;
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(info).expect("a cache entry serializes");
    std::fs::write(&tmp, bytes).map_err(|e| cache_error(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| cache_error(path, e))
}

/// Reads an entry; `None` when there is none (or it is not one of libcni's).
pub fn read(path: &Path) -> Option<CachedInfo> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice::<CachedInfo>(&bytes)
        .ok()
        .filter(|c| c.kind == CACHE_KIND)
}

/// Removes an entry; absent is fine.
pub fn remove(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(cache_error(path, e)),
    }
}

/// Every cached attachment of `network`: (container id, ifname, path).
pub fn entries(cache_dir: &Path, network: &str) -> Vec<(String, String, PathBuf)> {
    let Ok(dir) = std::fs::read_dir(cache_dir.join("results")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let info = read(&e.path())?;
            (info.network_name == network).then(|| (info.container_id, info.if_name, e.path()))
        })
        .collect()
}

/// Every cached attachment, of any network: (network, container id, ifname, path).
pub fn all_entries(cache_dir: &Path) -> Vec<(String, String, String, PathBuf)> {
    let Ok(dir) = std::fs::read_dir(cache_dir.join("results")) else {
        return Vec::new();
    };
    let mut out: Vec<_> = dir
        .flatten()
        .filter_map(|e| {
            let info = read(&e.path())?;
            Some((info.network_name, info.container_id, info.if_name, e.path()))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_in_libcnis_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = result_path(dir.path(), "net", "c1", "eth0");
        assert!(path.ends_with("results/net-c1-eth0"));
        let info = CachedInfo {
            kind: CACHE_KIND.into(),
            container_id: "c1".into(),
            config: CachedInfo::encode_config(b"{\"name\":\"net\"}"),
            if_name: "eth0".into(),
            network_name: "net".into(),
            netns: "/run/netns/x".into(),
            cni_args: vec![["K8S_POD_NAME".into(), "p".into()]],
            capability_args: Map::new(),
            result: Some(json!({"cniVersion": "1.0.0", "ips": []})),
        };
        write(&path, &info).unwrap();
        let text: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(text["kind"], "cniCacheV1");
        assert_eq!(text["containerId"], "c1");
        assert_eq!(text["config"], "eyJuYW1lIjoibmV0In0=");
        assert_eq!(read(&path).unwrap(), info);
        assert_eq!(read(&path).unwrap().config_bytes(), b"{\"name\":\"net\"}");
        assert_eq!(entries(dir.path(), "net").len(), 1);
        assert!(entries(dir.path(), "other").is_empty());
        assert_eq!(
            all_entries(dir.path()),
            [("net".into(), "c1".into(), "eth0".into(), path.clone())]
        );
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert!(read(&path).is_none());
    }
}
