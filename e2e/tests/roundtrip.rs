//! Upstream manifests with only apiVersion changed are accepted by the real apiserver and
//! read back without losing a field, spec and status alike; and rekube's Rust types carry
//! every field the apiserver returns.
use kube::api::{Api, DynamicObject, PostParams};
use rekube_e2e::compare::{differences, missing_or_changed};
use rekube_e2e::{TestNamespace, manifests, to_rekube, type_of};
use serde_json::Value;

/// Parses `obj` as rekube's typed `K` and serializes it again: nothing may change.
fn typed_round_trip<K: serde::Serialize + serde::de::DeserializeOwned>(obj: &Value) -> Vec<String> {
    let typed: K =
        serde_json::from_value(obj.clone()).expect("server object parses as the rekube type");
    differences(obj, &serde_json::to_value(typed).unwrap())
}

fn typed_differences(kind: &str, obj: &Value) -> Vec<String> {
    use rekube_crds as rk;
    match kind {
        "Pod" => typed_round_trip::<rk::Pod>(obj),
        "Deployment" => typed_round_trip::<rk::Deployment>(obj),
        "ReplicaSet" => typed_round_trip::<rk::ReplicaSet>(obj),
        "Service" => typed_round_trip::<rk::Service>(obj),
        "Endpoints" => typed_round_trip::<rk::Endpoints>(obj),
        "EndpointSlice" => typed_round_trip::<rk::EndpointSlice>(obj),
        "PersistentVolume" => typed_round_trip::<rk::PersistentVolume>(obj),
        "PersistentVolumeClaim" => typed_round_trip::<rk::PersistentVolumeClaim>(obj),
        "StorageClass" => typed_round_trip::<rk::StorageClass>(obj),
        "Node" => typed_round_trip::<rk::Node>(obj),
        "VolumeAttachment" => typed_round_trip::<rk::VolumeAttachment>(obj),
        "CSIDriver" => typed_round_trip::<rk::CSIDriver>(obj),
        "CSIStorageCapacity" => typed_round_trip::<rk::CSIStorageCapacity>(obj),
        other => panic!("no rekube type for {other}"),
    }
}

async fn round_trip(file: &str) {
    // workloads.yaml's Pod mounts a hostPath volume, which Pod Security's baseline refuses.
    let ns = TestNamespace::privileged("roundtrip").await;
    let docs = manifests(file);
    assert!(!docs.is_empty(), "{file} has manifests");
    for upstream in docs {
        let (_, kind) = type_of(&upstream).unwrap();
        let mut obj = to_rekube(upstream.clone());
        let status = obj.as_object_mut().unwrap().remove("status");
        let created = ns
            .create(obj.clone())
            .await
            .unwrap_or_else(|e| panic!("{kind} rejected: {e}"));
        let name = created["metadata"]["name"].as_str().unwrap().to_string();
        let api: Api<DynamicObject> = ns.api(rekube_crds::API_VERSION, &kind);

        let mut stored = serde_json::to_value(api.get(&name).await.unwrap()).unwrap();
        if let Some(status) = &status {
            stored["status"] = status.clone();
            let with_status: DynamicObject = serde_json::from_value(stored.clone()).unwrap();
            api.replace_status(&name, &PostParams::default(), &with_status)
                .await
                .unwrap_or_else(|e| panic!("{kind} status rejected: {e}"));
            stored = serde_json::to_value(api.get(&name).await.unwrap()).unwrap();
        }

        let mut expected = obj.clone();
        expected["metadata"]["name"] = Value::from(name.clone());
        if let Some(status) = status {
            expected["status"] = status;
        }
        let lost = missing_or_changed(&expected, &stored);
        assert!(
            lost.is_empty(),
            "{kind} {name} lost or changed fields on the way through the apiserver:\n{}",
            lost.join("\n")
        );

        // The same object read as the upstream type (apiVersion swapped back) parses and
        // carries the same body: the CRD mirrors the upstream type field for field.
        let mut as_upstream = stored.clone();
        as_upstream["apiVersion"] = upstream["apiVersion"].clone();
        let lost = missing_or_changed(&without_metadata(&upstream), &as_upstream);
        assert!(
            lost.is_empty(),
            "{kind} differs from its upstream manifest:\n{}",
            lost.join("\n")
        );

        let typed = typed_differences(&kind, &stored);
        assert!(
            typed.is_empty(),
            "rekube's {kind} type drops or changes fields: {typed:?}"
        );
    }
}

/// The manifest without metadata (the test renames cluster-scoped objects).
fn without_metadata(upstream: &Value) -> Value {
    let mut v = upstream.clone();
    v.as_object_mut().unwrap().remove("metadata");
    v
}

#[tokio::test]
async fn workloads_round_trip() {
    round_trip("upstream/workloads.yaml").await;
}

#[tokio::test]
async fn networking_round_trips() {
    round_trip("upstream/networking.yaml").await;
}

#[tokio::test]
async fn storage_and_nodes_round_trip() {
    round_trip("upstream/storage.yaml").await;
}
