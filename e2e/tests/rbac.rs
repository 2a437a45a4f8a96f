//! rekube-controllers works under the least-privilege RBAC its Helm chart grants, and that
//! RBAC is exactly what the controllers use: a workload drives every controller down every
//! path it has a permission for, and the permissions the controllers' request metrics
//! show (`rekube_rest_client_requests_total{verb,resource,code}`) must equal the ones the
//! chart's ClusterRole and Roles grant. A grant never used fails the test, naming it; so
//! does a use not granted, or refused.
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::IPAddress;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use rekube_crds::{
    Deployment, EndpointSlice, Endpoints, NODE_AGENT_FINALIZER, Node, PersistentVolumeClaim, Pod,
    ReplicaSet, Service, VolumeAttachment,
};
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::controllers::{ControllerProcess, external};
use rekube_e2e::nodes::{self, NodeShape};
use rekube_e2e::rbac::{self, Permission};
use rekube_e2e::storage::CsiDriverProcess;
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);

/// Grants no test can make the controllers use on demand, each with the reason. Prefer a
/// workload step that exercises a grant to an entry here.
const NOT_EXERCISED: &[(&str, &str, &str)] = &[
    // The node authorizer writes with server-side apply: a PATCH, which RBAC also
    // authorizes as create when the object is new. Its metrics show the patch only.
    (
        "create",
        "roles.rbac.authorization.k8s.io",
        "the node authorizer's server-side apply of a new Role: a PATCH (used) that RBAC \
         authorizes as create too",
    ),
    (
        "create",
        "rolebindings.rbac.authorization.k8s.io",
        "the node authorizer's server-side apply of a new RoleBinding: a PATCH (used) that \
         RBAC authorizes as create too",
    ),
    (
        "create",
        "serviceaccounts",
        "the node authorizer's server-side apply of a new node ServiceAccount: a PATCH \
         (used) that RBAC authorizes as create too",
    ),
    (
        "create",
        "clusterroles.rbac.authorization.k8s.io",
        "the node authorizer's server-side apply of a new ClusterRole: a PATCH (used) that \
         RBAC authorizes as create too",
    ),
    (
        "create",
        "clusterrolebindings.rbac.authorization.k8s.io",
        "the node authorizer's server-side apply of a new ClusterRoleBinding: a PATCH \
         (used) that RBAC authorizes as create too",
    ),
    // RBAC's escalation check: a Role may grant only what its writer holds. (get secrets
    // too, which the pod token binding controller uses.)
    (
        "create",
        "serviceaccounts/token",
        "never requested (the chart's token policy refuses the controllers any token): \
         held so that the node authorizer may write Roles letting a node request tokens of \
         its pods' ServiceAccounts (RBAC refuses a Role granting more than its writer holds)",
    ),
    (
        "get",
        "configmaps",
        "never read: held so that the node authorizer may write Roles granting get on a \
         node's ConfigMaps (RBAC refuses a Role granting more than its writer holds)",
    ),
    (
        "get",
        "serviceaccounts",
        "never read: held so that the node authorizer may write Roles granting get on the \
         ServiceAccounts of a node's podCertificate pods (RBAC refuses a Role granting more \
         than its writer holds)",
    ),
    (
        "create",
        "podcertificaterequests.certificates.k8s.io",
        "never created: held so that the node authorizer may write Roles letting a node \
         request its podCertificate pods' certificates (RBAC refuses a Role granting more \
         than its writer holds)",
    ),
    (
        "get",
        "podcertificaterequests.certificates.k8s.io",
        "never read: held so that the node authorizer may write Roles letting a node read \
         the requests it made (RBAC refuses a Role granting more than its writer holds)",
    ),
    (
        "get",
        "persistentvolumeclaims.rekube.io",
        "never read: held so that the node authorizer may write Roles granting get on a \
         node's PersistentVolumeClaims (RBAC refuses a Role granting more than its writer \
         holds)",
    ),
    (
        "get",
        "persistentvolumes.rekube.io",
        "never read: held so that the node authorizer may write ClusterRoles granting get \
         on a node's PersistentVolumes (RBAC refuses a role granting more than its writer \
         holds)",
    ),
    (
        "patch",
        "persistentvolumeclaims.rekube.io/status",
        "never written: held so that the node authorizer may write Roles granting a node \
         update and patch of its pods' claims' status, where the kubelet records a \
         filesystem expansion (RBAC refuses a Role granting more than its writer holds)",
    ),
    (
        "get",
        "volumeattachments.rekube.io",
        "never read: the attach/detach controller reads VolumeAttachments from its cache; \
         held so that the node authorizer may write ClusterRoles granting get on a node's \
         VolumeAttachments (RBAC refuses a role granting more than its writer holds)",
    ),
    (
        "get",
        "replicasets.rekube.io",
        "the ReplicaSet controller reads a ReplicaSet afresh only after a 409 Conflict on its \
         status write (upstream's updateReplicaSetStatus retry): its cache behind a write of \
         its own or the Deployment controller's; frequent under this workload, but a race",
    ),
    (
        "get",
        "pods.rekube.io",
        "the scheduler reads a pod afresh only after a 409 Conflict writing PodScheduled \
         (the node agent wrote the pod between the binding and the condition); frequent \
         under this workload, but a race",
    ),
];

#[tokio::test]
async fn the_charts_rbac_is_exactly_what_the_controllers_use() {
    if external() {
        println!("skipped: needs a controller process of its own");
        return;
    }
    // The release (service account, leader election Lease) in a namespace of its own, as
    // in a real install; the workload and the node agents' Leases in the test namespace.
    let release = TestNamespace::new("rbac-release").await;
    let ns = TestNamespace::new("rbac").await;
    let sa = format!("{}-controllers", release.name);
    let chart = rbac::apply_chart_rbac_in(
        &release,
        &ns.name,
        "templates/controllers-rbac.yaml",
        "controllers",
    );
    let kubeconfig = rbac::service_account_kubeconfig(&release, &sa);

    // A hollow agent runs the pods the scheduler binds to its node (as their status
    // writer it is not under test); its Lease renewed every 2 s, well within the grace
    // period that makes the workload's lost node go Unknown quickly.
    let agent = AgentProcess::start(
        &ns,
        "n",
        &["--hollow", "--node-lease-duration-seconds", "8"],
    );
    agent.wait_node_ready(&ns.client, T).await;
    let controllers = ControllerProcess::start_with_env(
        &ns.name,
        &[
            "--controllers=*",
            "--leader-elect-resource-namespace",
            &release.name,
            "--allocate-node-cidrs",
            "true",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--node-monitor-period",
            "1s",
            "--node-monitor-grace-period",
            "10s",
            "--default-toleration-seconds",
            "2",
            "--pod-gc-check-period",
            "1s",
            "--pod-gc-quarantine-time",
            "2s",
            // The service allocator: ranges of this test's own (IPAddresses are
            // cluster-wide; its NodePort Leases are in the release namespace).
            "--service-cluster-ip-range",
            "10.129.0.0/24",
            "--service-node-port-range",
            "32500-32599",
            // One endpoint a slice: two pods make two slices, and one going deletes one.
            // A deleted token binding Secret made again within a second.
            "--pod-token-binding-resync-period",
            "1s",
            "--max-endpoints-per-slice",
            "1",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let w = Workload {
        ns: &ns,
        node: agent.node_name.clone(),
        controllers: &controllers,
    };
    w.run().await;

    // The last requests (events go out in the background) may trail the workload a little.
    let granted = rbac::granted_permissions(&chart.rendered);
    let used = wait_until(
        "the permissions used to equal the chart's",
        Duration::from_secs(20),
        || async {
            let used = rbac::used_permissions(&controllers.metrics().unwrap_or_default());
            let differences = rbac::rbac_differences(&granted, &used, NOT_EXERCISED);
            if differences.is_empty() {
                Ok(used)
            } else {
                let table: Vec<String> = used
                    .iter()
                    .map(|(p, codes)| format!("{p} {codes:?}"))
                    .collect();
                Err(format!(
                    "\n{}\n\nused (answered):\n{}\n(the controllers' log: {})",
                    differences.join("\n"),
                    table.join("\n"),
                    controllers.log.display()
                ))
            }
        },
    )
    .await;
    println!("used (answered): {used:?}");
    let logs = controllers.logs();
    assert!(
        !logs.contains("forbidden"),
        "the controllers hit a permission they lack:\n{logs}"
    );
}

/// The objects and processes the workload's steps share.
struct Workload<'a> {
    ns: &'a TestNamespace,
    /// The hollow agent's node.
    node: String,
    controllers: &'a ControllerProcess,
}

impl Workload<'_> {
    /// Every step of the workload, at once: each makes the controllers use the permissions
    /// its doc names. A controller that gains a permission gets a step here (leader
    /// election, the informers' list and watch, and events need none of their own).
    async fn run(&self) {
        let steps = async {
            tokio::join!(
                self.deployment_rollouts_rollback_and_scale_down(),
                self.replica_set_adoption_and_release(),
                self.wait_for_first_consumer_claim(),
                self.volume_binding_release_and_protection(),
                self.ephemeral_volume_claim(),
                self.lost_node(),
                self.orphaned_pod_of_a_deleted_node(),
                // One after the other: both grant the hollow agent's node, and the first
                // waits for its grants to go.
                async {
                    self.node_authorizer_grants_and_revokes().await;
                    self.pod_token_binding().await;
                },
                self.endpoints_of_a_service(),
                self.endpoint_slices_of_a_service(),
                self.service_ips_and_node_ports(),
                self.attach_and_detach_a_csi_volume(),
            )
        };
        tokio::select! {
            _ = steps => {}
            refused = self.first_refusal() => panic!(
                "the apiserver refused the controllers {refused}: the chart does not grant it\n{}",
                self.controllers.logs()
            ),
        }
    }

    /// The first permission the apiserver refuses the controllers (403), as their metrics
    /// show it; a step waiting on what it would have done fails sooner and says why.
    async fn first_refusal(&self) -> Permission {
        loop {
            let used = rbac::used_permissions(&self.controllers.metrics().unwrap_or_default());
            if let Some((p, _)) = used
                .into_iter()
                .find(|(_, codes)| codes.contains_key("403"))
            {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.ns.client.clone(), &self.ns.name)
    }

    async fn create<K>(&self, obj: Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(obj).unwrap();
        self.api::<K>()
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating {}: {e}", obj.name_any()))
    }

    /// Deployment controller: creates ReplicaSets (create replicasets), writes revision
    /// annotations (patch deployments) and status (update deployments/status), scales
    /// ReplicaSets (patch replicasets) and records ScalingReplicaSet again and again on one
    /// Deployment (create, then patch events: a series); deletes the ReplicaSets beyond
    /// revisionHistoryLimit (delete replicasets) and rolls back (update deployments).
    /// ReplicaSet controller: creates and deletes pods (create, delete pods), writes status
    /// (update replicasets/status). Scheduler: binds the pods (patch pods) and sets
    /// PodScheduled (patch pods/status).
    async fn deployment_rollouts_rollback_and_scale_down(&self) {
        let d = self
            .create::<Deployment>(json!({
                "apiVersion": "rekube.io/v1", "kind": "Deployment", "metadata": {"name": "web"},
                "spec": {"replicas": 2, "revisionHistoryLimit": 1,
                         "selector": {"matchLabels": {"app": "web"}},
                         "template": {"metadata": {"labels": {"app": "web"}},
                                      "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]}}}
            }))
            .await;
        let name = d.name_any();
        self.deployment_complete(&name, "busybox:1.36").await;
        let deployments = self.api::<Deployment>();
        let patch = |p: Value| {
            let deployments = deployments.clone();
            let name = name.clone();
            async move {
                deployments
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&p))
                    .await
                    .unwrap();
            }
        };
        let image = |image: &str| json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": image}]}}}});
        patch(image("busybox:1.37")).await;
        self.deployment_complete(&name, "busybox:1.37").await;
        patch(image("busybox:1.38")).await;
        self.deployment_complete(&name, "busybox:1.38").await;
        wait_until(
            "the ReplicaSet beyond revisionHistoryLimit deleted",
            T,
            || async {
                let rss = self.api::<ReplicaSet>().list(&ListParams::default()).await;
                let names: Vec<String> = rss
                    .map_err(|e| e.to_string())?
                    .items
                    .iter()
                    .filter(|rs| rs.labels().get("app").map(String::as_str) == Some("web"))
                    .map(|rs| rs.name_any())
                    .collect();
                (names.len() == 2).then_some(()).ok_or(format!("{names:?}"))
            },
        )
        .await;
        // Back to the previous revision (busybox:1.37).
        patch(json!({"metadata": {"annotations": {"deprecated.deployment.rollback.to": "0"}}}))
            .await;
        self.deployment_complete(&name, "busybox:1.37").await;
        patch(json!({"spec": {"replicas": 1}})).await;
        self.deployment_complete(&name, "busybox:1.37").await;
    }

    /// Waits until Deployment `name` runs `image` on all its replicas, none old.
    async fn deployment_complete(&self, name: &str, image: &str) {
        let deployments = self.api::<Deployment>();
        wait_until(
            &format!("deployment {name} complete with {image}"),
            T,
            || async {
                let d = deployments.get(name).await.map_err(|e| e.to_string())?;
                let spec = d.spec.clone().unwrap_or_default();
                let want = spec.replicas.unwrap_or(1);
                let st = d.status.clone().unwrap_or_default();
                let running = spec
                    .template
                    .spec
                    .as_ref()
                    .map(|s| s.containers[0].image.as_deref() == Some(image));
                let done = running == Some(true)
                    && st.observed_generation == d.metadata.generation
                    && st.updated_replicas == Some(want)
                    && st.replicas == Some(want)
                    && st.available_replicas == Some(want);
                done.then_some(())
                    .ok_or_else(|| format!("{st:?}\n{}", self.controllers.logs()))
            },
        )
        .await
    }

    /// ReplicaSet controller: adopts a matching orphan pod and releases it once it stops
    /// matching (patch pods, with the claim's JSON Patch), then replaces it (create pods).
    async fn replica_set_adoption_and_release(&self) {
        let pods = self.api::<Pod>();
        self.create::<Pod>(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "stray", "labels": {"app": "solo"}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}
        }))
        .await;
        // Bound by the scheduler: the pod informer it shares with the ReplicaSet controller
        // has the pod, so the ReplicaSet adopts it rather than making one of its own first
        // (and then deleting one of the two, perhaps this one).
        wait_until("the orphan pod bound", T, || async {
            let p = pods.get("stray").await.map_err(|e| e.to_string())?;
            p.spec
                .and_then(|s| s.node_name)
                .ok_or("not bound".to_string())
        })
        .await;
        let rs = self
            .create::<ReplicaSet>(json!({
                "apiVersion": "rekube.io/v1", "kind": "ReplicaSet", "metadata": {"name": "solo"},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "solo"}},
                         "template": {"metadata": {"labels": {"app": "solo"}},
                                      "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}
            }))
            .await;
        let controller_of = |p: &Pod| {
            p.owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone())
        };
        wait_until("the orphan pod adopted", T, || async {
            let p = pods.get("stray").await.map_err(|e| e.to_string())?;
            (controller_of(&p) == rs.metadata.uid)
                .then_some(())
                .ok_or(format!("{:?}", p.owner_references()))
        })
        .await;
        pods.patch(
            "stray",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app": "released"}}})),
        )
        .await
        .unwrap();
        wait_until("the pod released and replaced", T, || async {
            let p = pods.get("stray").await.map_err(|e| e.to_string())?;
            let owned = pods
                .list(&ListParams::default().labels("app=solo"))
                .await
                .map_err(|e| e.to_string())?
                .items
                .iter()
                .filter(|p| controller_of(p) == rs.metadata.uid)
                .count();
            (controller_of(&p).is_none() && owned == 1)
                .then_some(())
                .ok_or(format!("{:?}, {owned} owned", p.owner_references()))
        })
        .await;
    }

    /// Scheduler: a pod with an unbound claim of a WaitForFirstConsumer class whose
    /// provisioner can provision anywhere: the claim gets the chosen node in
    /// volume.kubernetes.io/selected-node (patch persistentvolumeclaims) before the pod
    /// is bound.
    async fn wait_for_first_consumer_claim(&self) {
        let class = self.ns.cluster_name("wffc");
        self.ns
            .create(json!({"apiVersion": "rekube.io/v1", "kind": "StorageClass",
                "metadata": {"name": "wffc"}, "provisioner": "e2e.rekube.io/none",
                "volumeBindingMode": "WaitForFirstConsumer"}))
            .await
            .unwrap();
        self.create::<PersistentVolumeClaim>(json!({
            "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                     "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .await;
        self.create::<Pod>(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "with-claim"},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
        }))
        .await;
        let claims = self.api::<PersistentVolumeClaim>();
        wait_until("the claim annotated with the node", T, || async {
            let pvc = claims.get("data").await.map_err(|e| e.to_string())?;
            let selected = pvc
                .annotations()
                .get("volume.kubernetes.io/selected-node")
                .cloned();
            (selected.as_ref() == Some(&self.node))
                .then_some(())
                .ok_or(format!("{selected:?}"))
        })
        .await;
        // Gone again, so that the node authorizer's step sees the node's grants go (the
        // pod's claim is one of them).
        self.api::<Pod>()
            .delete("with-claim", &Default::default())
            .await
            .unwrap();
    }

    /// PV binder: binds a claim to a volume (update persistentvolumes, their status,
    /// persistentvolumeclaims, their status), releases the volume when the claim goes
    /// (update persistentvolumes/status). The protection controllers add their finalizers
    /// and remove them once the claim and the volume are no longer in use (patch
    /// persistentvolumeclaims, persistentvolumes).
    async fn volume_binding_release_and_protection(&self) {
        let class = format!("manual-{}", self.ns.name);
        let pv = self
            .ns
            .create(
                json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
                "metadata": {"name": "static"},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                         "storageClassName": class, "persistentVolumeReclaimPolicy": "Retain",
                         "hostPath": {"path": "/tmp/rekube-e2e-rbac-static"}}}),
            )
            .await
            .unwrap();
        let pv_name = pv["metadata"]["name"].as_str().unwrap().to_string();
        self.create::<PersistentVolumeClaim>(json!({
            "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "static"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                     "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .await;
        let claims = self.api::<PersistentVolumeClaim>();
        wait_until("the static claim bound", T, || async {
            let pvc = claims.get("static").await.map_err(|e| e.to_string())?;
            let phase = pvc.status.as_ref().and_then(|s| s.phase.clone());
            let protected = pvc
                .finalizers()
                .iter()
                .any(|f| f == "kubernetes.io/pvc-protection");
            (phase.as_deref() == Some("Bound") && protected)
                .then_some(())
                .ok_or(format!("{phase:?} {:?}", pvc.finalizers()))
        })
        .await;
        claims
            .delete("static", &kube::api::DeleteParams::default())
            .await
            .unwrap();
        let volumes: Api<rekube_crds::PersistentVolume> = Api::all(self.ns.client.clone());
        wait_until("the static volume released and protected", T, || async {
            let v = volumes.get(&pv_name).await.map_err(|e| e.to_string())?;
            let phase = v.status.as_ref().and_then(|s| s.phase.clone());
            let protected = v
                .finalizers()
                .iter()
                .any(|f| f == "kubernetes.io/pv-protection");
            (phase.as_deref() == Some("Released") && protected)
                .then_some(())
                .ok_or(format!("{phase:?} {:?}", v.finalizers()))
        })
        .await;
        volumes
            .delete(&pv_name, &kube::api::DeleteParams::default())
            .await
            .unwrap();
        wait_until("the static volume gone", T, || async {
            match volumes.get_opt(&pv_name).await {
                Ok(None) => Ok(()),
                other => Err(format!(
                    "{:?}",
                    other.map(|v| v.map(|v| v.metadata.finalizers))
                )),
            }
        })
        .await;
    }

    /// Node IPAM: gives the new node a pod CIDR (patch nodes). Node lifecycle: the node
    /// stops posting status; its conditions become Unknown (update nodes/status), it is
    /// tainted unreachable (patch nodes), its pod marked not ready (patch pods/status) and
    /// event NodeNotReady recorded. Taint eviction: the pod tolerates the NoExecute taint
    /// for --default-toleration-seconds, then gets DisruptionTarget (patch pods/status) and
    /// is deleted (delete pods).
    async fn lost_node(&self) {
        // Tainted so that the scheduler puts none of the other steps' pods on it.
        let shape = NodeShape {
            taints: vec![json!({"key": "e2e.rekube.io/lost", "effect": "NoSchedule"})],
            ..NodeShape::default()
        };
        let lost = nodes::create_node(self.ns, "lost", &shape).await;
        let pod = self
            .create::<Pod>(json!({
                "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "on-lost"},
                "spec": {"nodeName": lost, "containers": [{"name": "c", "image": "busybox:1.36"}]}
            }))
            .await;
        // Running and ready, as its kubelet reported before the node was lost.
        let status = rekube_e2e::kubelet::running_status(&pod, true, jiff::Timestamp::now());
        let pods = self.api::<Pod>();
        pods.patch_status(
            "on-lost",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();
        let node_api: Api<Node> = Api::all(self.ns.client.clone());
        wait_until(
            "the lost node Unknown, tainted, with a pod CIDR",
            T,
            || async {
                let n = node_api.get(&lost).await.map_err(|e| e.to_string())?;
                let taints = nodes::taints_of(&n);
                let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.clone());
                let ok = nodes::ready_status(&n).as_deref() == Some("Unknown")
                    && taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
                    && cidr.is_some();
                ok.then_some(())
                    .ok_or(format!("{taints:?} {cidr:?} {:?}", nodes::ready_status(&n)))
            },
        )
        .await;
        wait_until("the lost node's pod evicted", T, || async {
            match pods.get_opt("on-lost").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(p) => Err(format!("{:?}", p.status)),
            }
        })
        .await;
    }

    /// Node authorizer: a Node of its own gets its ServiceAccount (list, watch, patch
    /// serviceaccounts); a pod bound to the hollow agent's node referring to a Secret, a
    /// ConfigMap and a bound claim gets the node a Role and RoleBinding (list, watch, patch
    /// roles and rolebindings) and a ClusterRole and ClusterRoleBinding for the claim's
    /// volume (list, watch, patch clusterroles and clusterrolebindings), deleted with the
    /// pod (delete roles, rolebindings, clusterroles, clusterrolebindings); the Node
    /// deleted, its ServiceAccount goes (delete serviceaccounts).
    async fn node_authorizer_grants_and_revokes(&self) {
        // Tainted: the other steps' pods stay on the hollow agent's node.
        let shape = NodeShape {
            taints: vec![json!({"key": "rekube.io/e2e-no-pods", "effect": "NoSchedule"})],
            ..NodeShape::default()
        };
        let node = nodes::create_node(self.ns, "authz", &shape).await;
        let accounts = self.api::<ServiceAccount>();
        wait_until("the node's service account", T, || async {
            match accounts.get_opt(&node).await.map_err(|e| e.to_string())? {
                Some(_) => Ok(()),
                None => Err(self.controllers.logs()),
            }
        })
        .await;
        // A claim bound to a volume (as the PV controller binds them).
        let volume = self.ns.cluster_name("authz");
        let pv = json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
            "metadata": {"name": "authz"},
            // Pre-bound both ways: the other steps' claims run at the same time.
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "claimRef": {"namespace": self.ns.name, "name": "authz"},
                     "hostPath": {"path": "/tmp/authz"}}});
        self.ns.create(pv).await.unwrap();
        self.create::<PersistentVolumeClaim>(json!({
            "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "authz"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "volumeName": volume, "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .await;
        // Bound by the PV binder (a status written by hand could race with it: a Bound claim
        // whose volume its cache has not seen yet is Lost, as upstream's).
        let claims = self.api::<PersistentVolumeClaim>();
        wait_until("claim authz bound", T, || async {
            let c = claims.get("authz").await.map_err(|e| e.to_string())?;
            match c.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some("Bound") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        self.create::<Pod>(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "reader"},
            "spec": {"nodeName": self.node,
                     "containers": [{"name": "c", "image": "busybox:1.36",
                        "envFrom": [{"secretRef": {"name": "s"}}, {"configMapRef": {"name": "c"}}]}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "authz"}}]}
        }))
        .await;
        let role = format!("rekube-node:{}", self.node);
        let (roles, bindings) = (self.api::<Role>(), self.api::<RoleBinding>());
        let cluster_roles = Api::<ClusterRole>::all(self.ns.client.clone());
        let cluster_bindings = Api::<ClusterRoleBinding>::all(self.ns.client.clone());
        let held = || async {
            let e = |e: kube::Error| e.to_string();
            Ok::<_, String>([
                roles.get_opt(&role).await.map_err(e)?.is_some(),
                bindings.get_opt(&role).await.map_err(e)?.is_some(),
                cluster_roles.get_opt(&role).await.map_err(e)?.is_some(),
                cluster_bindings.get_opt(&role).await.map_err(e)?.is_some(),
            ])
        };
        wait_until("the node's roles and bindings", T, || async {
            match held().await? {
                [true, true, true, true] => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        self.api::<Pod>()
            .delete("reader", &Default::default())
            .await
            .unwrap();
        wait_until("the node's roles and bindings deleted", T, || async {
            match held().await? {
                [false, false, false, false] => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        Api::<Node>::all(self.ns.client.clone())
            .delete(&node, &Default::default())
            .await
            .unwrap();
        wait_until("the node's service account deleted", T, || async {
            match accounts.get_opt(&node).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        })
        .await;
    }

    /// Endpoint controller: a Service gets its Endpoints (create endpoints), a pod it
    /// selects goes in (update endpoints: a PUT), and the Endpoints go with the Service
    /// (delete endpoints).
    async fn endpoints_of_a_service(&self) {
        let selector = json!({"rekube.io/e2e-step": "endpoints"});
        self.create::<Service>(json!({
            "apiVersion": "rekube.io/v1", "kind": "Service", "metadata": {"name": "ep"},
            "spec": {"selector": selector, "ports": [{"port": 80}]}
        }))
        .await;
        let endpoints = self.api::<Endpoints>();
        wait_until("the service's endpoints", T, || async {
            match endpoints.get_opt("ep").await.map_err(|e| e.to_string())? {
                Some(_) => Ok(()),
                None => Err(self.controllers.logs()),
            }
        })
        .await;
        self.create::<Pod>(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "ep-backend", "labels": selector},
            "spec": {"nodeName": self.node,
                     "containers": [{"name": "c", "image": "busybox:1.36"}]}
        }))
        .await;
        wait_until("the pod in the service's endpoints", T, || async {
            let ep = endpoints.get("ep").await.map_err(|e| e.to_string())?;
            let addresses: usize = ep
                .subsets
                .iter()
                .flatten()
                .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
                .sum();
            if addresses == 1 {
                Ok(())
            } else {
                Err(format!(
                    "{addresses} addresses\n{}",
                    self.controllers.logs()
                ))
            }
        })
        .await;
        self.api::<Service>()
            .delete("ep", &Default::default())
            .await
            .unwrap();
        wait_until("the service's endpoints deleted", T, || async {
            match endpoints.get_opt("ep").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(_) => Err(self.controllers.logs()),
            }
        })
        .await;
    }

    /// EndpointSlice controller (one endpoint a slice): a Service gets its placeholder
    /// slice (create endpointslices); its first pod takes the placeholder over (update
    /// endpointslices: a PUT), its second gets a slice of its own (create), and when that
    /// pod is gone its slice goes (delete endpointslices).
    async fn endpoint_slices_of_a_service(&self) {
        let selector = json!({"rekube.io/e2e-step": "endpointslices"});
        self.create::<Service>(json!({
            "apiVersion": "rekube.io/v1", "kind": "Service", "metadata": {"name": "eps"},
            "spec": {"selector": selector, "ports": [{"port": 80}]}
        }))
        .await;
        let slices = self.api::<EndpointSlice>();
        let of_service = ListParams::default().labels("kubernetes.io/service-name=eps");
        let endpoint_counts = || async {
            let list = slices.list(&of_service).await.map_err(|e| e.to_string())?;
            let mut counts: Vec<usize> = list.items.iter().map(|s| s.endpoints.len()).collect();
            counts.sort();
            Ok::<_, String>(counts)
        };
        let wait_for = |what: &'static str, want: Vec<usize>| {
            let endpoint_counts = &endpoint_counts;
            async move {
                wait_until(what, T, || async {
                    let counts = endpoint_counts().await?;
                    (counts == want).then_some(()).ok_or_else(|| {
                        format!("slices' endpoints {counts:?}\n{}", self.controllers.logs())
                    })
                })
                .await
            }
        };
        wait_for("the service's placeholder slice", vec![0]).await;
        for name in ["eps-a", "eps-b"] {
            self.create::<Pod>(json!({
                "apiVersion": "rekube.io/v1", "kind": "Pod",
                "metadata": {"name": name, "labels": selector},
                "spec": {"nodeName": self.node,
                         "containers": [{"name": "c", "image": "busybox:1.36"}]}
            }))
            .await;
        }
        wait_for("a slice for each pod", vec![1, 1]).await;
        self.api::<Pod>()
            .delete("eps-b", &Default::default())
            .await
            .unwrap();
        wait_for("the gone pod's slice deleted", vec![1]).await;
    }

    /// Service allocator: a NodePort Service gets a cluster IP (create ipaddresses) and a
    /// NodePort (create leases), written into its spec (patch services); a Service asking
    /// for that IP, and one asking for that NodePort, are refused after a look at whose
    /// they are (get ipaddresses, get leases) with the Allocated condition (patch
    /// services/status); the first Service deleted, both are released (delete
    /// ipaddresses, delete leases). ServiceCIDRs are listed at start.
    async fn service_ips_and_node_ports(&self) {
        let services = self.api::<Service>();
        self.create::<Service>(json!({
            "apiVersion": "rekube.io/v1", "kind": "Service", "metadata": {"name": "alloc-a"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]}
        }))
        .await;
        let (ip, node_port) = wait_until("alloc-a's cluster IP and NodePort", T, || async {
            let s = services.get("alloc-a").await.map_err(|e| e.to_string())?;
            let spec = s.spec.unwrap_or_default();
            match (
                spec.cluster_ip.clone(),
                spec.ports
                    .unwrap_or_default()
                    .first()
                    .and_then(|p| p.node_port),
            ) {
                (Some(ip), Some(port)) if !ip.is_empty() => Ok((ip, port)),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        self.create::<Service>(json!({
            "apiVersion": "rekube.io/v1", "kind": "Service", "metadata": {"name": "alloc-ip"},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]}
        }))
        .await;
        self.create::<Service>(json!({
            "apiVersion": "rekube.io/v1", "kind": "Service", "metadata": {"name": "alloc-port"},
            "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": node_port}]}
        }))
        .await;
        for name in ["alloc-ip", "alloc-port"] {
            wait_until(&format!("{name} refused"), T, || async {
                let s = services.get(name).await.map_err(|e| e.to_string())?;
                let conditions = s.status.and_then(|s| s.conditions).unwrap_or_default();
                conditions
                    .iter()
                    .any(|c| c.type_ == "Allocated" && c.status == "False")
                    .then_some(())
                    .ok_or_else(|| format!("{conditions:?}"))
            })
            .await;
        }
        services
            .delete("alloc-a", &Default::default())
            .await
            .unwrap();
        let addresses: Api<IPAddress> = Api::all(self.ns.client.clone());
        // Released: gone, or already taken by the Service that waited for it.
        wait_until("alloc-a's IP released", T, || async {
            match addresses.get_opt(&ip).await.map_err(|e| e.to_string())? {
                Some(a) if a.spec.parent_ref.name == "alloc-a" => Err(format!("{:?}", a.spec)),
                _ => Ok(()),
            }
        })
        .await;
    }

    /// Attach/detach controller: a pod bound to a node of this step's own (annotated
    /// controller-managed attach/detach, kept Ready by a heartbeat) with a claim bound to
    /// a CSI volume gets the volume attached (create volumeattachments); once rekube-csi's
    /// attacher attached it (status.attached), the node's status.volumesAttached lists it
    /// (patch nodes/status); the pod deleted, the volume leaves volumesAttached (patch
    /// nodes/status) and, the node not using it (get nodes), is detached (delete
    /// volumeattachments).
    async fn attach_and_detach_a_csi_volume(&self) {
        // Tainted: the other steps' pods stay on the hollow agent's node.
        let shape = NodeShape {
            taints: vec![json!({"key": "rekube.io/e2e-no-pods", "effect": "NoSchedule"})],
            ..NodeShape::default()
        };
        let node = nodes::create_node(self.ns, "attach", &shape).await;
        let node_api = Api::<Node>::all(self.ns.client.clone());
        node_api
            .patch(
                &node,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {
                    "volumes.kubernetes.io/controller-managed-attach-detach": "true"}}})),
            )
            .await
            .unwrap();
        // Not lost (and its pod not evicted) while the step runs.
        let _heartbeat = nodes::Heartbeat::start(
            self.ns.client.clone(),
            &self.ns.name,
            &node,
            Duration::from_secs(2),
        );
        let driver = self.ns.cluster_name("attacher");
        self.ns
            .create(json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
                "metadata": {"name": "attach"},
                // Pre-bound both ways: the other steps' claims run at the same time.
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                         "claimRef": {"namespace": self.ns.name, "name": "attach"},
                         "storageClassName": "", "csi": {"driver": driver, "volumeHandle": "vol-1"}}}))
            .await
            .unwrap();
        self.create::<PersistentVolumeClaim>(json!({
            "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "attach"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "volumeName": self.ns.cluster_name("attach"),
                     "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .await;
        let claims = self.api::<PersistentVolumeClaim>();
        wait_until("claim attach bound", T, || async {
            let c = claims.get("attach").await.map_err(|e| e.to_string())?;
            match c.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some("Bound") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
        self.create::<Pod>(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "attached"},
            "spec": {"nodeName": node,
                     "containers": [{"name": "c", "image": "busybox:1.36"}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "attach"}}]}
        }))
        .await;
        let attachments = Api::<VolumeAttachment>::all(self.ns.client.clone());
        let name = rekube_crds::storage_keys::attachment_name("vol-1", &driver, &node);
        wait_until("the volume attachment", T, || async {
            match attachments
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(_) => Ok(()),
                None => Err(self.controllers.logs()),
            }
        })
        .await;
        // The attacher: rekube-csi's (without --attach-required, upstream's trivial
        // attacher: status.attached and nothing else), for this step's driver and node.
        let dir = std::env::temp_dir().join(format!("rekube-e2e-rbac-csi-{}", self.ns.name));
        let mut csi = CsiDriverProcess::start(&dir, &driver, &node, &[]);
        csi.start_sidecar("attacher", &["--node-name", &node]);
        wait_until("the volume attached by the attacher", T, || async {
            let va = attachments.get(&name).await.map_err(|e| e.to_string())?;
            match va.status {
                Some(s) if s.attached => Ok(()),
                other => Err(format!("{other:?}\n{}", csi.logs())),
            }
        })
        .await;
        let unique = rekube_crds::storage_keys::csi_unique_volume_name(&driver, "vol-1");
        let attached = || async {
            let n = node_api.get(&node).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(
                n.status
                    .and_then(|s| s.volumes_attached)
                    .unwrap_or_default()
                    .iter()
                    .any(|v| v.name == unique),
            )
        };
        wait_until("the volume in the node's volumesAttached", T, || async {
            attached()
                .await?
                .then_some(())
                .ok_or_else(|| self.controllers.logs())
        })
        .await;
        self.api::<Pod>()
            .delete("attached", &Default::default())
            .await
            .unwrap();
        wait_until("the volume detached", T, || async {
            let gone = attachments
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
                .is_none();
            (gone && !attached().await?)
                .then_some(())
                .ok_or_else(|| self.controllers.logs())
        })
        .await;
    }

    /// Ephemeral volume controller: a pod with a generic ephemeral volume gets its claim
    /// `<pod>-<volume>`, controlled by the pod (create persistentvolumeclaims). The pod is
    /// bound to a node that does not exist: nothing runs it, and pod GC collects it later.
    async fn ephemeral_volume_claim(&self) {
        self.create::<Pod>(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "with-scratch"},
            "spec": {"nodeName": self.ns.cluster_name("nowhere"),
                     "containers": [{"name": "c", "image": "busybox:1.36"}],
                     // Larger than any volume of the other steps: it takes none of theirs.
                     "volumes": [{"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
                         "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                         "resources": {"requests": {"storage": "64Gi"}}}}}}]}
        }))
        .await;
        let claims = self.api::<PersistentVolumeClaim>();
        wait_until("the ephemeral volume's claim", T, || async {
            match claims
                .get_opt("with-scratch-scratch")
                .await
                .map_err(|e| e.to_string())?
            {
                Some(c) if c.owner_references().iter().any(|o| o.kind == "Pod") => Ok(()),
                other => Err(format!("{other:?}\n{}", self.controllers.logs())),
            }
        })
        .await;
    }

    /// Pod token binding controller: a pod projecting a service account token, on the
    /// hollow agent's node, gets its token binding Secret (get secrets: not there; create
    /// secrets), made again when deleted while the pod lives (get and create again, at
    /// its resync). The node authorizer grants the node the token of the pod's
    /// ServiceAccount (a Role with create on serviceaccounts/token, which RBAC lets it
    /// write only because it holds that itself).
    async fn pod_token_binding(&self) {
        let pod = self
            .create::<Pod>(json!({
                "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "with-token"},
                "spec": {"nodeName": self.node, "serviceAccountName": "default",
                         "containers": [{"name": "c", "image": "busybox:1.36"}],
                         "volumes": [{"name": "kube-api-access", "projected": {"sources": [
                             {"serviceAccountToken": {"path": "token"}}]}}]}
            }))
            .await;
        let name = rekube_crds::token_binding::pod_token_binding_secret_name(&pod);
        let secrets = self.api::<Secret>();
        let binding = || async {
            secrets
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|s| s.metadata.uid)
                .ok_or_else(|| self.controllers.logs())
        };
        let first = wait_until("the pod's token binding secret", T, binding).await;
        let role = format!("rekube-node:{}", self.node);
        let roles = self.api::<Role>();
        wait_until("the node's token grant", T, || async {
            let rules = roles
                .get_opt(&role)
                .await
                .map_err(|e| e.to_string())?
                .and_then(|r| r.rules)
                .unwrap_or_default();
            rules
                .iter()
                .any(|r| {
                    r.resources.as_deref() == Some(&["serviceaccounts/token".to_string()][..])
                        && r.resource_names.as_deref() == Some(&["default".to_string()][..])
                })
                .then_some(())
                .ok_or_else(|| format!("{rules:?}"))
        })
        .await;
        secrets.delete(&name, &Default::default()).await.unwrap();
        wait_until("the token binding secret made again", T, || async {
            let uid = binding().await?;
            (uid != first)
                .then_some(())
                .ok_or_else(|| "still the first".to_string())
        })
        .await;
        self.api::<Pod>()
            .delete("with-token", &Default::default())
            .await
            .unwrap();
    }

    /// Pod GC: a pod bound to a node that does not exist, held by the node agent's
    /// finalizer: after the quarantine the collector asks for the node (get nodes, 404),
    /// marks the pod Failed (patch pods/status), deletes it (delete pods) and takes the
    /// agent's finalizer off (patch pods).
    async fn orphaned_pod_of_a_deleted_node(&self) {
        self.create::<Pod>(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": "orphan", "finalizers": [NODE_AGENT_FINALIZER]},
            "spec": {"nodeName": self.ns.cluster_name("gone"),
                     "containers": [{"name": "c", "image": "busybox:1.36"}]}
        }))
        .await;
        let pods = self.api::<Pod>();
        wait_until("the orphaned pod collected", T, || async {
            match pods.get_opt("orphan").await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(p) => Err(format!("{:?} {:?}", p.metadata.finalizers, p.status)),
            }
        })
        .await;
    }
}
