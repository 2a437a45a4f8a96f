//! Registry credentials from imagePullSecrets, as upstream's pkg/credentialprovider
//! reads them: a `kubernetes.io/dockerconfigjson` Secret (`.dockerconfigjson`:
//! `{"auths": {...}}`) or a legacy `kubernetes.io/dockercfg` one (`.dockercfg`: the
//! auths map itself); each entry has `username`/`password` or `auth` =
//! base64(`username:password`), which wins when both are set.
//!
//! Keys are normalised as `BasicDockerKeyring.Add` does (scheme dropped, `/v1/` and `/v2/`
//! paths mean the host), and [`lookup`] matches them as `Lookup` does: host parts may be
//! globs (`*.example.com`), ports must be equal, the key's path must prefix the
//! repository's; the most specific keys come first, and Docker Hub images fall back to an
//! `index.docker.io` entry.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

use super::reference::Reference;

/// Secret data keys and the Docker Hub credential host.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
pub const DOCKER_CONFIG_KEY: &str = ".dockercfg";
const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

/// Why a pull secret could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("pull secret has neither {DOCKER_CONFIG_JSON_KEY} nor {DOCKER_CONFIG_KEY}")]
    NoDockerConfig,
    #[error("pull secret {key}: invalid json: {message}")]
    Json { key: &'static str, message: String },
    #[error(
        "pull secret entry {registry:?}: unable to parse auth field, must be formatted as base64(username:password)"
    )]
    Auth { registry: String },
}

/// One (registry, username, password) triple.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    /// The normalised key: `host[:port][/path]`.
    pub registry: String,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredential")
            .field("registry", &self.registry)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, DockerConfigEntry>,
}

#[derive(Deserialize, Default)]
struct DockerConfigEntry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    auth: String,
}

/// Reads a pull secret's `data` (values already base64-decoded, as in a Secret object)
/// into credentials, one per registry entry, keys normalised.
pub fn parse_pull_secret(
    data: &BTreeMap<String, Vec<u8>>,
) -> Result<Vec<RegistryCredential>, CredentialError> {
    let auths: BTreeMap<String, DockerConfigEntry> =
        if let Some(json) = data.get(DOCKER_CONFIG_JSON_KEY) {
            serde_json::from_slice::<DockerConfigJson>(json)
                .map_err(|e| CredentialError::Json {
                    key: DOCKER_CONFIG_JSON_KEY,
                    message: e.to_string(),
                })?
                .auths
        } else if let Some(json) = data.get(DOCKER_CONFIG_KEY) {
            serde_json::from_slice(json).map_err(|e| CredentialError::Json {
                key: DOCKER_CONFIG_KEY,
                message: e.to_string(),
            })?
        } else {
            return Err(CredentialError::NoDockerConfig);
        };
    let mut out = Vec::new();
    for (registry, entry) in auths {
        let (username, password) = if entry.auth.is_empty() {
            (entry.username, entry.password)
        } else {
            decode_auth(&entry.auth).ok_or_else(|| CredentialError::Auth {
                registry: registry.clone(),
            })?
        };
        let Some(key) = normalise_key(&registry) else {
            // Upstream logs and ignores an entry it cannot parse as a URL.
            continue;
        };
        out.push(RegistryCredential {
            registry: key,
            username,
            password,
        });
    }
    Ok(out)
}

fn decode_auth(auth: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (user, pass) = s.split_once(':')?;
    Some((user.to_string(), pass.trim_matches('\0').to_string()))
}

/// `https://host/v1/` → `host`; `host/ns` → `host/ns`.
fn normalise_key(loc: &str) -> Option<String> {
    let rest = loc
        .strip_prefix("https://")
        .or_else(|| loc.strip_prefix("http://"))
        .unwrap_or(loc);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    let path = if path.starts_with("/v2/") || path.starts_with("/v1/") {
        &path[3..]
    } else {
        path
    };
    Some(if path.is_empty() || path == "/" {
        host.to_string()
    } else {
        format!("{host}{path}")
    })
}

/// The credentials to try for `image`, most specific first (empty: pull anonymously).
pub fn lookup<'a>(
    creds: &'a [RegistryCredential],
    image: &Reference,
) -> Vec<&'a RegistryCredential> {
    let target = image.name();
    let mut keys: Vec<&str> = creds.iter().map(|c| c.registry.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    keys.reverse();
    let mut out = Vec::new();
    for key in keys {
        if urls_match(key, &target) {
            out.extend(creds.iter().filter(|c| c.registry == key));
        }
    }
    if out.is_empty() && is_default_registry_match(&target) {
        out.extend(creds.iter().filter(|c| c.registry == DEFAULT_REGISTRY_HOST));
    }
    out
}

fn split_url(s: &str) -> (Vec<&str>, &str, &str) {
    let (hostport, path) = match s.find('/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let (host, port) = match hostport.rfind(':') {
        Some(i) if !hostport[i..].contains(']') => (&hostport[..i], &hostport[i + 1..]),
        _ => (hostport, ""),
    };
    (host.split('.').collect(), port, path)
}

/// upstream's `URLsMatch`.
fn urls_match(glob: &str, target: &str) -> bool {
    let (gparts, gport, gpath) = split_url(glob);
    let (tparts, tport, tpath) = split_url(target);
    gport == tport
        && gparts.len() == tparts.len()
        && tpath.starts_with(gpath)
        && gparts
            .iter()
            .zip(&tparts)
            .all(|(g, t)| glob_match(g.as_bytes(), t.as_bytes()))
}

/// `filepath.Match` for one host part: `*` and `?`.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&p[1..], s) || (!s.is_empty() && glob_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

fn is_default_registry_match(image: &str) -> bool {
    let mut parts = image.splitn(2, '/');
    let first = parts.next().unwrap_or("");
    if first.is_empty() {
        return false;
    }
    if parts.next().is_none() {
        return true;
    }
    first == "docker.io" || first == DEFAULT_REGISTRY_HOST || !first.contains(['.', ':'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(key: &str, json: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([(key.to_string(), json.as_bytes().to_vec())])
    }

    fn cred(registry: &str, username: &str, password: &str) -> RegistryCredential {
        RegistryCredential {
            registry: registry.into(),
            username: username.into(),
            password: password.into(),
        }
    }

    #[test]
    fn parses_dockerconfigjson_and_dockercfg() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cr:et");
        let json = format!(
            r#"{{"auths":{{
                "localhost:5000":{{"username":"bob","password":"pw"}},
                "https://index.docker.io/v1/":{{"auth":"{auth}","username":"ignored"}},
                "http://reg.example.com/v2/":{{"username":"u","password":"p"}},
                "quay.io/team":{{"username":"t","password":"q"}}
            }}}}"#
        );
        let got = parse_pull_secret(&secret(DOCKER_CONFIG_JSON_KEY, &json)).unwrap();
        assert_eq!(
            got,
            vec![
                cred("reg.example.com", "u", "p"),
                cred("index.docker.io", "alice", "s3cr:et"),
                cred("localhost:5000", "bob", "pw"),
                cred("quay.io/team", "t", "q"),
            ]
        );
        let legacy = parse_pull_secret(&secret(
            DOCKER_CONFIG_KEY,
            r#"{"r.io":{"username":"a","password":"b"}}"#,
        ))
        .unwrap();
        assert_eq!(legacy, vec![cred("r.io", "a", "b")]);
        assert_eq!(
            parse_pull_secret(&BTreeMap::new()),
            Err(CredentialError::NoDockerConfig)
        );
        assert!(matches!(
            parse_pull_secret(&secret(
                DOCKER_CONFIG_JSON_KEY,
                r#"{"auths":{"r.io":{"auth":"bm9jb2xvbg=="}}}"#
            )),
            Err(CredentialError::Auth { .. })
        ));
        assert!(matches!(
            parse_pull_secret(&secret(DOCKER_CONFIG_JSON_KEY, "{")),
            Err(CredentialError::Json { .. })
        ));
    }

    #[test]
    fn lookup_as_the_docker_keyring() {
        let creds = vec![
            cred("localhost:5000", "local", ""),
            cred("*.example.com", "wild", ""),
            cred("reg.example.com/team", "team", ""),
            cred("reg.example.com", "host", ""),
            cred("index.docker.io", "hub", ""),
        ];
        let users = |image: &str| -> Vec<String> {
            lookup(&creds, &Reference::parse(image).unwrap())
                .into_iter()
                .map(|c| c.username.clone())
                .collect()
        };
        assert_eq!(users("localhost:5000/busybox"), vec!["local"]);
        assert_eq!(users("localhost:5001/busybox"), Vec::<String>::new());
        // Upstream's isDefaultRegistryMatch: a first component without '.' or ':'
        // counts as Docker Hub.
        assert_eq!(users("localhost/busybox"), vec!["hub"]);
        assert_eq!(
            users("reg.example.com/team/app"),
            vec!["team", "host", "wild"]
        );
        assert_eq!(users("reg.example.com/other/app"), vec!["host", "wild"]);
        assert_eq!(users("x.example.com/app"), vec!["wild"]);
        assert_eq!(users("a.b.example.com/app"), Vec::<String>::new());
        assert_eq!(users("busybox"), vec!["hub"]);
        assert_eq!(users("docker.io/bitnami/nginx"), vec!["hub"]);
        assert_eq!(users("quay.io/x/y"), Vec::<String>::new());
    }
}
