//! What a previous run of the agent left: [`Runtime::remove_leftovers`].
//!
//! The runtime is a library inside the agent, without containerd's shims, so a container
//! cannot be adopted by the next agent process: its exit status would go to whoever reaps
//! it. On start the agent therefore removes every trace of the previous run's pods (the
//! processes, by killing everything in the cgroups under the runtime's parent; the
//! mounts under the state and run directories, deepest first; the namespace files, pod
//! files and container directories), and the pod workers start the pods' containers again
//! in a new sandbox, as the kubelet does after a node reboot. Nothing is left half
//! there: the same checks as a pod deletion apply.
use std::path::Path;

use nix::mount::MntFlags;

use super::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("removing the cgroups under {parent}: {message}")]
    Cgroups { parent: String, message: String },
    #[error("unmounting {target}: {source}")]
    Unmount {
        target: String,
        source: nix::errno::Errno,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: String,
        source: std::io::Error,
    },
}

/// What [`Runtime::remove_leftovers`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub cgroups: usize,
    pub mounts: usize,
    pub entries: usize,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self == &Leftovers::default()
    }
}

/// The mount points under any of `dirs` in a mountinfo text, deepest (longest) first (a
/// line that does not parse is skipped).
pub fn mounts_under(mountinfo: &str, dirs: &[&Path]) -> Vec<String> {
    let mut out: Vec<String> = rekube_csi::mountinfo::parse_lines(mountinfo)
        .flatten()
        .filter(|m| dirs.iter().any(|d| m.mount_point.starts_with(d)))
        .map(|m| m.mount_point.to_string_lossy().into_owned())
        .collect();
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| b.cmp(a)));
    out
}

impl Runtime {
    /// Removes everything a previous agent process left; see the module docs.
    pub fn remove_leftovers(&self) -> Result<Leftovers, RecoveryError> {
        let mut found = Leftovers {
            cgroups: self.cgroups.list().map(|l| l.len()).unwrap_or(0),
            ..Default::default()
        };
        // The processes first (killed with their cgroups), so nothing holds the mounts.
        self.cgroups
            .remove("")
            .map_err(|e| RecoveryError::Cgroups {
                parent: self.config.cgroup_parent.clone(),
                message: e.to_string(),
            })?;
        let dirs = [
            self.config.state_dir.as_path(),
            self.config.run_dir.as_path(),
        ];
        // A bind mount over another shows up twice: unmount until none is left.
        for _ in 0..8 {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let mounts = mounts_under(&mountinfo, &dirs);
            if mounts.is_empty() {
                break;
            }
            for m in mounts {
                match nix::mount::umount2(Path::new(&m), MntFlags::MNT_DETACH) {
                    Ok(()) => found.mounts += 1,
                    Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
                    Err(source) => return Err(RecoveryError::Unmount { target: m, source }),
                }
            }
        }
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(|source| RecoveryError::Remove {
                    path: path.display().to_string(),
                    source,
                })?;
                found.entries += 1;
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_the_runtime_dirs_deepest_first() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
90 22 0:50 / /var/lib/rekube/containers/abc/rootfs rw - overlay overlay rw
91 90 0:51 / /var/lib/rekube/containers/abc/rootfs/proc rw - proc proc rw
92 22 0:4 net:[4026532] /run/rekube/netns/u1 rw - nsfs nsfs rw
93 22 0:52 / /run/rekube-other/x rw - tmpfs tmpfs rw
94 22 0:53 / /run/rekube/pods/u1/with\\040space rw - tmpfs tmpfs rw
";
        let got = mounts_under(
            info,
            &[
                Path::new("/var/lib/rekube/containers"),
                Path::new("/run/rekube"),
            ],
        );
        assert_eq!(
            got,
            vec![
                "/var/lib/rekube/containers/abc/rootfs/proc",
                "/var/lib/rekube/containers/abc/rootfs",
                "/run/rekube/pods/u1/with space",
                "/run/rekube/netns/u1",
            ]
        );
    }
}
