//! The attach/detach controller on the real apiserver (upstream test/e2e/storage's
//! csi-mock attach cases and the controller's integration test, the controller's part):
//! rekube-controllers' `persistentvolume-attach-detach-controller` with the PV binder,
//! and the real attacher, `rekube-csi attacher` beside a `rekube-csi` driver process of
//! the test's own driver name, one per node (the attacher is node-local). The test's
//! Nodes have no agent (the control plane's view of a node: created Ready, annotated
//! controller-managed or not), except where the attacher needs the driver's node id: a
//! hollow agent with `--csi-driver` registers the driver on its Node as a kubelet does.
//! Nothing here writes what the attacher or a node agent would write (`status.attached`,
//! `attachError`, `volumesInUse`, the node id): the real interlock with a node's
//! `volumesInUse` is e2e/tests/csi_attach.rs's.
//!
//! - a pod's CSI volume gets its VolumeAttachment (upstream's name and spec) before any
//!   attacher runs; attached by the attacher, the Node's `volumesAttached` lists it and
//!   the pod gets SuccessfulAttachVolume; the pod deleted (the node never reported the
//!   volume in use), it is detached;
//! - the attacher's `attachError` (ControllerPublishVolume of a volume the driver does
//!   not have: NotFound) is the pod's FailedAttachVolume, with upstream's message; the
//!   volume created, the attacher's retry attaches it and the controller sees it;
//! - no attachment for a driver whose CSIDriver says `attachRequired: false`, a hostPath
//!   volume, or a node without the annotation;
//! - a restart: a wanted attachment is kept (the same object), one no longer wanted is
//!   detached; a node deleted while the controller was down has its attachment detached
//!   after `--attach-detach-max-wait-for-unmount`, not before.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use rekube_crds::storage_keys::{attachment_name, csi_unique_volume_name};
use rekube_crds::{Node, PersistentVolumeClaim, Pod, VolumeAttachment};
use rekube_csi::csi;
use rekube_csi::volume_id::volume_id_for;
use rekube_e2e::agent::AgentProcess;
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::nodes::{NodeShape, create_node};
use rekube_e2e::storage::{CsiDriverProcess, create_csi_driver, event_notes};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(60);
const CONTROLLERS: &str =
    "--controllers=persistentvolume-attach-detach-controller,persistentvolume-binder-controller";
const MANAGED: &str = "volumes.kubernetes.io/controller-managed-attach-detach";
/// rekube-csi's flag advertising ControllerPublishVolume: its attacher then publishes
/// (without it the attacher is upstream's trivial one, which marks attached at once).
const ATTACH_FLAG: &str = "--attach-required";

struct Setup {
    ns: TestNamespace,
    /// The test's driver name (its CSIDriver says `attachRequired: true`).
    driver: String,
}

impl Setup {
    async fn new(name: &str) -> Self {
        let ns = TestNamespace::new(name).await;
        let driver = create_csi_driver(&ns, true).await;
        Setup { ns, driver }
    }

    /// A Ready node without an agent, annotated controller-managed unless `managed` is
    /// false (as a node agent registers it).
    async fn node(&self, name: &str, managed: bool) -> String {
        let node = create_node(&self.ns, name, &NodeShape::default()).await;
        if managed {
            Api::<Node>::all(self.ns.client.clone())
                .patch(
                    &node,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {MANAGED: "true"}}})),
                )
                .await
                .unwrap();
        }
        node
    }

    /// The test's driver serving node `node` (its node id), with `extra` flags, and its
    /// attacher for that node.
    fn driver_on(&self, node: &str, extra: &[&str]) -> CsiDriverProcess {
        let dir = std::env::temp_dir().join(format!("rekube-e2e-ad-{node}"));
        let mut driver = CsiDriverProcess::start(&dir, &self.driver, node, extra);
        driver.start_sidecar("attacher", &["--node-name", node]);
        driver
    }

    /// A volume of `driver` (or hostPath when `None`) and the claim `name` bound to it.
    async fn claim(&self, name: &str, driver: Option<&str>, handle: &str) {
        let source = match driver {
            Some(d) => json!({"csi": {"driver": d, "volumeHandle": handle}}),
            None => json!({"hostPath": {"path": "/tmp/attach-e2e"}}),
        };
        let mut spec = json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "storageClassName": ""});
        spec.as_object_mut()
            .unwrap()
            .extend(source.as_object().unwrap().clone());
        self.ns
            .create(
                json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
                "metadata": {"name": name}, "spec": spec}),
            )
            .await
            .unwrap();
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.ns.client.clone(), &self.ns.name);
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                     "volumeName": self.ns.cluster_name(name),
                     "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .unwrap();
        claims.create(&PostParams::default(), &claim).await.unwrap();
        wait_until(&format!("claim {name} bound"), T, || async {
            let c = claims.get(name).await.map_err(|e| e.to_string())?;
            match c.status.and_then(|s| s.phase) {
                Some(p) if p == "Bound" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    async fn pod(&self, name: &str, node: &str, claim: &str) {
        let pods: Api<Pod> = Api::namespaced(self.ns.client.clone(), &self.ns.name);
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "busybox:1.36"}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}]}
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }

    async fn delete_pod(&self, name: &str) {
        Api::<Pod>::namespaced(self.ns.client.clone(), &self.ns.name)
            .delete(name, &Default::default())
            .await
            .unwrap();
    }

    fn attachments(&self) -> Api<VolumeAttachment> {
        Api::all(self.ns.client.clone())
    }

    /// The attachment `name`, once the controller made it.
    async fn attachment(&self, name: &str, c: &ControllerProcess) -> VolumeAttachment {
        wait_until(&format!("volume attachment {name}"), T, || async {
            self.attachments()
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| c.logs())
        })
        .await
    }

    /// The attachment `name`, once its attacher marked it attached.
    async fn attached(&self, name: &str, driver: &CsiDriverProcess) -> VolumeAttachment {
        wait_until(&format!("volume attachment {name} attached"), T, || async {
            let va = self
                .attachments()
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?;
            match va {
                Some(va) if va.status.as_ref().is_some_and(|s| s.attached) => Ok(va),
                other => Err(format!(
                    "{:?}\n{}",
                    other.and_then(|v| v.status),
                    driver.logs()
                )),
            }
        })
        .await
    }

    async fn volumes_attached(&self, node: &str) -> Vec<String> {
        Api::<Node>::all(self.ns.client.clone())
            .get(node)
            .await
            .unwrap()
            .status
            .and_then(|s| s.volumes_attached)
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect()
    }

    async fn wait_volumes_attached(&self, node: &str, want: &[String], c: &ControllerProcess) {
        wait_until(
            &format!("volumesAttached of {node}: {want:?}"),
            T,
            || async {
                let v = self.volumes_attached(node).await;
                (v == want)
                    .then_some(())
                    .ok_or_else(|| format!("{v:?}\n{}", c.logs()))
            },
        )
        .await;
    }

    /// The names of the VolumeAttachments of this test's nodes.
    async fn ours(&self) -> Result<Vec<String>, String> {
        let prefix = format!("{}-", self.ns.name);
        Ok(self
            .attachments()
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .into_iter()
            .filter(|va| {
                va.spec
                    .as_ref()
                    .is_some_and(|s| s.node_name.starts_with(&prefix))
            })
            .filter_map(|va| va.metadata.name)
            .collect())
    }

    /// The pods deleted and every VolumeAttachment of this test's nodes detached by the
    /// controller (and let go by the attachers).
    async fn finish(&self, c: &ControllerProcess) {
        let pods: Api<Pod> = Api::namespaced(self.ns.client.clone(), &self.ns.name);
        for p in pods.list(&Default::default()).await.unwrap().items {
            let name = p.metadata.name.unwrap_or_default();
            let _ = pods.delete(&name, &Default::default()).await;
        }
        wait_until("the test's volume attachments deleted", T, || async {
            let left = self.ours().await?;
            left.is_empty()
                .then_some(())
                .ok_or_else(|| format!("{left:?}\n{}", c.logs()))
        })
        .await;
    }

    async fn wait_detached(&self, name: &str, node: &str, c: &ControllerProcess) {
        wait_until(&format!("volume attachment {name} deleted"), T, || async {
            let gone = self
                .attachments()
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .is_none();
            (gone && self.volumes_attached(node).await.is_empty())
                .then_some(())
                .ok_or_else(|| c.logs())
        })
        .await;
    }

    async fn notes(&self, pod: &str, reason: &str) -> Vec<String> {
        let events: Api<Event> = Api::namespaced(self.ns.client.clone(), &self.ns.name);
        event_notes(&events, Some("Pod"), pod, reason).await
    }
}

/// What the test made that its controllers and attachers may not have taken away (a
/// failed test's): the VolumeAttachments of its nodes and its PersistentVolumes, their
/// finalizers taken off. Declared after the namespace and before the processes, so it
/// runs once they are stopped.
struct Cleanup {
    ns: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ns = self.ns.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let client = rekube_e2e::client().await;
                let attachments: Api<VolumeAttachment> = Api::all(client.clone());
                let prefix = format!("{ns}-");
                for va in attachments
                    .list(&Default::default())
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default()
                {
                    if !va
                        .spec
                        .as_ref()
                        .is_some_and(|s| s.node_name.starts_with(&prefix))
                    {
                        continue;
                    }
                    let name = va.metadata.name.unwrap_or_default();
                    let _ = attachments
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                        )
                        .await;
                    let _ = attachments.delete(&name, &DeleteParams::default()).await;
                }
                // What storage::delete_test_volumes does (a Drop here holds no TestNamespace).
                let volumes: Api<rekube_crds::PersistentVolume> = Api::all(client);
                let lp = kube::api::ListParams::default()
                    .labels(&format!("{}={ns}", rekube_e2e::nodes::SCOPE_LABEL));
                for v in volumes.list(&lp).await.map(|l| l.items).unwrap_or_default() {
                    let name = v.metadata.name.unwrap_or_default();
                    let _ = volumes
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
                        )
                        .await;
                    let _ = volumes.delete(&name, &DeleteParams::default()).await;
                }
            });
        })
        .join();
    }
}

fn cleanup(ns: &TestNamespace) -> Cleanup {
    Cleanup {
        ns: ns.name.clone(),
    }
}

#[tokio::test]
async fn a_csi_volume_is_attached_by_the_attacher_and_detached_when_no_pod_needs_it() {
    let s = Setup::new("attach").await;
    let _cleanup = cleanup(&s.ns);
    let c = ControllerProcess::start(&s.ns.name, &[CONTROLLERS]);
    let node = s.node("a", true).await;
    s.claim("data", Some(&s.driver), "vol-1").await;
    s.pod("user", &node, "data").await;

    // Before any attacher runs: the controller's VolumeAttachment, upstream's name and
    // spec, not attached, and the Node lists nothing.
    let name = attachment_name("vol-1", &s.driver, &node);
    let va = s.attachment(&name, &c).await;
    let spec = va.spec.unwrap();
    assert_eq!(spec.attacher, s.driver);
    assert_eq!(spec.node_name, node);
    assert_eq!(
        spec.source.persistent_volume_name.as_deref(),
        Some(s.ns.cluster_name("data").as_str())
    );
    assert!(spec.source.inline_volume_spec.is_none());
    assert!(va.status.is_none_or(|st| !st.attached));
    assert!(
        s.volumes_attached(&node).await.is_empty(),
        "not attached yet"
    );

    // The attacher (upstream's trivial one: the driver has no ControllerPublishVolume).
    let driver = s.driver_on(&node, &[]);
    s.attached(&name, &driver).await;
    let unique = csi_unique_volume_name(&s.driver, "vol-1");
    s.wait_volumes_attached(&node, std::slice::from_ref(&unique), &c)
        .await;
    let pv = s.ns.cluster_name("data");
    wait_until("SuccessfulAttachVolume", T, || async {
        let notes = s.notes("user", "SuccessfulAttachVolume").await;
        (notes
            == [format!(
                "AttachVolume.Attach succeeded for volume \"{pv}\" "
            )])
        .then_some(())
        .ok_or(format!("{notes:?}"))
    })
    .await;

    // The pod goes; its node (Ready, never reporting the volume in use) gets it detached.
    s.delete_pod("user").await;
    s.wait_detached(&name, &node, &c).await;
    s.finish(&c).await;
}

#[tokio::test]
async fn the_attachers_attach_error_is_the_pods_failed_attach_volume_event() {
    let s = Setup::new("attach-error").await;
    let _cleanup = cleanup(&s.ns);
    let c = ControllerProcess::start(&s.ns.name, &[CONTROLLERS]);
    // The attacher publishes with the driver's node id, which the node agent writes on
    // its Node when the driver registers: a hollow agent (no containers, no volumes)
    // with the driver as its --csi-driver.
    let node = s.ns.cluster_name("a");
    let mut driver = CsiDriverProcess::start(
        &std::env::temp_dir().join(format!("rekube-e2e-ad-{node}")),
        &s.driver,
        &node,
        &[ATTACH_FLAG],
    );
    let agent = AgentProcess::start(
        &s.ns,
        "a",
        &["--hollow", "--csi-driver", &driver.agent_flag()],
    );
    agent
        .wait_node_ready(&s.ns.client, Duration::from_secs(90))
        .await;
    let nodes: Api<Node> = Api::all(s.ns.client.clone());
    wait_until("the driver registered on the node", T, || async {
        let n = nodes.get(&node).await.map_err(|e| e.to_string())?;
        let annotations = n.metadata.annotations.unwrap_or_default();
        let ids: BTreeMap<String, String> = annotations
            .get("csi.volume.kubernetes.io/nodeid")
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        (ids.get(&s.driver) == Some(&node)
            && annotations.get(MANAGED).map(String::as_str) == Some("true"))
        .then_some(())
        .ok_or_else(|| agent.logs())
    })
    .await;
    driver.start_sidecar("attacher", &["--node-name", &node]);

    // A volume the driver does not have (yet): the id CreateVolume gives `volume_name`.
    let volume_name = format!("{}-data", s.ns.name);
    let handle = volume_id_for(&volume_name);
    s.claim("data", Some(&s.driver), &handle).await;
    s.pod("user", &node, "data").await;
    let name = attachment_name(&handle, &s.driver, &node);
    s.attachment(&name, &c).await;
    let error = format!("rpc error: code = NotFound desc = volume {handle}: not found");
    wait_until("the attacher's attachError", T, || async {
        let va = s
            .attachments()
            .get(&name)
            .await
            .map_err(|e| e.to_string())?;
        let status = va.status.unwrap_or_default();
        let message = status.attach_error.and_then(|e| e.message);
        (!status.attached && message.as_deref() == Some(error.as_str()))
            .then_some(())
            .ok_or_else(|| format!("{message:?}\n{}", driver.logs()))
    })
    .await;
    let pv = s.ns.cluster_name("data");
    let failed = format!("AttachVolume.Attach failed for volume \"{pv}\" : {error}");
    wait_until("FailedAttachVolume", T, || async {
        let notes = s.notes("user", "FailedAttachVolume").await;
        (notes == [failed.clone()])
            .then_some(())
            .ok_or(format!("{notes:?}\n{}", c.logs()))
    })
    .await;
    assert!(s.volumes_attached(&node).await.is_empty());
    assert!(
        s.notes("user", "SuccessfulAttachVolume").await.is_empty(),
        "attached while the attacher fails"
    );

    // The volume made (a hostpath one: nothing to attach on the machine): the
    // attacher's retry publishes it, the controller sees it attached.
    driver
        .controller()
        .await
        .create_volume(csi::CreateVolumeRequest {
            name: volume_name.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes: 1 << 20,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![csi::VolumeCapability {
                access_mode: Some(csi::volume_capability::AccessMode {
                    mode: csi::volume_capability::access_mode::Mode::SingleNodeWriter as i32,
                }),
                access_type: Some(csi::volume_capability::AccessType::Mount(Default::default())),
            }],
            parameters: [("type".to_string(), "hostpath".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("CreateVolume: {e}\n{}", driver.logs()));
    let va = s.attached(&name, &driver).await;
    assert!(
        va.status.unwrap().attach_error.is_none(),
        "the error cleared"
    );
    let unique = csi_unique_volume_name(&s.driver, &handle);
    s.wait_volumes_attached(&node, std::slice::from_ref(&unique), &c)
        .await;
    wait_until("SuccessfulAttachVolume after the retry", T, || async {
        let notes = s.notes("user", "SuccessfulAttachVolume").await;
        (notes
            == [format!(
                "AttachVolume.Attach succeeded for volume \"{pv}\" "
            )])
        .then_some(())
        .ok_or(format!("{notes:?}\n{}", c.logs()))
    })
    .await;

    // Detached (the attacher's ControllerUnpublishVolume and finalizer) once the pod is gone.
    s.delete_pod("user").await;
    s.wait_detached(&name, &node, &c).await;
    s.finish(&c).await;
    driver
        .controller()
        .await
        .delete_volume(csi::DeleteVolumeRequest {
            volume_id: handle,
            ..Default::default()
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn volumes_that_need_no_attach_get_none() {
    let s = Setup::new("attach-none").await;
    let _cleanup = cleanup(&s.ns);
    let c = ControllerProcess::start(&s.ns.name, &[CONTROLLERS]);
    let managed = s.node("a", true).await;
    let unmanaged = s.node("b", false).await;
    let driver = s.driver_on(&managed, &[]);
    let no_attach = s.ns.cluster_name("noattach.csi.rekube.io");
    s.ns.create(json!({"apiVersion": "rekube.io/v1", "kind": "CSIDriver",
            "metadata": {"name": "noattach.csi.rekube.io"}, "spec": {"attachRequired": false}}))
        .await
        .unwrap();
    s.claim("no-attach", Some(&no_attach), "vol-1").await;
    s.claim("host", None, "").await;
    s.claim("unmanaged", Some(&s.driver), "vol-2").await;
    s.claim("wanted", Some(&s.driver), "vol-3").await;
    s.pod("p1", &managed, "no-attach").await;
    s.pod("p2", &managed, "host").await;
    s.pod("p3", &unmanaged, "unmanaged").await;
    // The control: a volume that does need attaching, created last, attached by the
    // attacher of the managed node.
    s.pod("p4", &managed, "wanted").await;
    let wanted = attachment_name("vol-3", &s.driver, &managed);
    s.attached(&wanted, &driver).await;
    s.wait_volumes_attached(&managed, &[csi_unique_volume_name(&s.driver, "vol-3")], &c)
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(s.ours().await.unwrap(), [wanted], "{}", c.logs());
    assert!(s.volumes_attached(&unmanaged).await.is_empty());
    s.finish(&c).await;
}

#[tokio::test]
async fn a_restart_neither_recreates_nor_orphans_attachments() {
    let s = Setup::new("attach-restart").await;
    let _cleanup = cleanup(&s.ns);
    let max_wait = Duration::from_secs(5);
    let args = [CONTROLLERS, "--attach-detach-max-wait-for-unmount", "5s"];
    let mut c = ControllerProcess::start(&s.ns.name, &args);
    let node = s.node("a", true).await;
    let gone = s.node("gone", true).await;
    let drivers = [s.driver_on(&node, &[]), s.driver_on(&gone, &[])];
    s.claim("kept", Some(&s.driver), "vol-1").await;
    s.claim("released", Some(&s.driver), "vol-2").await;
    s.claim("orphan", Some(&s.driver), "vol-3").await;
    s.pod("kept", &node, "kept").await;
    s.pod("released", &node, "released").await;
    s.pod("orphan", &gone, "orphan").await;
    let names = [
        attachment_name("vol-1", &s.driver, &node),
        attachment_name("vol-2", &s.driver, &node),
        attachment_name("vol-3", &s.driver, &gone),
    ];
    let mut uids = Vec::new();
    for (name, driver) in names.iter().zip([&drivers[0], &drivers[0], &drivers[1]]) {
        let va = s.attached(name, driver).await;
        uids.push(va.metadata.uid.unwrap());
    }
    let unique = |h: &str| csi_unique_volume_name(&s.driver, h);
    wait_until("the volumes in volumesAttached", T, || async {
        let mut v = s.volumes_attached(&node).await;
        v.sort();
        let g = s.volumes_attached(&gone).await;
        (v == [unique("vol-1"), unique("vol-2")] && g == [unique("vol-3")])
            .then_some(())
            .ok_or(format!("{v:?} {g:?}\n{}", c.logs()))
    })
    .await;
    c.kill();
    // While the controller is down: one pod goes, the other node is deleted with its pod.
    s.delete_pod("released").await;
    s.delete_pod("orphan").await;
    Api::<Node>::all(s.ns.client.clone())
        .delete(&gone, &Default::default())
        .await
        .unwrap();
    c.restart();
    // The new process leads once the killed one's Lease expires; its first reconcile
    // detaches the released volume and starts the deleted node's wait for unmount: the
    // clock of the timeout starts then, not at the restart.
    let orphan_waiting = wait_until("the released volume detached", T, || async {
        let released = s
            .attachments()
            .get_opt(&names[1])
            .await
            .map_err(|e| e.to_string())?
            .is_none();
        let attached = s.volumes_attached(&node).await;
        if !(released && attached == [unique("vol-1")]) {
            return Err(format!("{attached:?}\n{}", c.logs()));
        }
        let orphan = s
            .attachments()
            .get_opt(&names[2])
            .await
            .map_err(|e| e.to_string())?;
        Ok(orphan.map(|_| Instant::now()))
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "the deleted node's attachment detached as soon as the controller was back\n{}",
            c.logs()
        )
    });
    let kept = s.attachments().get(&names[0]).await.unwrap();
    assert_eq!(
        kept.metadata.uid.as_ref(),
        Some(&uids[0]),
        "the wanted attachment kept"
    );
    assert!(kept.status.is_some_and(|st| st.attached));
    // The deleted node's: counted mounted until the timeout, then force-detached.
    wait_until("the deleted node's attachment detached", T, || async {
        match s
            .attachments()
            .get_opt(&names[2])
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(_) => Err(c.logs()),
        }
    })
    .await;
    // Seen a little after the controller's first reconcile: a second of slack.
    let waited = orphan_waiting.elapsed();
    assert!(
        waited >= max_wait - Duration::from_secs(1),
        "detached {waited:?} after the controller's first reconcile, before the {max_wait:?} timeout\n{}",
        c.logs()
    );
    // The kept one is still there, still the same object.
    let kept = s.attachments().get(&names[0]).await.unwrap();
    assert_eq!(kept.metadata.uid.as_ref(), Some(&uids[0]));
    s.finish(&c).await;
}
