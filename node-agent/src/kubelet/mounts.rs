//! A container's volume mounts (kubelet_pods.go `makeMounts`): each volumeMount resolved
//! against the pod's mounted volumes (read-only when asked or when the volume is),
//! subPath and subPathExpr checked, mountPropagation translated. Pure: the subPath is
//! bound safely by the shell ([`crate::volume::subpath`]), which gives the host path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use crate::runtime::expansion::expand;

/// A mounted volume as the container's mounts need it (`kubecontainer.VolumeInfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInfo {
    pub path: PathBuf,
    /// The mounter's read-only attribute (configMap, secret, downwardAPI).
    pub read_only: bool,
}

/// One mount of the container (`kubecontainer.Mount`), its subPath still to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The volumeMount's index in the container's list (names the subPath's bind).
    pub index: usize,
    pub volume: String,
    /// The volume's path on the node.
    pub volume_path: PathBuf,
    /// Relative to the volume, checked: not absolute, no `..`.
    pub sub_path: Option<String>,
    pub container_path: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountsError {
    #[error("cannot find volume {volume:?} to mount into container {container:?}")]
    MissingVolume { volume: String, container: String },
    #[error("error SubPath `{0}` must not be an absolute path")]
    AbsoluteSubPath(String),
    #[error("unable to provision SubPath `{0}`: must not contain '..'")]
    Backsteps(String),
    #[error("missing value for {0}")]
    SubPathExpr(String),
    #[error(
        "mountPropagation Bidirectional of volumeMount {volume:?} of container {container:?} is not supported by rekube-node-agent yet"
    )]
    Bidirectional { volume: String, container: String },
    #[error("invalid mountPropagation {0:?}")]
    Propagation(String),
}

/// upstream `ValidatePathNoBacksteps`: no `..` element.
pub fn has_backsteps(path: &str) -> bool {
    path.split('/').any(|part| part == "..")
}

/// `ExpandContainerVolumeMounts`: `$(VAR)` from the container's environment; a reference
/// to an unset or empty variable is an error naming it.
pub fn expand_sub_path_expr(expr: &str, env: &[(String, String)]) -> Result<String, MountsError> {
    let lookup: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let missing: std::cell::RefCell<Vec<String>> = Default::default();
    let expanded = expand(expr, |key| match lookup.get(key) {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => {
            missing.borrow_mut().push(key.to_string());
            String::new()
        }
    });
    let mut missing = missing.into_inner();
    if missing.is_empty() {
        Ok(expanded)
    } else {
        missing.sort();
        missing.dedup();
        Err(MountsError::SubPathExpr(missing.join(", ")))
    }
}

/// `makeMounts` for the volumes: in the container's order, sorted by destination depth
/// (parents before what is mounted inside them, as containerd orders mounts).
pub fn make_mounts(
    container: &Container,
    volumes: &BTreeMap<String, VolumeInfo>,
    env: &[(String, String)],
) -> Result<Vec<Mount>, MountsError> {
    let mut mounts = Vec::new();
    for (index, vm) in container.volume_mounts.iter().flatten().enumerate() {
        let vol = volumes
            .get(&vm.name)
            .ok_or_else(|| MountsError::MissingVolume {
                volume: vm.name.clone(),
                container: container.name.clone(),
            })?;
        let mut sub_path = vm.sub_path.clone().filter(|s| !s.is_empty());
        if let Some(expr) = vm.sub_path_expr.as_deref().filter(|s| !s.is_empty()) {
            sub_path = Some(expand_sub_path_expr(expr, env)?).filter(|s| !s.is_empty());
        }
        if let Some(sp) = &sub_path {
            if Path::new(sp).is_absolute() {
                return Err(MountsError::AbsoluteSubPath(sp.clone()));
            }
            if has_backsteps(sp) {
                return Err(MountsError::Backsteps(sp.clone()));
            }
        }
        match vm.mount_propagation.as_deref() {
            // rekube's containers see host mounts as rslave (HostToContainer); None is
            // upstream's private, which the agent does not distinguish yet.
            None | Some("None") | Some("HostToContainer") => {}
            Some("Bidirectional") => {
                return Err(MountsError::Bidirectional {
                    volume: vm.name.clone(),
                    container: container.name.clone(),
                });
            }
            Some(other) => return Err(MountsError::Propagation(other.to_string())),
        }
        mounts.push(Mount {
            index,
            volume: vm.name.clone(),
            volume_path: vol.path.clone(),
            sub_path,
            container_path: PathBuf::from(&vm.mount_path),
            read_only: vm.read_only.unwrap_or(false) || vol.read_only,
        });
    }
    mounts.sort_by_key(|m| m.container_path.components().count());
    Ok(mounts)
}

/// Whether the agent's managed /etc/hosts is mounted (`shouldMountHostsFile` with
/// makeMounts' rule: not when a volumeMount takes /etc/hosts).
pub fn mounts_etc_hosts(container: &Container) -> bool {
    !container
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path == "/etc/hosts")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(mounts: serde_json::Value) -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "volumeMounts": mounts})).unwrap()
    }

    fn volumes() -> BTreeMap<String, VolumeInfo> {
        BTreeMap::from([
            (
                "data".to_string(),
                VolumeInfo {
                    path: "/pods/u/volumes/e/data".into(),
                    read_only: false,
                },
            ),
            (
                "conf".to_string(),
                VolumeInfo {
                    path: "/pods/u/volumes/c/conf".into(),
                    read_only: true,
                },
            ),
        ])
    }

    #[test]
    fn mounts_in_depth_order_with_read_only_from_either_side() {
        let c = container(serde_json::json!([
            {"name": "data", "mountPath": "/srv/data/deep", "subPath": "x/y"},
            {"name": "conf", "mountPath": "/etc/app"},
            {"name": "data", "mountPath": "/srv", "readOnly": true},
        ]));
        let mounts = make_mounts(&c, &volumes(), &[]).unwrap();
        let got: Vec<(usize, &str, Option<&str>, bool)> = mounts
            .iter()
            .map(|m| {
                (
                    m.index,
                    m.container_path.to_str().unwrap(),
                    m.sub_path.as_deref(),
                    m.read_only,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (2, "/srv", None, true),
                (1, "/etc/app", None, true),
                (0, "/srv/data/deep", Some("x/y"), false),
            ]
        );
    }

    #[test]
    fn bad_mounts_get_upstreams_messages() {
        let env = vec![
            ("POD".to_string(), "web-0".to_string()),
            ("EMPTY".into(), String::new()),
        ];
        let cases: &[(serde_json::Value, &str)] = &[
            (
                serde_json::json!({"name": "nope", "mountPath": "/x"}),
                "cannot find volume \"nope\" to mount into container \"c\"",
            ),
            (
                serde_json::json!({"name": "data", "mountPath": "/x", "subPath": "/etc"}),
                "error SubPath `/etc` must not be an absolute path",
            ),
            (
                serde_json::json!({"name": "data", "mountPath": "/x", "subPath": "a/../../etc"}),
                "unable to provision SubPath `a/../../etc`: must not contain '..'",
            ),
            (
                serde_json::json!({"name": "data", "mountPath": "/x", "subPathExpr": "$(NOPE)/$(EMPTY)"}),
                "missing value for EMPTY, NOPE",
            ),
            (
                serde_json::json!({"name": "data", "mountPath": "/x", "subPathExpr": "$(POD)/../.."}),
                "unable to provision SubPath `web-0/../..`: must not contain '..'",
            ),
            (
                serde_json::json!({"name": "data", "mountPath": "/x", "mountPropagation": "Bidirectional"}),
                "mountPropagation Bidirectional of volumeMount \"data\" of container \"c\" is not supported by rekube-node-agent yet",
            ),
        ];
        for (vm, want) in cases {
            let err =
                make_mounts(&container(serde_json::json!([vm])), &volumes(), &env).unwrap_err();
            assert_eq!(err.to_string(), *want, "{vm}");
        }
    }

    #[test]
    fn sub_path_expr_expands_from_the_environment() {
        let env = vec![("POD".to_string(), "web-0".to_string())];
        let c = container(
            serde_json::json!([{"name": "data", "mountPath": "/logs", "subPathExpr": "logs/$(POD)"}]),
        );
        let mounts = make_mounts(&c, &volumes(), &env).unwrap();
        assert_eq!(mounts[0].sub_path.as_deref(), Some("logs/web-0"));
        assert!(mounts_etc_hosts(&c));
        assert!(!mounts_etc_hosts(&container(
            serde_json::json!([{"name": "conf", "mountPath": "/etc/hosts", "subPath": "hosts"}])
        )));
    }
}
