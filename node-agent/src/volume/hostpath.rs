//! hostPath volumes: upstream pkg/volume/hostpath/host_path.go's mounter (`SetUp`: the
//! path must not step back, then the `type` check), `checkType`/`checkTypeInternal` over
//! the `hostPathTypeChecker` interface ([`FileTypeChecker`]), its real implementation
//! (`fileTypeChecker` with hostutil's `GetFileType`, here [`OsFileTypeChecker`]),
//! `makeDir` and `makeFile`; and pkg/volume/validation's `ValidatePathNoBacksteps`.
//!
//! The decision ([`check_type`]) asks a [`FileTypeChecker`] what the path is, so the
//! tests drive it with a fake; [`set_up`] runs it against the node's filesystem. Nothing
//! is mounted here: the container runtime binds the returned path.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::HostPathVolumeSource;

/// `HostPathType` values, as upstream spells them (`v1.HostPathUnset` is `""`).
pub const HOST_PATH_UNSET: &str = "";
pub const HOST_PATH_DIRECTORY_OR_CREATE: &str = "DirectoryOrCreate";
pub const HOST_PATH_DIRECTORY: &str = "Directory";
pub const HOST_PATH_FILE_OR_CREATE: &str = "FileOrCreate";
pub const HOST_PATH_FILE: &str = "File";
pub const HOST_PATH_SOCKET: &str = "Socket";
pub const HOST_PATH_CHAR_DEV: &str = "CharDevice";
pub const HOST_PATH_BLOCK_DEV: &str = "BlockDevice";

/// Why a hostPath volume cannot be set up (upstream's texts).
#[derive(Debug, thiserror::Error)]
pub enum HostPathError {
    #[error("invalid HostPath `{0}`: must not contain '..'")]
    Backsteps(String),
    #[error("hostPath type check failed: {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("hostPath type check failed: {} is not a file", .0.display())]
    NotAFile(PathBuf),
    #[error("hostPath type check failed: {} is not a socket file", .0.display())]
    NotASocket(PathBuf),
    #[error("hostPath type check failed: {} is not a character device", .0.display())]
    NotACharDevice(PathBuf),
    #[error("hostPath type check failed: {} is not a block device", .0.display())]
    NotABlockDevice(PathBuf),
    #[error("{0} is an invalid volume type")]
    InvalidType(String),
    /// `DirectoryOrCreate` could not create the directory (Go's `mkdir <path>: <cause>`).
    #[error("mkdir {}: {source}", path.display())]
    MakeDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `FileOrCreate` could not create the file (Go's `open <path>: <cause>`).
    #[error("open {}: {source}", path.display())]
    MakeFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a host path is (upstream's `hostPathTypeChecker`, with the path passed to each
/// call instead of held by the checker).
pub trait FileTypeChecker {
    fn exists(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    fn is_file(&self, path: &Path) -> bool;
    fn is_socket(&self, path: &Path) -> bool;
    fn is_char_device(&self, path: &Path) -> bool;
    fn is_block_device(&self, path: &Path) -> bool;
    /// `makeDir`: `mkdir -p` with mode 0755 (an existing directory is fine).
    fn make_dir(&self, path: &Path) -> io::Result<()>;
    /// `makeFile`: an empty file with mode 0644 (an existing one is left as it is).
    fn make_file(&self, path: &Path) -> io::Result<()>;
}

/// upstream hostutil's `FileType`: what `getFileType` says a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileType {
    Directory,
    File,
    Socket,
    CharDev,
    BlockDev,
}

/// The node's filesystem (upstream `fileTypeChecker` over hostutil's `GetFileType` and
/// `PathExists`): `stat`, following symlinks as `os.Stat` does.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFileTypeChecker;

impl OsFileTypeChecker {
    /// `getFileType`: `None` when the path cannot be stat'ed or is of another type (a
    /// FIFO: upstream's `errUnknownFileType`).
    fn file_type(path: &Path) -> Option<FileType> {
        let t = std::fs::metadata(path).ok()?.file_type();
        if t.is_dir() {
            Some(FileType::Directory)
        } else if t.is_file() {
            Some(FileType::File)
        } else if t.is_socket() {
            Some(FileType::Socket)
        } else if t.is_char_device() {
            Some(FileType::CharDev)
        } else if t.is_block_device() {
            Some(FileType::BlockDev)
        } else {
            None
        }
    }
}

impl FileTypeChecker for OsFileTypeChecker {
    fn exists(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok()
    }

    fn is_dir(&self, path: &Path) -> bool {
        self.exists(path) && Self::file_type(path) == Some(FileType::Directory)
    }

    fn is_file(&self, path: &Path) -> bool {
        self.exists(path) && Self::file_type(path) == Some(FileType::File)
    }

    fn is_socket(&self, path: &Path) -> bool {
        Self::file_type(path) == Some(FileType::Socket)
    }

    fn is_char_device(&self, path: &Path) -> bool {
        Self::file_type(path) == Some(FileType::CharDev)
    }

    fn is_block_device(&self, path: &Path) -> bool {
        Self::file_type(path) == Some(FileType::BlockDev)
    }

    fn make_dir(&self, path: &Path) -> io::Result<()> {
        DirBuilder::new().recursive(true).mode(0o755).create(path)
    }

    fn make_file(&self, path: &Path) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map(drop)
    }
}

/// pkg/volume/validation `ValidatePathNoBacksteps`, with `SetUp`'s message: no `..`
/// element in the path.
pub fn validate_path_no_backsteps(path: &str) -> Result<(), HostPathError> {
    if path.split('/').any(|part| part == "..") {
        return Err(HostPathError::Backsteps(path.to_string()));
    }
    Ok(())
}

/// Upstream `checkType`/`checkTypeInternal`: whether `path` is what `path_type` asks for,
/// creating it for `DirectoryOrCreate` and `FileOrCreate` when it is missing. An unset
/// type (`None` or `""`) checks nothing, as upstream's `SetUp` skips the check for it.
pub fn check_type(
    path: &Path,
    path_type: Option<&str>,
    checker: &dyn FileTypeChecker,
) -> Result<(), HostPathError> {
    let owned = || path.to_path_buf();
    match path_type.unwrap_or(HOST_PATH_UNSET) {
        HOST_PATH_UNSET => Ok(()),
        t @ (HOST_PATH_DIRECTORY_OR_CREATE | HOST_PATH_DIRECTORY) => {
            if t == HOST_PATH_DIRECTORY_OR_CREATE && !checker.exists(path) {
                return checker
                    .make_dir(path)
                    .map_err(|source| HostPathError::MakeDir {
                        path: owned(),
                        source,
                    });
            }
            if !checker.is_dir(path) {
                return Err(HostPathError::NotADirectory(owned()));
            }
            Ok(())
        }
        t @ (HOST_PATH_FILE_OR_CREATE | HOST_PATH_FILE) => {
            if t == HOST_PATH_FILE_OR_CREATE && !checker.exists(path) {
                return checker
                    .make_file(path)
                    .map_err(|source| HostPathError::MakeFile {
                        path: owned(),
                        source,
                    });
            }
            if !checker.is_file(path) {
                return Err(HostPathError::NotAFile(owned()));
            }
            Ok(())
        }
        HOST_PATH_SOCKET if !checker.is_socket(path) => Err(HostPathError::NotASocket(owned())),
        HOST_PATH_CHAR_DEV if !checker.is_char_device(path) => {
            Err(HostPathError::NotACharDevice(owned()))
        }
        HOST_PATH_BLOCK_DEV if !checker.is_block_device(path) => {
            Err(HostPathError::NotABlockDevice(owned()))
        }
        HOST_PATH_SOCKET | HOST_PATH_CHAR_DEV | HOST_PATH_BLOCK_DEV => Ok(()),
        other => Err(HostPathError::InvalidType(other.to_string())),
    }
}

/// Upstream `hostPathMounter.SetUp`: refuses a path with `..`, checks the type against
/// the node's filesystem, and returns the host path the containers bind.
pub fn set_up(source: &HostPathVolumeSource) -> Result<PathBuf, HostPathError> {
    validate_path_no_backsteps(&source.path)?;
    let path = PathBuf::from(&source.path);
    check_type(&path, source.type_.as_deref(), &OsFileTypeChecker)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// upstream `fakeHostPathTypeChecker`.
    #[derive(Default)]
    struct FakeChecker {
        exists: bool,
        is_dir: bool,
        is_file: bool,
        is_socket: bool,
        is_block: bool,
        is_char: bool,
    }

    impl FileTypeChecker for FakeChecker {
        fn exists(&self, _: &Path) -> bool {
            self.exists
        }
        fn is_dir(&self, _: &Path) -> bool {
            self.is_dir
        }
        fn is_file(&self, _: &Path) -> bool {
            self.is_file
        }
        fn is_socket(&self, _: &Path) -> bool {
            self.is_socket
        }
        fn is_char_device(&self, _: &Path) -> bool {
            self.is_char
        }
        fn is_block_device(&self, _: &Path) -> bool {
            self.is_block
        }
        fn make_dir(&self, _: &Path) -> io::Result<()> {
            Ok(())
        }
        fn make_file(&self, _: &Path) -> io::Result<()> {
            Ok(())
        }
    }

    use super::{
        HOST_PATH_BLOCK_DEV as BLOCK, HOST_PATH_CHAR_DEV as CHAR, HOST_PATH_DIRECTORY as DIR,
        HOST_PATH_DIRECTORY_OR_CREATE as DIR_OR_CREATE, HOST_PATH_FILE as FILE,
        HOST_PATH_FILE_OR_CREATE as FILE_OR_CREATE, HOST_PATH_SOCKET as SOCKET,
    };

    /// upstream TestHostPathTypeCheckerInternal: (name, path, checker, valid types,
    /// invalid types).
    #[test]
    fn host_path_type_checker_internal() {
        type Case = (
            &'static str,
            &'static str,
            FakeChecker,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "Existing Folder",
                "/existingFolder",
                FakeChecker {
                    is_dir: true,
                    exists: true,
                    ..Default::default()
                },
                vec![DIR_OR_CREATE, DIR],
                vec![FILE_OR_CREATE, FILE, SOCKET, CHAR, BLOCK],
            ),
            (
                "New Folder",
                "/newFolder",
                FakeChecker::default(),
                vec![DIR_OR_CREATE],
                vec![DIR, FILE, SOCKET, CHAR, BLOCK],
            ),
            (
                "Existing File",
                "/existingFile",
                FakeChecker {
                    is_file: true,
                    exists: true,
                    ..Default::default()
                },
                vec![FILE_OR_CREATE, FILE],
                vec![DIR_OR_CREATE, DIR, SOCKET, CHAR, BLOCK],
            ),
            (
                "New File",
                "/newFile",
                FakeChecker::default(),
                vec![FILE_OR_CREATE],
                vec![DIR, SOCKET, CHAR, BLOCK],
            ),
            (
                "Existing Socket",
                "/existing.socket",
                FakeChecker {
                    is_socket: true,
                    is_file: true,
                    exists: true,
                    ..Default::default()
                },
                vec![SOCKET, FILE_OR_CREATE, FILE],
                vec![DIR_OR_CREATE, DIR, CHAR, BLOCK],
            ),
            (
                "Existing Character Device",
                "/existing.char",
                FakeChecker {
                    is_char: true,
                    is_file: true,
                    exists: true,
                    ..Default::default()
                },
                vec![CHAR, FILE_OR_CREATE, FILE],
                vec![DIR_OR_CREATE, DIR, SOCKET, BLOCK],
            ),
            (
                "Existing Block Device",
                "/existing.block",
                FakeChecker {
                    is_block: true,
                    is_file: true,
                    exists: true,
                    ..Default::default()
                },
                vec![BLOCK, FILE_OR_CREATE, FILE],
                vec![DIR_OR_CREATE, DIR, SOCKET, CHAR],
            ),
        ];
        assert_eq!(cases.len(), 7);
        for (i, (name, path, checker, valid, invalid)) in cases.iter().enumerate() {
            for t in valid {
                let r = check_type(Path::new(path), Some(t), checker);
                assert!(r.is_ok(), "[{i}: {name}] [{t}] expected ok, got {r:?}");
            }
            for t in invalid {
                let r = check_type(Path::new(path), Some(t), checker);
                assert!(r.is_err(), "[{i}: {name}] [{t}] expected an error");
            }
        }
    }

    #[test]
    fn type_check_messages_are_upstreams() {
        let nothing = FakeChecker::default();
        let p = Path::new("/var/run/x");
        let msg = |t: &str| check_type(p, Some(t), &nothing).unwrap_err().to_string();
        assert_eq!(
            msg(DIR),
            "hostPath type check failed: /var/run/x is not a directory"
        );
        assert_eq!(
            msg(FILE),
            "hostPath type check failed: /var/run/x is not a file"
        );
        assert_eq!(
            msg(SOCKET),
            "hostPath type check failed: /var/run/x is not a socket file"
        );
        assert_eq!(
            msg(CHAR),
            "hostPath type check failed: /var/run/x is not a character device"
        );
        assert_eq!(
            msg(BLOCK),
            "hostPath type check failed: /var/run/x is not a block device"
        );
        assert_eq!(msg("Pipe"), "Pipe is an invalid volume type");
        // Unset: no check at all.
        assert!(check_type(p, None, &nothing).is_ok());
        assert!(check_type(p, Some(""), &nothing).is_ok());
    }

    /// upstream TestInvalidHostPath, and ValidatePathNoBacksteps' cases.
    #[test]
    fn invalid_host_path() {
        let source = HostPathVolumeSource {
            path: "/no/backsteps/allowed/..".into(),
            type_: None,
        };
        assert_eq!(
            set_up(&source).unwrap_err().to_string(),
            "invalid HostPath `/no/backsteps/allowed/..`: must not contain '..'"
        );
        for ok in ["/a/b", "/a/..b/c", "/a/b../c", "/a/.../b", "relative/./x"] {
            assert!(validate_path_no_backsteps(ok).is_ok(), "{ok}");
        }
        for bad in ["..", "../a", "/a/../b", "a/.."] {
            assert!(validate_path_no_backsteps(bad).is_err(), "{bad}");
        }
    }

    /// A block device on this machine: the row of upstream's table that needs one.
    fn some_block_device() -> Option<PathBuf> {
        std::fs::read_dir("/dev")
            .ok()?
            .filter_map(Result::ok)
            .find(|e| e.file_type().is_ok_and(|t| t.is_block_device()))
            .map(|e| e.path())
    }

    /// upstream TestOSFileTypeChecker, on real files instead of a fake hostutil: each path
    /// exists and is exactly one type.
    #[test]
    fn os_file_type_checker() {
        let tmp = tempfile::tempdir().unwrap();
        let folder = tmp.path().join("ExistingFolder");
        std::fs::create_dir(&folder).unwrap();
        let file = folder.join("foo");
        std::fs::write(&file, b"").unwrap();
        let socket = folder.join("foo.sock");
        let _listener = UnixListener::bind(&socket).unwrap();
        let mut cases: Vec<(&str, PathBuf, FileType)> = vec![
            ("Existing Folder", folder.clone(), FileType::Directory),
            ("Existing File", file.clone(), FileType::File),
            ("Existing Socket File", socket, FileType::Socket),
            (
                "Existing Character Device",
                PathBuf::from("/dev/null"),
                FileType::CharDev,
            ),
        ];
        // The block device row needs one on the node; it is skipped only when /dev has
        // none (a container without devices), as nothing else makes one without mknod.
        match some_block_device() {
            Some(dev) => cases.push(("Existing Block Device", dev, FileType::BlockDev)),
            None => eprintln!("no block device under /dev: skipping the block device row"),
        }
        let c = OsFileTypeChecker;
        for (name, path, want) in &cases {
            assert!(c.exists(path), "{name}: {} does not exist", path.display());
            let got = [
                (FileType::Directory, c.is_dir(path)),
                (FileType::File, c.is_file(path)),
                (FileType::Socket, c.is_socket(path)),
                (FileType::CharDev, c.is_char_device(path)),
                (FileType::BlockDev, c.is_block_device(path)),
            ];
            for (t, is) in got {
                assert_eq!(is, t == *want, "{name}: {} is {t:?}?", path.display());
            }
        }
        // A symlink is what it points to (os.Stat follows it); a missing path is nothing.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&folder, &link).unwrap();
        assert!(c.is_dir(&link) && !c.is_file(&link));
        let missing = tmp.path().join("missing");
        assert!(!c.exists(&missing) && !c.is_dir(&missing) && !c.is_socket(&missing));
    }

    #[test]
    fn set_up_creates_and_checks_on_the_node() {
        let tmp = tempfile::tempdir().unwrap();
        let source = |path: &Path, t: &str| HostPathVolumeSource {
            path: path.display().to_string(),
            type_: Some(t.to_string()),
        };
        let dir = tmp.path().join("a/b");
        assert_eq!(set_up(&source(&dir, DIR_OR_CREATE)).unwrap(), dir);
        assert!(dir.is_dir());
        assert!(set_up(&source(&dir, DIR)).is_ok());
        let file = dir.join("f");
        assert_eq!(set_up(&source(&file, FILE_OR_CREATE)).unwrap(), file);
        assert!(file.is_file());
        assert!(set_up(&source(&file, FILE)).is_ok());
        assert_eq!(
            set_up(&source(&file, DIR)).unwrap_err().to_string(),
            format!(
                "hostPath type check failed: {} is not a directory",
                file.display()
            )
        );
        // DirectoryOrCreate under a file cannot create the directory.
        let under_file = file.join("x");
        let err = set_up(&source(&under_file, DIR_OR_CREATE)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("mkdir {}: ", under_file.display())),
            "{err}"
        );
        // Unset type: no check, even for a missing path.
        let missing = tmp.path().join("missing");
        assert_eq!(set_up(&source(&missing, "")).unwrap(), missing);
        assert!(!missing.exists());
    }
}
