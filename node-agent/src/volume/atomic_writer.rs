//! The atomic writer (upstream's pkg/volume/util/atomic_writer.go): projects a set of files
//! (a [`Payload`]) into a volume directory so that consumers never see a half-written
//! update.
//!
//! The files live in a hidden timestamped directory (`..2016_02_01_15_04_05.a1b2c3`);
//! `..data` is a symlink to the current one, and the user-visible names are symlinks
//! through `..data`:
//!
//! ```text
//! <target-dir>/podName -> ..data/podName
//! <target-dir>/user    -> ..data/user
//! <target-dir>/..data  -> ..2016_02_01_15_04_05.a1b2c3
//! ```
//!
//! An update writes a new timestamped directory, points `..data_tmp` at it and renames
//! `..data_tmp` onto `..data` (rename is atomic), then prunes the old directory. Names
//! starting with `..` are reserved to the writer. The writer offers no concurrency
//! guarantees: callers serialize writes to one target directory.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use thiserror::Error;
use tracing::{debug, error, trace};

use super::Payload;

/// The longest file name (one path element) a payload path may hold.
const MAX_FILE_NAME_LENGTH: usize = 255;
/// The longest payload path.
const MAX_PATH_LENGTH: usize = 4096;

/// The symlink to the current timestamped directory.
const DATA_DIR_NAME: &str = "..data";
/// The symlink renamed onto [`DATA_DIR_NAME`] to publish a new timestamped directory.
const NEW_DATA_DIR_NAME: &str = "..data_tmp";

/// What can go wrong projecting a payload. The `invalid path` messages are upstream's text.
#[derive(Debug, Error)]
pub enum AtomicWriterError {
    #[error("invalid path: must not be empty: \"\"")]
    EmptyPath,
    #[error("invalid path: must be relative path: {0}")]
    AbsolutePath(String),
    #[error("invalid path: must be less than or equal to {max} characters", max = MAX_PATH_LENGTH)]
    PathTooLong,
    #[error("invalid path: must not contain '..': {0}")]
    ContainsDoubleDot(String),
    #[error(
        "invalid path: filenames must be less than or equal to {max} characters",
        max = MAX_FILE_NAME_LENGTH
    )]
    FileNameTooLong,
    #[error("invalid path: must not start with '..': {0}")]
    ReservedPath(String),
    /// A file system operation failed: what was being done, on which path, and why.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The caller's `set_perms` failed on the new timestamped directory.
    #[error("applying ownership settings to {dir}: {source}")]
    SetPerms { dir: String, source: io::Error },
}

impl AtomicWriterError {
    fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        AtomicWriterError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// `Write`'s optional callback: sets the permissions of the new files before they are
/// published, given the name of the new timestamped directory under the target directory.
pub type SetPermsFn<'a> = dyn Fn(&str) -> io::Result<()> + 'a;

/// Atomically projects the content of a set of files into a target directory (upstream's
/// `AtomicWriter`).
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    target_dir: PathBuf,
    log_context: String,
}

impl AtomicWriter {
    /// `NewAtomicWriter`: a writer for `target_dir`, or an error when `target_dir` does not
    /// exist.
    pub fn new(target_dir: &Path, log_context: &str) -> Result<Self, AtomicWriterError> {
        // As upstream, only a missing target directory is an error here.
        if let Err(err) = fs::metadata(target_dir)
            && err.kind() == io::ErrorKind::NotFound
        {
            return Err(AtomicWriterError::io(
                "checking target directory",
                target_dir,
                err,
            ));
        }
        Ok(AtomicWriter {
            target_dir: target_dir.to_path_buf(),
            log_context: log_context.to_string(),
        })
    }

    /// `Write`: an atomic projection of `payload` into the target directory. Payload paths
    /// must not begin with `..`. `set_perms`, when given, is called with the name of the new
    /// timestamped directory (under the target directory) to set the permissions of the new
    /// files before they are published.
    ///
    /// The algorithm:
    ///
    ///  1. The payload is validated; an invalid payload is an error.
    ///  2. The current timestamped directory is found by reading the `..data` symlink.
    ///  3. The old version of the volume is walked to find the paths the payload no longer
    ///     has.
    ///  4. The current timestamped directory's data is compared to the payload to decide
    ///     whether `..data` must change.
    ///  5. A new timestamped directory is created if so.
    ///  6. The payload is written into it.
    ///  7. `set_perms` (if any) is called on it.
    ///  8. `..data_tmp` is created, a symlink to it.
    ///  9. `..data_tmp` is renamed onto `..data`; rename is atomic.
    /// 10. The user-visible symlinks (the first element of each path, through `..data`) are
    ///     created where missing; this runs even when nothing was written, so a writer killed
    ///     between (9) and (10) recovers (kubernetes#121472).
    /// 11. The old top-level user-visible paths are removed.
    /// 12. The previous timestamped directory is removed, if it exists.
    pub fn write(
        &self,
        payload: &Payload,
        set_perms: Option<&SetPermsFn<'_>>,
    ) -> Result<(), AtomicWriterError> {
        let ctx = &self.log_context;

        // (1)
        let clean_payload = validate_payload(payload).inspect_err(|err| {
            error!("{ctx}: invalid payload: {err}");
        })?;

        // (2)
        let data_dir_path = self.target_dir.join(DATA_DIR_NAME);
        let mut old_ts_dir = match fs::read_link(&data_dir_path) {
            Ok(link) => link,
            // An empty old_ts_dir says there was none.
            Err(err) if err.kind() == io::ErrorKind::NotFound => PathBuf::new(),
            Err(err) => {
                error!("{ctx}: error reading link for data directory: {err}");
                return Err(AtomicWriterError::io(
                    "reading link for data directory",
                    data_dir_path,
                    err,
                ));
            }
        };
        let old_ts_path = go_join(&self.target_dir, &old_ts_dir);

        let mut paths_to_remove = BTreeSet::new();
        let mut should_write = true;
        // If there was no old version, there is nothing to remove.
        if !old_ts_dir.as_os_str().is_empty() {
            // (3)
            paths_to_remove = self.paths_to_remove(&clean_payload, &old_ts_path);

            // (4)
            let should = should_write_payload(&clean_payload, &old_ts_path).inspect_err(|err| {
                error!("{ctx}: error determining whether payload should be written to disk: {err}");
            })?;
            if !should && paths_to_remove.is_empty() {
                debug!(
                    "{ctx}: write not required for data directory {}",
                    old_ts_dir.display()
                );
                // The data directory is up to date, but the user-visible symlinks must still
                // be made sure of (kubernetes#121472). Forget old_ts_dir so it is not
                // removed.
                should_write = false;
                old_ts_dir = PathBuf::new();
            } else {
                debug!(
                    "{ctx}: write required for target directory {}",
                    self.target_dir.display()
                );
            }
        }

        if should_write {
            // (5)
            let ts_dir = self.new_timestamp_dir().inspect_err(|err| {
                debug!("{ctx}: error creating new ts data directory: {err}");
            })?;
            let ts_dir_name = ts_dir
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default();

            // (6)
            self.write_payload_to_dir(&clean_payload, &ts_dir)
                .inspect_err(|err| {
                    error!(
                        "{ctx}: error writing payload to ts data directory {}: {err}",
                        ts_dir.display()
                    );
                })?;
            debug!(
                "{ctx}: performed write of new data to ts data directory: {}",
                ts_dir.display()
            );

            // (7)
            if let Some(set_perms) = set_perms
                && let Err(err) = set_perms(&ts_dir_name)
            {
                error!("{ctx}: error applying ownership settings: {err}");
                return Err(AtomicWriterError::SetPerms {
                    dir: ts_dir_name,
                    source: err,
                });
            }

            // (8)
            let new_data_dir_path = self.target_dir.join(NEW_DATA_DIR_NAME);
            if let Err(err) = std::os::unix::fs::symlink(&ts_dir_name, &new_data_dir_path) {
                if let Err(err) = remove_all(&ts_dir) {
                    error!(
                        "{ctx}: error removing new ts directory {}: {err}",
                        ts_dir.display()
                    );
                }
                error!("{ctx}: error creating symbolic link for atomic update: {err}");
                return Err(AtomicWriterError::io(
                    "creating symbolic link for atomic update",
                    new_data_dir_path,
                    err,
                ));
            }

            // (9)
            if let Err(err) = fs::rename(&new_data_dir_path, &data_dir_path) {
                if let Err(err) = go_remove(&new_data_dir_path) {
                    error!(
                        "{ctx}: error removing new data dir directory {}: {err}",
                        new_data_dir_path.display()
                    );
                }
                if let Err(err) = remove_all(&ts_dir) {
                    error!(
                        "{ctx}: error removing new ts directory {}: {err}",
                        ts_dir.display()
                    );
                }
                error!(
                    "{ctx}: error renaming symbolic link for data directory {}: {err}",
                    new_data_dir_path.display()
                );
                return Err(AtomicWriterError::io(
                    "renaming symbolic link for data directory",
                    new_data_dir_path,
                    err,
                ));
            }
        }

        // (10)
        self.create_user_visible_files(&clean_payload)
            .inspect_err(|err| {
                error!(
                    "{ctx}: error creating visible symlinks in {}: {err}",
                    self.target_dir.display()
                );
            })?;

        // (11)
        self.remove_user_visible_paths(&paths_to_remove)
            .inspect_err(|err| {
                error!("{ctx}: error removing old visible symlinks: {err}");
            })?;

        // (12)
        if !old_ts_dir.as_os_str().is_empty()
            && let Err(err) = remove_all(&old_ts_path)
        {
            error!(
                "{ctx}: error removing old data directory {}: {err}",
                old_ts_dir.display()
            );
            return Err(AtomicWriterError::io(
                "removing old data directory",
                old_ts_path,
                err,
            ));
        }

        Ok(())
    }

    /// `pathsToRemove`: the paths of the current version of the data directory (relative to
    /// it) that the payload no longer has, its files and their parent directories, once it
    /// is written. Upstream's walk visitor swallows every error, so this never fails: an
    /// unreadable or missing old directory yields what could be read.
    fn paths_to_remove(&self, payload: &Payload, old_ts_dir: &Path) -> BTreeSet<String> {
        let mut paths = BTreeSet::new();
        walk_relative_paths(old_ts_dir, "", &mut paths);
        trace!("{}: current paths:   {paths:?}", self.target_dir.display());

        let mut new_paths = BTreeSet::new();
        for file in payload.keys() {
            // All the subpaths of a payload path are new paths too, so non-empty
            // directories are not removed.
            let mut sub_path = file.as_str();
            while !sub_path.is_empty() {
                new_paths.insert(sub_path.to_string());
                sub_path = match sub_path.rfind('/') {
                    Some(slash) => sub_path[..slash].trim_end_matches('/'),
                    None => "",
                };
            }
        }
        trace!(
            "{}: new paths:       {new_paths:?}",
            self.target_dir.display()
        );

        let result: BTreeSet<String> = paths.difference(&new_paths).cloned().collect();
        trace!("{}: paths to remove: {result:?}", self.target_dir.display());
        result
    }

    /// `newTimestampDir`: a new `..YYYY_MM_DD_HH_MM_SS.<random>` directory (UTC) under the
    /// target directory, mode 0755.
    fn new_timestamp_dir(&self) -> Result<PathBuf, AtomicWriterError> {
        let prefix = jiff::Timestamp::now()
            .strftime("..%Y_%m_%d_%H_%M_%S.")
            .to_string();
        let ts_dir = tempfile::Builder::new()
            .prefix(&prefix)
            .tempdir_in(&self.target_dir)
            .map_err(|err| {
                error!(
                    "{}: unable to create new temp directory: {err}",
                    self.log_context
                );
                AtomicWriterError::io("creating new ts data directory in", &self.target_dir, err)
            })?
            .keep();

        // 0755 lets group and other traverse the tree; chmod so the umask does not matter.
        fs::set_permissions(&ts_dir, fs::Permissions::from_mode(0o755)).map_err(|err| {
            error!(
                "{}: unable to set mode on new temp directory: {err}",
                self.log_context
            );
            AtomicWriterError::io("setting mode of new ts data directory", &ts_dir, err)
        })?;

        Ok(ts_dir)
    }

    /// `writePayloadToDir`: writes the payload into `dir`, which must exist.
    fn write_payload_to_dir(&self, payload: &Payload, dir: &Path) -> Result<(), AtomicWriterError> {
        let ctx = &self.log_context;
        for (user_visible_path, file_projection) in payload {
            // Go's os.FileMode keeps only the permission bits of a raw int32 mode.
            let mode = file_projection.mode & 0o777;
            let full_path = dir.join(user_visible_path);
            let base_dir = full_path.parent().unwrap_or(dir);

            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o777)
                .create(base_dir)
                .map_err(|err| {
                    error!(
                        "{ctx}: unable to create directory {}: {err}",
                        base_dir.display()
                    );
                    AtomicWriterError::io("creating directory", base_dir, err)
                })?;

            write_file(&full_path, &file_projection.data, mode).map_err(|err| {
                error!(
                    "{ctx}: unable to write file {} with mode {mode:o}: {err}",
                    full_path.display()
                );
                AtomicWriterError::io("writing file", &full_path, err)
            })?;
            // The file was created with mode & !umask; set the mode asked for whatever the
            // umask.
            fs::set_permissions(&full_path, fs::Permissions::from_mode(mode)).map_err(|err| {
                error!(
                    "{ctx}: unable to change file {} with mode {mode:o}: {err}",
                    full_path.display()
                );
                AtomicWriterError::io("setting mode of file", &full_path, err)
            })?;

            let Some(fs_user) = file_projection.fs_user else {
                continue;
            };
            lchown(&full_path, fs_user).map_err(|err| {
                error!(
                    "{ctx}: unable to change file {} with owner {fs_user}: {err}",
                    full_path.display()
                );
                AtomicWriterError::io("changing owner of file", &full_path, err)
            })?;
        }
        Ok(())
    }

    /// `createUserVisibleFiles`: the relative symlinks for the first element of every payload
    /// path, where missing. For `bar`, `foo/bar`, `baz/bar` and `foo/baz/blah`:
    /// `bar -> ..data/bar`, `foo -> ..data/foo`, `baz -> ..data/baz`.
    fn create_user_visible_files(&self, payload: &Payload) -> Result<(), AtomicWriterError> {
        for (user_visible_path, file_projection) in payload {
            let linkname = user_visible_path
                .split_once('/')
                .map_or(user_visible_path.as_str(), |(first, _)| first);
            let visible_file = self.target_dir.join(linkname);
            match fs::read_link(&visible_file) {
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                // A link (or anything else that is not missing) is left as it is.
                _ => continue,
            }
            // The link into the data directory for this path does not exist; create it.
            let data_dir_file = Path::new(DATA_DIR_NAME).join(linkname);
            std::os::unix::fs::symlink(&data_dir_file, &visible_file).map_err(|err| {
                AtomicWriterError::io("creating visible symlink", &visible_file, err)
            })?;

            let Some(fs_user) = file_projection.fs_user else {
                continue;
            };
            lchown(&visible_file, fs_user).map_err(|err| {
                error!(
                    "{}: unable to change file {} with owner {fs_user}: {err}",
                    self.log_context,
                    visible_file.display()
                );
                AtomicWriterError::io("changing owner of file", &visible_file, err)
            })?;
        }
        Ok(())
    }

    /// `removeUserVisiblePaths`: removes the top-level paths (those without `/`) among
    /// `paths` from the target directory; the last failure is the error.
    fn remove_user_visible_paths(&self, paths: &BTreeSet<String>) -> Result<(), AtomicWriterError> {
        let mut last_err = None;
        for p in paths {
            // Only the symlinks in the volume's root directory.
            if p.contains('/') {
                continue;
            }
            let path = self.target_dir.join(p);
            if let Err(err) = go_remove(&path) {
                error!(
                    "{}: error pruning old user-visible path {p}: {err}",
                    self.log_context
                );
                last_err = Some(AtomicWriterError::io(
                    "pruning old user-visible path",
                    path,
                    err,
                ));
            }
        }
        last_err.map_or(Ok(()), Err)
    }
}

/// `validatePayload`: the payload with its paths cleaned, or the first invalid path's error.
fn validate_payload(payload: &Payload) -> Result<Payload, AtomicWriterError> {
    let mut clean_payload = Payload::new();
    for (k, content) in payload {
        validate_path(k)?;
        clean_payload.insert(clean(k), content.clone());
    }
    Ok(clean_payload)
}

/// `validatePath`: a payload path may not be empty, be absolute, be longer than 4096
/// characters, contain `..` as an element or an element longer than 255 characters, or
/// start with `..`.
pub fn validate_path(target_path: &str) -> Result<(), AtomicWriterError> {
    if target_path.is_empty() {
        return Err(AtomicWriterError::EmptyPath);
    }
    if target_path.starts_with('/') {
        return Err(AtomicWriterError::AbsolutePath(target_path.to_string()));
    }
    if target_path.len() > MAX_PATH_LENGTH {
        return Err(AtomicWriterError::PathTooLong);
    }

    for item in target_path.split('/') {
        if item == ".." {
            return Err(AtomicWriterError::ContainsDoubleDot(
                target_path.to_string(),
            ));
        }
        if item.len() > MAX_FILE_NAME_LENGTH {
            return Err(AtomicWriterError::FileNameTooLong);
        }
    }
    let first = target_path.split('/').next().unwrap_or_default();
    if first.starts_with("..") && first.len() > 2 {
        return Err(AtomicWriterError::ReservedPath(target_path.to_string()));
    }

    Ok(())
}

/// `shouldWritePayload`: whether any payload file differs from (or is missing in) the old
/// timestamped directory. Modes are not compared, as upstream.
fn should_write_payload(payload: &Payload, old_ts_dir: &Path) -> Result<bool, AtomicWriterError> {
    for (user_visible_path, file_projection) in payload {
        if should_write_file(&old_ts_dir.join(user_visible_path), &file_projection.data)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `shouldWriteFile`: whether `path` is missing or holds other content.
fn should_write_file(path: &Path, content: &[u8]) -> Result<bool, AtomicWriterError> {
    // Only a missing file (ENOENT, Go's os.IsNotExist) means "write"; any other failure to
    // read it is an error, as upstream.
    if let Err(err) = fs::symlink_metadata(path)
        && err.kind() == io::ErrorKind::NotFound
    {
        return Ok(true);
    }
    let content_on_fs =
        fs::read(path).map_err(|err| AtomicWriterError::io("reading", path, err))?;
    Ok(content != content_on_fs.as_slice())
}

/// Go's `filepath.Walk` over `dir` with upstream's `pathsToRemove` visitor: every path
/// under `dir`, relative to it, into `paths`; errors are ignored (the visitor returns nil
/// for them, so the walk goes on).
fn walk_relative_paths(dir: &Path, relative: &str, paths: &mut BTreeSet<String>) {
    let Ok(info) = fs::symlink_metadata(dir) else {
        return;
    };
    if !info.is_dir() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<_> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.file_name()))
        .collect();
    names.sort();
    for name in names {
        let child = if relative.is_empty() {
            name.to_string_lossy().into_owned()
        } else {
            format!("{relative}/{}", name.to_string_lossy())
        };
        walk_relative_paths(&dir.join(&name), &child, paths);
        paths.insert(child);
    }
}

/// `os.WriteFile`: create or truncate `path` with `mode` (before the umask) and write
/// `content`.
fn write_file(path: &Path, content: &[u8], mode: u32) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(content)
}

/// `lchown(name, uid, -1)`: the owner of `path` itself, not of what a symlink points to.
fn lchown(path: &Path, uid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), None)
}

/// Go's `os.Remove`: unlink a file, or else remove an empty directory.
fn go_remove(path: &Path) -> io::Result<()> {
    let Err(unlink_err) = fs::remove_file(path) else {
        return Ok(());
    };
    let Err(rmdir_err) = fs::remove_dir(path) else {
        return Ok(());
    };
    // Both failed: rmdir's error unless the path is not a directory.
    if rmdir_err.kind() == io::ErrorKind::NotADirectory {
        Err(unlink_err)
    } else {
        Err(rmdir_err)
    }
}

/// Go's `os.RemoveAll`: remove `path` and what it holds (a symlink itself, not its
/// target); a missing path is no error.
fn remove_all(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
        Ok(info) if info.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    }
}

/// Go's `filepath.Join(dir, elem)`: `elem` under `dir` even when absolute, the result
/// cleaned.
fn go_join(dir: &Path, elem: &Path) -> PathBuf {
    let mut joined = dir.as_os_str().as_bytes().to_vec();
    if !elem.as_os_str().is_empty() {
        joined.push(b'/');
        joined.extend_from_slice(elem.as_os_str().as_bytes());
    }
    PathBuf::from(OsStr::from_bytes(&clean_bytes(&joined)))
}

/// Go's `filepath.Clean`: the shortest equivalent path by lexical processing (repeated
/// slashes and `.` elements dropped, `..` folded into the element before it); `.` for an
/// empty result.
pub(super) fn clean(path: &str) -> String {
    // Cleaning splits at the ASCII '/' only, so UTF-8 stays UTF-8: lossless.
    String::from_utf8_lossy(&clean_bytes(path.as_bytes())).into_owned()
}

fn clean_bytes(path: &[u8]) -> Vec<u8> {
    let rooted = path.first() == Some(&b'/');
    let mut elems: Vec<&[u8]> = Vec::new();
    for elem in path.split(|b| *b == b'/') {
        match elem {
            b"" | b"." => {}
            b".." => {
                if elems.last().is_some_and(|last| *last != b"..") {
                    elems.pop();
                } else if !rooted {
                    // A relative path keeps the `..` it cannot fold; a rooted one drops it.
                    elems.push(elem);
                }
            }
            _ => elems.push(elem),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if rooted {
        out.push(b'/');
    }
    out.extend_from_slice(&elems.join(&b'/'));
    if out.is_empty() {
        out.push(b'.');
    }
    out
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use base64::Engine as _;

    use super::*;
    use crate::volume::FileProjection;

    /// A payload from `path => (mode, data)` pairs, no fsUser.
    macro_rules! payload {
        ($($path:expr => ($mode:expr, $data:expr)),* $(,)?) => {
            [$((
                $path.to_string(),
                FileProjection {
                    data: AsRef::<[u8]>::as_ref(&$data).to_vec(),
                    mode: $mode,
                    fs_user: None,
                },
            )),*]
            .into_iter()
            .collect::<Payload>()
        };
    }

    /// `utiltesting.MkTmpdir("atomic-write")`, removed on drop.
    fn mk_tmpdir() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("atomic-write")
            .tempdir()
            .unwrap()
    }

    fn writer(target_dir: &Path) -> AtomicWriter {
        AtomicWriter {
            target_dir: target_dir.to_path_buf(),
            log_context: "-test-".to_string(),
        }
    }

    fn set(paths: &[&str]) -> BTreeSet<String> {
        paths.iter().map(|p| p.to_string()).collect()
    }

    /// TestNewAtomicWriter.
    #[test]
    fn test_new_atomic_writer() {
        let target_dir = mk_tmpdir();
        AtomicWriter::new(target_dir.path(), "-test-")
            .expect("unexpected error creating writer for existing target dir");

        let non_existent_dir = mk_tmpdir().path().to_path_buf();
        assert!(!non_existent_dir.exists());
        let err = AtomicWriter::new(&non_existent_dir, "-test-")
            .expect_err("unexpected success creating writer for nonexistent target dir");
        assert!(matches!(err, AtomicWriterError::Io { .. }), "{err}");
    }

    /// TestValidatePath.
    #[test]
    fn test_validate_path() {
        let max_path = "a".repeat(MAX_PATH_LENGTH + 1);
        let max_file = "a".repeat(MAX_FILE_NAME_LENGTH + 1);

        let cases: [(&str, &str, Option<&str>); 9] = [
            ("valid 1", "i/am/well/behaved.txt", None),
            ("valid 2", "keepyourheaddownandfollowtherules.txt", None),
            (
                "max path length",
                &max_path,
                Some("invalid path: must be less than or equal to 4096 characters"),
            ),
            (
                "max file length",
                &max_file,
                Some("invalid path: filenames must be less than or equal to 255 characters"),
            ),
            (
                "absolute failure",
                "/dev/null",
                Some("invalid path: must be relative path: /dev/null"),
            ),
            (
                "reserved path",
                "..sneaky.txt",
                Some("invalid path: must not start with '..': ..sneaky.txt"),
            ),
            (
                "contains doubledot 1",
                "hello/there/../../../../../../etc/passwd",
                Some(
                    "invalid path: must not contain '..': hello/there/../../../../../../etc/passwd",
                ),
            ),
            (
                "contains doubledot 2",
                "hello/../etc/somethingbad",
                Some("invalid path: must not contain '..': hello/../etc/somethingbad"),
            ),
            ("empty", "", Some("invalid path: must not be empty: \"\"")),
        ];

        for (name, path, expected_err) in cases {
            match (validate_path(path), expected_err) {
                (Ok(()), None) => {}
                (Err(err), None) => panic!("{name}: unexpected failure: {err}"),
                (Ok(()), Some(_)) => panic!("{name}: unexpected success"),
                (Err(err), Some(expected)) => assert_eq!(err.to_string(), expected, "{name}"),
            }
        }
    }

    /// TestPathsToRemove.
    #[test]
    fn test_paths_to_remove() {
        let cases = [
            (
                "simple",
                payload! {
                    "foo.txt" => (0o644, "foo"),
                    "bar.txt" => (0o644, "bar"),
                },
                payload! { "foo.txt" => (0o644, "foo") },
                set(&["bar.txt"]),
            ),
            (
                "simple 2",
                payload! {
                    "foo.txt" => (0o644, "foo"),
                    "zip/bar.txt" => (0o644, "zip/b}ar"),
                },
                payload! { "foo.txt" => (0o644, "foo") },
                set(&["zip/bar.txt", "zip"]),
            ),
            (
                "subdirs 1",
                payload! {
                    "foo.txt" => (0o644, "foo"),
                    "zip/zap/bar.txt" => (0o644, "zip/bar"),
                },
                payload! { "foo.txt" => (0o644, "foo") },
                set(&["zip/zap/bar.txt", "zip", "zip/zap"]),
            ),
            (
                "subdirs 2",
                payload! {
                    "foo.txt" => (0o644, "foo"),
                    "zip/1/2/3/4/bar.txt" => (0o644, "zip/b}ar"),
                },
                payload! { "foo.txt" => (0o644, "foo") },
                set(&[
                    "zip/1/2/3/4/bar.txt",
                    "zip",
                    "zip/1",
                    "zip/1/2",
                    "zip/1/2/3",
                    "zip/1/2/3/4",
                ]),
            ),
            (
                "subdirs 3",
                payload! {
                    "foo.txt" => (0o644, "foo"),
                    "zip/1/2/3/4/bar.txt" => (0o644, "zip/b}ar"),
                    "zap/a/b/c/bar.txt" => (0o644, "zap/bar"),
                },
                payload! { "foo.txt" => (0o644, "foo") },
                set(&[
                    "zip/1/2/3/4/bar.txt",
                    "zip",
                    "zip/1",
                    "zip/1/2",
                    "zip/1/2/3",
                    "zip/1/2/3/4",
                    "zap",
                    "zap/a",
                    "zap/a/b",
                    "zap/a/b/c",
                    "zap/a/b/c/bar.txt",
                ]),
            ),
            (
                "subdirs 4",
                payload! {
                    "foo.txt" => (0o644, "foo"),
                    "zap/1/2/3/4/bar.txt" => (0o644, "zip/bar"),
                    "zap/1/2/c/bar.txt" => (0o644, "zap/bar"),
                    "zap/1/2/magic.txt" => (0o644, "indigo"),
                },
                payload! {
                    "foo.txt" => (0o644, "foo"),
                    "zap/1/2/magic.txt" => (0o644, "indigo"),
                },
                set(&[
                    "zap/1/2/3/4/bar.txt",
                    "zap/1/2/3",
                    "zap/1/2/3/4",
                    "zap/1/2/3/4/bar.txt",
                    "zap/1/2/c",
                    "zap/1/2/c/bar.txt",
                ]),
            ),
            (
                "subdirs 5",
                payload! {
                    "foo.txt" => (0o644, "foo"),
                    "zap/1/2/3/4/bar.txt" => (0o644, "zip/bar"),
                    "zap/1/2/c/bar.txt" => (0o644, "zap/bar"),
                },
                payload! {
                    "foo.txt" => (0o644, "foo"),
                    "zap/1/2/magic.txt" => (0o644, "indigo"),
                },
                set(&[
                    "zap/1/2/3/4/bar.txt",
                    "zap/1/2/3",
                    "zap/1/2/3/4",
                    "zap/1/2/3/4/bar.txt",
                    "zap/1/2/c",
                    "zap/1/2/c/bar.txt",
                ]),
            ),
        ];
        assert_eq!(cases.len(), 7);

        for (name, payload1, payload2, expected) in cases {
            let target_dir = mk_tmpdir();
            let writer = writer(target_dir.path());
            writer
                .write(&payload1, None)
                .unwrap_or_else(|err| panic!("{name}: unexpected error writing: {err}"));

            let data_dir_path = target_dir.path().join(DATA_DIR_NAME);
            let old_ts_dir = fs::read_link(&data_dir_path).unwrap_or_else(|err| {
                panic!(
                    "{name}: unable to read symlink {}: {err}",
                    data_dir_path.display()
                )
            });

            let actual = writer.paths_to_remove(&payload2, &target_dir.path().join(old_ts_dir));
            assert_eq!(actual, expected, "{name}: unexpected paths to remove");
        }
    }

    /// TestWriteOnce.
    #[test]
    fn test_write_once() {
        // $1 if you can tell me what this binary is
        let encoded_mystery_binary = "f0VMRgIBAQAAAAAAAAAAAAIAPgABAAAAeABAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAEAAOAAB\
AAAAAAAAAAEAAAAFAAAAAAAAAAAAAAAAAEAAAAAAAAAAQAAAAAAAfQAAAAAAAAB9AAAAAAAAAAAA\
IAAAAAAAsDyZDwU=";
        let mystery_binary_bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded_mystery_binary)
            .expect("unexpected error decoding binary payload");
        assert_eq!(
            mystery_binary_bytes.len(),
            125,
            "unexpected decoded binary size"
        );

        let cases = [
            (
                "invalid payload 1",
                payload! {
                    "foo" => (0o644, "foo"),
                    "..bar" => (0o644, "bar"),
                    "binary.bin" => (0o644, mystery_binary_bytes),
                },
                false,
            ),
            (
                "invalid payload 2",
                payload! { "foo/../bar" => (0o644, "foo") },
                false,
            ),
            (
                "basic 1",
                payload! {
                    "foo" => (0o644, "foo"),
                    "bar" => (0o644, "bar"),
                },
                true,
            ),
            (
                "basic 2",
                payload! {
                    "binary.bin" => (0o644, mystery_binary_bytes),
                    ".binary.bin" => (0o644, mystery_binary_bytes),
                },
                true,
            ),
            (
                "basic mode 1",
                payload! {
                    "foo" => (0o777, "foo"),
                    "bar" => (0o400, "bar"),
                },
                true,
            ),
            (
                "dotfiles",
                payload! {
                    "foo" => (0o644, "foo"),
                    "bar" => (0o644, "bar"),
                    ".dotfile" => (0o644, "dotfile"),
                    ".dotfile.file" => (0o644, "dotfile.file"),
                },
                true,
            ),
            (
                "dotfiles mode",
                payload! {
                    "foo" => (0o407, "foo"),
                    "bar" => (0o440, "bar"),
                    ".dotfile" => (0o777, "dotfile"),
                    ".dotfile.file" => (0o666, "dotfile.file"),
                },
                true,
            ),
            (
                "subdirectories 1",
                payload! {
                    "foo/bar.txt" => (0o644, "foo/bar"),
                    "bar/zab.txt" => (0o644, "bar/zab.txt"),
                },
                true,
            ),
            (
                "subdirectories mode 1",
                payload! {
                    "foo/bar.txt" => (0o400, "foo/bar"),
                    "bar/zab.txt" => (0o644, "bar/zab.txt"),
                },
                true,
            ),
            (
                "subdirectories 2",
                payload! {
                    "foo//bar.txt" => (0o644, "foo//bar"),
                    "bar///bar/zab.txt" => (0o644, "bar/../bar/zab.txt"),
                },
                true,
            ),
            (
                "subdirectories 3",
                payload! {
                    "foo/bar.txt" => (0o644, "foo/bar"),
                    "bar/zab.txt" => (0o644, "bar/zab.txt"),
                    "foo/blaz/bar.txt" => (0o644, "foo/blaz/bar"),
                    "bar/zib/zab.txt" => (0o644, "bar/zib/zab.txt"),
                },
                true,
            ),
            (
                "kitchen sink",
                payload! {
                    "foo.log" => (0o644, "foo"),
                    "bar.zap" => (0o644, "bar"),
                    ".dotfile" => (0o644, "dotfile"),
                    "foo/bar.txt" => (0o644, "foo/bar"),
                    "bar/zab.txt" => (0o644, "bar/zab.txt"),
                    "foo/blaz/bar.txt" => (0o644, "foo/blaz/bar"),
                    "bar/zib/zab.txt" => (0o400, "bar/zib/zab.txt"),
                    "1/2/3/4/5/6/7/8/9/10/.dotfile.lib" => (0o777, "1-2-3-dotfile"),
                },
                true,
            ),
        ];
        assert_eq!(cases.len(), 12);

        for (name, payload, success) in cases {
            let target_dir = mk_tmpdir();
            let writer = writer(target_dir.path());
            match writer.write(&payload, None) {
                Err(err) if success => panic!("{name}: unexpected error writing payload: {err}"),
                Ok(()) if !success => panic!("{name}: unexpected success"),
                Err(_) => continue,
                Ok(()) => {}
            }

            check_volume_contents(target_dir.path(), name, &payload);
        }
    }

    /// TestUpdate.
    #[test]
    fn test_update() {
        let cases = [
            (
                "update",
                payload! {
                    "foo" => (0o644, "foo"),
                    "bar" => (0o644, "bar"),
                },
                payload! {
                    "foo" => (0o644, "foo2"),
                    "bar" => (0o640, "bar2"),
                },
                true,
            ),
            (
                "no update",
                payload! {
                    "foo" => (0o644, "foo"),
                    "bar" => (0o644, "bar"),
                },
                payload! {
                    "foo" => (0o644, "foo"),
                    "bar" => (0o644, "bar"),
                },
                false,
            ),
            (
                "no update 2",
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/zab.txt" => (0o644, "bar"),
                },
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/zab.txt" => (0o644, "bar"),
                },
                false,
            ),
            (
                "add 1",
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/zab.txt" => (0o644, "bar"),
                },
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/zab.txt" => (0o644, "bar"),
                    "blu/zip.txt" => (0o644, "zip"),
                },
                true,
            ),
            (
                "add 2",
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/zab.txt" => (0o644, "bar"),
                },
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/zab.txt" => (0o644, "bar"),
                    "blu/two/2/3/4/5/zip.txt" => (0o644, "zip"),
                },
                true,
            ),
            (
                "add 3",
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/zab.txt" => (0o644, "bar"),
                },
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/zab.txt" => (0o644, "bar"),
                    "bar/2/3/4/5/zip.txt" => (0o644, "zip"),
                },
                true,
            ),
            (
                "delete 1",
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/zab.txt" => (0o644, "bar"),
                },
                payload! { "foo/bar.txt" => (0o644, "foo") },
                true,
            ),
            (
                "delete 2",
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/1/2/3/zab.txt" => (0o644, "bar"),
                },
                payload! { "foo/bar.txt" => (0o644, "foo") },
                true,
            ),
            (
                "delete 3",
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/1/2/sip.txt" => (0o644, "sip"),
                    "bar/1/2/3/zab.txt" => (0o644, "bar"),
                },
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/1/2/sip.txt" => (0o644, "sip"),
                },
                true,
            ),
            (
                "delete 4",
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/1/2/sip.txt" => (0o644, "sip"),
                    "bar/1/2/3/4/5/6zab.txt" => (0o644, "bar"),
                },
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/1/2/sip.txt" => (0o644, "sip"),
                },
                true,
            ),
            (
                "delete all",
                payload! {
                    "foo/bar.txt" => (0o644, "foo"),
                    "bar/1/2/sip.txt" => (0o644, "sip"),
                    "bar/1/2/3/4/5/6zab.txt" => (0o644, "bar"),
                },
                payload! {},
                true,
            ),
            (
                "add and delete 1",
                payload! { "foo/bar.txt" => (0o644, "foo") },
                payload! { "bar/baz.txt" => (0o644, "baz") },
                true,
            ),
        ];
        assert_eq!(cases.len(), 12);

        for (name, first, next, should_write) in cases {
            let target_dir = mk_tmpdir();
            let writer = writer(target_dir.path());

            writer
                .write(&first, None)
                .unwrap_or_else(|err| panic!("{name}: unexpected error writing: {err}"));
            check_volume_contents(target_dir.path(), name, &first);
            // As upstream, the cases that need no write stop after the first one.
            if !should_write {
                continue;
            }

            writer
                .write(&next, None)
                .unwrap_or_else(|err| panic!("{name}: unexpected error writing: {err}"));
            check_volume_contents(target_dir.path(), name, &next);
        }
    }

    /// TestMultipleUpdates.
    #[test]
    fn test_multiple_updates() {
        let cases = [
            (
                "update 1",
                vec![
                    payload! {
                        "foo" => (0o644, "foo"),
                        "bar" => (0o644, "bar"),
                    },
                    payload! {
                        "foo" => (0o400, "foo2"),
                        "bar" => (0o400, "bar2"),
                    },
                    payload! {
                        "foo" => (0o600, "foo3"),
                        "bar" => (0o600, "bar3"),
                    },
                ],
            ),
            (
                "update 2",
                vec![
                    payload! {
                        "foo/bar.txt" => (0o644, "foo/bar"),
                        "bar/zab.txt" => (0o644, "bar/zab.txt"),
                    },
                    payload! {
                        "foo/bar.txt" => (0o644, "foo/bar2"),
                        "bar/zab.txt" => (0o400, "bar/zab.txt2"),
                    },
                ],
            ),
            (
                "clear sentinel",
                vec![
                    payload! {
                        "foo" => (0o644, "foo"),
                        "bar" => (0o644, "bar"),
                    },
                    payload! {
                        "foo" => (0o644, "foo2"),
                        "bar" => (0o644, "bar2"),
                    },
                    payload! {
                        "foo" => (0o644, "foo3"),
                        "bar" => (0o644, "bar3"),
                    },
                    payload! {
                        "foo" => (0o644, "foo4"),
                        "bar" => (0o644, "bar4"),
                    },
                ],
            ),
            (
                "subdirectories 2",
                vec![
                    payload! {
                        "foo/bar.txt" => (0o644, "foo/bar"),
                        "bar/zab.txt" => (0o644, "bar/zab.txt"),
                        "foo/blaz/bar.txt" => (0o644, "foo/blaz/bar"),
                        "bar/zib/zab.txt" => (0o644, "bar/zib/zab.txt"),
                    },
                    payload! {
                        "foo/bar.txt" => (0o644, "foo/bar2"),
                        "bar/zab.txt" => (0o644, "bar/zab.txt2"),
                        "foo/blaz/bar.txt" => (0o644, "foo/blaz/bar2"),
                        "bar/zib/zab.txt" => (0o644, "bar/zib/zab.txt2"),
                    },
                ],
            ),
            (
                "add 1",
                vec![
                    payload! {
                        "foo/bar.txt" => (0o644, "foo/bar"),
                        "bar//zab.txt" => (0o644, "bar/zab.txt"),
                        "foo/blaz/bar.txt" => (0o644, "foo/blaz/bar"),
                        "bar/zib////zib/zab.txt" => (0o644, "bar/zib/zab.txt"),
                    },
                    payload! {
                        "foo/bar.txt" => (0o644, "foo/bar2"),
                        "bar/zab.txt" => (0o644, "bar/zab.txt2"),
                        "foo/blaz/bar.txt" => (0o644, "foo/blaz/bar2"),
                        "bar/zib/zab.txt" => (0o644, "bar/zib/zab.txt2"),
                        "add/new/keys.txt" => (0o644, "addNewKeys"),
                    },
                ],
            ),
            (
                "add 2",
                vec![
                    payload! {
                        "foo/bar.txt" => (0o644, "foo/bar2"),
                        "bar/zab.txt" => (0o644, "bar/zab.txt2"),
                        "foo/blaz/bar.txt" => (0o644, "foo/blaz/bar2"),
                        "bar/zib/zab.txt" => (0o644, "bar/zib/zab.txt2"),
                        "add/new/keys.txt" => (0o644, "addNewKeys"),
                    },
                    payload! {
                        "foo/bar.txt" => (0o644, "foo/bar2"),
                        "bar/zab.txt" => (0o644, "bar/zab.txt2"),
                        "foo/blaz/bar.txt" => (0o644, "foo/blaz/bar2"),
                        "bar/zib/zab.txt" => (0o644, "bar/zib/zab.txt2"),
                        "add/new/keys.txt" => (0o644, "addNewKeys"),
                        "add/new/keys2.txt" => (0o644, "addNewKeys2"),
                        "add/new/keys3.txt" => (0o644, "addNewKeys3"),
                    },
                ],
            ),
            (
                "remove 1",
                vec![
                    payload! {
                        "foo/bar.txt" => (0o644, "foo/bar"),
                        "bar//zab.txt" => (0o644, "bar/zab.txt"),
                        "foo/blaz/bar.txt" => (0o644, "foo/blaz/bar"),
                        "zip/zap/zup/fop.txt" => (0o644, "zip/zap/zup/fop.txt"),
                    },
                    payload! {
                        "foo/bar.txt" => (0o644, "foo/bar2"),
                        "bar/zab.txt" => (0o644, "bar/zab.txt2"),
                    },
                    payload! { "foo/bar.txt" => (0o644, "foo/bar") },
                ],
            ),
        ];
        assert_eq!(cases.len(), 7);

        for (name, payloads) in cases {
            let target_dir = mk_tmpdir();
            let writer = writer(target_dir.path());

            for payload in payloads {
                // Upstream ignores the error here and relies on the content check; a failed
                // write is reported as such.
                writer
                    .write(&payload, None)
                    .unwrap_or_else(|err| panic!("{name}: unexpected error writing: {err}"));
                check_volume_contents(target_dir.path(), name, &payload);
            }
        }
    }

    /// checkVolumeContents: walks every user-visible symlink of `target_dir` (names not
    /// starting with `..`) through the data directory, rebuilds the payload from the files
    /// found (their content and mode) and compares it with `payload`, its paths cleaned.
    fn check_volume_contents(target_dir: &Path, tc_name: &str, payload: &Payload) {
        let data_dir_path = target_dir.join(DATA_DIR_NAME);
        let mut observed_payload = Payload::new();

        let entries = fs::read_dir(target_dir).unwrap_or_else(|err| {
            panic!(
                "{tc_name}: unable to read dir {}: {err}",
                target_dir.display()
            )
        });
        for entry in entries {
            let entry = entry.unwrap();
            if entry.file_name().as_bytes().starts_with(b"..") {
                continue;
            }
            if entry.file_type().unwrap().is_symlink() {
                let p = target_dir.join(entry.file_name());
                let actual = fs::read_link(&p).unwrap_or_else(|err| {
                    panic!("{tc_name}: unable to read symlink {}: {err}", p.display())
                });
                visit_volume_files(
                    &target_dir.join(actual),
                    &data_dir_path,
                    &mut observed_payload,
                )
                .unwrap_or_else(|err| {
                    panic!("{tc_name}: unexpected error walking directory: {err}")
                });
            }
        }

        let clean_path_payload: Payload =
            payload.iter().map(|(k, v)| (clean(k), v.clone())).collect();
        assert_eq!(
            clean_path_payload, observed_payload,
            "{tc_name}: payload and observed payload do not match"
        );
    }

    /// checkVolumeContents' `filepath.Walk` visitor: the files under `path` (symlinks not
    /// followed) by their path relative to `data_dir_path`, `..`-prefixed ones left out.
    fn visit_volume_files(
        path: &Path,
        data_dir_path: &Path,
        observed_payload: &mut Payload,
    ) -> io::Result<()> {
        let info = fs::symlink_metadata(path)?;
        if info.is_dir() {
            let mut children: Vec<_> = fs::read_dir(path)?
                .map(|entry| entry.map(|entry| entry.path()))
                .collect::<io::Result<_>>()?;
            children.sort();
            for child in children {
                visit_volume_files(&child, data_dir_path, observed_payload)?;
            }
            return Ok(());
        }

        let relative_path = path
            .strip_prefix(data_dir_path)
            .unwrap_or(path)
            .to_string_lossy()
            .trim_start_matches('/')
            .to_string();
        if relative_path.starts_with("..") {
            return Ok(());
        }

        let content = fs::read(path)?;
        let mode = fs::metadata(path)?.permissions().mode() & 0o7777;
        observed_payload.insert(
            relative_path,
            FileProjection {
                data: content,
                mode,
                fs_user: None,
            },
        );
        Ok(())
    }

    /// TestValidatePayload.
    #[test]
    fn test_validate_payload() {
        let max_path = "a".repeat(MAX_PATH_LENGTH + 1);

        let cases = [
            (
                "valid payload",
                payload! { "foo" => (0, ""), "bar" => (0, "") },
                Some(set(&["foo", "bar"])),
            ),
            (
                "payload with path length > 4096 is invalid",
                payload! { max_path => (0, "") },
                None,
            ),
            (
                "payload with absolute path is invalid",
                payload! { "/dev/null" => (0, "") },
                None,
            ),
            (
                "payload with reserved path is invalid",
                payload! { "..sneaky.txt" => (0, "") },
                None,
            ),
            (
                "payload with doubledot path is invalid",
                payload! { "foo/../etc/password" => (0, "") },
                None,
            ),
            (
                "payload with empty path is invalid",
                payload! { "" => (0, "") },
                None,
            ),
            (
                "payload with unclean path should be cleaned",
                payload! { "foo////bar" => (0, "") },
                Some(set(&["foo/bar"])),
            ),
        ];
        assert_eq!(cases.len(), 7);

        for (name, payload, expected) in cases {
            match (validate_payload(&payload), expected) {
                (Ok(_), None) => panic!("{name}: unexpected success"),
                (Err(_), None) => {}
                (Err(err), Some(_)) => panic!("{name}: unexpected failure: {err}"),
                (Ok(real), Some(expected)) => {
                    let real_paths: BTreeSet<String> = real.keys().cloned().collect();
                    assert_eq!(real_paths, expected, "{name}: unexpected payload paths");
                }
            }
        }
    }

    /// TestCreateUserVisibleFiles.
    #[test]
    fn test_create_user_visible_files() {
        let cases = [
            (
                "simple path",
                payload! { "foo" => (0, ""), "bar" => (0, "") },
                [("foo", "..data/foo"), ("bar", "..data/bar")],
            ),
            (
                "simple nested path",
                payload! {
                    "foo/bar" => (0, ""),
                    "foo/bar/txt" => (0, ""),
                    "bar/txt" => (0, ""),
                },
                [("foo", "..data/foo"), ("bar", "..data/bar")],
            ),
            (
                "unclean nested path",
                payload! { "./bar" => (0, ""), "foo///bar" => (0, "") },
                [("bar", "..data/bar"), ("foo", "..data/foo")],
            ),
        ];
        assert_eq!(cases.len(), 3);

        for (name, payload, expected) in cases {
            let target_dir = mk_tmpdir();
            let data_dir_path = target_dir.path().join(DATA_DIR_NAME);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&data_dir_path)
                .unwrap_or_else(|err| panic!("{name}: unexpected error creating data path: {err}"));

            let writer = writer(target_dir.path());
            let payload = validate_payload(&payload)
                .unwrap_or_else(|err| panic!("{name}: unexpected error validating payload: {err}"));
            writer
                .create_user_visible_files(&payload)
                .unwrap_or_else(|err| {
                    panic!("{name}: unexpected error creating visible files: {err}")
                });

            for (subpath, expected_dest) in expected {
                let visible_path = target_dir.path().join(subpath);
                let destination = fs::read_link(&visible_path).unwrap_or_else(|err| {
                    panic!(
                        "{name}: unable to read symlink {}: {err}",
                        visible_path.display()
                    )
                });
                assert_eq!(
                    destination,
                    Path::new(expected_dest),
                    "{name}: symlink destination not same with expected data dir"
                );
            }
        }
    }

    /// TestSetPerms.
    #[test]
    fn test_set_perms() {
        let target_dir = mk_tmpdir();

        // set_perms is called once, with an existing timestamped directory.
        let payload1 = payload! {
            "foo/bar.txt" => (0o644, "foo"),
            "bar/zab.txt" => (0o644, "bar"),
        };

        let set_perms_called = Cell::new(0);
        let writer = writer(target_dir.path());
        let count_calls = |sub_path: &str| -> io::Result<()> {
            let file_info = fs::metadata(target_dir.path().join(sub_path))
                .unwrap_or_else(|err| panic!("unexpected error getting file info: {err}"));
            // The timestamped directory really exists.
            assert!(file_info.is_dir(), "subPath is not a directory: {sub_path}");
            assert!(sub_path.starts_with(".."), "{sub_path}");
            set_perms_called.set(set_perms_called.get() + 1);
            Ok(())
        };
        writer
            .write(&payload1, Some(&count_calls))
            .expect("unexpected error writing");
        assert_eq!(
            set_perms_called.get(),
            1,
            "unexpected number of calls to setPerms"
        );

        // Errors from set_perms are propagated.
        let payload2 = payload! {
            "foo/bar.txt" => (0o644, "foo2"),
            "bar/zab.txt" => (0o644, "bar2"),
        };
        let fail = |_: &str| -> io::Result<()> { Err(io::Error::other("error in setPerms")) };
        let err = writer
            .write(&payload2, Some(&fail))
            .expect_err("expected error while writing but got nil");
        assert!(
            err.to_string().contains("error in setPerms"),
            "unexpected error while writing: {err}"
        );
    }

    /// TestWriteAgainAfterUnexpectedExit.
    #[test]
    fn test_write_again_after_unexpected_exit() {
        type SimulateFn = fn(&Path, &Payload) -> io::Result<()>;
        let cases: [(&str, Payload, SimulateFn); 1] = [(
            "process killed before creating user visible files",
            payload! {
                "foo" => (0o644, "foo"),
                "bar" => (0o644, "bar"),
            },
            |target_dir, payload| {
                for filename in payload.keys() {
                    remove_all(&target_dir.join(filename))?;
                }
                Ok(())
            },
        )];

        for (name, payload, simulate_fn) in cases {
            let target_dir = mk_tmpdir();
            let writer = writer(target_dir.path());
            writer
                .write(&payload, None)
                .unwrap_or_else(|err| panic!("{name}: unexpected error writing payload: {err}"));

            simulate_fn(target_dir.path(), &payload).unwrap_or_else(|err| {
                panic!("{name}: failed to simulate the unexpected exit: {err}")
            });

            writer.write(&payload, None).unwrap_or_else(|err| {
                panic!("{name}: unexpected error writing payload again: {err}")
            });
            check_volume_contents(target_dir.path(), name, &payload);
        }
    }

    /// Not upstream's: fsUser owns the files and the user-visible links (lchown), and the
    /// timestamped directory is `..YYYY_MM_DD_HH_MM_SS.<random>` with mode 0755.
    #[test]
    fn fs_user_and_timestamp_dir() {
        use std::os::unix::fs::MetadataExt;

        if !nix::unistd::geteuid().is_root() {
            rekube_crds::testing::missing_prerequisite("the fsUser test needs root (lchown)");
            return;
        }
        let target_dir = mk_tmpdir();
        let mut payload = payload! {
            "foo" => (0o600, "foo"),
            "sub/bar" => (0o644, "bar"),
        };
        for file in payload.values_mut() {
            file.fs_user = Some(4242);
        }
        writer(target_dir.path()).write(&payload, None).unwrap();

        let ts_dir = fs::read_link(target_dir.path().join(DATA_DIR_NAME)).unwrap();
        let ts_name = ts_dir.to_str().unwrap();
        let (stamp, random) = ts_name[2..].split_once('.').unwrap();
        assert!(ts_name.starts_with(".."), "{ts_name}");
        assert!(!random.is_empty(), "{ts_name}");
        jiff::civil::DateTime::strptime("%Y_%m_%d_%H_%M_%S", stamp).unwrap();
        let ts_info = fs::metadata(target_dir.path().join(&ts_dir)).unwrap();
        assert_eq!(ts_info.permissions().mode() & 0o7777, 0o755);

        for (path, mode) in [("foo", 0o600), ("sub/bar", 0o644)] {
            let info = fs::metadata(target_dir.path().join(&ts_dir).join(path)).unwrap();
            assert_eq!(info.uid(), 4242, "{path}");
            assert_eq!(info.permissions().mode() & 0o7777, mode, "{path}");
        }
        for link in ["foo", "sub"] {
            let info = fs::symlink_metadata(target_dir.path().join(link)).unwrap();
            assert!(info.file_type().is_symlink(), "{link}");
            assert_eq!(info.uid(), 4242, "{link}");
        }
        // The directories between are the writer's.
        let sub = fs::metadata(target_dir.path().join(&ts_dir).join("sub")).unwrap();
        assert_eq!(sub.uid(), 0);
    }

    /// Go's filepath.Clean on the paths the payloads use, and Join under a target.
    #[test]
    fn clean_and_join_are_gos() {
        for (path, want) in [
            ("", "."),
            (".", "."),
            ("./bar", "bar"),
            ("foo///bar", "foo/bar"),
            ("foo/", "foo"),
            ("bar/../bar/zab.txt", "bar/zab.txt"),
            ("../a", "../a"),
            ("a/../..", ".."),
            ("/../a", "/a"),
            ("//a//b/", "/a/b"),
        ] {
            assert_eq!(clean(path), want, "{path:?}");
        }
        assert_eq!(
            go_join(Path::new("/t"), Path::new("..2016_01_01_00_00_00.x")),
            Path::new("/t/..2016_01_01_00_00_00.x")
        );
        assert_eq!(
            go_join(Path::new("/t"), Path::new("/etc")),
            Path::new("/t/etc")
        );
        assert_eq!(go_join(Path::new("/t/"), Path::new("")), Path::new("/t"));
    }
}
