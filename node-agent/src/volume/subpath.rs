//! subPath mounts that cannot leave their volume (pkg/volume/util/subpath/subpath_linux.go,
//! the fix of CVE-2017-1002101 and CVE-2021-25741). A container may own its volume and
//! plant symlinks in it, and swap them while the agent looks; so the agent never hands the
//! runtime a path to follow. It opens the subPath relative to the volume directory with
//! `openat2(RESOLVE_BENEATH)` (the kernel refuses any resolution that leaves the volume:
//! `..`, an absolute symlink, a symlink pointing out, at the moment of the open), and
//! bind-mounts that open file (`/proc/self/fd/N`) onto
//! `pods/<uid>/volume-subpaths/<volume>/<container>/<index>`, which the container then
//! mounts. Upstream walks the components with `O_NOFOLLOW` after resolving symlinks once;
//! `RESOLVE_BENEATH` is the kernel's own form of that walk (Linux 5.6+), and refuses
//! absolute symlinks that upstream would follow when they land back inside the volume.
//! A missing subPath is created as a directory inside the volume the same way
//! (`SafeMakeDir`: each component made with `mkdirat` under a descriptor, never by path).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};

/// The directory under a pod's directory holding the subPath binds (upstream's
/// `containerSubPathDirectoryName`).
pub const CONTAINER_SUB_PATH_DIRECTORY_NAME: &str = "volume-subpaths";

#[derive(Debug, thiserror::Error)]
pub enum SubpathError {
    #[error("cannot open volume {path}: {source}")]
    OpenVolume { path: PathBuf, source: Errno },
    #[error("subpath {sub_path:?} is outside of volume {volume}")]
    Outside { sub_path: String, volume: PathBuf },
    #[error("cannot open subpath {sub_path:?} in volume {volume}: {source}")]
    Open {
        sub_path: String,
        volume: PathBuf,
        source: Errno,
    },
    #[error("cannot create directory {sub_path:?} in volume {volume}: {source}")]
    MakeDir {
        sub_path: String,
        volume: PathBuf,
        source: Errno,
    },
    #[error("preparing the subpath bind target {path}: {source}")]
    Target {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bind-mounting subpath {sub_path:?} onto {target}: {source}")]
    Bind {
        sub_path: String,
        target: PathBuf,
        source: Errno,
    },
}

/// One volumeMount's subPath (upstream's `subpath.Subpath`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subpath {
    /// The volumeMount's index in the container's list.
    pub volume_mount_index: usize,
    /// The subPath, relative to the volume (checked: not absolute, no `..`).
    pub sub_path: String,
    /// The volume's name in the pod spec.
    pub volume_name: String,
    /// The volume's directory on the node.
    pub volume_path: PathBuf,
    /// The pod's directory (`pods/<uid>`).
    pub pod_dir: PathBuf,
    pub container_name: String,
}

/// `getSubpathBindTarget`.
pub fn bind_target(sp: &Subpath) -> PathBuf {
    sp.pod_dir
        .join(CONTAINER_SUB_PATH_DIRECTORY_NAME)
        .join(&sp.volume_name)
        .join(&sp.container_name)
        .join(sp.volume_mount_index.to_string())
}

fn beneath(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Opens `sub_path` inside the volume (an `O_PATH` descriptor), creating it as a
/// directory with `perm` when it does not exist (`SafeMakeDir`, then `doSafeOpen`).
pub fn safe_open(volume: &Path, sub_path: &str, perm: u32) -> Result<OwnedFd, SubpathError> {
    let base = nix::fcntl::open(
        volume,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| SubpathError::OpenVolume {
        path: volume.to_path_buf(),
        source,
    })?;
    let refused = |source: Errno| match source {
        Errno::EXDEV | Errno::ELOOP => SubpathError::Outside {
            sub_path: sub_path.to_string(),
            volume: volume.to_path_buf(),
        },
        source => SubpathError::Open {
            sub_path: sub_path.to_string(),
            volume: volume.to_path_buf(),
            source,
        },
    };
    match openat2(&base, sub_path, beneath(OFlag::O_PATH)) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(refused(e)),
    }
    // Missing: made one component at a time under the descriptor of its parent.
    let mut parent = base;
    for component in Path::new(sub_path).components() {
        let Component::Normal(name) = component else {
            continue;
        };
        let child = match openat2(&parent, name, beneath(OFlag::O_PATH | OFlag::O_DIRECTORY)) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                match mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(perm)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(source) => {
                        return Err(SubpathError::MakeDir {
                            sub_path: sub_path.to_string(),
                            volume: volume.to_path_buf(),
                            source,
                        });
                    }
                }
                openat2(
                    &parent,
                    name,
                    beneath(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW),
                )
                .map_err(refused)?
            }
            Err(e) => return Err(refused(e)),
        };
        parent = child;
    }
    Ok(parent)
}

/// `PrepareSafeSubpath`: the subPath opened inside its volume and bind-mounted onto its
/// bind target (an earlier bind there is replaced); returns what the container mounts.
pub fn prepare_safe_subpath(sp: &Subpath) -> Result<PathBuf, SubpathError> {
    let perm = std::fs::metadata(&sp.volume_path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o755);
    let fd = safe_open(&sp.volume_path, &sp.sub_path, perm)?;
    let target = bind_target(sp);
    let target_err = |source| SubpathError::Target {
        path: target.clone(),
        source,
    };
    if matches!(crate::runtime::rootfs::is_mount_point(&target), Ok(true)) {
        nix::mount::umount2(&target, MntFlags::MNT_DETACH)
            .map_err(|e| target_err(std::io::Error::from(e)))?;
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(target_err)?;
    }
    let is_dir = fstat(fd.as_fd())
        .map(|st| SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR)
        .unwrap_or(false);
    let made = if is_dir {
        std::fs::create_dir(&target)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&target)
            .map(drop)
    };
    match made {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(target_err(e)),
    }
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    nix::mount::mount(
        Some(&source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| SubpathError::Bind {
        sub_path: sp.sub_path.clone(),
        target: target.clone(),
        source,
    })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    //! As root, on real directories: upstream's subpath_linux_test.go cases for what must
    //! be refused (TestSafeOpen, TestBindSubPath: symlinks out of the volume, `..` through
    //! a symlink, a symlink swapped in) and what must work (plain and nested paths,
    //! symlinks that stay inside, missing directories made).

    use std::os::unix::fs::symlink;

    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let p =
                std::env::temp_dir().join(format!("rekube-subpath-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(p.join("vol")).unwrap();
            std::fs::create_dir_all(p.join("pod")).unwrap();
            Dir(p)
        }
        fn vol(&self) -> PathBuf {
            self.0.join("vol")
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            for m in crate::runtime::rootfs::mounts_under(&self.0) {
                let _ = nix::mount::umount2(&m, MntFlags::MNT_DETACH);
            }
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn safe_open_refuses_every_way_out() {
        let d = Dir::new("open");
        let vol = d.vol();
        std::fs::create_dir_all(vol.join("dir/sub")).unwrap();
        std::fs::write(vol.join("dir/file"), "x").unwrap();
        symlink("/etc", vol.join("abs-out")).unwrap();
        symlink("../..", vol.join("rel-out")).unwrap();
        symlink("dir", vol.join("in")).unwrap();
        symlink("dir/../../", vol.join("in-then-out")).unwrap();
        // (subPath, opens?)
        let cases: &[(&str, bool)] = &[
            ("dir", true),
            ("dir/sub", true),
            ("dir/file", true),
            ("in", true),
            ("in/file", true),
            ("abs-out", false),
            ("abs-out/passwd", false),
            ("rel-out", false),
            ("rel-out/etc", false),
            ("in-then-out", false),
            ("dir/../..", false),
        ];
        for (sub, ok) in cases {
            let got = safe_open(&vol, sub, 0o755);
            assert_eq!(got.is_ok(), *ok, "{sub}: {got:?}");
            if !ok {
                let err = got.unwrap_err().to_string();
                assert!(err.contains("outside of volume"), "{sub}: {err}");
            }
        }
    }

    #[test]
    fn safe_open_makes_missing_directories_inside_only() {
        let d = Dir::new("mkdir");
        let vol = d.vol();
        safe_open(&vol, "a/b/c", 0o750).unwrap();
        assert!(vol.join("a/b/c").is_dir());
        // A symlinked parent pointing out: nothing is created outside.
        let outside = d.0.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        symlink(&outside, vol.join("escape")).unwrap();
        let err = safe_open(&vol, "escape/new", 0o750).unwrap_err();
        assert!(err.to_string().contains("outside of volume"), "{err}");
        assert!(
            !outside.join("new").exists(),
            "a directory was made outside the volume"
        );
    }

    #[test]
    fn bind_subpath_mounts_the_opened_file_not_the_path() {
        if !root() {
            rekube_crds::testing::missing_prerequisite("bind mounts need root");
            return;
        }
        let d = Dir::new("bind");
        let vol = d.vol();
        std::fs::create_dir_all(vol.join("data")).unwrap();
        std::fs::write(vol.join("data/hello"), "inside").unwrap();
        let sp = Subpath {
            volume_mount_index: 0,
            sub_path: "data".into(),
            volume_name: "v".into(),
            volume_path: vol.clone(),
            pod_dir: d.0.join("pod"),
            container_name: "c".into(),
        };
        let target = prepare_safe_subpath(&sp).unwrap();
        assert_eq!(target, d.0.join("pod/volume-subpaths/v/c/0"));
        assert_eq!(
            std::fs::read_to_string(target.join("hello")).unwrap(),
            "inside"
        );
        // Again (a container restart): the bind is replaced, not stacked.
        prepare_safe_subpath(&sp).unwrap();
        let binds = crate::runtime::rootfs::mounts_under(&target);
        assert_eq!(binds, vec![target.clone()], "one bind");
        // A file subPath is bound onto a file.
        let file = Subpath {
            volume_mount_index: 1,
            sub_path: "data/hello".into(),
            ..sp.clone()
        };
        let t = prepare_safe_subpath(&file).unwrap();
        assert_eq!(std::fs::read_to_string(&t).unwrap(), "inside");
        // The symlink swap of CVE-2021-25741: "data" replaced by a link to /etc after
        // the pod was written; the next preparation refuses instead of binding /etc.
        nix::mount::umount2(&target, MntFlags::MNT_DETACH).unwrap();
        std::fs::remove_dir_all(vol.join("data")).unwrap();
        symlink("/etc", vol.join("data")).unwrap();
        let err = prepare_safe_subpath(&sp).unwrap_err();
        assert!(err.to_string().contains("outside of volume"), "{err}");
    }
}
