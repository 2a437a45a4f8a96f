//! The image service (upstream: pkg/kubelet/images, plus containerd's content store and
//! its CRI image service). The runtime calls [`manager::ImageManager`]; the CLI's
//! `image` subcommands call the pieces directly.
//!
//! | module | job |
//! | --- | --- |
//! | `reference` | parse and normalise image references as docker does |
//! | `digest` | sha256 digests, hashing reader and writer |
//! | `spec` | OCI / Docker manifests, indexes, image config, media types |
//! | `credentials` | imagePullSecrets (`.dockerconfigjson`) and the docker keyring lookup |
//! | `pull` | registry pulls with oci-client, verified into the store |
//! | `store` | the content-addressed store: blobs, unpacked layers, name index |
//! | `unpack` | layer tars to overlayfs lowerdirs, whiteouts, no escapes |
//! | `policy` | imagePullPolicy, pull backoff, reasons and messages (pure) |
//! | `manager` | `EnsureImageExists`: policy + backoff + pull, with events |
//! | `import` | OCI layout and docker-archive tarballs into the store |
//! | `gc` | image garbage collection by disk thresholds, LRU |

pub mod credentials;
pub mod digest;
pub mod gc;
pub mod import;
pub mod manager;
pub mod policy;
pub mod pull;
pub mod reference;
pub mod spec;
pub mod store;
pub mod unpack;

pub use digest::Digest;
pub use reference::Reference;
pub use store::{DEFAULT_ROOT, Image, Store};
