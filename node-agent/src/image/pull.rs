//! Pulling from OCI registries with `oci-client` (the distribution protocol, token and
//! basic auth), into the [`Store`]:
//!
//! 1. the manifest by tag or digest, asking for OCI and Docker v2 manifests and
//!    indexes / manifest lists; an index is resolved for linux/amd64;
//! 2. the config, then each layer blob not already stored (gzip, zstd or plain),
//!    streamed to the store's ingest directory, hashed on the way, committed only when
//!    its sha256 and size match the descriptor (a manifest fetched by digest must match
//!    that digest too);
//! 3. each layer unpacked (off the async runtime) and checked against the config's
//!    diff-id, then the name committed.
//!
//! Registries on loopback (`localhost`, `127.0.0.0/8`, `::1`) are spoken to over plain
//! HTTP, as docker treats them as insecure registries; any other over HTTPS (rustls with
//! the ring provider, the platform's roots).
//!
//! Credentials are tried as the kubelet tries them: the matching ones, most specific
//! first, until one works; anonymously when none match. A 401 is reported with the
//! registry's own error message.

use std::sync::Once;
use std::time::SystemTime;

use futures_util::StreamExt;
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::errors::{DigestError as OciDigestError, OciDistributionError};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use tracing::{debug, info};

use super::credentials::{RegistryCredential, lookup};
use super::digest::Digest;
use super::reference::Reference;
use super::spec::{
    Compression, Descriptor, ImageConfig, MANIFEST_MEDIA_TYPES, ManifestDoc, SpecError,
    parse_manifest,
};
use super::store::{Image, Store, StoreError};

/// Why a pull failed. Each message starts as containerd's does, so the ErrImagePull
/// message a pod shows reads like upstream's.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "failed to pull and unpack image {image:?}: failed to resolve reference {image:?}: pull access denied, repository does not exist or may require authorization: server message: {message}"
    )]
    Unauthorized { image: String, message: String },
    #[error(
        "failed to pull and unpack image {image:?}: failed to resolve reference {image:?}: {source}"
    )]
    Resolve {
        image: String,
        source: OciDistributionError,
    },
    #[error("failed to pull and unpack image {image:?}: failed to fetch {what} {digest}: {source}")]
    Fetch {
        image: String,
        what: &'static str,
        digest: Digest,
        source: OciDistributionError,
    },
    #[error("failed to pull and unpack image {image:?}: {source}")]
    Spec { image: String, source: SpecError },
    #[error("failed to pull and unpack image {image:?}: {source}")]
    Store { image: String, source: StoreError },
    #[error("failed to pull and unpack image {image:?}: unpacking task failed: {message}")]
    Task { image: String, message: String },
}

impl PullError {
    /// A digest or size check failed: the registry served content that is not what the
    /// manifest (or the reference) names.
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            Self::Store {
                source: StoreError::DigestMismatch { .. }
                    | StoreError::SizeMismatch { .. }
                    | StoreError::DiffIdMismatch { .. },
                ..
            }
        )
    }
}

/// Installs rustls' ring provider once (reqwest is built without a default provider, so
/// aws-lc-rs and its C build stay out).
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn client_for(image: &Reference) -> Client {
    install_crypto_provider();
    let protocol = if image.is_loopback_registry() {
        ClientProtocol::HttpsExcept(vec![image.domain().to_string()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        ..Default::default()
    })
}

fn oci_reference(image: &Reference) -> oci_client::Reference {
    match (image.digest(), image.tag()) {
        (Some(d), _) => oci_client::Reference::with_digest(
            image.domain().to_string(),
            image.path().to_string(),
            d.to_string(),
        ),
        (None, tag) => oci_client::Reference::with_tag(
            image.domain().to_string(),
            image.path().to_string(),
            tag.unwrap_or("latest").to_string(),
        ),
    }
}

/// Pulls `image` into `store` with the first of `credentials` that works (anonymously
/// when none match its registry); returns the stored image.
pub async fn pull_image(
    store: &Store,
    image: &Reference,
    credentials: &[RegistryCredential],
) -> Result<Image, PullError> {
    let auths: Vec<RegistryAuth> = {
        let matching = lookup(credentials, image);
        if matching.is_empty() {
            vec![RegistryAuth::Anonymous]
        } else {
            matching
                .into_iter()
                .map(|c| RegistryAuth::Basic(c.username.clone(), c.password.clone()))
                .collect()
        }
    };
    let mut last = None;
    for auth in auths {
        match pull_with(store, image, &auth).await {
            Ok(img) => return Ok(img),
            Err(e) => {
                debug!(image = %image, error = %e, "pull attempt failed");
                last = Some(e);
            }
        }
    }
    Err(last.expect("at least one attempt"))
}

async fn pull_with(
    store: &Store,
    image: &Reference,
    auth: &RegistryAuth,
) -> Result<Image, PullError> {
    let name = image.to_string();
    let store_err = |source| PullError::Store {
        image: name.clone(),
        source,
    };
    let spec_err = |source| PullError::Spec {
        image: name.clone(),
        source,
    };
    let client = client_for(image);
    let oref = oci_reference(image);
    let _lease = store.lease().map_err(store_err)?;

    // 1. The manifest (or index), verified.
    let (bytes, target) = fetch_manifest(&client, &oref, auth, image, image.digest(), None).await?;
    store
        .write_blob("image manifest", &bytes, Some(&target))
        .map_err(store_err)?;
    let (manifest_bytes, manifest_digest) =
        match parse_manifest(&bytes, &target, None).map_err(spec_err)? {
            ManifestDoc::Image(_) => (bytes, target.clone()),
            ManifestDoc::Index(index) => {
                let entry = index.manifest_for_platform(&target).map_err(spec_err)?;
                let digest = entry.digest.clone();
                let eref = oref.clone_with_digest(digest.to_string());
                let (b, d) =
                    fetch_manifest(&client, &eref, auth, image, Some(&digest), Some(entry.size))
                        .await?;
                store
                    .write_blob("image manifest", &b, Some(&d))
                    .map_err(store_err)?;
                (b, d)
            }
        };
    let ManifestDoc::Image(manifest) =
        parse_manifest(&manifest_bytes, &manifest_digest, None).map_err(spec_err)?
    else {
        return Err(spec_err(SpecError::MediaType {
            digest: manifest_digest.to_string(),
            media_type: "nested image index".into(),
        }));
    };

    // 2. The config.
    fetch_blob(
        &client,
        &oref,
        store,
        &manifest.config,
        "image config",
        &name,
    )
    .await?;
    let config = ImageConfig::parse(
        &store
            .read_blob(&manifest.config.digest)
            .map_err(store_err)?,
        &manifest.config.digest,
    )
    .map_err(spec_err)?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(store_err(StoreError::LayerCount {
            manifest: manifest_digest,
            layers: manifest.layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        }));
    }

    // 3. Layers: fetched when missing, unpacked, checked against the diff-ids.
    for (layer, diff_id) in manifest.layers.iter().zip(&config.rootfs.diff_ids) {
        Compression::from_media_type(layer).map_err(spec_err)?;
        if store.has_layer(diff_id) && store.has_blob(&layer.digest) {
            continue;
        }
        fetch_blob(&client, &oref, store, layer, "layer", &name).await?;
        let (s, blob, diff) = (store.clone(), layer.digest.clone(), diff_id.clone());
        tokio::task::spawn_blocking(move || s.unpack_layer(&blob, &diff))
            .await
            .map_err(|e| PullError::Task {
                image: name.clone(),
                message: e.to_string(),
            })?
            .map_err(store_err)?;
    }

    let img = store
        .commit_image(image, &target, SystemTime::now())
        .map_err(store_err)?;
    info!(image = %image, id = %img.id, "pulled");
    Ok(img)
}

/// Fetches a manifest and checks its digest: against `expected` (the reference's digest,
/// or the index entry's) when given, and against what the registry said it is.
async fn fetch_manifest(
    client: &Client,
    oref: &oci_client::Reference,
    auth: &RegistryAuth,
    image: &Reference,
    expected: Option<&Digest>,
    size: Option<u64>,
) -> Result<(Vec<u8>, Digest), PullError> {
    let name = image.to_string();
    let (bytes, said) = match client
        .pull_manifest_raw(oref, auth, MANIFEST_MEDIA_TYPES)
        .await
    {
        Ok(ok) => ok,
        Err(OciDistributionError::UnauthorizedError { url }) => {
            return Err(PullError::Unauthorized {
                image: name,
                message: registry_message(&url, auth).await,
            });
        }
        Err(OciDistributionError::DigestError(OciDigestError::VerificationError {
            expected,
            actual,
        })) => {
            return Err(mismatch(&name, "image manifest", &expected, &actual));
        }
        Err(source) => {
            return Err(PullError::Resolve {
                image: name,
                source,
            });
        }
    };
    let actual = Digest::of(&bytes);
    let expected = match expected {
        Some(d) => d.clone(),
        None => said.parse::<Digest>().unwrap_or_else(|_| actual.clone()),
    };
    if actual != expected {
        return Err(PullError::Store {
            image: name,
            source: StoreError::DigestMismatch {
                what: "image manifest",
                expected,
                actual,
            },
        });
    }
    if let Some(size) = size
        && size != bytes.len() as u64
    {
        return Err(PullError::Store {
            image: name,
            source: StoreError::SizeMismatch {
                what: "image manifest",
                digest: expected,
                expected: size,
                actual: bytes.len() as u64,
            },
        });
    }
    Ok((bytes.to_vec(), actual))
}

fn mismatch(image: &str, what: &'static str, expected: &str, actual: &str) -> PullError {
    match (expected.parse::<Digest>(), actual.parse::<Digest>()) {
        (Ok(expected), Ok(actual)) => PullError::Store {
            image: image.to_string(),
            source: StoreError::DigestMismatch {
                what,
                expected,
                actual,
            },
        },
        _ => PullError::Resolve {
            image: image.to_string(),
            source: OciDistributionError::GenericError(Some(format!(
                "{what} digest {actual} does not match {expected}"
            ))),
        },
    }
}

/// Streams a blob into the store unless it is there; verified by the store on commit.
async fn fetch_blob(
    client: &Client,
    oref: &oci_client::Reference,
    store: &Store,
    desc: &Descriptor,
    what: &'static str,
    image: &str,
) -> Result<(), PullError> {
    if store.has_blob(&desc.digest) {
        return Ok(());
    }
    let store_err = |source| PullError::Store {
        image: image.to_string(),
        source,
    };
    let fetch_err = |source| PullError::Fetch {
        image: image.to_string(),
        what,
        digest: desc.digest.clone(),
        source,
    };
    let od = OciDescriptor {
        media_type: desc.media_type.clone(),
        digest: desc.digest.to_string(),
        size: desc.size as i64,
        ..Default::default()
    };
    let mut stream = client
        .pull_blob_stream(oref, &od)
        .await
        .map_err(fetch_err)?;
    let mut ingest = store.begin_blob().map_err(store_err)?;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                ingest.write(&bytes).map_err(store_err)?;
                if ingest.len() > desc.size {
                    // More than the manifest promised: stop before it fills the disk.
                    return Err(store_err(StoreError::SizeMismatch {
                        what,
                        digest: desc.digest.clone(),
                        expected: desc.size,
                        actual: ingest.len(),
                    }));
                }
            }
            // oci-client's own digest check fires after the last byte: ours, on commit,
            // reports it with the actual digest.
            Err(e) if is_digest_error(&e) => break,
            Err(e) => return Err(fetch_err(OciDistributionError::IoError(e))),
        }
    }
    store
        .commit_blob(ingest, what, &desc.digest, Some(desc.size))
        .map_err(store_err)
}

fn is_digest_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<OciDigestError>().is_some())
}

/// The registry's own words for a 401 (`unauthorized: authentication required`), asked
/// again with the same credentials since oci-client keeps only the URL.
async fn registry_message(url: &str, auth: &RegistryAuth) -> String {
    install_crypto_provider();
    let fallback = "401 Unauthorized".to_string();
    let Ok(client) = reqwest::Client::builder().build() else {
        return fallback;
    };
    let mut req = client
        .get(url)
        .header(reqwest::header::ACCEPT, MANIFEST_MEDIA_TYPES.join(", "));
    if let RegistryAuth::Basic(user, pass) = auth {
        req = req.basic_auth(user, Some(pass));
    }
    let Ok(resp) = req.send().await else {
        return fallback;
    };
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<RegistryError>,
    }
    #[derive(serde::Deserialize)]
    struct RegistryError {
        code: String,
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<Envelope>(&body) {
        Ok(env) if !env.errors.is_empty() => env
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code.to_lowercase(), e.message))
            .collect::<Vec<_>>()
            .join("; "),
        _ if !body.is_empty() => format!("{status}: {}", String::from_utf8_lossy(&body).trim()),
        _ => status.to_string(),
    }
}
