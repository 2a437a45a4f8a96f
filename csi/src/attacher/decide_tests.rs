//! Table tests of the attacher's decisions, ported from external-attacher v4.13.0's
//! pkg/controller/csi_handler_test.go (TestCSIHandler, TestVolumeAttachmentWithErrorCode's
//! PUBLISH_READONLY cases), trivial_handler_test.go, controller_test.go
//! (TestShouldEnqueueVAChange) and util_test.go (TestGetVolumeCapabilities,
//! TestAddFinalizerPatch, TestRemoveFinalizerPatch), where the case applies to rekube
//! (the case names are upstream's; a CSINode case reads as the Node's annotation). Upstream
//! asserts the API actions and CSI calls a sync makes; here the steps the shell runs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;

const DRIVER: &str = "csi/test";
const FIN: &str = "external-attacher/csi-test";
const NODE: &str = "node1";
const NODE_ID: &str = "nodeID1";
const PV: &str = "pv1";
const HANDLE: &str = "handle";
const VA: &str = "pv1-node1";

fn attacher() -> Attacher {
    Attacher {
        driver_name: DRIVER.into(),
        node_name: NODE.into(),
        publish_unpublish: true,
        publish_readonly: true,
        single_node_multi_writer: false,
        default_fs_type: "ext4".into(),
    }
}

/// JSON merge patch (null deletes).
fn merge(into: &mut Value, patch: Value) {
    match (into, patch) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(&k);
                } else {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (a, b) => *a = b,
    }
}

fn pv(extra: Value) -> PersistentVolume {
    let mut p = json!({
        "metadata": {"name": PV},
        "spec": {"csi": {"driver": DRIVER, "volumeHandle": HANDLE},
            "accessModes": ["ReadWriteMany"]},
    });
    merge(&mut p, extra);
    serde_json::from_value(p).unwrap()
}

fn pv_with_finalizer(extra: Value) -> PersistentVolume {
    let mut e = json!({"metadata": {"finalizers": [FIN]}});
    merge(&mut e, extra);
    pv(e)
}

const DELETED: &str = "2026-01-01T00:00:00Z";

/// upstream va(attached, finalizer, annotations): the attachment of pv1 on node1.
fn va(attached: bool, finalizer: bool, annotated: bool, extra: Value) -> VolumeAttachment {
    let mut v = json!({
        "metadata": {"name": VA, "resourceVersion": "1"},
        "spec": {"attacher": DRIVER, "nodeName": NODE,
            "source": {"persistentVolumeName": PV}},
        "status": {"attached": attached},
    });
    if finalizer {
        merge(&mut v, json!({"metadata": {"finalizers": [FIN]}}));
    }
    if annotated {
        merge(
            &mut v,
            json!({"metadata": {"annotations": {VA_NODE_ID_ANNOTATION: NODE_ID}}}),
        );
    }
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn deleted() -> Value {
    json!({"metadata": {"deletionTimestamp": DELETED}})
}

/// An inline spec instead of the PV reference.
fn inline(csi: Value) -> Value {
    let mut c = json!({"driver": DRIVER, "volumeHandle": HANDLE});
    merge(&mut c, csi);
    json!({"spec": {"source": {"persistentVolumeName": null,
        "inlineVolumeSpec": {"csi": c, "accessModes": ["ReadWriteMany"]}}}})
}

/// The Node with the driver's id in its annotation (upstream's csiNode()).
fn node(ids: Option<Value>) -> Node {
    let mut n = json!({"metadata": {"name": NODE}});
    if let Some(ids) = ids {
        merge(
            &mut n,
            json!({"metadata": {"annotations": {NODE_ID_ANNOTATION: ids.to_string()}}}),
        );
    }
    serde_json::from_value(n).unwrap()
}

fn csi_node() -> Node {
    node(Some(json!({DRIVER: NODE_ID})))
}

/// The VolumeAttachment's metadata patch saving the finalizer and the node id.
fn va_patch(finalizers: Vec<&str>, annotate: bool) -> Step {
    let mut m = json!({"resourceVersion": "1"});
    if !finalizers.is_empty() {
        merge(&mut m, json!({"finalizers": finalizers}));
    }
    if annotate {
        merge(
            &mut m,
            json!({"annotations": {VA_NODE_ID_ANNOTATION: NODE_ID}}),
        );
    }
    Step::PatchVa(json!({ "metadata": m }))
}

fn rwx(fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::MultiNodeMultiWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
    }
}

fn publish(readonly: bool, context: &[(&str, &str)], secret: Option<&str>) -> Step {
    Step::Publish {
        request: ControllerPublishVolumeRequest {
            volume_id: HANDLE.into(),
            node_id: NODE_ID.into(),
            volume_capability: Some(rwx("ext4")),
            readonly,
            secrets: HashMap::new(),
            volume_context: context
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
        secret: secret.map(|name| SecretReference {
            name: Some(name.into()),
            namespace: Some("default".into()),
        }),
    }
}

fn unpublish(node_id: &str, secret: Option<&str>) -> Step {
    Step::Unpublish {
        request: ControllerUnpublishVolumeRequest {
            volume_id: HANDLE.into(),
            node_id: node_id.into(),
            ..Default::default()
        },
        secret: secret.map(|name| SecretReference {
            name: Some(name.into()),
            namespace: Some("default".into()),
        }),
    }
}

fn remove_va_finalizer() -> Step {
    Step::RemoveVaFinalizer(json!([
        {"op": "test", "path": "/metadata/finalizers/0", "value": FIN},
        {"op": "remove", "path": "/metadata/finalizers/0"},
    ]))
}

fn fail(message: &str) -> Step {
    Step::Fail(message.into())
}

struct Case {
    name: &'static str,
    attacher: Attacher,
    pv: Option<PersistentVolume>,
    node: Option<Node>,
    va: VolumeAttachment,
    want: VaSync,
}

fn case(
    name: &'static str,
    pv: Option<PersistentVolume>,
    node: Option<Node>,
    va: VolumeAttachment,
    want: VaSync,
) -> Case {
    Case {
        name,
        attacher: attacher(),
        pv,
        node,
        va,
        want,
    }
}

fn run(cases: Vec<Case>) {
    for c in cases {
        let got = sync_va(&c.attacher, &c.va, c.pv.as_ref(), c.node.as_ref());
        assert_eq!(got, c.want, "{}", c.name);
    }
}

#[test]
fn csi_handler_attach() {
    let attached = |steps: Vec<Step>| VaSync::Attach(steps);
    let with_secret = json!({"spec": {"csi": {"controllerPublishSecretRef":
        {"name": "secret", "namespace": "default"}}}});
    run(vec![
        // "VolumeAttachment added" and "updated" are one case here: a sync sees the object.
        case(
            "VolumeAttachment added -> successful attachment",
            Some(pv_with_finalizer(json!({}))),
            Some(csi_node()),
            va(false, false, false, json!({})),
            attached(vec![
                va_patch(vec![FIN], true),
                publish(false, &[], None),
                Step::MarkAttached,
            ]),
        ),
        case(
            "VolumeAttachment with InlineVolumeSpec -> successful attachment",
            None,
            Some(csi_node()),
            va(false, false, false, inline(json!({}))),
            attached(vec![
                va_patch(vec![FIN], true),
                publish(false, &[], None),
                Step::MarkAttached,
            ]),
        ),
        case(
            "readOnly VolumeAttachment added -> successful attachment",
            Some(pv_with_finalizer(
                json!({"spec": {"csi": {"readOnly": true}}}),
            )),
            Some(csi_node()),
            va(false, false, false, json!({})),
            attached(vec![
                va_patch(vec![FIN], true),
                publish(true, &[], None),
                Step::MarkAttached,
            ]),
        ),
        case(
            "readOnly VolumeAttachment with InlineVolumeSpec -> successful attachment",
            None,
            Some(csi_node()),
            va(false, false, false, inline(json!({"readOnly": true}))),
            attached(vec![
                va_patch(vec![FIN], true),
                publish(true, &[], None),
                Step::MarkAttached,
            ]),
        ),
        case(
            "VolumeAttachment with attributes -> successful attachment",
            Some(pv_with_finalizer(
                json!({"spec": {"csi": {"volumeAttributes": {"foo": "bar"}}}}),
            )),
            Some(csi_node()),
            va(false, false, false, json!({})),
            attached(vec![
                va_patch(vec![FIN], true),
                publish(false, &[("foo", "bar")], None),
                Step::MarkAttached,
            ]),
        ),
        case(
            "VolumeAttachment with InlineVolumeSpec and attributes -> successful attachment",
            None,
            Some(csi_node()),
            va(
                false,
                false,
                false,
                inline(json!({"volumeAttributes": {"foo": "bar"}})),
            ),
            attached(vec![
                va_patch(vec![FIN], true),
                publish(false, &[("foo", "bar")], None),
                Step::MarkAttached,
            ]),
        ),
        // The secret is read by the shell (a missing one fails the sync there).
        case(
            "VolumeAttachment with secrets -> successful attachment",
            Some(pv_with_finalizer(with_secret.clone())),
            Some(csi_node()),
            va(false, false, false, json!({})),
            attached(vec![
                va_patch(vec![FIN], true),
                publish(false, &[], Some("secret")),
                Step::MarkAttached,
            ]),
        ),
        case(
            "VolumeAttachment with InlineVolumeSpec and secrets -> successful attachment",
            None,
            Some(csi_node()),
            va(
                false,
                false,
                false,
                inline(
                    json!({"controllerPublishSecretRef": {"name": "secret", "namespace": "default"}}),
                ),
            ),
            attached(vec![
                va_patch(vec![FIN], true),
                publish(false, &[], Some("secret")),
                Step::MarkAttached,
            ]),
        ),
        case(
            "VolumeAttachment updated -> PV finalizer is added",
            Some(pv(json!({}))),
            Some(csi_node()),
            va(false, false, false, json!({})),
            attached(vec![
                Step::AddPvFinalizer {
                    pv: PV.into(),
                    patch: json!([
                        {"op": "test", "path": "/metadata/finalizers", "value": null},
                        {"op": "add", "path": "/metadata/finalizers", "value": [FIN]},
                    ]),
                },
                va_patch(vec![FIN], true),
                publish(false, &[], None),
                Step::MarkAttached,
            ]),
        ),
        case(
            "already attached volume -> ignored",
            Some(pv_with_finalizer(json!({}))),
            Some(csi_node()),
            va(true, true, true, json!({})),
            VaSync::Nothing,
        ),
        case(
            "PV with deletion timestamp -> ignored with error",
            Some(pv(deleted())),
            Some(csi_node()),
            va(false, true, true, json!({})),
            attached(vec![fail(
                "persistentvolume \"pv1\" is marked for deletion",
            )]),
        ),
        case(
            "unknown driver -> ignored",
            Some(pv_with_finalizer(json!({}))),
            Some(csi_node()),
            va(false, true, true, json!({"spec": {"attacher": "unknown"}})),
            VaSync::Nothing,
        ),
        case(
            "unknown PV -> error",
            None,
            Some(csi_node()),
            va(false, true, true, json!({})),
            attached(vec![fail("persistentvolume \"pv1\" not found")]),
        ),
        case(
            "neither PV nor InlineVolumeSpec reference-> error",
            Some(pv_with_finalizer(json!({}))),
            Some(csi_node()),
            va(
                false,
                true,
                true,
                json!({"spec": {"source": {"persistentVolumeName": null}}}),
            ),
            attached(vec![fail(
                "volumeattachment pv1-node1: neither inlineVolumeSpec nor persistentVolumeName in its source",
            )]),
        ),
        case(
            "both PV and InlineVolumeSpec reference-> error",
            Some(pv_with_finalizer(json!({}))),
            Some(csi_node()),
            va(false, true, true, {
                let mut e = inline(json!({}));
                merge(
                    &mut e,
                    json!({"spec": {"source": {"persistentVolumeName": PV}}}),
                );
                e
            }),
            attached(vec![fail(
                "volumeattachment pv1-node1: both inlineVolumeSpec and persistentVolumeName in its source",
            )]),
        ),
        case(
            "unknown node -> error",
            Some(pv_with_finalizer(json!({}))),
            None,
            va(false, true, true, json!({})),
            attached(vec![fail("node \"node1\" not found")]),
        ),
        case(
            "Node without CSINode -> error (a Node without the annotation)",
            Some(pv_with_finalizer(json!({}))),
            Some(node(None)),
            va(false, true, true, json!({})),
            attached(vec![fail(
                "node \"node1\" has no node id of driver \"csi/test\" in its csi.volume.kubernetes.io/nodeid annotation",
            )]),
        ),
        case(
            "CSINode exists without the driver -> error (the annotation without it)",
            Some(pv_with_finalizer(json!({}))),
            Some(node(Some(json!({"other.driver": "x"})))),
            va(false, true, true, json!({})),
            attached(vec![fail(
                "node \"node1\" has no node id of driver \"csi/test\" in its csi.volume.kubernetes.io/nodeid annotation",
            )]),
        ),
        case(
            "CSINode exists with the driver, Node without annotations -> success",
            Some(pv_with_finalizer(json!({}))),
            Some(csi_node()),
            va(false, true, false, json!({})),
            attached(vec![
                va_patch(vec![], true),
                publish(false, &[], None),
                Step::MarkAttached,
            ]),
        ),
        // rekube's: the PV finalizer goes on before a later failure, as upstream's
        // addPVFinalizer comes before getNodeID.
        case(
            "a PV without the finalizer on an unknown node -> finalizer added, then the error",
            Some(pv(json!({}))),
            None,
            va(false, true, true, json!({})),
            attached(vec![
                Step::AddPvFinalizer {
                    pv: PV.into(),
                    patch: json!([
                        {"op": "test", "path": "/metadata/finalizers", "value": null},
                        {"op": "add", "path": "/metadata/finalizers", "value": [FIN]},
                    ]),
                },
                fail("node \"node1\" not found"),
            ]),
        ),
        case(
            "another node's attachment -> ignored",
            Some(pv_with_finalizer(json!({}))),
            Some(csi_node()),
            va(false, false, false, json!({"spec": {"nodeName": "node2"}})),
            VaSync::Nothing,
        ),
        case(
            "a PV without a csi source -> error",
            Some(pv_with_finalizer(json!({"spec": {"csi": null,
                "hostPath": {"path": "/tmp"}}}))),
            Some(csi_node()),
            va(false, true, true, json!({})),
            attached(vec![fail("persistentvolume \"pv1\": not a csi volume")]),
        ),
        case(
            "ROX+RWO PV -> error (GetVolumeCapabilities)",
            Some(pv_with_finalizer(
                json!({"spec": {"accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}}),
            )),
            Some(csi_node()),
            va(false, true, true, json!({})),
            attached(vec![fail(
                "csi does not support ReadOnlyMany and ReadWriteOnce on the same persistentvolume",
            )]),
        ),
    ]);
}

#[test]
fn csi_handler_attach_without_publish_readonly() {
    let no_readonly = Attacher {
        publish_readonly: false,
        ..attacher()
    };
    let cases = vec![
        ("read-write PV -> attached as read-write", json!({})),
        (
            "read-only PV -> attached as read-write",
            json!({"spec": {"csi": {"readOnly": true}}}),
        ),
    ];
    for (name, extra) in cases {
        let got = sync_va(
            &no_readonly,
            &va(false, false, false, json!({})),
            Some(&pv_with_finalizer(extra)),
            Some(&csi_node()),
        );
        assert_eq!(
            got,
            VaSync::Attach(vec![
                va_patch(vec![FIN], true),
                publish(false, &[], None),
                Step::MarkAttached
            ]),
            "{name}"
        );
    }
}

#[test]
fn csi_handler_detach() {
    let detached = |steps: Vec<Step>| VaSync::Detach(steps);
    let deleted_va = |attached, finalizer, annotated, extra: Value| {
        let mut e = deleted();
        merge(&mut e, extra);
        va(attached, finalizer, annotated, e)
    };
    run(vec![
        case(
            "VolumeAttachment marked for deletion -> successful detach",
            Some(pv_with_finalizer(json!({}))),
            Some(csi_node()),
            deleted_va(true, true, true, json!({})),
            detached(vec![
                unpublish(NODE_ID, None),
                remove_va_finalizer(),
                Step::MarkDetached,
            ]),
        ),
        case(
            "VolumeAttachment with InlineVolumeSpec marked for deletion -> successful detach",
            None,
            Some(csi_node()),
            deleted_va(true, true, true, inline(json!({}))),
            detached(vec![
                unpublish(NODE_ID, None),
                remove_va_finalizer(),
                Step::MarkDetached,
            ]),
        ),
        case(
            "volume with secrets -> successful detach",
            Some(pv_with_finalizer(
                json!({"spec": {"csi": {"controllerPublishSecretRef":
                {"name": "secret", "namespace": "default"}}}}),
            )),
            Some(csi_node()),
            deleted_va(true, true, true, json!({})),
            detached(vec![
                unpublish(NODE_ID, Some("secret")),
                remove_va_finalizer(),
                Step::MarkDetached,
            ]),
        ),
        case(
            "already detached volume -> ignored",
            Some(pv_with_finalizer(json!({}))),
            Some(csi_node()),
            deleted_va(false, false, true, json!({})),
            VaSync::Nothing,
        ),
        case(
            "detach unknown PV -> error",
            None,
            Some(csi_node()),
            deleted_va(true, true, true, json!({})),
            detached(vec![fail("persistentvolume \"pv1\" not found")]),
        ),
        case(
            "detach VA with neither PV nor InlineCSIVolumeSource reference-> error",
            Some(pv_with_finalizer(json!({}))),
            Some(csi_node()),
            deleted_va(
                true,
                true,
                true,
                json!({"spec": {"source": {"persistentVolumeName": null}}}),
            ),
            detached(vec![fail(
                "volumeattachment pv1-node1: neither inlineVolumeSpec nor persistentVolumeName in its source",
            )]),
        ),
        case(
            "detach VA with both PV and InlineCSIVolumeSource reference-> error",
            Some(pv_with_finalizer(json!({}))),
            Some(csi_node()),
            deleted_va(true, true, true, {
                let mut e = inline(json!({}));
                merge(
                    &mut e,
                    json!({"spec": {"source": {"persistentVolumeName": PV}}}),
                );
                e
            }),
            detached(vec![fail(
                "volumeattachment pv1-node1: both inlineVolumeSpec and persistentVolumeName in its source",
            )]),
        ),
        case(
            "detach unknown node -> error",
            Some(pv_with_finalizer(json!({}))),
            None,
            deleted_va(true, true, false, json!({})),
            detached(vec![fail("node \"node1\" not found")]),
        ),
        case(
            "detach unknown node -> use annotation",
            Some(pv_with_finalizer(json!({}))),
            None,
            deleted_va(true, true, true, json!({})),
            detached(vec![
                unpublish(NODE_ID, None),
                remove_va_finalizer(),
                Step::MarkDetached,
            ]),
        ),
        // rekube's: a PV being deleted still detaches (only attaching refuses it).
        case(
            "detach with the PV marked for deletion -> successful detach",
            Some(pv_with_finalizer(deleted())),
            Some(csi_node()),
            deleted_va(true, true, true, json!({})),
            detached(vec![
                unpublish(NODE_ID, None),
                remove_va_finalizer(),
                Step::MarkDetached,
            ]),
        ),
    ]);
}

#[test]
fn trivial_handler() {
    let trivial = Attacher {
        publish_unpublish: false,
        ..attacher()
    };
    for (name, va, want) in [
        (
            "add -> successful write",
            va(false, false, false, json!({})),
            VaSync::Attach(vec![Step::MarkAttached]),
        ),
        (
            "update -> successful write",
            va(
                false,
                false,
                false,
                json!({"metadata": {"resourceVersion": "2"}}),
            ),
            VaSync::Attach(vec![Step::MarkAttached]),
        ),
        // rekube's: attached already, nothing to write.
        (
            "attached already -> nothing",
            va(true, false, false, json!({})),
            VaSync::Nothing,
        ),
        (
            "unknown driver -> controller ignores",
            va(
                false,
                false,
                false,
                json!({"spec": {"attacher": "unknown"}}),
            ),
            VaSync::Nothing,
        ),
    ] {
        // No PV, no Node: the trivial handler reads neither.
        assert_eq!(sync_va(&trivial, &va, None, None), want, "{name}");
    }
}

#[test]
fn pv_finalizers() {
    let remove = |index: usize| {
        let path = format!("/metadata/finalizers/{index}");
        Some(json!([
            {"op": "test", "path": path, "value": FIN},
            {"op": "remove", "path": path},
        ]))
    };
    let other_va = va(false, false, false, json!({}));
    let cases: Vec<(&str, PersistentVolume, Vec<VolumeAttachment>, Option<Value>)> = vec![
        (
            "VA deleted -> PV finalizer removed",
            pv_with_finalizer(deleted()),
            vec![],
            remove(0),
        ),
        (
            "VA deleted -> PV finalizer not removed",
            pv(deleted()),
            vec![],
            None,
        ),
        (
            "PV updated -> PV finalizer removed",
            pv_with_finalizer(deleted()),
            vec![],
            remove(0),
        ),
        (
            "PV finalizer removed -> other finalizers preserved",
            pv(json!({"metadata": {"deletionTimestamp": DELETED,
                "finalizers": ["foo/bar", FIN, "bar/baz"]}})),
            vec![],
            remove(1),
        ),
        ("no PV finalizer -> ignored", pv(deleted()), vec![], None),
        (
            "no deletion timestamp -> ignored",
            pv_with_finalizer(json!({})),
            vec![],
            None,
        ),
        (
            "VA exists -> ignored",
            pv_with_finalizer(deleted()),
            vec![other_va.clone()],
            None,
        ),
        (
            "PV created by other CSI drivers or in-tree provisioners -> ignored",
            pv(json!({"spec": {"csi": {"driver": "dummy"}}})),
            vec![],
            None,
        ),
        (
            "an attachment of another volume does not hold the finalizer",
            pv_with_finalizer(deleted()),
            vec![va(
                false,
                false,
                false,
                json!({"spec": {"source": {"persistentVolumeName": "pv2"}}}),
            )],
            remove(0),
        ),
    ];
    for (name, pv, vas, want) in cases {
        assert_eq!(sync_pv(&attacher(), &pv, vas.iter()), want, "{name}");
    }
}

#[test]
fn should_enqueue_va_change_cases() {
    let va1 = va(false, false, false, json!({"spec": {"attacher": "1"}}));
    let error = |message: &str| json!({"message": message, "time": DELETED});
    let with = |extra: Value| {
        let mut v = serde_json::to_value(&va1).unwrap();
        merge(&mut v, extra);
        serde_json::from_value::<VolumeAttachment>(v).unwrap()
    };
    let va1_attach_error = with(json!({"status": {"attachError": error("mock error1")}}));
    let va1_detach_error = with(json!({"status": {"detachError": error("mock error1")}}));
    let cases = vec![
        ("periodic sync", va1.clone(), va1.clone(), true),
        (
            "changed spec",
            va1.clone(),
            with(json!({"metadata": {"resourceVersion": "2"}, "spec": {"attacher": "2"}})),
            true,
        ),
        (
            "changed metadata",
            va1.clone(),
            with(json!({"metadata": {"resourceVersion": "2", "annotations": {"foo": "bar"}}})),
            true,
        ),
        (
            "added attachError",
            va1.clone(),
            with(json!({"metadata": {"resourceVersion": "2"},
                "status": {"attachError": error("mock error2")}})),
            false,
        ),
        (
            "added detachError",
            va1.clone(),
            with(json!({"metadata": {"resourceVersion": "2"},
                "status": {"detachError": error("mock error2")}})),
            false,
        ),
        (
            "changed attachError",
            va1_attach_error,
            with(json!({"metadata": {"resourceVersion": "2"},
                "status": {"attachError": error("mock error2")}})),
            false,
        ),
        (
            "changed detachError",
            va1_detach_error,
            with(json!({"metadata": {"resourceVersion": "2"},
                "status": {"detachError": error("mock error2")}})),
            false,
        ),
        (
            "appended managedFields",
            with(json!({"status": {"attachError": error("mock error1")}})),
            with(
                json!({"metadata": {"resourceVersion": "2", "managedFields": [
                {"apiVersion": "rekube.io/v1", "manager": "rekube-csi", "operation": "Update",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:attached": {}}}}]},
                "status": {"attachError": error("mock error1")}}),
            ),
            false,
        ),
        // rekube's: the error cleared along with attached set is a change worth a sync.
        (
            "attached, its attachError cleared",
            with(json!({"status": {"attachError": error("mock error1")}})),
            with(json!({"metadata": {"resourceVersion": "2"}, "status": {"attached": true}})),
            true,
        ),
    ];
    for (name, old, new, want) in cases {
        assert_eq!(should_enqueue_va_change(&old, &new), want, "{name}");
    }
}

#[test]
fn get_volume_capabilities() {
    let mount = |fs: &str, mode: Mode, flags: &[&str]| VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: flags.iter().map(|f| f.to_string()).collect(),
            ..Default::default()
        })),
    };
    let block = |mode: Mode| VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(AccessType::Block(BlockVolume {})),
    };
    type Want = Option<VolumeCapability>;
    // (name, volumeMode, fsType, modes, mountOptions, SINGLE_NODE_MULTI_WRITER, want)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        &'a str,
        &'a [&'a str],
        &'a [&'a str],
        bool,
        Want,
    );
    let cases: Vec<Case> = vec![
        (
            "RWX",
            Some("Filesystem"),
            "",
            &["ReadWriteMany"],
            &[],
            false,
            Some(mount("ext4", Mode::MultiNodeMultiWriter, &[])),
        ),
        (
            "Block RWX",
            Some("Block"),
            "",
            &["ReadWriteMany"],
            &[],
            false,
            Some(block(Mode::MultiNodeMultiWriter)),
        ),
        (
            "RWX + specified fsType",
            None,
            "ext3",
            &["ReadWriteMany"],
            &[],
            false,
            Some(mount("ext3", Mode::MultiNodeMultiWriter, &[])),
        ),
        (
            "RWO",
            None,
            "",
            &["ReadWriteOnce"],
            &[],
            false,
            Some(mount("ext4", Mode::SingleNodeWriter, &[])),
        ),
        (
            "Block RWO",
            Some("Block"),
            "",
            &["ReadWriteOnce"],
            &[],
            false,
            Some(block(Mode::SingleNodeWriter)),
        ),
        (
            "ROX",
            None,
            "",
            &["ReadOnlyMany"],
            &[],
            false,
            Some(mount("ext4", Mode::MultiNodeReaderOnly, &[])),
        ),
        (
            "RWX + anything",
            None,
            "",
            &["ReadWriteMany", "ReadOnlyMany", "ReadWriteOnce"],
            &[],
            false,
            Some(mount("ext4", Mode::MultiNodeMultiWriter, &[])),
        ),
        (
            "mount options",
            None,
            "",
            &["ReadWriteMany"],
            &["first", "second"],
            false,
            Some(mount(
                "ext4",
                Mode::MultiNodeMultiWriter,
                &["first", "second"],
            )),
        ),
        (
            "ROX+RWO",
            None,
            "",
            &["ReadWriteOnce", "ReadOnlyMany"],
            &[],
            false,
            None,
        ),
        ("nothing", None, "", &[], &[], false, None),
        (
            "RWX with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            &["ReadWriteMany"],
            &[],
            true,
            Some(mount("ext4", Mode::MultiNodeMultiWriter, &[])),
        ),
        (
            "ROX + RWO with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            &["ReadOnlyMany", "ReadWriteOnce"],
            &[],
            true,
            None,
        ),
        (
            "ROX + RWOP with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            &["ReadOnlyMany", "ReadWriteOncePod"],
            &[],
            true,
            None,
        ),
        (
            "RWO + RWOP with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            &["ReadWriteOnce", "ReadWriteOncePod"],
            &[],
            true,
            None,
        ),
        (
            "ROX with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            &["ReadOnlyMany"],
            &[],
            true,
            Some(mount("ext4", Mode::MultiNodeReaderOnly, &[])),
        ),
        (
            "RWO with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            &["ReadWriteOnce"],
            &[],
            true,
            Some(mount("ext4", Mode::SingleNodeMultiWriter, &[])),
        ),
        (
            "RWOP with SINGLE_NODE_MULTI_WRITER capable driver",
            Some("Filesystem"),
            "",
            &["ReadWriteOncePod"],
            &[],
            true,
            Some(mount("ext4", Mode::SingleNodeSingleWriter, &[])),
        ),
        (
            "nothing with SINGLE_NODE_MULTI_WRITER capable driver",
            None,
            "",
            &[],
            &[],
            true,
            None,
        ),
    ];
    for (name, volume_mode, fs_type, modes, options, snmw, want) in cases {
        let spec: PersistentVolumeSpec = serde_json::from_value(json!({
            "volumeMode": volume_mode,
            "accessModes": modes,
            "mountOptions": options,
            "csi": {"driver": DRIVER, "volumeHandle": HANDLE, "fsType": fs_type},
        }))
        .unwrap();
        let got = volume_capability(&spec, snmw, "ext4");
        match want {
            Some(want) => assert_eq!(got, Ok(want), "{name}"),
            None => assert!(got.is_err(), "{name}: {got:?}"),
        }
    }
}

#[test]
fn add_finalizer_patch_cases() {
    let fin = "external-attacher/ebs-csi-aws-com";
    let cases: Vec<(&str, Option<Vec<String>>, &str)> = vec![
        (
            "add to nil finalizers",
            None,
            r#"[{"op":"test","path":"/metadata/finalizers","value":null},{"op":"add","path":"/metadata/finalizers","value":["external-attacher/ebs-csi-aws-com"]}]"#,
        ),
        (
            "add to empty finalizers",
            Some(vec![]),
            r#"[{"op":"test","path":"/metadata/finalizers","value":[]},{"op":"replace","path":"/metadata/finalizers","value":["external-attacher/ebs-csi-aws-com"]}]"#,
        ),
        (
            "add to existing finalizers preserves others",
            Some(vec![
                "external-provisioner.volume.kubernetes.io/finalizer".into(),
                "kubernetes.io/pv-protection".into(),
            ]),
            r#"[{"op":"add","path":"/metadata/finalizers/-","value":"external-attacher/ebs-csi-aws-com"}]"#,
        ),
    ];
    for (name, existing, want) in cases {
        let got = add_finalizer_patch(existing.as_ref(), fin);
        assert_eq!(got, serde_json::from_str::<Value>(want).unwrap(), "{name}");
        // A JSON Patch document kube can send.
        serde_json::from_value::<json_patch::Patch>(got).unwrap();
    }
}

#[test]
fn remove_finalizer_patch_cases() {
    let fin = "external-attacher/ebs-csi-aws-com";
    let patch = |i: usize| {
        format!(
            r#"[{{"op":"test","path":"/metadata/finalizers/{i}","value":"external-attacher/ebs-csi-aws-com"}},{{"op":"remove","path":"/metadata/finalizers/{i}"}}]"#
        )
    };
    let list = |l: &[&str]| Some(l.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    type Case<'a> = (&'a str, Option<Vec<String>>, Option<String>);
    let cases: Vec<Case> = vec![
        ("remove sole finalizer", list(&[fin]), Some(patch(0))),
        (
            "remove first of many",
            list(&[
                fin,
                "kubernetes.io/pv-protection",
                "external-provisioner.volume.kubernetes.io/finalizer",
            ]),
            Some(patch(0)),
        ),
        (
            "remove middle finalizer leaves others untouched",
            list(&[
                "external-provisioner.volume.kubernetes.io/finalizer",
                fin,
                "kubernetes.io/pv-protection",
            ]),
            Some(patch(1)),
        ),
        (
            "remove last finalizer",
            list(&["kubernetes.io/pv-protection", fin]),
            Some(patch(1)),
        ),
        (
            "finalizer not found",
            list(&["kubernetes.io/pv-protection"]),
            None,
        ),
        ("nil finalizers", None, None),
    ];
    for (name, existing, want) in cases {
        let got = remove_finalizer_patch(existing.as_ref(), fin);
        let want = want.map(|w| serde_json::from_str::<Value>(&w).unwrap());
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn status_patches() {
    let now: Time = serde_json::from_value(json!(DELETED)).unwrap();
    let fresh: VolumeAttachment = serde_json::from_value(json!({
        "metadata": {"name": VA},
        "spec": {"attacher": DRIVER, "nodeName": NODE, "source": {"persistentVolumeName": PV}},
    }))
    .unwrap();
    // A rekube VolumeAttachment may have no status yet: `attached` (required) goes along.
    assert_eq!(
        attach_error_patch(&fresh, "rpc error: code = NotFound desc = x", &now),
        json!({"status": {"attached": false, "attachError":
            {"message": "rpc error: code = NotFound desc = x", "time": DELETED}}})
    );
    assert_eq!(
        detach_error_patch(&va(true, true, true, json!({})), "boom", &now),
        json!({"status": {"attached": true, "detachError": {"message": "boom", "time": DELETED}}})
    );
    // markAsAttached: the publish context, stale keys removed, the error cleared.
    let old = va(
        true,
        true,
        true,
        json!({"status": {"attachmentMetadata": {"devicePath": "/dev/loop1", "old": "x"}}}),
    );
    let context = HashMap::from([("devicePath".to_string(), "/dev/loop2".to_string())]);
    assert_eq!(
        mark_attached_patch(&old, &context),
        json!({"status": {"attached": true, "attachError": null,
            "attachmentMetadata": {"devicePath": "/dev/loop2", "old": null}}})
    );
    assert_eq!(
        mark_attached_patch(&fresh, &HashMap::new()),
        json!({"status": {"attached": true, "attachError": null, "attachmentMetadata": null}})
    );
    assert_eq!(
        mark_detached_patch(),
        json!({"status": {"attached": false, "detachError": null, "attachmentMetadata": null}})
    );
}

#[test]
fn node_ids_come_from_the_node_annotation() {
    assert_eq!(
        node_id_from_node(Some(&csi_node()), NODE, DRIVER),
        Ok(NODE_ID.to_string())
    );
    let unreadable: Node = serde_json::from_value(json!({"metadata": {"name": NODE,
        "annotations": {NODE_ID_ANNOTATION: "{not json"}}}))
    .unwrap();
    assert!(node_id_from_node(Some(&unreadable), NODE, DRIVER).is_err());
    assert_eq!(
        node_id_from_node(Some(&node(Some(json!({DRIVER: ""})))), NODE, DRIVER),
        Err("node \"node1\" has no node id of driver \"csi/test\" in its csi.volume.kubernetes.io/nodeid annotation".into())
    );
}
