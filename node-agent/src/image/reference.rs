//! Image references, parsed and normalised as docker and containerd do
//! (github.com/distribution/reference: `ParseNormalizedNamed`, `ParseDockerRef`).
//!
//! `busybox` → `docker.io/library/busybox:latest`; `localhost:5000/x:tag` keeps its
//! registry; `name@sha256:…` is pinned by digest (a tag next to a digest is dropped, as
//! `ParseDockerRef` does, since the digest decides what is pulled). The grammar:
//!
//! ```text
//! reference       := name [ ":" tag ] [ "@" digest ]
//! name            := [domain '/'] path-component ['/' path-component]*
//! domain          := host [':' port-number]        host: dns name, IPv4, or [IPv6]
//! path-component  := [a-z0-9]+ ((\.|_|__|-+) [a-z0-9]+)*
//! tag             := [\w][\w.-]{0,127}
//! digest          := algorithm ":" hex             (only sha256 is pulled)
//! ```
//!
//! A first component counts as a registry only when it has a `.` or a `:`, or is
//! `localhost`, or has an uppercase letter; otherwise the image is on Docker Hub, and a
//! single-component Hub name is an official image under `library/`.

use std::fmt;
use std::str::FromStr;

use super::digest::{Digest, DigestError};

/// Docker Hub's canonical domain.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy name of Docker Hub, rewritten to [`DEFAULT_DOMAIN`].
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// Where Docker Hub's official images live.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag given to a reference with neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// distribution/reference's `NameTotalLengthMax`.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Why an image reference was refused; the causes are distribution/reference's texts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error(
        "couldn't parse image name {reference:?}: invalid reference format: repository name ({name}) must be lowercase"
    )]
    NameNotLowercase { reference: String, name: String },
    #[error(
        "couldn't parse image name {0:?}: repository name must not be more than 255 characters"
    )]
    NameTooLong(String),
    #[error(
        "couldn't parse image name {0:?}: invalid repository name, cannot specify 64-byte hexadecimal strings"
    )]
    Identifier(String),
    #[error("couldn't parse image name {0:?}: invalid reference format")]
    InvalidFormat(String),
    #[error("couldn't parse image name {reference:?}: {source}")]
    InvalidDigest {
        reference: String,
        source: DigestError,
    },
}

/// A parsed image reference: registry domain, repository path, optional tag and digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// `ParseNormalizedNamed`: the reference as written, fully qualified (Docker Hub
    /// domain and `library/` added), tag and digest kept as given, nothing defaulted.
    pub fn parse_normalized_named(s: &str) -> Result<Self, ReferenceError> {
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReferenceError::Identifier(s.to_string()));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote_name = match remainder.find(':') {
            Some(i) => &remainder[..i],
            None => &remainder,
        };
        if remote_name.to_lowercase() != remote_name {
            return Err(ReferenceError::NameNotLowercase {
                reference: s.to_string(),
                name: remote_name.to_string(),
            });
        }
        parse_qualified(s, &domain, &remainder)
    }

    /// `ParseDockerRef`: the name an image is stored and pulled under. Adds `:latest`
    /// when there is neither tag nor digest, and drops the tag when there is a digest.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let mut r = Self::parse_normalized_named(s)?;
        if r.digest.is_some() {
            r.tag = None;
        } else if r.tag.is_none() {
            r.tag = Some(DEFAULT_TAG.to_string());
        }
        Ok(r)
    }

    /// The registry domain, e.g. `docker.io` or `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path inside the registry, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `domain/path`, e.g. `docker.io/library/busybox`: the repository to pull from and
    /// the key credentials are looked up by.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The same repository pinned to `digest` (a repo digest, as `crictl images
    /// --digests` and containerStatuses.imageID show).
    pub fn with_digest(&self, digest: Digest) -> Self {
        Self {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// docker's `FamiliarString`: `busybox:latest` for `docker.io/library/busybox:latest`.
    pub fn familiar(&self) -> String {
        let mut name = if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        };
        if let Some(tag) = &self.tag {
            name.push(':');
            name.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            name.push('@');
            name.push_str(&digest.to_string());
        }
        name
    }

    /// The host part of the domain without the port (`localhost`, `127.0.0.1`, `::1`).
    pub fn host(&self) -> &str {
        let d = self.domain.as_str();
        if let Some(rest) = d.strip_prefix('[') {
            return rest.split(']').next().unwrap_or(rest);
        }
        d.split(':').next().unwrap_or(d)
    }

    /// Whether the registry is on this machine and so spoken to over plain HTTP, as
    /// docker treats `localhost` and loopback registries as insecure registries.
    pub fn is_loopback_registry(&self) -> bool {
        let host = self.host();
        host == "localhost"
            || host == "::1"
            || host
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

/// distribution/reference's `splitDockerDomain`.
fn split_docker_domain(name: &str) -> (String, String) {
    let (mut domain, mut remainder) = match name.find('/') {
        Some(i) => {
            let first = &name[..i];
            if !first.contains(['.', ':']) && first != "localhost" && first.to_lowercase() == first
            {
                (DEFAULT_DOMAIN.to_string(), name.to_string())
            } else {
                (first.to_string(), name[i + 1..].to_string())
            }
        }
        None => (DEFAULT_DOMAIN.to_string(), name.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

/// Checks `remainder` (`path[:tag][@digest]`) and `domain` against the grammar.
fn parse_qualified(
    original: &str,
    domain: &str,
    remainder: &str,
) -> Result<Reference, ReferenceError> {
    let invalid = || ReferenceError::InvalidFormat(original.to_string());
    let (named, digest) = match remainder.split_once('@') {
        Some((named, digest)) => (named, Some(digest)),
        None => (remainder, None),
    };
    let digest = match digest {
        Some(d) => {
            if !is_digest_syntax(d) {
                return Err(invalid());
            }
            Some(
                d.parse::<Digest>()
                    .map_err(|source| ReferenceError::InvalidDigest {
                        reference: original.to_string(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    // The domain has been split off, so a ':' in the rest can only start a tag.
    let (path, tag) = match named.split_once(':') {
        Some((path, tag)) => (path, Some(tag)),
        None => (named, None),
    };
    if let Some(tag) = tag
        && !is_tag(tag)
    {
        return Err(invalid());
    }
    if !is_domain(domain) || !path.split('/').all(is_path_component) {
        return Err(invalid());
    }
    if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(ReferenceError::NameTooLong(original.to_string()));
    }
    Ok(Reference {
        domain: domain.to_string(),
        path: path.to_string(),
        tag: tag.map(str::to_string),
        digest,
    })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        let sep = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let separator = &s[sep..i];
        let ok = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|c| c == b'-');
        if !ok || i == b.len() {
            return false;
        }
    }
}

/// `host[:port]` with host a dns name, an IPv4 address or a bracketed IPv6 address.
fn is_domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return false;
        };
        if ip.is_empty() || !ip.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        match after {
            "" => return true,
            p => match p.strip_prefix(':') {
                Some(port) => ("", Some(port)),
                None => return false,
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    if host.is_empty() && s.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

/// `[\w][\w.-]{0,127}`
fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `[A-Za-z][A-Za-z0-9]*([+._-][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}`
fn is_digest_syntax(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['+', '.', '_', '-']).all(|c| {
        let b = c.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    alg_ok && hex.len() >= 32 && hex.bytes().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn normalised_as_docker_does() {
        // (input, ParseDockerRef string, familiar string)
        let cases: &[(&str, &str, &str)] = &[
            (
                "busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "busybox:1.36",
                "docker.io/library/busybox:1.36",
                "busybox:1.36",
            ),
            (
                "library/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "docker.io/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "docker.io/library/busybox:latest",
                "docker.io/library/busybox:latest",
                "busybox:latest",
            ),
            (
                "bitnami/nginx:1.25",
                "docker.io/bitnami/nginx:1.25",
                "bitnami/nginx:1.25",
            ),
            ("a/b/c", "docker.io/a/b/c:latest", "a/b/c:latest"),
            ("localhost/x", "localhost/x:latest", "localhost/x:latest"),
            (
                "localhost:5000/x:tag",
                "localhost:5000/x:tag",
                "localhost:5000/x:tag",
            ),
            (
                "127.0.0.1:5000/team/app:v1.2-rc_3",
                "127.0.0.1:5000/team/app:v1.2-rc_3",
                "127.0.0.1:5000/team/app:v1.2-rc_3",
            ),
            ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000/x:latest"),
            (
                "registry.k8s.io/pause:3.10",
                "registry.k8s.io/pause:3.10",
                "registry.k8s.io/pause:3.10",
            ),
            (
                "Registry.Example.COM/app",
                "Registry.Example.COM/app:latest",
                "Registry.Example.COM/app:latest",
            ),
            ("FOO/bar", "FOO/bar:latest", "FOO/bar:latest"),
            (
                "quay.io/a-b/c__d.e--f",
                "quay.io/a-b/c__d.e--f:latest",
                "quay.io/a-b/c__d.e--f:latest",
            ),
        ];
        for (input, full, familiar) in cases {
            let r = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), *full, "{input}");
            assert_eq!(r.familiar(), *familiar, "{input}");
            // Normalising is idempotent.
            assert_eq!(Reference::parse(full).unwrap(), r, "{input}");
        }
    }

    #[test]
    fn digests() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest().unwrap().to_string(), D);
        // ParseDockerRef drops the tag next to a digest; ParseNormalizedNamed keeps it.
        let both = format!("localhost:5000/busybox:1.36@{D}");
        assert_eq!(
            Reference::parse(&both).unwrap().to_string(),
            format!("localhost:5000/busybox@{D}")
        );
        assert_eq!(
            Reference::parse_normalized_named(&both)
                .unwrap()
                .to_string(),
            both
        );
        let pinned = Reference::parse("localhost:5000/busybox:1.36")
            .unwrap()
            .with_digest(D.parse().unwrap());
        assert_eq!(pinned.to_string(), format!("localhost:5000/busybox@{D}"));
        // Unnormalised input keeps nothing but what was written.
        let named = Reference::parse_normalized_named("busybox").unwrap();
        assert_eq!((named.tag(), named.digest()), (None, None));
    }

    #[test]
    fn parts() {
        let r = Reference::parse("localhost:5000/team/app:v1").unwrap();
        assert_eq!(r.domain(), "localhost:5000");
        assert_eq!(r.path(), "team/app");
        assert_eq!(r.tag(), Some("v1"));
        assert_eq!(r.name(), "localhost:5000/team/app");
        assert_eq!(r.host(), "localhost");
        assert!(r.is_loopback_registry());
        for (input, host, loopback) in [
            ("127.0.0.1:5000/x", "127.0.0.1", true),
            ("127.0.0.2/x", "127.0.0.2", true),
            ("[::1]:5000/x", "::1", true),
            ("localhost/x", "localhost", true),
            ("busybox", "docker.io", false),
            ("10.0.0.1:5000/x", "10.0.0.1", false),
            ("localhost.example.com/x", "localhost.example.com", false),
        ] {
            let r = Reference::parse(input).unwrap();
            assert_eq!(
                (r.host(), r.is_loopback_registry()),
                (host, loopback),
                "{input}"
            );
        }
    }

    #[test]
    fn refused() {
        let hex64 = &D["sha256:".len()..];
        let long = format!("a/{}", "b".repeat(260));
        let cases: Vec<(String, ReferenceError)> = vec![
            ("".into(), ReferenceError::InvalidFormat("".into())),
            (hex64.into(), ReferenceError::Identifier(hex64.into())),
            (
                "Busybox".into(),
                ReferenceError::NameNotLowercase {
                    reference: "Busybox".into(),
                    name: "library/Busybox".into(),
                },
            ),
            (
                "docker.io/Library/busybox".into(),
                ReferenceError::NameNotLowercase {
                    reference: "docker.io/Library/busybox".into(),
                    name: "Library/busybox".into(),
                },
            ),
            (
                "localhost:5000/".into(),
                ReferenceError::InvalidFormat("localhost:5000/".into()),
            ),
            (
                "busybox:".into(),
                ReferenceError::InvalidFormat("busybox:".into()),
            ),
            (
                "busybox:-bad".into(),
                ReferenceError::InvalidFormat("busybox:-bad".into()),
            ),
            (
                format!("busybox:{}", "t".repeat(129)),
                ReferenceError::InvalidFormat(format!("busybox:{}", "t".repeat(129))),
            ),
            (
                "busybox@sha256:abc".into(),
                ReferenceError::InvalidFormat("busybox@sha256:abc".into()),
            ),
            ("a..b".into(), ReferenceError::InvalidFormat("a..b".into())),
            (
                "a/../b".into(),
                ReferenceError::InvalidFormat("a/../b".into()),
            ),
            ("a//b".into(), ReferenceError::InvalidFormat("a//b".into())),
            ("-a".into(), ReferenceError::InvalidFormat("-a".into())),
            ("a-".into(), ReferenceError::InvalidFormat("a-".into())),
            (
                "a___b".into(),
                ReferenceError::InvalidFormat("a___b".into()),
            ),
            ("a b".into(), ReferenceError::InvalidFormat("a b".into())),
            (
                "localhost:port/x".into(),
                ReferenceError::InvalidFormat("localhost:port/x".into()),
            ),
            (
                "-bad.io/x".into(),
                ReferenceError::InvalidFormat("-bad.io/x".into()),
            ),
            (long.clone(), ReferenceError::NameTooLong(long.clone())),
        ];
        for (input, want) in cases {
            assert_eq!(Reference::parse(&input).unwrap_err(), want, "{input}");
        }
        let sha512 = format!("busybox@sha512:{}", "a".repeat(128));
        assert!(matches!(
            Reference::parse(&sha512).unwrap_err(),
            ReferenceError::InvalidDigest {
                source: DigestError::Algorithm { .. },
                ..
            }
        ));
        assert_eq!(
            Reference::parse("Busybox").unwrap_err().to_string(),
            "couldn't parse image name \"Busybox\": invalid reference format: repository name (library/Busybox) must be lowercase"
        );
    }
}
