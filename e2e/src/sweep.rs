//! Sweeping what a test's process left on the machine when it could not clean up after
//! itself (a failed test, a SIGKILL): the processes in its cgroups, its mounts, the loop
//! devices they held, its directory. One implementation for the harness's processes that
//! make such state: [`crate::agent::AgentProcess`] (a node agent's containers, pod volumes,
//! namespace files, CSI staging and publish mounts) and
//! [`crate::storage::CsiDriverProcess`] (a driver's images and loop devices).
//!
//! Everything is matched by what it belongs to, never by name across the machine: a mount
//! by its mount point (path components, so `/tmp/a-n2` is not under `/tmp/a-n`) or an
//! overlay's layers, a loop device by its backing file or by a mount the sweep removed, a
//! process by the cgroup it is in. What a sweep removes is written to stderr, so that a
//! test's output says what its process left.
use std::cmp::Reverse;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::MntFlags;
use rekube_csi::kernel::{Kernel, LinuxKernel};
use rekube_csi::mountinfo::MountInfo;

/// The root of the cgroup hierarchies.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The mounts of this process's mount namespace (the one the test's agents and drivers
/// mount in), in the kernel's order; a line that does not parse is skipped.
pub fn mount_table() -> Vec<MountInfo> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    rekube_csi::mountinfo::parse_lines(&text)
        .flatten()
        .collect()
}

/// Whether mount `m` belongs to the directory `dir`: its mount point is `dir` or below it,
/// or it is an overlay whose layers (lowerdir, upperdir, workdir) lie below it, wherever
/// it is mounted (a container's rootfs over an image store).
pub fn belongs_to(m: &MountInfo, dir: &Path) -> bool {
    if m.mount_point.starts_with(dir) {
        return true;
    }
    m.fs_type == "overlay"
        && m.super_options.split(',').any(|option| {
            ["lowerdir=", "upperdir=", "workdir="].iter().any(|key| {
                option
                    .strip_prefix(key)
                    .is_some_and(|v| v.split(':').any(|layer| Path::new(layer).starts_with(dir)))
            })
        })
}

/// `dir` and, when it differs, the path it resolves to (mountinfo shows resolved paths).
fn spellings(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(dir)
        && real != dir
    {
        out.push(real);
    }
    out
}

/// The mount points below `dir` (mountinfo's fifth field, unescaped). A test agent's root
/// directory's own mount, its rshared bind (the kubelet's `MakeRShared`), is the agent's
/// and left out ([`crate::agent::AgentProcess::leftovers`]).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let agent_root = crate::agent::is_agent_root(dir);
    let dirs = spellings(dir);
    mount_table()
        .into_iter()
        .filter(|m| {
            dirs.iter()
                .any(|d| belongs_to(m, d) && !(agent_root && m.mount_point == *d))
        })
        .map(|m| m.mount_point.to_string_lossy().into_owned())
        .collect()
}

/// The loop devices whose backing file lies under `dir`: `(/dev/loopN, backing file)`
/// (sysfs' `backing_file`, which ends in ` (deleted)` once the file is unlinked).
pub fn loops_under(dir: &Path) -> Vec<(PathBuf, PathBuf)> {
    let dirs = spellings(dir);
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) {
            let backing = PathBuf::from(backing.trim_end());
            if dirs.iter().any(|d| backing.starts_with(d)) {
                found.push((Path::new("/dev").join(entry.file_name()), backing));
            }
        }
    }
    found.sort();
    found
}

/// Unmounts every mount that belongs to `dir` ([`belongs_to`], `dir`'s own included),
/// deepest first and, of mounts stacked on one path, the last mounted first; a busy one
/// lazily (MNT_DETACH). Read again and repeated until none is left, because a mount
/// propagated onto a peer or hidden under another shows up only once the one above it is
/// gone. Returns the loop devices the removed mounts were of.
pub fn unmount_under(dir: &Path, who: &str) -> Vec<PathBuf> {
    let dirs = spellings(dir);
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut ours: Vec<(usize, MountInfo)> = mount_table()
            .into_iter()
            .enumerate()
            .filter(|(_, m)| dirs.iter().any(|d| belongs_to(m, d)))
            .collect();
        if ours.is_empty() {
            break;
        }
        ours.sort_by_key(|(order, m)| Reverse((m.mount_point.components().count(), *order)));
        for (_, m) in ours {
            if m.source.starts_with("/dev/loop") {
                held.push(PathBuf::from(&m.source));
            }
            let what = format!("{} ({} {})", m.mount_point.display(), m.fs_type, m.source);
            match nix::mount::umount2(&m.mount_point, MntFlags::UMOUNT_NOFOLLOW) {
                Ok(()) => eprintln!("{who}: unmounted {what}"),
                Err(Errno::EBUSY) => match nix::mount::umount2(
                    &m.mount_point,
                    MntFlags::UMOUNT_NOFOLLOW | MntFlags::MNT_DETACH,
                ) {
                    Ok(()) => eprintln!("{who}: unmounted {what} lazily (busy)"),
                    Err(e) => eprintln!("{who}: unmounting {what}: {e}"),
                },
                // Gone with the mount it was propagated from, or hidden: the next pass.
                Err(Errno::EINVAL | Errno::ENOENT) => {}
                Err(e) => eprintln!("{who}: unmounting {what}: {e}"),
            }
        }
    }
    held.sort();
    held.dedup();
    held
}

/// Detaches the loop devices in `devices` (a busy one detaches itself when its last user
/// goes: LOOP_CLR_FD sets autoclear), through rekube-csi's loop ioctls.
pub fn detach_loops(devices: &[(PathBuf, PathBuf)], who: &str) {
    for (device, backing) in devices {
        match LinuxKernel.loop_detach(device) {
            Ok(()) => eprintln!(
                "{who}: detached {} ({})",
                device.display(),
                backing.display()
            ),
            Err(e) => eprintln!("{who}: detaching {}: {e}", device.display()),
        }
    }
}

/// The backing file of loop device `device` while one is attached.
pub fn loop_backing_file(device: &Path) -> Option<PathBuf> {
    let name = device.file_name()?;
    std::fs::read_to_string(Path::new("/sys/block").join(name).join("loop/backing_file"))
        .ok()
        .map(|b| PathBuf::from(b.trim_end()))
}

/// Sweeps the directory `dir` a process of the test owned: detaches the loop devices
/// whose backing file lies under it (first, since their open file keeps the mount below it
/// busy; one a mount still uses detaches itself when that mount goes), unmounts everything
/// under it ([`unmount_under`]), detaches the loop devices the removed mounts were of when
/// no other mount uses them, and those whose backing file only now shows under it, then
/// removes the directory, unless something is still mounted there (removing it then
/// would delete what the mount shows).
pub fn sweep_dir(dir: &Path, who: &str) {
    let before = loops_under(dir);
    detach_loops(&before, who);
    let held = unmount_under(dir, who);
    let table = mount_table();
    let mut loops: Vec<(PathBuf, PathBuf)> = loops_under(dir)
        .into_iter()
        .filter(|(device, _)| !before.iter().any(|(d, _)| d == device))
        .collect();
    for device in held {
        let used = table
            .iter()
            .any(|m| Path::new(&m.source) == device.as_path());
        if !used
            && !before.iter().any(|(d, _)| *d == device)
            && let Some(backing) = loop_backing_file(&device)
        {
            loops.push((device, backing));
        }
    }
    loops.sort();
    loops.dedup_by(|a, b| a.0 == b.0);
    detach_loops(&loops, who);
    let left: Vec<String> = spellings(dir)
        .iter()
        .flat_map(|d| {
            table
                .iter()
                .filter(|m| belongs_to(m, d))
                .map(|m| m.mount_point.display().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    if !left.is_empty() {
        eprintln!("{who}: {} kept, still mounted: {left:?}", dir.display());
        return;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => eprintln!("{who}: removing {}: {e}", dir.display()),
    }
}

/// The directories of cgroup `path` (relative to the hierarchies' root) under `root`: the
/// one cgroup on the unified (v2) hierarchy, where `root` itself is a cgroup (it has
/// `cgroup.controllers`), or one per mounted v1 hierarchy (`root/<controller>/<path>`).
/// Joining the path onto every entry of a v2 root would look in the wrong places and
/// never find a leftover.
pub fn cgroup_dirs(root: &Path, path: &str) -> Vec<PathBuf> {
    if root.join("cgroup.controllers").exists() {
        return vec![root.join(path)];
    }
    let Ok(hierarchies) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = hierarchies
        .flatten()
        .filter(|h| h.path().is_dir())
        .map(|h| h.path().join(path))
        .collect();
    dirs.sort();
    dirs
}

/// Every cgroup directory at and below `dir`, deepest first.
fn cgroup_tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if !d.is_dir() {
            continue;
        }
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
        out.push(d);
    }
    out.sort_by_key(|d| Reverse(d.components().count()));
    out
}

/// The processes in the cgroup directories `dirs`.
fn cgroup_pids(dirs: &[PathBuf]) -> Vec<i32> {
    let mut pids: Vec<i32> = dirs
        .iter()
        .flat_map(|d| {
            std::fs::read_to_string(d.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// A process's command name, for the sweep's report.
fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_default()
}

/// Kills every process in cgroup `path` and below it (on the v2 hierarchy, or on every
/// v1 hierarchy), with SIGKILL until none is left (up to 10 s: a process may fork while
/// its siblings die), then removes those cgroups, deepest first, `path` included. What
/// the agent's own `CgroupManager::remove` does for its parent at start-up.
pub fn remove_cgroups(path: &str, who: &str) {
    for base in cgroup_dirs(Path::new(CGROUP_ROOT), path) {
        let dirs = cgroup_tree(&base);
        if dirs.is_empty() {
            continue;
        }
        let first = cgroup_pids(&dirs);
        for pid in &first {
            eprintln!(
                "{who}: killing process {pid} ({}) in {}",
                comm(*pid),
                base.display()
            );
        }
        // cgroup.kill (v2, Linux 5.14) kills the whole subtree at once.
        if base.join("cgroup.kill").exists() {
            let _ = std::fs::write(base.join("cgroup.kill"), "1");
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = cgroup_pids(&dirs);
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                eprintln!(
                    "{who}: processes {left:?} in {} survived SIGKILL",
                    base.display()
                );
                break;
            }
            for pid in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for d in &dirs {
            // A cgroup whose last process just died can be busy for a moment.
            let mut delay = Duration::from_millis(10);
            for attempt in 0..6 {
                match std::fs::remove_dir(d) {
                    Ok(()) => {
                        if d != &base {
                            eprintln!("{who}: removed cgroup {}", d.display());
                        }
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && attempt < 5 => {
                        std::thread::sleep(delay);
                        delay *= 2;
                    }
                    Err(e) => {
                        eprintln!("{who}: removing cgroup {}: {e}", d.display());
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(line: &str) -> MountInfo {
        rekube_csi::mountinfo::parse(line).unwrap().remove(0)
    }

    #[test]
    fn mounts_belong_by_path_components_and_overlay_layers() {
        let root = Path::new("/tmp/rekube-agent-t-n");
        for (line, ours) in [
            (
                "90 27 0:50 / /tmp/rekube-agent-t-n rw - ext4 /dev/vda rw",
                true,
            ),
            (
                "91 90 0:51 / /tmp/rekube-agent-t-n/pods/u/volumes/kubernetes.io~empty-dir/mem rw - tmpfs tmpfs rw",
                true,
            ),
            // Another agent's root, the first's name plus a suffix.
            (
                "92 27 0:52 / /tmp/rekube-agent-t-n2/run/shm rw - tmpfs shm rw",
                false,
            ),
            (
                "93 27 0:53 / /tmp/rekube-agent-t-n-outside rw - tmpfs tmpfs rw",
                false,
            ),
            (
                "94 27 0:54 / /run/c/rootfs rw - overlay overlay rw,lowerdir=/tmp/rekube-agent-t-n/images/l1:/tmp/rekube-agent-t-n/images/l2,upperdir=/tmp/rekube-agent-t-n/containers/c/upper,workdir=/tmp/rekube-agent-t-n/containers/c/work",
                true,
            ),
            (
                "95 27 0:55 / /run/d/rootfs rw - overlay overlay rw,lowerdir=/tmp/rekube-agent-t-n2/images/l1,upperdir=/tmp/rekube-agent-t-n2/u,workdir=/tmp/rekube-agent-t-n2/w",
                false,
            ),
        ] {
            assert_eq!(belongs_to(&mount(line), root), ours, "{line}");
        }
    }

    #[test]
    fn cgroup_dirs_on_v1_and_v2() {
        let v1 = tempfile::tempdir().unwrap();
        for h in ["memory", "cpu", "pids"] {
            std::fs::create_dir(v1.path().join(h)).unwrap();
        }
        assert_eq!(
            cgroup_dirs(v1.path(), "rekube-e2e-n"),
            ["cpu", "memory", "pids"].map(|h| v1.path().join(h).join("rekube-e2e-n"))
        );
        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        std::fs::create_dir(v2.path().join("system.slice")).unwrap();
        assert_eq!(
            cgroup_dirs(v2.path(), "rekube-e2e-n"),
            [v2.path().join("rekube-e2e-n")]
        );
    }

    #[test]
    fn cgroup_trees_are_listed_deepest_first() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("parent");
        std::fs::create_dir_all(base.join("pod1/c1")).unwrap();
        std::fs::create_dir_all(base.join("pod2")).unwrap();
        let tree = cgroup_tree(&base);
        assert_eq!(tree.len(), 4);
        assert_eq!(tree[0], base.join("pod1/c1"));
        assert_eq!(tree[3], base);
        assert!(cgroup_tree(&root.path().join("absent")).is_empty());
    }
}
