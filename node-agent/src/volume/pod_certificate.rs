//! The pure core of the projected volume's podCertificate source (KEP-4317; upstream
//! pkg/kubelet/podcertificate/podcertificatemanager.go and the podCertificate branch of
//! pkg/volume/projected/projected.go): the private key of each `keyType`, the stub PKCS#10
//! request that proves possession of it, the PodCertificateRequest the node creates for
//! it, what a request's conditions say, when a credential is refreshed, and the files the
//! source projects. The shell (creating and reading the requests as the node) is
//! [`super::pod_certificate_manager`].
//!
//! The request names the rekube Pod (name and UID) where upstream's names the core Pod:
//! the apiserver validates only the fields' form, and its NodeRestriction cross-check of
//! pod, node and service account applies to `system:node:<name>` users only, which the
//! agent's node identity (a ServiceAccount) is not.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::certificates::v1beta1::{PodCertificateRequest, PodCertificateRequestSpec};
use k8s_openapi::api::core::v1::PodCertificateProjection;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

use super::{FileProjection, Payload};

/// The condition types that end a request (certificates.k8s.io/v1beta1).
pub const CONDITION_ISSUED: &str = "Issued";
pub const CONDITION_DENIED: &str = "Denied";
pub const CONDITION_FAILED: &str = "Failed";

/// A `keyType` of a podCertificate projection (the API's enumeration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa3072,
    Rsa4096,
    EcdsaP256,
    EcdsaP384,
    EcdsaP521,
    Ed25519,
}

impl KeyType {
    /// Upstream `generateKeyAndProof`'s switch: `unknown key type "X"` otherwise.
    pub fn parse(key_type: &str) -> Result<Self, String> {
        Ok(match key_type {
            "RSA3072" => KeyType::Rsa3072,
            "RSA4096" => KeyType::Rsa4096,
            "ECDSAP256" => KeyType::EcdsaP256,
            "ECDSAP384" => KeyType::EcdsaP384,
            "ECDSAP521" => KeyType::EcdsaP521,
            "ED25519" => KeyType::Ed25519,
            other => return Err(format!("unknown key type {other:?}")),
        })
    }

    /// The key's name in upstream's generation errors (`while generating RSA 3072 key`).
    pub fn describe(self) -> &'static str {
        match self {
            KeyType::Rsa3072 => "RSA 3072",
            KeyType::Rsa4096 => "RSA 4096",
            KeyType::EcdsaP256 => "ECDSA P256",
            KeyType::EcdsaP384 => "ECDSA P384",
            KeyType::EcdsaP521 => "ECDSA P521",
            KeyType::Ed25519 => "Ed25519",
        }
    }

    /// The signature algorithm of the stub request, as Go's x509.CreateCertificateRequest
    /// picks it for the key: SHA256WithRSA, ECDSAWithSHA256/384/512 by curve, PureEd25519.
    /// The DER of its AlgorithmIdentifier.
    fn signature_algorithm(self) -> &'static [u8] {
        match self {
            // sha256WithRSAEncryption (1.2.840.113549.1.1.11), NULL parameters
            KeyType::Rsa3072 | KeyType::Rsa4096 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
                0x00,
            ],
            // ecdsa-with-SHA256 (1.2.840.10045.4.3.2)
            KeyType::EcdsaP256 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
            ],
            // ecdsa-with-SHA384 (1.2.840.10045.4.3.3)
            KeyType::EcdsaP384 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
            ],
            // ecdsa-with-SHA512 (1.2.840.10045.4.3.4)
            KeyType::EcdsaP521 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
            ],
            // id-Ed25519 (1.3.101.112)
            KeyType::Ed25519 => &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70],
        }
    }
}

/// A fresh private key and the stub PKCS#10 request signed with it.
pub struct KeyAndProof {
    /// The key as PKCS#8, PEM `PRIVATE KEY` (upstream `pemEncodeKey`).
    pub key_pem: Vec<u8>,
    /// The request's DER: an empty subject, the key's SubjectPublicKeyInfo, no attributes.
    pub stub_pkcs10_request: Vec<u8>,
}

/// Upstream `generateKeyAndProof` and `pemEncodeKey`: a key of `key_type` and an empty
/// PKCS#10 request signed with it (the apiserver checks the signature and the key's type
/// and size; it reads nothing else of the request).
pub fn generate_key_and_proof(key_type: &str) -> Result<KeyAndProof, String> {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    use signature::{SignatureEncoding, Signer};
    let kt = KeyType::parse(key_type)?;
    let generating =
        |e: &dyn std::fmt::Display| format!("while generating {} key: {e}", kt.describe());
    let pem_of = |e: Result<p256::pkcs8::der::zeroize::Zeroizing<String>, p256::pkcs8::Error>| {
        e.map(|s| s.as_bytes().to_vec()).map_err(|e| {
            format!("while PEM-encoding private key: while marshaling key to PKCS#8: {e}")
        })
    };
    let spki_of = |e: Result<p256::pkcs8::Document, p256::pkcs8::spki::Error>| {
        e.map(|d| d.as_bytes().to_vec())
            .map_err(|e| format!("while generating stub PKCS#10 request: {e}"))
    };
    let mut rng = rand_core::OsRng;
    // (PKCS#8 PEM, SubjectPublicKeyInfo DER, a signer over the request info)
    type Sign = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let (key_pem, spki, sign): (Vec<u8>, Vec<u8>, Sign) = match kt {
        KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let bits = if kt == KeyType::Rsa3072 { 3072 } else { 4096 };
            let key = rsa::RsaPrivateKey::new(&mut rng, bits).map_err(|e| generating(&e))?;
            let pem = pem_of(key.to_pkcs8_pem(LineEnding::LF))?;
            let spki = spki_of(key.to_public_key().to_public_key_der())?;
            let signer = rsa::pkcs1v15::SigningKey::<rsa::sha2::Sha256>::new(key);
            (pem, spki, Box::new(move |m| signer.sign(m).to_vec()))
        }
        KeyType::EcdsaP256 => {
            let key = p256::ecdsa::SigningKey::random(&mut rng);
            let pem = pem_of(key.to_pkcs8_pem(LineEnding::LF))?;
            let spki = spki_of(key.verifying_key().to_public_key_der())?;
            (
                pem,
                spki,
                Box::new(move |m| {
                    let s: p256::ecdsa::Signature = key.sign(m);
                    s.to_der().as_bytes().to_vec()
                }),
            )
        }
        KeyType::EcdsaP384 => {
            let key = p384::ecdsa::SigningKey::random(&mut rng);
            let pem = pem_of(key.to_pkcs8_pem(LineEnding::LF))?;
            let spki = spki_of(key.verifying_key().to_public_key_der())?;
            (
                pem,
                spki,
                Box::new(move |m| {
                    let s: p384::ecdsa::Signature = key.sign(m);
                    s.to_der().as_bytes().to_vec()
                }),
            )
        }
        KeyType::EcdsaP521 => {
            let secret = p521::SecretKey::random(&mut rng);
            let pem = pem_of(secret.to_pkcs8_pem(LineEnding::LF))?;
            let spki = spki_of(secret.public_key().to_public_key_der())?;
            let key = p521::ecdsa::SigningKey::from_bytes(&secret.to_bytes())
                .map_err(|e| generating(&e))?;
            (
                pem,
                spki,
                Box::new(move |m| {
                    let s: p521::ecdsa::Signature = key.sign(m);
                    s.to_der().as_bytes().to_vec()
                }),
            )
        }
        KeyType::Ed25519 => {
            let key = ed25519_dalek::SigningKey::generate(&mut rng);
            // PKCS#8 v1, the seed alone, as Go's MarshalPKCS8PrivateKey writes it (the v2
            // form with the public key is not read by every TLS stack).
            let v1 = ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: key.to_bytes(),
                public_key: None,
            };
            let pem = pem_of(v1.to_pkcs8_pem(LineEnding::LF))?;
            let spki = spki_of(key.verifying_key().to_public_key_der())?;
            (pem, spki, Box::new(move |m| key.sign(m).to_vec()))
        }
    };
    Ok(KeyAndProof {
        key_pem,
        stub_pkcs10_request: stub_pkcs10_request(kt, &spki, sign.as_ref()),
    })
}

/// A DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

/// The CertificationRequestInfo of an empty request for `spki` (RFC 2986: version 0,
/// an empty subject, the key, an empty attribute set, as Go encodes an empty template).
pub fn certification_request_info(spki: &[u8]) -> Vec<u8> {
    let mut info = vec![0x02, 0x01, 0x00]; // version INTEGER 0
    info.extend(der(0x30, &[])); // subject: an empty RDNSequence
    info.extend_from_slice(spki);
    info.extend(der(0xa0, &[])); // attributes [0] IMPLICIT SET OF, empty
    der(0x30, &info)
}

/// The CertificationRequest: the info, the algorithm, the signature over the info.
fn stub_pkcs10_request(kt: KeyType, spki: &[u8], sign: &dyn Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let info = certification_request_info(spki);
    let signature = sign(&info);
    let mut bits = vec![0x00]; // no unused bits
    bits.extend(signature);
    let mut body = info;
    body.extend_from_slice(kt.signature_algorithm());
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}

/// What the request names: the pod, its ServiceAccount, the node (all with UIDs).
pub struct RequestFor<'a> {
    pub namespace: &'a str,
    pub pod_name: &'a str,
    pub pod_uid: &'a str,
    pub service_account_name: &'a str,
    pub service_account_uid: &'a str,
    pub node_name: &'a str,
    pub node_uid: &'a str,
}

/// Upstream `createPodCertificateRequest`'s object: `req-` generated names, owned by the
/// pod (rekube.io/v1 here, so that the garbage collector removes it with the pod), the
/// source's signer, `maxExpirationSeconds` and `userAnnotations` (as
/// `unverifiedUserAnnotations`), and the stub request.
pub fn pod_certificate_request(
    for_: &RequestFor<'_>,
    source: &PodCertificateProjection,
    stub_pkcs10_request: Vec<u8>,
) -> PodCertificateRequest {
    PodCertificateRequest {
        metadata: ObjectMeta {
            namespace: Some(for_.namespace.to_string()),
            generate_name: Some("req-".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: format!("{}/v1", rekube_crds::GROUP),
                kind: "Pod".into(),
                name: for_.pod_name.to_string(),
                uid: for_.pod_uid.to_string(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        spec: PodCertificateRequestSpec {
            signer_name: source.signer_name.clone(),
            pod_name: for_.pod_name.to_string(),
            pod_uid: for_.pod_uid.to_string(),
            service_account_name: for_.service_account_name.to_string(),
            service_account_uid: for_.service_account_uid.to_string(),
            node_name: for_.node_name.to_string(),
            node_uid: for_.node_uid.to_string(),
            max_expiration_seconds: source.max_expiration_seconds,
            stub_pkc_s10_request: ByteString(stub_pkcs10_request),
            unverified_user_annotations: source.user_annotations.clone(),
            ..Default::default()
        },
        status: None,
    }
}

/// What a request's conditions say (the first of Denied, Failed, Issued, as upstream
/// walks them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pending,
    Denied { reason: String, message: String },
    Failed { reason: String, message: String },
    Issued(Issued),
}

/// An issued credential's certificate chain and times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The chain, each block re-encoded as a bare `CERTIFICATE` ([`clean_certificate_chain`]).
    pub certificate_chain: Vec<u8>,
    pub begin_refresh_at: Timestamp,
    pub not_after: Timestamp,
}

/// The reason of the failure [`outcome`] reports for an Issued request missing
/// `beginRefreshAt` or `notAfter`.
pub const ISSUED_WITHOUT_TIMES: &str = "IssuedWithoutTimes";

pub fn outcome(pcr: &PodCertificateRequest) -> Outcome {
    let Some(status) = &pcr.status else {
        return Outcome::Pending;
    };
    for c in status.conditions.iter().flatten() {
        match c.type_.as_str() {
            CONDITION_DENIED => {
                return Outcome::Denied {
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                };
            }
            CONDITION_FAILED => {
                return Outcome::Failed {
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                };
            }
            CONDITION_ISSUED => {
                // The apiserver's validation requires both times on an issued request;
                // without them there is no refresh time (not the epoch: a request at
                // every sync), so the issuance counts as failed.
                let (Some(begin_refresh_at), Some(not_after)) =
                    (&status.begin_refresh_at, &status.not_after)
                else {
                    return Outcome::Failed {
                        reason: ISSUED_WITHOUT_TIMES.into(),
                        message: "the request is Issued without status.beginRefreshAt or \
                                  status.notAfter"
                            .into(),
                    };
                };
                return Outcome::Issued(Issued {
                    certificate_chain: clean_certificate_chain(
                        status.certificate_chain.as_deref().unwrap_or_default(),
                    ),
                    begin_refresh_at: begin_refresh_at.0,
                    not_after: not_after.0,
                });
            }
            _ => {}
        }
    }
    Outcome::Pending
}

/// Upstream `credStateDenied`/`credStateFailed`'s errors and the waits' one.
pub fn denied_message(reason: &str, message: &str) -> String {
    format!("PodCertificateRequest was permanently denied: reason={reason:?} message={message:?}")
}

pub fn failed_message(reason: &str, message: &str) -> String {
    format!("PodCertificateRequest was permanently failed: reason={reason:?} message={message:?}")
}

pub const NOT_ISSUED_YET: &str = "credential bundle is not issued yet";

/// Upstream `cleanCertificateChain`: every PEM block of `chain` re-encoded as a
/// `CERTIFICATE` block without headers, whatever was between them dropped.
pub fn clean_certificate_chain(chain: &str) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut out = String::new();
    let mut rest = chain;
    while let Some(begin) = rest.find("-----BEGIN ") {
        let after = &rest[begin + "-----BEGIN ".len()..];
        let Some(type_end) = after.find("-----") else {
            break;
        };
        let kind = &after[..type_end];
        let body_start = &after[type_end + 5..];
        let end_marker = format!("-----END {kind}-----");
        let Some(end) = body_start.find(&end_marker) else {
            break;
        };
        let body: String = body_start[..end]
            .lines()
            .filter(|l| !l.contains(':'))
            .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
            .collect();
        rest = &body_start[end + end_marker.len()..];
        let Ok(bytes) = b64.decode(body.as_bytes()) else {
            break;
        };
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        let encoded = b64.encode(bytes);
        for line in encoded.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    out.into_bytes()
}

/// A source's credential as the volume writes it: the key and the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub key_pem: Vec<u8>,
    pub certificate_chain: Vec<u8>,
}

/// The podCertificate sources' credentials of a projected volume, by source index: the
/// credential, or why there is none (upstream `GetPodCertificateCredentialBundle`'s error).
pub type Credentials = BTreeMap<usize, Result<Credential, String>>;

/// The podCertificate branch of upstream `collectData`: the credential bundle (the key,
/// then the chain) at `credentialBundlePath`, the key at `keyPath`, the chain at
/// `certificateChainPath`, each present path with `mode`.
pub fn payload(source: &PodCertificateProjection, credential: &Credential, mode: i32) -> Payload {
    let mut payload = Payload::new();
    let path = |p: &Option<String>| p.clone().filter(|p| !p.is_empty());
    if let Some(p) = path(&source.credential_bundle_path) {
        let mut bundle = credential.key_pem.clone();
        bundle.extend_from_slice(&credential.certificate_chain);
        payload.insert(p, FileProjection::new(bundle, mode));
    }
    if let Some(p) = path(&source.key_path) {
        payload.insert(p, FileProjection::new(credential.key_pem.clone(), mode));
    }
    if let Some(p) = path(&source.certificate_chain_path) {
        payload.insert(
            p,
            FileProjection::new(credential.certificate_chain.clone(), mode),
        );
    }
    payload
}

/// Where a source's credential stands (upstream's `credState`s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredState {
    /// A request was created and has not ended (`credStateWait`).
    Wait { key_pem: Vec<u8>, pcr_name: String },
    /// Ended denied or failed, for good (`credStateDenied`, `credStateFailed`): the error.
    Ended(String),
    /// A credential is served (`credStateFresh`); `refresh`: a refresh request in flight
    /// (`credStateWaitRefresh`), its key and name.
    Fresh {
        credential: Credential,
        begin_refresh_at: Timestamp,
        not_after: Timestamp,
        refresh: Option<(Vec<u8>, String)>,
    },
}

/// What the shell does for a source next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create a request (none yet: `credStateInitial`; or the fresh one's refresh is due).
    Create,
    /// Read request `name` and apply its outcome ([`apply_outcome`]).
    Check(String),
    /// Nothing to ask the apiserver.
    Serve,
}

/// Upstream `handleProjection`'s switch: the request to create or read, if any. A fresh
/// credential is refreshed once `now` reaches its `beginRefreshAt`.
pub fn next_action(state: Option<&CredState>, now: Timestamp) -> Action {
    match state {
        None => Action::Create,
        Some(CredState::Wait { pcr_name, .. }) => Action::Check(pcr_name.clone()),
        Some(CredState::Ended(_)) => Action::Serve,
        Some(CredState::Fresh {
            refresh: Some((_, name)),
            ..
        }) => Action::Check(name.clone()),
        Some(CredState::Fresh {
            begin_refresh_at, ..
        }) if now >= *begin_refresh_at => Action::Create,
        Some(CredState::Fresh { .. }) => Action::Serve,
    }
}

/// The state after creating request `pcr_name` for key `key_pem`: waiting, or (a
/// refresh) still serving the fresh credential.
pub fn after_create(state: Option<CredState>, key_pem: Vec<u8>, pcr_name: String) -> CredState {
    match state {
        Some(CredState::Fresh {
            credential,
            begin_refresh_at,
            not_after,
            ..
        }) => CredState::Fresh {
            credential,
            begin_refresh_at,
            not_after,
            refresh: Some((key_pem, pcr_name)),
        },
        _ => CredState::Wait { key_pem, pcr_name },
    }
}

/// The state after reading the request in flight: issued → fresh with its key, denied or
/// failed → ended (a refresh's too, as upstream), pending → unchanged.
pub fn apply_outcome(state: CredState, outcome: Outcome) -> CredState {
    let key_in_flight = match &state {
        CredState::Wait { key_pem, .. } => key_pem.clone(),
        CredState::Fresh {
            refresh: Some((key, _)),
            ..
        } => key.clone(),
        _ => return state,
    };
    match outcome {
        Outcome::Pending => state,
        Outcome::Denied { reason, message } => CredState::Ended(denied_message(&reason, &message)),
        Outcome::Failed { reason, message } => CredState::Ended(failed_message(&reason, &message)),
        Outcome::Issued(issued) => CredState::Fresh {
            credential: Credential {
                key_pem: key_in_flight,
                certificate_chain: issued.certificate_chain,
            },
            begin_refresh_at: issued.begin_refresh_at,
            not_after: issued.not_after,
            refresh: None,
        },
    }
}

/// Upstream `getCredBundle`: the credential served in `state`, or the error.
pub fn credential(state: Option<&CredState>) -> Result<Credential, String> {
    match state {
        None | Some(CredState::Wait { .. }) => Err(NOT_ISSUED_YET.to_string()),
        Some(CredState::Ended(e)) => Err(e.clone()),
        Some(CredState::Fresh { credential, .. }) => Ok(credential.clone()),
    }
}

#[cfg(test)]
mod tests {
    //! After upstream podcertificatemanager_test.go (TestTransitionInitialToWait,
    //! TestFullFlow: initial → wait → fresh → wait refresh → fresh with the new key,
    //! denied and failed) and validation.go's checks of the stub request.
    use super::*;
    use k8s_openapi::api::certificates::v1beta1::PodCertificateRequestStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    /// The TLVs of a DER SEQUENCE's content.
    fn children(der: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = der;
        while !rest.is_empty() {
            let (hdr, len) = match rest[1] {
                l if l < 0x80 => (2, l as usize),
                l => {
                    let n = (l & 0x7f) as usize;
                    let len = rest[2..2 + n]
                        .iter()
                        .fold(0usize, |a, b| a << 8 | *b as usize);
                    (2 + n, len)
                }
            };
            out.push(&rest[..hdr + len]);
            rest = &rest[hdr + len..];
        }
        out
    }

    fn content(tlv: &[u8]) -> &[u8] {
        let hdr = if tlv[1] < 0x80 {
            2
        } else {
            2 + (tlv[1] & 0x7f) as usize
        };
        &tlv[hdr..]
    }

    /// Each key type: a PKCS#8 PEM key and a request whose info holds the key and whose
    /// signature verifies with it (what the apiserver's `CheckSignature` does).
    #[test]
    fn every_key_type_signs_its_stub_request() {
        use p256::pkcs8::DecodePublicKey;
        use signature::Verifier;
        for kt in ["ECDSAP256", "ECDSAP384", "ECDSAP521", "ED25519", "RSA3072"] {
            let got = generate_key_and_proof(kt).unwrap();
            let pem = String::from_utf8(got.key_pem).unwrap();
            assert!(
                pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
                "{kt}: {pem}"
            );
            let req = children(&got.stub_pkcs10_request);
            assert_eq!(req.len(), 1, "{kt}");
            let parts = children(content(req[0]));
            assert_eq!(parts.len(), 3, "{kt}");
            let (info, alg, sig) = (parts[0], parts[1], parts[2]);
            assert_eq!(alg, KeyType::parse(kt).unwrap().signature_algorithm());
            let fields = children(content(info));
            assert_eq!(fields.len(), 4, "{kt}");
            assert_eq!(fields[0], [0x02, 0x01, 0x00]);
            assert_eq!(fields[1], [0x30, 0x00]);
            assert_eq!(fields[3], [0xa0, 0x00]);
            let spki = fields[2];
            let sig = &content(sig)[1..];
            match kt {
                "ECDSAP256" => {
                    let k = p256::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
                    let s = p256::ecdsa::Signature::from_der(sig).unwrap();
                    k.verify(info, &s).unwrap();
                }
                "ECDSAP384" => {
                    let k = p384::ecdsa::VerifyingKey::from_public_key_der(spki).unwrap();
                    let s = p384::ecdsa::Signature::from_der(sig).unwrap();
                    k.verify(info, &s).unwrap();
                }
                "ECDSAP521" => {
                    let pk = p521::PublicKey::from_public_key_der(spki).unwrap();
                    let k = p521::ecdsa::VerifyingKey::from_affine(*pk.as_affine()).unwrap();
                    let s = p521::ecdsa::Signature::from_der(sig).unwrap();
                    k.verify(info, &s).unwrap();
                }
                "ED25519" => {
                    let k = ed25519_dalek::VerifyingKey::from_public_key_der(spki).unwrap();
                    let s = ed25519_dalek::Signature::from_slice(sig).unwrap();
                    k.verify(info, &s).unwrap();
                }
                _ => {
                    use rsa::traits::PublicKeyParts;
                    let k = rsa::RsaPublicKey::from_public_key_der(spki).unwrap();
                    assert_eq!(k.size() * 8, 3072);
                    let v = rsa::pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(k);
                    let s = rsa::pkcs1v15::Signature::try_from(sig).unwrap();
                    v.verify(info, &s).unwrap();
                }
            }
        }
    }

    #[test]
    fn unknown_key_type() {
        assert_eq!(
            generate_key_and_proof("DSA1024").err().unwrap(),
            "unknown key type \"DSA1024\""
        );
    }

    fn source() -> PodCertificateProjection {
        serde_json::from_value(serde_json::json!({
            "signerName": "example.com/test-signer", "keyType": "ED25519",
            "maxExpirationSeconds": 86400, "userAnnotations": {"a": "b"},
            "credentialBundlePath": "bundle.pem", "keyPath": "key.pem",
            "certificateChainPath": "chain.pem",
        }))
        .unwrap()
    }

    #[test]
    fn the_request_names_pod_service_account_and_node() {
        let for_ = RequestFor {
            namespace: "ns",
            pod_name: "p",
            pod_uid: "pod-uid",
            service_account_name: "sa",
            service_account_uid: "sa-uid",
            node_name: "n1",
            node_uid: "node-uid",
        };
        let pcr = pod_certificate_request(&for_, &source(), vec![1, 2]);
        assert_eq!(pcr.metadata.generate_name.as_deref(), Some("req-"));
        assert_eq!(pcr.metadata.namespace.as_deref(), Some("ns"));
        let owner = &pcr.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str()
            ),
            ("rekube.io/v1", "Pod", "p", "pod-uid")
        );
        let s = &pcr.spec;
        assert_eq!(s.signer_name, "example.com/test-signer");
        assert_eq!((s.pod_name.as_str(), s.pod_uid.as_str()), ("p", "pod-uid"));
        assert_eq!(
            (
                s.service_account_name.as_str(),
                s.service_account_uid.as_str()
            ),
            ("sa", "sa-uid")
        );
        assert_eq!(
            (s.node_name.as_str(), s.node_uid.as_str()),
            ("n1", "node-uid")
        );
        assert_eq!(s.max_expiration_seconds, Some(86400));
        assert_eq!(s.stub_pkc_s10_request.0, vec![1, 2]);
        assert_eq!(
            s.unverified_user_annotations,
            Some(BTreeMap::from([("a".to_string(), "b".to_string())]))
        );
        assert!(s.pkix_public_key.is_none() && s.proof_of_possession.is_none());
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn pcr(conditions: &[(&str, &str, &str)], chain: Option<&str>) -> PodCertificateRequest {
        PodCertificateRequest {
            metadata: Default::default(),
            spec: Default::default(),
            status: Some(PodCertificateRequestStatus {
                conditions: Some(
                    conditions
                        .iter()
                        .map(|(t, r, m)| Condition {
                            type_: t.to_string(),
                            status: "True".into(),
                            reason: r.to_string(),
                            message: m.to_string(),
                            last_transition_time: Time(ts("2026-01-01T00:00:00Z")),
                            observed_generation: None,
                        })
                        .collect(),
                ),
                certificate_chain: chain.map(str::to_string),
                begin_refresh_at: Some(Time(ts("2026-01-01T12:00:00Z"))),
                not_after: Some(Time(ts("2026-01-02T00:00:00Z"))),
                not_before: Some(Time(ts("2026-01-01T00:00:00Z"))),
            }),
        }
    }

    const CHAIN: &str = "junk\n-----BEGIN CERTIFICATE-----\nHeader: x\n\nAAEC\nAw==\n-----END CERTIFICATE-----\nbetween\n-----BEGIN FOO-----\nBAU=\n-----END FOO-----\n";

    #[test]
    fn the_chain_is_cleaned() {
        assert_eq!(
            String::from_utf8(clean_certificate_chain(CHAIN)).unwrap(),
            "-----BEGIN CERTIFICATE-----\nAAECAw==\n-----END CERTIFICATE-----\n\
             -----BEGIN CERTIFICATE-----\nBAU=\n-----END CERTIFICATE-----\n"
        );
        assert!(clean_certificate_chain("").is_empty());
        let long = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode([7u8; 60])
        );
        let cleaned = String::from_utf8(clean_certificate_chain(&long)).unwrap();
        assert_eq!(cleaned.lines().nth(1).unwrap().len(), 64);
    }

    #[test]
    fn outcomes() {
        assert_eq!(outcome(&pcr(&[], None)), Outcome::Pending);
        assert_eq!(outcome(&PodCertificateRequest::default()), Outcome::Pending);
        assert_eq!(
            outcome(&pcr(&[("Denied", "Nope", "not you")], None)),
            Outcome::Denied {
                reason: "Nope".into(),
                message: "not you".into()
            }
        );
        assert_eq!(
            outcome(&pcr(&[("Failed", "Broken", "signer down")], None)),
            Outcome::Failed {
                reason: "Broken".into(),
                message: "signer down".into()
            }
        );
        let Outcome::Issued(issued) = outcome(&pcr(&[("Issued", "Issued", "")], Some(CHAIN)))
        else {
            panic!()
        };
        assert_eq!(issued.certificate_chain, clean_certificate_chain(CHAIN));
        assert_eq!(issued.begin_refresh_at, ts("2026-01-01T12:00:00Z"));
        assert_eq!(issued.not_after, ts("2026-01-02T00:00:00Z"));
        // Issued without a refresh time or an expiry: a failed issuance, not the epoch.
        for strip in [
            (|s: &mut PodCertificateRequestStatus| s.begin_refresh_at = None)
                as fn(&mut PodCertificateRequestStatus),
            |s| s.not_after = None,
        ] {
            let mut r = pcr(&[("Issued", "Issued", "")], Some(CHAIN));
            strip(r.status.as_mut().unwrap());
            assert!(
                matches!(outcome(&r), Outcome::Failed { reason, .. } if reason == ISSUED_WITHOUT_TIMES)
            );
        }
    }

    #[test]
    fn upstream_error_texts() {
        assert_eq!(
            denied_message("Nope", "not you"),
            r#"PodCertificateRequest was permanently denied: reason="Nope" message="not you""#
        );
        assert_eq!(
            failed_message("Broken", "x"),
            r#"PodCertificateRequest was permanently failed: reason="Broken" message="x""#
        );
        assert_eq!(
            credential(None).unwrap_err(),
            "credential bundle is not issued yet"
        );
    }

    /// TestFullFlow: initial → wait → fresh → (refresh due) wait refresh, still serving
    /// the first credential → fresh with the second key.
    #[test]
    fn full_flow_with_refresh() {
        let t0 = ts("2026-01-01T00:00:00Z");
        assert_eq!(next_action(None, t0), Action::Create);
        let s = after_create(None, b"key1".to_vec(), "req-1".into());
        assert_eq!(next_action(Some(&s), t0), Action::Check("req-1".into()));
        assert_eq!(credential(Some(&s)).unwrap_err(), NOT_ISSUED_YET);
        let s = apply_outcome(s, outcome(&pcr(&[], None)));
        assert!(matches!(s, CredState::Wait { .. }));
        let s = apply_outcome(s, outcome(&pcr(&[("Issued", "", "")], Some(CHAIN))));
        let first = Credential {
            key_pem: b"key1".to_vec(),
            certificate_chain: clean_certificate_chain(CHAIN),
        };
        assert_eq!(credential(Some(&s)), Ok(first.clone()));
        // Before beginRefreshAt: nothing to do; at it: a refresh request.
        assert_eq!(
            next_action(Some(&s), ts("2026-01-01T11:59:59Z")),
            Action::Serve
        );
        let refresh_time = ts("2026-01-01T12:00:00Z");
        assert_eq!(next_action(Some(&s), refresh_time), Action::Create);
        let s = after_create(Some(s), b"key2".to_vec(), "req-2".into());
        assert_eq!(
            next_action(Some(&s), refresh_time),
            Action::Check("req-2".into())
        );
        assert_eq!(credential(Some(&s)), Ok(first.clone()));
        let s = apply_outcome(s, Outcome::Pending);
        assert_eq!(credential(Some(&s)), Ok(first));
        let s = apply_outcome(s, outcome(&pcr(&[("Issued", "", "")], Some(CHAIN))));
        assert_eq!(credential(Some(&s)).unwrap().key_pem, b"key2".to_vec());
    }

    #[test]
    fn denied_and_failed_end_for_good() {
        let t0 = ts("2026-01-01T00:00:00Z");
        let s = after_create(None, b"k".to_vec(), "req-1".into());
        let s = apply_outcome(s, outcome(&pcr(&[("Denied", "Nope", "no")], None)));
        assert_eq!(
            credential(Some(&s)).unwrap_err(),
            denied_message("Nope", "no")
        );
        assert_eq!(next_action(Some(&s), t0), Action::Serve);
        let s = after_create(None, b"k".to_vec(), "req-1".into());
        let s = apply_outcome(s, outcome(&pcr(&[("Failed", "F", "m")], None)));
        assert_eq!(credential(Some(&s)).unwrap_err(), failed_message("F", "m"));
    }

    #[test]
    fn the_payload_of_each_path() {
        let c = Credential {
            key_pem: b"KEY\n".to_vec(),
            certificate_chain: b"CHAIN\n".to_vec(),
        };
        let p = payload(&source(), &c, 0o644);
        assert_eq!(p["bundle.pem"].data, b"KEY\nCHAIN\n");
        assert_eq!(p["key.pem"].data, b"KEY\n");
        assert_eq!(p["chain.pem"].data, b"CHAIN\n");
        assert_eq!(p["key.pem"].mode, 0o644);
        let mut only_bundle = source();
        only_bundle.key_path = None;
        only_bundle.certificate_chain_path = Some(String::new());
        assert_eq!(
            payload(&only_bundle, &c, 0o600).keys().collect::<Vec<_>>(),
            ["bundle.pem"]
        );
    }
}
