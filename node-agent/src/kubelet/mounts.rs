//! A container's volume mounts (kubelet_pods.go `makeMounts`): each volumeMount resolved
//! against the pod's mounted volumes (read-only when asked or when the volume is),
//! subPath and subPathExpr checked, mountPropagation translated
//! ([`translate_mount_propagation`]). Pure: the subPath is bound safely by the shell
//! ([`crate::volume::subpath`]), which gives the host path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use crate::runtime::expansion::expand;
pub use crate::runtime::spec::MountPropagation;

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
    pub propagation: MountPropagation,
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
    /// The apiserver's check (validateMountPropagation), kept here for a pod admitted
    /// without it: upstream's kubelet trusts the apiserver.
    #[error(
        "volumeMount {volume:?} of container {container:?}: Bidirectional mount propagation is available only to privileged containers"
    )]
    BidirectionalNotPrivileged { volume: String, container: String },
    #[error("invalid MountPropagation mode: {0:?}")]
    Propagation(String),
}

/// `translateMountPropagation`: the volumeMount's mountPropagation as the CRI's; unset
/// and `None` are private.
pub fn translate_mount_propagation(mode: Option<&str>) -> Result<MountPropagation, MountsError> {
    match mode {
        None | Some("None") => Ok(MountPropagation::Private),
        Some("HostToContainer") => Ok(MountPropagation::HostToContainer),
        Some("Bidirectional") => Ok(MountPropagation::Bidirectional),
        Some(other) => Err(MountsError::Propagation(other.to_string())),
    }
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
    let privileged = container
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false);
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
        let propagation = translate_mount_propagation(vm.mount_propagation.as_deref())?;
        if propagation == MountPropagation::Bidirectional && !privileged {
            return Err(MountsError::BidirectionalNotPrivileged {
                volume: vm.name.clone(),
                container: container.name.clone(),
            });
        }
        mounts.push(Mount {
            index,
            volume: vm.name.clone(),
            volume_path: vol.path.clone(),
            sub_path,
            container_path: PathBuf::from(&vm.mount_path),
            read_only: vm.read_only.unwrap_or(false) || vol.read_only,
            propagation,
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
                "volumeMount \"data\" of container \"c\": Bidirectional mount propagation is available only to privileged containers",
            ),
            (
                serde_json::json!({"name": "data", "mountPath": "/x", "mountPropagation": "Sideways"}),
                "invalid MountPropagation mode: \"Sideways\"",
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

    /// translateMountPropagation, every mode.
    #[test]
    fn translate_mount_propagation_as_upstream() {
        let cases = [
            (None, Ok(MountPropagation::Private)),
            (Some("None"), Ok(MountPropagation::Private)),
            (
                Some("HostToContainer"),
                Ok(MountPropagation::HostToContainer),
            ),
            (Some("Bidirectional"), Ok(MountPropagation::Bidirectional)),
            (
                Some("bidirectional"),
                Err("invalid MountPropagation mode: \"bidirectional\"".to_string()),
            ),
            (
                Some(""),
                Err("invalid MountPropagation mode: \"\"".to_string()),
            ),
        ];
        for (mode, want) in cases {
            let got = translate_mount_propagation(mode).map_err(|e| e.to_string());
            assert_eq!(got, want, "{mode:?}");
        }
    }

    /// pkg/kubelet/kubelet_pods_linux_test.go `TestMakeMounts` (v1.36.3), the cases
    /// without image volumes (rekube has no image volume plugin). "volume mounter is nil"
    /// has no counterpart: the agent's volume map holds only mounted volumes, so a volume
    /// without a mounter is the missing one of "volume doesn't exist".
    #[test]
    fn make_mounts_upstream_table() {
        /// `(volume, containerPath, hostPath, readOnly, propagation)`.
        type Expected = (
            &'static str,
            &'static str,
            &'static str,
            bool,
            MountPropagation,
        );
        struct Case {
            name: &'static str,
            container: serde_json::Value,
            expected: Result<Vec<Expected>, &'static str>,
        }
        use MountPropagation::*;
        let volumes = BTreeMap::from([
            ("disk".to_string(), "/mnt/disk"),
            ("disk4".to_string(), "/mnt/host"),
            (
                "disk5".to_string(),
                "/var/lib/kubelet/podID/volumes/empty/disk5",
            ),
        ])
        .into_iter()
        .map(|(k, path)| {
            (
                k,
                VolumeInfo {
                    path: path.into(),
                    read_only: false,
                },
            )
        })
        .collect::<BTreeMap<_, _>>();
        let cases = [
            Case {
                name: "valid mounts in unprivileged container",
                container: serde_json::json!({"name": "container1", "volumeMounts": [
                    {"mountPath": "/etc/hosts", "name": "disk", "readOnly": false, "mountPropagation": "HostToContainer"},
                    {"mountPath": "/mnt/path3", "name": "disk", "readOnly": true, "mountPropagation": "None"},
                    {"mountPath": "/mnt/path4", "name": "disk4", "readOnly": false},
                    {"mountPath": "/mnt/path5", "name": "disk5", "readOnly": false},
                ]}),
                expected: Ok(vec![
                    ("disk", "/etc/hosts", "/mnt/disk", false, HostToContainer),
                    ("disk", "/mnt/path3", "/mnt/disk", true, Private),
                    ("disk4", "/mnt/path4", "/mnt/host", false, Private),
                    (
                        "disk5",
                        "/mnt/path5",
                        "/var/lib/kubelet/podID/volumes/empty/disk5",
                        false,
                        Private,
                    ),
                ]),
            },
            Case {
                name: "valid mounts in privileged container",
                container: serde_json::json!({"name": "container1", "volumeMounts": [
                    {"mountPath": "/etc/hosts", "name": "disk", "readOnly": false, "mountPropagation": "Bidirectional"},
                    {"mountPath": "/mnt/path3", "name": "disk", "readOnly": true, "mountPropagation": "HostToContainer"},
                    {"mountPath": "/mnt/path4", "name": "disk4", "readOnly": false},
                ], "securityContext": {"privileged": true}}),
                expected: Ok(vec![
                    ("disk", "/etc/hosts", "/mnt/disk", false, Bidirectional),
                    ("disk", "/mnt/path3", "/mnt/disk", true, HostToContainer),
                    ("disk4", "/mnt/path4", "/mnt/host", false, Private),
                ]),
            },
            Case {
                name: "invalid absolute SubPath",
                container: serde_json::json!({"name": "", "volumeMounts": [
                    {"mountPath": "/mnt/path3", "subPath": "/must/not/be/absolute", "name": "disk", "readOnly": true},
                ]}),
                expected: Err("error SubPath `/must/not/be/absolute` must not be an absolute path"),
            },
            Case {
                name: "invalid SubPath with backsteps",
                container: serde_json::json!({"name": "", "volumeMounts": [
                    {"mountPath": "/mnt/path3", "subPath": "no/backsteps/../allowed", "name": "disk", "readOnly": true},
                ]}),
                expected: Err(
                    "unable to provision SubPath `no/backsteps/../allowed`: must not contain '..'",
                ),
            },
            Case {
                name: "volume doesn't exist",
                container: serde_json::json!({"name": "", "volumeMounts": [
                    {"mountPath": "/mnt/path3", "name": "disk", "readOnly": true},
                ]}),
                expected: Err("cannot find volume \"disk\" to mount into container \"\""),
            },
        ];
        for case in cases {
            let c: Container = serde_json::from_value(case.container).unwrap();
            // "volume doesn't exist" has no pod volumes at all.
            let vols = if case.name == "volume doesn't exist" {
                BTreeMap::new()
            } else {
                volumes.clone()
            };
            let got = make_mounts(&c, &vols, &[]);
            match (got, case.expected) {
                (Ok(mounts), Ok(want)) => {
                    let got: Vec<_> = mounts
                        .iter()
                        .map(|m| {
                            (
                                m.volume.as_str(),
                                m.container_path.to_str().unwrap(),
                                m.volume_path.to_str().unwrap(),
                                m.read_only,
                                m.propagation,
                            )
                        })
                        .collect();
                    assert_eq!(got, want, "{}", case.name);
                }
                (Err(e), Err(want)) => assert_eq!(e.to_string(), want, "{}", case.name),
                (got, want) => panic!("{}: got {got:?}, want {want:?}", case.name),
            }
        }
    }
}
