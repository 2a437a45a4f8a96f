//! `rekube-node-agent image import FILE`: loads an image tarball into the store, what
//! `kind load` / `ctr images import` do for their nodes. Two formats (gzip-compressed or
//! not):
//!
//! - an OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`): each entry of
//!   `index.json` is an image (an index entry resolved for linux/amd64), named by its
//!   `io.containerd.image.name` annotation, else by `org.opencontainers.image.ref.name`
//!   when that is a full reference;
//! - a docker archive, as `docker save` writes it (`manifest.json` listing `Config`,
//!   `RepoTags` and `Layers`): a Docker v2 manifest is made for it (so its target digest
//!   is rekube's own, as containerd does) and it is named by its RepoTags.
//!
//! `--name` names an image that has no usable name (and overrides the archive's names
//! when the archive holds one image). Every blob is verified against its digest and
//! every layer against its diff-id, as for a pull. The archive's files are extracted to
//! the store's ingest directory first, under numbered names: its paths are only looked
//! up, never used to write.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;

use super::reference::{Reference, ReferenceError};
use super::spec::{
    Compression, Descriptor, Index, MEDIA_TYPE_DOCKER_CONFIG, MEDIA_TYPE_DOCKER_LAYER,
    MEDIA_TYPE_DOCKER_LAYER_GZIP, MEDIA_TYPE_DOCKER_MANIFEST, Manifest, ManifestDoc, SpecError,
    parse_manifest,
};
use super::store::{Image, Store, StoreError};

const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("importing {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error(
        "importing {path}: neither an OCI image layout (index.json) nor a docker archive (manifest.json)"
    )]
    Format { path: PathBuf },
    #[error("importing {archive}: {member} is missing from the archive")]
    Missing { archive: PathBuf, member: String },
    #[error("importing {archive}: invalid {member}: {source}")]
    Json {
        archive: PathBuf,
        member: String,
        source: serde_json::Error,
    },
    #[error("importing {archive}: image {digest} has no name: give one with --name")]
    NoName { archive: PathBuf, digest: String },
    #[error("importing {archive}: {source}")]
    Store {
        archive: PathBuf,
        source: StoreError,
    },
    #[error("importing {archive}: {source}")]
    Spec { archive: PathBuf, source: SpecError },
    #[error("importing {archive}: {source}")]
    Reference {
        archive: PathBuf,
        source: ReferenceError,
    },
}

/// The archive's regular files, extracted to numbered temporary files.
struct Members {
    archive: PathBuf,
    _dir: tempfile::TempDir,
    files: BTreeMap<String, PathBuf>,
}

impl Members {
    fn extract(store: &Store, archive: &Path) -> Result<Self, ImportError> {
        let io_err = |op| {
            let path = archive.to_path_buf();
            move |source| ImportError::Io { path, op, source }
        };
        let file = File::open(archive).map_err(io_err("open"))?;
        let mut reader = BufReader::new(file);
        let head = reader.fill_buf().map_err(io_err("read"))?;
        let decoded: Box<dyn Read> = match Compression::detect(head) {
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
            _ => Box::new(reader),
        };
        let ingest = store.root().join("ingest");
        let dir = tempfile::Builder::new()
            .prefix("import-")
            .tempdir_in(&ingest)
            .map_err(io_err("create ingest directory"))?;
        let mut files = BTreeMap::new();
        let mut tar = tar::Archive::new(decoded);
        for (n, entry) in tar.entries().map_err(io_err("read tar"))?.enumerate() {
            let mut entry = entry.map_err(io_err("read tar"))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = normalise(&String::from_utf8_lossy(&entry.path_bytes()));
            let dest = dir.path().join(n.to_string());
            let mut out = File::create(&dest).map_err(io_err("extract"))?;
            io::copy(&mut entry, &mut out).map_err(io_err("extract"))?;
            files.insert(name, dest);
        }
        Ok(Self {
            archive: archive.to_path_buf(),
            _dir: dir,
            files,
        })
    }

    fn path(&self, member: &str) -> Result<&Path, ImportError> {
        self.files
            .get(&normalise(member))
            .map(PathBuf::as_path)
            .ok_or_else(|| ImportError::Missing {
                archive: self.archive.clone(),
                member: member.to_string(),
            })
    }

    fn read(&self, member: &str) -> Result<Vec<u8>, ImportError> {
        let path = self.path(member)?;
        std::fs::read(path).map_err(|source| ImportError::Io {
            path: self.archive.clone(),
            op: "read member",
            source,
        })
    }

    fn json<T: for<'de> Deserialize<'de>>(&self, member: &str) -> Result<T, ImportError> {
        serde_json::from_slice(&self.read(member)?).map_err(|source| ImportError::Json {
            archive: self.archive.clone(),
            member: member.to_string(),
            source,
        })
    }
}

/// `./a//b` → `a/b`.
fn normalise(name: &str) -> String {
    name.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Imports the archive at `path`; returns the images stored.
pub fn import_archive(
    store: &Store,
    path: &Path,
    name: Option<&Reference>,
    now: SystemTime,
) -> Result<Vec<Image>, ImportError> {
    let _lease = store.lease().map_err(|source| ImportError::Store {
        archive: path.to_path_buf(),
        source,
    })?;
    let members = Members::extract(store, path)?;
    if members.files.contains_key("index.json") {
        import_oci_layout(store, &members, name, now)
    } else if members.files.contains_key("manifest.json") {
        import_docker_archive(store, &members, name, now)
    } else {
        Err(ImportError::Format {
            path: path.to_path_buf(),
        })
    }
}

impl Members {
    fn store_err(&self) -> impl Fn(StoreError) -> ImportError + '_ {
        |source| ImportError::Store {
            archive: self.archive.clone(),
            source,
        }
    }

    fn spec_err(&self) -> impl Fn(SpecError) -> ImportError + '_ {
        |source| ImportError::Spec {
            archive: self.archive.clone(),
            source,
        }
    }

    fn ref_err(&self) -> impl Fn(ReferenceError) -> ImportError + '_ {
        |source| ImportError::Reference {
            archive: self.archive.clone(),
            source,
        }
    }

    /// Copies `blobs/sha256/<hex>` into the store, verified.
    fn ingest_blob(
        &self,
        store: &Store,
        what: &'static str,
        desc: &Descriptor,
    ) -> Result<(), ImportError> {
        let member = format!("blobs/sha256/{}", desc.digest.hex());
        let file = File::open(self.path(&member)?).map_err(|source| ImportError::Io {
            path: self.archive.clone(),
            op: "read member",
            source,
        })?;
        store
            .ingest_blob(what, file, &desc.digest, Some(desc.size))
            .map_err(self.store_err())
    }
}

fn import_oci_layout(
    store: &Store,
    m: &Members,
    name: Option<&Reference>,
    now: SystemTime,
) -> Result<Vec<Image>, ImportError> {
    let index: Index = m.json("index.json")?;
    let single = index.manifests.len() == 1;
    let mut images = Vec::new();
    for entry in &index.manifests {
        let annotations = entry.annotations.clone().unwrap_or_default();
        let from_archive = annotations
            .get(ANNOTATION_CONTAINERD_NAME)
            .or_else(|| {
                annotations
                    .get(ANNOTATION_REF_NAME)
                    .filter(|n| n.contains(['/', ':']))
            })
            .map(|n| Reference::parse(n))
            .transpose()
            .map_err(m.ref_err())?;
        let image_name = match (name.filter(|_| single), from_archive) {
            (Some(n), _) => n.clone(),
            (None, Some(n)) => n,
            (None, None) => match name {
                Some(n) => n.clone(),
                None => {
                    return Err(ImportError::NoName {
                        archive: m.archive.clone(),
                        digest: entry.digest.to_string(),
                    });
                }
            },
        };
        m.ingest_blob(store, "manifest", entry)?;
        let bytes = store.read_blob(&entry.digest).map_err(m.store_err())?;
        let manifest_desc = match parse_manifest(&bytes, &entry.digest, Some(&entry.media_type))
            .map_err(m.spec_err())?
        {
            ManifestDoc::Image(_) => entry.clone(),
            ManifestDoc::Index(idx) => {
                let d = idx
                    .manifest_for_platform(&entry.digest)
                    .map_err(m.spec_err())?
                    .clone();
                m.ingest_blob(store, "image manifest", &d)?;
                d
            }
        };
        let bytes = store
            .read_blob(&manifest_desc.digest)
            .map_err(m.store_err())?;
        let ManifestDoc::Image(manifest) =
            parse_manifest(&bytes, &manifest_desc.digest, None).map_err(m.spec_err())?
        else {
            return Err(m.spec_err()(SpecError::MediaType {
                digest: manifest_desc.digest.to_string(),
                media_type: "nested image index".into(),
            }));
        };
        m.ingest_blob(store, "image config", &manifest.config)?;
        let config = super::spec::ImageConfig::parse(
            &store
                .read_blob(&manifest.config.digest)
                .map_err(m.store_err())?,
            &manifest.config.digest,
        )
        .map_err(m.spec_err())?;
        for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
            Compression::from_media_type(layer).map_err(m.spec_err())?;
            m.ingest_blob(store, "layer", layer)?;
            store
                .unpack_layer(&layer.digest, diff_id)
                .map_err(m.store_err())?;
        }
        images.push(
            store
                .commit_image(&image_name, &entry.digest, now)
                .map_err(m.store_err())?,
        );
    }
    Ok(images)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn import_docker_archive(
    store: &Store,
    m: &Members,
    name: Option<&Reference>,
    now: SystemTime,
) -> Result<Vec<Image>, ImportError> {
    let entries: Vec<DockerArchiveEntry> = m.json("manifest.json")?;
    let single = entries.len() == 1;
    let mut images = Vec::new();
    for entry in entries {
        let config_bytes = m.read(&entry.config)?;
        let config_digest = store
            .write_blob("image config", &config_bytes, None)
            .map_err(m.store_err())?;
        let config =
            super::spec::ImageConfig::parse(&config_bytes, &config_digest).map_err(m.spec_err())?;
        let mut layers = Vec::new();
        for (member, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let path = m.path(member)?;
            let io_err = |source| ImportError::Io {
                path: m.archive.clone(),
                op: "read layer",
                source,
            };
            let mut file = File::open(path).map_err(io_err)?;
            let mut head = [0u8; 4];
            let n = file.read(&mut head).map_err(io_err)?;
            let media_type = match Compression::detect(&head[..n]) {
                Compression::Gzip => MEDIA_TYPE_DOCKER_LAYER_GZIP,
                Compression::None => MEDIA_TYPE_DOCKER_LAYER,
                Compression::Zstd => super::spec::MEDIA_TYPE_OCI_LAYER_ZSTD,
            };
            let (digest, size) =
                super::digest::HashingReader::new(File::open(path).map_err(io_err)?)
                    .finish()
                    .map_err(io_err)?;
            store
                .ingest_blob(
                    "layer",
                    File::open(path).map_err(io_err)?,
                    &digest,
                    Some(size),
                )
                .map_err(m.store_err())?;
            store
                .unpack_layer(&digest, diff_id)
                .map_err(m.store_err())?;
            layers.push(Descriptor {
                media_type: media_type.to_string(),
                digest,
                size,
                platform: None,
                annotations: None,
            });
        }
        if layers.len() != config.rootfs.diff_ids.len() {
            return Err(m.store_err()(StoreError::LayerCount {
                manifest: config_digest,
                layers: layers.len(),
                diff_ids: config.rootfs.diff_ids.len(),
            }));
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_DOCKER_MANIFEST.to_string()),
            config: Descriptor {
                media_type: MEDIA_TYPE_DOCKER_CONFIG.to_string(),
                digest: config_digest.clone(),
                size: config_bytes.len() as u64,
                platform: None,
                annotations: None,
            },
            layers,
            annotations: None,
        };
        let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest serialises");
        let target = store
            .write_blob("image manifest", &manifest_bytes, None)
            .map_err(m.store_err())?;
        let mut names: Vec<Reference> = entry
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| Reference::parse(t))
            .collect::<Result<_, _>>()
            .map_err(m.ref_err())?;
        if let Some(n) = name
            && (single || names.is_empty())
        {
            names = vec![n.clone()];
        }
        if names.is_empty() {
            return Err(ImportError::NoName {
                archive: m.archive.clone(),
                digest: config_digest.to_string(),
            });
        }
        let mut image = None;
        for n in &names {
            image = Some(store.commit_image(n, &target, now).map_err(m.store_err())?);
        }
        images.extend(image);
    }
    Ok(images)
}
