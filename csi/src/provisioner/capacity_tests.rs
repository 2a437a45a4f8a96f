//! Ported from external-provisioner v5.3.0: pkg/capacity/capacity_test.go
//! (TestCapacityController, TestTermToSegment, TestRefresh) and
//! cmd/csi-provisioner/util_test.go (TestGetNameWithMaxLength), upstream case names kept.
//! TestCapacityController drives upstream's controller through a fake clientset and
//! informers; here the same cases run [`plan`] and [`sync_capacity`] against an in-memory
//! apiserver (names from generateName, UIDs `CSISC-UID-<n>`, resourceVersions
//! `CSISC-REV-<n>` as upstream's test reactors give them) until nothing changes, and the
//! objects left must be upstream's expected ones; "prepared" is [`plan`]'s count of the
//! initial objects (upstream's goal/current/obsolete metrics after prepare).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, VolumeNodeAffinity,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use rekube_crds::{CSIStorageCapacity, StorageClass};

use super::*;
use crate::csi::GetCapacityResponse;

const DRIVER: &str = "test-driver";
const NAMESPACE: &str = "testns";
const REV: &str = "CSISC-REV-";
/// The central controller's managed-by value (upstream's tests run it so).
const MANAGED: &str = "external-provisioner";

fn owner(name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "statefulset".into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

fn default_owner() -> OwnerReference {
    owner("test-driver", "309cd460-2d62-4f40-bbcf-b7765aac5a6d")
}

fn seg(pairs: &[(&str, &str)]) -> Segment {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn layer0() -> Segment {
    seg(&[("layer0", "foo")])
}

fn layer0_other() -> Segment {
    seg(&[("layer0", "bar")])
}

fn deep() -> Segment {
    seg(&[("layer0", "foo"), ("layer1", "X"), ("layer2", "A")])
}

fn deep_other() -> Segment {
    seg(&[("layer0", "foo"), ("layer1", "X"), ("layer2", "B")])
}

/// upstream testCapacity; `owner`: None the default owner, Some(None) none.
#[derive(Clone, Debug, Default)]
struct Tc {
    uid: &'static str,
    rv: &'static str,
    /// None: upstream's nil segment (a selector without labels).
    segment: Option<Segment>,
    class: &'static str,
    quantity: &'static str,
    max: &'static str,
    owner: Option<Option<OwnerReference>>,
    /// "": ours; "none": no labels; else only a managed-by label of that value.
    managed_by: &'static str,
}

fn tc(segment: Segment, class: &'static str, quantity: &'static str) -> Tc {
    Tc {
        segment: Some(segment),
        class,
        quantity,
        ..Default::default()
    }
}

impl Tc {
    fn uid(mut self, uid: &'static str) -> Tc {
        self.uid = uid;
        self
    }
    fn rev(mut self, n: u32) -> Tc {
        self.rv = ["CSISC-REV-0", "CSISC-REV-1"][n as usize];
        self
    }
    fn max(mut self, max: &'static str) -> Tc {
        self.max = max;
        self
    }
    fn owner(mut self, owner: Option<OwnerReference>) -> Tc {
        self.owner = Some(owner);
        self
    }
    fn managed_by(mut self, m: &'static str) -> Tc {
        self.managed_by = m;
        self
    }

    fn owners(&self) -> Option<Vec<OwnerReference>> {
        match &self.owner {
            None => Some(vec![default_owner()]),
            Some(None) => None,
            Some(Some(o)) => Some(vec![o.clone()]),
        }
    }

    fn labels(&self) -> Option<BTreeMap<String, String>> {
        match self.managed_by {
            "none" => None,
            "" => Some(BTreeMap::from([
                (DRIVER_NAME_LABEL.to_string(), DRIVER.to_string()),
                (MANAGED_BY_LABEL.to_string(), MANAGED.to_string()),
            ])),
            other => Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                other.to_string(),
            )])),
        }
    }

    fn selector(&self) -> LabelSelector {
        match &self.segment {
            Some(s) => segment_selector(s),
            None => LabelSelector::default(),
        }
    }

    /// upstream makeCapacity.
    fn object(&self) -> CSIStorageCapacity {
        let q = |s: &str| (!s.is_empty()).then(|| Quantity(s.to_string()));
        CSIStorageCapacity {
            metadata: ObjectMeta {
                uid: (!self.uid.is_empty()).then(|| self.uid.to_string()),
                generate_name: Some(GENERATE_NAME.into()),
                namespace: Some(NAMESPACE.into()),
                labels: self.labels(),
                owner_references: self.owners(),
                ..Default::default()
            },
            storage_class_name: self.class.into(),
            node_topology: Some(self.selector()),
            capacity: q(self.quantity),
            maximum_volume_size: q(self.max),
        }
    }
}

/// upstream testSC.
#[derive(Clone, Debug)]
struct Sc {
    name: &'static str,
    multiplier: Option<&'static str>,
    immediate: bool,
}

fn sc(name: &'static str) -> Sc {
    Sc {
        name,
        multiplier: None,
        immediate: false,
    }
}

fn triple(name: &'static str) -> Sc {
    Sc {
        multiplier: Some("3"),
        ..sc(name)
    }
}

fn immediate(name: &'static str) -> Sc {
    Sc {
        immediate: true,
        ..sc(name)
    }
}

impl Sc {
    fn class(&self) -> StorageClass {
        StorageClass {
            metadata: ObjectMeta {
                name: Some(self.name.into()),
                ..Default::default()
            },
            provisioner: DRIVER.into(),
            parameters: self
                .multiplier
                .map(|m| BTreeMap::from([("multiplier".to_string(), m.to_string())])),
            volume_binding_mode: Some(
                if self.immediate {
                    "Immediate"
                } else {
                    "WaitForFirstConsumer"
                }
                .into(),
            ),
            ..Default::default()
        }
    }
}

/// upstream mockCapacity: `layer0`'s value → "<capacity>" or "<capacity>,<max volume
/// size>", times the class's `multiplier` parameter.
fn mock_get_capacity(
    storage: &BTreeMap<&str, &str>,
    request: &crate::csi::GetCapacityRequest,
) -> GetCapacityResponse {
    let mut response = GetCapacityResponse::default();
    let layer0 = request
        .accessible_topology
        .as_ref()
        .and_then(|t| t.segments.get("layer0"))
        .cloned()
        .unwrap_or_default();
    if let Some(available) = storage.get(layer0.as_str()) {
        let bytes = |s: &str| amount(&Quantity(s.into())).value();
        let (capacity, maximum) = match available.split_once(',') {
            Some((c, m)) => (c, Some(m)),
            None => (*available, None),
        };
        response.available_capacity = bytes(capacity);
        response.maximum_volume_size = maximum.map(bytes);
    }
    if let Some(m) = request.parameters.get("multiplier") {
        response.available_capacity *= m.parse::<i64>().unwrap();
    }
    response
}

/// The in-memory apiserver: upstream's fake clientset with its create and update reactors.
#[derive(Default)]
struct Server {
    objects: Vec<CSIStorageCapacity>,
    uids: u32,
    names: u32,
    clock: i64,
}

impl Server {
    fn create(&mut self, mut o: CSIStorageCapacity) {
        if o.metadata.name.is_none() {
            self.names += 1;
            o.metadata.name = Some(format!("csisc-{}", self.names));
        }
        if o.metadata.uid.is_none() {
            self.uids += 1;
            o.metadata.uid = Some(format!("CSISC-UID-{}", self.uids));
        }
        o.metadata.resource_version = Some(format!("{REV}0"));
        self.clock += 1;
        o.metadata.creation_timestamp = Some(
            serde_json::from_value::<Time>(serde_json::json!(format!(
                "1970-01-01T00:{:02}:{:02}Z",
                self.clock / 60,
                self.clock % 60
            )))
            .unwrap(),
        );
        self.objects.push(o);
    }

    fn get_mut(&mut self, name: &str) -> &mut CSIStorageCapacity {
        self.objects
            .iter_mut()
            .find(|o| o.metadata.name.as_deref() == Some(name))
            .unwrap()
    }

    fn bump(o: &mut CSIStorageCapacity) {
        let rv = o.metadata.resource_version.as_deref().unwrap();
        let n: u32 = rv.strip_prefix(REV).unwrap().parse().unwrap();
        o.metadata.resource_version = Some(format!("{REV}{}", n + 1));
    }

    fn delete(&mut self, name: &str) {
        self.objects
            .retain(|o| o.metadata.name.as_deref() != Some(name));
    }
}

/// The controller: its classes, segments, driver storage and owner.
struct Controller {
    classes: Vec<StorageClass>,
    segments: Vec<Segment>,
    storage: BTreeMap<&'static str, &'static str>,
    owner: Option<OwnerReference>,
    immediate_binding: bool,
}

impl Controller {
    fn plan(&self, server: &Server) -> Plan {
        let classes: Vec<&StorageClass> = self.classes.iter().collect();
        let items = work_items(&classes, &self.segments, DRIVER, self.immediate_binding);
        plan(&items, &server.objects, DRIVER, MANAGED)
    }

    /// Syncs every item and deletes the obsolete objects until nothing changes; the
    /// number of rounds that changed something.
    fn process(&self, server: &mut Server) -> usize {
        let publisher = Publisher {
            driver: DRIVER,
            managed_by: MANAGED,
            namespace: NAMESPACE,
            owner: self.owner.as_ref(),
        };
        for round in 0..5 {
            let p = self.plan(server);
            let mut changed = !p.obsolete.is_empty();
            for o in &p.obsolete {
                server.delete(o.metadata.name.as_deref().unwrap());
            }
            for (item, existing) in &p.items {
                let class = self
                    .classes
                    .iter()
                    .find(|c| c.metadata.name.as_deref() == Some(&item.storage_class_name))
                    .unwrap();
                let answer = mock_get_capacity(&self.storage, &get_capacity_request(item, class));
                match sync_capacity(item, existing.as_ref(), &answer, &publisher) {
                    Sync::Create(o) => {
                        assert_eq!(o.metadata.generate_name.as_deref(), Some("csisc-"));
                        server.create(*o);
                        changed = true;
                    }
                    Sync::Update {
                        name,
                        capacity,
                        maximum_volume_size,
                        owner_references,
                    } => {
                        let o = server.get_mut(&name);
                        o.capacity = Some(capacity);
                        o.maximum_volume_size = maximum_volume_size;
                        o.metadata.owner_references = owner_references;
                        Server::bump(o);
                        changed = true;
                    }
                    Sync::Unchanged => {}
                }
            }
            if !changed {
                return round;
            }
        }
        panic!("no steady state after 5 rounds");
    }
}

/// upstream validateCapacities: each object matches one expected (topology, class,
/// labels), with its owners, sizes, and UID and resourceVersion where given.
fn validate(server: &Server, expected: &[Tc]) -> Result<(), String> {
    let mut left: Vec<&Tc> = expected.iter().collect();
    let mut messages = Vec::new();
    if server.objects.len() != expected.len() {
        messages.push(format!(
            "expected {} CSIStorageCapacity objects, got {}",
            expected.len(),
            server.objects.len()
        ));
    }
    for actual in &server.objects {
        let Some(i) = left.iter().position(|e| {
            actual.node_topology.as_ref() == Some(&e.selector())
                && actual.storage_class_name == e.class
                && actual.metadata.labels == e.labels()
        }) else {
            messages.push(format!("unexpected {actual:?}"));
            continue;
        };
        let e = left.remove(i);
        let size = |q: Option<&Quantity>| q.map(|q| amount(q).value());
        let want = |s: &str| (!s.is_empty()).then(|| amount(&Quantity(s.into())).value());
        if actual.metadata.owner_references != e.owners() {
            messages.push(format!(
                "{}: owners {:?}",
                e.class, actual.metadata.owner_references
            ));
        }
        if size(actual.capacity.as_ref()) != want(e.quantity) {
            messages.push(format!("{}: capacity {:?}", e.class, actual.capacity));
        }
        if size(actual.maximum_volume_size.as_ref()) != want(e.max) {
            messages.push(format!(
                "{}: maximum {:?}",
                e.class, actual.maximum_volume_size
            ));
        }
        if !e.uid.is_empty() && actual.metadata.uid.as_deref() != Some(e.uid) {
            messages.push(format!(
                "{}: uid {:?}, want {}",
                e.class, actual.metadata.uid, e.uid
            ));
        }
        if !e.rv.is_empty() && actual.metadata.resource_version.as_deref() != Some(e.rv) {
            messages.push(format!(
                "{}: resourceVersion {:?}, want {}",
                e.class, actual.metadata.resource_version, e.rv
            ));
        }
    }
    for e in left {
        messages.push(format!("expected {e:?} not found"));
    }
    if messages.is_empty() {
        Ok(())
    } else {
        Err(messages.join("\n"))
    }
}

type Modify = Box<dyn Fn(&mut Server, &mut Controller, Vec<Tc>) -> Vec<Tc>>;

/// One case of TestCapacityController.
struct Case {
    name: &'static str,
    immediate_binding: bool,
    /// None: upstream's default owner; Some(None): none.
    owner: Option<Option<OwnerReference>>,
    segments: Vec<Segment>,
    storage: Vec<(&'static str, &'static str)>,
    classes: Vec<Sc>,
    initial: Vec<Tc>,
    expected: Vec<Tc>,
    /// modify, capacityChange or topologyChange: changes, then the new expectation.
    change: Option<Modify>,
    /// (goal, current, obsolete) after prepare.
    prepared: (usize, usize, usize),
    /// goal = current at the end.
    total: usize,
}

fn case(name: &'static str) -> Case {
    Case {
        name,
        immediate_binding: false,
        owner: None,
        segments: vec![],
        storage: vec![],
        classes: vec![],
        initial: vec![],
        expected: vec![],
        change: None,
        prepared: (0, 0, 0),
        total: 0,
    }
}

fn foo_1gi() -> Vec<(&'static str, &'static str)> {
    vec![("foo", "1Gi")]
}

fn cases() -> Vec<Case> {
    let two_classes = || vec![sc("direct-sc"), triple("triple-sc")];
    let foo_bar = || vec![("foo", "1Gi"), ("bar", "2Gi")];
    let four = |rev: u32| {
        vec![
            tc(layer0(), "direct-sc", "1Gi").rev(rev),
            tc(layer0(), "triple-sc", "3Gi").rev(rev),
            tc(layer0_other(), "direct-sc", "2Gi").rev(rev),
            tc(layer0_other(), "triple-sc", "6Gi").rev(rev),
        ]
    };
    vec![
        Case { ..case("empty") },
        Case {
            segments: vec![layer0()],
            ..case("one segment")
        },
        Case {
            classes: vec![sc("fast-sc")],
            ..case("one class")
        },
        Case {
            segments: vec![layer0()],
            storage: foo_1gi(),
            classes: vec![sc("other-sc")],
            expected: vec![tc(layer0(), "other-sc", "1Gi")],
            prepared: (1, 0, 0),
            total: 1,
            ..case("one capacity object")
        },
        Case {
            owner: Some(None),
            segments: vec![layer0()],
            storage: foo_1gi(),
            classes: vec![sc("other-sc")],
            expected: vec![tc(layer0(), "other-sc", "1Gi").owner(None)],
            prepared: (1, 0, 0),
            total: 1,
            ..case("no owner")
        },
        Case {
            segments: vec![layer0()],
            storage: vec![("foo", "1Gi,1Mi")],
            classes: vec![sc("other-sc")],
            expected: vec![tc(layer0(), "other-sc", "1Gi").max("1Mi")],
            prepared: (1, 0, 0),
            total: 1,
            ..case("one maximum volume size")
        },
        Case {
            segments: vec![layer0()],
            storage: foo_1gi(),
            classes: vec![immediate("other-sc")],
            ..case("ignore SC with immediate binding")
        },
        Case {
            immediate_binding: true,
            segments: vec![layer0()],
            storage: foo_1gi(),
            classes: vec![immediate("other-sc")],
            expected: vec![tc(layer0(), "other-sc", "1Gi")],
            prepared: (1, 0, 0),
            total: 1,
            ..case("support SC with immediate binding")
        },
        Case {
            segments: vec![layer0()],
            storage: foo_1gi(),
            classes: vec![sc("other-sc")],
            initial: vec![tc(layer0(), "other-sc", "1Gi").uid("test-capacity-1")],
            expected: vec![
                tc(layer0(), "other-sc", "1Gi")
                    .uid("test-capacity-1")
                    .rev(0),
            ],
            prepared: (1, 1, 0),
            total: 1,
            ..case("reuse one capacity object, no changes")
        },
        Case {
            segments: vec![layer0()],
            storage: vec![("foo", "2Gi")],
            classes: vec![sc("other-sc")],
            initial: vec![tc(layer0(), "other-sc", "1Gi").uid("test-capacity-1")],
            expected: vec![
                tc(layer0(), "other-sc", "2Gi")
                    .uid("test-capacity-1")
                    .rev(1),
            ],
            prepared: (1, 1, 0),
            total: 1,
            ..case("reuse one capacity object, update capacity")
        },
        Case {
            segments: vec![layer0()],
            storage: foo_1gi(),
            classes: vec![sc("other-sc")],
            initial: vec![
                tc(layer0(), "other-sc", "1Gi")
                    .uid("test-capacity-1")
                    .owner(None),
            ],
            expected: vec![
                tc(layer0(), "other-sc", "1Gi")
                    .uid("test-capacity-1")
                    .rev(1),
            ],
            prepared: (1, 1, 0),
            total: 1,
            ..case("reuse one capacity object, add owner")
        },
        Case {
            owner: Some(None),
            segments: vec![layer0()],
            storage: foo_1gi(),
            classes: vec![sc("other-sc")],
            initial: vec![tc(layer0(), "other-sc", "1Gi").uid("test-capacity-1")],
            expected: vec![
                tc(layer0(), "other-sc", "1Gi")
                    .uid("test-capacity-1")
                    .rev(0),
            ],
            prepared: (1, 1, 0),
            total: 1,
            ..case("reuse one capacity object, keep owner")
        },
        Case {
            segments: vec![layer0()],
            storage: foo_1gi(),
            initial: vec![tc(layer0(), "other-sc", "1Gi")],
            prepared: (0, 0, 1),
            ..case("obsolete object, missing SC")
        },
        Case {
            storage: foo_1gi(),
            classes: vec![sc("other-sc")],
            initial: vec![tc(layer0(), "other-sc", "1Gi")],
            prepared: (0, 0, 1),
            ..case("obsolete object, missing segment")
        },
        Case {
            initial: vec![
                tc(layer0(), "other-sc", "1Gi")
                    .uid("test-capacity-1")
                    .managed_by("manual"),
            ],
            expected: vec![
                tc(layer0(), "other-sc", "1Gi")
                    .uid("test-capacity-1")
                    .managed_by("manual"),
            ],
            ..case("ignore capacity with other manager")
        },
        Case {
            initial: vec![
                tc(layer0(), "other-sc", "1Gi")
                    .uid("test-capacity-1")
                    .managed_by("none"),
            ],
            expected: vec![
                tc(layer0(), "other-sc", "1Gi")
                    .uid("test-capacity-1")
                    .managed_by("none"),
            ],
            ..case("ignore capacity with no manager")
        },
        Case {
            segments: vec![layer0(), layer0_other()],
            storage: foo_bar(),
            classes: two_classes(),
            expected: four(0),
            prepared: (4, 0, 0),
            total: 4,
            ..case("two segments, two classes, four objects missing")
        },
        Case {
            segments: vec![layer0(), layer0_other()],
            storage: foo_bar(),
            classes: two_classes(),
            initial: vec![
                tc(layer0(), "direct-sc", "1Mi").uid("test-capacity-1"),
                tc(layer0(), "triple-sc", "3Mi").uid("test-capacity-2"),
                tc(layer0_other(), "direct-sc", "2Mi").uid("test-capacity-3"),
                tc(layer0_other(), "triple-sc", "6Mi").uid("test-capacity-4"),
            ],
            expected: vec![
                tc(layer0(), "direct-sc", "1Gi")
                    .uid("test-capacity-1")
                    .rev(1),
                tc(layer0(), "triple-sc", "3Gi")
                    .uid("test-capacity-2")
                    .rev(1),
                tc(layer0_other(), "direct-sc", "2Gi")
                    .uid("test-capacity-3")
                    .rev(1),
                tc(layer0_other(), "triple-sc", "6Gi")
                    .uid("test-capacity-4")
                    .rev(1),
            ],
            prepared: (4, 4, 0),
            total: 4,
            ..case("two segments, two classes, four objects updated")
        },
        Case {
            segments: vec![layer0(), layer0_other()],
            storage: foo_bar(),
            classes: two_classes(),
            initial: vec![
                tc(layer0(), "old-direct-sc", "1Mi").uid("test-capacity-1"),
                tc(layer0(), "old-triple-sc", "3Mi").uid("test-capacity-2"),
                tc(layer0_other(), "direct-sc", "2Mi").uid("test-capacity-3"),
                tc(layer0_other(), "triple-sc", "6Mi").uid("test-capacity-4"),
            ],
            expected: vec![
                tc(layer0(), "direct-sc", "1Gi").rev(0),
                tc(layer0(), "triple-sc", "3Gi").rev(0),
                tc(layer0_other(), "direct-sc", "2Gi")
                    .uid("test-capacity-3")
                    .rev(1),
                tc(layer0_other(), "triple-sc", "6Gi")
                    .uid("test-capacity-4")
                    .rev(1),
            ],
            prepared: (4, 2, 2),
            total: 4,
            ..case("two segments, two classes, two added, two removed")
        },
        Case {
            segments: vec![layer0()],
            storage: foo_1gi(),
            classes: vec![sc("other-sc")],
            expected: vec![tc(layer0(), "other-sc", "1Gi").uid("CSISC-UID-1").rev(0)],
            change: Some(Box::new(|server, _, mut expected| {
                let name = server.objects[0].metadata.name.clone().unwrap();
                server.delete(&name);
                expected[0].uid = "CSISC-UID-2";
                expected
            })),
            prepared: (1, 0, 0),
            total: 1,
            ..case("re-create capacity")
        },
        Case {
            change: Some(Box::new(|server, _, expected| {
                server.create(
                    Tc {
                        quantity: "1Gi",
                        ..Default::default()
                    }
                    .object(),
                );
                expected
            })),
            ..case("delete redundant capacity")
        },
        Case {
            segments: vec![layer0()],
            storage: foo_1gi(),
            classes: vec![sc("other-sc")],
            expected: vec![tc(layer0(), "other-sc", "1Gi").uid("CSISC-UID-1").rev(0)],
            change: Some(Box::new(|server, _, mut expected| {
                // Labels unset: the now foreign object is left alone, a new one made.
                let o = &mut server.objects[0];
                o.metadata.labels = None;
                Server::bump(o);
                expected[0].managed_by = "none";
                expected[0].rv = "CSISC-REV-1";
                expected.push(tc(layer0(), "other-sc", "1Gi").uid("CSISC-UID-2").rev(0));
                expected
            })),
            prepared: (1, 0, 0),
            total: 1,
            ..case("ignore capacity after owner change")
        },
        Case {
            segments: vec![layer0()],
            storage: foo_1gi(),
            classes: vec![sc("other-sc")],
            expected: vec![tc(layer0(), "other-sc", "1Gi").uid("CSISC-UID-1").rev(0)],
            change: Some(Box::new(|server, _, mut expected| {
                // Deleted and re-created with the wrong capacity under the same name:
                // corrected.
                let mut o = server.objects[0].clone();
                let name = o.metadata.name.clone().unwrap();
                server.delete(&name);
                o.metadata.uid = Some("CSISC-UID-2".into());
                o.capacity = Some(Quantity("1Mi".into()));
                server.create(o);
                expected[0].uid = "CSISC-UID-2";
                expected[0].rv = "CSISC-REV-1";
                expected
            })),
            prepared: (1, 0, 0),
            total: 1,
            ..case("delete and recreate by someone")
        },
        Case {
            segments: vec![layer0()],
            storage: foo_1gi(),
            classes: vec![sc("other-sc")],
            expected: vec![tc(layer0(), "other-sc", "1Gi").uid("CSISC-UID-1").rev(0)],
            change: Some(Box::new(|_, controller, mut expected| {
                controller.storage.insert("foo", "2Gi");
                expected[0].quantity = "2Gi";
                expected[0].rv = "CSISC-REV-1";
                expected
            })),
            prepared: (1, 0, 0),
            total: 1,
            ..case("storage capacity change")
        },
        Case {
            storage: foo_1gi(),
            classes: vec![immediate("immediate-sc"), sc("late-sc")],
            change: Some(Box::new(|_, controller, mut expected| {
                controller.segments.push(layer0());
                expected.push(tc(layer0(), "late-sc", "1Gi").uid("CSISC-UID-1").rev(0));
                expected
            })),
            total: 1,
            ..case("add storage topology segment")
        },
        Case {
            immediate_binding: true,
            storage: foo_1gi(),
            classes: vec![immediate("immediate-sc"), sc("late-sc")],
            change: Some(Box::new(|_, controller, mut expected| {
                controller.segments.push(layer0());
                expected.push(tc(layer0(), "immediate-sc", "1Gi").rev(0));
                expected.push(tc(layer0(), "late-sc", "1Gi").rev(0));
                expected
            })),
            total: 2,
            ..case("add storage topology segment, immediate binding")
        },
        Case {
            segments: vec![layer0()],
            storage: foo_1gi(),
            classes: vec![immediate("immediate-sc"), sc("late-sc")],
            expected: vec![tc(layer0(), "late-sc", "1Gi").uid("CSISC-UID-1").rev(0)],
            change: Some(Box::new(|_, controller, _| {
                controller.segments.clear();
                vec![]
            })),
            prepared: (1, 0, 0),
            ..case("remove storage topology segment")
        },
        Case {
            segments: vec![layer0()],
            storage: foo_bar(),
            classes: vec![immediate("immediate-sc"), sc("late-sc")],
            expected: vec![tc(layer0(), "late-sc", "1Gi").uid("CSISC-UID-1").rev(0)],
            change: Some(Box::new(|_, controller, _| {
                controller.segments = vec![layer0_other()];
                vec![
                    tc(layer0_other(), "late-sc", "2Gi")
                        .uid("CSISC-UID-2")
                        .rev(0),
                ]
            })),
            prepared: (1, 0, 0),
            total: 1,
            ..case("add and remove storage topology segment")
        },
    ]
}

#[test]
fn test_capacity_controller() {
    let cases = cases();
    assert_eq!(cases.len(), 28);
    for c in cases {
        let mut server = Server::default();
        for t in &c.initial {
            server.create(t.object());
        }
        let mut controller = Controller {
            classes: c.classes.iter().map(Sc::class).collect(),
            segments: c.segments.clone(),
            storage: c.storage.iter().copied().collect(),
            owner: match &c.owner {
                None => Some(default_owner()),
                Some(o) => o.clone(),
            },
            immediate_binding: c.immediate_binding,
        };
        let p = controller.plan(&server);
        assert_eq!(
            (p.goal(), p.current(), p.obsolete.len()),
            c.prepared,
            "{}: prepared",
            c.name
        );
        controller.process(&mut server);
        validate(&server, &c.expected).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let mut expected = c.expected.clone();
        if let Some(change) = &c.change {
            expected = change(&mut server, &mut controller, expected);
            controller.process(&mut server);
            validate(&server, &expected).unwrap_or_else(|e| panic!("{}: changed: {e}", c.name));
        }
        // Steady: goal and current agree, and another pass changes nothing.
        let p = controller.plan(&server);
        assert_eq!(
            (p.goal(), p.current()),
            (c.total, c.total),
            "{}: total",
            c.name
        );
        assert_eq!(controller.process(&mut server), 0, "{}: not steady", c.name);
    }
}

#[test]
fn test_term_to_segment() {
    let req = |key: &str, op: &str, values: &[&str]| NodeSelectorRequirement {
        key: key.into(),
        operator: op.into(),
        values: Some(values.iter().map(|v| v.to_string()).collect()),
    };
    let term = |e: Vec<NodeSelectorRequirement>| NodeSelectorTerm {
        match_expressions: Some(e),
        match_fields: None,
    };
    let cases: Vec<(&str, NodeSelectorTerm, Option<Segment>)> = vec![
        (
            "matchfields",
            NodeSelectorTerm {
                match_expressions: None,
                match_fields: Some(vec![req("name", "", &["worker-1"])]),
            },
            None,
        ),
        (
            "invalid-operator",
            term(vec![req("segment", "NotIn", &["a"])]),
            None,
        ),
        (
            "invalid-values",
            term(vec![req("segment", "In", &["a", "b"])]),
            None,
        ),
        (
            "simple",
            term(vec![req("segment", "In", &["a"])]),
            Some(seg(&[("segment", "a")])),
        ),
        (
            "multi",
            term(vec![
                req("segment", "In", &["a"]),
                req("zone", "In", &["X"]),
            ]),
            Some(seg(&[("segment", "a"), ("zone", "X")])),
        ),
        (
            "unsorted",
            term(vec![
                req("zone", "In", &["X"]),
                req("segment", "In", &["a"]),
            ]),
            Some(seg(&[("segment", "a"), ("zone", "X")])),
        ),
    ];
    for (name, t, want) in cases {
        assert_eq!(term_to_segment(&t).ok(), want, "{name}");
    }
}

#[test]
fn test_refresh() {
    let items = |segments: Vec<Segment>| {
        let classes = [sc("direct-sc").class(), triple("triple-sc").class()];
        let classes: Vec<&StorageClass> = classes.iter().collect();
        work_items(&classes, &segments, DRIVER, false)
    };
    let affinity = |s: &Segment| VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(
                    s.iter()
                        .map(|(k, v)| NodeSelectorRequirement {
                            key: k.clone(),
                            operator: "In".into(),
                            values: Some(vec![v.clone()]),
                        })
                        .collect(),
                ),
                match_fields: None,
            }],
        }),
    };
    let show = |items: Vec<WorkItem>| -> Vec<String> {
        let mut out: Vec<String> = items
            .iter()
            .map(|i| {
                let pairs: Vec<String> =
                    i.segment.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{}, [{}]", i.storage_class_name, pairs.join(" "))
            })
            .collect();
        out.sort();
        out
    };
    let shallow = items(vec![layer0(), layer0_other()]);
    let deep_items = items(vec![deep(), deep_other()]);
    let cases: Vec<(&str, Vec<WorkItem>, Vec<&str>)> = vec![
        (
            "two segments, two classes, refresh storageclass",
            refresh_class(&shallow, "direct-sc"),
            vec!["direct-sc, [layer0: bar]", "direct-sc, [layer0: foo]"],
        ),
        (
            "two segments, two classes, refresh topology",
            refresh_topology(&shallow, &affinity(&seg(&[("layer0", "bar")]))),
            vec!["direct-sc, [layer0: bar]", "triple-sc, [layer0: bar]"],
        ),
        (
            "deep topology",
            refresh_topology(&deep_items, &affinity(&deep())),
            vec![
                "direct-sc, [layer0: foo layer1: X layer2: A]",
                "triple-sc, [layer0: foo layer1: X layer2: A]",
            ],
        ),
        (
            "no such topology",
            refresh_topology(
                &deep_items,
                &affinity(&seg(&[
                    ("layer0", "foo"),
                    ("layer1", "X"),
                    ("layer2", "BBBBBBBBBBB"),
                ])),
            ),
            vec![],
        ),
        (
            "no such storageclass",
            refresh_class(&deep_items, "no-such-sc"),
            vec![],
        ),
        (
            "truncated topology",
            refresh_topology(&deep_items, &affinity(&seg(&[("layer0", "foo")]))),
            vec![],
        ),
    ];
    for (name, got, want) in cases {
        assert_eq!(show(got), want, "{name}");
    }
}

#[test]
fn test_get_name_with_max_length() {
    let a = |n: usize| "a".repeat(n);
    let cases: Vec<(&str, String, &str, String)> = vec![
        (
            "unchanged",
            "node01".into(),
            MANAGED_BY,
            "external-provisioner-node01".into(),
        ),
        ("with empty base", "node01".into(), "", "node01".into()),
        (
            "exactly63",
            format!("node{}", a(38)),
            MANAGED_BY,
            format!("external-provisioner-node{}", a(38)),
        ),
        (
            "one over",
            format!("node{}", a(39)),
            MANAGED_BY,
            format!("external-p-53f40b57-node{}", a(39)),
        ),
        (
            "long node name with 52",
            format!("node{}", a(48)),
            MANAGED_BY,
            format!("e-53f40b57-node{}", a(48)),
        ),
        (
            "long node name with 53, ignore suffix ",
            format!("node{}", a(49)),
            MANAGED_BY,
            "external-provisioner-a3607ff1".into(),
        ),
        (
            "very long, ignore suffix",
            format!("node{}", a(63)),
            MANAGED_BY,
            "external-provisioner-df38e37f".into(),
        ),
        (
            "long node name ,with empty base",
            format!("node{}", a(63)),
            "",
            "fa65587e".into(),
        ),
    ];
    for (name, node, base, want) in cases {
        let got = name_with_max_length(base, &node, DNS1035_LABEL_MAX_LENGTH);
        assert_eq!(got, want, "{name}");
        assert!(got.len() <= DNS1035_LABEL_MAX_LENGTH, "{name}");
    }
    assert_eq!(managed_by_id("node-a"), "external-provisioner-node-a");
}

/// The decisions beyond the table: a Create carries upstream's labels, generateName,
/// namespace, class, the segment's selector, the sizes as BinarySI quantities and the
/// owner; an object without capacity is updated; the owner is added to others'.
#[test]
fn sync_writes_upstreams_object() {
    let item = WorkItem {
        segment: seg(&[("topology.csi.rekube.io/node", "n1")]),
        storage_class_name: "local".into(),
    };
    let ours = default_owner();
    let publisher = Publisher {
        driver: "csi.rekube.io",
        managed_by: "external-provisioner-n1",
        namespace: "kube-system",
        owner: Some(&ours),
    };
    let answer = GetCapacityResponse {
        available_capacity: 100 << 20,
        maximum_volume_size: Some(99 << 20),
        minimum_volume_size: Some(16 << 20),
    };
    let Sync::Create(created) = sync_capacity(&item, None, &answer, &publisher) else {
        panic!("not a create");
    };
    let created = *created;
    assert_eq!(
        serde_json::to_value(&created).unwrap(),
        serde_json::json!({
            "apiVersion": "rekube.io/v1", "kind": "CSIStorageCapacity",
            "metadata": {
                "generateName": "csisc-", "namespace": "kube-system",
                "labels": {"csi.storage.k8s.io/drivername": "csi.rekube.io",
                           "csi.storage.k8s.io/managed-by": "external-provisioner-n1"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "statefulset",
                    "name": "test-driver", "uid": "309cd460-2d62-4f40-bbcf-b7765aac5a6d",
                    "controller": true}],
            },
            "storageClassName": "local",
            "nodeTopology": {"matchLabels": {"topology.csi.rekube.io/node": "n1"}},
            "capacity": "100Mi",
            "maximumVolumeSize": "99Mi",
        })
    );
    let mut existing = created.clone();
    existing.metadata.name = Some("csisc-x".into());
    assert_eq!(
        sync_capacity(&item, Some(&existing), &answer, &publisher),
        Sync::Unchanged
    );
    existing.capacity = None;
    assert!(matches!(
        sync_capacity(&item, Some(&existing), &answer, &publisher),
        Sync::Update { ref name, .. } if name == "csisc-x"
    ));
    // Someone else's owner stays, ours is added.
    let mut foreign = created.clone();
    foreign.metadata.name = Some("csisc-y".into());
    foreign.metadata.owner_references = Some(vec![owner("other-test-driver", "11111111")]);
    let Sync::Update {
        owner_references, ..
    } = sync_capacity(&item, Some(&foreign), &answer, &publisher)
    else {
        panic!("not an update");
    };
    assert_eq!(
        owner_references,
        Some(vec![
            owner("other-test-driver", "11111111"),
            default_owner()
        ])
    );
    // The items of the node's segment, from a volume's node affinity; the set of items.
    let items = BTreeSet::from([item.clone()]);
    assert_eq!(refresh_class(&items, "local"), vec![item]);
}
