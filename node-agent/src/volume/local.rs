//! The local volume plugin (upstream pkg/volume/local). Directories
//! (`localVolumeMounter` `SetUpAt` and `localVolumeUnmounter` `TearDownAt`): the
//! PersistentVolume's `local.path` bind-mounted at the pod's volume directory
//! (`kubernetes.io~local-volume/<pv name>`), read-only when the claim's pod volume says
//! so. Block devices in volumeMode Block (`localVolumeMapper`): the paths and the device
//! to map ([`block_global_map_path`], [`map_pod_device`]).
//!
//! Tear-down unmounts and removes the now empty mount point only (upstream's
//! `CleanupMountPoint`): a directory that is still not empty is an error, never deleted,
//! so that the volume's data cannot go with it.
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

use crate::runtime::rootfs::is_mount_point;
use crate::runtime::syscall::{Syscall, SyscallError};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("LocalVolume volume {pv:?} path is empty")]
    EmptyPath { pv: String },
    #[error("invalid path: {path} {source}")]
    InvalidPath { path: String, source: io::Error },
    #[error("only directory and block device are supported")]
    NotADirectory { path: String },
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(transparent)]
    Syscall(#[from] SyscallError),
}

/// `SetUpAt`: binds `path` at `dir` (created 0750), read-only when `read_only`; a `dir`
/// already mounted is left as it is.
pub fn set_up(
    pv: &str,
    path: &str,
    dir: &Path,
    read_only: bool,
    sys: &dyn Syscall,
) -> Result<(), LocalError> {
    if path.is_empty() {
        return Err(LocalError::EmptyPath { pv: pv.to_string() });
    }
    let meta = std::fs::metadata(path).map_err(|source| LocalError::InvalidPath {
        path: path.to_string(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(LocalError::NotADirectory {
            path: path.to_string(),
        });
    }
    if dir.exists()
        && is_mount_point(dir).map_err(|source| LocalError::Io {
            action: "check mount point",
            path: dir.to_path_buf(),
            source,
        })?
    {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|source| LocalError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
    sys.mount(Some(Path::new(path)), dir, None, MsFlags::MS_BIND, None)?;
    if read_only {
        let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = sys.mount(None, dir, None, remount, None) {
            // Not left mounted read-write.
            let _ = sys.umount2(dir, MntFlags::empty());
            return Err(e.into());
        }
    }
    Ok(())
}

/// `TearDownAt`: unmounts `dir` and removes it if empty.
pub fn tear_down(dir: &Path, sys: &dyn Syscall) -> Result<(), LocalError> {
    if !dir.exists() {
        return Ok(());
    }
    if is_mount_point(dir).map_err(|source| LocalError::Io {
        action: "check mount point",
        path: dir.to_path_buf(),
        source,
    })? {
        sys.umount2(dir, MntFlags::empty())?;
    }
    std::fs::remove_dir(dir).map_err(|source| LocalError::Io {
        action: "remove mount point",
        path: dir.to_path_buf(),
        source,
    })
}

/// The local plugin's block volumes (upstream's `localVolumeMapper`): a PV whose `path`
/// is a block device of the node, in volumeMode Block, is mapped for each pod
/// ([`super::volume_path_handler`]) from its global map path
/// `<root-dir>/plugins/kubernetes.io~local-volume/volumeDevices/<pv>` (`GetGlobalMapPath`:
/// `GetVolumeDevicePluginDir` of the escaped plugin name) and the pod's
/// `pods/<uid>/volumeDevices/kubernetes.io~local-volume/<pv>` (`GetPodDeviceMapPath`).
/// There is nothing to stage or publish: `MapPodDevice` is the PV's path.
pub fn block_global_map_path(plugins_dir: &Path, pv: &str) -> PathBuf {
    plugins_dir
        .join(super::pod_dirs::escape_qualified_name(
            super::pod_dirs::LOCAL_PLUGIN,
        ))
        .join("volumeDevices")
        .join(pv)
}

/// `localVolumeMapper.MapPodDevice`: the PV's path, made absolute; then, as
/// `GenerateMapVolumeFunc` does with every device path, its symlinks resolved
/// (`EvalHostSymlinks`).
pub fn map_pod_device(pv: &str, path: &str) -> Result<PathBuf, LocalError> {
    if path.is_empty() {
        return Err(LocalError::EmptyPath { pv: pv.to_string() });
    }
    std::fs::canonicalize(path).map_err(|source| LocalError::InvalidPath {
        path: path.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::syscall::LinuxSyscall;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn bad_sources_are_refused() {
        let sys = LinuxSyscall;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pod/vol");
        let err = set_up("pv1", "", &dir, false, &sys).unwrap_err();
        assert_eq!(err.to_string(), "LocalVolume volume \"pv1\" path is empty");
        let missing = tmp.path().join("missing");
        let err = set_up("pv1", missing.to_str().unwrap(), &dir, false, &sys).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("invalid path: {}", missing.display())),
            "{err}"
        );
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let err = set_up("pv1", file.to_str().unwrap(), &dir, false, &sys).unwrap_err();
        assert_eq!(
            err.to_string(),
            "only directory and block device are supported"
        );
        assert!(!dir.exists(), "nothing created for a refused source");
    }

    /// As root: the bind shows the data, read-only refuses writes, tear-down leaves the
    /// data and no mount.
    #[test]
    fn bind_read_only_and_tear_down() {
        if !root() {
            rekube_crds::testing::missing_prerequisite("local volume bind mounts need root");
            return;
        }
        let sys = LinuxSyscall;
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("disk");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("f"), b"kept").unwrap();
        let dir = tmp
            .path()
            .join("pods/u/volumes/kubernetes.io~local-volume/pv1");
        set_up("pv1", data.to_str().unwrap(), &dir, true, &sys).unwrap();
        assert!(is_mount_point(&dir).unwrap());
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"kept");
        let err = std::fs::write(dir.join("g"), b"x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS));
        // Set up again: already mounted, nothing stacked.
        set_up("pv1", data.to_str().unwrap(), &dir, true, &sys).unwrap();
        tear_down(&dir, &sys).unwrap();
        assert!(!dir.exists());
        assert_eq!(std::fs::read(data.join("f")).unwrap(), b"kept");
        assert!(
            !crate::runtime::rootfs::mounts_under(tmp.path())
                .iter()
                .any(|m| m.starts_with(tmp.path()))
        );

        set_up("pv1", data.to_str().unwrap(), &dir, false, &sys).unwrap();
        std::fs::write(dir.join("g"), b"written").unwrap();
        tear_down(&dir, &sys).unwrap();
        assert_eq!(std::fs::read(data.join("g")).unwrap(), b"written");
    }

    /// local_test.go's `TestMapUnmap`, its paths and `MapPodDevice` (the device path,
    /// resolved); the rest of it (UnmapPodDevice, TearDownDevice) is nothing for a local
    /// volume.
    #[test]
    fn block_paths_are_upstreams() {
        assert_eq!(
            block_global_map_path(Path::new("/var/lib/kubelet/plugins"), "pvA"),
            Path::new("/var/lib/kubelet/plugins/kubernetes.io~local-volume/volumeDevices/pvA")
        );
        let dirs = super::super::pod_dirs::PodDirs::new("/var/lib/kubelet/pods");
        assert_eq!(
            dirs.pod_volume_device_dir("poduid", super::super::pod_dirs::LOCAL_PLUGIN),
            Path::new("/var/lib/kubelet/pods/poduid/volumeDevices/kubernetes.io~local-volume")
        );
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/dev/null", tmp.path().join("disk")).unwrap();
        assert_eq!(
            map_pod_device("pv1", tmp.path().join("disk").to_str().unwrap()).unwrap(),
            Path::new("/dev/null")
        );
        assert_eq!(
            map_pod_device("pv1", "").unwrap_err().to_string(),
            "LocalVolume volume \"pv1\" path is empty"
        );
        assert!(map_pod_device("pv1", "/nonexistent/disk").is_err());
    }

    /// A mount point that is not empty once unmounted is an error and keeps its files.
    #[test]
    fn tear_down_never_deletes_content() {
        let sys = LinuxSyscall;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("f"), b"x").unwrap();
        let err = tear_down(&dir, &sys).unwrap_err();
        assert!(err.to_string().starts_with("remove mount point"), "{err}");
        assert_eq!(std::fs::read(dir.join("f")).unwrap(), b"x");
    }
}
