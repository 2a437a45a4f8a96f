//! Generic ephemeral volumes on the real apiserver: rekube-controllers'
//! `ephemeral-volume-controller` makes each pod's claims, the PV binder binds them, and the
//! host's garbage collector deletes them with their pod (upstream test/e2e/storage's
//! ephemeral volume tests, the controller's part of them).
//!
//! - a pod (bound to a node that does not exist: nothing runs it) with an ephemeral volume
//!   gets the claim `<pod>-<volume>` with the template's labels, annotations and spec,
//!   controlled by the pod; a static volume binds it;
//! - the claim deleted by someone else is made again (a new UID);
//! - a claim of that name not controlled by its pod: upstream's FailedBinding event on
//!   the pod, and the claim left as it was;
//! - the pod deleted, the garbage collector deletes its claim (owner reference; no
//!   protection controller runs, so the claim has no finalizer).
use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Resource, ResourceExt};
use rekube_crds::{PersistentVolume, PersistentVolumeClaim, Pod};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::storage::event_notes;
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const CONTROLLERS: &str = "--controllers=ephemeral-volume-controller,persistentvolume-binder-controller,persistentvolumeclaim-protection-controller";

/// A pod bound to a node that does not exist, with the generic ephemeral volume `volume`
/// of `template`.
fn pod(ns: &TestNamespace, name: &str, volume: &str, template: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": ns.cluster_name("nowhere"),
                 "containers": [{"name": "c", "image": "busybox:1.36"}],
                 "volumes": [{"name": volume, "ephemeral": {"volumeClaimTemplate": template}}]}
    }))
    .unwrap()
}

fn phase(c: &PersistentVolumeClaim) -> String {
    c.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn ephemeral_volumes_get_their_claims() {
    let ns = TestNamespace::new("ephemeral").await;
    let controllers = ControllerProcess::start(&ns.name, &[CONTROLLERS]);
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
    let volumes: Api<PersistentVolume> = Api::all(ns.client.clone());
    let events_api: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let class = format!("manual-{}", ns.name);

    // A pod with an ephemeral volume: its claim, from the template, controlled by the pod.
    let template = json!({
        "metadata": {"labels": {"app": "web", "tier": "scratch"},
                     "annotations": {"rekube.io/e2e-note": "from the template"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                 "resources": {"requests": {"storage": "1Gi"}}}
    });
    let web = pods
        .create(&pp, &pod(&ns, "web", "scratch", template.clone()))
        .await
        .unwrap();
    let claim = wait_until("claim web-scratch created", T, || async {
        claims
            .get_opt("web-scratch")
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| controllers.logs())
    })
    .await;
    let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "scratch")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(claim.labels(), &labels);
    assert_eq!(
        claim
            .annotations()
            .get("rekube.io/e2e-note")
            .map(String::as_str),
        Some("from the template")
    );
    let owners = claim.owner_references();
    assert_eq!(owners.len(), 1, "{owners:?}");
    let owner = &owners[0];
    assert_eq!(
        (
            owner.api_version.as_str(),
            owner.kind.as_str(),
            owner.name.as_str()
        ),
        ("rekube.io/v1", "Pod", "web")
    );
    assert_eq!(Some(&owner.uid), web.meta().uid.as_ref());
    assert_eq!(
        (owner.controller, owner.block_owner_deletion),
        (Some(true), Some(true))
    );
    let spec = claim.spec.clone().unwrap();
    assert_eq!(spec.access_modes.unwrap(), ["ReadWriteOnce"]);
    assert_eq!(spec.storage_class_name.as_deref(), Some(class.as_str()));
    assert_eq!(
        spec.resources.unwrap().requests.unwrap()["storage"].0,
        "1Gi"
    );

    // Deleted by someone else: made again. The claim has the pvc-protection finalizer
    // from its creation (admission, as upstream's), which keeps it while the pod may use
    // it; the test takes the finalizer off, so that the claim is really gone.
    claims
        .delete("web-scratch", &DeleteParams::default())
        .await
        .unwrap();
    claims
        .patch(
            "web-scratch",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    let again = wait_until("claim web-scratch made again", T, || async {
        match claims
            .get_opt("web-scratch")
            .await
            .map_err(|e| e.to_string())?
        {
            Some(c) if c.metadata.uid != claim.metadata.uid => Ok(c),
            other => Err(format!(
                "{:?}\n{}",
                other.map(|c| c.metadata.uid),
                controllers.logs()
            )),
        }
    })
    .await;
    assert_eq!(again.owner_references(), owners);

    // A static volume of the template's class binds the claim, as any claim.
    let pv = ns
        .create(
            json!({"apiVersion": "rekube.io/v1", "kind": "PersistentVolume",
            "metadata": {"name": "scratch"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Retain", "storageClassName": class,
                     "hostPath": {"path": "/tmp/rekube-e2e-unused"}}}),
        )
        .await
        .unwrap();
    let pv_name = pv["metadata"]["name"].as_str().unwrap().to_string();
    let bound = wait_until("claim web-scratch bound", T, || async {
        let c = claims.get("web-scratch").await.map_err(|e| e.to_string())?;
        if phase(&c) == "Bound" {
            Ok(c)
        } else {
            Err(format!("{:?} {:?}", c.spec, c.status))
        }
    })
    .await;
    assert_eq!(
        bound.spec.unwrap().volume_name.as_deref(),
        Some(pv_name.as_str())
    );
    let claim_ref = volumes
        .get(&pv_name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .claim_ref
        .unwrap();
    assert_eq!(claim_ref.uid, again.metadata.uid);

    // A claim of the name the pod's volume needs, not the pod's: left alone, with
    // upstream's event on the pod.
    let foreign: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "other-scratch", "labels": {"owner": "someone-else"}},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "resources": {"requests": {"storage": "2Gi"}}}
    }))
    .unwrap();
    claims.create(&pp, &foreign).await.unwrap();
    pods.create(&pp, &pod(&ns, "other", "scratch", template))
        .await
        .unwrap();
    let notes = wait_until("FailedBinding of pod other", T, || async {
        let notes = event_notes(&events_api, Some("Pod"), "other", "FailedBinding").await;
        if notes.is_empty() {
            Err(controllers.logs())
        } else {
            Ok(notes)
        }
    })
    .await;
    assert_eq!(
        notes[0],
        format!(
            "ephemeral volume scratch: PVC {0}/other-scratch was not created for pod {0}/other \
             (pod is not owner)",
            ns.name
        )
    );
    let left = claims.get("other-scratch").await.unwrap();
    assert!(left.owner_references().is_empty(), "{left:?}");
    assert_eq!(
        left.labels().get("owner").map(String::as_str),
        Some("someone-else")
    );
    let left_spec = left.spec.unwrap();
    assert_eq!(left_spec.access_modes.unwrap(), ["ReadWriteMany"]);
    assert_eq!(
        left_spec.resources.unwrap().requests.unwrap()["storage"].0,
        "2Gi"
    );

    // The pod deleted: the garbage collector deletes its claim (its owner reference).
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    wait_until("claim web-scratch deleted with its pod", T, || async {
        match claims
            .get_opt("web-scratch")
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(()),
            Some(c) => Err(format!(
                "still there: finalizers {:?}, deletion {:?}",
                c.metadata.finalizers, c.metadata.deletion_timestamp
            )),
        }
    })
    .await;
    // The pod gone, its claim is not made again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(claims.get_opt("web-scratch").await.unwrap().is_none());
    volumes
        .delete(&pv_name, &DeleteParams::default())
        .await
        .unwrap();
}
