//! The content-addressed image store (containerd's content store and image metadata,
//! with an overlayfs-ready layer cache), under one root directory:
//!
//! ```text
//! <root>/blobs/sha256/<hex>            manifests, indexes, configs, layer blobs, verbatim
//! <root>/layers/sha256/<diff-id>/fs    each layer unpacked on its own: an overlayfs lowerdir
//! <root>/layers/sha256/<diff-id>/size  bytes of file content in it
//! <root>/ingest/                       downloads and unpacks in progress (same filesystem,
//!                                      so committing is a rename)
//! <root>/index.json                    name → target digest, and per image ID the times
//!                                      image GC needs
//! <root>/content.lock, index.lock      flock(2): pulls/imports hold content.lock shared,
//!                                      prune holds it exclusive (containerd's leases);
//!                                      index.lock serialises index.json updates
//! ```
//!
//! Every blob is verified against its digest before it is committed, and every unpacked
//! layer against its diff-id. A name is only committed once its whole image is present.
//!
//! The image ID is the config digest. `containerStatuses.imageID` reports
//! [`Image::image_ref`]: the first repo digest (`localhost:5000/busybox@sha256:…`, the
//! digest that was pulled: the index's when pulled through one, as containerd reports
//! it), or the ID for an image without one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;
use serde::{Deserialize, Serialize};

use super::digest::{Digest, Hasher};
use super::reference::{Reference, ReferenceError};
use super::spec::{ImageConfig, ManifestDoc, SpecError, parse_manifest};
use super::unpack::{self, UnpackError};

/// Where the node agent keeps images unless told otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/rekube/images";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("image store {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error("{what} {expected} failed verification: content has digest {actual}")]
    DigestMismatch {
        what: &'static str,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} {digest} failed verification: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: &'static str,
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("layer {blob} unpacks to diff-id {actual}, but the image config says {expected}")]
    DiffIdMismatch {
        blob: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what} {digest} is not in the image store")]
    Missing { what: &'static str, digest: Digest },
    #[error("image {manifest} has {layers} layers but its config lists {diff_ids} diff-ids")]
    LayerCount {
        manifest: Digest,
        layers: usize,
        diff_ids: usize,
    },
    #[error("unpacking layer {blob}: {source}")]
    Unpack { blob: Digest, source: UnpackError },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("image store index {path}: {source}")]
    Index {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { path, op, source }
}

/// What a name points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    /// The digest pulled: an index or a manifest.
    pub target: Digest,
    /// The linux/amd64 image manifest.
    pub manifest: Digest,
    /// The config: the image ID.
    pub config: Digest,
}

/// What image GC needs to know about an image ID (upstream's imageRecord).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageTimes {
    /// Unix seconds when the image was first stored.
    pub first_detected: u64,
    /// Unix seconds when a container last used it (or it was pulled).
    pub last_used: u64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct IndexFile {
    #[serde(default)]
    names: BTreeMap<String, NameRecord>,
    #[serde(default)]
    images: BTreeMap<Digest, ImageTimes>,
}

/// An image in the store: one config digest, under one or more names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The config digest.
    pub id: Digest,
    /// Full references, sorted (`localhost:5000/busybox:latest`).
    pub names: Vec<String>,
    /// `repository@target-digest` for each name's repository: the one of the name the
    /// image was asked by first, then sorted.
    pub repo_digests: Vec<String>,
    pub manifest: Digest,
    pub config: ImageConfig,
    /// diff-ids, bottom layer first.
    pub layers: Vec<Digest>,
    /// Bytes on disk: blobs plus unpacked layers.
    pub size: u64,
    pub times: ImageTimes,
}

impl Image {
    /// What containerStatuses.imageID reports: the first repo digest, else the ID.
    pub fn image_ref(&self) -> String {
        self.repo_digests
            .first()
            .cloned()
            .unwrap_or_else(|| self.id.to_string())
    }
}

/// A shared hold on the content (containerd's lease): while held, prune waits.
pub struct Lease {
    _file: File,
}

/// A blob being written: hashed as it goes, committed under its digest once verified.
pub struct BlobIngest {
    tmp: tempfile::NamedTempFile,
    hasher: Hasher,
}

impl BlobIngest {
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.tmp
            .write_all(data)
            .map_err(io_err(self.tmp.path(), "write blob"))
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hasher.is_empty()
    }

    /// The digest of what was written so far.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }
}

/// The image store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in ["blobs/sha256", "layers/sha256", "ingest"] {
            let p = root.join(dir);
            fs::create_dir_all(&p).map_err(io_err(&p, "create directory"))?;
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self, name: &str, op: FlockOperation) -> Result<File> {
        let path = self.root.join(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path, "open lock"))?;
        rustix::fs::flock(&file, op).map_err(|e| StoreError::Io {
            path,
            op: "lock",
            source: e.into(),
        })?;
        Ok(file)
    }

    /// Holds content against prune while a pull or import writes it.
    pub fn lease(&self) -> Result<Lease> {
        Ok(Lease {
            _file: self.lock("content.lock", FlockOperation::LockShared)?,
        })
    }

    // ----- blobs -----

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a (small) blob and checks it still has its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Missing {
                    what: "blob",
                    digest: digest.clone(),
                });
            }
            Err(e) => return Err(io_err(&path, "read blob")(e)),
        };
        let actual = Digest::of(&data);
        if &actual != digest {
            return Err(StoreError::DigestMismatch {
                what: "stored blob",
                expected: digest.clone(),
                actual,
            });
        }
        Ok(data)
    }

    /// Starts writing a blob.
    pub fn begin_blob(&self) -> Result<BlobIngest> {
        let dir = self.root.join("ingest");
        let tmp = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&dir)
            .map_err(io_err(&dir, "create ingest file"))?;
        Ok(BlobIngest {
            tmp,
            hasher: Hasher::default(),
        })
    }

    /// Verifies the written blob against `expected` (and `size` when known) and commits
    /// it under its digest.
    pub fn commit_blob(
        &self,
        ingest: BlobIngest,
        what: &'static str,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<()> {
        let len = ingest.hasher.len();
        let actual = ingest.hasher.finish();
        if &actual != expected {
            return Err(StoreError::DigestMismatch {
                what,
                expected: expected.clone(),
                actual,
            });
        }
        if let Some(size) = size
            && size != len
        {
            return Err(StoreError::SizeMismatch {
                what,
                digest: expected.clone(),
                expected: size,
                actual: len,
            });
        }
        let path = self.blob_path(expected);
        ingest
            .tmp
            .as_file()
            .sync_all()
            .map_err(io_err(&path, "sync blob"))?;
        ingest
            .tmp
            .persist(&path)
            .map_err(|e| io_err(&path, "commit blob")(e.error))?;
        Ok(())
    }

    /// Writes a blob from memory, verified against `expected` when given; returns its
    /// digest.
    pub fn write_blob(
        &self,
        what: &'static str,
        data: &[u8],
        expected: Option<&Digest>,
    ) -> Result<Digest> {
        let digest = Digest::of(data);
        let expected = expected.unwrap_or(&digest);
        if self.has_blob(expected) && &digest == expected {
            return Ok(digest);
        }
        let mut ingest = self.begin_blob()?;
        ingest.write(data)?;
        self.commit_blob(ingest, what, expected, None)?;
        Ok(digest)
    }

    /// Streams a blob from `reader`, verified against `expected` and `size`.
    pub fn ingest_blob(
        &self,
        what: &'static str,
        mut reader: impl Read,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<()> {
        if self.has_blob(expected) {
            return Ok(());
        }
        let mut ingest = self.begin_blob()?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(io_err(ingest.tmp.path(), "read blob source"))?;
            if n == 0 {
                break;
            }
            ingest.write(&buf[..n])?;
        }
        self.commit_blob(ingest, what, expected, size)
    }

    // ----- layers -----

    /// The unpacked layer: an overlayfs lowerdir.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("layers/sha256")
            .join(diff_id.hex())
            .join("fs")
    }

    pub fn has_layer(&self, diff_id: &Digest) -> bool {
        self.root
            .join("layers/sha256")
            .join(diff_id.hex())
            .join("size")
            .is_file()
    }

    fn layer_size(&self, diff_id: &Digest) -> u64 {
        let p = self
            .root
            .join("layers/sha256")
            .join(diff_id.hex())
            .join("size");
        fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Unpacks the layer blob `blob` and commits it under `diff_id`, after checking
    /// that the uncompressed tar has that digest. Blocking: run it off the async runtime.
    pub fn unpack_layer(&self, blob: &Digest, diff_id: &Digest) -> Result<()> {
        if self.has_layer(diff_id) {
            return Ok(());
        }
        let ingest = self.root.join("ingest");
        let tmp = tempfile::Builder::new()
            .prefix("layer-")
            .tempdir_in(&ingest)
            .map_err(io_err(&ingest, "create layer directory"))?;
        let fs_dir = tmp.path().join("fs");
        fs::create_dir(&fs_dir).map_err(io_err(&fs_dir, "create layer directory"))?;
        fs::set_permissions(&fs_dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(io_err(&fs_dir, "chmod layer directory"))?;
        let blob_path = self.blob_path(blob);
        let file = File::open(&blob_path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => StoreError::Missing {
                what: "layer blob",
                digest: blob.clone(),
            },
            _ => io_err(&blob_path, "open layer blob")(e),
        })?;
        let unpacked =
            unpack::unpack_layer(file, &fs_dir).map_err(|source| StoreError::Unpack {
                blob: blob.clone(),
                source,
            })?;
        if &unpacked.diff_id != diff_id {
            return Err(StoreError::DiffIdMismatch {
                blob: blob.clone(),
                expected: diff_id.clone(),
                actual: unpacked.diff_id,
            });
        }
        let size_path = tmp.path().join("size");
        fs::write(&size_path, unpacked.size.to_string())
            .map_err(io_err(&size_path, "write layer size"))?;
        let dest = self.root.join("layers/sha256").join(diff_id.hex());
        let kept = tmp.keep();
        match fs::rename(&kept, &dest) {
            Ok(()) => Ok(()),
            // Unpacked concurrently by another pull: keep theirs.
            Err(_) if self.has_layer(diff_id) => {
                let _ = fs::remove_dir_all(&kept);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&kept);
                Err(io_err(&dest, "commit layer")(e))
            }
        }
    }

    // ----- images -----

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    fn read_index(&self) -> Result<IndexFile> {
        let path = self.index_path();
        match fs::read(&path) {
            Ok(data) => {
                serde_json::from_slice(&data).map_err(|source| StoreError::Index { path, source })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(IndexFile::default()),
            Err(e) => Err(io_err(&path, "read index")(e)),
        }
    }

    fn write_index(&self, index: &IndexFile) -> Result<()> {
        let path = self.index_path();
        let data = serde_json::to_vec_pretty(index).map_err(|source| StoreError::Index {
            path: path.clone(),
            source,
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix("index-")
            .tempfile_in(&self.root)
            .map_err(io_err(&self.root, "create index"))?;
        tmp.write_all(&data).map_err(io_err(&path, "write index"))?;
        tmp.as_file()
            .sync_all()
            .map_err(io_err(&path, "sync index"))?;
        tmp.persist(&path)
            .map_err(|e| io_err(&path, "commit index")(e.error))?;
        Ok(())
    }

    fn update_index<T>(&self, f: impl FnOnce(&mut IndexFile) -> Result<T>) -> Result<T> {
        let _guard = self.lock("index.lock", FlockOperation::LockExclusive)?;
        let mut index = self.read_index()?;
        let out = f(&mut index)?;
        self.write_index(&index)?;
        Ok(out)
    }

    /// Resolves `target` (a manifest, or an index resolved for linux/amd64) to its image
    /// manifest and config, checking everything the image needs is stored.
    pub fn resolve_target(&self, target: &Digest) -> Result<NameRecord> {
        let bytes = self.read_blob(target)?;
        let manifest_digest = match parse_manifest(&bytes, target, None)? {
            ManifestDoc::Image(_) => target.clone(),
            ManifestDoc::Index(index) => index.manifest_for_platform(target)?.digest.clone(),
        };
        let ManifestDoc::Image(manifest) =
            parse_manifest(&self.read_blob(&manifest_digest)?, &manifest_digest, None)?
        else {
            return Err(SpecError::MediaType {
                digest: manifest_digest.to_string(),
                media_type: "nested image index".to_string(),
            }
            .into());
        };
        let config_bytes = self.read_blob(&manifest.config.digest)?;
        let config = ImageConfig::parse(&config_bytes, &manifest.config.digest)?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(StoreError::LayerCount {
                manifest: manifest_digest,
                layers: manifest.layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            });
        }
        for diff_id in &config.rootfs.diff_ids {
            if !self.has_layer(diff_id) {
                return Err(StoreError::Missing {
                    what: "unpacked layer",
                    digest: diff_id.clone(),
                });
            }
        }
        Ok(NameRecord {
            target: target.clone(),
            manifest: manifest_digest,
            config: manifest.config.digest,
        })
    }

    /// Points `name` at `target` once the whole image is present; returns the image.
    pub fn commit_image(
        &self,
        name: &Reference,
        target: &Digest,
        now: SystemTime,
    ) -> Result<Image> {
        let record = self.resolve_target(target)?;
        let id = record.config.clone();
        let now = unix(now);
        self.update_index(|index| {
            index.names.insert(name.to_string(), record);
            let times = index.images.entry(id.clone()).or_insert(ImageTimes {
                first_detected: now,
                last_used: now,
            });
            times.last_used = times.last_used.max(now);
            Ok(())
        })?;
        self.image_by_id(&id, Some(&name.to_string()))?
            .ok_or_else(|| StoreError::NotFound(id.to_string()))
    }

    /// Records that a container used the image (for image GC's least-recently-used order).
    pub fn touch(&self, id: &Digest, now: SystemTime) -> Result<()> {
        let now = unix(now);
        self.update_index(|index| {
            if let Some(t) = index.images.get_mut(id) {
                t.last_used = t.last_used.max(now);
            }
            Ok(())
        })
    }

    /// Sets an image's times (tests and `image gc` simulations).
    pub fn set_times(&self, id: &Digest, times: ImageTimes) -> Result<()> {
        self.update_index(|index| {
            index.images.insert(id.clone(), times);
            Ok(())
        })
    }

    /// Every image, by ID.
    pub fn list(&self) -> Result<Vec<Image>> {
        let index = self.read_index()?;
        let mut by_id: BTreeMap<Digest, Vec<(&String, &NameRecord)>> = BTreeMap::new();
        for (name, rec) in &index.names {
            by_id
                .entry(rec.config.clone())
                .or_default()
                .push((name, rec));
        }
        by_id
            .iter()
            .map(|(id, names)| self.build_image(id, names, names[0].1, &index))
            .collect()
    }

    /// The image `id` as seen through `primary` (the name asked for: its manifest).
    fn build_image(
        &self,
        id: &Digest,
        names: &[(&String, &NameRecord)],
        primary: &NameRecord,
        index: &IndexFile,
    ) -> Result<Image> {
        let manifest_digest = primary.manifest.clone();
        let ManifestDoc::Image(manifest) =
            parse_manifest(&self.read_blob(&manifest_digest)?, &manifest_digest, None)?
        else {
            return Err(StoreError::Missing {
                what: "image manifest",
                digest: manifest_digest,
            });
        };
        let config = ImageConfig::parse(&self.read_blob(id)?, id)?;
        let mut repo_digests = BTreeSet::new();
        let mut primary_repo_digest = None;
        let mut targets = BTreeSet::new();
        for (name, rec) in names {
            targets.insert(rec.target.clone());
            if let Ok(r) = Reference::parse(name) {
                let rd = r.with_digest(rec.target.clone()).to_string();
                if std::ptr::eq(*rec, primary) {
                    primary_repo_digest = Some(rd.clone());
                }
                repo_digests.insert(rd);
            }
        }
        // The name asked for comes first: its repo digest is the image_ref.
        let mut repo_digests: Vec<String> = repo_digests.into_iter().collect();
        if let Some(p) = primary_repo_digest
            && let Some(i) = repo_digests.iter().position(|d| d == &p)
        {
            let p = repo_digests.remove(i);
            repo_digests.insert(0, p);
        }
        let mut size = manifest.config.size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
        size += config
            .rootfs
            .diff_ids
            .iter()
            .map(|d| self.layer_size(d))
            .sum::<u64>();
        for t in &targets {
            size += fs::metadata(self.blob_path(t))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        if !targets.contains(&manifest_digest) {
            size += fs::metadata(self.blob_path(&manifest_digest))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        Ok(Image {
            id: id.clone(),
            names: names.iter().map(|(n, _)| (*n).clone()).collect(),
            repo_digests,
            manifest: manifest_digest,
            layers: config.rootfs.diff_ids.clone(),
            config,
            size,
            times: index.images.get(id).copied().unwrap_or(ImageTimes {
                first_detected: 0,
                last_used: 0,
            }),
        })
    }

    fn image_by_id(&self, id: &Digest, primary: Option<&str>) -> Result<Option<Image>> {
        let index = self.read_index()?;
        let names: Vec<_> = index
            .names
            .iter()
            .filter(|(_, r)| &r.config == id)
            .collect();
        let Some(first) = names.first() else {
            return Ok(None);
        };
        let primary = primary
            .and_then(|p| index.names.get(p))
            .filter(|r| &r.config == id)
            .unwrap_or(first.1);
        self.build_image(id, &names, primary, &index).map(Some)
    }

    /// The image a container's `image` field names, if stored: what the CRI's
    /// ImageStatus answers, so IfNotPresent and Never can decide.
    pub fn get(&self, image: &Reference) -> Result<Option<Image>> {
        let index = self.read_index()?;
        if let Some(rec) = index.names.get(&image.to_string()) {
            return self.image_by_id(&rec.config.clone(), Some(&image.to_string()));
        }
        // A digest reference also matches an image stored under another name of the
        // same repository with that digest (pulled by tag, asked for by digest).
        if let Some(digest) = image.digest() {
            let hit = index.names.iter().find(|(name, rec)| {
                (&rec.target == digest || &rec.manifest == digest)
                    && Reference::parse(name).is_ok_and(|r| r.name() == image.name())
            });
            if let Some((name, rec)) = hit {
                return self.image_by_id(&rec.config.clone(), Some(name));
            }
        }
        Ok(None)
    }

    /// Finds an image by name (normalised), by ID (`sha256:…`) or by a unique ID prefix.
    pub fn find(&self, name_or_id: &str) -> Result<Option<Image>> {
        let hex = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let matches: Vec<_> = self
                .list()?
                .into_iter()
                .filter(|i| i.id.hex().starts_with(hex))
                .collect();
            if matches.len() == 1 {
                return Ok(matches.into_iter().next());
            }
        }
        self.get(&Reference::parse(name_or_id)?)
    }

    /// Removes a name, or every name of an image ID, then prunes unreferenced content.
    /// Returns the names removed.
    pub fn remove(&self, name_or_id: &str) -> Result<Vec<String>> {
        let image = self
            .find(name_or_id)?
            .ok_or_else(|| StoreError::NotFound(name_or_id.to_string()))?;
        let by_name = Reference::parse(name_or_id)
            .ok()
            .map(|r| r.to_string())
            .filter(|n| image.names.contains(n));
        let remove: Vec<String> = match by_name {
            Some(n) => vec![n],
            None => image.names.clone(),
        };
        self.update_index(|index| {
            for n in &remove {
                index.names.remove(n);
            }
            let live: BTreeSet<Digest> = index.names.values().map(|r| r.config.clone()).collect();
            index.images.retain(|id, _| live.contains(id));
            Ok(())
        })?;
        self.prune()?;
        Ok(remove)
    }

    /// Deletes blobs and unpacked layers no name needs, and leftovers of interrupted
    /// pulls (containerd's content GC). Waits for running pulls and imports.
    pub fn prune(&self) -> Result<u64> {
        let _exclusive = self.lock("content.lock", FlockOperation::LockExclusive)?;
        let index = self.read_index()?;
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        for rec in index.names.values() {
            blobs.insert(rec.target.clone());
            blobs.insert(rec.manifest.clone());
            blobs.insert(rec.config.clone());
            if let Ok(ManifestDoc::Image(m)) = self
                .read_blob(&rec.manifest)
                .map_err(|_| ())
                .and_then(|b| parse_manifest(&b, &rec.manifest, None).map_err(|_| ()))
            {
                blobs.extend(m.layers.into_iter().map(|l| l.digest));
            }
            if let Ok(c) = self
                .read_blob(&rec.config)
                .map_err(|_| ())
                .and_then(|b| ImageConfig::parse(&b, &rec.config).map_err(|_| ()))
            {
                layers.extend(c.rootfs.diff_ids);
            }
        }
        let mut freed = 0;
        for (dir, keep) in [("blobs/sha256", &blobs), ("layers/sha256", &layers)] {
            let dir = self.root.join(dir);
            for entry in fs::read_dir(&dir).map_err(io_err(&dir, "list content"))? {
                let entry = entry.map_err(io_err(&dir, "list content"))?;
                let name = entry.file_name();
                let referenced = name
                    .to_str()
                    .and_then(|h| format!("sha256:{h}").parse::<Digest>().ok())
                    .is_some_and(|d| keep.contains(&d));
                if !referenced {
                    freed += remove_path(&entry.path())?;
                }
            }
        }
        let ingest = self.root.join("ingest");
        for entry in fs::read_dir(&ingest).map_err(io_err(&ingest, "list ingest"))? {
            let entry = entry.map_err(io_err(&ingest, "list ingest"))?;
            freed += remove_path(&entry.path())?;
        }
        Ok(freed)
    }

    /// The overlayfs lowerdirs of an image, top layer first (the order `lowerdir=`
    /// takes: the leftmost is the uppermost).
    pub fn lower_dirs(&self, image: &Image) -> Vec<PathBuf> {
        image
            .layers
            .iter()
            .rev()
            .map(|d| self.layer_dir(d))
            .collect()
    }
}

fn remove_path(path: &Path) -> Result<u64> {
    let meta = fs::symlink_metadata(path).map_err(io_err(path, "stat"))?;
    let size = if meta.is_dir() {
        dir_size(path)
    } else {
        meta.len()
    };
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(io_err(path, "remove"))?;
    } else {
        fs::remove_file(path).map_err(io_err(path, "remove"))?;
    }
    Ok(size)
}

fn dir_size(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(rd) = fs::read_dir(&p) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

/// Unix seconds.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
