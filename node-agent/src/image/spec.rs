//! The OCI image-spec and Docker v2 schema 2 documents the image service reads:
//! manifests, indexes (manifest lists), descriptors and the image config, with the media
//! types of both families. Only the fields rekube uses are typed; the stored blobs keep
//! the registry's exact bytes, so nothing is lost.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::digest::Digest;

pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The manifest media types asked for when pulling, image manifests and indexes of both
/// families (the `Accept` header containerd sends).
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
];

/// The platform rekube runs: index entries for any other are skipped.
pub const PLATFORM_OS: &str = "linux";
pub const PLATFORM_ARCHITECTURE: &str = "amd64";

/// Why a document could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid {what} {digest}: {source}")]
    Json {
        what: &'static str,
        digest: String,
        source: serde_json::Error,
    },
    #[error("unsupported manifest {digest}: schemaVersion {version}, only schema 2 is supported")]
    SchemaVersion { digest: String, version: u32 },
    #[error("unsupported manifest media type {media_type:?} for {digest}")]
    MediaType { digest: String, media_type: String },
    #[error("image index {digest} has no manifest for {PLATFORM_OS}/{PLATFORM_ARCHITECTURE}")]
    NoPlatform { digest: String },
    #[error("unsupported layer media type {media_type:?} for layer {digest}")]
    LayerMediaType { digest: String, media_type: String },
}

/// A content descriptor: what a manifest says about a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// An image manifest (OCI or Docker v2 schema 2: same shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An image index (OCI) or manifest list (Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A manifest document of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestDoc {
    Image(Manifest),
    Index(Index),
}

/// Reads a manifest or index. The kind comes from `mediaType` (in the document, or the
/// one the registry sent), else from the shape: an index has `manifests`.
pub fn parse_manifest(
    bytes: &[u8],
    digest: &Digest,
    media_type: Option<&str>,
) -> Result<ManifestDoc, SpecError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let json = |what, source| SpecError::Json {
        what,
        digest: digest.to_string(),
        source,
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| json("manifest", e))?;
    let version = probe.schema_version.unwrap_or(0);
    if version != 2 {
        return Err(SpecError::SchemaVersion {
            digest: digest.to_string(),
            version,
        });
    }
    let media_type = probe
        .media_type
        .as_deref()
        .or(media_type)
        .map(|m| m.split(';').next().unwrap_or(m).trim().to_string());
    let is_index = match media_type.as_deref() {
        Some(MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_MANIFEST_LIST) => true,
        Some(MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST) => false,
        None | Some("application/json" | "application/octet-stream") => probe.manifests.is_some(),
        Some(other) => {
            return Err(SpecError::MediaType {
                digest: digest.to_string(),
                media_type: other.to_string(),
            });
        }
    };
    if is_index {
        Ok(ManifestDoc::Index(
            serde_json::from_slice(bytes).map_err(|e| json("image index", e))?,
        ))
    } else {
        Ok(ManifestDoc::Image(
            serde_json::from_slice(bytes).map_err(|e| json("image manifest", e))?,
        ))
    }
}

impl Index {
    /// The manifest for linux/amd64, as containerd's default platform matcher picks it
    /// (the first match; an entry without a platform is not taken).
    pub fn manifest_for_platform(&self, digest: &Digest) -> Result<&Descriptor, SpecError> {
        self.manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == PLATFORM_OS && p.architecture == PLATFORM_ARCHITECTURE)
            })
            .ok_or_else(|| SpecError::NoPlatform {
                digest: digest.to_string(),
            })
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the layer's media type. Foreign and non-distributable variants unpack the
    /// same way. The unpacker also checks the blob's magic bytes, as containerd does.
    pub fn from_media_type(layer: &Descriptor) -> Result<Self, SpecError> {
        let m = layer.media_type.as_str();
        let base = m
            .strip_prefix("application/vnd.oci.image.layer.nondistributable.v1.tar")
            .map(|rest| format!("{MEDIA_TYPE_OCI_LAYER}{rest}"));
        let m = base.as_deref().unwrap_or(m);
        match m {
            MEDIA_TYPE_OCI_LAYER | MEDIA_TYPE_DOCKER_LAYER => Ok(Self::None),
            MEDIA_TYPE_OCI_LAYER_GZIP
            | MEDIA_TYPE_DOCKER_LAYER_GZIP
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Self::Gzip),
            MEDIA_TYPE_OCI_LAYER_ZSTD => Ok(Self::Zstd),
            other => Err(SpecError::LayerMediaType {
                digest: layer.digest.to_string(),
                media_type: other.to_string(),
            }),
        }
    }

    /// From the first bytes of a blob: gzip `1f 8b`, zstd `28 b5 2f fd`, else a tar.
    pub fn detect(head: &[u8]) -> Self {
        if head.starts_with(&[0x1f, 0x8b]) {
            Self::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Self::Zstd
        } else {
            Self::None
        }
    }
}

/// The image configuration (the `config` object of the OCI/Docker image config JSON):
/// what the runtime combines with the container's command, args, env and workingDir.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub stop_signal: Option<String>,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Labels", default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// The image config blob. Its digest is the image ID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8], digest: &Digest) -> Result<Self, SpecError> {
        serde_json::from_slice(bytes).map_err(|source| SpecError::Json {
            what: "image config",
            digest: digest.to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    #[test]
    fn manifest_kinds() {
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MEDIA_TYPE_DOCKER_MANIFEST}","config":{{"mediaType":"{MEDIA_TYPE_DOCKER_CONFIG}","digest":"{}","size":3}},"layers":[]}}"#,
            d(1)
        );
        assert!(matches!(
            parse_manifest(manifest.as_bytes(), &d(0), None).unwrap(),
            ManifestDoc::Image(_)
        ));
        // An OCI index without mediaType is recognised by its shape.
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","digest":"{}","size":3,"platform":{{"os":"linux","architecture":"arm64"}}}},{{"mediaType":"{MEDIA_TYPE_OCI_MANIFEST}","digest":"{}","size":3,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            d(2),
            d(3)
        );
        let ManifestDoc::Index(index) = parse_manifest(index.as_bytes(), &d(0), None).unwrap()
        else {
            panic!("not an index")
        };
        assert_eq!(index.manifest_for_platform(&d(0)).unwrap().digest, d(3));
        let v1 = br#"{"schemaVersion":1,"name":"x"}"#;
        assert!(matches!(
            parse_manifest(v1, &d(0), None),
            Err(SpecError::SchemaVersion { version: 1, .. })
        ));
    }

    #[test]
    fn compression() {
        let layer = |m: &str| Descriptor {
            media_type: m.into(),
            digest: d(1),
            size: 1,
            platform: None,
            annotations: None,
        };
        for (m, c) in [
            (MEDIA_TYPE_OCI_LAYER, Compression::None),
            (MEDIA_TYPE_DOCKER_LAYER_GZIP, Compression::Gzip),
            (MEDIA_TYPE_OCI_LAYER_GZIP, Compression::Gzip),
            (MEDIA_TYPE_OCI_LAYER_ZSTD, Compression::Zstd),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Compression::Gzip,
            ),
        ] {
            assert_eq!(Compression::from_media_type(&layer(m)).unwrap(), c, "{m}");
        }
        assert!(
            Compression::from_media_type(&layer("application/vnd.wasm.content.layer.v1+wasm"))
                .is_err()
        );
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"bin/"), Compression::None);
    }
}
