//! upstream reconciler/reconciler_test.go. Upstream runs its reconciler goroutine against
//! a fake volume plugin and polls call counts; here each pass of [`reconcile`] is run by
//! [`Fake`], which does the actions at once as upstream's fake plugin would (its special
//! node names included: uncertain-attach-node, timeout-attach-node, fail-detach-node,
//! multi-attach-node) and advances a clock of its own by the loop period (10 ms, as
//! upstream's test).
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::cache::*;
use super::operations::Operations;
use super::reconciler::*;

const LOOP: Duration = Duration::from_millis(10);
/// upstream maxWaitForUnmountDuration and maxLongWaitForUnmountDuration of the test.
const MAX_WAIT: Duration = Duration::from_millis(50);
const MAX_LONG_WAIT: Duration = Duration::from_secs(4200);

const UNCERTAIN_ATTACH_NODE: &str = "uncertain-attach-node";
const FAIL_DETACH_NODE: &str = "fail-detach-node";
const TIMEOUT_ATTACH_NODE: &str = "timeout-attach-node";
const MULTI_ATTACH_NODE: &str = "multi-attach-node";

struct Fake {
    dsw: DesiredStateOfWorld,
    asw: ActualStateOfWorld,
    ops: Operations,
    config: Config,
    now: Instant,
    /// The node lister.
    nodes: BTreeMap<String, NodeInfo>,
    /// upstream FakeVolume.VolumesAttached.
    attached: BTreeMap<String, BTreeSet<String>>,
    attach_calls: usize,
    detach_calls: usize,
    force_detaches: Vec<ForceDetachReason>,
    /// upstream NewFakeNodeStatusUpdater(returnError).
    status_update_fails: bool,
    events: Vec<PodEvent>,
}

impl Fake {
    fn new(max_wait: Duration) -> Self {
        Fake {
            dsw: DesiredStateOfWorld::default(),
            asw: ActualStateOfWorld::default(),
            ops: Operations::default(),
            config: Config {
                max_wait_for_unmount: max_wait,
                disable_force_detach_on_timeout: false,
            },
            now: Instant::now(),
            nodes: BTreeMap::new(),
            attached: BTreeMap::new(),
            attach_calls: 0,
            detach_calls: 0,
            force_detaches: Vec::new(),
            status_update_fails: false,
            events: Vec::new(),
        }
    }

    /// One pass, its actions done at once; then the clock moves on by the loop period.
    fn pass(&mut self) {
        let nodes = self.nodes.clone();
        let actions = reconcile(
            &mut self.dsw,
            &mut self.asw,
            &mut self.ops,
            &|n| nodes.get(n).copied(),
            self.now,
            &self.config,
        );
        for a in actions {
            match a {
                Action::Attach { volume, key } => {
                    let ok = self.fake_attach(&volume.volume_name, &volume.node_name);
                    if ok {
                        self.asw.mark_volume_as_attached(
                            &volume.volume_name,
                            Some(&volume.volume_spec),
                            &volume.node_name,
                            "/dev/vdb-test",
                        );
                    } else {
                        self.asw.mark_volume_as_uncertain(
                            &volume.volume_name,
                            Some(&volume.volume_spec),
                            &volume.node_name,
                        );
                    }
                    self.ops.complete(&key, ok, self.now);
                }
                Action::Detach {
                    volume,
                    key,
                    node_status,
                    force,
                    ..
                } => {
                    if node_status.is_some() && self.status_update_fails {
                        self.asw.add_volume_to_report_as_attached(
                            &volume.volume_name,
                            &volume.node_name,
                        );
                        let _ = self.asw.set_node_status_update_needed(&volume.node_name);
                        self.ops.cancel(&key);
                        continue;
                    }
                    self.force_detaches.extend(force);
                    let ok = self.fake_detach(&volume.volume_name, &volume.node_name);
                    if ok {
                        self.asw
                            .mark_volume_as_detached(&volume.volume_name, &volume.node_name);
                    } else {
                        self.asw.mark_volume_as_uncertain(
                            &volume.volume_name,
                            volume.volume_spec.as_ref(),
                            &volume.node_name,
                        );
                    }
                    self.ops.complete(&key, ok, self.now);
                }
                Action::Event(e) => self.events.push(e),
                Action::UpdateNodeStatus { node, .. } => {
                    if self.status_update_fails {
                        let _ = self.asw.set_node_status_update_needed(&node);
                    }
                }
            }
        }
        self.now += LOOP;
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.pass();
        }
    }

    /// Runs passes until `done` holds, for at most a minute of the fake clock.
    fn run_until(&mut self, what: &str, done: impl Fn(&Fake) -> bool) {
        let end = self.now + Duration::from_secs(60);
        while !done(self) {
            assert!(self.now < end, "timed out waiting for {what}");
            self.pass();
        }
    }

    /// upstream FakeVolume.Attach.
    fn fake_attach(&mut self, volume: &str, node: &str) -> bool {
        self.attach_calls += 1;
        if let Some(nodes) = self.attached.get_mut(volume) {
            if node == UNCERTAIN_ATTACH_NODE {
                return true;
            }
            if node == TIMEOUT_ATTACH_NODE {
                return false;
            }
            if nodes.contains(node)
                || nodes.contains(MULTI_ATTACH_NODE)
                || node == MULTI_ATTACH_NODE
            {
                nodes.insert(node.to_string());
                return true;
            }
            return false;
        }
        self.attached
            .insert(volume.to_string(), [node.to_string()].into());
        !(node == UNCERTAIN_ATTACH_NODE || node == TIMEOUT_ATTACH_NODE)
    }

    /// upstream FakeVolume.Detach.
    fn fake_detach(&mut self, volume: &str, node: &str) -> bool {
        let Some(nodes) = self.attached.get_mut(volume) else {
            return false;
        };
        if !nodes.contains(node) {
            return false;
        }
        self.detach_calls += 1;
        if node == FAIL_DETACH_NODE {
            return false;
        }
        nodes.remove(node);
        if nodes.is_empty() {
            self.attached.remove(volume);
        }
        true
    }

    fn reported_as_attached(&self, volume: &str, node: &str) -> bool {
        let mut asw = self.asw.clone();
        let _ = asw.set_node_status_update_needed(node);
        asw.get_volumes_to_report_attached_for_node(node)
            .is_some_and(|v| v.iter().any(|v| v.name == volume))
    }
}

fn spec(access_mode: &str) -> VolumeSpec {
    VolumeSpec {
        pv_name: "volume-name".into(),
        driver: "d".into(),
        volume_handle: "volume-name".into(),
        access_modes: vec![access_mode.to_string()],
    }
}

fn pod(uid: &str) -> PodRef {
    PodRef {
        namespace: "ns".into(),
        name: uid.into(),
        uid: uid.into(),
    }
}

fn ready(ready: bool) -> NodeInfo {
    NodeInfo {
        ready,
        out_of_service: false,
    }
}

/// Test_Run_Positive_DoNothing.
#[test]
fn run_positive_do_nothing() {
    let mut f = Fake::new(MAX_WAIT);
    f.run_for(Duration::from_millis(200));
    assert_eq!((f.attach_calls, f.detach_calls), (0, 0));
}

/// Test_Run_Positive_OneDesiredVolumeAttach.
#[test]
fn run_positive_one_desired_volume_attach() {
    let mut f = Fake::new(MAX_WAIT);
    f.dsw.add_node("node-name");
    let v = f
        .dsw
        .add_pod(&pod("pod-uid"), &spec("ReadWriteOnce"), "node-name")
        .unwrap();
    f.run_for(Duration::from_millis(200));
    assert_eq!((f.attach_calls, f.detach_calls), (1, 0));
    assert_eq!(
        f.asw.get_attach_state(&v, "node-name"),
        AttachState::Attached
    );
    assert!(f.reported_as_attached(&v, "node-name"));
}

/// Test_Run_Positive_OneDesiredVolumeAttachThenDetachWithUnmountedVolume.
#[test]
fn run_positive_attach_then_detach_with_unmounted_volume() {
    let mut f = Fake::new(MAX_WAIT);
    f.dsw.add_node("node-name");
    let v = f
        .dsw
        .add_pod(&pod("pod-uid"), &spec("ReadWriteOnce"), "node-name")
        .unwrap();
    f.run_until("attach", |f| f.attach_calls == 1);
    assert_eq!(f.detach_calls, 0);
    f.dsw.delete_pod("pod-uid", &v, "node-name");
    assert!(!f.dsw.volume_exists(&v, "node-name"));
    f.asw
        .set_volumes_mounted_by_node(std::slice::from_ref(&v), "node-name");
    f.asw.set_volumes_mounted_by_node(&[], "node-name");
    f.pass();
    assert_eq!((f.attach_calls, f.detach_calls), (1, 1));
    assert!(f.force_detaches.is_empty(), "a normal detach");
}

/// Test_Run_Positive_OneDesiredVolumeAttachThenDetachWithMountedVolume: the node (not
/// in the lister: unhealthy) never unmounts; after maxWaitForUnmountDuration the volume
/// is force-detached (the timeout metric).
#[test]
fn run_positive_attach_then_detach_with_mounted_volume() {
    let mut f = Fake::new(MAX_WAIT);
    f.dsw.add_node("node-name");
    let v = f
        .dsw
        .add_pod(&pod("pod-uid"), &spec("ReadWriteOnce"), "node-name")
        .unwrap();
    f.run_until("attach", |f| f.attach_calls == 1);
    f.dsw.delete_pod("pod-uid", &v, "node-name");
    f.pass();
    assert_eq!(f.detach_calls, 0, "still mounted");
    f.run_until("force detach", |f| f.detach_calls == 1);
    assert_eq!(f.attach_calls, 1);
    assert_eq!(f.force_detaches, [ForceDetachReason::Timeout]);
}

/// Test_Run_Negative_OneDesiredVolumeAttachThenDetachWithUnmountedVolumeUpdateStatusFail:
/// the node status write fails every time, so the volume is never detached.
#[test]
fn run_negative_detach_with_unmounted_volume_update_status_fail() {
    let mut f = Fake::new(MAX_WAIT);
    f.status_update_fails = true;
    f.dsw.add_node("node-name");
    let v = f
        .dsw
        .add_pod(&pod("pod-uid"), &spec("ReadWriteOnce"), "node-name")
        .unwrap();
    f.run_until("attach", |f| f.attach_calls == 1);
    f.dsw.delete_pod("pod-uid", &v, "node-name");
    f.asw
        .set_volumes_mounted_by_node(std::slice::from_ref(&v), "node-name");
    f.asw.set_volumes_mounted_by_node(&[], "node-name");
    f.run_for(Duration::from_millis(500));
    assert_eq!((f.attach_calls, f.detach_calls), (1, 0));
    assert_eq!(
        f.asw.get_attach_state(&v, "node-name"),
        AttachState::Attached
    );
}

/// Test_Run_OneVolumeAttachAndDetachMultipleNodesWithReadWriteMany.
#[test]
fn run_one_volume_attach_and_detach_multiple_nodes_read_write_many() {
    let mut f = Fake::new(MAX_WAIT);
    let (n1, n2) = ("node-name1", MULTI_ATTACH_NODE);
    f.dsw.add_node(n1);
    f.dsw.add_node(n2);
    let v = f
        .dsw
        .add_pod(&pod("pod-uid1"), &spec("ReadWriteMany"), n1)
        .unwrap();
    f.dsw
        .add_pod(&pod("pod-uid2"), &spec("ReadWriteMany"), n2)
        .unwrap();
    f.run_until("two attaches", |f| f.attach_calls == 2);
    assert_eq!(f.detach_calls, 0);
    assert_eq!(f.asw.get_nodes_for_attached_volume(&v).len(), 2);
    f.dsw.delete_pod("pod-uid1", &v, n1);
    f.run_until("one detach", |f| f.detach_calls == 1);
    assert_eq!(f.attach_calls, 2);
    f.dsw.delete_pod("pod-uid2", &v, n2);
    f.run_until("two detaches", |f| f.detach_calls == 2);
    assert_eq!(f.attach_calls, 2);
}

/// Test_Run_OneVolumeAttachAndDetachMultipleNodesWithReadWriteOnce.
#[test]
fn run_one_volume_attach_and_detach_multiple_nodes_read_write_once() {
    let mut f = Fake::new(MAX_WAIT);
    let (n1, n2) = ("node-name1", "node-name2");
    f.dsw.add_node(n1);
    f.dsw.add_node(n2);
    let v = f
        .dsw
        .add_pod(&pod("pod-uid1"), &spec("ReadWriteOnce"), n1)
        .unwrap();
    f.dsw
        .add_pod(&pod("pod-uid2"), &spec("ReadWriteOnce"), n2)
        .unwrap();
    f.run_until("one attach", |f| f.attach_calls == 1);
    f.run_for(Duration::from_millis(100));
    assert_eq!((f.attach_calls, f.detach_calls), (1, 0));
    let nodes = f.asw.get_nodes_for_attached_volume(&v);
    assert_eq!(nodes.len(), 1);
    let other = if nodes[0] == n1 { n2 } else { n1 };
    // upstream waitForMultiAttachErrorOnNode: the other node's pod was told.
    assert!(
        f.dsw
            .get_volumes_to_attach()
            .iter()
            .any(|x| x.node_name == other && x.multi_attach_error_reported)
    );
    let pod_to_delete = if nodes[0] == n1 {
        "pod-uid1"
    } else {
        "pod-uid2"
    };
    f.dsw.delete_pod(pod_to_delete, &v, &nodes[0]);
    f.run_until("detach", |f| f.detach_calls == 1);
    f.run_until("attach to the other node", |f| f.attach_calls == 2);
    assert_eq!(f.asw.get_nodes_for_attached_volume(&v), [other]);
}

/// Test_Run_OneVolumeAttachAndDetachUncertainNodesWithReadWriteOnce.
#[test]
fn run_one_volume_attach_and_detach_uncertain_nodes_read_write_once() {
    let mut f = Fake::new(MAX_WAIT);
    let (n1, n2) = (UNCERTAIN_ATTACH_NODE, "node-name2");
    f.dsw.add_node(n1);
    f.dsw.add_node(n2);
    let v = f
        .dsw
        .add_pod(&pod("pod-uid1"), &spec("ReadWriteOnce"), n1)
        .unwrap();
    f.pass();
    assert_eq!(f.asw.get_attach_state(&v, n1), AttachState::Uncertain);
    f.run_for(Duration::from_secs(1));
    // The retry after the backoff succeeds.
    assert_eq!(f.asw.get_attach_state(&v, n1), AttachState::Attached);
    assert!(f.reported_as_attached(&v, n1));
    f.dsw.delete_pod("pod-uid1", &v, n1);
    f.run_until("removed from node 1", |f| {
        f.asw.get_attach_state(&v, n1) == AttachState::Detached
    });
    f.dsw
        .add_pod(&pod("pod-uid2"), &spec("ReadWriteOnce"), n2)
        .unwrap();
    f.run_until("attached to node 2", |f| {
        f.asw.get_attach_state(&v, n2) == AttachState::Attached
    });
}

/// Test_Run_UpdateNodeStatusFailBeforeOneVolumeDetachNodeWithReadWriteOnce: the status
/// write before the detach fails, so the volume stays attached and reported.
#[test]
fn run_update_node_status_fail_before_one_volume_detach() {
    let mut f = Fake::new(MAX_WAIT);
    let n1 = "node-name1";
    f.dsw.add_node(n1);
    let v = f
        .dsw
        .add_pod(&pod("pod-uid1"), &spec("ReadWriteOnce"), n1)
        .unwrap();
    f.pass();
    assert_eq!(f.asw.get_attach_state(&v, n1), AttachState::Attached);
    assert!(f.reported_as_attached(&v, n1));
    f.status_update_fails = true;
    f.dsw.delete_pod("pod-uid1", &v, n1);
    f.pass();
    f.now += Duration::from_millis(100);
    f.pass();
    assert_eq!(f.asw.get_attach_state(&v, n1), AttachState::Attached);
    assert!(f.reported_as_attached(&v, n1));
    assert_eq!(f.detach_calls, 0);
}

/// Test_Run_OneVolumeDetachFailNodeWithReadWriteOnce.
#[test]
fn run_one_volume_detach_fail_node_read_write_once() {
    let mut f = Fake::new(MAX_WAIT);
    let (n1, n2) = (FAIL_DETACH_NODE, "node-name2");
    f.dsw.add_node(n1);
    f.dsw.add_node(n2);
    let v = f
        .dsw
        .add_pod(&pod("pod-uid1"), &spec("ReadWriteOnce"), n1)
        .unwrap();
    f.pass();
    assert_eq!(f.asw.get_attach_state(&v, n1), AttachState::Attached);
    assert!(f.reported_as_attached(&v, n1));
    f.dsw.delete_pod("pod-uid1", &v, n1);
    f.run_until("a failed detach", |f| {
        f.asw.get_attach_state(&v, n1) == AttachState::Uncertain
    });
    assert!(!f.reported_as_attached(&v, n1));
    // A new pod on the same node: attached again and reported.
    f.dsw
        .add_pod(&pod("pod-uid2"), &spec("ReadWriteOnce"), n1)
        .unwrap();
    f.run_for(Duration::from_secs(1));
    assert_eq!(f.asw.get_attach_state(&v, n1), AttachState::Attached);
    assert!(f.reported_as_attached(&v, n1));
    // A pod on another node: a Multi-Attach error, no status change.
    f.dsw
        .add_pod(&pod("pod-uid3"), &spec("ReadWriteOnce"), n2)
        .unwrap();
    f.run_for(Duration::from_millis(100));
    assert_eq!(f.asw.get_attach_state(&v, n1), AttachState::Attached);
    assert_eq!(f.asw.status_update_needed(n1), Some(false));
    assert_eq!(f.asw.status_update_needed(n2), None);
}

/// Test_Run_OneVolumeAttachAndDetachTimeoutNodesWithReadWriteOnce.
#[test]
fn run_one_volume_attach_and_detach_timeout_nodes_read_write_once() {
    let mut f = Fake::new(MAX_WAIT);
    let (n1, n2) = (TIMEOUT_ATTACH_NODE, "node-name2");
    f.dsw.add_node(n1);
    f.dsw.add_node(n2);
    let v = f
        .dsw
        .add_pod(&pod("pod-uid1"), &spec("ReadWriteOnce"), n1)
        .unwrap();
    f.pass();
    assert_eq!(f.asw.get_attach_state(&v, n1), AttachState::Uncertain);
    assert!(!f.reported_as_attached(&v, n1));
    f.dsw.delete_pod("pod-uid1", &v, n1);
    f.run_until("removed from node 1", |f| {
        f.asw.get_attach_state(&v, n1) == AttachState::Detached
    });
    f.dsw
        .add_pod(&pod("pod-uid2"), &spec("ReadWriteOnce"), n2)
        .unwrap();
    f.run_until("attached to node 2", |f| {
        f.asw.get_attach_state(&v, n2) == AttachState::Attached
    });
}

/// Test_Run_OneVolumeDetachOnOutOfServiceTaintedNode: detached at once, without waiting
/// for the unmount or the (long) timeout.
#[test]
fn run_one_volume_detach_on_out_of_service_tainted_node() {
    let mut f = Fake::new(MAX_LONG_WAIT);
    f.nodes.insert(
        "worker-0".into(),
        NodeInfo {
            ready: false,
            out_of_service: true,
        },
    );
    f.dsw.add_node("worker-0");
    let v = f
        .dsw
        .add_pod(&pod("pod-uid1"), &spec("ReadWriteOnce"), "worker-0")
        .unwrap();
    f.run_until("attach", |f| f.attach_calls == 1);
    assert_eq!(f.detach_calls, 0);
    f.dsw.delete_pod("pod-uid1", &v, "worker-0");
    f.pass();
    assert_eq!((f.attach_calls, f.detach_calls), (1, 1));
    assert_eq!(f.force_detaches, [ForceDetachReason::OutOfService]);
}

/// Test_Run_OneVolumeDetachOnNoOutOfServiceTaintedNode: no taint, still mounted, the
/// long timeout not reached: no detach.
#[test]
fn run_one_volume_detach_on_no_out_of_service_tainted_node() {
    let mut f = Fake::new(MAX_LONG_WAIT);
    f.nodes.insert("worker-0".into(), NodeInfo::default());
    f.dsw.add_node("worker-0");
    let v = f
        .dsw
        .add_pod(&pod("pod-uid1"), &spec("ReadWriteOnce"), "worker-0")
        .unwrap();
    f.run_until("attach", |f| f.attach_calls == 1);
    f.dsw.delete_pod("pod-uid1", &v, "worker-0");
    f.run_for(Duration::from_millis(500));
    assert_eq!((f.attach_calls, f.detach_calls), (1, 0));
}

/// Test_Run_OneVolumeDetachOnUnhealthyNode: a Ready node keeps its mounted volume past
/// the timeout; once it is not Ready the volume is force-detached.
#[test]
fn run_one_volume_detach_on_unhealthy_node() {
    let mut f = Fake::new(MAX_WAIT);
    f.nodes.insert("worker-0".into(), ready(true));
    f.dsw.add_node("worker-0");
    let v = f
        .dsw
        .add_pod(&pod("pod-uid1"), &spec("ReadWriteOnce"), "worker-0")
        .unwrap();
    f.run_until("attach", |f| f.attach_calls == 1);
    f.dsw.delete_pod("pod-uid1", &v, "worker-0");
    f.run_for(MAX_WAIT * 5);
    assert_eq!((f.attach_calls, f.detach_calls), (1, 0));
    f.nodes.insert("worker-0".into(), ready(false));
    f.run_until("detach", |f| f.detach_calls == 1);
    assert_eq!(f.attach_calls, 1);
    assert_eq!(f.force_detaches, [ForceDetachReason::Timeout]);
}

/// Test_Run_OneVolumeDetachOnUnhealthyNodeWithForceDetachOnUnmountDisabled: with
/// --disable-force-detach-on-timeout only the out-of-service taint detaches it.
#[test]
fn run_one_volume_detach_on_unhealthy_node_with_force_detach_on_unmount_disabled() {
    let mut f = Fake::new(MAX_WAIT);
    f.config.disable_force_detach_on_timeout = true;
    f.nodes.insert("worker-0".into(), ready(true));
    f.dsw.add_node("worker-0");
    let v = f
        .dsw
        .add_pod(&pod("pod-uid1"), &spec("ReadWriteOnce"), "worker-0")
        .unwrap();
    f.run_until("attach", |f| f.attach_calls == 1);
    f.dsw.delete_pod("pod-uid1", &v, "worker-0");
    f.run_for(MAX_WAIT * 5);
    assert_eq!(f.detach_calls, 0);
    f.nodes.insert("worker-0".into(), ready(false));
    f.run_for(MAX_WAIT * 5);
    assert_eq!(f.detach_calls, 0);
    assert!(f.force_detaches.is_empty());
    f.nodes.insert(
        "worker-0".into(),
        NodeInfo {
            ready: false,
            out_of_service: true,
        },
    );
    f.run_until("detach", |f| f.detach_calls == 1);
    assert_eq!(f.force_detaches, [ForceDetachReason::OutOfService]);
}

/// Test_ReportMultiAttachError.
#[test]
fn report_multi_attach_error_table() {
    // (name, the nodes and their pods, the event expected)
    type Case = (
        &'static str,
        Vec<(&'static str, Vec<&'static str>)>,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "no pods use the volume",
            vec![("node1", vec!["ns1/pod1"])],
            "Multi-Attach error for volume \"volume-name\" Volume is already exclusively attached to one node and can't be attached to another",
        ),
        (
            "pods in the same namespace use the volume",
            vec![("node1", vec!["ns1/pod1"]), ("node2", vec!["ns1/pod2"])],
            "Multi-Attach error for volume \"volume-name\" Volume is already used by pod(s) pod2",
        ),
        (
            "pods in another namespace use the volume",
            vec![("node1", vec!["ns1/pod1"]), ("node2", vec!["ns2/pod2"])],
            "Multi-Attach error for volume \"volume-name\" Volume is already used by 1 pod(s) in different namespaces",
        ),
        (
            "pods both in the same and another namespace use the volume",
            vec![
                ("node1", vec!["ns1/pod1"]),
                ("node2", vec!["ns2/pod2"]),
                ("node3", vec!["ns1/pod3"]),
            ],
            "Multi-Attach error for volume \"volume-name\" Volume is already used by pod(s) pod3 and 1 pod(s) in different namespaces",
        ),
    ];
    for (name, nodes, want) in cases {
        let mut dsw = DesiredStateOfWorld::default();
        let mut node_names = Vec::new();
        for (node, pods) in &nodes {
            dsw.add_node(node);
            node_names.push(node.to_string());
            for p in pods {
                let (ns, pod_name) = p.split_once('/').unwrap();
                let pod = PodRef {
                    namespace: ns.into(),
                    name: pod_name.into(),
                    uid: format!("{node}-{p}"),
                };
                dsw.add_pod(&pod, &spec("ReadWriteOnce"), node).unwrap();
            }
        }
        let v = dsw
            .get_volumes_to_attach()
            .into_iter()
            .find(|v| v.node_name == "node1")
            .unwrap();
        let events: Vec<String> =
            super::reconciler::report_multi_attach_error(&dsw, &v, &node_names)
                .into_iter()
                .map(|a| match a {
                    Action::Event(e) => {
                        assert!(e.warning);
                        format!("{} {}", e.reason, e.message)
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
        assert_eq!(events, [format!("FailedAttachVolume {want}")], "{name}");
    }
}

/// The reconcile sync (upstream syncStates): a confirmed attachment whose
/// VolumeAttachment is no longer attached is marked detached, and then attached again.
#[test]
fn sync_states_marks_lost_attachments_detached() {
    let mut f = Fake::new(MAX_WAIT);
    f.dsw.add_node("n");
    let v = f
        .dsw
        .add_pod(&pod("p"), &spec("ReadWriteOnce"), "n")
        .unwrap();
    f.pass();
    assert_eq!(f.asw.get_attach_state(&v, "n"), AttachState::Attached);
    assert!(sync_states(&mut f.asw, &|_| true).is_empty());
    let lost = sync_states(&mut f.asw, &|_| false);
    assert_eq!(lost.len(), 1);
    assert_eq!(f.asw.get_attach_state(&v, "n"), AttachState::Detached);
    f.pass();
    assert_eq!(f.attach_calls, 2);
    // Volumes without a spec (from a node's status after a restart) are not verified.
    f.asw
        .mark_volume_as_attached("kubernetes.io/csi/d^x", None, "n", "");
    assert!(sync_states(&mut f.asw, &|_| false).len() == 1);
    assert_eq!(
        f.asw.get_attach_state("kubernetes.io/csi/d^x", "n"),
        AttachState::Attached
    );
}

/// A restart (upstream Test_ADC_VolumeAttachmentRecovery / Test_AttachDetachControllerRecovery,
/// as far as the caches go): a VolumeAttachment no pod wants, of a node that is gone, is
/// uncertain and counted mounted, so it is force-detached once the timeout has passed;
/// one a pod still wants is attached in place, without a second attach being needed.
#[test]
fn recovered_attachments_are_detached_or_kept() {
    let mut f = Fake::new(MAX_WAIT);
    // Recovered from VolumeAttachments: orphan on a gone node, wanted on node n.
    let orphan = spec("ReadWriteOnce");
    let orphan = VolumeSpec {
        volume_handle: "orphan".into(),
        ..orphan
    };
    f.attached
        .insert(orphan.unique_name(), ["gone".into()].into());
    f.asw
        .mark_volume_as_uncertain(&orphan.unique_name(), Some(&orphan), "gone");
    f.dsw.add_node("n");
    let v = f
        .dsw
        .add_pod(&pod("p"), &spec("ReadWriteOnce"), "n")
        .unwrap();
    f.attached.insert(v.clone(), ["n".into()].into());
    f.asw
        .mark_volume_as_uncertain(&v, Some(&spec("ReadWriteOnce")), "n");
    f.pass();
    assert_eq!(
        f.detach_calls, 0,
        "the orphan counts as mounted until the timeout"
    );
    assert_eq!(f.asw.get_attach_state(&v, "n"), AttachState::Attached);
    f.run_until("orphan detached", |f| f.detach_calls == 1);
    assert_eq!(
        f.asw.get_attach_state(&orphan.unique_name(), "gone"),
        AttachState::Detached
    );
    assert_eq!(f.force_detaches, [ForceDetachReason::Timeout]);
}
