//! rekube-csi on the real kernel, as root: the driver's operations called directly (no
//! gRPC) with [`LinuxKernel`]: loop device + ext4 + mounts round trip, formatting only on
//! the first stage, online expansion seen by statvfs (with CAP_SYS_RESOURCE; without it
//! its error), an expansion while unstaged grown offline at the next stage; the same for
//! xfs (`fs_type: xfs`: mkfs.xfs, online growth with xfs_growfs, which needs no
//! CAP_SYS_RESOURCE and so runs everywhere, growth at the next stage after the mount, a
//! stage as xfs of an ext4 refused); block publish, read-only publish
//! refusing writes, hostpath, a failed stage undoing itself, the loop device kept from
//! ControllerPublishVolume to ControllerUnpublishVolume under `--attach-required` (stage
//! and unstage leave it, the data survives; published read-only, a write-protected device
//! mounted read-only), and nothing left after any
//! test (loop devices on its images, mounts under its directory). A guard unmounts and
//! detaches whatever a failing test leaves, so a failure does not leak either.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rekube_crds::testing::missing_prerequisite;
use rekube_csi::capacity::MIB;
use rekube_csi::csi::volume_capability::access_mode::Mode;
use rekube_csi::csi::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use rekube_csi::csi::*;
use rekube_csi::driver::{Driver, DriverConfig};
use rekube_csi::kernel::{Kernel, LinuxKernel, has_cap_sys_resource};
use tonic::Code;

struct Env {
    dir: PathBuf,
    driver: Driver,
    _tmp: tempfile::TempDir,
}

/// Loop devices whose backing file lies under `dir`.
fn loops_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(backing) = fs::read_to_string(entry.path().join("loop/backing_file"))
            && Path::new(backing.trim_end()).starts_with(dir)
        {
            found.push(PathBuf::from("/dev").join(entry.file_name()));
        }
    }
    found
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    LinuxKernel
        .mounts()
        .unwrap()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect()
}

impl Drop for Env {
    fn drop(&mut self) {
        let mounts = mounts_under(&self.dir);
        let loops = loops_under(&self.dir);
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
        for l in &loops {
            let _ = LinuxKernel.loop_detach(l);
        }
        if !std::thread::panicking() {
            assert_eq!(
                mounts,
                Vec::<PathBuf>::new(),
                "mounts left under {}",
                self.dir.display()
            );
            assert_eq!(
                loops,
                Vec::<PathBuf>::new(),
                "loop devices left on images under {}",
                self.dir.display()
            );
        }
    }
}

fn env() -> Option<Env> {
    env_with(false)
}

/// A driver with `--attach-required` or not.
fn env_with(attach_required: bool) -> Option<Env> {
    if !nix::unistd::geteuid().is_root() {
        missing_prerequisite("rekube-csi's kernel tests need root (loop devices, mounts)");
        return None;
    }
    let tmp = tempfile::Builder::new()
        .prefix("rekube-csi-kernel-")
        .tempdir()
        .unwrap();
    let dir = fs::canonicalize(tmp.path()).unwrap();
    let config = DriverConfig {
        driver_name: "csi.rekube.io".into(),
        node_id: "node-1".into(),
        state_dir: dir.join("state"),
        max_volumes_per_node: 0,
        capacity_bytes: 1024 * MIB,
        attach_required,
    };
    let driver = Driver::new(config, Arc::new(LinuxKernel)).unwrap();
    Some(Env {
        dir,
        driver,
        _tmp: tmp,
    })
}

fn capability(mode: Mode, block: bool) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode { mode: mode as i32 }),
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume::default())
        }),
    }
}

/// A SINGLE_NODE_WRITER mount of `fs_type`.
fn mount_of(fs_type: &str) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.into(),
            ..Default::default()
        })),
    }
}

impl Env {
    fn create(&self, name: &str, bytes: i64, kind: &str) -> String {
        let response = self
            .driver
            .create_volume(CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: bytes,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![capability(Mode::SingleNodeWriter, false)],
                parameters: [("type".to_string(), kind.to_string())].into(),
                ..Default::default()
            })
            .unwrap();
        response.volume.unwrap().volume_id
    }

    fn stage(&self, id: &str, block: bool) -> Result<PathBuf, Code> {
        let staging = self.dir.join("staging").join(id);
        fs::create_dir_all(&staging).unwrap();
        self.driver
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(capability(Mode::SingleNodeWriter, block)),
                ..Default::default()
            })
            .map_err(|e| e.code())?;
        Ok(staging)
    }

    fn publish(
        &self,
        id: &str,
        target: &str,
        block: bool,
        readonly: bool,
    ) -> Result<PathBuf, Code> {
        let target = self.dir.join("pods").join(target);
        self.driver
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: id.into(),
                staging_target_path: self.dir.join("staging").join(id).display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(capability(Mode::SingleNodeWriter, block)),
                readonly,
                ..Default::default()
            })
            .map_err(|e| e.code())?;
        Ok(target)
    }

    fn unpublish(&self, id: &str, target: &Path) {
        self.driver
            .node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: id.into(),
                target_path: target.display().to_string(),
            })
            .unwrap();
        assert!(!target.exists(), "{} left", target.display());
    }

    fn unstage(&self, id: &str) {
        self.driver
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: self.dir.join("staging").join(id).display().to_string(),
            })
            .unwrap();
    }

    fn delete(&self, id: &str) -> Result<(), Code> {
        self.driver
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.into(),
                ..Default::default()
            })
            .map_err(|e| e.code())
    }

    /// CreateVolume of a local-disk volume for a mount of `fs_type`; its id and size.
    fn create_fs(&self, name: &str, bytes: i64, fs_type: &str) -> (String, i64) {
        let volume = self
            .driver
            .create_volume(CreateVolumeRequest {
                name: name.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: bytes,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![mount_of(fs_type)],
                parameters: [("type".to_string(), "local-disk".to_string())].into(),
                ..Default::default()
            })
            .unwrap()
            .volume
            .unwrap();
        (volume.volume_id, volume.capacity_bytes)
    }

    /// NodeStageVolume then NodePublishVolume at `target` of a mount of `fs_type`.
    fn stage_and_publish(&self, id: &str, fs_type: &str, target: &str) -> Result<PathBuf, Code> {
        let staging = self.dir.join("staging").join(id);
        fs::create_dir_all(&staging).unwrap();
        self.driver
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(mount_of(fs_type)),
                ..Default::default()
            })
            .map_err(|e| e.code())?;
        let target = self.dir.join("pods").join(target);
        self.driver
            .node_publish_volume(NodePublishVolumeRequest {
                volume_id: id.into(),
                staging_target_path: staging.display().to_string(),
                target_path: target.display().to_string(),
                volume_capability: Some(mount_of(fs_type)),
                ..Default::default()
            })
            .map_err(|e| e.code())?;
        Ok(target)
    }

    fn expand(&self, id: &str, bytes: u64) {
        let expanded = self
            .driver
            .controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: id.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: bytes as i64,
                    limit_bytes: 0,
                }),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            (expanded.capacity_bytes, expanded.node_expansion_required),
            (bytes as i64, true)
        );
    }

    fn stats(&self, id: &str, path: &Path) -> Vec<VolumeUsage> {
        self.driver
            .node_get_volume_stats(NodeGetVolumeStatsRequest {
                volume_id: id.into(),
                volume_path: path.display().to_string(),
                ..Default::default()
            })
            .unwrap()
            .usage
    }
}

#[test]
fn ext4_round_trip_formats_once_and_expands_online() {
    let Some(env) = env() else { return };
    let id = env.create("data", (64 * MIB) as i64, "local-disk");
    let image = env.dir.join(format!("state/images/{id}.img"));
    assert_eq!(fs::metadata(&image).unwrap().len(), 64 * MIB);
    // Sparse: the image takes (almost) no blocks before it is formatted.
    assert!(std::os::unix::fs::MetadataExt::blocks(&fs::metadata(&image).unwrap()) < 64);

    env.stage(&id, false).unwrap();
    env.stage(&id, false).unwrap(); // idempotent
    let target = env.publish(&id, "a", false, false).unwrap();
    env.publish(&id, "a", false, false).unwrap(); // idempotent
    fs::write(target.join("hello"), b"kept").unwrap();
    let usage = env.stats(&id, &target);
    let total = usage[0].total as u64;
    assert!(
        total > 48 * MIB && total <= 64 * MIB,
        "ext4 of {total} bytes on a 64 MiB volume"
    );
    assert_eq!(usage[1].unit, volume_usage::Unit::Inodes as i32);

    // Unstaged and staged again: the filesystem (and the file) is kept, not re-made.
    env.unpublish(&id, &target);
    env.unstage(&id);
    assert_eq!(loops_under(&env.dir), Vec::<PathBuf>::new());
    env.stage(&id, false).unwrap();
    let target = env.publish(&id, "a", false, false).unwrap();
    assert_eq!(fs::read(target.join("hello")).unwrap(), b"kept");

    // Online expansion: the image grows, then the loop device and ext4, still mounted.
    let expanded = env
        .driver
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: (128 * MIB) as i64,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        (expanded.capacity_bytes, expanded.node_expansion_required),
        ((128 * MIB) as i64, true)
    );
    let node = env.driver.node_expand_volume(NodeExpandVolumeRequest {
        volume_id: id.clone(),
        volume_path: target.display().to_string(),
        capacity_range: Some(CapacityRange {
            required_bytes: (128 * MIB) as i64,
            limit_bytes: 0,
        }),
        ..Default::default()
    });
    // The loop device has the new size either way.
    let device = loops_under(&env.dir).pop().unwrap();
    assert_eq!(LinuxKernel.device_size(&device).unwrap(), 128 * MIB);
    if has_cap_sys_resource() {
        assert_eq!(node.unwrap().capacity_bytes, (128 * MIB) as i64);
        let total = env.stats(&id, &target)[0].total as u64;
        assert!(
            total > 112 * MIB && total <= 128 * MIB,
            "ext4 of {total} bytes after expansion to 128 MiB"
        );
    } else {
        // ext4's online resize is EPERM without CAP_SYS_RESOURCE (some sandboxes drop
        // it): the error says so, and the filesystem is untouched.
        let err = node.unwrap_err();
        assert_eq!(err.code(), Code::Internal);
        assert!(
            err.to_string()
                .contains("online resize needs CAP_SYS_RESOURCE"),
            "{err}"
        );
        eprintln!("no CAP_SYS_RESOURCE here: online resize2fs checked for its error only");
    }
    assert_eq!(fs::read(target.join("hello")).unwrap(), b"kept");

    // In use: DeleteVolume refuses while the image is attached.
    assert_eq!(env.delete(&id), Err(Code::FailedPrecondition));
    env.unpublish(&id, &target);
    env.unstage(&id);
    env.delete(&id).unwrap();
    assert!(!image.exists());
}

/// Expanded while unstaged: the next stage grows the ext4 offline (e2fsck, resize2fs on
/// the unmounted loop device), which needs no CAP_SYS_RESOURCE, so this runs the same on
/// every machine; the data is kept, and NodeExpandVolume afterwards has nothing to do
/// (resize2fs on a mounted filesystem that fills its device does not call the kernel).
#[test]
fn an_expansion_while_unstaged_is_grown_offline_at_the_next_stage() {
    let Some(env) = env() else { return };
    let id = env.create("offline", (64 * MIB) as i64, "local-disk");
    env.stage(&id, false).unwrap();
    let target = env.publish(&id, "a", false, false).unwrap();
    fs::write(target.join("hello"), b"kept").unwrap();
    let before = env.stats(&id, &target)[0].total as u64;
    assert!(before <= 64 * MIB, "{before}");
    env.unpublish(&id, &target);
    env.unstage(&id);

    let expanded = env
        .driver
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: (128 * MIB) as i64,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .unwrap();
    assert!(expanded.node_expansion_required);
    env.stage(&id, false).unwrap();
    let target = env.publish(&id, "a", false, false).unwrap();
    let total = env.stats(&id, &target)[0].total as u64;
    assert!(
        total > 112 * MIB && total <= 128 * MIB,
        "ext4 of {total} bytes after growing offline to 128 MiB (was {before})"
    );
    assert_eq!(fs::read(target.join("hello")).unwrap(), b"kept");
    let device = loops_under(&env.dir).pop().unwrap();
    assert_eq!(LinuxKernel.ext4_size(&device).unwrap(), 128 * MIB);
    let node = env
        .driver
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: id.clone(),
            volume_path: target.display().to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: (128 * MIB) as i64,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("NodeExpandVolume of a grown filesystem: {e}"));
    assert_eq!(node.capacity_bytes, (128 * MIB) as i64);
    env.unpublish(&id, &target);
    env.unstage(&id);
    env.delete(&id).unwrap();
}

#[test]
fn read_only_publish_refuses_writes() {
    let Some(env) = env() else { return };
    let id = env.create("ro", (32 * MIB) as i64, "local-disk");
    env.stage(&id, false).unwrap();
    let rw = env.publish(&id, "rw", false, false).unwrap();
    let ro = env.publish(&id, "ro", false, true).unwrap();
    fs::write(rw.join("f"), b"x").unwrap();
    let err = fs::write(ro.join("g"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_erofs()), "{err}");
    assert_eq!(fs::read(ro.join("f")).unwrap(), b"x");
    // The same target asked for read-write: incompatible with what is there.
    assert_eq!(
        env.publish(&id, "ro", false, false),
        Err(Code::AlreadyExists)
    );
    // Unstaging while published is refused; the mounts stay.
    assert_eq!(
        env.driver
            .node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: env.dir.join("staging").join(&id).display().to_string(),
            })
            .unwrap_err()
            .code(),
        Code::FailedPrecondition
    );
    env.unpublish(&id, &ro);
    env.unpublish(&id, &rw);
    env.unstage(&id);
    env.delete(&id).unwrap();
}

fn libc_erofs() -> i32 {
    nix::errno::Errno::EROFS as i32
}

#[test]
fn block_volumes_publish_the_loop_device() {
    let Some(env) = env() else { return };
    let id = env.create("raw", (32 * MIB) as i64, "local-disk");
    env.stage(&id, true).unwrap();
    let device = loops_under(&env.dir)
        .pop()
        .expect("staging attached the image");
    let target = env.publish(&id, "dev", true, false).unwrap();
    let meta = fs::metadata(&target).unwrap();
    assert!(meta.file_type().is_block_device());
    assert_eq!(
        std::os::unix::fs::MetadataExt::rdev(&meta),
        std::os::unix::fs::MetadataExt::rdev(&fs::metadata(&device).unwrap())
    );
    let mut f = fs::OpenOptions::new().write(true).open(&target).unwrap();
    f.write_all(&[7u8; 4096]).unwrap();
    drop(f);
    assert_eq!(env.stats(&id, &target)[0].total as u64, 32 * MIB);
    // Never formatted: block volumes are the pod's to format.
    assert_eq!(LinuxKernel.probe_fs_type(&device).unwrap(), None);
    env.unpublish(&id, &target);
    env.unstage(&id);
    assert_eq!(loops_under(&env.dir), Vec::<PathBuf>::new());
    env.delete(&id).unwrap();
}

#[test]
fn hostpath_volumes_bind_a_directory() {
    let Some(env) = env() else { return };
    let id = env.create("shared", 0, "hostpath");
    let dir = env.dir.join(format!("state/hostpath/{id}"));
    env.stage(&id, false).unwrap();
    let a = env.publish(&id, "a", false, false).unwrap();
    let b = env.publish(&id, "b", false, false).unwrap();
    fs::write(a.join("f"), b"shared").unwrap();
    assert_eq!(fs::read(b.join("f")).unwrap(), b"shared");
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"shared");
    assert_eq!(env.delete(&id), Err(Code::FailedPrecondition));
    env.unpublish(&id, &a);
    env.unpublish(&id, &b);
    env.unstage(&id);
    env.delete(&id).unwrap();
    assert!(!dir.exists());
}

#[test]
fn a_stage_that_fails_leaves_no_loop_device() {
    let Some(env) = env() else { return };
    let id = env.create("foreign", (32 * MIB) as i64, "local-disk");
    let image = env.dir.join(format!("state/images/{id}.img"));
    // Something that is not ext4 on the image: the driver must not format over it.
    let out = std::process::Command::new("mkswap")
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.stage(&id, false), Err(Code::FailedPrecondition));
    assert_eq!(loops_under(&env.dir), Vec::<PathBuf>::new());
    assert_eq!(mounts_under(&env.dir), Vec::<PathBuf>::new());
    env.delete(&id).unwrap();
}

#[test]
fn attach_required_keeps_the_loop_device_from_publish_to_unpublish() {
    let Some(e) = env_with(true) else { return };
    let id = e.create("attached", (64 * MIB) as i64, "local-disk");
    let publish = || {
        e.driver
            .controller_publish_volume(ControllerPublishVolumeRequest {
                volume_id: id.clone(),
                node_id: "node-1".into(),
                volume_capability: Some(capability(Mode::SingleNodeWriter, false)),
                ..Default::default()
            })
    };
    let context = publish().unwrap().publish_context;
    let device = PathBuf::from(&context["devicePath"]);
    assert!(
        fs::metadata(&device).unwrap().file_type().is_block_device(),
        "{}",
        device.display()
    );
    assert_eq!(loops_under(&e.dir), vec![device.clone()]);
    assert_eq!(publish().unwrap().publish_context, context, "idempotent");
    let stage = || {
        let staging = e.dir.join("staging").join(&id);
        fs::create_dir_all(&staging).unwrap();
        e.driver
            .node_stage_volume(NodeStageVolumeRequest {
                volume_id: id.clone(),
                staging_target_path: staging.display().to_string(),
                volume_capability: Some(capability(Mode::SingleNodeWriter, false)),
                publish_context: context.clone(),
                ..Default::default()
            })
            .map(|()| staging)
            .map_err(|e| e.code())
    };
    // Without the publish context: FAILED_PRECONDITION, nothing mounted.
    assert_eq!(e.stage(&id, false), Err(Code::FailedPrecondition));
    assert_eq!(mounts_under(&e.dir), Vec::<PathBuf>::new());
    let staging = stage().unwrap();
    fs::write(staging.join("data"), b"kept").unwrap();
    e.unstage(&id);
    assert_eq!(mounts_under(&e.dir), Vec::<PathBuf>::new());
    assert_eq!(
        loops_under(&e.dir),
        vec![device.clone()],
        "unstage leaves the device"
    );
    // Staged again on the same device: the filesystem (and the data) found, not made.
    let staging = stage().unwrap();
    assert_eq!(fs::read(staging.join("data")).unwrap(), b"kept");
    let unpublish = || {
        e.driver
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: id.clone(),
                node_id: "node-1".into(),
                ..Default::default()
            })
            .map_err(|e| e.code())
    };
    assert_eq!(unpublish(), Err(Code::FailedPrecondition), "still staged");
    assert_eq!(
        e.delete(&id),
        Err(Code::FailedPrecondition),
        "still published"
    );
    e.unstage(&id);
    unpublish().unwrap();
    assert_eq!(loops_under(&e.dir), Vec::<PathBuf>::new());
    unpublish().unwrap();

    // Published read-only: a write-protected device (sysfs ro), mounted read-only; the
    // data is there, a write is EROFS.
    let context = e
        .driver
        .controller_publish_volume(ControllerPublishVolumeRequest {
            volume_id: id.clone(),
            node_id: "node-1".into(),
            volume_capability: Some(capability(Mode::SingleNodeWriter, false)),
            readonly: true,
            ..Default::default()
        })
        .unwrap()
        .publish_context;
    let device = PathBuf::from(&context["devicePath"]);
    let name = device.file_name().unwrap();
    assert_eq!(
        fs::read_to_string(Path::new("/sys/class/block").join(name).join("ro"))
            .unwrap()
            .trim(),
        "1"
    );
    let staging = e.dir.join("staging").join(&id);
    e.driver
        .node_stage_volume(NodeStageVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: staging.display().to_string(),
            volume_capability: Some(capability(Mode::SingleNodeWriter, false)),
            publish_context: context,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(fs::read(staging.join("data")).unwrap(), b"kept");
    let err = fs::write(staging.join("other"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_erofs()), "{err}");
    e.unstage(&id);
    unpublish().unwrap();
    assert_eq!(loops_under(&e.dir), Vec::<PathBuf>::new());
    e.delete(&id).unwrap();
}

/// The size statvfs reports for an xfs of `bytes`: less its internal log (64 MiB at these
/// sizes) and metadata.
fn xfs_total_fits(total: u64, bytes: u64) -> bool {
    total > bytes - 80 * MIB && total <= bytes
}

/// An xfs volume (`fs_type: xfs`): CreateVolume rounds a 64 MiB request up to 300 MiB;
/// mkfs.xfs on the first stage only (a file survives unstage and stage), blkid says xfs;
/// NodeExpandVolume grows it online with xfs_growfs on the published path, seen by
/// statvfs at once: the kernel's xfs growth needs CAP_SYS_ADMIN only, so this runs the
/// same on every machine, this one's root (no CAP_SYS_RESOURCE) included.
#[test]
fn xfs_round_trip_formats_once_and_grows_online() {
    let Some(env) = env() else { return };
    let (small, bytes) = env.create_fs("tiny", (64 * MIB) as i64, "xfs");
    assert_eq!(
        bytes,
        (300 * MIB) as i64,
        "rounded up to mkfs.xfs's minimum"
    );
    env.delete(&small).unwrap();
    let (id, bytes) = env.create_fs("data", (320 * MIB) as i64, "xfs");
    assert_eq!(bytes, (320 * MIB) as i64);
    let target = env.stage_and_publish(&id, "xfs", "a").unwrap();
    let device = loops_under(&env.dir).pop().unwrap();
    assert_eq!(
        LinuxKernel.probe_fs_type(&device).unwrap().as_deref(),
        Some("xfs")
    );
    fs::write(target.join("hello"), b"kept").unwrap();
    let total = env.stats(&id, &target)[0].total as u64;
    assert!(
        xfs_total_fits(total, 320 * MIB),
        "xfs of {total} bytes on a 320 MiB volume"
    );

    // Unstaged and staged again: the xfs (and the file) is kept, not made again.
    env.unpublish(&id, &target);
    env.unstage(&id);
    assert_eq!(loops_under(&env.dir), Vec::<PathBuf>::new());
    let target = env.stage_and_publish(&id, "xfs", "a").unwrap();
    assert_eq!(fs::read(target.join("hello")).unwrap(), b"kept");

    // Online: the image grows, then the loop device and the mounted xfs.
    env.expand(&id, 640 * MIB);
    let grown = env
        .driver
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: id.clone(),
            volume_path: target.display().to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: (640 * MIB) as i64,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("NodeExpandVolume of a mounted xfs: {e}"));
    assert_eq!(grown.capacity_bytes, (640 * MIB) as i64);
    let device = loops_under(&env.dir).pop().unwrap();
    assert_eq!(LinuxKernel.device_size(&device).unwrap(), 640 * MIB);
    let after = env.stats(&id, &target)[0].total as u64;
    assert!(
        xfs_total_fits(after, 640 * MIB),
        "xfs of {after} bytes after growing online to 640 MiB (was {total})"
    );
    assert_eq!(fs::read(target.join("hello")).unwrap(), b"kept");
    fs::write(target.join("more"), vec![7u8; 1 << 20]).unwrap();

    env.unpublish(&id, &target);
    env.unstage(&id);
    let image = env.dir.join(format!("state/images/{id}.img"));
    assert_eq!(LinuxKernel.xfs_size(&image).unwrap(), 640 * MIB);
    env.delete(&id).unwrap();
    assert!(!image.exists());
}

/// An xfs expanded while unstaged: the next stage mounts it and grows it there
/// (xfs_growfs on the staging path); statvfs sees the new size, the file is kept, and
/// NodeExpandVolume afterwards finds nothing to add.
#[test]
fn an_xfs_expanded_while_unstaged_is_grown_at_the_next_stage() {
    let Some(env) = env() else { return };
    let (id, _) = env.create_fs("later", (320 * MIB) as i64, "xfs");
    let target = env.stage_and_publish(&id, "xfs", "a").unwrap();
    fs::write(target.join("hello"), b"kept").unwrap();
    env.unpublish(&id, &target);
    env.unstage(&id);
    env.expand(&id, 640 * MIB);
    let image = env.dir.join(format!("state/images/{id}.img"));
    assert_eq!(LinuxKernel.xfs_size(&image).unwrap(), 320 * MIB);

    let target = env.stage_and_publish(&id, "xfs", "a").unwrap();
    let total = env.stats(&id, &target)[0].total as u64;
    assert!(
        xfs_total_fits(total, 640 * MIB),
        "xfs of {total} bytes after growing at stage to 640 MiB"
    );
    assert_eq!(fs::read(target.join("hello")).unwrap(), b"kept");
    let node = env
        .driver
        .node_expand_volume(NodeExpandVolumeRequest {
            volume_id: id.clone(),
            volume_path: target.display().to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: (640 * MIB) as i64,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("NodeExpandVolume of a grown xfs: {e}"));
    assert_eq!(node.capacity_bytes, (640 * MIB) as i64);
    env.unpublish(&id, &target);
    env.unstage(&id);
    assert_eq!(LinuxKernel.xfs_size(&image).unwrap(), 640 * MIB);
    env.delete(&id).unwrap();
}

/// A volume holding an ext4 staged as xfs (or the other way round) is refused, never
/// formatted over nor mounted, and leaves no loop device or mount.
#[test]
fn a_stage_as_another_filesystem_is_refused_and_leaves_nothing() {
    let Some(env) = env() else { return };
    let (id, _) = env.create_fs("e", (320 * MIB) as i64, "ext4");
    let target = env.stage_and_publish(&id, "", "a").unwrap();
    fs::write(target.join("hello"), b"kept").unwrap();
    env.unpublish(&id, &target);
    env.unstage(&id);
    assert_eq!(
        env.stage_and_publish(&id, "xfs", "a"),
        Err(Code::FailedPrecondition)
    );
    assert_eq!(loops_under(&env.dir), Vec::<PathBuf>::new());
    assert_eq!(mounts_under(&env.dir), Vec::<PathBuf>::new());
    let target = env.stage_and_publish(&id, "ext4", "a").unwrap();
    assert_eq!(fs::read(target.join("hello")).unwrap(), b"kept");
    env.unpublish(&id, &target);
    env.unstage(&id);

    let (x, _) = env.create_fs("x", (300 * MIB) as i64, "xfs");
    let target = env.stage_and_publish(&x, "xfs", "b").unwrap();
    env.unpublish(&x, &target);
    env.unstage(&x);
    assert_eq!(
        env.stage_and_publish(&x, "", "b"),
        Err(Code::FailedPrecondition)
    );
    assert_eq!(loops_under(&env.dir), Vec::<PathBuf>::new());
    assert_eq!(mounts_under(&env.dir), Vec::<PathBuf>::new());
    env.delete(&id).unwrap();
    env.delete(&x).unwrap();
}
