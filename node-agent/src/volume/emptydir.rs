//! emptyDir volumes: upstream pkg/volume/emptydir/empty_dir.go (`SetUpAt`, `setupDir`,
//! `setupTmpfs`, `TearDownAt`, `calculateEmptyDirMemorySize`, `generateTmpfsMountOptions`),
//! empty_dir_linux.go's mount detection (`GetMountMedium`), pkg/volume/util's ready marker
//! (`IsReady`, `SetReady`), and the pod's memory limit as kubelet's
//! cm/helpers_linux.go `ResourceConfigForPod` computes it (component-helpers
//! `PodLimits`), which caps a memory-backed emptyDir.
//!
//! A disk emptyDir is a directory of mode 0777; a `Memory` one is a tmpfs mounted on it
//! (through [`Syscall`], so the mount is unit-tested without root). Set-up is idempotent:
//! the plugin's `ready` marker says a previous set-up finished. HugePages media are not
//! supported by rekube and are refused.

use std::collections::BTreeMap;
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use nix::mount::{MntFlags, MsFlags};
use rekube_crds::Pod;

use crate::kubelet::quantity::{Amount, amount};
use crate::kubelet::status_generate::compute_pod_qos;
pub use crate::runtime::rootfs::is_mount_point;
use crate::runtime::syscall::{Syscall, SyscallError};

/// The permissions of an emptyDir (upstream's `perm`).
const PERM: u32 = 0o777;
/// The name of the ready marker in the plugin's directory of the volume.
const READY_FILE_NAME: &str = "ready";

/// Why an emptyDir volume could not be set up or torn down.
#[derive(Debug, thiserror::Error)]
pub enum EmptyDirError {
    #[error("emptyDir {}: medium {medium:?} (huge pages) is not supported by rekube-node-agent", dir.display())]
    HugePagesUnsupported { dir: PathBuf, medium: String },
    #[error("unknown storage medium {0:?}")]
    UnknownMedium(String),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Syscall(#[from] SyscallError),
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmptyDirError {
    move |source| EmptyDirError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The storage medium of an emptyDir (`v1.StorageMedium`), or what backs a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Medium {
    /// `""`: the node's disk.
    Default,
    /// `Memory`: tmpfs.
    Memory,
    /// `HugePages` or `HugePages-<size>`: hugetlbfs.
    HugePages,
}

fn parse_medium(dir: &Path, medium: Option<&str>) -> Result<Medium, EmptyDirError> {
    match medium.unwrap_or_default() {
        "" => Ok(Medium::Default),
        "Memory" => Ok(Medium::Memory),
        m if m == "HugePages" || m.starts_with("HugePages-") => {
            Err(EmptyDirError::HugePagesUnsupported {
                dir: dir.to_path_buf(),
                medium: m.to_string(),
            })
        }
        m => Err(EmptyDirError::UnknownMedium(m.to_string())),
    }
}

/// Upstream `calculateEmptyDirMemorySize`: the size of a memory-backed emptyDir is the
/// node's allocatable memory, or the pod's memory limit when that is positive and no
/// larger, or the volume's sizeLimit when that is positive and no larger still. Bytes.
pub fn calculate_empty_dir_memory_size(
    node_allocatable_memory: i64,
    size_limit: Option<i64>,
    pod_memory_limit: Option<i64>,
) -> i64 {
    let mut size = node_allocatable_memory;
    if let Some(limit) = pod_memory_limit.filter(|l| *l > 0 && *l <= size) {
        size = limit;
    }
    if let Some(limit) = size_limit.filter(|l| *l > 0 && *l <= size) {
        size = limit;
    }
    size
}

fn memory_of(list: Option<&BTreeMap<String, Quantity>>) -> Amount {
    list.and_then(|l| l.get("memory"))
        .map(amount)
        .unwrap_or(Amount::ZERO)
}

/// The pod's memory limit in bytes as `ResourceConfigForPod` sets it on the pod's cgroup,
/// or `None` when the pod cgroup has none: BestEffort pods, and Burstable pods where a
/// container (or an init container, counting the sidecars started before it) has no
/// memory limit and the pod sets none at pod level. The limit is `PodLimits`' memory: the
/// sum over the containers and the sidecars, at least the largest init container's need,
/// replaced by a pod-level limit, plus the pod's memory overhead.
pub fn pod_memory_limit(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let qos = compute_pod_qos(pod);
    if qos == "BestEffort" {
        return None;
    }
    let limits_of = |c: &k8s_openapi::api::core::v1::Container| {
        memory_of(c.resources.as_ref().and_then(|r| r.limits.as_ref()))
    };
    let mut declared = true;
    let mut limit = Amount::ZERO;
    for c in &spec.containers {
        let m = limits_of(c);
        declared &= !m.is_zero();
        limit = limit.plus(m);
    }
    // Init containers: each needs its own limit plus the sidecars started before it; a
    // sidecar (restartPolicy Always) also runs beside the containers.
    let mut sidecars = Amount::ZERO;
    let mut init_max = Amount::ZERO;
    for c in spec.init_containers.iter().flatten() {
        let m = limits_of(c);
        let need = if c.restart_policy.as_deref() == Some("Always") {
            limit = limit.plus(m);
            sidecars = sidecars.plus(m);
            sidecars
        } else {
            m.plus(sidecars)
        };
        declared &= !need.is_zero();
        init_max = init_max.max(need);
    }
    limit = limit.max(init_max);
    // Pod-level resources (PodLevelResources, on by default since 1.34).
    let pod_level = spec.resources.as_ref().filter(|r| {
        let supported = |k: &String| k == "cpu" || k == "memory" || k.starts_with("hugepages-");
        r.requests.iter().flatten().any(|(k, _)| supported(k))
            || r.limits.iter().flatten().any(|(k, _)| supported(k))
    });
    if let Some(r) = pod_level {
        if let Some(q) = r.limits.as_ref().and_then(|l| l.get("memory")) {
            limit = amount(q);
        }
        if !memory_of(r.limits.as_ref()).is_zero() {
            declared = true;
        }
    }
    let overhead = memory_of(spec.overhead.as_ref());
    if !limit.is_zero() {
        limit = limit.plus(overhead);
    }
    match qos {
        "Guaranteed" => Some(limit.value()),
        _ if declared => Some(limit.value()),
        _ => None,
    }
}

/// upstream's `mountDetector`: what backs a path and whether it is a mount point.
trait MountDetector {
    fn is_mount_point(&self, path: &Path) -> io::Result<bool>;
    /// `GetMountMedium`: the medium backing `path` and whether `path` is a mount point.
    fn get_mount_medium(&self, path: &Path) -> io::Result<(Medium, bool)>;
}

/// The node's mounts: mountinfo for mount points, statfs for the medium.
struct RealMountDetector;

impl MountDetector for RealMountDetector {
    fn is_mount_point(&self, path: &Path) -> io::Result<bool> {
        is_mount_point(path)
    }

    fn get_mount_medium(&self, path: &Path) -> io::Result<(Medium, bool)> {
        use nix::sys::statfs::{HUGETLBFS_MAGIC, TMPFS_MAGIC, statfs};
        let is_mnt = is_mount_point(path)?;
        let fs_type = statfs(path).map_err(io::Error::from)?.filesystem_type();
        let medium = if fs_type == TMPFS_MAGIC {
            Medium::Memory
        } else if fs_type == HUGETLBFS_MAGIC {
            Medium::HugePages
        } else {
            Medium::Default
        };
        Ok((medium, is_mnt))
    }
}

/// pkg/volume/util `IsReady`: the ready marker exists and is a regular file.
fn is_ready(ready_dir: &Path) -> bool {
    let ready = ready_dir.join(READY_FILE_NAME);
    match std::fs::metadata(&ready) {
        Ok(m) if m.is_file() => true,
        Ok(_) => {
            tracing::error!(path = %ready.display(), "ready-file is not a file");
            false
        }
        Err(_) => false,
    }
}

/// pkg/volume/util `SetReady`: creates the ready marker; a failure is logged, not
/// returned (the next set-up does the work again).
fn set_ready(ready_dir: &Path) {
    if let Err(e) = DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(ready_dir)
    {
        tracing::error!(dir = %ready_dir.display(), error = %e, "can't mkdir the ready dir");
        return;
    }
    let ready = ready_dir.join(READY_FILE_NAME);
    if let Err(e) = std::fs::File::create(&ready) {
        tracing::error!(path = %ready.display(), error = %e, "can't touch the ready file");
    }
}

/// Sets up the emptyDir at `dir` (upstream `SetUpAt`): a directory of mode 0777 on the
/// node's disk, or with `medium` `Memory` a tmpfs of `tmpfs_size_bytes` (the kernel's
/// default, half the RAM, when not positive) mounted on it. `ready_dir` is the plugin's
/// directory of the volume, where the `ready` marker records a finished set-up.
pub fn set_up(
    dir: &Path,
    ready_dir: &Path,
    medium: Option<&str>,
    tmpfs_size_bytes: i64,
    sys: &dyn Syscall,
) -> Result<(), EmptyDirError> {
    set_up_at(
        dir,
        ready_dir,
        medium,
        tmpfs_size_bytes,
        sys,
        &RealMountDetector,
    )
}

fn set_up_at(
    dir: &Path,
    ready_dir: &Path,
    medium: Option<&str>,
    tmpfs_size_bytes: i64,
    sys: &dyn Syscall,
    detector: &dyn MountDetector,
) -> Result<(), EmptyDirError> {
    let medium = parse_medium(dir, medium)?;
    // The directory may not exist yet: then it is no mount point and set-up runs.
    let not_mnt = match detector.is_mount_point(dir) {
        Ok(is_mnt) => !is_mnt,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => return Err(io_error("check mount point", dir)(e)),
    };
    if is_ready(ready_dir) {
        match medium {
            Medium::Memory if !not_mnt => return Ok(()),
            Medium::Default => {
                if std::fs::metadata(dir).is_ok() {
                    return Ok(());
                }
                // Only when someone removed the volume's directory by hand.
                tracing::warn!(
                    ready_dir = %ready_dir.display(),
                    dir = %dir.display(),
                    "volume ready file dir exists, but volume dir does not: removing the ready dir"
                );
                if let Err(e) = std::fs::remove_dir_all(ready_dir)
                    && e.kind() != io::ErrorKind::NotFound
                {
                    tracing::warn!(ready_dir = %ready_dir.display(), error = %e, "failed to remove ready dir");
                }
            }
            _ => {}
        }
    }
    match medium {
        Medium::Default => setup_dir(dir)?,
        Medium::Memory => setup_tmpfs(dir, tmpfs_size_bytes, sys, detector)?,
        Medium::HugePages => unreachable!("refused by parse_medium"),
    }
    set_ready(ready_dir);
    Ok(())
}

/// Upstream `setupDir`: creates the directory with mode 0777, and chmods it when the
/// agent's umask took bits away.
fn setup_dir(dir: &Path) -> Result<(), EmptyDirError> {
    DirBuilder::new()
        .recursive(true)
        .mode(PERM)
        .create(dir)
        .map_err(io_error("create directory", dir))?;
    let mode = std::fs::symlink_metadata(dir)
        .map_err(io_error("lstat", dir))?
        .permissions()
        .mode();
    if mode & 0o777 != PERM {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(PERM))
            .map_err(io_error("chmod", dir))?;
    }
    Ok(())
}

/// Upstream `generateTmpfsMountOptions` (without `noswap`): `size=<bytes>` when positive.
fn tmpfs_mount_options(size_bytes: i64) -> Option<String> {
    (size_bytes > 0).then(|| format!("size={size_bytes}"))
}

/// Upstream `setupTmpfs`: the directory, then a tmpfs on it unless one is mounted there
/// already.
fn setup_tmpfs(
    dir: &Path,
    size_bytes: i64,
    sys: &dyn Syscall,
    detector: &dyn MountDetector,
) -> Result<(), EmptyDirError> {
    setup_dir(dir)?;
    let (medium, is_mnt) = detector
        .get_mount_medium(dir)
        .map_err(io_error("determine the mount medium of", dir))?;
    if is_mnt && medium == Medium::Memory {
        return Ok(());
    }
    let options = tmpfs_mount_options(size_bytes);
    sys.mount(
        Some(Path::new("tmpfs")),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        options.as_deref(),
    )?;
    Ok(())
}

/// Tears the emptyDir at `dir` down (upstream `TearDownAt`): removes the plugin's ready
/// dir, unmounts the directory if something is mounted on it (the tmpfs), and removes it
/// with everything in it. A missing directory is already torn down.
pub fn tear_down(dir: &Path, ready_dir: &Path, sys: &dyn Syscall) -> Result<(), EmptyDirError> {
    tear_down_at(dir, ready_dir, sys, &RealMountDetector)
}

fn tear_down_at(
    dir: &Path,
    ready_dir: &Path,
    sys: &dyn Syscall,
    detector: &dyn MountDetector,
) -> Result<(), EmptyDirError> {
    match std::fs::remove_dir_all(ready_dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_error("remove ready dir", ready_dir)(e));
        }
        _ => {}
    }
    match std::fs::metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::warn!(dir = %dir.display(), "unmount skipped because path does not exist");
            return Ok(());
        }
        Err(e) => return Err(io_error("check if path exists", dir)(e)),
    }
    if detector
        .is_mount_point(dir)
        .map_err(io_error("check mount point", dir))?
    {
        sys.umount2(dir, MntFlags::empty())?;
    }
    std::fs::remove_dir_all(dir).map_err(io_error("remove", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::syscall::{Call, LinuxSyscall, TestSyscall};
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};

    const GI: i64 = 1 << 30;

    fn list(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        (!pairs.is_empty()).then(|| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        })
    }

    fn container(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            name: name.into(),
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn sidecar(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            restart_policy: Some("Always".into()),
            ..container(name, requests, limits)
        }
    }

    fn pod(containers: Vec<Container>, init_containers: Vec<Container>) -> Pod {
        Pod {
            metadata: Default::default(),
            spec: Some(PodSpec {
                containers,
                init_containers: (!init_containers.is_empty()).then_some(init_containers),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// upstream TestCalculateEmptyDirMemorySize: (name, pod, node allocatable, sizeLimit,
    /// expected).
    #[test]
    fn calculate_empty_dir_memory_size_table() {
        let cases = [
            (
                "EmptyDirLocalLimit",
                pod(vec![container("c", &[], &[("memory", "10Gi")])], vec![]),
                16 * GI,
                GI,
                GI,
            ),
            (
                "PodLocalLimit",
                pod(vec![container("c", &[], &[("memory", "10Gi")])], vec![]),
                16 * GI,
                0,
                10 * GI,
            ),
            (
                "NodeAllocatableLimit",
                pod(vec![container("c", &[("memory", "10Gi")], &[])], vec![]),
                16 * GI,
                0,
                16 * GI,
            ),
        ];
        for (name, pod, allocatable, size_limit, want) in cases {
            let got = calculate_empty_dir_memory_size(
                allocatable,
                Some(size_limit),
                pod_memory_limit(&pod),
            );
            assert_eq!(got, want, "{name}");
        }
        // No sizeLimit, no pod limit: the node's allocatable; a larger limit never widens.
        assert_eq!(calculate_empty_dir_memory_size(GI, None, None), GI);
        assert_eq!(
            calculate_empty_dir_memory_size(GI, Some(2 * GI), Some(3 * GI)),
            GI
        );
    }

    /// ResourceConfigForPod's memory: (name, pod, expected).
    #[test]
    fn pod_memory_limit_table() {
        let mem = |v: &'static str| [("memory", v)];
        let mut pod_level = pod(vec![container("c", &[], &[])], vec![]);
        pod_level.spec.as_mut().unwrap().resources = Some(ResourceRequirements {
            limits: list(&[("memory", "2Gi")]),
            ..Default::default()
        });
        let mut overhead = pod(vec![container("c", &[], &mem("1Gi"))], vec![]);
        overhead.spec.as_mut().unwrap().overhead = list(&[("memory", "128Mi")]);
        let cases: Vec<(&str, Pod, Option<i64>)> = vec![
            (
                "best effort",
                pod(vec![container("c", &[], &[])], vec![]),
                None,
            ),
            (
                "guaranteed",
                pod(
                    vec![container("c", &[], &[("cpu", "1"), ("memory", "1Gi")])],
                    vec![],
                ),
                Some(GI),
            ),
            (
                "burstable, every container limited: the sum",
                pod(
                    vec![
                        container("a", &[], &mem("1Gi")),
                        container("b", &mem("512Mi"), &mem("2Gi")),
                    ],
                    vec![],
                ),
                Some(3 * GI),
            ),
            (
                "burstable, one container unlimited",
                pod(
                    vec![
                        container("a", &[], &mem("1Gi")),
                        container("b", &mem("512Mi"), &[]),
                    ],
                    vec![],
                ),
                None,
            ),
            (
                "an init container larger than the containers",
                pod(
                    vec![container("a", &[], &mem("1Gi"))],
                    vec![container("init", &[], &mem("4Gi"))],
                ),
                Some(4 * GI),
            ),
            (
                "an unlimited init container",
                pod(
                    vec![container("a", &[], &mem("1Gi"))],
                    vec![container("init", &[("cpu", "1")], &[])],
                ),
                None,
            ),
            (
                "a sidecar adds to the containers and to later init containers",
                pod(
                    vec![container("a", &[], &mem("1Gi"))],
                    vec![
                        sidecar("proxy", &[], &mem("1Gi")),
                        container("init", &[], &mem("2Gi")),
                    ],
                ),
                Some(3 * GI),
            ),
            (
                "an unlimited init container after a limited sidecar",
                pod(
                    vec![container("a", &[], &mem("1Gi"))],
                    vec![
                        sidecar("proxy", &[], &mem("1Gi")),
                        container("init", &[("cpu", "1")], &[]),
                    ],
                ),
                Some(2 * GI),
            ),
            ("a pod-level limit", pod_level, Some(2 * GI)),
            ("overhead", overhead, Some(GI + (128 << 20))),
        ];
        for (name, pod, want) in cases {
            assert_eq!(pod_memory_limit(&pod), want, "{name}");
        }
    }

    /// A detector that answers from fields: the tmpfs tests' view of the node.
    struct FakeDetector {
        medium: Medium,
        is_mnt: bool,
    }

    impl MountDetector for FakeDetector {
        fn is_mount_point(&self, _: &Path) -> io::Result<bool> {
            Ok(self.is_mnt)
        }
        fn get_mount_medium(&self, _: &Path) -> io::Result<(Medium, bool)> {
            Ok((self.medium, self.is_mnt))
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn disk_set_up_is_idempotent_and_0777() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("volumes/kubernetes.io~empty-dir/cache");
        let ready = tmp.path().join("plugins/kubernetes.io~empty-dir/cache");
        let sys = TestSyscall::new();
        set_up(&dir, &ready, None, 0, &sys).unwrap();
        assert!(dir.is_dir());
        assert_eq!(mode(&dir), 0o777, "chmod against the umask");
        assert!(ready.join("ready").is_file());
        std::fs::write(dir.join("data"), b"kept").unwrap();
        set_up(&dir, &ready, Some(""), 0, &sys).unwrap();
        assert_eq!(std::fs::read(dir.join("data")).unwrap(), b"kept");
        // The directory removed behind the agent's back: set up again.
        std::fs::remove_dir_all(&dir).unwrap();
        set_up(&dir, &ready, None, 0, &sys).unwrap();
        assert!(dir.is_dir() && ready.join("ready").is_file());
        assert!(sys.calls().is_empty(), "{:?}", sys.calls());

        tear_down(&dir, &ready, &sys).unwrap();
        assert!(!dir.exists() && !ready.exists());
        assert!(sys.calls().is_empty(), "{:?}", sys.calls());
        // Torn down already: nothing to do.
        tear_down(&dir, &ready, &sys).unwrap();
    }

    #[test]
    fn memory_set_up_mounts_a_sized_tmpfs() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let ready = tmp.path().join("plugin/vol");
        let sys = TestSyscall::new();
        set_up(&dir, &ready, Some("Memory"), 64 << 20, &sys).unwrap();
        assert_eq!(
            sys.calls(),
            vec![Call::Mount {
                source: Some("tmpfs".into()),
                target: dir.clone(),
                fstype: Some("tmpfs".into()),
                flags: MsFlags::empty(),
                data: Some("size=67108864".into()),
            }]
        );
        assert_eq!(mode(&dir), 0o777);
        assert!(ready.join("ready").is_file());

        // No size: the kernel's default.
        let sys = TestSyscall::new();
        set_up(
            &tmp.path().join("vol2"),
            &tmp.path().join("p2"),
            Some("Memory"),
            0,
            &sys,
        )
        .unwrap();
        assert!(matches!(&sys.calls()[..], [Call::Mount { data: None, .. }]));
    }

    #[test]
    fn memory_set_up_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let ready = tmp.path().join("plugin/vol");
        let mounted = FakeDetector {
            medium: Medium::Memory,
            is_mnt: true,
        };
        // Ready and mounted: nothing at all.
        let sys = TestSyscall::new();
        set_ready(&ready);
        set_up_at(&dir, &ready, Some("Memory"), 1 << 20, &sys, &mounted).unwrap();
        assert!(sys.calls().is_empty());
        // Mounted but not marked ready (the agent stopped in between): no second mount.
        std::fs::remove_dir_all(&ready).unwrap();
        set_up_at(&dir, &ready, Some("Memory"), 1 << 20, &sys, &mounted).unwrap();
        assert!(sys.calls().is_empty());
        assert!(ready.join("ready").is_file());
        // Ready but nothing mounted (after a reboot): mounted again.
        let unmounted = FakeDetector {
            medium: Medium::Default,
            is_mnt: false,
        };
        set_up_at(&dir, &ready, Some("Memory"), 1 << 20, &sys, &unmounted).unwrap();
        assert_eq!(sys.names(), vec!["mount"]);
    }

    #[test]
    fn memory_tear_down_unmounts_then_removes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let ready = tmp.path().join("plugin/vol");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        set_ready(&ready);
        let sys = TestSyscall::new();
        let mounted = FakeDetector {
            medium: Medium::Memory,
            is_mnt: true,
        };
        tear_down_at(&dir, &ready, &sys, &mounted).unwrap();
        assert_eq!(
            sys.calls(),
            vec![Call::Umount2 {
                target: dir.clone(),
                flags: MntFlags::empty()
            }]
        );
        assert!(!dir.exists() && !ready.exists());
        // A failed unmount keeps the directory.
        std::fs::create_dir_all(&dir).unwrap();
        let sys = TestSyscall::new().failing("umount2", nix::errno::Errno::EBUSY);
        let err = tear_down_at(&dir, &ready, &sys, &mounted).unwrap_err();
        assert!(err.to_string().contains("EBUSY"), "{err}");
        assert!(dir.exists());
    }

    #[test]
    fn huge_pages_and_unknown_media_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let sys = TestSyscall::new();
        for medium in ["HugePages", "HugePages-2Mi"] {
            let err = set_up(&dir, &tmp.path().join("p"), Some(medium), 0, &sys).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "emptyDir {}: medium \"{medium}\" (huge pages) is not supported by rekube-node-agent",
                    dir.display()
                )
            );
        }
        let err = set_up(&dir, &tmp.path().join("p"), Some("Disk"), 0, &sys).unwrap_err();
        assert_eq!(err.to_string(), "unknown storage medium \"Disk\"");
        assert!(!dir.exists() && sys.calls().is_empty());
    }

    #[test]
    fn mount_points_from_mountinfo() {
        assert!(is_mount_point(Path::new("/")).unwrap());
        assert!(is_mount_point(Path::new("/proc")).unwrap());
        let tmp = tempfile::tempdir().unwrap();
        let sub = tmp.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        assert!(!is_mount_point(&sub).unwrap());
        let err = is_mount_point(&tmp.path().join("missing")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    /// The real kernel, when the tests run as root: a tmpfs mounted, detected (mountinfo
    /// and statfs), set up again without a second mount, and torn down.
    #[test]
    fn memory_round_trip_on_the_real_kernel() {
        if !nix::unistd::geteuid().is_root() {
            rekube_crds::testing::missing_prerequisite("the real tmpfs round trip needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let ready = tmp.path().join("plugin/vol");
        match set_up(&dir, &ready, Some("Memory"), 1 << 20, &LinuxSyscall) {
            Ok(()) => {}
            Err(EmptyDirError::Syscall(e)) if e.errno() == Some(nix::errno::Errno::EPERM) => {
                rekube_crds::testing::missing_prerequisite(&format!(
                    "the real tmpfs round trip: mount not permitted here ({e})"
                ));
                return;
            }
            Err(e) => panic!("{e}"),
        }
        let detected = RealMountDetector.get_mount_medium(&dir);
        // Set up again (ready and mounted) before asserting, so a failure leaves no mount.
        let again = set_up(&dir, &ready, Some("Memory"), 1 << 20, &LinuxSyscall);
        let torn = tear_down(&dir, &ready, &LinuxSyscall);
        assert_eq!(detected.unwrap(), (Medium::Memory, true));
        again.unwrap();
        torn.unwrap();
        assert!(!dir.exists() && !ready.exists());
    }
}
