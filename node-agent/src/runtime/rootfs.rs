//! The container's root filesystem, as runc's `libcontainer/rootfs_linux.go`
//! (`prepareRoot`, `mountToRootfs`, `createDevices`/`bindMountDeviceNode`, `setupPtmx`,
//! `setupDevSymlinks`, `pivotRoot`, `readonlyPath`, `maskPath`, `finalizeRootfs`) and
//! youki's `rootfs/{rootfs,mount,device,symlink}.rs`; the default mounts are containerd's
//! (`pkg/oci/mounts_linux.go`).
//!
//! On the host, [`OverlayDirs::create`] makes the per-container upper and work
//! directories (the image layers are the lower directories, top first, as containerd's
//! overlayfs snapshotter). In the container's own mount namespace,
//! [`prepare_rootfs`] makes every mount slave, mounts the overlay (or binds a plain
//! rootfs onto itself), then /proc, a tmpfs /dev with the minimal device nodes (bound from
//! the host when mknod is refused), /dev/pts, /dev/shm, /dev/mqueue, /sys read-only and
//! the bind mounts; [`pivot_rootfs`] does runc's `pivot_root(".", ".")` +
//! `umount2(".", MNT_DETACH)`; [`finalize_rootfs`] makes the read-only paths read-only,
//! masks the masked paths and remounts / read-only when asked. The mounts live and die
//! with the container's mount namespace: nothing is mounted on the host, but for a
//! container with a Bidirectional mount (below).
//!
//! Propagation, as containerd's `WithMounts` asks runc for it: each bind mount is made
//! `rprivate`, `rslave` or `rshared` after it is bound ([`MountPropagation`]), and the
//! rootfs propagation ([`rootfs_propagation`], runc's `rootfsPropagation`) is `rslave`,
//! or `rshared` when a mount is Bidirectional: then the mounts the host shares stay
//! shared with the host in the container's namespace, and what the container mounts under
//! a Bidirectional volume reaches the host. runc's `rootfsParentMountPrivate` keeps the
//! rootfs itself out of that: the mount the rootfs is on is made private. containerd's
//! rootfs is a mount of its own (the snapshotter's, on the host); rekube's overlay is
//! mounted in the container's namespace, on the agent's state directory, which is on
//! the agent's rshared root directory with the volumes: so [`prepare_host_root`] first
//! makes the rootfs directory a private mount of its own on the host, and only that mount
//! is made private in the container's namespace. It is under the container's state
//! directory, unmounted with it ([`unmount_all_under`]).

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

use super::spec::{BindMount, ContainerDevice, DeviceKind, MountPropagation};
use super::syscall::{FileKind, Syscall, SyscallError};

/// Errors assembling a root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error(transparent)]
    Syscall(#[from] SyscallError),
    #[error("overlay option for {path}: the path contains ':' or ','")]
    OverlayPath { path: String },
    #[error("overlay options for {layers} layers are {len} bytes, over the {max}-byte limit")]
    OverlayTooLong {
        layers: usize,
        len: usize,
        max: usize,
    },
    #[error("rootfs of overlay: no lower directory")]
    NoLayers,
    #[error("resolve {path} in the rootfs: too many levels of symbolic links")]
    SymlinkLoop { path: String },
    #[error("bind mount source {0} does not exist")]
    MissingSource(String),
    #[error(
        "device {path} of a container whose {dir} is the host's ({why}): a device node cannot be made there"
    )]
    HostDirDevice {
        path: String,
        dir: &'static str,
        why: &'static str,
    },
    #[error("mknod over rootfs")]
    DeviceOverRootfs,
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = RootfsError> = std::result::Result<T, E>;

/// A page: the most mount(2) takes as its data argument.
const MAX_MOUNT_DATA: usize = 4096;

/// The overlayfs directories of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayDirs {
    /// Image layers, top first.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl OverlayDirs {
    /// Creates `upper/` and `work/` under the container's state directory.
    pub fn create(lower: Vec<PathBuf>, state_dir: &Path) -> Result<Self> {
        if lower.is_empty() {
            return Err(RootfsError::NoLayers);
        }
        let upper = state_dir.join("upper");
        let work = state_dir.join("work");
        for d in [&upper, &work] {
            std::fs::create_dir_all(d).map_err(|source| RootfsError::Io {
                op: "create directory",
                path: d.display().to_string(),
                source,
            })?;
        }
        Ok(OverlayDirs { lower, upper, work })
    }

    /// The overlay mount data: `lowerdir=top:...:bottom,upperdir=..,workdir=..`.
    pub fn options(&self) -> Result<String> {
        if self.lower.is_empty() {
            return Err(RootfsError::NoLayers);
        }
        let all = self.lower.iter().chain([&self.upper, &self.work]);
        for p in all {
            let s = p.to_string_lossy();
            if s.contains(':') || s.contains(',') {
                return Err(RootfsError::OverlayPath {
                    path: s.into_owned(),
                });
            }
        }
        let lower = self
            .lower
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let data = format!(
            "lowerdir={lower},upperdir={},workdir={}",
            self.upper.display(),
            self.work.display()
        );
        if data.len() >= MAX_MOUNT_DATA {
            return Err(RootfsError::OverlayTooLong {
                layers: self.lower.len(),
                len: data.len(),
                max: MAX_MOUNT_DATA,
            });
        }
        Ok(data)
    }
}

/// Everything the container's mount setup needs, decided before the fork.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsPlan {
    /// Where the rootfs is assembled: the overlay's mount point (the container's
    /// `rootfs/` state directory) or the plain rootfs directory.
    pub root: PathBuf,
    /// `None`: `root` is a ready directory, bound onto itself.
    pub overlay: Option<OverlayDirs>,
    pub readonly: bool,
    pub privileged: bool,
    /// The container shares the host's network namespace: /sys is the host's, bound
    /// read-only, rather than a new sysfs.
    pub host_network: bool,
    /// The sandbox's /dev/shm to bind; `None`: a private tmpfs.
    pub dev_shm: Option<PathBuf>,
    pub mounts: Vec<BindMount>,
    pub masked_paths: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    /// Device nodes besides the default ones (a pod's volumeDevices), made after the
    /// mounts as runc's `createDevices` makes the spec's devices.
    pub devices: Vec<ContainerDevice>,
    /// The working directory, created when missing (runc's `createCwd`).
    pub cwd: PathBuf,
}

/// A device node every container gets (the OCI runtime spec's default devices).
#[derive(Debug, Clone, Copy)]
pub struct Device {
    pub name: &'static str,
    pub major: u64,
    pub minor: u64,
}

pub const DEFAULT_DEVICES: [Device; 6] = [
    Device {
        name: "null",
        major: 1,
        minor: 3,
    },
    Device {
        name: "zero",
        major: 1,
        minor: 5,
    },
    Device {
        name: "full",
        major: 1,
        minor: 7,
    },
    Device {
        name: "random",
        major: 1,
        minor: 8,
    },
    Device {
        name: "urandom",
        major: 1,
        minor: 9,
    },
    Device {
        name: "tty",
        major: 5,
        minor: 0,
    },
];

/// runc's `setupDevSymlinks` (and `setupPtmx`).
pub const DEV_SYMLINKS: [(&str, &str); 6] = [
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("/proc/kcore", "core"),
    ("pts/ptmx", "ptmx"),
];

/// `root` joined with `unsafe_path` so that the result stays inside `root` whatever
/// symlinks the image has (filepath-securejoin's `SecureJoin`, as runc uses for mount
/// destinations): symlinks are resolved against `root`, `..` stops at `root`.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    let mut resolved = PathBuf::new();
    let mut queue: VecDeque<std::ffi::OsString> = unsafe_path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = queue.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(RootfsError::SymlinkLoop {
                        path: unsafe_path.display().to_string(),
                    });
                }
                let target = std::fs::read_link(&full).map_err(|source| RootfsError::Io {
                    op: "readlink",
                    path: full.display().to_string(),
                    source,
                })?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut parts: Vec<std::ffi::OsString> = target
                    .components()
                    .filter_map(|c| match c {
                        Component::Normal(n) => Some(n.to_os_string()),
                        Component::ParentDir => Some("..".into()),
                        _ => None,
                    })
                    .collect();
                while let Some(p) = parts.pop() {
                    queue.push_front(p);
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

fn at(root: &Path, dest: &str) -> Result<PathBuf> {
    secure_join(root, Path::new(dest))
}

/// The flags that give a bind mount its propagation (the OCI options `rprivate`,
/// `rslave`, `rshared` containerd's `WithMounts` puts on it).
pub fn bind_propagation_flags(propagation: MountPropagation) -> MsFlags {
    let flag = match propagation {
        MountPropagation::Private => MsFlags::MS_PRIVATE,
        MountPropagation::HostToContainer => MsFlags::MS_SLAVE,
        MountPropagation::Bidirectional => MsFlags::MS_SHARED,
    };
    flag | MsFlags::MS_REC
}

/// runc's rootfs propagation as containerd sets it (`s.Linux.RootfsPropagation`):
/// `rshared` when any mount is Bidirectional, else runc's default `rslave` (what a
/// HostToContainer mount asks for too).
pub fn rootfs_propagation(mounts: &[BindMount]) -> MsFlags {
    if shares_with_host(mounts) {
        MsFlags::MS_SHARED | MsFlags::MS_REC
    } else {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    }
}

/// Whether the rootfs propagation is `rshared` (a Bidirectional mount).
pub fn shares_with_host(mounts: &[BindMount]) -> bool {
    mounts
        .iter()
        .any(|m| m.propagation == MountPropagation::Bidirectional)
}

/// On the host, before the fork, for an rshared rootfs: `source` (the overlay's mount
/// point itself, or a plain rootfs directory) bound at `root` and made private, so that
/// the rootfs is a mount of its own, as containerd's snapshot mount is, and nothing
/// mounted on it propagates to the host. `root` is in the container's state directory.
pub fn prepare_host_root(sys: &dyn Syscall, source: &Path, root: &Path) -> Result<()> {
    sys.mount(
        Some(source),
        root,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )?;
    sys.mount(None, root, None, MsFlags::MS_PRIVATE, None)?;
    Ok(())
}

/// The mounts made inside the container's mount namespace before pivot_root, in order.
pub fn prepare_rootfs(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<()> {
    let root = &plan.root;
    // runc's prepareRoot: the rootfs propagation on every mount. rslave (the default):
    // nothing mounted from here on propagates back to the host, host unmounts still
    // reach the container. rshared (a Bidirectional mount): the host's shared mounts stay
    // peers of the container's.
    let shared = shares_with_host(&plan.mounts);
    sys.mount(
        None,
        Path::new("/"),
        None,
        rootfs_propagation(&plan.mounts),
        None,
    )?;
    if shared {
        // runc's rootfsParentMountPrivate: the mount the rootfs is on, shared again now,
        // made private, so that pivot_root accepts it and the rootfs's mounts stay in the
        // container. It is the rootfs's own mount ([`prepare_host_root`]).
        sys.mount(None, root, None, MsFlags::MS_PRIVATE, None)?;
    }

    match &plan.overlay {
        Some(overlay) => {
            let data = overlay.options()?;
            sys.mount(
                Some(Path::new("overlay")),
                root,
                Some("overlay"),
                MsFlags::empty(),
                Some(&data),
            )?;
        }
        // pivot_root needs the new root to be a mount point.
        None => sys.mount(
            Some(root),
            root,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?,
    }

    let nosuid_noexec_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;

    // /proc
    let proc = at(root, "/proc")?;
    sys.create_dir_all(&proc)?;
    sys.mount(
        Some(Path::new("proc")),
        &proc,
        Some("proc"),
        nosuid_noexec_nodev,
        None,
    )?;

    // /dev: a small tmpfs with the default devices, or the host's /dev when privileged.
    let dev = at(root, "/dev")?;
    sys.create_dir_all(&dev)?;
    if plan.privileged {
        sys.mount(
            Some(Path::new("/dev")),
            &dev,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        if shared {
            // Under an rshared root the host's /dev would be a peer: the container's
            // /dev/pts, /dev/shm and /dev/mqueue mounts would reach the host's /dev.
            sys.mount(None, &dev, None, MsFlags::MS_SLAVE | MsFlags::MS_REC, None)?;
        }
    } else {
        sys.mount(
            Some(Path::new("tmpfs")),
            &dev,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        )?;
        create_devices(sys, &dev)?;
        for (target, name) in DEV_SYMLINKS {
            sys.symlink(Path::new(target), &dev.join(name))?;
        }
    }

    // /dev/pts: a new devpts instance, so the container's ptys are its own.
    let pts = dev.join("pts");
    sys.create_dir_all(&pts)?;
    sys.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;

    // /dev/shm: the sandbox's (shared by the pod's containers, as their IPC namespace
    // is), or a private tmpfs.
    let shm = dev.join("shm");
    sys.create_dir_all(&shm)?;
    match &plan.dev_shm {
        // A CRI mount without propagation: containerd's rprivate.
        Some(source) => {
            sys.mount(
                Some(source),
                &shm,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            sys.mount(
                None,
                &shm,
                None,
                bind_propagation_flags(MountPropagation::Private),
                None,
            )?;
        }
        None => sys.mount(
            Some(Path::new("shm")),
            &shm,
            Some("tmpfs"),
            nosuid_noexec_nodev,
            Some("mode=1777,size=65536k"),
        )?,
    }

    // /dev/mqueue
    let mqueue = dev.join("mqueue");
    sys.create_dir_all(&mqueue)?;
    sys.mount(
        Some(Path::new("mqueue")),
        &mqueue,
        Some("mqueue"),
        nosuid_noexec_nodev,
        None,
    )?;

    // /sys: read-only unless privileged; the host's, bound, in the host network namespace.
    let sysfs = at(root, "/sys")?;
    sys.create_dir_all(&sysfs)?;
    let ro = if plan.privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    if plan.host_network {
        sys.mount(
            Some(Path::new("/sys")),
            &sysfs,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        if shared {
            // As /dev: the host's /sys not a peer under an rshared root.
            sys.mount(
                None,
                &sysfs,
                None,
                MsFlags::MS_SLAVE | MsFlags::MS_REC,
                None,
            )?;
        }
        if !plan.privileged {
            sys.mount(
                None,
                &sysfs,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid_noexec_nodev,
                None,
            )?;
        }
    } else {
        sys.mount(
            Some(Path::new("sysfs")),
            &sysfs,
            Some("sysfs"),
            nosuid_noexec_nodev | ro,
            None,
        )?;
    }

    // Volumes and the sandbox's /etc files.
    for m in &plan.mounts {
        let kind = sys
            .file_kind(&m.source)?
            .ok_or_else(|| RootfsError::MissingSource(m.source.display().to_string()))?;
        let target = secure_join(root, &m.destination)?;
        match kind {
            FileKind::Dir => sys.create_dir_all(&target)?,
            FileKind::File => sys.create_file(&target)?,
        }
        sys.mount(
            Some(&m.source),
            &target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?;
        // runc's mountPropagate: the propagation right after the bind, then the
        // read-only remount.
        sys.mount(
            None,
            &target,
            None,
            bind_propagation_flags(m.propagation),
            None,
        )?;
        if m.readonly {
            sys.mount(
                None,
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                None,
            )?;
        }
    }

    // The spec's devices (runc makes them once the mounts are done).
    create_spec_devices(sys, root, plan, &plan.devices)?;

    // The working directory (runc's createCwd).
    let cwd = secure_join(root, &plan.cwd)?;
    sys.create_dir_all(&cwd)?;
    Ok(())
}

/// runc's `createDevices`: mknod each default device, or bind the host's node onto an
/// empty file when mknod is not allowed (`bindMountDeviceNode`).
fn create_devices(sys: &dyn Syscall, dev: &Path) -> Result<()> {
    for d in DEFAULT_DEVICES {
        let target = dev.join(d.name);
        let mode = Mode::from_bits_truncate(0o666);
        match sys.mknod(
            &target,
            SFlag::S_IFCHR,
            mode,
            nix::sys::stat::makedev(d.major, d.minor),
        ) {
            Ok(()) => {}
            Err(e) if e.errno() == Some(Errno::EPERM) => {
                sys.create_file(&target)?;
                let host = Path::new("/dev").join(d.name);
                sys.mount(Some(&host), &target, None, MsFlags::MS_BIND, None)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// runc's `createDeviceNode` for the spec's devices: each node made with mknod at its
/// path in the rootfs (the parents 0755) with the host node's mode, then given the host
/// node's owner and group; an existing file is kept; where mknod is refused, the host's
/// node bound onto an empty file (`bindMountDeviceNode`). A node whose path resolves into
/// a directory of the host's ([`host_dir_of_device`]) is refused.
fn create_spec_devices(
    sys: &dyn Syscall,
    root: &Path,
    plan: &RootfsPlan,
    devices: &[ContainerDevice],
) -> Result<()> {
    for d in devices {
        let target = secure_join(root, &d.path)?;
        if target == root {
            return Err(RootfsError::DeviceOverRootfs);
        }
        if let Some((dir, why)) =
            host_dir_of_device(root, &target, plan.privileged, plan.host_network)
        {
            return Err(RootfsError::HostDirDevice {
                path: d.path.display().to_string(),
                dir,
                why,
            });
        }
        if let Some(parent) = target.parent() {
            sys.create_dir_all(parent)?;
        }
        let kind = match d.kind {
            DeviceKind::Block => SFlag::S_IFBLK,
            DeviceKind::Char => SFlag::S_IFCHR,
        };
        let mode = Mode::from_bits_truncate(d.file_mode);
        match sys.mknod(
            &target,
            kind,
            mode,
            nix::sys::stat::makedev(d.major, d.minor),
        ) {
            Ok(()) => sys.chown(&target, d.uid, d.gid)?,
            Err(e) if e.errno() == Some(Errno::EEXIST) => {}
            Err(e) if e.errno() == Some(Errno::EPERM) => {
                sys.create_file(&target)?;
                sys.mount(Some(&d.host_path), &target, None, MsFlags::MS_BIND, None)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Whether a spec device at `target` (its path in the rootfs `root`, after
/// [`secure_join`], symlinks resolved) would be made in a directory of the host's: a
/// privileged container's /dev is the host's /dev, bound, and a host-network container's
/// /sys the host's sysfs, bound; a node made there would be made on the host. The
/// directory and why it is the host's; elsewhere (`/mnt/disk`, `/data/xvda`) the node is
/// made in the container's rootfs, privileged or not.
pub fn host_dir_of_device(
    root: &Path,
    target: &Path,
    privileged: bool,
    host_network: bool,
) -> Option<(&'static str, &'static str)> {
    if privileged && target.starts_with(root.join("dev")) {
        return Some(("/dev", "privileged"));
    }
    if host_network && target.starts_with(root.join("sys")) {
        return Some(("/sys", "host network"));
    }
    None
}

/// runc's `pivotRoot`: `root` becomes `/`, the old root is detached.
pub fn pivot_rootfs(sys: &dyn Syscall, root: &Path) -> Result<()> {
    let old_root = sys.open_dir(Path::new("/"))?;
    sys.chdir(root)?;
    sys.pivot_root(Path::new("."), Path::new("."))?;
    // The old root is stacked on the new one. runc's fchdir(oldroot): "." must name the
    // old root's mount, not the new root's (the cwd), else the rslave below would reach
    // the container's own mounts too (a Bidirectional volume's among them) through the
    // new root. Make it slave so that detaching it does not propagate (under an rshared
    // rootfs it is still the host's peer), then detach it.
    sys.fchdir(std::os::fd::AsFd::as_fd(&old_root))?;
    sys.mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    sys.umount2(Path::new("."), MntFlags::MNT_DETACH)?;
    sys.chdir(Path::new("/"))?;
    Ok(())
}

/// After pivot_root: read-only paths, masked paths (runc's order), then / read-only.
pub fn finalize_rootfs(sys: &dyn Syscall, plan: &RootfsPlan) -> Result<()> {
    for p in &plan.readonly_paths {
        if sys.file_kind(p)?.is_none() {
            continue;
        }
        sys.mount(Some(p), p, None, MsFlags::MS_BIND | MsFlags::MS_REC, None)?;
        // The default read-only paths are all in /proc: keep its nosuid, nodev, noexec.
        sys.mount(
            Some(p),
            p,
            None,
            MsFlags::MS_BIND
                | MsFlags::MS_REMOUNT
                | MsFlags::MS_RDONLY
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC,
            None,
        )?;
    }
    for p in &plan.masked_paths {
        match sys.file_kind(p)? {
            None => {}
            Some(FileKind::Dir) => sys.mount(
                Some(Path::new("tmpfs")),
                p,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            )?,
            Some(FileKind::File) => sys.mount(
                Some(Path::new("/dev/null")),
                p,
                None,
                MsFlags::MS_BIND,
                None,
            )?,
        }
    }
    if plan.readonly {
        sys.mount(
            None,
            Path::new("/"),
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None,
        )?;
    }
    Ok(())
}

/// Mount points under `dir` in this mount namespace, deepest first (a mountinfo line
/// that does not parse is skipped).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = rekube_csi::mountinfo::parse_lines(&text)
        .flatten()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// Whether `path` is a mount point in this mount namespace (`/proc/self/mountinfo`, read
/// by [`mounts_under`]; unreadable, it lists no mount). The path is resolved first, so a
/// missing one is an error of kind `NotFound`.
pub fn is_mount_point(path: &Path) -> std::io::Result<bool> {
    let path = std::fs::canonicalize(path)?;
    Ok(mounts_under(&path).contains(&path))
}

/// Detaches every mount under `dir` (a safety net on delete: the container's mounts
/// live in its own mount namespace and normally vanish with it).
pub fn unmount_all_under(sys: &dyn Syscall, dir: &Path) -> Result<()> {
    for m in mounts_under(dir) {
        match sys.umount2(&m, MntFlags::MNT_DETACH) {
            Ok(()) => {}
            Err(e) if matches!(e.errno(), Some(Errno::EINVAL) | Some(Errno::ENOENT)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::syscall::{Call, TestSyscall};

    fn plan(root: &str) -> RootfsPlan {
        RootfsPlan {
            root: PathBuf::from(root),
            overlay: Some(OverlayDirs {
                lower: vec!["/layers/top".into(), "/layers/base".into()],
                upper: "/state/c1/upper".into(),
                work: "/state/c1/work".into(),
            }),
            readonly: false,
            privileged: false,
            host_network: false,
            dev_shm: None,
            mounts: vec![],
            masked_paths: vec![
                "/proc/kcore".into(),
                "/proc/acpi".into(),
                "/proc/missing".into(),
            ],
            readonly_paths: vec!["/proc/sys".into(), "/proc/missing-ro".into()],
            devices: vec![],
            cwd: "/work".into(),
        }
    }

    fn mount_of(calls: &[Call], target: &str) -> Option<Call> {
        calls
            .iter()
            .find(|c| matches!(c, Call::Mount { target: t, .. } if t == Path::new(target)))
            .cloned()
    }

    #[test]
    fn overlay_options_put_the_top_layer_first() {
        let p = plan("/state/c1/rootfs");
        assert_eq!(
            p.overlay.unwrap().options().unwrap(),
            "lowerdir=/layers/top:/layers/base,upperdir=/state/c1/upper,workdir=/state/c1/work"
        );
        let bad = OverlayDirs {
            lower: vec!["/a:b".into()],
            upper: "/u".into(),
            work: "/w".into(),
        };
        assert_eq!(
            bad.options().unwrap_err().to_string(),
            "overlay option for /a:b: the path contains ':' or ','"
        );
        let long = OverlayDirs {
            lower: (0..200)
                .map(|i| PathBuf::from(format!("/var/lib/rekube/layers/{i:032}")))
                .collect(),
            upper: "/u".into(),
            work: "/w".into(),
        };
        assert!(matches!(
            long.options(),
            Err(RootfsError::OverlayTooLong { layers: 200, .. })
        ));
        let none = OverlayDirs {
            lower: vec![],
            upper: "/u".into(),
            work: "/w".into(),
        };
        assert!(matches!(none.options(), Err(RootfsError::NoLayers)));
    }

    /// The pseudo-filesystems get containerd's `defaultMounts` options (oci/mounts.go)
    /// exactly: nodev on /proc, /dev/shm, /dev/mqueue and /sys; not on the /dev tmpfs and
    /// /dev/pts, which hold the container's device nodes (what keeps a container from
    /// opening a host device it makes there is the device cgroup, as with runc).
    #[test]
    fn pseudo_filesystems_have_containerd_s_default_options() {
        let sys = TestSyscall::new();
        prepare_rootfs(&sys, &plan("/r")).unwrap();
        let calls = sys.calls();
        let nosuid = MsFlags::MS_NOSUID;
        let noexec = MsFlags::MS_NOEXEC;
        let nodev = MsFlags::MS_NODEV;
        for (target, fstype, flags, data) in [
            ("/r/proc", "proc", nosuid | noexec | nodev, None),
            (
                "/r/dev",
                "tmpfs",
                nosuid | MsFlags::MS_STRICTATIME,
                Some("mode=755,size=65536k"),
            ),
            (
                "/r/dev/pts",
                "devpts",
                nosuid | noexec,
                Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
            ),
            (
                "/r/dev/shm",
                "tmpfs",
                nosuid | noexec | nodev,
                Some("mode=1777,size=65536k"),
            ),
            ("/r/dev/mqueue", "mqueue", nosuid | noexec | nodev, None),
            (
                "/r/sys",
                "sysfs",
                nosuid | noexec | nodev | MsFlags::MS_RDONLY,
                None,
            ),
        ] {
            match mount_of(&calls, target).unwrap() {
                Call::Mount {
                    fstype: f,
                    flags: got,
                    data: d,
                    ..
                } => {
                    assert_eq!(f.as_deref(), Some(fstype), "{target}");
                    assert_eq!(got, flags, "{target}");
                    assert_eq!(d.as_deref(), data, "{target}");
                }
                _ => unreachable!(),
            }
        }
    }

    #[test]
    fn prepare_mounts_in_runc_order() {
        let sys = TestSyscall::new();
        prepare_rootfs(&sys, &plan("/r")).unwrap();
        let targets: Vec<String> = sys
            .mount_targets()
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(
            targets,
            vec![
                "/",
                "/r",
                "/r/proc",
                "/r/dev",
                "/r/dev/pts",
                "/r/dev/shm",
                "/r/dev/mqueue",
                "/r/sys"
            ]
        );
        let calls = sys.calls();
        // Every mount is made slave first.
        assert_eq!(
            calls[0],
            Call::Mount {
                source: None,
                target: "/".into(),
                fstype: None,
                flags: MsFlags::MS_SLAVE | MsFlags::MS_REC,
                data: None
            }
        );
        assert_eq!(
            mount_of(&calls, "/r").unwrap(),
            Call::Mount {
                source: Some("overlay".into()),
                target: "/r".into(),
                fstype: Some("overlay".into()),
                flags: MsFlags::empty(),
                data: Some("lowerdir=/layers/top:/layers/base,upperdir=/state/c1/upper,workdir=/state/c1/work".into())
            }
        );
        assert_eq!(
            mount_of(&calls, "/r/dev/pts").unwrap(),
            Call::Mount {
                source: Some("devpts".into()),
                target: "/r/dev/pts".into(),
                fstype: Some("devpts".into()),
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                data: Some("newinstance,ptmxmode=0666,mode=0620,gid=5".into())
            }
        );
        match mount_of(&calls, "/r/sys").unwrap() {
            Call::Mount { fstype, flags, .. } => {
                assert_eq!(fstype.as_deref(), Some("sysfs"));
                assert!(flags.contains(MsFlags::MS_RDONLY));
            }
            _ => unreachable!(),
        }
        // Six device nodes, 0666 character devices, then the /dev symlinks.
        let nodes: Vec<(PathBuf, u64)> = calls
            .iter()
            .filter_map(|c| match c {
                Call::Mknod {
                    path,
                    kind,
                    perm,
                    dev,
                } => {
                    assert_eq!(*kind, SFlag::S_IFCHR);
                    assert_eq!(perm.bits(), 0o666);
                    Some((path.clone(), *dev))
                }
                _ => None,
            })
            .collect();
        assert_eq!(nodes.len(), 6);
        assert_eq!(
            nodes[0],
            ("/r/dev/null".into(), nix::sys::stat::makedev(1, 3))
        );
        assert_eq!(
            nodes[5],
            ("/r/dev/tty".into(), nix::sys::stat::makedev(5, 0))
        );
        assert!(calls.contains(&Call::Symlink {
            original: "pts/ptmx".into(),
            link: "/r/dev/ptmx".into()
        }));
        // The cwd is created last.
        assert_eq!(calls.last().unwrap(), &Call::CreateDirAll("/r/work".into()));
    }

    #[test]
    fn devices_are_bound_from_the_host_when_mknod_is_refused() {
        let sys = TestSyscall::new().failing("mknod", Errno::EPERM);
        prepare_rootfs(&sys, &plan("/r")).unwrap();
        let calls = sys.calls();
        assert_eq!(
            mount_of(&calls, "/r/dev/null").unwrap(),
            Call::Mount {
                source: Some("/dev/null".into()),
                target: "/r/dev/null".into(),
                fstype: None,
                flags: MsFlags::MS_BIND,
                data: None
            }
        );
        assert!(calls.contains(&Call::CreateFile("/r/dev/urandom".into())));
        // Another errno is an error.
        let sys = TestSyscall::new().failing("mknod", Errno::EIO);
        assert!(
            prepare_rootfs(&sys, &plan("/r"))
                .unwrap_err()
                .to_string()
                .contains("EIO")
        );
    }

    #[test]
    fn plain_rootfs_is_bound_onto_itself_and_host_network_binds_sys() {
        let mut p = plan("/bundle/rootfs");
        p.overlay = None;
        p.host_network = true;
        p.dev_shm = Some("/run/rekube/pods/u1/shm".into());
        let sys = TestSyscall::new();
        prepare_rootfs(&sys, &p).unwrap();
        let calls = sys.calls();
        assert_eq!(
            mount_of(&calls, "/bundle/rootfs").unwrap(),
            Call::Mount {
                source: Some("/bundle/rootfs".into()),
                target: "/bundle/rootfs".into(),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                data: None
            }
        );
        let sys_mounts: Vec<&Call> = calls
            .iter()
            .filter(|c| matches!(c, Call::Mount { target, .. } if target == Path::new("/bundle/rootfs/sys")))
            .collect();
        assert_eq!(sys_mounts.len(), 2, "rbind, then remount read-only");
        assert!(
            matches!(sys_mounts[1], Call::Mount { flags, .. } if flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_REMOUNT))
        );
        assert_eq!(
            mount_of(&calls, "/bundle/rootfs/dev/shm").unwrap(),
            Call::Mount {
                source: Some("/run/rekube/pods/u1/shm".into()),
                target: "/bundle/rootfs/dev/shm".into(),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                data: None
            }
        );
    }

    #[test]
    fn bind_mounts_create_their_targets_and_readonly_remounts() {
        let mut p = plan("/r");
        p.mounts = vec![
            BindMount::new("/var/lib/rekube/pods/u1/volumes/data", "/data", false),
            BindMount::new("/run/rekube/pods/u1/hosts", "/etc/hosts", true),
        ];
        let sys = TestSyscall::new()
            .with_file("/var/lib/rekube/pods/u1/volumes/data", FileKind::Dir)
            .with_file("/run/rekube/pods/u1/hosts", FileKind::File);
        prepare_rootfs(&sys, &p).unwrap();
        let calls = sys.calls();
        let i_dir = calls
            .iter()
            .position(|c| *c == Call::CreateDirAll("/r/data".into()))
            .unwrap();
        let i_file = calls
            .iter()
            .position(|c| *c == Call::CreateFile("/r/etc/hosts".into()))
            .unwrap();
        assert!(i_dir < i_file);
        let hosts: Vec<&Call> = calls
            .iter()
            .filter(
                |c| matches!(c, Call::Mount { target, .. } if target == Path::new("/r/etc/hosts")),
            )
            .collect();
        // The bind, its propagation (rprivate by default), then the read-only remount.
        assert_eq!(hosts.len(), 3);
        assert!(
            matches!(hosts[1], Call::Mount { flags, .. } if *flags == MsFlags::MS_PRIVATE | MsFlags::MS_REC)
        );
        assert!(
            matches!(hosts[2], Call::Mount { flags, .. } if *flags == MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY)
        );

        let mut missing = plan("/r");
        missing.mounts = vec![BindMount::new("/nope", "/data", false)];
        assert_eq!(
            prepare_rootfs(&TestSyscall::new(), &missing)
                .unwrap_err()
                .to_string(),
            "bind mount source /nope does not exist"
        );
    }

    /// The mount calls on `target`, as (source, flags), in order.
    fn mounts_on(calls: &[Call], target: &str) -> Vec<(Option<String>, MsFlags)> {
        calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount {
                    source,
                    target: t,
                    flags,
                    ..
                } if t == Path::new(target) => {
                    Some((source.as_ref().map(|s| s.display().to_string()), *flags))
                }
                _ => None,
            })
            .collect()
    }

    fn propagation_plan(propagations: &[MountPropagation]) -> (RootfsPlan, TestSyscall) {
        let mut p = plan("/r");
        let mut sys = TestSyscall::new();
        for (i, propagation) in propagations.iter().enumerate() {
            let source = format!("/var/lib/rekube/pods/u1/volumes/v{i}");
            p.mounts.push(
                BindMount::new(&source, format!("/mnt/v{i}"), i == 0)
                    .with_propagation(*propagation),
            );
            sys = sys.with_file(source, FileKind::Dir);
        }
        (p, sys)
    }

    /// containerd + runc: each bind mount gets rprivate, rslave or rshared right after
    /// it is bound (before the read-only remount); the rootfs stays rslave without a
    /// Bidirectional mount.
    #[test]
    fn bind_mounts_get_their_propagation_and_the_root_stays_rslave() {
        use MountPropagation::*;
        let (p, sys) = propagation_plan(&[Private, HostToContainer]);
        prepare_rootfs(&sys, &p).unwrap();
        let calls = sys.calls();
        assert_eq!(
            calls[0],
            Call::Mount {
                source: None,
                target: "/".into(),
                fstype: None,
                flags: MsFlags::MS_SLAVE | MsFlags::MS_REC,
                data: None
            }
        );
        // The overlay right after: no private remount of the root.
        assert_eq!(mounts_on(&calls, "/r").len(), 1);
        let src = |i: usize| Some(format!("/var/lib/rekube/pods/u1/volumes/v{i}"));
        let bind = MsFlags::MS_BIND | MsFlags::MS_REC;
        assert_eq!(
            mounts_on(&calls, "/r/mnt/v0"),
            vec![
                (src(0), bind),
                (None, MsFlags::MS_PRIVATE | MsFlags::MS_REC),
                (
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY
                ),
            ]
        );
        assert_eq!(
            mounts_on(&calls, "/r/mnt/v1"),
            vec![(src(1), bind), (None, MsFlags::MS_SLAVE | MsFlags::MS_REC)]
        );
        assert_eq!(
            rootfs_propagation(&p.mounts),
            MsFlags::MS_SLAVE | MsFlags::MS_REC
        );
        assert!(!shares_with_host(&p.mounts));
    }

    /// A Bidirectional mount: the rootfs rshared (runc's rootfsPropagation), then the
    /// rootfs's own mount private (rootfsParentMountPrivate) before the overlay goes on it;
    /// the mount rshared after its bind; a privileged container's host /dev and a host
    /// network's /sys made rslave so that they do not share with the host.
    #[test]
    fn a_bidirectional_mount_makes_the_root_rshared_and_the_rootfs_private() {
        use MountPropagation::*;
        let (mut p, sys) = propagation_plan(&[HostToContainer, Bidirectional, Private]);
        p.privileged = true;
        p.host_network = true;
        prepare_rootfs(&sys, &p).unwrap();
        let calls = sys.calls();
        let rec = |f: MsFlags| f | MsFlags::MS_REC;
        assert_eq!(
            &calls[..3],
            &[
                Call::Mount {
                    source: None,
                    target: "/".into(),
                    fstype: None,
                    flags: rec(MsFlags::MS_SHARED),
                    data: None
                },
                Call::Mount {
                    source: None,
                    target: "/r".into(),
                    fstype: None,
                    flags: MsFlags::MS_PRIVATE,
                    data: None
                },
                Call::Mount {
                    source: Some("overlay".into()),
                    target: "/r".into(),
                    fstype: Some("overlay".into()),
                    flags: MsFlags::empty(),
                    data: Some("lowerdir=/layers/top:/layers/base,upperdir=/state/c1/upper,workdir=/state/c1/work".into())
                },
            ]
        );
        let propagation_of = |target: &str| mounts_on(&calls, target)[1].1;
        assert_eq!(propagation_of("/r/mnt/v0"), rec(MsFlags::MS_SLAVE));
        assert_eq!(propagation_of("/r/mnt/v1"), rec(MsFlags::MS_SHARED));
        assert_eq!(propagation_of("/r/mnt/v2"), rec(MsFlags::MS_PRIVATE));
        assert_eq!(
            mounts_on(&calls, "/r/dev"),
            vec![
                (Some("/dev".into()), rec(MsFlags::MS_BIND)),
                (None, rec(MsFlags::MS_SLAVE))
            ]
        );
        assert_eq!(
            mounts_on(&calls, "/r/sys"),
            vec![
                (Some("/sys".into()), rec(MsFlags::MS_BIND)),
                (None, rec(MsFlags::MS_SLAVE))
            ]
        );
        assert_eq!(rootfs_propagation(&p.mounts), rec(MsFlags::MS_SHARED));
        // Without Bidirectional, the same privileged host-network container keeps runc's
        // plain binds.
        let (mut p, sys) = propagation_plan(&[HostToContainer]);
        p.privileged = true;
        p.host_network = true;
        prepare_rootfs(&sys, &p).unwrap();
        assert_eq!(mounts_on(&sys.calls(), "/r/dev").len(), 1);
        assert_eq!(mounts_on(&sys.calls(), "/r/sys").len(), 1);
    }

    /// The sandbox's /dev/shm, a CRI mount without propagation: rprivate after the bind.
    #[test]
    fn the_sandbox_shm_is_rprivate() {
        let mut p = plan("/r");
        p.dev_shm = Some("/run/rekube/pods/u1/shm".into());
        let sys = TestSyscall::new();
        prepare_rootfs(&sys, &p).unwrap();
        assert_eq!(
            mounts_on(&sys.calls(), "/r/dev/shm"),
            vec![
                (
                    Some("/run/rekube/pods/u1/shm".into()),
                    MsFlags::MS_BIND | MsFlags::MS_REC
                ),
                (None, MsFlags::MS_PRIVATE | MsFlags::MS_REC),
            ]
        );
    }

    /// On the host, for an rshared rootfs: the rootfs directory bound (recursively, for a
    /// plain rootfs with mounts of its own) and made private, not recursively.
    #[test]
    fn the_host_root_is_a_private_mount_of_its_own() {
        let sys = TestSyscall::new();
        prepare_host_root(
            &sys,
            Path::new("/bundle/rootfs"),
            Path::new("/state/c1/rootfs"),
        )
        .unwrap();
        assert_eq!(
            mounts_on(&sys.calls(), "/state/c1/rootfs"),
            vec![
                (
                    Some("/bundle/rootfs".into()),
                    MsFlags::MS_BIND | MsFlags::MS_REC
                ),
                (None, MsFlags::MS_PRIVATE),
            ]
        );
    }

    #[test]
    fn pivot_follows_runc() {
        let sys = TestSyscall::new();
        pivot_rootfs(&sys, Path::new("/r")).unwrap();
        assert_eq!(
            sys.calls(),
            vec![
                Call::OpenDir("/".into()),
                Call::Chdir("/r".into()),
                Call::PivotRoot {
                    new_root: ".".into(),
                    put_old: ".".into()
                },
                Call::Fchdir("/".into()),
                Call::Mount {
                    source: None,
                    target: ".".into(),
                    fstype: None,
                    flags: MsFlags::MS_SLAVE | MsFlags::MS_REC,
                    data: None
                },
                Call::Umount2 {
                    target: ".".into(),
                    flags: MntFlags::MNT_DETACH
                },
                Call::Chdir("/".into()),
            ]
        );
    }

    #[test]
    fn finalize_masks_files_and_dirs_and_skips_missing_paths() {
        let sys = TestSyscall::new()
            .with_file("/proc/kcore", FileKind::File)
            .with_file("/proc/acpi", FileKind::Dir)
            .with_file("/proc/sys", FileKind::Dir);
        let mut p = plan("/r");
        p.readonly = true;
        finalize_rootfs(&sys, &p).unwrap();
        let calls = sys.calls();
        let mounts: Vec<(String, Option<String>, MsFlags)> = calls
            .iter()
            .filter_map(|c| match c {
                Call::Mount {
                    target,
                    source,
                    flags,
                    ..
                } => Some((
                    target.display().to_string(),
                    source.as_ref().map(|s| s.display().to_string()),
                    *flags,
                )),
                _ => None,
            })
            .collect();
        let ro_remount = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        assert_eq!(
            mounts,
            vec![
                (
                    "/proc/sys".into(),
                    Some("/proc/sys".into()),
                    MsFlags::MS_BIND | MsFlags::MS_REC
                ),
                ("/proc/sys".into(), Some("/proc/sys".into()), ro_remount),
                (
                    "/proc/kcore".into(),
                    Some("/dev/null".into()),
                    MsFlags::MS_BIND
                ),
                (
                    "/proc/acpi".into(),
                    Some("tmpfs".into()),
                    MsFlags::MS_RDONLY
                ),
                (
                    "/".into(),
                    None,
                    MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY
                ),
            ]
        );
    }

    #[test]
    fn privileged_binds_the_host_dev_and_keeps_sys_writable() {
        let mut p = plan("/r");
        p.privileged = true;
        let sys = TestSyscall::new();
        prepare_rootfs(&sys, &p).unwrap();
        let calls = sys.calls();
        assert!(!calls.iter().any(|c| c.name() == "mknod"));
        assert_eq!(
            mount_of(&calls, "/r/dev").unwrap(),
            Call::Mount {
                source: Some("/dev".into()),
                target: "/r/dev".into(),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                data: None
            }
        );
        assert!(
            matches!(mount_of(&calls, "/r/sys").unwrap(), Call::Mount { flags, .. } if !flags.contains(MsFlags::MS_RDONLY))
        );
    }

    #[test]
    fn secure_join_keeps_symlinks_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../../..", root.join("up")).unwrap();
        std::os::unix::fs::symlink("real/dir", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let cases = [
            ("/abs/hosts", root.join("etc/hosts")),
            ("/up/etc/passwd", root.join("etc/passwd")),
            ("/rel/x", root.join("real/dir/x")),
            ("/../../x", root.join("x")),
            ("/new/file", root.join("new/file")),
        ];
        for (input, expected) in cases {
            assert_eq!(
                secure_join(root, Path::new(input)).unwrap(),
                expected,
                "{input}"
            );
        }
        assert!(matches!(
            secure_join(root, Path::new("/loop/x")),
            Err(RootfsError::SymlinkLoop { .. })
        ));
    }

    /// A volume device (runc's createDeviceNode for the spec's devices): after the
    /// mounts, the parent made, mknod with the host node's type, mode and number, then
    /// its owner; where mknod is refused, the host's node bound; a privileged container's
    /// /dev (the host's) refused.
    #[test]
    fn spec_devices_are_made_after_the_mounts() {
        let xvda = ContainerDevice {
            path: "/dev/disks/xvda".into(),
            kind: DeviceKind::Block,
            major: 7,
            minor: 3,
            file_mode: 0o660,
            uid: 0,
            gid: 6,
            host_path: "/var/lib/rekube/plugins/kubernetes.io/csi/volumeDevices/publish/pv/u1"
                .into(),
            access: "mrw".into(),
        };
        let mut p = plan("/r");
        p.mounts = vec![BindMount::new("/vol", "/data", false)];
        p.devices = vec![xvda.clone()];
        let sys = TestSyscall::new().with_file("/vol", FileKind::Dir);
        prepare_rootfs(&sys, &p).unwrap();
        let calls = sys.calls();
        let mknod = calls
            .iter()
            .position(
                |c| matches!(c, Call::Mknod { path, .. } if path == Path::new("/r/dev/disks/xvda")),
            )
            .expect("the device made");
        let data = calls
            .iter()
            .position(|c| matches!(c, Call::Mount { target, .. } if target == Path::new("/r/data")))
            .unwrap();
        assert!(data < mknod, "after the mounts");
        assert_eq!(calls[mknod - 1], Call::CreateDirAll("/r/dev/disks".into()));
        assert_eq!(
            calls[mknod],
            Call::Mknod {
                path: "/r/dev/disks/xvda".into(),
                kind: SFlag::S_IFBLK,
                perm: Mode::from_bits_truncate(0o660),
                dev: nix::sys::stat::makedev(7, 3),
            }
        );
        assert_eq!(
            calls[mknod + 1],
            Call::Chown {
                path: "/r/dev/disks/xvda".into(),
                uid: 0,
                gid: 6
            }
        );

        // mknod refused (EPERM): the host's node bound onto an empty file.
        let sys = TestSyscall::new().failing("mknod", Errno::EPERM);
        let mut p = plan("/r");
        p.devices = vec![xvda.clone()];
        prepare_rootfs(&sys, &p).unwrap();
        assert_eq!(
            mount_of(&sys.calls(), "/r/dev/disks/xvda").unwrap(),
            Call::Mount {
                source: Some(xvda.host_path.clone()),
                target: "/r/dev/disks/xvda".into(),
                fstype: None,
                flags: MsFlags::MS_BIND,
                data: None
            }
        );

        // Privileged: /dev is the host's, a node there refused; elsewhere it is made.
        p.privileged = true;
        let err = prepare_rootfs(&TestSyscall::new(), &p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "device /dev/disks/xvda of a container whose /dev is the host's (privileged): a device node cannot be made there"
        );
        p.devices = vec![ContainerDevice {
            path: "/mnt/xvda".into(),
            ..xvda.clone()
        }];
        let sys = TestSyscall::new();
        prepare_rootfs(&sys, &p).unwrap();
        assert!(
            sys.calls()
                .iter()
                .any(|c| matches!(c, Call::Mknod { path, .. } if path == Path::new("/r/mnt/xvda")))
        );
        // Host network: /sys is the host's.
        p.host_network = true;
        p.devices[0].path = "/sys/xvda".into();
        let err = prepare_rootfs(&TestSyscall::new(), &p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "device /sys/xvda of a container whose /sys is the host's (host network): a device node cannot be made there"
        );
    }

    /// Which device paths would land in a host directory, resolved as the rootfs setup
    /// resolves them (secure_join, symlinks in the rootfs followed).
    #[test]
    fn devices_are_refused_only_in_the_hosts_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::create_dir_all(root.join("data")).unwrap();
        // A link in the image into /dev, absolute (resolved inside the rootfs) and
        // relative, and one out of it.
        std::os::unix::fs::symlink("/dev", root.join("devlink")).unwrap();
        std::os::unix::fs::symlink("../dev", root.join("data/up")).unwrap();
        std::os::unix::fs::symlink("/data", root.join("dev/out")).unwrap();
        let (dev, sys) = (Some("/dev"), Some("/sys"));
        let cases: &[(&str, bool, bool, Option<&str>)] = &[
            ("/dev/xvda", true, false, dev),
            ("/dev/disks/by-id/xvda", true, false, dev),
            ("/dev", true, false, dev),
            ("/devlink/xvda", true, false, dev),
            ("/data/up/xvda", true, false, dev),
            ("/dev/../dev/xvda", true, false, dev),
            ("/dev/out/xvda", true, false, None),
            ("/devices/xvda", true, false, None),
            ("/mnt/xvda", true, false, None),
            ("/data/xvda", true, true, None),
            ("/dev/xvda", false, false, None),
            ("/dev/xvda", false, true, None),
            ("/sys/xvda", true, false, None),
            ("/sys/block/xvda", false, true, sys),
            ("/sys/xvda", true, true, sys),
            ("/dev/xvda", true, true, dev),
        ];
        for (path, privileged, host_network, want) in cases {
            let target = secure_join(root, Path::new(path)).unwrap();
            assert_eq!(
                host_dir_of_device(root, &target, *privileged, *host_network).map(|(dir, _)| dir),
                *want,
                "{path} privileged={privileged} host_network={host_network}"
            );
        }
    }
}
