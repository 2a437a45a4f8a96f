//! How a block volume's device is mapped for a pod (upstream
//! pkg/volume/util/volumepathhandler, with util.go's `MapBlockVolume` and
//! `UnmapBlockVolume`): the device is bind-mounted onto a file named after the pod under
//! the volume's global map path (`.../volumeDevices/<pv>/dev/<pod uid>` for a CSI volume),
//! symlinked from the pod's device map path (`pods/<uid>/volumeDevices/<plugin>/<pv>`,
//! what the containers' devices name), and held open by a loop device attached to that
//! bind (upstream's "descriptor lock": the device cannot silently go and another take its
//! name while a pod uses it). Unmapping undoes the three in the reverse order.
//!
//! Mounts, symlinks and files go through the runtime's [`Syscall`]; the loop device
//! through rekube-csi's [`Kernel`] (the ioctls upstream's `losetup -f` / `losetup -d`
//! make, and `Kernel::loop_find`, which reads sysfs as upstream's
//! `getLoopDeviceFromSysfs` does). Everything here blocks (mounts, ioctls, and
//! `DetachFileDevice`'s wait of up to 2 s): the volume manager calls it on tokio's
//! blocking pool.

use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use rekube_csi::kernel::{Kernel, KernelError};

use crate::runtime::syscall::{Syscall, SyscallError};

/// upstream's `ErrDeviceNotFound`.
pub const ERR_DEVICE_NOT_FOUND: &str = "device not found";

#[derive(Debug, thiserror::Error)]
pub enum BlockPathError {
    #[error("failed to map device to map path. devicePath is empty")]
    EmptyDevicePath,
    #[error("failed to map device to map path. mapPath is empty")]
    EmptyMapPath,
    #[error("failed to unmap device from map path. mapPath is empty")]
    EmptyUnmapPath,
    #[error("failed to remove map path. mapPath is empty")]
    EmptyRemovePath,
    #[error("the map path should be absolute: map path: {}", .0.display())]
    RelativeMapPath(PathBuf),
    /// upstream's `failed to <action> <path>: <cause>` messages.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("failed to bind mount devicePath: {} to linkPath {}: {source}", device.display(), link.display())]
    Bind {
        device: PathBuf,
        link: PathBuf,
        source: SyscallError,
    },
    #[error("failed to unmount linkPath {}: {source}", link.display())]
    Unmount { link: PathBuf, source: SyscallError },
    #[error("failed to symlink {} to {}: {source}", link.display(), device.display())]
    Symlink {
        device: PathBuf,
        link: PathBuf,
        source: SyscallError,
    },
    /// `GetLoopDevice`, `makeLoopDevice` or `removeLoopDevice` failed.
    #[error("{op} failed for path {}: {source}", path.display())]
    Loop {
        op: &'static str,
        path: PathBuf,
        source: LoopError,
    },
    /// A step of `MapBlockVolume` / `UnmapBlockVolume`, with upstream's context.
    #[error("blkUtil.{call} failed. {context}: {source}")]
    Step {
        call: &'static str,
        context: String,
        source: Box<BlockPathError>,
    },
}

/// Why a loop device could not be found, made or removed.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("not attachable: {0}")]
    NotAttachable(io::Error),
    #[error("{0}")]
    Kernel(#[from] KernelError),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BlockPathError {
    let path = path.to_path_buf();
    move |source| BlockPathError::Io {
        action,
        path,
        source,
    }
}

/// The block volume path handler (`VolumePathHandler`) over the node's kernel.
pub struct BlockVolumePathHandler<'a> {
    pub sys: &'a dyn Syscall,
    pub loops: &'a dyn Kernel,
}

impl BlockVolumePathHandler<'_> {
    /// `MapDevice`: `<map_path>/<link_name>` made the device's bind mount (`bind_mount`)
    /// or a symlink to it; `map_path` is made (0750).
    pub fn map_device(
        &self,
        device_path: &Path,
        map_path: &Path,
        link_name: &str,
        bind_mount: bool,
    ) -> Result<(), BlockPathError> {
        if device_path.as_os_str().is_empty() {
            return Err(BlockPathError::EmptyDevicePath);
        }
        if map_path.as_os_str().is_empty() {
            return Err(BlockPathError::EmptyMapPath);
        }
        if !map_path.is_absolute() {
            return Err(BlockPathError::RelativeMapPath(map_path.to_path_buf()));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(map_path)
            .map_err(io_err("mkdir", map_path))?;
        let link = map_path.join(link_name);
        if bind_mount {
            self.map_bind_mount_device(device_path, &link)
        } else {
            map_symlink_device(self.sys, device_path, &link)
        }
    }

    /// `mapBindMountDevice`: an empty file at `link` (0750), the device bound onto it; a
    /// `link` that is the device's bind already is left alone.
    fn map_bind_mount_device(&self, device: &Path, link: &Path) -> Result<(), BlockPathError> {
        match std::fs::metadata(link) {
            Ok(m) if m.file_type().is_block_device() || m.file_type().is_char_device() => {
                tracing::warn!(link = %link.display(), "map skipped because bind mount already exists on the path");
                return Ok(());
            }
            Ok(_) => {
                tracing::warn!(link = %link.display(), "file already exists but is not mounted, skip creating file");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .read(true)
                    .write(true)
                    .mode(0o750)
                    .open(link)
                    .map_err(io_err("open file", link))?;
            }
            Err(e) => return Err(io_err("stat file", link)(e)),
        }
        self.sys
            .mount(Some(device), link, None, MsFlags::MS_BIND, None)
            .map_err(|source| BlockPathError::Bind {
                device: device.to_path_buf(),
                link: link.to_path_buf(),
                source,
            })
    }

    /// `UnmapDevice`: the bind mount at `<map_path>/<link_name>` unmounted and its file
    /// removed, or the symlink removed; nothing there is nothing to do.
    pub fn unmap_device(
        &self,
        map_path: &Path,
        link_name: &str,
        bind_mount: bool,
    ) -> Result<(), BlockPathError> {
        if map_path.as_os_str().is_empty() {
            return Err(BlockPathError::EmptyUnmapPath);
        }
        let link = map_path.join(link_name);
        if !bind_mount {
            if !is_symlink_exist(&link)? {
                tracing::warn!(link = %link.display(), "unmap skipped because symlink does not exist on the path");
                return Ok(());
            }
            return remove_file(&link);
        }
        if !is_device_bind_mount_exist(&link)? {
            tracing::warn!(link = %link.display(), "unmap skipped because bind mount does not exist on the path");
            return remove_file(&link);
        }
        self.sys
            .umount2(&link, MntFlags::empty())
            .map_err(|source| BlockPathError::Unmount {
                link: link.clone(),
                source,
            })?;
        remove_file(&link)
    }

    /// `AttachFileDevice`: the loop device holding `path` open, attached unless one does
    /// already (read-only when `path` cannot be opened for writing, as losetup falls back).
    pub fn attach_file_device(&self, path: &Path) -> Result<PathBuf, BlockPathError> {
        let loop_err = |op, source| BlockPathError::Loop {
            op,
            path: path.to_path_buf(),
            source,
        };
        if let Some(device) = self
            .get_loop_device(path)
            .map_err(|e| loop_err("GetLoopDevice", e))?
        {
            return Ok(device);
        }
        let read_only_fallback = |e: &KernelError| {
            matches!(e, KernelError::Io { source, .. }
                if matches!(source.raw_os_error(), Some(nix::libc::EROFS | nix::libc::EACCES)))
        };
        match self.loops.loop_attach(path, false) {
            Ok(device) => Ok(device),
            Err(e) if read_only_fallback(&e) => self
                .loops
                .loop_attach(path, true)
                .map_err(|e| loop_err("makeLoopDevice", e.into())),
            Err(e) => Err(loop_err("makeLoopDevice", e.into())),
        }
    }

    /// `DetachFileDevice`: the loop device holding `path` detached (none: nothing to do),
    /// then waited for until the kernel lets go of `path` (its last reference goes when
    /// the detach completes).
    pub fn detach_file_device(&self, path: &Path) -> Result<(), BlockPathError> {
        let loop_err = |op, source| BlockPathError::Loop {
            op,
            path: path.to_path_buf(),
            source,
        };
        let Some(device) = self
            .get_loop_device(path)
            .map_err(|e| loop_err("GetLoopDevice", e))?
        else {
            if path.exists() {
                tracing::warn!(path = %path.display(), "couldn't find loopback device which takes file descriptor lock, skip detaching device");
            }
            return Ok(());
        };
        self.loops
            .loop_detach(&device)
            .map_err(|e| loop_err("removeLoopDevice", e.into()))?;
        for _ in 0..100 {
            if self
                .get_loop_device(path)
                .map_err(|e| loop_err("GetLoopDevice", e))?
                .is_none()
            {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Err(loop_err(
            "removeLoopDevice",
            LoopError::Kernel(KernelError::Command {
                command: "LOOP_CLR_FD",
                object: device.display().to_string(),
                message: "the loop device still holds the file after 2s".into(),
            }),
        ))
    }

    /// `GetLoopDevice`: the loop device holding `path` (`Kernel::loop_find`: the backing
    /// file `path` or what it resolves to), `None` when `path` is gone or none holds it
    /// (upstream's `device not found`).
    pub fn get_loop_device(&self, path: &Path) -> Result<Option<PathBuf>, LoopError> {
        match std::fs::metadata(path) {
            Ok(_) => Ok(self.loops.loop_find(path)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(LoopError::NotAttachable(e)),
        }
    }

    /// util.go's `MapBlockVolume`: the device bound at `<global_map_path>/<pod uid>`,
    /// symlinked at `<pod_volume_map_path>/<volume_map_name>`, and held by a loop device.
    pub fn map_block_volume(
        &self,
        device_path: &Path,
        global_map_path: &Path,
        pod_volume_map_path: &Path,
        volume_map_name: &str,
        pod_uid: &str,
    ) -> Result<(), BlockPathError> {
        let step = |call, context: String| {
            move |source| BlockPathError::Step {
                call,
                context,
                source: Box::new(source),
            }
        };
        self.map_device(device_path, global_map_path, pod_uid, true)
            .map_err(step(
                "MapDevice",
                format!(
                    "devicePath: {}, globalMapPath:{}, podUID: {pod_uid}, bindMount: true",
                    device_path.display(),
                    global_map_path.display()
                ),
            ))?;
        self.map_device(device_path, pod_volume_map_path, volume_map_name, false)
            .map_err(step(
                "MapDevice",
                format!(
                    "devicePath: {}, podVolumeMapPath:{}, volumeMapName: {volume_map_name}, bindMount: false",
                    device_path.display(),
                    pod_volume_map_path.display()
                ),
            ))?;
        self.attach_file_device(&global_map_path.join(pod_uid))
            .map_err(step(
                "AttachFileDevice",
                format!(
                    "globalMapPath:{}, podUID: {pod_uid}",
                    global_map_path.display()
                ),
            ))?;
        Ok(())
    }

    /// util.go's `UnmapBlockVolume`: the loop device detached, the pod's symlink removed,
    /// the bind at `<global_unmap_path>/<pod uid>` unmounted and removed.
    pub fn unmap_block_volume(
        &self,
        global_unmap_path: &Path,
        pod_device_unmap_path: &Path,
        volume_map_name: &str,
        pod_uid: &str,
    ) -> Result<(), BlockPathError> {
        let step = |call, context: String| {
            move |source| BlockPathError::Step {
                call,
                context,
                source: Box::new(source),
            }
        };
        self.detach_file_device(&global_unmap_path.join(pod_uid))
            .map_err(step(
                "DetachFileDevice",
                format!(
                    "globalUnmapPath:{}, podUID: {pod_uid}",
                    global_unmap_path.display()
                ),
            ))?;
        // upstream's messages name DetachFileDevice for the two unmaps as well.
        self.unmap_device(pod_device_unmap_path, volume_map_name, false)
            .map_err(step(
                "DetachFileDevice",
                format!(
                    "podDeviceUnmapPath:{}, volumeMapName: {volume_map_name}, bindMount: false",
                    pod_device_unmap_path.display()
                ),
            ))?;
        self.unmap_device(global_unmap_path, pod_uid, true)
            .map_err(step(
                "DetachFileDevice",
                format!(
                    "globalUnmapPath:{}, podUID: {pod_uid}, bindMount: true",
                    global_unmap_path.display()
                ),
            ))?;
        Ok(())
    }
}

/// `mapSymlinkDevice`: whatever is at `link` replaced by a symlink to the device.
fn map_symlink_device(sys: &dyn Syscall, device: &Path, link: &Path) -> Result<(), BlockPathError> {
    match std::fs::remove_file(link) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove file", link)(e)),
    }
    sys.symlink(device, link)
        .map_err(|source| BlockPathError::Symlink {
            device: device.to_path_buf(),
            link: link.to_path_buf(),
            source,
        })
}

fn remove_file(path: &Path) -> Result<(), BlockPathError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove file", path)(e)),
    }
}

/// `RemoveMapPath`: the map path and what is in it removed.
pub fn remove_map_path(map_path: &Path) -> Result<(), BlockPathError> {
    if map_path.as_os_str().is_empty() {
        return Err(BlockPathError::EmptyRemovePath);
    }
    match std::fs::remove_dir_all(map_path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove directory", map_path)(e)),
    }
}

/// `IsSymlinkExist`.
pub fn is_symlink_exist(path: &Path) -> Result<bool, BlockPathError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(m.file_type().is_symlink()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("Lstat file", path)(e)),
    }
}

/// `IsDeviceBindMountExist`: `path` is a device node (a file with a device bound on it).
pub fn is_device_bind_mount_exist(path: &Path) -> Result<bool, BlockPathError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(m.file_type().is_block_device() || m.file_type().is_char_device()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("Lstat file", path)(e)),
    }
}

/// `GetDeviceBindMountRefs`: the device binds under `map_path` (one per pod still using
/// the device); `map_path` missing is the caller's NotFound. Each entry is looked at
/// through its mount (lstat), not by the directory's record of it, which names the file
/// under a bind, never the device on it.
pub fn get_device_bind_mount_refs(map_path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut refs = Vec::new();
    for entry in std::fs::read_dir(map_path)? {
        let path = entry?.path();
        let kind = match std::fs::symlink_metadata(&path) {
            Ok(m) => m.file_type(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if kind.is_block_device() || kind.is_char_device() {
            refs.push(path);
        }
    }
    refs.sort();
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::syscall::LinuxSyscall;
    use rekube_csi::kernel::LinuxKernel;

    fn handler() -> BlockVolumePathHandler<'static> {
        BlockVolumePathHandler {
            sys: &LinuxSyscall,
            loops: &LinuxKernel,
        }
    }

    /// The loop device steps on rekube-csi's fake kernel (no root): AttachFileDevice
    /// attaches once and finds the device after; DetachFileDevice detaches it and waits
    /// until `loop_find` no longer names it; nothing attached or no file is nothing to do;
    /// a device that stays busy (a mount holds it) is an error after the wait.
    #[test]
    fn loop_devices_are_found_attached_and_detached_through_the_kernel() {
        use rekube_csi::kernel::FakeKernel;
        let tmp = tempfile::tempdir().unwrap();
        let bind = tmp.path().join("u1");
        std::fs::write(&bind, b"").unwrap();
        let kernel = FakeKernel::default();
        let h = BlockVolumePathHandler {
            sys: &LinuxSyscall,
            loops: &kernel,
        };
        assert_eq!(h.get_loop_device(&bind).unwrap(), None);
        let device = h.attach_file_device(&bind).unwrap();
        assert_eq!(h.get_loop_device(&bind).unwrap(), Some(device.clone()));
        assert_eq!(
            h.attach_file_device(&bind).unwrap(),
            device,
            "found, not attached again"
        );
        assert_eq!(
            kernel
                .calls()
                .iter()
                .filter(|c| c.starts_with("loop_attach"))
                .count(),
            1
        );
        assert_eq!(h.get_loop_device(&tmp.path().join("gone")).unwrap(), None);

        h.detach_file_device(&bind).unwrap();
        assert_eq!(h.get_loop_device(&bind).unwrap(), None);
        h.detach_file_device(&bind).unwrap();
        h.detach_file_device(&tmp.path().join("gone")).unwrap();

        // Busy: the kernel defers the detach to the last close, which does not come.
        let device = h.attach_file_device(&bind).unwrap();
        let holder = tmp.path().join("holder");
        std::fs::write(&holder, b"").unwrap();
        kernel
            .mount(&device, &holder, None, MsFlags::MS_BIND, None)
            .unwrap();
        let err = h.detach_file_device(&bind).unwrap_err().to_string();
        assert!(err.contains("still holds the file after 2s"), "{err}");
    }

    /// volume_path_handler_test.go `TestMapDevice` (3/3), `TestUnmapDevice` (6/6),
    /// `TestRemoveMapPath` (2/2), `TestIsSymlinkExist` (2/2), on real directories.
    #[test]
    fn map_unmap_and_remove_as_upstream() {
        let tmp = tempfile::tempdir().unwrap();
        let h = handler();
        let cases: [(&str, &str, PathBuf, Option<&str>); 3] = [
            (
                "valid symlink map",
                "/dev/fakeDevice",
                tmp.path().join("test-map-valid"),
                None,
            ),
            (
                "empty device path",
                "",
                tmp.path().join("test-map-empty-device"),
                Some("failed to map device to map path. devicePath is empty"),
            ),
            (
                "empty map path",
                "/dev/fakeDevice",
                PathBuf::new(),
                Some("failed to map device to map path. mapPath is empty"),
            ),
        ];
        for (name, device, map_path, want) in cases {
            let got = h.map_device(Path::new(device), &map_path, "link", false);
            match want {
                Some(message) => assert_eq!(got.unwrap_err().to_string(), message, "{name}"),
                None => {
                    got.unwrap();
                    assert_eq!(
                        std::fs::read_link(map_path.join("link")).unwrap(),
                        Path::new(device),
                        "{name}"
                    );
                }
            }
        }
        assert_eq!(
            h.map_device(Path::new("/dev/x"), Path::new("rel"), "l", false)
                .unwrap_err()
                .to_string(),
            "the map path should be absolute: map path: rel"
        );

        // TestUnmapDevice.
        let dir = |name: &str| {
            let d = tmp.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let valid = dir("test-unmap-valid");
        std::os::unix::fs::symlink("/dev/fakeDevice", valid.join("validLink")).unwrap();
        let bind_file = dir("test-unmap-bind-file-exists");
        std::fs::write(bind_file.join("bindFile"), b"").unwrap();
        let cases: [(&str, PathBuf, &str, bool, Option<&str>); 6] = [
            ("valid symlink unmap", valid, "validLink", false, None),
            (
                "symlink does not exist",
                dir("test-unmap-nonexistent"),
                "nonexistentLink",
                false,
                None,
            ),
            (
                "bind mount file exists but not mounted",
                bind_file,
                "bindFile",
                true,
                None,
            ),
            (
                "bind mount file does not exist",
                dir("test-unmap-bind-file-not-exist"),
                "bindFileNotExist",
                true,
                None,
            ),
            (
                "empty mapPath for symlink",
                PathBuf::new(),
                "someLink",
                false,
                Some("failed to unmap device from map path. mapPath is empty"),
            ),
            (
                "empty mapPath for bind mount",
                PathBuf::new(),
                "someBindFile",
                true,
                Some("failed to unmap device from map path. mapPath is empty"),
            ),
        ];
        for (name, map_path, link, bind, want) in cases {
            let got = h.unmap_device(&map_path, link, bind);
            match want {
                Some(message) => assert_eq!(got.unwrap_err().to_string(), message, "{name}"),
                None => {
                    got.unwrap();
                    assert!(
                        std::fs::symlink_metadata(map_path.join(link)).is_err(),
                        "{name}: removed"
                    );
                }
            }
        }

        // TestRemoveMapPath, TestIsSymlinkExist.
        let map_path = dir("test-remove-map-path");
        for path in [map_path, tmp.path().join("non-existing-path")] {
            remove_map_path(&path).unwrap();
            assert!(!path.exists());
        }
        let links = dir("test-symlink");
        std::os::unix::fs::symlink("/dev/fakeDevice", links.join("test-symlink-link")).unwrap();
        assert!(is_symlink_exist(&links.join("test-symlink-link")).unwrap());
        assert!(!is_symlink_exist(&links.join("non-existing-symlink")).unwrap());
    }

    /// As root, with a real loop device standing for the volume's device: MapBlockVolume
    /// binds it at the global map path, symlinks it from the pod's device map path and
    /// holds it with a second loop device; mapping again changes nothing; the reference
    /// count sees the bind; UnmapBlockVolume leaves no loop device, mount, file or link.
    #[test]
    fn map_and_unmap_a_real_block_volume() {
        if !nix::unistd::geteuid().is_root() {
            rekube_crds::testing::missing_prerequisite(
                "mapping a block volume needs root (loop devices, bind mounts)",
            );
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let device = LinuxKernel.loop_attach(&image, false).unwrap();
        let global = tmp.path().join("plugins/volumeDevices/pv1/dev");
        let pod_map = tmp.path().join("pods/u1/volumeDevices/kubernetes.io~csi");
        let h = handler();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for _ in 0..2 {
                h.map_block_volume(&device, &global, &pod_map, "pv1", "u1")
                    .unwrap();
            }
            let bind = global.join("u1");
            assert!(is_device_bind_mount_exist(&bind).unwrap());
            assert_eq!(
                get_device_bind_mount_refs(&global).unwrap(),
                std::slice::from_ref(&bind)
            );
            assert_eq!(std::fs::read_link(pod_map.join("pv1")).unwrap(), device);
            let holder = h
                .get_loop_device(&bind)
                .unwrap()
                .expect("the descriptor lock");
            assert_ne!(holder, device);
            let mounts = crate::runtime::rootfs::mounts_under(tmp.path());
            assert_eq!(mounts, std::slice::from_ref(&bind), "one bind, not stacked");

            for _ in 0..2 {
                h.unmap_block_volume(&global, &pod_map, "pv1", "u1")
                    .unwrap();
            }
            assert!(!bind.exists() && !pod_map.join("pv1").exists());
            assert!(get_device_bind_mount_refs(&global).unwrap().is_empty());
            assert!(crate::runtime::rootfs::mounts_under(tmp.path()).is_empty());
            assert_eq!(
                std::fs::read_to_string(format!(
                    "/sys/block/{}/loop/backing_file",
                    holder.file_name().unwrap().to_string_lossy()
                ))
                .unwrap_or_default(),
                "",
                "the holder detached"
            );
            remove_map_path(&global).unwrap();
        }));
        let _ = h.unmap_block_volume(&global, &pod_map, "pv1", "u1");
        LinuxKernel.loop_detach(&device).unwrap();
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    }
}
