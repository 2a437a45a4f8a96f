//! Test helper: nothing left behind. A [`Snapshot`] records what the runtime could leak
//! (the idea of runc's and youki's integration checks, and of the kubelet's e2e "no
//! leftover" assertions): mounts (under the runtime's directories, and overlays over its
//! state wherever they are mounted), the cgroups under the runtime's parent, this process's
//! children (zombies included) and the processes in those cgroups, and the files under
//! the runtime's directories (namespace files, pod files, container state).
//! [`assert_no_leaks`] compares a snapshot taken before a test with one taken after.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cgroups::CgroupManager;

/// What to look at.
pub struct LeakScope<'a> {
    /// The runtime's directories (state, run) and any other test directory.
    pub dirs: Vec<PathBuf>,
    pub cgroups: &'a dyn CgroupManager,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub mounts: BTreeSet<String>,
    pub cgroups: BTreeSet<String>,
    pub processes: BTreeSet<String>,
    pub files: BTreeSet<String>,
}

fn proc_stat(pid: &str) -> Option<(i32, String, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may contain spaces and parentheses.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let mut rest = stat[close + 2..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((ppid, comm, state))
}

fn walk_files(dir: &Path, out: &mut BTreeSet<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk_files(&path, out),
            Ok(_) => {
                out.insert(path.display().to_string());
            }
            Err(_) => {}
        }
    }
}

impl Snapshot {
    pub fn take(scope: &LeakScope<'_>) -> Self {
        let mut s = Snapshot::default();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for m in rekube_csi::mountinfo::parse_lines(&mountinfo).flatten() {
            // Under the runtime's directories, or an overlay over its state (its layers
            // in the superblock's options; another process's mounts elsewhere on a shared
            // machine are not this test's).
            let ours = scope.dirs.iter().any(|d| m.mount_point.starts_with(d))
                || (m.fs_type == "overlay"
                    && scope.dirs.iter().any(|d| {
                        let d = d.to_string_lossy();
                        m.source.contains(&*d) || m.super_options.contains(&*d)
                    }));
            if ours {
                s.mounts.insert(format!(
                    "{} {} {}",
                    m.mount_point.display(),
                    m.fs_type,
                    m.source
                ));
            }
        }
        let cgroups = scope.cgroups.list().unwrap_or_default();
        let me = std::process::id() as i32;
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.chars().all(|c| c.is_ascii_digit()) {
                    continue;
                }
                if let Some((ppid, comm, state)) = proc_stat(&name)
                    && ppid == me
                {
                    // Running or sleeping is the same live child (a registry serving a
                    // request is R, idle S); an unreaped one (Z) is a leak of its own.
                    let zombie = if state == 'Z' { " zombie" } else { "" };
                    s.processes.insert(format!("{name} {comm}{zombie} (child)"));
                }
            }
        }
        for cg in &cgroups {
            // v1 entries are "controller:path".
            let path = cg.split_once(':').map_or(cg.as_str(), |(_, p)| p);
            for pid in scope.cgroups.pids(path).unwrap_or_default() {
                let comm = proc_stat(&pid.to_string())
                    .map(|(_, c, _)| c)
                    .unwrap_or_default();
                s.processes
                    .insert(format!("{pid} {comm} (in cgroup {path})"));
            }
        }
        s.cgroups = cgroups.into_iter().collect();
        for d in &scope.dirs {
            walk_files(d, &mut s.files);
        }
        s
    }

    /// What `after` has that `self` has not, and the reverse, per kind.
    pub fn diff(&self, after: &Snapshot) -> String {
        let mut out = String::new();
        let mut section = |kind: &str, a: &BTreeSet<String>, b: &BTreeSet<String>| {
            for x in b.difference(a) {
                out.push_str(&format!("+ {kind}: {x}\n"));
            }
            for x in a.difference(b) {
                out.push_str(&format!("- {kind}: {x}\n"));
            }
        };
        section("mount", &self.mounts, &after.mounts);
        section("cgroup", &self.cgroups, &after.cgroups);
        section("process", &self.processes, &after.processes);
        section("file", &self.files, &after.files);
        out
    }
}

/// Panics (with the difference) unless a new snapshot equals `before` within 3 seconds
/// (exits and unmounts settle asynchronously).
pub fn assert_no_leaks(before: &Snapshot, scope: &LeakScope<'_>) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let after = Snapshot::take(scope);
        if after == *before {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "leaked (+) or lost (-) since the start of the test:\n{}",
                before.diff(&after)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::cgroups::CgroupV2;

    #[test]
    fn snapshots_see_files_cgroups_and_children() {
        let dir = tempfile::tempdir().unwrap();
        let cg_root = tempfile::tempdir().unwrap();
        let cgroups = CgroupV2::new(cg_root.path(), "rekube").unwrap();
        let scope = LeakScope {
            dirs: vec![dir.path().to_path_buf()],
            cgroups: &cgroups,
        };
        let before = Snapshot::take(&scope);
        std::fs::write(dir.path().join("left"), "x").unwrap();
        std::fs::create_dir_all(cg_root.path().join("rekube/pod1")).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        // Until it has exec'd, the forked child still carries this thread's name.
        let comm = format!("/proc/{}/comm", child.id());
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "sleep"
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let after = Snapshot::take(&scope);
        let diff = before.diff(&after);
        assert!(diff.contains("+ file: "), "{diff}");
        assert!(diff.contains("+ cgroup: pod1"), "{diff}");
        assert!(
            diff.contains(&format!("+ process: {} sleep", child.id())),
            "{diff}"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_file(dir.path().join("left")).unwrap();
        std::fs::remove_dir(cg_root.path().join("rekube/pod1")).unwrap();
        // Other tests of this process start and reap children meanwhile: compare the rest.
        let after = Snapshot::take(&scope);
        assert_eq!(
            (&after.files, &after.cgroups, &after.mounts),
            (&before.files, &before.cgroups, &before.mounts)
        );
        assert!(
            !after
                .processes
                .iter()
                .any(|p| p.starts_with(&format!("{} ", child.id())))
        );
    }
}
