//! The node operations on [`FakeKernel`]: order, idempotency and refusals, without root.

use std::sync::Arc;

use super::*;
use crate::capabilities::{Mode, block, capability, mount};
use crate::csi::{CapacityRange, CreateVolumeRequest};
use crate::driver::DriverConfig;
use crate::kernel::FakeKernel;

struct T {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    kernel: Arc<FakeKernel>,
    driver: Driver,
}

fn setup() -> T {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fs::canonicalize(tmp.path()).unwrap();
    let kernel = Arc::new(FakeKernel::new());
    let config = DriverConfig {
        driver_name: "csi.rekube.io".into(),
        node_id: "n1".into(),
        state_dir: dir.join("state"),
        max_volumes_per_node: 0,
        capacity_bytes: 1 << 30,
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
