//! The node operations on [`FakeKernel`]: order, idempotency and refusals, without root.

use std::sync::Arc;

use super::*;
use crate::capabilities::{Mode, block, capability, mount};
use std::collections::HashMap;

use crate::csi::{
    CapacityRange, ControllerPublishVolumeRequest, ControllerUnpublishVolumeRequest,
    CreateVolumeRequest, DeleteVolumeRequest,
};
use crate::driver::DriverConfig;
use crate::kernel::FakeKernel;

struct T {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    kernel: Arc<FakeKernel>,
    driver: Driver,
}

fn setup() -> T {
    setup_with(false, 0)
}

/// A driver with `--attach-required` (or not) and a `--max-volumes-per-node`.
fn setup_with(attach_required: bool, max_volumes_per_node: i64) -> T {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fs::canonicalize(tmp.path()).unwrap();
    let kernel = Arc::new(FakeKernel::new());
    let config = DriverConfig {
        driver_name: "csi.rekube.io".into(),
        node_id: "n1".into(),
        state_dir: dir.join("state"),
        max_volumes_per_node,
        capacity_bytes: 1 << 30,
        attach_required,
    };
    let driver = Driver::new(config, kernel.clone()).unwrap();
    T {
        _tmp: tmp,
        dir,
        kernel,
        driver,
    }
}

impl T {
    fn create(&self, name: &str, kind: &str) -> String {
        self.driver
            .create_volume(CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 64 << 20,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![capability(Mode::SingleNodeWriter, mount(""))],
                parameters: [("type".to_string(), kind.to_string())].into(),
                ..Default::default()
            })
            .unwrap()
            .volume
            .unwrap()
            .volume_id
    }

    fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn stage(&self, id: &str, staging: &Path, cap: VolumeCapability) -> Result<(), Code> {
        self.driver
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(cap),
                ..Default::default()
            })
            .map_err(|e| e.code())
    }

    fn publish(
        &self,
        id: &str,
        staging: &Path,
        target: &Path,
        cap: VolumeCapability,
        readonly: bool,
    ) -> Result<(), Code> {
        self.driver
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(cap),
                readonly,
                ..Default::default()
            })
            .map_err(|e| e.code())
    }

    fn stage_published(
        &self,
        id: &str,
        staging: &Path,
        cap: VolumeCapability,
        publish_context: &HashMap<String, String>,
    ) -> Result<(), Code> {
        self.driver
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(cap),
                publish_context: publish_context.clone(),
                ..Default::default()
            })
            .map_err(|e| e.code())
    }

    fn controller_publish(
        &self,
        id: &str,
        node: &str,
        cap: VolumeCapability,
        readonly: bool,
    ) -> Result<HashMap<String, String>, Code> {
        self.driver
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: id.into(),
                node_id: node.into(),
                volume_capability: Some(cap),
                readonly,
                ..Default::default()
            })
            .map(|r| r.publish_context)
            .map_err(|e| e.code())
    }

    fn controller_unpublish(&self, id: &str, node: &str) -> Result<(), Code> {
        self.driver
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: id.into(),
                node_id: node.into(),
                ..Default::default()
            })
            .map_err(|e| e.code())
    }

    fn delete(&self, id: &str) -> Result<(), Code> {
        self.driver
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.into(),
                ..Default::default()
            })
            .map_err(|e| e.code())
    }

    fn unstage(&self, id: &str, staging: &Path) -> Result<(), Code> {
        self.driver
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.display().to_string(),
            })
            .map_err(|e| e.code())
    }

    fn unpublish(&self, id: &str, target: &Path) -> Result<(), Code> {
        self.driver
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: id.into(),
                target_path: target.display().to_string(),
            })
            .map_err(|e| e.code())
    }
}

fn rw() -> VolumeCapability {
    capability(Mode::SingleNodeWriter, mount(""))
}

#[test]
fn stage_attaches_formats_once_mounts_then_autoclears() {
    let t = setup();
    let id = t.create("a", "local-disk");
    let staging = t.path("staging");
    t.stage(&id, &staging, rw()).unwrap();
    t.stage(&id, &staging, rw()).unwrap();
    let image = t.dir.join(format!("state/images/{id}.img"));
    assert_eq!(
        t.kernel.calls(),
        [
            format!("loop_attach {}", image.display()),
            "mkfs_ext4 /dev/loop0".to_string(),
            format!("mount /dev/loop0 {}", staging.display()),
            "loop_set_autoclear /dev/loop0".to_string(),
        ]
    );
    t.unstage(&id, &staging).unwrap();
    assert_eq!(t.kernel.loops(), vec![]);
    assert_eq!(t.kernel.mount_points(), vec![]);
    // Staged again: the filesystem is found, not made again.
    t.stage(&id, &staging, rw()).unwrap();
    assert_eq!(
        t.kernel
            .calls()
            .iter()
            .filter(|c| c.starts_with("mkfs"))
            .count(),
        1
    );
    t.unstage(&id, &staging).unwrap();
}

#[test]
fn publish_needs_a_staged_volume_and_binds_read_only_when_asked() {
    let t = setup();
    let id = t.create("a", "local-disk");
    let staging = t.path("staging");
    let target = t.dir.join("pod/target");
    assert_eq!(
        t.publish(&id, &staging, &target, rw(), false),
        Err(Code::FailedPrecondition)
    );
    assert!(!target.exists(), "a failed publish leaves no target");
    t.stage(&id, &staging, rw()).unwrap();
    t.publish(&id, &staging, &target, rw(), true).unwrap();
    t.publish(&id, &staging, &target, rw(), true).unwrap();
    assert_eq!(
        t.publish(&id, &staging, &target, rw(), false),
        Err(Code::AlreadyExists)
    );
    assert_eq!(
        t.kernel.mount_points(),
        vec![(staging.clone(), false), (target.clone(), true)]
    );
    // Unstaging under a publication is refused.
    assert_eq!(t.unstage(&id, &staging), Err(Code::FailedPrecondition));
    t.unpublish(&id, &target).unwrap();
    t.unpublish(&id, &target).unwrap();
    assert!(!target.exists());
    t.unstage(&id, &staging).unwrap();
    assert_eq!(t.kernel.mount_points(), vec![]);
}

#[test]
fn single_writer_volumes_publish_at_one_target() {
    let t = setup();
    let id = t.create("a", "local-disk");
    let staging = t.path("staging");
    let one = capability(Mode::SingleNodeSingleWriter, mount(""));
    t.stage(&id, &staging, one.clone()).unwrap();
    t.publish(&id, &staging, &t.dir.join("t1"), one.clone(), false)
        .unwrap();
    assert_eq!(
        t.publish(&id, &staging, &t.dir.join("t2"), one, false),
        Err(Code::FailedPrecondition)
    );
    // SINGLE_NODE_MULTI_WRITER: several targets on the node.
    let many = capability(Mode::SingleNodeMultiWriter, mount(""));
    t.publish(&id, &staging, &t.dir.join("t3"), many, false)
        .unwrap();
    t.unpublish(&id, &t.dir.join("t1")).unwrap();
    t.unpublish(&id, &t.dir.join("t3")).unwrap();
    t.unstage(&id, &staging).unwrap();
}

#[test]
fn calls_naming_another_volume_leave_its_mounts_alone() {
    let t = setup();
    let a = t.create("a", "local-disk");
    let b = t.create("b", "local-disk");
    let staging = t.path("staging");
    let target = t.dir.join("target");
    t.stage(&a, &staging, rw()).unwrap();
    t.publish(&a, &staging, &target, rw(), false).unwrap();
    // b is not at these paths: nothing of a's is touched.
    t.unpublish(&b, &target).unwrap();
    t.unstage(&b, &staging).unwrap();
    assert_eq!(t.kernel.mount_points().len(), 2);
    // b cannot be staged over a's mount.
    assert_eq!(t.stage(&b, &staging, rw()), Err(Code::AlreadyExists));
    assert_eq!(
        t.kernel.loops().len(),
        1,
        "the failed stage detached what it attached"
    );
    t.unpublish(&a, &target).unwrap();
    t.unstage(&a, &staging).unwrap();
    assert_eq!(t.kernel.loops(), vec![]);
}

#[test]
fn block_volumes_are_attached_not_formatted() {
    let t = setup();
    let id = t.create("a", "local-disk");
    let staging = t.path("staging");
    let target = t.dir.join("dev");
    let cap = capability(Mode::SingleNodeWriter, block());
    t.stage(&id, &staging, cap.clone()).unwrap();
    t.publish(&id, &staging, &target, cap, false).unwrap();
    assert!(target.is_file(), "a block target is a file");
    assert!(!t.kernel.calls().iter().any(|c| c.starts_with("mkfs")));
    t.unpublish(&id, &target).unwrap();
    t.unstage(&id, &staging).unwrap();
    assert_eq!(t.kernel.loops(), vec![]);
}

#[test]
fn requests_are_checked_before_anything_is_touched() {
    let t = setup();
    let id = t.create("h", "hostpath");
    let staging = t.path("staging");
    assert_eq!(
        t.stage(&id, &staging, capability(Mode::SingleNodeWriter, block())),
        Err(Code::InvalidArgument)
    );
    assert_eq!(
        t.stage("rk-0000000000000000", &staging, rw()),
        Err(Code::NotFound)
    );
    assert_eq!(t.stage("", &staging, rw()), Err(Code::InvalidArgument));
    let mut flagged = rw();
    if let Some(crate::csi::volume_capability::AccessType::Mount(m)) = flagged.access_type.as_mut()
    {
        m.mount_flags = vec!["bind".into()];
    }
    assert_eq!(t.stage(&id, &staging, flagged), Err(Code::InvalidArgument));
    assert_eq!(t.kernel.calls(), Vec::<String>::new());
}

#[test]
fn attach_required_publish_attaches_stage_mounts_that_device_unpublish_detaches() {
    let t = setup_with(true, 0);
    let id = t.create("a", "local-disk");
    let image = t.dir.join(format!("state/images/{id}.img"));
    let staging = t.path("staging");
    let ctx = t.controller_publish(&id, "n1", rw(), false).unwrap();
    assert_eq!(
        ctx,
        HashMap::from([("devicePath".to_string(), "/dev/loop0".to_string())])
    );
    // Idempotent: the same answer, nothing attached again.
    assert_eq!(
        t.controller_publish(&id, "n1", rw(), false),
        Ok(ctx.clone())
    );
    assert_eq!(
        t.kernel.calls(),
        [format!("loop_attach {}", image.display())]
    );
    // Incompatible re-publish, another node, an unknown volume.
    assert_eq!(
        t.controller_publish(&id, "n1", rw(), true),
        Err(Code::AlreadyExists)
    );
    assert_eq!(
        t.controller_publish(&id, "n2", rw(), false),
        Err(Code::NotFound)
    );
    assert_eq!(
        t.controller_publish("rk-0000000000000000", "n1", rw(), false),
        Err(Code::NotFound)
    );
    // Stage needs the published device.
    assert_eq!(t.stage(&id, &staging, rw()), Err(Code::FailedPrecondition));
    let elsewhere = HashMap::from([("devicePath".to_string(), "/dev/loop9".to_string())]);
    assert_eq!(
        t.stage_published(&id, &staging, rw(), &elsewhere),
        Err(Code::FailedPrecondition)
    );
    t.stage_published(&id, &staging, rw(), &ctx).unwrap();
    t.stage_published(&id, &staging, rw(), &ctx).unwrap();
    let calls = t.kernel.calls();
    assert_eq!(
        calls[1..],
        [
            "mkfs_ext4 /dev/loop0".to_string(),
            format!("mount /dev/loop0 {}", staging.display()),
        ],
        "stage formats and mounts the published device, attaches nothing, sets no autoclear"
    );
    // Unpublish under a stage is refused; unstage leaves the device attached.
    assert_eq!(
        t.controller_unpublish(&id, "n1"),
        Err(Code::FailedPrecondition)
    );
    t.unstage(&id, &staging).unwrap();
    assert_eq!(t.kernel.loops(), vec![(PathBuf::from("/dev/loop0"), image)]);
    assert_eq!(t.kernel.mount_points(), vec![]);
    assert_eq!(t.delete(&id), Err(Code::FailedPrecondition));
    // Staged again after an unstage: the same device, no new filesystem.
    t.stage_published(&id, &staging, rw(), &ctx).unwrap();
    t.unstage(&id, &staging).unwrap();
    // Unpublish detaches; again, another node and unknown volumes are fine.
    t.controller_unpublish(&id, "n1").unwrap();
    assert_eq!(t.kernel.loops(), vec![]);
    t.controller_unpublish(&id, "n1").unwrap();
    t.controller_unpublish(&id, "").unwrap();
    t.controller_unpublish(&id, "n2").unwrap();
    t.controller_unpublish("rk-0000000000000000", "n1").unwrap();
    assert_eq!(
        t.kernel
            .calls()
            .iter()
            .filter(|c| c.starts_with("mkfs"))
            .count(),
        1
    );
    // Published again after an unpublish: another read-only publication is fine now.
    t.controller_publish(&id, "n1", rw(), true).unwrap();
    t.controller_unpublish(&id, "n1").unwrap();
    t.delete(&id).unwrap();
}

#[test]
fn attach_required_block_and_hostpath_volumes() {
    let t = setup_with(true, 2);
    let disk = t.create("a", "local-disk");
    let dir = t.create("h", "hostpath");
    let other = t.create("b", "local-disk");
    let staging = t.path("staging");
    let target = t.dir.join("dev");
    let cap = capability(Mode::SingleNodeWriter, block());
    let ctx = t
        .controller_publish(&disk, "n1", cap.clone(), false)
        .unwrap();
    t.stage_published(&disk, &staging, cap.clone(), &ctx)
        .unwrap();
    t.publish(&disk, &staging, &target, cap.clone(), false)
        .unwrap();
    // A hostpath volume publishes with no device and stages as before.
    assert_eq!(
        t.controller_publish(&dir, "n1", rw(), false),
        Ok(HashMap::new())
    );
    let hstaging = t.path("hstaging");
    t.stage(&dir, &hstaging, rw()).unwrap();
    // --max-volumes-per-node 2: a third publication is refused.
    assert_eq!(
        t.controller_publish(&other, "n1", rw(), false),
        Err(Code::ResourceExhausted)
    );
    assert_eq!(t.delete(&dir), Err(Code::FailedPrecondition));
    t.unstage(&dir, &hstaging).unwrap();
    t.controller_unpublish(&dir, "n1").unwrap();
    t.unpublish(&disk, &target).unwrap();
    t.unstage(&disk, &staging).unwrap();
    assert_eq!(t.kernel.loops().len(), 1, "unstage leaves the device");
    t.controller_unpublish(&disk, "n1").unwrap();
    assert_eq!(t.kernel.loops(), vec![]);
    assert!(!t.kernel.calls().iter().any(|c| c.starts_with("mkfs")));
    for id in [disk, dir, other] {
        t.delete(&id).unwrap();
    }
}

#[test]
fn without_attach_required_there_is_no_controller_publish() {
    let t = setup();
    let id = t.create("a", "local-disk");
    assert_eq!(
        t.controller_publish(&id, "n1", rw(), false),
        Err(Code::Unimplemented)
    );
    assert_eq!(t.controller_unpublish(&id, "n1"), Err(Code::Unimplemented));
    use crate::csi::controller_service_capability::rpc::Type::{
        PublishReadonly, PublishUnpublishVolume,
    };
    let rpcs = |t: &T, rpc: crate::csi::controller_service_capability::rpc::Type| {
        t.driver
            .controller_get_capabilities()
            .capabilities
            .iter()
            .any(|c| {
                matches!(
                    c.r#type,
                    Some(crate::csi::controller_service_capability::Type::Rpc(r))
                        if r.r#type == rpc as i32
                )
            })
    };
    assert!(!rpcs(&t, PublishUnpublishVolume));
    assert!(!rpcs(&t, PublishReadonly));
    assert!(rpcs(&setup_with(true, 0), PublishUnpublishVolume));
    assert!(rpcs(&setup_with(true, 0), PublishReadonly));
    assert_eq!(t.kernel.calls(), Vec::<String>::new());
}

#[test]
fn attach_required_read_only_publications_mount_read_only_and_never_format() {
    let t = setup_with(true, 0);
    let id = t.create("a", "local-disk");
    let image = t.dir.join(format!("state/images/{id}.img"));
    let staging = t.path("staging");
    let target = t.dir.join("target");
    // Formatted once through a read-write publication.
    let ctx = t.controller_publish(&id, "n1", rw(), false).unwrap();
    t.stage_published(&id, &staging, rw(), &ctx).unwrap();
    t.unstage(&id, &staging).unwrap();
    t.controller_unpublish(&id, "n1").unwrap();
    // Read-only: a write-protected device, mounted read-only, published read-only
    // whatever NodePublishVolume asks.
    let ctx = t.controller_publish(&id, "n1", rw(), true).unwrap();
    assert_eq!(
        t.kernel.calls().last().unwrap(),
        &format!("loop_attach (read-only) {}", image.display())
    );
    t.stage_published(&id, &staging, rw(), &ctx).unwrap();
    t.publish(&id, &staging, &target, rw(), false).unwrap();
    assert_eq!(
        t.kernel.mount_points(),
        vec![(staging.clone(), true), (target.clone(), true)]
    );
    assert_eq!(
        t.kernel
            .calls()
            .iter()
            .filter(|c| c.starts_with("mkfs"))
            .count(),
        1
    );
    t.unpublish(&id, &target).unwrap();
    t.unstage(&id, &staging).unwrap();
    t.controller_unpublish(&id, "n1").unwrap();
    // Never formatted and published read-only: refused, nothing mounted.
    let fresh = t.create("b", "local-disk");
    let ctx = t.controller_publish(&fresh, "n1", rw(), true).unwrap();
    assert_eq!(
        t.stage_published(&fresh, &staging, rw(), &ctx),
        Err(Code::FailedPrecondition)
    );
    assert_eq!(t.kernel.mount_points(), vec![]);
    t.controller_unpublish(&fresh, "n1").unwrap();
    // A hostpath volume published read-only is bound read-only.
    let dir = t.create("h", "hostpath");
    t.controller_publish(&dir, "n1", rw(), true).unwrap();
    t.stage(&dir, &staging, rw()).unwrap();
    assert_eq!(t.kernel.mount_points(), vec![(staging.clone(), true)]);
    t.unstage(&dir, &staging).unwrap();
    t.controller_unpublish(&dir, "n1").unwrap();
    assert_eq!(t.kernel.loops(), vec![]);
    for id in [id, fresh, dir] {
        t.delete(&id).unwrap();
    }
}

/// GetCapacity: local-disk reports what is left of --capacity and the largest request that
/// fits (whole MiB), following each CreateVolume and DeleteVolume; other topologies and
/// capabilities a type cannot serve get nothing; hostpath the state dir's free space.
#[test]
fn get_capacity_follows_what_is_handed_out() {
    use crate::csi::{GetCapacityRequest, Topology};
    let t = setup();
    let ask = |kind: &str, topology: Option<&str>, caps: Vec<VolumeCapability>| {
        t.driver
            .get_capacity(GetCapacityRequest {
                volume_capabilities: caps,
                parameters: [("type".to_string(), kind.to_string())].into(),
                accessible_topology: topology.map(|n| Topology {
                    segments: [(crate::topology::TOPOLOGY_KEY.to_string(), n.to_string())].into(),
                }),
            })
            .map(|r| {
                (
                    r.available_capacity,
                    r.maximum_volume_size,
                    r.minimum_volume_size,
                )
            })
            .map_err(|e| e.code())
    };
    let gib = 1i64 << 30;
    let min = Some(crate::capacity::MIN_VOLUME_BYTES as i64);
    assert_eq!(
        ask("local-disk", Some("n1"), vec![]),
        Ok((gib, Some(gib), min))
    );
    assert_eq!(ask("local-disk", None, vec![]), Ok((gib, Some(gib), min)));
    let id = t.create("v1", "local-disk");
    let left = gib - (64 << 20);
    assert_eq!(
        ask("local-disk", Some("n1"), vec![]),
        Ok((left, Some(left), min))
    );
    // Another node's topology, or a mode local-disk refuses: nothing here.
    assert_eq!(
        ask("local-disk", Some("n2"), vec![]),
        Ok((0, Some(0), None))
    );
    assert_eq!(
        ask(
            "local-disk",
            Some("n1"),
            vec![capability(Mode::MultiNodeMultiWriter, mount(""))]
        ),
        Ok((0, Some(0), None))
    );
    // A hostpath volume takes nothing of --capacity; hostpath reports the filesystem.
    t.create("h1", "hostpath");
    assert_eq!(
        ask("local-disk", Some("n1"), vec![]),
        Ok((left, Some(left), min))
    );
    let (free, max, none) = ask("hostpath", Some("n1"), vec![]).unwrap();
    assert!(
        free > 0 && max == Some(free) && none.is_none(),
        "{free} {max:?}"
    );
    assert_eq!(t.delete(&id), Ok(()));
    assert_eq!(
        ask("local-disk", Some("n1"), vec![]),
        Ok((gib, Some(gib), min))
    );
    assert_eq!(ask("lvm", Some("n1"), vec![]), Err(Code::InvalidArgument));
}

/// ControllerExpandVolume of a local-disk volume, to `mib` MiB.
fn expand(t: &T, id: &str, mib: i64) {
    use crate::csi::ControllerExpandVolumeRequest;
    let r = t
        .driver
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: id.into(),
            capacity_range: Some(CapacityRange {
                required_bytes: mib << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (r.capacity_bytes, r.node_expansion_required),
        (mib << 20, true)
    );
}

/// Expanded while unstaged: the next stage grows the ext4 offline (refresh the device,
/// e2fsck, resize2fs, all before the mount); a volume whose filesystem already fills it
/// is staged without them; a read-only stage never touches the filesystem.
#[test]
fn stage_grows_an_expanded_filesystem_offline_before_mounting() {
    let t = setup();
    let id = t.create("a", "local-disk");
    let image = t.dir.join(format!("state/images/{id}.img"));
    let staging = t.path("staging");
    t.stage(&id, &staging, rw()).unwrap();
    t.unstage(&id, &staging).unwrap();
    assert_eq!(t.kernel.filesystem_size(&image), Some(64 << 20));

    // Staged again without an expansion: nothing but attach, mount, autoclear.
    let before = t.kernel.calls().len();
    t.stage(&id, &staging, rw()).unwrap();
    assert_eq!(
        t.kernel.calls()[before..],
        [
            format!("loop_attach {}", image.display()),
            format!("mount /dev/loop0 {}", staging.display()),
            "loop_set_autoclear /dev/loop0".to_string(),
        ]
    );
    t.unstage(&id, &staging).unwrap();

    // Read-only staging of an expanded volume: left as it is.
    expand(&t, &id, 128);
    let before = t.kernel.calls().len();
    t.stage(
        &id,
        &staging,
        capability(Mode::SingleNodeReaderOnly, mount("")),
    )
    .unwrap();
    assert!(
        !t.kernel.calls()[before..]
            .iter()
            .any(|c| c.starts_with("e2fsck") || c.starts_with("resize2fs")),
        "{:?}",
        &t.kernel.calls()[before..]
    );
    assert_eq!(t.kernel.filesystem_size(&image), Some(64 << 20));
    t.unstage(&id, &staging).unwrap();

    // Read-write: grown before the mount.
    let before = t.kernel.calls().len();
    t.stage(&id, &staging, rw()).unwrap();
    assert_eq!(
        t.kernel.calls()[before..],
        [
            format!("loop_attach {}", image.display()),
            "loop_refresh_capacity /dev/loop0".to_string(),
            "e2fsck /dev/loop0".to_string(),
            "resize2fs /dev/loop0".to_string(),
            format!("mount /dev/loop0 {}", staging.display()),
            "loop_set_autoclear /dev/loop0".to_string(),
        ]
    );
    assert_eq!(t.kernel.filesystem_size(&image), Some(128 << 20));
    // Staged: the same stage again is a no-op; NodeExpandVolume finds nothing to grow.
    t.stage(&id, &staging, rw()).unwrap();
    t.unstage(&id, &staging).unwrap();
    assert_eq!(t.kernel.loops(), vec![]);
    assert_eq!(t.kernel.mount_points(), vec![]);
}

/// Under `--attach-required` the device ControllerPublishVolume attached is older than
/// the expansion: it re-reads the image's size before the offline resize.
#[test]
fn attach_required_stage_grows_the_published_device() {
    let t = setup_with(true, 0);
    let id = t.create("a", "local-disk");
    let image = t.dir.join(format!("state/images/{id}.img"));
    let staging = t.path("staging");
    let context = t.controller_publish(&id, "n1", rw(), false).unwrap();
    t.stage_published(&id, &staging, rw(), &context).unwrap();
    t.unstage(&id, &staging).unwrap();
    expand(&t, &id, 96);
    let before = t.kernel.calls().len();
    t.stage_published(&id, &staging, rw(), &context).unwrap();
    assert_eq!(
        t.kernel.calls()[before..],
        [
            "loop_refresh_capacity /dev/loop0".to_string(),
            "e2fsck /dev/loop0".to_string(),
            "resize2fs /dev/loop0".to_string(),
            format!("mount /dev/loop0 {}", staging.display()),
        ]
    );
    assert_eq!(t.kernel.filesystem_size(&image), Some(96 << 20));
    t.unstage(&id, &staging).unwrap();
    t.controller_unpublish(&id, "n1").unwrap();
}

/// NodeExpandVolume on a mounted volume grows it online (the fake kernel has every
/// capability); without `e2fsck` the fake's offline resize2fs refuses, as the real one.
#[test]
fn node_expand_grows_the_mounted_filesystem_online() {
    let t = setup();
    let id = t.create("a", "local-disk");
    let image = t.dir.join(format!("state/images/{id}.img"));
    let staging = t.path("staging");
    t.stage(&id, &staging, rw()).unwrap();
    expand(&t, &id, 128);
    let grown = t
        .driver
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: id.clone(),
            volume_path: staging.display().to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: 128 << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(grown.capacity_bytes, 128 << 20);
    assert_eq!(t.kernel.filesystem_size(&image), Some(128 << 20));
    t.unstage(&id, &staging).unwrap();
    assert!(t.kernel.resize2fs(Path::new("/dev/loop9")).is_err());
}

fn xfs() -> VolumeCapability {
    capability(Mode::SingleNodeWriter, mount("xfs"))
}

impl T {
    /// CreateVolume of a local-disk volume of `mib` MiB (limit `limit_mib`, 0: none) for
    /// `caps`.
    fn create_for(
        &self,
        name: &str,
        mib: i64,
        limit_mib: i64,
        caps: Vec<VolumeCapability>,
    ) -> Result<crate::csi::Volume, crate::controller::ControllerError> {
        self.driver
            .create_volume(CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: mib << 20,
                    limit_bytes: limit_mib << 20,
                }),
                volume_capabilities: caps,
                parameters: [("type".to_string(), "local-disk".to_string())].into(),
                ..Default::default()
            })
            .map(|r| r.volume.unwrap())
    }

    fn stage_err(&self, id: &str, staging: &Path, cap: VolumeCapability) -> NodeError {
        self.driver
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(cap),
                ..Default::default()
            })
            .unwrap_err()
    }

    fn node_expand(&self, id: &str, path: &Path, mib: i64) -> Result<i64, NodeError> {
        self.driver
            .node_expand_volume(NodeExpandVolumeRequest {
                volume_id: id.into(),
                volume_path: path.display().to_string(),
                capacity_range: Some(CapacityRange {
                    required_bytes: mib << 20,
                    limit_bytes: 0,
                }),
                ..Default::default()
            })
            .map(|r| r.capacity_bytes)
    }
}

/// An xfs capability: CreateVolume rounds the volume up to mkfs.xfs's 300 MiB (within
/// limit_bytes; below it OUT_OF_RANGE, saying why); an unknown fs_type is INVALID_ARGUMENT
/// naming it, at CreateVolume, ValidateVolumeCapabilities and NodeStageVolume alike.
#[test]
fn xfs_volumes_are_at_least_300_mib_and_unknown_filesystems_are_refused_early() {
    let t = setup();
    let v = t.create_for("x", 64, 0, vec![xfs()]).unwrap();
    assert_eq!(v.capacity_bytes, 300 << 20, "rounded up to xfs's minimum");
    let image = t.dir.join(format!("state/images/{}.img", v.volume_id));
    assert_eq!(fs::metadata(&image).unwrap().len(), 300 << 20);
    // Repeated: the same volume.
    assert_eq!(t.create_for("x", 64, 0, vec![xfs()]).unwrap(), v);
    // Within the limit: the minimum; larger requests as they are.
    assert_eq!(
        t.create_for("y", 64, 400, vec![xfs()])
            .unwrap()
            .capacity_bytes,
        300 << 20
    );
    assert_eq!(
        t.create_for("z", 320, 0, vec![xfs(), rw()])
            .unwrap()
            .capacity_bytes,
        320 << 20
    );
    let err = t.create_for("small", 64, 100, vec![xfs()]).unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert_eq!(
        err.to_string(),
        "volume \"small\": xfs needs at least 314572800 bytes (the smallest filesystem mkfs.xfs makes), above limit_bytes 104857600"
    );
    // An ext4 of 64 MiB cannot be had again as xfs under the same name.
    t.create_for("e", 64, 0, vec![rw()]).unwrap();
    let err = t.create_for("e", 64, 0, vec![xfs()]).unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        err.to_string()
            .ends_with("incompatible with this request: xfs needs at least 314572800 bytes"),
        "{err}"
    );
    let btrfs = capability(Mode::SingleNodeWriter, mount("btrfs"));
    let err = t.create_for("b", 512, 0, vec![btrfs.clone()]).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "volume \"b\": volume capability: local-disk volumes do not support fs_type \"btrfs\" (they take ext4, the default, or xfs)"
    );
    // ValidateVolumeCapabilities: xfs confirmed on a volume big enough for it.
    let validate = |id: &str, cap: VolumeCapability| {
        t.driver
            .validate_volume_capabilities(crate::csi::ValidateVolumeCapabilitiesRequest {
                volume_id: id.into(),
                volume_capabilities: vec![cap],
                ..Default::default()
            })
            .unwrap()
    };
    assert!(validate(&v.volume_id, xfs()).confirmed.is_some());
    let ext4_id = volume_id_for_name(&t, "e");
    let r = validate(&ext4_id, xfs());
    assert!(r.confirmed.is_none());
    assert_eq!(
        r.message,
        format!(
            "volume {ext4_id}: its 67108864 bytes are too small for xfs, which needs at least 314572800"
        )
    );
    let r = validate(&v.volume_id, btrfs.clone());
    assert!(r.confirmed.is_none());
    assert!(r.message.contains("fs_type \"btrfs\""), "{}", r.message);
    // NodeStageVolume: refused before anything is attached.
    let staging = t.path("staging");
    let err = t.stage_err(&v.volume_id, &staging, btrfs);
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(t.kernel.calls(), Vec::<String>::new());
}

fn volume_id_for_name(t: &T, name: &str) -> String {
    t.create_for(name, 64, 0, vec![rw()]).unwrap().volume_id
}

/// An xfs volume: made with mkfs.xfs on the first stage only, mounted as xfs (its root is
/// inode 128, not ext4's 2: recognised all the same), published, measured and unstaged
/// as an ext4 one.
#[test]
fn stage_makes_and_mounts_an_xfs_once() {
    let t = setup();
    let id = t.create_for("x", 300, 0, vec![xfs()]).unwrap().volume_id;
    let image = t.dir.join(format!("state/images/{id}.img"));
    let staging = t.path("staging");
    let target = t.dir.join("pod/target");
    t.stage(&id, &staging, xfs()).unwrap();
    t.stage(&id, &staging, xfs()).unwrap();
    assert_eq!(
        t.kernel.calls(),
        [
            format!("loop_attach {}", image.display()),
            "mkfs_xfs /dev/loop0".to_string(),
            format!("mount /dev/loop0 {}", staging.display()),
            "loop_set_autoclear /dev/loop0".to_string(),
        ]
    );
    let mounts = t.kernel.mounts().unwrap();
    assert_eq!(
        (
            mounts[0].fs_type.as_str(),
            t.kernel.stat(&staging).unwrap().unwrap().ino
        ),
        ("xfs", 128)
    );
    t.publish(&id, &staging, &target, xfs(), false).unwrap();
    t.publish(&id, &staging, &target, xfs(), false).unwrap();
    let stats = t
        .driver
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: target.display().to_string(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(stats.usage.len(), 2);
    assert_eq!(t.unstage(&id, &staging), Err(Code::FailedPrecondition));
    t.unpublish(&id, &target).unwrap();
    t.unstage(&id, &staging).unwrap();
    assert_eq!(t.kernel.loops(), vec![]);
    assert_eq!(t.kernel.mount_points(), vec![]);
    t.stage(&id, &staging, xfs()).unwrap();
    assert_eq!(
        t.kernel
            .calls()
            .iter()
            .filter(|c| c.starts_with("mkfs"))
            .count(),
        1,
        "formatted once"
    );
    t.unstage(&id, &staging).unwrap();
    t.delete(&id).unwrap();
}

/// A filesystem of another type than the capability asks is never formatted over nor
/// mounted (mount-utils' FilesystemMismatch), and a volume too small for xfs is refused
/// before mkfs.xfs; the loop device attached for the stage is detached again.
#[test]
fn stage_refuses_another_filesystem_and_a_volume_too_small_for_xfs() {
    let t = setup();
    let staging = t.path("staging");
    let ext4 = t.create_for("e", 320, 0, vec![rw()]).unwrap().volume_id;
    t.stage(&ext4, &staging, rw()).unwrap();
    t.unstage(&ext4, &staging).unwrap();
    let err = t.stage_err(&ext4, &staging, xfs());
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.to_string(),
        format!(
            "volume {ext4}: /dev/loop0 holds a filesystem of type ext4, not xfs (the volume capability's fs_type)"
        )
    );
    assert_eq!(t.kernel.loops(), vec![]);
    let x = t.create_for("x", 300, 0, vec![xfs()]).unwrap().volume_id;
    t.stage(&x, &staging, xfs()).unwrap();
    t.unstage(&x, &staging).unwrap();
    let err = t.stage_err(&x, &staging, rw());
    assert_eq!(
        err.to_string(),
        format!(
            "volume {x}: /dev/loop0 holds a filesystem of type xfs, not ext4 (the volume capability's fs_type)"
        )
    );
    // A 64 MiB volume made for ext4 (a static PV saying xfs, say).
    let small = t.create_for("s", 64, 0, vec![rw()]).unwrap().volume_id;
    let before = t.kernel.calls().len();
    let err = t.stage_err(&small, &staging, xfs());
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.to_string(),
        format!(
            "volume {small}: 67108864 bytes are too small for xfs, which needs at least 314572800 (make the volume that big)"
        )
    );
    assert!(
        !t.kernel.calls()[before..]
            .iter()
            .any(|c| c.starts_with("mkfs")),
        "{:?}",
        &t.kernel.calls()[before..]
    );
    assert_eq!(t.kernel.loops(), vec![]);
    assert_eq!(t.kernel.mount_points(), vec![]);
}

/// Expanded while unstaged: the next writable stage mounts the xfs, then grows it there
/// (xfs grows only mounted): refresh, mount, xfs_growfs on the staging path, autoclear;
/// no e2fsck or resize2fs. A read-only stage leaves it alone.
#[test]
fn stage_grows_an_expanded_xfs_after_mounting() {
    let t = setup();
    let id = t.create_for("x", 320, 0, vec![xfs()]).unwrap().volume_id;
    let image = t.dir.join(format!("state/images/{id}.img"));
    let staging = t.path("staging");
    t.stage(&id, &staging, xfs()).unwrap();
    t.unstage(&id, &staging).unwrap();
    expand(&t, &id, 640);
    let before = t.kernel.calls().len();
    t.stage(
        &id,
        &staging,
        capability(Mode::SingleNodeReaderOnly, mount("xfs")),
    )
    .unwrap();
    assert!(
        !t.kernel.calls()[before..]
            .iter()
            .any(|c| c.starts_with("xfs_growfs")),
        "{:?}",
        &t.kernel.calls()[before..]
    );
    assert_eq!(t.kernel.filesystem_size(&image), Some(320 << 20));
    t.unstage(&id, &staging).unwrap();

    let before = t.kernel.calls().len();
    t.stage(&id, &staging, xfs()).unwrap();
    assert_eq!(
        t.kernel.calls()[before..],
        [
            format!("loop_attach {}", image.display()),
            "loop_refresh_capacity /dev/loop0".to_string(),
            format!("mount /dev/loop0 {}", staging.display()),
            format!("xfs_growfs {}", staging.display()),
            "loop_set_autoclear /dev/loop0".to_string(),
        ]
    );
    assert_eq!(t.kernel.filesystem_size(&image), Some(640 << 20));
    // Grown: staged again, nothing more to do.
    t.unstage(&id, &staging).unwrap();
    let before = t.kernel.calls().len();
    t.stage(&id, &staging, xfs()).unwrap();
    assert!(
        !t.kernel.calls()[before..]
            .iter()
            .any(|c| c.starts_with("xfs_growfs") || c.starts_with("loop_refresh")),
        "{:?}",
        &t.kernel.calls()[before..]
    );
    t.unstage(&id, &staging).unwrap();
    assert_eq!(t.kernel.loops(), vec![]);
    assert_eq!(t.kernel.mount_points(), vec![]);
}

/// NodeExpandVolume on a published xfs: the device refreshed, then xfs_growfs on the
/// volume path (online; never resize2fs); an ext4 still gets resize2fs on the device.
#[test]
fn node_expand_grows_a_mounted_xfs_with_xfs_growfs() {
    let t = setup();
    let id = t.create_for("x", 320, 0, vec![xfs()]).unwrap().volume_id;
    let image = t.dir.join(format!("state/images/{id}.img"));
    let staging = t.path("staging");
    let target = t.dir.join("pod/target");
    t.stage(&id, &staging, xfs()).unwrap();
    t.publish(&id, &staging, &target, xfs(), false).unwrap();
    expand(&t, &id, 640);
    let before = t.kernel.calls().len();
    assert_eq!(t.node_expand(&id, &target, 640).unwrap(), 640 << 20);
    assert_eq!(
        t.kernel.calls()[before..],
        [
            "loop_refresh_capacity /dev/loop0".to_string(),
            format!("xfs_growfs {}", target.display()),
        ]
    );
    assert_eq!(t.kernel.filesystem_size(&image), Some(640 << 20));
    t.unpublish(&id, &target).unwrap();
    t.unstage(&id, &staging).unwrap();

    // An ext4 beside it: resize2fs on the device.
    let e = t.create_for("e", 64, 0, vec![rw()]).unwrap().volume_id;
    t.stage(&e, &staging, rw()).unwrap();
    expand(&t, &e, 128);
    let before = t.kernel.calls().len();
    t.node_expand(&e, &staging, 128).unwrap();
    assert_eq!(
        t.kernel.calls()[before..],
        [
            "loop_refresh_capacity /dev/loop0".to_string(),
            "resize2fs /dev/loop0".to_string(),
        ]
    );
    t.unstage(&e, &staging).unwrap();
    // The fake's xfsprogs, as the real ones, grow only a mounted xfs.
    assert!(t.kernel.xfs_growfs(&staging).is_err());
}

/// GetCapacity for xfs (a capability, or the class's fsType parameter as capacity
/// tracking sends it): 300 MiB the smallest volume, nothing the largest when less is left.
#[test]
fn get_capacity_counts_xfs_minimum() {
    use crate::csi::GetCapacityRequest;
    let t = setup();
    let ask = |caps: Vec<VolumeCapability>, fs_type: Option<&str>| {
        let mut parameters: HashMap<String, String> =
            [("type".to_string(), "local-disk".to_string())].into();
        if let Some(f) = fs_type {
            parameters.insert(crate::parameters::FS_TYPE_PARAMETER.into(), f.into());
        }
        let r = t
            .driver
            .get_capacity(GetCapacityRequest {
                volume_capabilities: caps,
                parameters,
                accessible_topology: None,
            })
            .unwrap();
        (
            r.available_capacity >> 20,
            r.maximum_volume_size.map(|b| b >> 20),
            r.minimum_volume_size.map(|b| b >> 20),
        )
    };
    assert_eq!(ask(vec![], None), (1024, Some(1024), Some(16)));
    assert_eq!(ask(vec![xfs()], None), (1024, Some(1024), Some(300)));
    assert_eq!(ask(vec![], Some("xfs")), (1024, Some(1024), Some(300)));
    assert_eq!(ask(vec![], Some("ext4")), (1024, Some(1024), Some(16)));
    assert_eq!(ask(vec![], Some("btrfs")), (0, Some(0), None));
    // 800 MiB handed out: 224 MiB left, too little for any xfs.
    t.create_for("a", 800, 0, vec![rw()]).unwrap();
    assert_eq!(ask(vec![rw()], None), (224, Some(224), Some(16)));
    assert_eq!(ask(vec![xfs()], None), (224, Some(0), Some(300)));
    let err = t.create_for("b", 64, 0, vec![xfs()]).unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
}
