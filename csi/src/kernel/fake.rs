//! An in-memory kernel for tests without root: loop devices (`/dev/loopN`, device 7:N)
//! over real image files, filesystems made by `mkfs_ext4` and `mkfs_xfs` (with their
//! size: the image's when made or grown; `resize2fs`, as the real one, wants an `e2fsck`
//! between the last mount and an offline resize; `mkfs_xfs` refuses under 300 MiB and
//! `xfs_growfs` grows only a mounted xfs, as xfsprogs; e2fsprogs refuse an xfs and xfsprogs
//! an ext4), and a mount table in which a mounted path stats as the root of what is
//! mounted there (inode 2 of an ext4, 128 of an xfs, as mkfs.xfs makes them). Calls are
//! recorded in order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sys::stat::makedev;

use super::{FileKind, FileStat, FsStats, Kernel, KernelError, LinuxKernel, Result};
use crate::mountinfo::MountInfo;

/// devtmpfs' device, where the fake's `/dev/loopN` nodes live.
const DEVTMPFS: u64 = 5;
/// The root directory's inode: ext4's is always 2, xfs's the superblock's `rootino`
/// (128 for what mkfs.xfs makes with its defaults).
const EXT4_ROOT_INO: u64 = 2;
const XFS_ROOT_INO: u64 = 128;
/// xfsprogs' smallest filesystem.
const XFS_MIN_BYTES: u64 = 300 << 20;

#[derive(Debug, Clone)]
struct FakeLoop {
    image: PathBuf,
    autoclear: bool,
    read_only: bool,
}

#[derive(Debug, Clone)]
struct FakeMount {
    target: PathBuf,
    /// What stat(target) answers.
    stat: FileStat,
    fs_type: String,
    source: String,
    /// mountinfo's root: `/` for a filesystem's root (mounted, or bound from where it is
    /// mounted), the source path for a bind of anything else.
    root: PathBuf,
    flags: MsFlags,
    /// The loop device the mount holds open, if any.
    holds: Option<u32>,
}

/// A filesystem on an image: its type, its size, and whether it was checked (`e2fsck`)
/// since it was last mounted.
#[derive(Debug, Clone)]
struct FakeFs {
    fs_type: String,
    bytes: u64,
    checked: bool,
}

#[derive(Debug, Default)]
struct State {
    loops: BTreeMap<u32, FakeLoop>,
    filesystems: BTreeMap<PathBuf, FakeFs>,
    mounts: Vec<FakeMount>,
    calls: Vec<String>,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct FakeKernel {
    state: Mutex<State>,
}

fn loop_number(device: &Path) -> Option<u32> {
    device.to_str()?.strip_prefix("/dev/loop")?.parse().ok()
}

fn errno(op: &'static str, object: &Path, errno: Errno) -> KernelError {
    KernelError::Errno {
        op,
        object: object.display().to_string(),
        errno,
    }
}

fn image_len(image: &Path) -> Result<u64> {
    std::fs::metadata(image)
        .map(|m| m.len())
        .map_err(|source| KernelError::Io {
            op: "stat",
            object: image.display().to_string(),
            source,
        })
}

impl FakeKernel {
    pub fn new() -> Self {
        Self::default()
    }

    /// The calls made so far, as `op path` strings.
    pub fn calls(&self) -> Vec<String> {
        self.state.lock().unwrap().calls.clone()
    }

    /// The attached loop devices and their images.
    pub fn loops(&self) -> Vec<(PathBuf, PathBuf)> {
        let s = self.state.lock().unwrap();
        s.loops
            .iter()
            .map(|(n, l)| (PathBuf::from(format!("/dev/loop{n}")), l.image.clone()))
            .collect()
    }

    /// The size of the filesystem on `image`, if it has one.
    pub fn filesystem_size(&self, image: &Path) -> Option<u64> {
        let s = self.state.lock().unwrap();
        s.filesystems.get(image).map(|f| f.bytes)
    }

    /// The mount points, oldest first, with whether each is read-only.
    pub fn mount_points(&self) -> Vec<(PathBuf, bool)> {
        let s = self.state.lock().unwrap();
        s.mounts
            .iter()
            .map(|m| (m.target.clone(), m.flags.contains(MsFlags::MS_RDONLY)))
            .collect()
    }

    fn record(&self, call: String) {
        self.state.lock().unwrap().calls.push(call);
    }

    fn mkfs(&self, device: &Path, fs_type: &str) -> Result<()> {
        let mut s = self.state.lock().unwrap();
        let l = loop_number(device)
            .and_then(|n| s.loops.get(&n))
            .ok_or_else(|| errno("mkfs", device, Errno::ENXIO))?;
        if l.read_only {
            return Err(errno("mkfs", device, Errno::EROFS));
        }
        let image = l.image.clone();
        let bytes = image_len(&image)?;
        if fs_type == "xfs" && bytes < XFS_MIN_BYTES {
            return Err(KernelError::Command {
                command: "mkfs.xfs",
                object: device.display().to_string(),
                message: "Filesystem must be larger than 300MB. (exit status: 1)".into(),
            });
        }
        s.filesystems.insert(
            image,
            FakeFs {
                fs_type: fs_type.into(),
                bytes,
                checked: true,
            },
        );
        Ok(())
    }

    /// The filesystem on loop device `device`, which must be of `fs_type` (what the
    /// command `op` of the other filesystem's tools answers otherwise: EINVAL).
    fn fs_of<'a>(
        state: &'a mut State,
        op: &'static str,
        device: &Path,
        fs_type: &str,
    ) -> Result<&'a mut FakeFs> {
        let image = loop_number(device)
            .and_then(|n| state.loops.get(&n))
            .map(|l| l.image.clone())
            .ok_or_else(|| errno(op, device, Errno::ENXIO))?;
        state
            .filesystems
            .get_mut(&image)
            .filter(|f| f.fs_type == fs_type)
            .ok_or_else(|| errno(op, device, Errno::EINVAL))
    }

    fn stat_in(state: &State, path: &Path) -> Result<Option<FileStat>> {
        if let Some(m) = state.mounts.iter().rev().find(|m| m.target == path) {
            return Ok(Some(m.stat));
        }
        if let Some(n) = loop_number(path) {
            return Ok(Some(FileStat {
                dev: DEVTMPFS,
                ino: 1000 + u64::from(n),
                rdev: makedev(7, u64::from(n)),
                kind: FileKind::BlockDevice,
            }));
        }
        LinuxKernel.stat(path)
    }
}

impl Kernel for FakeKernel {
    fn loop_attach(&self, image: &Path, read_only: bool) -> Result<PathBuf> {
        self.record(format!(
            "loop_attach{} {}",
            if read_only { " (read-only)" } else { "" },
            image.display()
        ));
        if !image.is_file() {
            return Err(errno("attach", image, Errno::ENOENT));
        }
        let mut s = self.state.lock().unwrap();
        let n = (0..).find(|n| !s.loops.contains_key(n)).unwrap();
        s.loops.insert(
            n,
            FakeLoop {
                image: image.to_path_buf(),
                autoclear: false,
                read_only,
            },
        );
        Ok(PathBuf::from(format!("/dev/loop{n}")))
    }

    fn loop_read_only(&self, device: &Path) -> Result<bool> {
        let s = self.state.lock().unwrap();
        loop_number(device)
            .and_then(|n| s.loops.get(&n))
            .map(|l| l.read_only)
            .ok_or_else(|| errno("read-only state of", device, Errno::ENXIO))
    }

    fn loop_find(&self, image: &Path) -> Result<Option<PathBuf>> {
        let s = self.state.lock().unwrap();
        Ok(s.loops
            .iter()
            .find(|(_, l)| l.image == image)
            .map(|(n, _)| PathBuf::from(format!("/dev/loop{n}"))))
    }

    fn loop_set_autoclear(&self, device: &Path) -> Result<()> {
        self.record(format!("loop_set_autoclear {}", device.display()));
        let mut s = self.state.lock().unwrap();
        let n = loop_number(device).ok_or_else(|| errno("open", device, Errno::ENOENT))?;
        let l = s
            .loops
            .get_mut(&n)
            .ok_or_else(|| errno("set autoclear on", device, Errno::ENXIO))?;
        l.autoclear = true;
        Ok(())
    }

    fn loop_detach(&self, device: &Path) -> Result<()> {
        self.record(format!("loop_detach {}", device.display()));
        let mut s = self.state.lock().unwrap();
        if let Some(n) = loop_number(device) {
            if s.mounts.iter().any(|m| m.holds == Some(n)) {
                // The kernel defers the detach of a busy device to its last close.
                if let Some(l) = s.loops.get_mut(&n) {
                    l.autoclear = true;
                }
            } else {
                s.loops.remove(&n);
            }
        }
        Ok(())
    }

    fn loop_refresh_capacity(&self, device: &Path) -> Result<()> {
        self.record(format!("loop_refresh_capacity {}", device.display()));
        Ok(())
    }

    fn device_size(&self, device: &Path) -> Result<u64> {
        let s = self.state.lock().unwrap();
        let l = loop_number(device)
            .and_then(|n| s.loops.get(&n))
            .ok_or_else(|| errno("size of", device, Errno::ENXIO))?;
        std::fs::metadata(&l.image)
            .map(|m| m.len())
            .map_err(|source| KernelError::Io {
                op: "stat",
                object: l.image.display().to_string(),
                source,
            })
    }

    fn probe_fs_type(&self, device: &Path) -> Result<Option<String>> {
        let s = self.state.lock().unwrap();
        let l = loop_number(device)
            .and_then(|n| s.loops.get(&n))
            .ok_or_else(|| errno("probe", device, Errno::ENXIO))?;
        Ok(s.filesystems.get(&l.image).map(|f| f.fs_type.clone()))
    }

    fn mkfs_ext4(&self, device: &Path) -> Result<()> {
        self.record(format!("mkfs_ext4 {}", device.display()));
        self.mkfs(device, "ext4")
    }

    fn mkfs_xfs(&self, device: &Path) -> Result<()> {
        self.record(format!("mkfs_xfs {}", device.display()));
        self.mkfs(device, "xfs")
    }

    fn resize2fs(&self, device: &Path) -> Result<()> {
        self.record(format!("resize2fs {}", device.display()));
        let mut s = self.state.lock().unwrap();
        let n = loop_number(device).ok_or_else(|| errno("resize2fs", device, Errno::ENOENT))?;
        let image = s
            .loops
            .get(&n)
            .map(|l| l.image.clone())
            .ok_or_else(|| errno("resize2fs", device, Errno::ENXIO))?;
        let mounted = s.mounts.iter().any(|m| m.holds == Some(n));
        let bytes = image_len(&image)?;
        let fs = Self::fs_of(&mut s, "resize2fs", device, "ext4")?;
        if !mounted && !fs.checked {
            return Err(KernelError::Command {
                command: "resize2fs",
                object: device.display().to_string(),
                message: format!("Please run 'e2fsck -f {}' first.", device.display()),
            });
        }
        fs.bytes = bytes;
        Ok(())
    }

    fn ext4_size(&self, device: &Path) -> Result<u64> {
        let mut s = self.state.lock().unwrap();
        Ok(Self::fs_of(&mut s, "dumpe2fs", device, "ext4")?.bytes)
    }

    fn e2fsck(&self, device: &Path) -> Result<()> {
        self.record(format!("e2fsck {}", device.display()));
        let mut s = self.state.lock().unwrap();
        let n = loop_number(device).ok_or_else(|| errno("e2fsck", device, Errno::ENOENT))?;
        if s.mounts.iter().any(|m| m.holds == Some(n)) {
            return Err(errno("e2fsck", device, Errno::EBUSY));
        }
        Self::fs_of(&mut s, "e2fsck", device, "ext4")?.checked = true;
        Ok(())
    }

    fn xfs_size(&self, device: &Path) -> Result<u64> {
        let mut s = self.state.lock().unwrap();
        Ok(Self::fs_of(&mut s, "xfs_db", device, "xfs")?.bytes)
    }

    fn xfs_growfs(&self, mount_point: &Path) -> Result<()> {
        self.record(format!("xfs_growfs {}", mount_point.display()));
        let mut s = self.state.lock().unwrap();
        // Only a mounted xfs grows: the path must be one of its mounts.
        let n = s
            .mounts
            .iter()
            .rev()
            .find(|m| m.target == mount_point)
            .and_then(|m| m.holds)
            .ok_or_else(|| errno("xfs_growfs", mount_point, Errno::EINVAL))?;
        let device = PathBuf::from(format!("/dev/loop{n}"));
        let image = s.loops[&n].image.clone();
        let bytes = image_len(&image)?;
        let fs = Self::fs_of(&mut s, "xfs_growfs", &device, "xfs")
            .map_err(|_| errno("xfs_growfs", mount_point, Errno::ENOTTY))?;
        fs.bytes = fs.bytes.max(bytes);
        Ok(())
    }

    fn mount(
        &self,
        source: &Path,
        target: &Path,
        fs_type: Option<&str>,
        flags: MsFlags,
        _data: Option<&str>,
    ) -> Result<()> {
        self.record(format!("mount {} {}", source.display(), target.display()));
        let mut s = self.state.lock().unwrap();
        if flags.contains(MsFlags::MS_REMOUNT) {
            let m = s
                .mounts
                .iter_mut()
                .rev()
                .find(|m| m.target == target)
                .ok_or_else(|| errno("remount", target, Errno::EINVAL))?;
            m.flags = flags;
            return Ok(());
        }
        let target_stat = LinuxKernel.stat(target)?;
        let source_stat = Self::stat_in(&s, source)?;
        let (Some(target_stat), Some(source_stat)) = (target_stat, source_stat) else {
            return Err(errno("mount", target, Errno::ENOENT));
        };
        let holds = loop_number(source).filter(|n| s.loops.contains_key(n));
        let (stat, fs, src, root) = if flags.contains(MsFlags::MS_BIND) {
            if (source_stat.kind == FileKind::Dir) != (target_stat.kind == FileKind::Dir) {
                return Err(errno("mount", target, Errno::ENOTDIR));
            }
            // A bind of a mount's root shows that mount's root (`/` for a filesystem's).
            let root = s
                .mounts
                .iter()
                .rev()
                .find(|m| m.target == source)
                .map_or_else(|| source.to_path_buf(), |m| m.root.clone());
            (
                source_stat,
                "bind".to_string(),
                source.display().to_string(),
                root,
            )
        } else {
            let n = holds.ok_or_else(|| errno("mount", source, Errno::ENXIO))?;
            // A write-protected device mounts read-only or not at all (EACCES, as
            // get_tree_bdev answers).
            if s.loops[&n].read_only && !flags.contains(MsFlags::MS_RDONLY) {
                return Err(errno("mount", source, Errno::EACCES));
            }
            let image = s.loops[&n].image.clone();
            let ino = match s.filesystems.get_mut(&image) {
                Some(fs) if Some(fs.fs_type.as_str()) == fs_type => {
                    fs.checked = false;
                    if fs.fs_type == "xfs" {
                        XFS_ROOT_INO
                    } else {
                        EXT4_ROOT_INO
                    }
                }
                _ => return Err(errno("mount", source, Errno::EINVAL)),
            };
            let stat = FileStat {
                dev: makedev(7, u64::from(n)),
                ino,
                rdev: 0,
                kind: FileKind::Dir,
            };
            (
                stat,
                fs_type.unwrap_or_default().to_string(),
                source.display().to_string(),
                PathBuf::from("/"),
            )
        };
        // A bind of a mounted filesystem holds its device as well.
        let holds = holds.or_else(|| {
            s.mounts
                .iter()
                .find(|m| m.stat == stat && m.holds.is_some())
                .and_then(|m| m.holds)
        });
        s.mounts.push(FakeMount {
            target: target.to_path_buf(),
            stat,
            fs_type: fs,
            source: src,
            root,
            flags,
            holds,
        });
        Ok(())
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        self.record(format!("unmount {}", target.display()));
        let mut s = self.state.lock().unwrap();
        let i = s
            .mounts
            .iter()
            .rposition(|m| m.target == target)
            .ok_or_else(|| errno("unmount", target, Errno::EINVAL))?;
        let m = s.mounts.remove(i);
        if let Some(n) = m.holds
            && !s.mounts.iter().any(|o| o.holds == Some(n))
            && s.loops.get(&n).is_some_and(|l| l.autoclear)
        {
            s.loops.remove(&n);
        }
        Ok(())
    }

    fn mounts(&self) -> Result<Vec<MountInfo>> {
        let s = self.state.lock().unwrap();
        Ok(s.mounts
            .iter()
            .map(|m| MountInfo {
                major: nix::sys::stat::major(m.stat.dev) as u32,
                minor: nix::sys::stat::minor(m.stat.dev) as u32,
                root: m.root.clone(),
                mount_point: m.target.clone(),
                options: if m.flags.contains(MsFlags::MS_RDONLY) {
                    "ro".into()
                } else {
                    "rw".into()
                },
                optional_fields: Vec::new(),
                fs_type: m.fs_type.clone(),
                source: m.source.clone(),
                super_options: String::new(),
            })
            .collect())
    }

    fn stat(&self, path: &Path) -> Result<Option<FileStat>> {
        Self::stat_in(&self.state.lock().unwrap(), path)
    }

    fn statvfs(&self, path: &Path) -> Result<FsStats> {
        let s = self.state.lock().unwrap();
        if s.mounts.iter().any(|m| m.target == path) {
            return Ok(FsStats {
                total_bytes: 1000,
                available_bytes: 900,
                used_bytes: 100,
                total_inodes: 10,
                free_inodes: 9,
                used_inodes: 1,
            });
        }
        LinuxKernel.statvfs(path)
    }
}
