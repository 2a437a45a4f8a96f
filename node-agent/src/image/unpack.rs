//! Layer unpacking: a (gzip, zstd or plain) layer tar becomes a directory that overlayfs
//! can stack as a lowerdir, and its diff-id (the sha256 of the uncompressed tar) is
//! computed on the way.
//!
//! # Whiteouts, in overlayfs' own format
//!
//! OCI layers mark deletions with AUFS-style names; each layer is unpacked on its own
//! (not onto its parent, as containerd's snapshotter does), so deletions are stored the
//! way overlayfs reads them from a lowerdir:
//!
//! - `dir/.wh.name` → a character device 0/0 at `dir/name` (hides `name` of lower layers);
//! - `dir/.wh..wh..opq` → the xattr `trusted.overlay.opaque=y` on `dir` (hides all of the
//!   lower layers' `dir`, keeps this layer's entries);
//! - other `.wh..wh.*` names (AUFS bookkeeping) are skipped.
//!
//! This needs root (CAP_MKNOD, CAP_SYS_ADMIN for `trusted.*`), which the node agent has.
//! A layer's own `trusted.overlay.*` xattrs are dropped: only whiteouts set them, so a
//! layer cannot forge redirects or opaque markers.
//!
//! # Never writing outside the layer directory
//!
//! The tar crate parses; every path is resolved here, with file descriptors:
//!
//! - a name with a `..` component fails the whole layer; a leading `/` is dropped;
//! - the parent of each entry is opened with `openat2(RESOLVE_IN_ROOT)` on the layer
//!   directory: symlinks met on the way resolve as they would inside the container (an
//!   absolute target or a `..` is clamped at the layer root, as containerd's
//!   `fs.RootPath` does), so a symlink pointing "outside" followed by a file written
//!   through it lands inside the layer, and the kernel guarantees it;
//! - the last component is created relative to that parent fd with `O_NOFOLLOW` /
//!   `O_EXCL` after removing what was there, so an earlier symlink of the same name is
//!   replaced, never followed;
//! - a hardlink's target is opened with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: a target
//!   outside the layer, or reached through a symlink, fails the layer;
//! - ownership, modes, device nodes (`mknod`) and xattrs are applied only as root; a
//!   non-root caller (a test, a dry run) gets files owned by itself and no device nodes.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use tracing::debug;

use super::digest::{Digest, HashingReader};
use super::spec::Compression;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_META_PREFIX: &[u8] = b".wh..wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("unsafe layer entry {path:?}: {reason}")]
    UnsafePath { path: String, reason: &'static str },
    #[error("layer entry {path:?}: {op}: {source}")]
    Entry {
        path: String,
        op: &'static str,
        source: io::Error,
    },
    #[error("reading layer tar: {0}")]
    Read(io::Error),
    #[error("opening layer directory {dir}: {source}")]
    Root { dir: PathBuf, source: io::Error },
}

/// What unpacking found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar: must equal the config's `rootfs.diff_ids` entry.
    pub diff_id: Digest,
    /// Bytes of regular file content written.
    pub size: u64,
    /// Tar entries applied.
    pub entries: u64,
}

/// Unpacks the layer blob read from `blob` into `dest`, an existing empty directory.
/// The compression is detected from the blob's first bytes, as containerd does.
pub fn unpack_layer(blob: impl Read, dest: &Path) -> Result<Unpacked, UnpackError> {
    let mut blob = BufReader::with_capacity(256 * 1024, blob);
    let head = blob.fill_buf().map_err(UnpackError::Read)?;
    let decoded: Box<dyn Read> = match Compression::detect(head) {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(blob)),
        Compression::Zstd => Box::new(ZstdReader::new(blob)),
    };
    let root = rustix::fs::open(
        dest,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Root {
        dir: dest.to_path_buf(),
        source: e.into(),
    })?;
    let mut unpacker = Unpacker {
        root,
        as_root: rustix::process::geteuid().is_root(),
        dir_times: Vec::new(),
        size: 0,
        entries: 0,
    };
    let mut hashing = HashingReader::new(decoded);
    {
        let mut archive = tar::Archive::new(&mut hashing);
        for entry in archive.entries().map_err(UnpackError::Read)? {
            let mut entry = entry.map_err(UnpackError::Read)?;
            unpacker.apply(&mut entry)?;
        }
    }
    let (diff_id, _) = hashing.finish().map_err(UnpackError::Read)?;
    unpacker.restore_dir_times();
    Ok(Unpacked {
        diff_id,
        size: unpacker.size,
        entries: unpacker.entries,
    })
}

struct Unpacker {
    root: OwnedFd,
    as_root: bool,
    dir_times: Vec<(Vec<Vec<u8>>, u64)>,
    size: u64,
    entries: u64,
}

/// The metadata of one entry, PAX overrides applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Unpacker {
    fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let comps = components(&raw).map_err(|reason| UnsafePath(&shown, reason))?;
        let Some((name, parent_comps)) = comps.split_last() else {
            // The layer root itself ("./"): the layer directory stands for it.
            return Ok(());
        };
        let meta = self.meta(entry, &shown)?;
        let io_err = |op: &'static str| {
            let path = shown.clone();
            move |source: Errno| UnpackError::Entry {
                path,
                op,
                source: source.into(),
            }
        };

        // Whiteouts become overlayfs whiteouts.
        if name.starts_with(WHITEOUT_PREFIX) {
            let parent = self.ensure_dir(parent_comps, &shown)?;
            if name.as_slice() == WHITEOUT_OPAQUE {
                let dir = rustix::fs::openat(
                    &parent,
                    ".",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err("open opaque directory"))?;
                rustix::fs::fsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(io_err("set trusted.overlay.opaque"))?;
            } else if !name.starts_with(WHITEOUT_META_PREFIX) {
                let hidden = &name[WHITEOUT_PREFIX.len()..];
                if hidden.is_empty() || hidden == b"." || hidden == b".." {
                    return Err(UnsafePath(&shown, "whiteout of an invalid name"));
                }
                if !self.as_root {
                    return Err(UnpackError::Entry {
                        path: shown,
                        op: "create whiteout",
                        source: io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            "overlayfs whiteouts (0/0 character devices) need root",
                        ),
                    });
                }
                self.remove_existing(&parent, hidden, false, &shown)?;
                rustix::fs::mknodat(
                    &parent,
                    hidden,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(io_err("create whiteout"))?;
            }
            self.entries += 1;
            return Ok(());
        }

        let parent = self.ensure_dir(parent_comps, &shown)?;
        let name = name.as_slice();
        let times = timestamps(meta.mtime);
        match kind {
            tar::EntryType::Directory => {
                self.remove_existing(&parent, name, true, &shown)?;
                match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io_err("mkdir")(e)),
                }
                let dir = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err("open directory"))?;
                self.set_fd_meta(&dir, &meta, &shown)?;
                self.dir_times.push((comps.clone(), meta.mtime));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                self.remove_existing(&parent, name, false, &shown)?;
                let fd = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err("create file"))?;
                let mut file = File::from(fd);
                let n = io::copy(entry, &mut file).map_err(|e| UnpackError::Entry {
                    path: shown.clone(),
                    op: "write file",
                    source: e,
                })?;
                self.size += n;
                self.set_fd_meta(&file, &meta, &shown)?;
                rustix::fs::futimens(&file, &times).map_err(io_err("set mtime"))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnsafePath(&shown, "symlink without a target"))?
                    .into_owned();
                self.remove_existing(&parent, name, false, &shown)?;
                rustix::fs::symlinkat(target.as_slice(), &parent, name)
                    .map_err(io_err("symlink"))?;
                if self.as_root {
                    rustix::fs::chownat(
                        &parent,
                        name,
                        Some(Uid::from_raw(meta.uid)),
                        Some(Gid::from_raw(meta.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(io_err("chown symlink"))?;
                }
                rustix::fs::utimensat(&parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(io_err("set symlink mtime"))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnsafePath(&shown, "hardlink without a target"))?
                    .into_owned();
                self.hardlink(&parent, name, &target, &shown)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let file_type = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                if file_type != FileType::Fifo && !self.as_root {
                    debug!(path = %shown, "device node skipped: not root");
                    return Ok(());
                }
                let header = entry.header();
                let dev = rustix::fs::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                self.remove_existing(&parent, name, false, &shown)?;
                rustix::fs::mknodat(&parent, name, file_type, Mode::from_raw_mode(0o600), dev)
                    .map_err(io_err("mknod"))?;
                if self.as_root {
                    rustix::fs::chownat(
                        &parent,
                        name,
                        Some(Uid::from_raw(meta.uid)),
                        Some(Gid::from_raw(meta.gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(io_err("chown device"))?;
                }
                // Just created by us, so not a symlink: chmodat cannot be redirected.
                rustix::fs::chmodat(
                    &parent,
                    name,
                    Mode::from_raw_mode(meta.mode),
                    AtFlags::empty(),
                )
                .map_err(io_err("chmod device"))?;
            }
            other => {
                debug!(path = %shown, kind = ?other, "unsupported tar entry type skipped");
                return Ok(());
            }
        }
        self.entries += 1;
        Ok(())
    }

    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<Meta, UnpackError> {
        let header = entry.header();
        let bad = |op| {
            move |source| UnpackError::Entry {
                path: shown.to_string(),
                op,
                source,
            }
        };
        let mut meta = Meta {
            // Empty numeric fields read as 0, as Go's archive/tar reads them.
            mode: header.mode().unwrap_or(0o644) & 0o7777,
            uid: header.uid().unwrap_or(0) as u32,
            gid: header.gid().unwrap_or(0) as u32,
            mtime: header.mtime().unwrap_or(0),
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry.pax_extensions().map_err(bad("read pax header"))? {
            for ext in pax {
                let ext = ext.map_err(bad("read pax header"))?;
                let Ok(key) = ext.key() else { continue };
                let number = || ext.value().ok().and_then(|v| v.parse::<u32>().ok());
                match key {
                    "uid" => meta.uid = number().unwrap_or(meta.uid),
                    "gid" => meta.gid = number().unwrap_or(meta.gid),
                    k => {
                        if let Some(name) = k.strip_prefix(PAX_XATTR_PREFIX)
                            && !name.starts_with(OVERLAY_XATTR_PREFIX)
                        {
                            meta.xattrs
                                .push((name.to_string(), ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
        Ok(meta)
    }

    /// Owner, then mode (chown clears set-id bits), then xattrs, on an open file or dir.
    fn set_fd_meta(&self, fd: impl AsFd, meta: &Meta, shown: &str) -> Result<(), UnpackError> {
        let err = |op| {
            move |source: Errno| UnpackError::Entry {
                path: shown.to_string(),
                op,
                source: source.into(),
            }
        };
        if self.as_root {
            rustix::fs::fchown(
                &fd,
                Some(Uid::from_raw(meta.uid)),
                Some(Gid::from_raw(meta.gid)),
            )
            .map_err(err("chown"))?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode)).map_err(err("chmod"))?;
        if self.as_root {
            for (name, value) in &meta.xattrs {
                match rustix::fs::fsetxattr(&fd, name.as_str(), value, XattrFlags::empty()) {
                    Ok(()) | Err(Errno::NOTSUP) => {}
                    Err(e) => return Err(err("set xattr")(e)),
                }
            }
        }
        Ok(())
    }

    /// Opens (creating what is missing, mode 0755 as docker does) the directory named by
    /// `comps`, resolved inside the layer root.
    fn ensure_dir(&self, comps: &[Vec<u8>], shown: &str) -> Result<OwnedFd, UnpackError> {
        let err = |op| {
            move |source: Errno| UnpackError::Entry {
                path: shown.to_string(),
                op,
                source: source.into(),
            }
        };
        match open_in_root(&self.root, comps) {
            Ok(fd) => return Ok(fd),
            Err(Errno::NOENT) => {}
            Err(Errno::NOTDIR) => return Err(UnsafePath(shown, "a parent is not a directory")),
            Err(e) => return Err(err("open parent directory")(e)),
        }
        let mut dir = open_in_root(&self.root, &[]).map_err(err("open layer root"))?;
        for i in 0..comps.len() {
            dir = match open_in_root(&self.root, &comps[..=i]) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&dir, comps[i].as_slice(), Mode::from_raw_mode(0o755))
                    {
                        Ok(()) => {}
                        Err(Errno::EXIST) => {
                            return Err(UnsafePath(
                                shown,
                                "a parent is a symlink to a path missing from this layer",
                            ));
                        }
                        Err(e) => return Err(err("create parent directory")(e)),
                    }
                    rustix::fs::openat2(
                        &dir,
                        comps[i].as_slice(),
                        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
                    )
                    .map_err(err("open created parent directory"))?
                }
                Err(Errno::NOTDIR) => {
                    return Err(UnsafePath(shown, "a parent is not a directory"));
                }
                Err(e) => return Err(err("open parent directory")(e)),
            };
        }
        Ok(dir)
    }

    /// Removes what is at `parent/name` so a new entry can take its place; a directory
    /// stays when the new entry is a directory too (tar's merge semantics).
    fn remove_existing(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        keep_dir: bool,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let err = |op| {
            move |source: Errno| UnpackError::Entry {
                path: shown.to_string(),
                op,
                source: source.into(),
            }
        };
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(err("stat existing entry")(e)),
            Ok(st) => {
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    if keep_dir {
                        Ok(())
                    } else {
                        remove_all_at(parent, name).map_err(err("remove existing directory"))
                    }
                } else {
                    rustix::fs::unlinkat(parent, name, AtFlags::empty())
                        .map_err(err("remove existing entry"))
                }
            }
        }
    }

    fn hardlink(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        target: &[u8],
        shown: &str,
    ) -> Result<(), UnpackError> {
        let target_comps = components(target)
            .map_err(|_| UnsafePath(shown, "hardlink target outside the layer"))?;
        let Some((target_name, target_parent)) = target_comps.split_last() else {
            return Err(UnsafePath(shown, "hardlink to the layer root"));
        };
        let joined = join(target_parent);
        let target_dir = rustix::fs::openat2(
            &self.root,
            joined.as_slice(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
        )
        .map_err(|e| match e {
            Errno::LOOP => UnsafePath(shown, "hardlink target reached through a symlink"),
            Errno::XDEV => UnsafePath(shown, "hardlink target outside the layer"),
            Errno::NOENT | Errno::NOTDIR => UnsafePath(shown, "hardlink target missing"),
            e => UnpackError::Entry {
                path: shown.to_string(),
                op: "open hardlink target directory",
                source: e.into(),
            },
        })?;
        match rustix::fs::statat(
            &target_dir,
            target_name.as_slice(),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                return Err(UnsafePath(shown, "hardlink to a directory"));
            }
            Ok(_) => {}
            Err(_) => return Err(UnsafePath(shown, "hardlink target missing")),
        }
        if same_entry(parent, name, &target_dir, target_name) {
            // A hardlink to itself: already there.
            return Ok(());
        }
        self.remove_existing(parent, name, false, shown)?;
        rustix::fs::linkat(
            &target_dir,
            target_name.as_slice(),
            parent,
            name,
            AtFlags::empty(),
        )
        .map_err(|e| UnpackError::Entry {
            path: shown.to_string(),
            op: "hardlink",
            source: e.into(),
        })
    }

    /// Directory mtimes last, since creating their entries changed them. Best effort:
    /// a directory replaced later in the layer is skipped.
    fn restore_dir_times(&self) {
        for (comps, mtime) in self.dir_times.iter().rev() {
            let joined = join(comps);
            if let Ok(fd) = rustix::fs::openat2(
                &self.root,
                joined.as_slice(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
            ) {
                let _ = rustix::fs::futimens(&fd, &timestamps(*mtime));
            }
        }
    }
}

#[allow(non_snake_case)]
fn UnsafePath(path: &str, reason: &'static str) -> UnpackError {
    UnpackError::UnsafePath {
        path: path.to_string(),
        reason,
    }
}

/// Splits a tar name into components: empty and `.` dropped (so a leading `/` makes an
/// absolute name relative), `..` refused.
fn components(raw: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("path has a '..' component"),
            c if c.contains(&0) => return Err("path has a NUL byte"),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn join(comps: &[Vec<u8>]) -> Vec<u8> {
    if comps.is_empty() {
        return b".".to_vec();
    }
    comps.join(&b'/')
}

/// Opens a directory of the layer with symlinks resolved as inside the container.
fn open_in_root(root: &OwnedFd, comps: &[Vec<u8>]) -> Result<OwnedFd, Errno> {
    let joined = join(comps);
    rustix::fs::openat2(
        root,
        OsStr::from_bytes(&joined),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )
}

fn same_entry(a_dir: &OwnedFd, a: &[u8], b_dir: &OwnedFd, b: &[u8]) -> bool {
    match (
        rustix::fs::statat(a_dir, a, AtFlags::SYMLINK_NOFOLLOW),
        rustix::fs::statat(b_dir, b, AtFlags::SYMLINK_NOFOLLOW),
    ) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

/// Removes `parent/name` and everything under it, never following symlinks.
fn remove_all_at(parent: &OwnedFd, name: &[u8]) -> Result<(), Errno> {
    let dir = rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut children = Vec::new();
    let mut entries = Dir::read_from(&dir)?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let child = entry.file_name().to_bytes();
        if child != b"." && child != b".." {
            children.push((child.to_vec(), entry.file_type() == FileType::Directory));
        }
    }
    for (child, is_dir) in children {
        if is_dir {
            remove_all_at(&dir, &child)?;
        } else {
            rustix::fs::unlinkat(&dir, child.as_slice(), AtFlags::empty())?;
        }
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR)
}

fn timestamps(mtime: u64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime as i64,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// A zstd stream of one or more frames (skippable frames skipped), decoded by ruzstd.
struct ZstdReader<R: BufRead> {
    src: R,
    frame: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdReader<R> {
    fn new(src: R) -> Self {
        Self {
            src,
            frame: ruzstd::decoding::FrameDecoder::new(),
            in_frame: false,
        }
    }
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if !self.in_frame {
                if self.src.fill_buf()?.is_empty() {
                    return Ok(0);
                }
                match self.frame.reset(&mut self.src) {
                    Ok(()) => self.in_frame = true,
                    Err(FrameDecoderError::ReadFrameHeaderError(
                        ReadFrameHeaderError::SkipFrame { length, .. },
                    )) => {
                        io::copy(
                            &mut (&mut self.src).take(u64::from(length)),
                            &mut io::sink(),
                        )?;
                        continue;
                    }
                    Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                }
            }
            if self.frame.can_collect() == 0 && !self.frame.is_finished() {
                self.frame
                    .decode_blocks(
                        &mut self.src,
                        ruzstd::decoding::BlockDecodingStrategy::UptoBlocks(1),
                    )
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            }
            let n = self.frame.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            if self.frame.is_finished() && self.frame.can_collect() == 0 {
                self.in_frame = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Crafted layers, malicious names written with raw headers (the tar crate's
    //! builder refuses `..` in `set_path`). These run as root (the node agent does).

    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A tar built entry by entry.
    #[derive(Default)]
    struct Layer {
        b: Vec<u8>,
    }

    impl Layer {
        fn header(kind: tar::EntryType, name: &[u8], mode: u32) -> tar::Header {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1_700_000_000);
            // Raw name: set_path would refuse `..`.
            let field = &mut h.as_old_mut().name;
            field.fill(0);
            field[..name.len()].copy_from_slice(name);
            h
        }

        fn append(&mut self, mut h: tar::Header, data: &[u8]) {
            h.set_size(data.len() as u64);
            h.set_cksum();
            let mut builder = tar::Builder::new(Vec::new());
            builder.append(&h, data).unwrap();
            let bytes = builder.into_inner().unwrap();
            // Drop the two zero blocks `into_inner` writes; `finish` adds them once.
            self.b.extend_from_slice(&bytes[..bytes.len() - 1024]);
        }

        fn dir(mut self, name: &str) -> Self {
            self.append(
                Self::header(tar::EntryType::Directory, name.as_bytes(), 0o755),
                b"",
            );
            self
        }

        fn file(mut self, name: &str, data: &str) -> Self {
            self.append(
                Self::header(tar::EntryType::Regular, name.as_bytes(), 0o644),
                data.as_bytes(),
            );
            self
        }

        fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Self {
            let mut h = Self::header(kind, name.as_bytes(), 0o777);
            let field = &mut h.as_old_mut().linkname;
            field.fill(0);
            field[..target.len()].copy_from_slice(target.as_bytes());
            self.append(h, b"");
            self
        }

        fn symlink(self, name: &str, target: &str) -> Self {
            self.link(tar::EntryType::Symlink, name, target)
        }

        fn hardlink(self, name: &str, target: &str) -> Self {
            self.link(tar::EntryType::Link, name, target)
        }

        fn finish(mut self) -> Vec<u8> {
            self.b.extend_from_slice(&[0u8; 1024]);
            self.b
        }
    }

    /// A sandbox: `outside/` is what must stay untouched, `layer/` the unpack target.
    struct Sandbox {
        dir: tempfile::TempDir,
    }

    impl Sandbox {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir(dir.path().join("layer")).unwrap();
            std::fs::create_dir(dir.path().join("outside")).unwrap();
            std::fs::write(dir.path().join("outside/victim"), "original").unwrap();
            Self { dir }
        }

        fn layer(&self) -> PathBuf {
            self.dir.path().join("layer")
        }

        fn unpack(&self, tar: &[u8]) -> Result<Unpacked, UnpackError> {
            unpack_layer(tar, &self.layer())
        }

        /// Everything under the sandbox but the layer: must be exactly as created.
        fn assert_outside_untouched(&self) {
            let outside = self.dir.path().join("outside");
            let names: Vec<_> = std::fs::read_dir(&outside)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("victim")]);
            assert_eq!(
                std::fs::read_to_string(outside.join("victim")).unwrap(),
                "original"
            );
            let top: Vec<_> = std::fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            let mut top = top;
            top.sort();
            assert_eq!(top, vec!["layer", "outside"]);
        }
    }

    #[test]
    fn files_dirs_symlinks_hardlinks_and_modes() {
        let s = Sandbox::new();
        let tar = Layer::default()
            .dir("bin/")
            .file("bin/busybox", "#!fake")
            .symlink("bin/sh", "busybox")
            .symlink("bin/abs", "/bin/busybox")
            .hardlink("bin/ls", "bin/busybox")
            .file("/etc/hostname", "absolute names are made relative")
            .file("deep/er/file", "parents created")
            .finish();
        let u = s.unpack(&tar).unwrap();
        assert_eq!(u.diff_id, Digest::of(&tar));
        let l = s.layer();
        assert_eq!(
            std::fs::read_to_string(l.join("bin/busybox")).unwrap(),
            "#!fake"
        );
        assert_eq!(
            std::fs::read_link(l.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            std::fs::read_link(l.join("bin/abs")).unwrap(),
            Path::new("/bin/busybox")
        );
        let (a, b) = (
            std::fs::metadata(l.join("bin/busybox")).unwrap(),
            std::fs::metadata(l.join("bin/ls")).unwrap(),
        );
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert_eq!(a.permissions().mode() & 0o7777, 0o644);
        assert_eq!(a.mtime(), 1_700_000_000);
        assert_eq!(
            std::fs::metadata(l.join("deep/er"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert!(l.join("etc/hostname").is_file());
        s.assert_outside_untouched();
    }

    #[test]
    fn dotdot_names_fail_the_layer() {
        for name in [
            "../outside/victim",
            "a/../../outside/victim",
            "./../outside/new",
            "/../outside/new",
        ] {
            let s = Sandbox::new();
            let tar = Layer::default().file(name, "pwned").finish();
            let err = s.unpack(&tar).unwrap_err();
            assert!(
                matches!(&err, UnpackError::UnsafePath { reason, .. } if reason.contains("..")),
                "{name}: {err}"
            );
            s.assert_outside_untouched();
        }
    }

    #[test]
    fn writing_through_a_symlink_stays_inside() {
        let s = Sandbox::new();
        let outside = s.dir.path().join("outside");
        let host_passwd = std::fs::read("/etc/passwd").unwrap();
        let tar = Layer::default()
            .dir("etc/")
            .dir("outside/")
            // Symlinks that, followed on the host, would leave the layer.
            .symlink("evil", "/etc")
            .symlink("rel", "../outside")
            .symlink("deep", "../../../../../../../../..")
            .file("evil/passwd", "pwned")
            .file("rel/victim", "pwned")
            .file("deep/tmp/pwned", "pwned")
            .finish();
        s.unpack(&tar).unwrap();
        s.assert_outside_untouched();
        assert_eq!(std::fs::read("/etc/passwd").unwrap(), host_passwd);
        // Resolved as inside the container: clamped at the layer root.
        let l = s.layer();
        assert_eq!(
            std::fs::read_to_string(l.join("etc/passwd")).unwrap(),
            "pwned"
        );
        assert_eq!(
            std::fs::read_to_string(l.join("outside/victim")).unwrap(),
            "pwned"
        );
        assert_eq!(
            std::fs::read_to_string(l.join("tmp/pwned")).unwrap(),
            "pwned"
        );

        // A symlink to a directory this layer lacks (the real outside dir): refused.
        let s = Sandbox::new();
        let tar = Layer::default()
            .symlink("abs", outside.to_str().unwrap())
            .file("abs/victim", "pwned")
            .finish();
        let err = s.unpack(&tar).unwrap_err();
        assert!(
            matches!(&err, UnpackError::UnsafePath { reason, .. } if reason.contains("symlink")),
            "{err}"
        );
        s.assert_outside_untouched();
    }

    #[test]
    fn a_symlink_replaced_by_a_file_is_not_followed() {
        let s = Sandbox::new();
        let victim = s.dir.path().join("outside/victim");
        let tar = Layer::default()
            .symlink("x", victim.to_str().unwrap())
            .file("x", "replaced")
            .finish();
        s.unpack(&tar).unwrap();
        s.assert_outside_untouched();
        let x = s.layer().join("x");
        assert!(std::fs::symlink_metadata(&x).unwrap().is_file());
        assert_eq!(std::fs::read_to_string(x).unwrap(), "replaced");
    }

    #[test]
    fn hardlink_escapes_fail_the_layer() {
        let victim = "outside/victim";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                Layer::default().hardlink("l", "../outside/victim").finish(),
                "outside",
            ),
            (
                Layer::default()
                    .symlink("out", "../outside")
                    .hardlink("l", "out/victim")
                    .finish(),
                "symlink",
            ),
            (
                Layer::default()
                    .symlink("out", "/")
                    .hardlink("l", "out/etc/passwd")
                    .finish(),
                "symlink",
            ),
            (
                Layer::default().hardlink("l", "/etc/passwd").finish(),
                "missing",
            ),
        ];
        for (tar, want) in cases {
            let s = Sandbox::new();
            let err = s.unpack(&tar).unwrap_err();
            assert!(
                matches!(&err, UnpackError::UnsafePath { reason, .. } if reason.contains(want)),
                "{want}: {err}"
            );
            s.assert_outside_untouched();
            let v = std::fs::metadata(s.dir.path().join(victim)).unwrap();
            assert_eq!(v.nlink(), 1, "victim got a second link");
        }
    }

    #[test]
    fn whiteouts_are_overlayfs_whiteouts() {
        let s = Sandbox::new();
        let tar = Layer::default()
            .dir("etc/")
            .file("etc/.wh.passwd", "")
            .dir("data/")
            .file("data/.wh..wh..opq", "")
            .file("data/new", "upper")
            .file("gone/.wh.deep", "")
            .file("etc/.wh..wh.plnk", "")
            .finish();
        s.unpack(&tar).unwrap();
        let l = s.layer();
        let wh = std::fs::symlink_metadata(l.join("etc/passwd")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(wh.file_type().is_char_device());
        assert_eq!(wh.rdev(), 0);
        assert!(!l.join("etc/.wh.passwd").exists());
        assert!(!l.join("etc/.wh..wh.plnk").exists());
        let mut v = [0u8; 8];
        let n = rustix::fs::getxattr(l.join("data"), OVERLAY_OPAQUE_XATTR, &mut v[..]).unwrap();
        assert_eq!(&v[..n], b"y");
        assert!(!l.join("data/.wh..wh..opq").exists());
        assert_eq!(
            std::fs::read_to_string(l.join("data/new")).unwrap(),
            "upper"
        );
        assert!(
            std::fs::symlink_metadata(l.join("gone/deep"))
                .unwrap()
                .file_type()
                .is_char_device()
        );
        for bad in ["etc/.wh..", "etc/.wh."] {
            let s = Sandbox::new();
            let tar = Layer::default().file(bad, "").finish();
            assert!(
                matches!(s.unpack(&tar), Err(UnpackError::UnsafePath { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn forged_overlay_xattrs_are_dropped() {
        let s = Sandbox::new();
        let mut builder = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_path("d/").unwrap();
        h.set_mode(0o755);
        h.set_size(0);
        h.set_cksum();
        builder
            .append_pax_extensions([
                ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
                ("SCHILY.xattr.user.note", &b"kept"[..]),
            ])
            .unwrap();
        builder.append(&h, &b""[..]).unwrap();
        let tar = builder.into_inner().unwrap();
        s.unpack(&tar).unwrap();
        let d = s.layer().join("d");
        let mut v = [0u8; 16];
        assert!(rustix::fs::getxattr(&d, "trusted.overlay.redirect", &mut v[..]).is_err());
        let n = rustix::fs::getxattr(&d, "user.note", &mut v[..]).unwrap();
        assert_eq!(&v[..n], b"kept");
    }

    #[test]
    fn ownership_devices_and_setuid() {
        let s = Sandbox::new();
        let mut tar = Layer::default();
        let mut h = Layer::header(tar::EntryType::Regular, b"bin/su", 0o4755);
        h.set_uid(0);
        h.set_gid(0);
        tar.append(h, b"x");
        let mut h = Layer::header(tar::EntryType::Regular, b"home/u/f", 0o600);
        h.set_uid(1000);
        h.set_gid(1001);
        tar.append(h, b"y");
        let mut h = Layer::header(tar::EntryType::Char, b"dev/null", 0o666);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        tar.append(h, b"");
        s.unpack(&tar.finish()).unwrap();
        let l = s.layer();
        assert_eq!(
            std::fs::metadata(l.join("bin/su"))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777,
            0o4755
        );
        let f = std::fs::metadata(l.join("home/u/f")).unwrap();
        assert_eq!((f.uid(), f.gid()), (1000, 1001));
        let null = std::fs::symlink_metadata(l.join("dev/null")).unwrap();
        assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
        assert_eq!(null.permissions().mode() & 0o777, 0o666);
    }

    #[test]
    fn compressed_layers_and_diff_id() {
        let tar = Layer::default()
            .file("a", "alpha")
            .file("b/c", "gamma")
            .finish();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        // Two zstd frames and a skippable frame in between, as parallel compressors write.
        let (first, second) = tar.split_at(700);
        let mut zst =
            ruzstd::encoding::compress_to_vec(first, ruzstd::encoding::CompressionLevel::Fastest);
        zst.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9]);
        zst.extend(ruzstd::encoding::compress_to_vec(
            second,
            ruzstd::encoding::CompressionLevel::Fastest,
        ));
        for blob in [gz, zst, tar.clone()] {
            let s = Sandbox::new();
            let u = s.unpack(&blob).unwrap();
            assert_eq!(u.diff_id, Digest::of(&tar));
            assert_eq!((u.size, u.entries), (10, 2));
            assert_eq!(
                std::fs::read_to_string(s.layer().join("b/c")).unwrap(),
                "gamma"
            );
        }
    }

    #[test]
    fn a_parent_that_is_a_file_fails() {
        let s = Sandbox::new();
        let tar = Layer::default().file("f", "x").file("f/g", "y").finish();
        assert!(matches!(
            s.unpack(&tar),
            Err(UnpackError::UnsafePath { .. })
        ));
    }

    #[test]
    fn replacing_a_directory_with_a_file() {
        let s = Sandbox::new();
        let tar = Layer::default()
            .dir("d/")
            .file("d/inner", "x")
            .symlink("d/ln", "/")
            .file("d", "file now")
            .finish();
        s.unpack(&tar).unwrap();
        assert_eq!(
            std::fs::read_to_string(s.layer().join("d")).unwrap(),
            "file now"
        );
        s.assert_outside_untouched();
    }
}
