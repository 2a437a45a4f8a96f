//! Which pods a drain deletes (upstream k8s.io/kubectl/pkg/drain/filters.go): the pure
//! decision, over the pods bound to the node. Mirror pods are skipped; DaemonSet pods,
//! pods with emptyDir data and pods without a controller stop the drain unless the
//! matching flag allows them (then they are named in a warning); finished pods always go.
use rekube_crds::Pod;

/// The `kubectl drain` flags that decide which pods may go.
#[derive(Clone, Debug, Default)]
pub struct DrainFlags {
    pub force: bool,
    pub ignore_daemonsets: bool,
    pub delete_emptydir_data: bool,
}

/// What the filters decided: the pods to delete and the warnings, or the errors.
#[derive(Debug, PartialEq)]
pub struct PodDeleteList {
    pub delete: Vec<String>,
    pub warnings: Vec<String>,
    pub errors: Vec<String>,
}

const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Finding {
    DaemonSet,
    LocalStorage,
    Unreplicated,
}

impl Finding {
    /// upstream's daemonSetFatal/Warning, localStorageFatal/Warning, unmanagedFatal/Warning.
    fn message(self, fatal: bool) -> &'static str {
        match (self, fatal) {
            (Finding::DaemonSet, true) => {
                "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore)"
            }
            (Finding::DaemonSet, false) => "ignoring DaemonSet-managed Pods",
            (Finding::LocalStorage, true) => {
                "cannot delete Pods with local storage (use --delete-emptydir-data to override)"
            }
            (Finding::LocalStorage, false) => "deleting Pods with local storage",
            (Finding::Unreplicated, true) => {
                "cannot delete Pods that declare no controller (use --force to override)"
            }
            (Finding::Unreplicated, false) => "deleting Pods that declare no controller",
        }
    }
}

fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// upstream Helper.GetPodsForDeletion's filter chain, in its order: skip mirror pods,
/// then daemonSetFilter, localStorageFilter, unreplicatedFilter. Messages group the pods
/// by finding, as kubectl prints them ("...: ns/a, ns/b").
pub fn get_pods_for_deletion(pods: &[Pod], flags: &DrainFlags) -> PodDeleteList {
    let mut delete = Vec::new();
    let mut warn: Vec<(Finding, String)> = Vec::new();
    let mut fatal: Vec<(Finding, String)> = Vec::new();
    for pod in pods {
        let annotations = pod.metadata.annotations.as_ref();
        if annotations.is_some_and(|a| a.contains_key(MIRROR_ANNOTATION)) {
            continue;
        }
        let controller = pod
            .metadata
            .owner_references
            .as_ref()
            .and_then(|o| o.iter().find(|o| o.controller == Some(true)));
        let k = key(pod);
        if controller.is_some_and(|c| c.kind == "DaemonSet") {
            if is_finished(pod) {
                delete.push(k);
            } else if flags.ignore_daemonsets {
                warn.push((Finding::DaemonSet, k));
            } else {
                fatal.push((Finding::DaemonSet, k));
            }
            continue;
        }
        let has_empty_dir = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .is_some_and(|v| v.iter().any(|v| v.empty_dir.is_some()));
        if has_empty_dir && !is_finished(pod) {
            if flags.delete_emptydir_data {
                warn.push((Finding::LocalStorage, k.clone()));
            } else {
                fatal.push((Finding::LocalStorage, k));
                continue;
            }
        }
        if controller.is_none() && !is_finished(pod) {
            if flags.force {
                warn.push((Finding::Unreplicated, k.clone()));
            } else {
                fatal.push((Finding::Unreplicated, k));
                continue;
            }
        }
        delete.push(k);
    }
    PodDeleteList {
        delete,
        warnings: group(&warn, false),
        errors: group(&fatal, true),
    }
}

fn group(found: &[(Finding, String)], fatal: bool) -> Vec<String> {
    let mut kinds: Vec<Finding> = found.iter().map(|(f, _)| *f).collect();
    kinds.sort();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|kind| {
            let pods: Vec<&str> = found
                .iter()
                .filter(|(f, _)| *f == kind)
                .map(|(_, p)| p.as_str())
                .collect();
            format!("{}: {}", kind.message(fatal), pods.join(", "))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, owner: Option<&str>, empty_dir: bool, phase: &str) -> Pod {
        let owners: Vec<serde_json::Value> = owner
            .map(|kind| vec![json!({"apiVersion": "rekube.io/v1", "kind": kind, "name": "o", "uid": "u", "controller": true})])
            .unwrap_or_default();
        let volumes: Vec<serde_json::Value> = if empty_dir {
            vec![json!({"name": "scratch", "emptyDir": {}})]
        } else {
            vec![]
        };
        serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "ownerReferences": owners},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "volumes": volumes},
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn filters_follow_kubectl() {
        let mirror = {
            let mut p = pod("mirror", None, false, "Running");
            p.metadata.annotations =
                Some([(MIRROR_ANNOTATION.to_string(), "x".to_string())].into());
            p
        };
        let pods = vec![
            pod("rs-pod", Some("ReplicaSet"), false, "Running"),
            pod("ds-pod", Some("DaemonSet"), false, "Running"),
            pod("bare", None, false, "Running"),
            pod("bare-done", None, false, "Succeeded"),
            pod("scratch", Some("ReplicaSet"), true, "Running"),
            mirror,
        ];
        let strict = get_pods_for_deletion(&pods, &DrainFlags::default());
        assert_eq!(strict.delete, vec!["ns/rs-pod", "ns/bare-done"]);
        assert_eq!(
            strict.errors,
            vec![
                "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): ns/ds-pod",
                "cannot delete Pods with local storage (use --delete-emptydir-data to override): ns/scratch",
                "cannot delete Pods that declare no controller (use --force to override): ns/bare",
            ]
        );
        let lenient = get_pods_for_deletion(
            &pods,
            &DrainFlags {
                force: true,
                ignore_daemonsets: true,
                delete_emptydir_data: true,
            },
        );
        assert!(lenient.errors.is_empty());
        assert_eq!(
            lenient.delete,
            vec!["ns/rs-pod", "ns/bare", "ns/bare-done", "ns/scratch"]
        );
        assert_eq!(
            lenient.warnings,
            vec![
                "ignoring DaemonSet-managed Pods: ns/ds-pod",
                "deleting Pods with local storage: ns/scratch",
                "deleting Pods that declare no controller: ns/bare",
            ]
        );
    }

    #[test]
    fn an_empty_node_drains_with_nothing_to_do() {
        let r = get_pods_for_deletion(&[], &DrainFlags::default());
        assert!(r.delete.is_empty() && r.errors.is_empty() && r.warnings.is_empty());
    }
}
