//! The eviction manager's local-storage decisions that concern one pod
//! (pkg/kubelet/eviction/eviction_manager.go `emptyDirLimitEviction`, helpers.go's
//! messages): a pod whose emptyDir holds more than its `sizeLimit` is evicted at once.
//! Pure: the shell measures the volumes and kills the pod.

use std::collections::BTreeMap;

use rekube_crds::Pod;

use super::quantity::parse_quantity;

/// upstream's eviction reason (`eviction.Reason`), the pod's `status.reason` and the
/// event's reason.
pub const REASON_EVICTED: &str = "Evicted";

/// upstream's grace period for a local storage eviction (`immediateEvictionGracePeriodSeconds`).
pub const IMMEDIATE_EVICTION_GRACE_PERIOD_SECONDS: u64 = 1;

/// The emptyDir volumes of the pod that have a positive `sizeLimit`, with it (what the
/// shell needs to measure).
pub fn empty_dirs_with_size_limit(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            let limit = v.empty_dir.as_ref()?.size_limit.as_ref()?;
            let positive = parse_quantity(&limit.0).is_ok_and(|a| a.sign() > 0);
            positive.then(|| (v.name.clone(), limit.0.clone()))
        })
        .collect()
}

/// `emptyDirLimitEviction`: the eviction message of the first emptyDir (in the spec's
/// order) whose measured use (`used`, bytes by volume name) is above its sizeLimit.
pub fn empty_dir_limit_eviction(pod: &Pod, used: &BTreeMap<String, i64>) -> Option<String> {
    empty_dirs_with_size_limit(pod)
        .into_iter()
        .find_map(|(name, limit)| {
            let used = *used.get(&name)?;
            let limit_bytes = parse_quantity(&limit).ok()?.value();
            (used > limit_bytes)
                .then(|| format!("Usage of EmptyDir volume {name:?} exceeds the limit {limit:?}. "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "x"}], "volumes": volumes},
        }))
        .unwrap()
    }

    /// After upstream's TestLocalStorageEviction / emptyDirLimitEviction: only emptyDirs
    /// with a positive sizeLimit count, strictly above the limit, the first in spec order.
    #[test]
    fn empty_dir_limit_eviction_table() {
        let p = pod(serde_json::json!([
            {"name": "unlimited", "emptyDir": {}},
            {"name": "zero", "emptyDir": {"sizeLimit": "0"}},
            {"name": "small", "emptyDir": {"sizeLimit": "1Mi"}},
            {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "2Mi"}},
            {"name": "host", "hostPath": {"path": "/tmp"}},
        ]));
        assert_eq!(
            empty_dirs_with_size_limit(&p),
            [
                ("small".to_string(), "1Mi".to_string()),
                ("mem".into(), "2Mi".into())
            ]
        );
        let used = |pairs: &[(&str, i64)]| -> BTreeMap<String, i64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        // (bytes used by volume, the eviction message)
        type Case<'a> = (&'a [(&'a str, i64)], Option<&'a str>);
        let cases: &[Case] = &[
            (&[], None),
            (&[("unlimited", 1 << 40), ("zero", 1 << 30)], None),
            (&[("small", 1 << 20)], None),
            (
                &[("small", (1 << 20) + 1)],
                Some("Usage of EmptyDir volume \"small\" exceeds the limit \"1Mi\". "),
            ),
            (
                &[("small", 10), ("mem", 3 << 20)],
                Some("Usage of EmptyDir volume \"mem\" exceeds the limit \"2Mi\". "),
            ),
            (
                &[("small", 2 << 20), ("mem", 3 << 20)],
                Some("Usage of EmptyDir volume \"small\" exceeds the limit \"1Mi\". "),
            ),
        ];
        for (u, want) in cases {
            assert_eq!(
                empty_dir_limit_eviction(&p, &used(u)).as_deref(),
                *want,
                "{u:?}"
            );
        }
    }
}
