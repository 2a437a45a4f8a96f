//! The plugin watcher (upstream pkg/kubelet/pluginmanager/pluginwatcher): the plugin
//! registration directory (made 0755 if missing) and its subdirectories scanned for unix
//! sockets, names starting with `.` ignored; a socket that appeared or was re-created
//! (another inode) is added to the desired state with a new UUID, a socket gone is
//! removed from it.
//!
//! Upstream follows the directory with fsnotify; rekube scans it at each pass of the
//! reconciler's 1 s loop instead: the same latency as upstream's reconciler, no inotify
//! watch per subdirectory to keep in step, no event to miss (docs/volumes.md).

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::desired_state_of_world::DesiredStateOfWorld;

/// What tells a socket from the one that was at its path before: its device, inode and
/// modification time (set when the socket is made, unchanged by chmod; a re-created
/// socket may get the freed inode back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketId {
    pub dev: u64,
    pub ino: u64,
    pub mtime: (i64, i64),
}

/// `init`: the directory, made with its parents (0755) if missing.
pub fn init(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("error (re-)creating root {}: {e}", dir.display()))
}

/// The unix sockets under `dir` (recursively), names starting with `.` skipped (and
/// what is under such a directory). An unreadable subdirectory is logged and skipped;
/// an unreadable `dir` is an error.
pub fn scan(dir: &Path) -> Result<BTreeMap<PathBuf, SocketId>, String> {
    let mut found = BTreeMap::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("error accessing path: {} error: {e}", dir.display()))?;
    let mut pending = vec![entries];
    while let Some(entries) = pending.pop() {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.file_type().is_dir() {
                match std::fs::read_dir(&path) {
                    Ok(sub) => pending.push(sub),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "error accessing path")
                    }
                }
            } else if meta.file_type().is_socket() {
                found.insert(
                    path,
                    SocketId {
                        dev: meta.dev(),
                        ino: meta.ino(),
                        mtime: (meta.mtime(), meta.mtime_nsec()),
                    },
                );
            }
        }
    }
    Ok(found)
}

/// What changed between two scans: the sockets to add or update (new, or another inode
/// at the path) and the sockets gone.
pub fn changes(
    known: &BTreeMap<PathBuf, SocketId>,
    found: &BTreeMap<PathBuf, SocketId>,
) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let added = found
        .iter()
        .filter(|(path, id)| known.get(*path) != Some(*id))
        .map(|(path, _)| path.clone())
        .collect();
    let removed = known
        .keys()
        .filter(|path| !found.contains_key(*path))
        .cloned()
        .collect();
    (added, removed)
}

/// The watcher of one directory: the sockets of its last scan.
#[derive(Debug)]
pub struct Watcher {
    path: PathBuf,
    known: BTreeMap<PathBuf, SocketId>,
}

impl Watcher {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Watcher {
            path: path.into(),
            known: BTreeMap::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One scan into the desired state. A failed scan (the directory removed) changes
    /// nothing, and the directory is made again for the next one.
    pub fn sync(&mut self, desired: &mut DesiredStateOfWorld) {
        let found = match scan(&self.path) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "failed to traverse plugin socket path");
                if let Err(e) = init(&self.path) {
                    tracing::error!(error = %e, "plugin watcher");
                }
                return;
            }
        };
        let (added, removed) = changes(&self.known, &found);
        for path in added {
            tracing::info!(path = %path.display(), "adding socket path or updating timestamp to desired state cache");
            if let Err(e) = desired.add_or_update_plugin(&path) {
                tracing::error!(path = %path.display(), error = %e, "error adding socket path or updating timestamp to desired state cache");
            }
        }
        for path in removed {
            tracing::info!(path = %path.display(), "removing socket path from desired state cache");
            desired.remove_plugin(&path);
        }
        self.known = found;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_between_scans() {
        let id = |ino| SocketId {
            dev: 1,
            ino,
            mtime: (0, 0),
        };
        let known = BTreeMap::from([
            (PathBuf::from("/r/a-reg.sock"), id(1)),
            (PathBuf::from("/r/b-reg.sock"), id(2)),
            (PathBuf::from("/r/c-reg.sock"), id(3)),
        ]);
        let found = BTreeMap::from([
            (PathBuf::from("/r/a-reg.sock"), id(1)),
            // Re-created: another inode.
            (PathBuf::from("/r/b-reg.sock"), id(9)),
            (PathBuf::from("/r/sub/d-reg.sock"), id(4)),
        ]);
        assert_eq!(
            changes(&known, &found),
            (
                vec![
                    PathBuf::from("/r/b-reg.sock"),
                    PathBuf::from("/r/sub/d-reg.sock")
                ],
                vec![PathBuf::from("/r/c-reg.sock")]
            )
        );
        assert_eq!(changes(&found, &found), (vec![], vec![]));
    }

    /// Real sockets, files and directories in a temporary directory.
    #[test]
    fn watcher_finds_sockets_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("plugins_registry");
        init(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode & !0o022, 0o755 & !0o022);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::create_dir_all(dir.join(".hidden")).unwrap();
        std::fs::write(dir.join("not-a-socket"), b"").unwrap();
        let a = std::os::unix::net::UnixListener::bind(dir.join("a-reg.sock")).unwrap();
        let _b = std::os::unix::net::UnixListener::bind(dir.join("sub/b-reg.sock")).unwrap();
        let _dot = std::os::unix::net::UnixListener::bind(dir.join(".c-reg.sock")).unwrap();
        let _hidden =
            std::os::unix::net::UnixListener::bind(dir.join(".hidden/d-reg.sock")).unwrap();
        let mut watcher = Watcher::new(&dir);
        let mut dsw = DesiredStateOfWorld::default();
        watcher.sync(&mut dsw);
        let sockets = |dsw: &DesiredStateOfWorld| {
            dsw.get_plugins_to_register()
                .into_iter()
                .map(|p| p.socket_path)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            sockets(&dsw),
            vec![dir.join("a-reg.sock"), dir.join("sub/b-reg.sock")]
        );
        let uuid_of = |dsw: &DesiredStateOfWorld, p: &Path| {
            dsw.get_plugins_to_register()
                .into_iter()
                .find(|x| x.socket_path == p)
                .unwrap()
                .uuid
        };
        let before = uuid_of(&dsw, &dir.join("a-reg.sock"));
        watcher.sync(&mut dsw);
        assert_eq!(
            uuid_of(&dsw, &dir.join("a-reg.sock")),
            before,
            "unchanged: same uuid"
        );
        // Re-created: a new uuid.
        drop(a);
        std::fs::remove_file(dir.join("a-reg.sock")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let _a = std::os::unix::net::UnixListener::bind(dir.join("a-reg.sock")).unwrap();
        watcher.sync(&mut dsw);
        assert_ne!(uuid_of(&dsw, &dir.join("a-reg.sock")), before);
        // Removed: out of the desired state.
        std::fs::remove_file(dir.join("sub/b-reg.sock")).unwrap();
        watcher.sync(&mut dsw);
        assert_eq!(sockets(&dsw), vec![dir.join("a-reg.sock")]);
        // The directory removed: nothing changes, and it is made again.
        std::fs::remove_dir_all(&dir).unwrap();
        watcher.sync(&mut dsw);
        assert_eq!(sockets(&dsw), vec![dir.join("a-reg.sock")]);
        assert!(dir.is_dir());
        watcher.sync(&mut dsw);
        assert!(sockets(&dsw).is_empty());
    }
}
