//! Table tests of the provisioner's decisions, ported from external-provisioner v5.3.0's
//! pkg/controller/controller_test.go where the case applies to rekube-csi's distributed
//! mode (the case names are upstream's), plus the cases distributed mode adds.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeStatus, TypedLocalObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use serde_json::json;
use tonic::Code;

use super::*;

const DRIVER: &str = "csi.rekube.io";
const NODE: &str = "foo";
const UID: &str = "testid";
const REQUESTED: i64 = 100;

fn claim(extra: serde_json::Value) -> PersistentVolumeClaim {
    let mut c = json!({
        "metadata": {"name": "test-pvc", "namespace": "default", "uid": UID,
            "resourceVersion": "7",
            "annotations": {ANN_STORAGE_PROVISIONER: DRIVER, ANN_SELECTED_NODE: NODE}},
        "spec": {"storageClassName": "fake", "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": REQUESTED.to_string()}}},
    });
    merge(&mut c, extra);
    serde_json::from_value(c).unwrap()
}

fn class(extra: serde_json::Value) -> StorageClass {
    let mut c = json!({"metadata": {"name": "fake"}, "provisioner": DRIVER,
        "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer",
        "parameters": {"fstype": "ext3"}});
    merge(&mut c, extra);
    serde_json::from_value(c).unwrap()
}

fn node() -> Node {
    serde_json::from_value(json!({"metadata": {"name": NODE,
        "labels": {TOPOLOGY_KEY: NODE, "kubernetes.io/hostname": NODE}}}))
    .unwrap()
}

/// JSON merge patch (null deletes).
fn merge(into: &mut serde_json::Value, patch: serde_json::Value) {
    match (into, patch) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                if v.is_null() {
                    a.remove(&k);
                } else {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        (a, b) => *a = b,
    }
}

fn request(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    snmw: bool,
) -> Result<(CreateVolumeRequest, String), ProvisionError> {
    create_volume_request(claim, class, &node(), snmw)
}

fn modes(r: &CreateVolumeRequest) -> Vec<Mode> {
    r.volume_capabilities
        .iter()
        .map(|c| c.access_mode.unwrap().mode())
        .collect()
}

fn response(capacity: i64) -> Volume {
    Volume {
        capacity_bytes: capacity,
        volume_id: "test-volume-id".into(),
        volume_context: HashMap::from([("type".to_string(), "local-disk".to_string())]),
        accessible_topology: vec![crate::topology::node_topology(NODE)],
        ..Default::default()
    }
}

fn pv_of(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    volume: &Volume,
) -> Result<PersistentVolume, ProvisionError> {
    let (req, fs_type) = request(claim, class, true)?;
    let labels = BTreeMap::from([("scope".to_string(), "test".to_string())]);
    persistent_volume(
        claim,
        class,
        &req.name,
        Some(volume),
        &VolumeContext {
            driver_name: DRIVER,
            identity: "1-2-csi.rekube.io",
            fs_type: &fs_type,
            labels: &labels,
            required_bytes: req.capacity_range.unwrap().required_bytes,
        },
    )
}

// TestProvision / TestShouldProvision (provisionTestcases): "normal provision".
#[test]
fn normal_provision() {
    let (c, sc) = (claim(json!({})), class(json!({})));
    let (req, fs_type) = request(&c, &sc, false).unwrap();
    assert_eq!(req.name, "pvc-testid");
    assert_eq!(req.capacity_range.unwrap().required_bytes, REQUESTED);
    assert_eq!(fs_type, "ext3");
    // The deprecated "fstype" key is not stripped (upstream keeps unprefixed keys).
    assert_eq!(
        req.parameters,
        HashMap::from([("fstype".to_string(), "ext3".to_string())])
    );
    let pv = pv_of(&c, &sc, &response(REQUESTED)).unwrap();
    let spec = pv.spec.clone().unwrap();
    assert_eq!(pv.metadata.name.as_deref(), Some("pvc-testid"));
    assert_eq!(
        spec.persistent_volume_reclaim_policy.as_deref(),
        Some("Delete")
    );
    assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
    assert_eq!(spec.capacity.unwrap()["storage"].0, "100");
    let csi = spec.csi.unwrap();
    assert_eq!(csi.driver, DRIVER);
    assert_eq!(csi.volume_handle, "test-volume-id");
    assert_eq!(csi.fs_type.as_deref(), Some("ext3"));
    assert_eq!(
        csi.volume_attributes.unwrap(),
        BTreeMap::from([
            (
                PROVISIONER_ID_KEY.to_string(),
                "1-2-csi.rekube.io".to_string()
            ),
            ("type".to_string(), "local-disk".to_string()),
        ])
    );
    assert_eq!(spec.storage_class_name.as_deref(), Some("fake"));
    let claim_ref = spec.claim_ref.unwrap();
    assert_eq!(
        (
            claim_ref.kind.as_deref(),
            claim_ref.namespace.as_deref(),
            claim_ref.name.as_deref(),
            claim_ref.uid.as_deref(),
            claim_ref.api_version.as_deref(),
        ),
        (
            Some("PersistentVolumeClaim"),
            Some("default"),
            Some("test-pvc"),
            Some(UID),
            Some("rekube.io/v1")
        )
    );
    let annotations = pv.metadata.annotations.unwrap();
    assert_eq!(annotations[ANN_DYNAMICALLY_PROVISIONED], DRIVER);
    assert_eq!(annotations[ANN_DELETION_SECRET_NAME], "");
    assert_eq!(pv.metadata.finalizers, Some(vec![FINALIZER_PV.to_string()]));
    assert_eq!(pv.metadata.labels.unwrap()["scope"], "test");
}

// "multiple fsType provision"
#[test]
fn multiple_fs_type_provision() {
    let sc = class(json!({"parameters": {"fstype": "ext3", PREFIXED_FS_TYPE_KEY: "ext4"}}));
    assert_eq!(
        request(&claim(json!({})), &sc, false),
        Err(ProvisionError::FsTypeTwice)
    );
}

// "provision with prefixed FS Type key": stripped from the driver's parameters.
#[test]
fn provision_with_prefixed_fs_type_key() {
    let sc = class(json!({"parameters": {"fstype": null, PREFIXED_FS_TYPE_KEY: "ext3"}}));
    let (req, fs_type) = request(&claim(json!({})), &sc, false).unwrap();
    assert_eq!(fs_type, "ext3");
    assert!(req.parameters.is_empty());
    match &req.volume_capabilities[0].access_type {
        Some(AccessType::Mount(m)) => assert_eq!(m.fs_type, "ext3"),
        other => panic!("{other:?}"),
    }
}

// rekube's xfs class: `csi.storage.k8s.io/fstype: xfs` is every mount capability's
// fs_type and the PV's fsType, and not among the driver's parameters (its `type` is).
#[test]
fn an_xfs_class_asks_xfs_of_the_driver_and_records_it_on_the_pv() {
    let sc = class(json!({"parameters": {"fstype": null, "type": "local-disk",
        PREFIXED_FS_TYPE_KEY: "xfs"}}));
    let c = claim(json!({"spec": {"accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}}));
    let (req, fs_type) = request(&c, &sc, true).unwrap();
    assert_eq!(fs_type, "xfs");
    assert_eq!(
        req.parameters,
        HashMap::from([("type".to_string(), "local-disk".to_string())])
    );
    assert_eq!(req.volume_capabilities.len(), 2);
    for cap in &req.volume_capabilities {
        match &cap.access_type {
            Some(AccessType::Mount(m)) => assert_eq!(m.fs_type, "xfs"),
            other => panic!("{other:?}"),
        }
    }
    let pv = pv_of(&c, &sc, &response(REQUESTED)).unwrap();
    assert_eq!(
        pv.spec.unwrap().csi.unwrap().fs_type.as_deref(),
        Some("xfs")
    );
}

// "provision with access mode multi node multi writer", "... multi node multi readonly
// with sidecar arg false", "... single node writer", "... single node writer and single
// node multi writer capability", "... single node single writer and single node multi
// writer capability", "provision with multiple access modes".
#[test]
fn provision_with_access_modes() {
    use Mode::*;
    let cases: &[(&[&str], bool, &[Mode])] = &[
        (&["ReadWriteMany"], false, &[MultiNodeMultiWriter]),
        (&["ReadOnlyMany"], false, &[MultiNodeReaderOnly]),
        (&["ReadWriteOnce"], false, &[SingleNodeWriter]),
        (&["ReadWriteOnce"], true, &[SingleNodeMultiWriter]),
        (&["ReadWriteOncePod"], true, &[SingleNodeSingleWriter]),
        (&["ReadWriteOncePod"], false, &[SingleNodeWriter]),
        (
            &["ReadWriteMany", "ReadOnlyMany"],
            false,
            &[MultiNodeMultiWriter, MultiNodeReaderOnly],
        ),
    ];
    for (access, snmw, want) in cases {
        let c = claim(json!({"spec": {"accessModes": access}}));
        let (req, _) = request(&c, &class(json!({})), *snmw).unwrap();
        assert_eq!(modes(&req), *want, "{access:?} snmw={snmw}");
        let pv = pv_of(&c, &class(json!({})), &response(REQUESTED)).unwrap();
        // The PV is never read-only (upstream's --controller-publish-readonly is off).
        assert_eq!(pv.spec.unwrap().csi.unwrap().read_only, None);
    }
    let c = claim(json!({"spec": {"accessModes": ["ReadWriteOncePod", "ReadWriteOnce"]}}));
    assert!(matches!(
        request(&c, &class(json!({})), true),
        Err(ProvisionError::ReadWriteOncePodWithOthers(_))
    ));
}

// "provision with volume mode(Filesystem)", "provision with volume mode(Block)".
#[test]
fn provision_with_volume_mode() {
    let fs = claim(json!({"spec": {"volumeMode": "Filesystem"}}));
    let (req, _) = request(&fs, &class(json!({})), true).unwrap();
    assert!(matches!(
        req.volume_capabilities[0].access_type,
        Some(AccessType::Mount(_))
    ));
    let pv = pv_of(&fs, &class(json!({})), &response(REQUESTED)).unwrap();
    assert_eq!(pv.spec.unwrap().volume_mode.as_deref(), Some("Filesystem"));

    let block = claim(json!({"spec": {"volumeMode": "Block"}}));
    let (req, _) = request(&block, &class(json!({})), true).unwrap();
    assert!(matches!(
        req.volume_capabilities[0].access_type,
        Some(AccessType::Block(_))
    ));
    let spec = pv_of(&block, &class(json!({})), &response(REQUESTED))
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(spec.volume_mode.as_deref(), Some("Block"));
    assert_eq!(spec.csi.unwrap().fs_type, None, "no fsType on a block PV");
}

// "fail not nil selector"
#[test]
fn fail_not_nil_selector() {
    let mut c = claim(json!({}));
    c.spec.as_mut().unwrap().selector = Some(LabelSelector::default());
    assert_eq!(
        request(&c, &class(json!({})), true),
        Err(ProvisionError::Selector)
    );
}

// "fail to make volume name"
#[test]
fn fail_to_make_volume_name() {
    let c = claim(json!({"metadata": {"uid": null}}));
    assert_eq!(
        request(&c, &class(json!({})), true),
        Err(ProvisionError::MissingUid)
    );
}

// "fail vol with less capacity"; "provision with size 0" (the claim's size is used).
#[test]
fn response_capacity() {
    let (c, sc) = (claim(json!({})), class(json!({})));
    assert_eq!(
        pv_of(&c, &sc, &response(REQUESTED - 1)),
        Err(ProvisionError::CapacityTooSmall(REQUESTED - 1, REQUESTED))
    );
    let pv = pv_of(&c, &sc, &response(0)).unwrap();
    assert_eq!(pv.spec.unwrap().capacity.unwrap()["storage"].0, "100");
    let pv = pv_of(&c, &sc, &response(64 << 20)).unwrap();
    assert_eq!(pv.spec.unwrap().capacity.unwrap()["storage"].0, "64Mi");
}

// "provision with mount options"
#[test]
fn provision_with_mount_options() {
    let sc = class(json!({"mountOptions": ["foo=bar", "baz=qux"]}));
    let c = claim(json!({}));
    let (req, _) = request(&c, &sc, true).unwrap();
    match &req.volume_capabilities[0].access_type {
        Some(AccessType::Mount(m)) => assert_eq!(m.mount_flags, ["foo=bar", "baz=qux"]),
        other => panic!("{other:?}"),
    }
    let pv = pv_of(&c, &sc, &response(REQUESTED)).unwrap();
    assert_eq!(
        pv.spec.unwrap().mount_options,
        Some(vec!["foo=bar".to_string(), "baz=qux".to_string()])
    );
}

// "provision with any volume data source": upstream leaves it to a populator; rekube-csi
// has neither clones nor snapshots nor populators, so it is an error the event shows.
#[test]
fn provision_with_any_volume_data_source() {
    let mut c = claim(json!({}));
    c.spec.as_mut().unwrap().data_source = Some(TypedLocalObjectReference {
        api_group: Some("my.example.io".into()),
        kind: "MyResource".into(),
        name: "resource1".into(),
    });
    assert_eq!(
        request(&c, &class(json!({})), true),
        Err(ProvisionError::DataSource(
            "default/test-pvc".into(),
            "MyResource".into()
        ))
    );
}

// "distributed, right node selected", "distributed, no node selected", "distributed,
// wrong node selected"; the lib's shouldProvision and "PersistentVolume already exists".
#[test]
fn should_provision_table() {
    let wffc = class(json!({}));
    let immediate = class(json!({"volumeBindingMode": "Immediate"}));
    let provision = ClaimDecision::Provision {
        pv_name: "pvc-testid".into(),
    };
    let cases: Vec<(
        &str,
        PersistentVolumeClaim,
        Option<&StorageClass>,
        bool,
        ClaimDecision,
    )> = vec![
        (
            "distributed, right node selected",
            claim(json!({})),
            Some(&wffc),
            false,
            provision.clone(),
        ),
        (
            "distributed, no node selected",
            claim(json!({"metadata": {"annotations": {ANN_SELECTED_NODE: null}}})),
            Some(&wffc),
            false,
            ClaimDecision::Ignore,
        ),
        (
            "distributed, wrong node selected",
            claim(json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "bar"}}})),
            Some(&wffc),
            false,
            ClaimDecision::Ignore,
        ),
        (
            "distributed immediate, no node selected (rekube: not provisioned, event)",
            claim(json!({"metadata": {"annotations": {ANN_SELECTED_NODE: null}}})),
            Some(&immediate),
            false,
            ClaimDecision::NeedsWaitForFirstConsumer,
        ),
        (
            "distributed immediate, right node selected",
            claim(json!({})),
            Some(&immediate),
            false,
            provision.clone(),
        ),
        (
            "no class, no node",
            claim(json!({"metadata": {"annotations": {ANN_SELECTED_NODE: null}}})),
            None,
            false,
            ClaimDecision::Ignore,
        ),
        (
            "already provisioned",
            claim(json!({})),
            Some(&wffc),
            true,
            ClaimDecision::AlreadyProvisioned,
        ),
        (
            "another provisioner",
            claim(json!({"metadata": {"annotations": {ANN_STORAGE_PROVISIONER: "other.csi.io"}}})),
            Some(&wffc),
            false,
            ClaimDecision::Ignore,
        ),
        (
            "beta provisioner annotation",
            claim(
                json!({"metadata": {"annotations": {ANN_STORAGE_PROVISIONER: null,
                ANN_BETA_STORAGE_PROVISIONER: DRIVER}}}),
            ),
            Some(&wffc),
            false,
            provision.clone(),
        ),
        (
            "no provisioner annotation (the PV controller has not handed it over)",
            claim(json!({"metadata": {"annotations": {ANN_STORAGE_PROVISIONER: null}}})),
            Some(&wffc),
            false,
            ClaimDecision::Ignore,
        ),
        (
            "bound",
            claim(json!({"spec": {"volumeName": "pv"}})),
            Some(&wffc),
            false,
            ClaimDecision::Ignore,
        ),
    ];
    for (name, c, sc, exists, want) in cases {
        let got = should_provision(&c, sc, DRIVER, NODE, |pv| {
            assert_eq!(pv, "pvc-testid");
            exists
        });
        assert_eq!(got, want, "{name}");
    }
    let mut deleting = claim(json!({}));
    deleting.metadata.deletion_timestamp = Some(Time(Default::default()));
    assert_eq!(
        should_provision(&deleting, Some(&wffc), DRIVER, NODE, |_| false),
        ClaimDecision::Ignore
    );
}

#[test]
fn accessibility_requirements_are_the_selected_nodes_topology() {
    let (req, _) = request(&claim(json!({})), &class(json!({})), true).unwrap();
    let want = crate::topology::node_topology(NODE);
    let requirement = req.accessibility_requirements.unwrap();
    assert_eq!(requirement.requisite, vec![want.clone()]);
    assert_eq!(requirement.preferred, vec![want]);
    let bare: Node = serde_json::from_value(json!({"metadata": {"name": NODE}})).unwrap();
    assert_eq!(
        create_volume_request(&claim(json!({})), &class(json!({})), &bare, true),
        Err(ProvisionError::NodeTopology(NODE.into()))
    );
}

// TestFSTypeProvision: "Other fstype(ex:'xfs') set in SC", "fstype not set/Nil in SC and
// defaultFSType arg unset for provisioner", "fstype set in SC and defaultFSType arg unset
// for provisioner" (rekube has no --default-fstype: the driver's default is ext4).
#[test]
fn fs_type_provision() {
    for (parameters, want) in [
        (json!({"fstype": "xfs"}), Some("xfs")),
        (json!({"fstype": null}), None),
        (
            json!({"fstype": null, PREFIXED_FS_TYPE_KEY: "xfs"}),
            Some("xfs"),
        ),
    ] {
        let sc = class(json!({ "parameters": parameters }));
        let pv = pv_of(&claim(json!({})), &sc, &response(REQUESTED)).unwrap();
        assert_eq!(pv.spec.unwrap().csi.unwrap().fs_type.as_deref(), want);
    }
}

// TestStripPrefixedCSIParams (all cases, external-provisioner v6.4.0: its "all known
// prefixed" case names every key, the controller-modify secrets' among them).
#[test]
fn strip_prefixed_csi_params() {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let all_known: Vec<(&str, &str)> = [
        PREFIXED_FS_TYPE_KEY,
        "csi.storage.k8s.io/provisioner-secret-name",
        "csi.storage.k8s.io/provisioner-secret-namespace",
        "csi.storage.k8s.io/controller-publish-secret-name",
        "csi.storage.k8s.io/controller-publish-secret-namespace",
        "csi.storage.k8s.io/node-stage-secret-name",
        "csi.storage.k8s.io/node-stage-secret-namespace",
        "csi.storage.k8s.io/node-publish-secret-name",
        "csi.storage.k8s.io/node-publish-secret-namespace",
        "csi.storage.k8s.io/controller-expand-secret-name",
        "csi.storage.k8s.io/controller-expand-secret-namespace",
        "csi.storage.k8s.io/secret-name",
        "csi.storage.k8s.io/secret-namespace",
        "csi.storage.k8s.io/node-expand-secret-name",
        "csi.storage.k8s.io/node-expand-secret-namespace",
        "csi.storage.k8s.io/controller-modify-secret-name",
        "csi.storage.k8s.io/controller-modify-secret-namespace",
    ]
    .iter()
    .map(|k| (*k, "csiBar"))
    .collect();
    assert_eq!(
        all_known.len(),
        KNOWN_PREFIXED_KEYS.len(),
        "upstream's 17 keys"
    );
    let deprecated = [
        ("fstype", "csiBar"),
        ("csiProvisionerSecretName", "csiBar"),
        ("csiProvisionerSecretNamespace", "csiBar"),
        ("csiControllerPublishSecretName", "csiBar"),
        ("csiControllerPublishSecretNamespace", "csiBar"),
        ("csiNodeStageSecretName", "csiBar"),
        ("csiNodeStageSecretNamespace", "csiBar"),
        ("csiNodePublishSecretName", "csiBar"),
        ("csiNodePublishSecretNamespace", "csiBar"),
    ];
    type Params = BTreeMap<String, String>;
    let cases: Vec<(&str, Params, Option<Params>)> = vec![
        (
            "no prefix",
            map(&[("csiFoo", "bar"), ("bim", "baz")]),
            Some(map(&[("csiFoo", "bar"), ("bim", "baz")])),
        ),
        (
            "one prefixed",
            map(&[
                ("csi.storage.k8s.io/controller-publish-secret-name", "bar"),
                ("bim", "baz"),
            ]),
            Some(map(&[("bim", "baz")])),
        ),
        (
            "prefix in value",
            map(&[("foo", PREFIXED_FS_TYPE_KEY), ("bim", "baz")]),
            Some(map(&[("foo", PREFIXED_FS_TYPE_KEY), ("bim", "baz")])),
        ),
        ("all known prefixed", map(&all_known), Some(map(&[]))),
        (
            "all known deprecated params not stripped",
            map(&deprecated),
            Some(map(&deprecated)),
        ),
        (
            "unknown prefixed var",
            map(&[("csi.storage.k8s.io/bim", "baz")]),
            None,
        ),
        ("empty", map(&[]), Some(map(&[]))),
    ];
    for (name, params, want) in cases {
        let got = remove_prefixed_parameters(&params)
            .ok()
            .map(|m| m.into_iter().collect::<BTreeMap<_, _>>());
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(
        remove_prefixed_parameters(&map(&[("csi.storage.k8s.io/bim", "baz")]))
            .unwrap_err()
            .to_string(),
        "found unknown parameter key \"csi.storage.k8s.io/bim\" with reserved namespace csi.storage.k8s.io/"
    );
}

// TestBytesToQuantity (all cases).
#[test]
fn bytes_to_quantity_table() {
    for (name, bytes, want) in [
        (
            "Gibibyte that cannot be put into any nice format without loss precision",
            (5.56 * 1024.0 * 1024.0 * 1024.0) as i64,
            "5970004541",
        ),
        (
            "Gibibyte that can be parsed nicer",
            (5.5 * 1024.0 * 1024.0 * 1024.0) as i64,
            "5632Mi",
        ),
        ("Gibibyte exact", 5 << 30, "5Gi"),
        (
            "Mebibyte that cannot be parsed nicer",
            (5.23 * 1024.0 * 1024.0) as i64,
            "5484052",
        ),
        ("Kibibyte that can be parsed nicer", 102400, "100Ki"),
    ] {
        assert_eq!(bytes_to_quantity(bytes).0, want, "{name}");
    }
}

// TestProvisionErrorHandling (all codes, with and without a selected node), and
// "provision with final error", "provision with transient error".
#[test]
fn provision_error_handling() {
    use ProvisioningState::*;
    let cases = [
        (Code::Cancelled, InBackground),
        (Code::DeadlineExceeded, InBackground),
        (Code::Unavailable, InBackground),
        (Code::Aborted, InBackground),
        (Code::ResourceExhausted, Finished),
        (Code::Unknown, Finished),
        (Code::InvalidArgument, Finished),
        (Code::NotFound, Finished),
        (Code::AlreadyExists, Finished),
        (Code::PermissionDenied, Finished),
        (Code::FailedPrecondition, Finished),
        (Code::OutOfRange, Finished),
        (Code::Unimplemented, Finished),
        (Code::Internal, Finished),
        (Code::DataLoss, Finished),
        (Code::Unauthenticated, Finished),
    ];
    for (code, state) in cases {
        assert_eq!(check_error(Some(code), false), state, "{code:?}");
        let selected = if code == Code::ResourceExhausted {
            Reschedule
        } else {
            state
        };
        assert_eq!(check_error(Some(code), true), selected, "{code:?} selected");
    }
    assert_eq!(check_error(None, true), InBackground);
    assert_eq!(
        grpc_error(&tonic::Status::resource_exhausted("no room")),
        "rpc error: code = ResourceExhausted desc = no room"
    );
}

fn released_pv(extra: serde_json::Value) -> PersistentVolume {
    let mut pv = serde_json::to_value(
        pv_of(&claim(json!({})), &class(json!({})), &response(REQUESTED)).unwrap(),
    )
    .unwrap();
    merge(&mut pv, json!({"status": {"phase": "Released"}}));
    merge(&mut pv, extra);
    serde_json::from_value(pv).unwrap()
}

// TestDelete: "fail - nil volume.Spec.CSI", "simple - valid case", "simple - valid case
// with ClaimRef set", "distributed, ignore PV from other host", "distributed, delete PV
// from our host"; and the lib's shouldDelete.
#[test]
fn should_delete_table() {
    let other_host = json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": TOPOLOGY_KEY, "operator": "In", "values": ["bar"]}]}]}}}});
    let cases = [
        (
            "simple - valid case",
            json!({"spec": {"claimRef": null}}),
            true,
        ),
        ("simple - valid case with ClaimRef set", json!({}), true),
        ("distributed, delete PV from our host", json!({}), true),
        ("distributed, ignore PV from other host", other_host, false),
        (
            "fail - nil volume.Spec.CSI",
            json!({"spec": {"csi": null}}),
            false,
        ),
        (
            "no node affinity",
            json!({"spec": {"nodeAffinity": null}}),
            false,
        ),
        ("Bound", json!({"status": {"phase": "Bound"}}), false),
        (
            "Retain",
            json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}}),
            false,
        ),
        (
            "another provisioner",
            json!({"metadata": {"annotations": {ANN_DYNAMICALLY_PROVISIONED: "other"}}}),
            false,
        ),
        (
            "being deleted, finalizer removed (already deleted)",
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": null}}),
            false,
        ),
        (
            "being deleted, finalizer present",
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
            true,
        ),
    ];
    for (name, extra, want) in cases {
        assert_eq!(
            should_delete(&released_pv(extra), DRIVER, NODE),
            want,
            "{name}"
        );
    }
}

// The lib's handleProtectionFinalizer.
#[test]
fn protection_finalizers_table() {
    let bound = |extra| {
        let mut pv = released_pv(extra);
        pv.status = Some(PersistentVolumeStatus {
            phase: Some("Bound".into()),
            ..Default::default()
        });
        pv
    };
    assert_eq!(protection_finalizers(&bound(json!({}))), None);
    assert_eq!(
        protection_finalizers(&bound(
            json!({"metadata": {"finalizers": ["kubernetes.io/pv-protection"]}})
        )),
        Some(vec![
            "kubernetes.io/pv-protection".to_string(),
            FINALIZER_PV.to_string()
        ])
    );
    assert_eq!(
        protection_finalizers(&bound(
            json!({"spec": {"persistentVolumeReclaimPolicy": "Retain"}})
        )),
        Some(vec![])
    );
    assert_eq!(
        protection_finalizers(&released_pv(json!({"metadata": {"finalizers": null}}))),
        None,
        "only a Bound PV gets the finalizer"
    );
}

// topology_test.go TestGenerateVolumeNodeAffinity (all cases): "nil topology", "non-nil
// topology but nil segment", "single segment", "multiple segments", "multiple topologies".
#[test]
fn generate_volume_node_affinity() {
    assert_eq!(volume_node_affinity(&[]), None);
    // "non-nil topology but nil segment"
    assert_eq!(
        volume_node_affinity(&[Topology::default()]),
        Some(VolumeNodeAffinity {
            required: Some(NodeSelector {
                node_selector_terms: vec![]
            })
        })
    );
    let topology = |pairs: &[(&str, &str)]| Topology {
        segments: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let terms = |a: Option<VolumeNodeAffinity>| -> Vec<Vec<(String, String, Vec<String>)>> {
        a.unwrap()
            .required
            .unwrap()
            .node_selector_terms
            .into_iter()
            .map(|t| {
                t.match_expressions
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.key, e.operator, e.values.unwrap()))
                    .collect()
            })
            .collect()
    };
    let e = |k: &str, v: &str| (k.to_string(), "In".to_string(), vec![v.to_string()]);
    assert_eq!(
        terms(volume_node_affinity(&[topology(&[(
            "com.example.csi/zone",
            "zone1"
        )])])),
        vec![vec![e("com.example.csi/zone", "zone1")]]
    );
    assert_eq!(
        terms(volume_node_affinity(&[topology(&[
            ("com.example.csi/zone", "zone1"),
            ("com.example.csi/rack", "rack2")
        ])])),
        vec![vec![
            e("com.example.csi/rack", "rack2"),
            e("com.example.csi/zone", "zone1")
        ]]
    );
    assert_eq!(
        terms(volume_node_affinity(&[
            topology(&[("com.example.csi/zone", "zone1")]),
            topology(&[("com.example.csi/zone", "zone2")]),
        ])),
        vec![
            vec![e("com.example.csi/zone", "zone1")],
            vec![e("com.example.csi/zone", "zone2")]
        ]
    );
}
