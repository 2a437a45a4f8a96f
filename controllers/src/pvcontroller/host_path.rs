//! The hostPath volume plugin's recycler (upstream `pkg/volume/host_path` `Recycle`, with
//! `recyclerclient.RecycleVolumeByWatchingPodUntilCompletion` and
//! `volume.NewPersistentVolumeRecyclerPodTemplate`): a released hostPath volume with the
//! Recycle policy is scrubbed by a rekube Pod `recycler-for-<pv>` that mounts the path at
//! `/scrub` and deletes everything in it; the PV controller makes the volume
//! Available again once the pod succeeded, and records its failure otherwise.
//!
//! As upstream: the pod's `activeDeadlineSeconds` is the larger of
//! `--pv-recycler-minimum-timeout-hostpath` (60) and
//! `--pv-recycler-timeout-increment-hostpath` (30) per GiB of the volume; the pod is
//! deleted afterwards whatever happened; a pod left by an earlier attempt is deleted and
//! the recycling retried. `--pv-recycler-pod-template-filepath-hostpath` replaces the
//! template (its first volume becomes the hostPath).
//!
//! rekube's differences: the default image is `busybox:1.36` (the debian-base image of
//! upstream's template cannot be pulled here, and rekube's nodes have busybox), and its
//! scrub command ([`SCRUB_SCRIPT`]) deletes with `find -exec rm -rf` (busybox's find has no
//! `-delete`); the pod goes
//! to the controllers' `--namespace` when one is set (upstream: `default`); the volume's
//! required node affinity is copied into the pod, so that a volume pinned to a node is
//! scrubbed there (upstream's recycler "will not work in a multi-node cluster"); the wait
//! for the pod is bounded by its deadline plus a minute, since a pod never scheduled never
//! fails on its own. Not ported: the hostPath deleter and provisioner (upstream's delete
//! `/tmp/...` paths on the controller manager's own machine, for development only).
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{
    Affinity, HostPathVolumeSource, NodeAffinity, PodSpec, Volume, VolumeMount,
};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use rekube_crds::quantity::amount;
use rekube_crds::{PersistentVolume, Pod};
use serde_json::json;

use super::plugins::{RecycleEventRecorder, VolumePlugin};
use crate::manager::client::ignore_not_found;

/// Upstream's plugin name.
pub const HOST_PATH_PLUGIN_NAME: &str = "kubernetes.io/host-path";
/// The scrub command of rekube's recycler pod template: upstream's
/// (`find /scrub -mindepth 1 -delete`), with `-exec rm -rf` for busybox's find, which has
/// no `-delete`.
pub const SCRUB_SCRIPT: &str = "test -e /scrub && find /scrub -mindepth 1 -maxdepth 1 -exec rm -rf {} + && test -z \"$(ls -A /scrub)\" || exit 1";

/// The recycler's settings (upstream `PersistentVolumeRecyclerConfiguration`, hostPath).
#[derive(Debug, Clone)]
pub struct RecyclerConfig {
    pub namespace: String,
    /// The pod template; `None`: [`default_recycler_pod_template`].
    pub template: Option<Pod>,
    pub minimum_timeout: i64,
    pub timeout_increment: i64,
}

/// Upstream `NewPersistentVolumeRecyclerPodTemplate`, with rekube's image.
pub fn default_recycler_pod_template(namespace: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"generateName": "pv-recycler-", "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [{"name": "vol"}],
            "containers": [{
                "name": "pv-recycler",
                "image": "busybox:1.36",
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh"],
                "args": ["-c", SCRUB_SCRIPT],
                "volumeMounts": [{"name": "vol", "mountPath": "/scrub"}],
            }],
        },
    }))
    .expect("the recycler pod template is a pod")
}

/// Upstream `CalculateTimeoutForVolume`: whole GiB of the volume times the increment, at
/// least the minimum.
pub fn calculate_timeout_for_volume(
    minimum_timeout: i64,
    timeout_increment: i64,
    volume: &PersistentVolume,
) -> i64 {
    let size = volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .map(|q| amount(q).value())
        .unwrap_or(0);
    let timeout = (size / (1 << 30)) * timeout_increment;
    timeout.max(minimum_timeout)
}

/// The recycler pod for `volume` (upstream `Recycle`'s overrides of the template and
/// `internalRecycleVolumeByWatchingPodUntilCompletion`'s name), or why there is none.
pub fn recycler_pod(
    config: &RecyclerConfig,
    pv_name: &str,
    volume: &PersistentVolume,
) -> Result<Pod, String> {
    let Some(host_path) = volume.spec.as_ref().and_then(|s| s.host_path.as_ref()) else {
        return Err("spec.PersistentVolumeSource.HostPath is nil".into());
    };
    let mut pod = config
        .template
        .clone()
        .unwrap_or_else(|| default_recycler_pod_template(&config.namespace));
    pod.metadata.name = Some(format!("recycler-for-{pv_name}"));
    pod.metadata.generate_name = None;
    if pod
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        pod.metadata.namespace = Some(config.namespace.clone());
    }
    let spec: &mut PodSpec = pod.spec.get_or_insert_with(Default::default);
    spec.active_deadline_seconds = Some(calculate_timeout_for_volume(
        config.minimum_timeout,
        config.timeout_increment,
        volume,
    ));
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    if volumes.is_empty() {
        volumes.push(Volume {
            name: "vol".into(),
            ..Default::default()
        });
        for c in &mut spec.containers {
            c.volume_mounts
                .get_or_insert_with(Vec::new)
                .push(VolumeMount {
                    name: "vol".into(),
                    mount_path: "/scrub".into(),
                    ..Default::default()
                });
        }
    }
    let name = spec.volumes.as_ref().expect("set above")[0].name.clone();
    spec.volumes.as_mut().expect("set above")[0] = Volume {
        name,
        host_path: Some(HostPathVolumeSource {
            path: host_path.path.clone(),
            type_: None,
        }),
        ..Default::default()
    };
    if let Some(required) = volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.clone())
    {
        spec.affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(required),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Ok(pod)
}

/// What a recycler pod's state means (upstream `waitForPod`): `Ok(true)` done, `Ok(false)`
/// still going, `Err` failed.
pub fn recycler_pod_outcome(pod: &Pod) -> Result<bool, String> {
    let status = pod.status.as_ref();
    match status.and_then(|s| s.phase.as_deref()) {
        Some("Succeeded") => Ok(true),
        Some("Failed") => match status.and_then(|s| s.message.as_deref()) {
            Some(m) if !m.is_empty() => Err(m.to_string()),
            _ => Err("pod failed, pod.Status.Message unknown".into()),
        },
        _ => Ok(false),
    }
}

/// The hostPath plugin, recycling through pods.
pub struct HostPathPlugin {
    client: Client,
    config: RecyclerConfig,
}

impl HostPathPlugin {
    pub fn new(client: Client, config: RecyclerConfig) -> Arc<Self> {
        Arc::new(HostPathPlugin { client, config })
    }

    /// `internalRecycleVolumeByWatchingPodUntilCompletion`: create the pod, wait for its
    /// end, delete it. The pod's events stay its own (upstream forwards them to the volume:
    /// that needs `list` on events, which rekube-controllers is not granted).
    async fn recycle_with_pod(&self, pod: Pod) -> Result<(), String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {
                pods.delete(&name, &DeleteParams::default())
                    .await
                    .map_err(|e| {
                        format!("failed to delete old recycler pod {namespace}/{name}: {e}")
                    })?;
                return Err("old recycler pod found, will retry later".into());
            }
            Err(e) => return Err(format!("unexpected error creating recycler pod:  {e}")),
        }
        let deadline = pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .unwrap_or(60);
        let waited = self.wait_for_pod(&pods, &namespace, &name, deadline).await;
        let deleted = pods.delete(&name, &DeleteParams::default()).await;
        if let Err(e) = waited {
            return Err(format!("failed to recycle volume: {e}"));
        }
        ignore_not_found(deleted).map_err(|e| format!("failed to delete recycler pod: {e}"))
    }

    async fn wait_for_pod(
        &self,
        pods: &Api<Pod>,
        namespace: &str,
        name: &str,
        deadline_seconds: i64,
    ) -> Result<(), String> {
        let limit = Duration::from_secs(u64::try_from(deadline_seconds).unwrap_or(60) + 60);
        let started = tokio::time::Instant::now();
        loop {
            match pods.get_opt(name).await {
                Ok(Some(pod)) => {
                    if recycler_pod_outcome(&pod)? {
                        return Ok(());
                    }
                }
                Ok(None) => return Err("recycler pod was deleted".into()),
                Err(e) => return Err(format!("recycler pod watcher failed: {e}")),
            }
            if started.elapsed() > limit {
                return Err(format!(
                    "recycler pod {namespace}/{name} did not finish within {}s",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

impl VolumePlugin for HostPathPlugin {
    fn name(&self) -> &str {
        HOST_PATH_PLUGIN_NAME
    }

    fn can_support(&self, volume: &PersistentVolume) -> bool {
        volume.spec.as_ref().is_some_and(|s| s.host_path.is_some())
    }

    fn is_recyclable(&self) -> bool {
        true
    }

    fn recycle<'a>(
        &'a self,
        pv_name: &'a str,
        volume: &'a PersistentVolume,
        _recorder: RecycleEventRecorder,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let pod = recycler_pod(&self.config, pv_name, volume)?;
            self.recycle_with_pod(pod).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(size: &str, affinity: bool) -> PersistentVolume {
        let mut spec = json!({"capacity": {"storage": size}, "hostPath": {"path": "/srv/v1"},
            "persistentVolumeReclaimPolicy": "Recycle"});
        if affinity {
            spec["nodeAffinity"] = json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}});
        }
        serde_json::from_value(json!({"metadata": {"name": "v1"}, "spec": spec})).unwrap()
    }

    fn config() -> RecyclerConfig {
        RecyclerConfig {
            namespace: "default".into(),
            template: None,
            minimum_timeout: 60,
            timeout_increment: 30,
        }
    }

    /// upstream util_test.go `TestCalculateTimeoutForVolume`.
    #[test]
    fn timeout_for_volume() {
        let cases = [
            ("500M", 50, 30, 50),
            ("2Gi", 50, 30, 60),
            ("150Gi", 50, 30, 4500),
        ];
        for (size, min, inc, want) in cases {
            assert_eq!(
                calculate_timeout_for_volume(min, inc, &volume(size, false)),
                want,
                "{size}"
            );
        }
    }

    #[test]
    fn the_recycler_pod() {
        let pod = recycler_pod(&config(), "v1", &volume("3Gi", true)).unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("recycler-for-v1"));
        assert_eq!(pod.metadata.generate_name, None);
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.active_deadline_seconds, Some(90));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let vols = spec.volumes.unwrap();
        assert_eq!(vols[0].host_path.as_ref().unwrap().path, "/srv/v1");
        let c = &spec.containers[0];
        assert_eq!(c.args.as_ref().unwrap()[1], SCRUB_SCRIPT);
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, "/scrub");
        let terms = spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(
            terms[0].match_expressions.as_ref().unwrap()[0]
                .values
                .as_ref()
                .unwrap(),
            &["n1"]
        );
        let no_affinity = recycler_pod(&config(), "v1", &volume("1Gi", false)).unwrap();
        assert!(no_affinity.spec.unwrap().affinity.is_none());
        let not_host_path: PersistentVolume = serde_json::from_value(
            json!({"metadata": {"name": "v2"}, "spec": {"local": {"path": "/x"}}}),
        )
        .unwrap();
        assert_eq!(
            recycler_pod(&config(), "v2", &not_host_path).unwrap_err(),
            "spec.PersistentVolumeSource.HostPath is nil"
        );
    }

    #[test]
    fn a_template_keeps_its_own_image_and_gets_the_volume() {
        let mut template = default_recycler_pod_template("scrubbers");
        template.spec.as_mut().unwrap().containers[0].image = Some("example/scrub:1".into());
        let c = RecyclerConfig {
            template: Some(template),
            ..config()
        };
        let pod = recycler_pod(&c, "v1", &volume("1Gi", false)).unwrap();
        assert_eq!(pod.metadata.namespace.as_deref(), Some("scrubbers"));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.containers[0].image.as_deref(), Some("example/scrub:1"));
        assert_eq!(
            spec.volumes.unwrap()[0].host_path.as_ref().unwrap().path,
            "/srv/v1"
        );
    }

    #[test]
    fn outcomes_as_wait_for_pod() {
        let pod = |phase: &str, message: &str| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"},
                "status": {"phase": phase, "message": message}}))
            .unwrap()
        };
        assert_eq!(recycler_pod_outcome(&pod("Pending", "")), Ok(false));
        assert_eq!(recycler_pod_outcome(&pod("Running", "")), Ok(false));
        assert_eq!(recycler_pod_outcome(&pod("Succeeded", "")), Ok(true));
        assert_eq!(
            recycler_pod_outcome(&pod("Failed", "")),
            Err("pod failed, pod.Status.Message unknown".into())
        );
        assert_eq!(
            recycler_pod_outcome(&pod("Failed", "deadline exceeded")),
            Err("deadline exceeded".into())
        );
    }
}
