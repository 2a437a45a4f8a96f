//! Projected podCertificate volumes (KEP-4317, certificates.k8s.io/v1beta1
//! PodCertificateRequest) on a real `rekube-node-agent run` (as root), under the chart's
//! RBAC and NodeRestriction policy, with the node authorizer of rekube-controllers (under
//! the chart's RBAC too) and the host cluster's garbage collector. The API is enabled by
//! e2e/scripts/cluster-up.sh (feature gate PodCertificateRequest, runtime config
//! certificates.k8s.io/v1beta1/podcertificaterequests).
//!
//! A test signer in the test, as upstream's e2e (test/e2e/auth/projected_podcertificate.go)
//! runs one: it reads the PodCertificateRequests for `example.com/test-signer`, checks the
//! stub PKCS#10 request's signature, and issues a certificate from a test CA for the
//! request's public key (SANs naming the pod and its ServiceAccount), or denies the
//! requests of pod `denied`. A pod projecting a credential bundle (ED25519) and one with
//! separate key and chain paths (ECDSAP256) run with files whose key matches the leaf, the
//! leaf issued by the test CA to the SANs the signer made, the chain the leaf then the CA;
//! the requests name the rekube Pods, their ServiceAccount and the rekube Node (names and
//! UIDs). The denied pod waits with upstream's FailedMount message. The pods deleted: the
//! garbage collector deletes their requests. No private key in the agent's log.
//!
//! The refresh at `beginRefreshAt` cannot be waited for here: the apiserver refuses a
//! `beginRefreshAt` less than 10 minutes after `notBefore`, and a `notBefore` more than 5
//! minutes from its own time (PodCertificateRequest status validation), so a refresh comes
//! 5 minutes after issuance at the earliest. It is proved by the pure core's tables
//! (`volume::pod_certificate::tests::full_flow_with_refresh`).
use std::time::Duration;

use k8s_openapi::api::certificates::v1beta1::PodCertificateRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use rekube_crds::Pod;
use rekube_e2e::agent::{AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers};
use rekube_e2e::controllers::{ControllerProcess, external};
use rekube_e2e::rbac::refused;
use rekube_e2e::storage::event_notes;
use rekube_e2e::{TestNamespace, rbac, wait_until};
use serde_json::json;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const T: Duration = Duration::from_secs(90);
const SIGNER: &str = "example.com/test-signer";

fn pod(node: &str, name: &str, key_type: &str, paths: serde_json::Value) -> Pod {
    let mut projection = json!({"signerName": SIGNER, "keyType": key_type,
        "maxExpirationSeconds": 86400, "userAnnotations": {"test.example.com/pod": name}});
    projection
        .as_object_mut()
        .unwrap()
        .extend(paths.as_object().unwrap().clone());
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node, "serviceAccountName": "app", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "sleep 3600"],
                "volumeMounts": [{"name": "cert", "mountPath": "/certs", "readOnly": true}]}],
            "volumes": [{"name": "cert", "projected": {"defaultMode": 0o644, "sources": [
                {"podCertificate": projection}]}}],
        },
    }))
    .unwrap()
}

/// The test CA.
struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
    der: Vec<u8>,
}

fn test_ca() -> TestCa {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "rekube e2e test signer CA");
    let cert = params.self_signed(&key).unwrap();
    TestCa {
        pem: cert.pem(),
        der: cert.der().to_vec(),
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// A request's public key as rcgen takes it: the SubjectPublicKeyInfo's key bits and the
/// algorithm of its kind.
struct RequestedKey {
    bits: Vec<u8>,
    alg: &'static rcgen::SignatureAlgorithm,
}

impl rcgen::PublicKeyData for RequestedKey {
    fn der_bytes(&self) -> &[u8] {
        &self.bits
    }
    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        self.alg
    }
}

/// The stub request's key, its signature checked (as the apiserver did).
fn requested_key(stub: &[u8]) -> Result<RequestedKey, String> {
    use x509_parser::certification_request::X509CertificationRequest;
    let (_, csr) = X509CertificationRequest::from_der(stub).map_err(|e| e.to_string())?;
    csr.verify_signature().map_err(|e| e.to_string())?;
    let spki = &csr.certification_request_info.subject_pki;
    let alg = match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.3.101.112" => &rcgen::PKCS_ED25519,
        "1.2.840.10045.2.1" => &rcgen::PKCS_ECDSA_P256_SHA256,
        other => return Err(format!("the test signer takes no key of {other}")),
    };
    Ok(RequestedKey {
        bits: spki.subject_public_key.data.to_vec(),
        alg,
    })
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// Issues or denies every pending request for [`SIGNER`] in the namespace (the status
/// written as a signer does: `Issued` with the chain and its times, or `Denied`).
async fn sign_pending(api: &Api<PodCertificateRequest>, ca: &TestCa) -> Result<(), String> {
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    for pcr in list {
        let done = pcr
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| !c.is_empty());
        if done || pcr.spec.signer_name != SIGNER {
            continue;
        }
        let name = pcr.metadata.name.clone().unwrap_or_default();
        let now = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .unwrap();
        let status = if pcr.spec.pod_name == "denied" {
            json!({"conditions": [{"type": "Denied", "status": "True", "reason": "TestDenied",
                "message": "the test signer denies pod denied", "lastTransitionTime": rfc3339(now)}]})
        } else {
            let key = requested_key(&pcr.spec.stub_pkc_s10_request.0)?;
            let not_before = now - time::Duration::minutes(1);
            let not_after = not_before + time::Duration::hours(23);
            let mut params = rcgen::CertificateParams::new(vec![format!(
                "{}.{}.pod.test",
                pcr.spec.pod_name,
                pcr.metadata.namespace.as_deref().unwrap_or_default()
            )])
            .map_err(|e| e.to_string())?;
            params.subject_alt_names.push(rcgen::SanType::URI(
                format!(
                    "spiffe://cluster.test/ns/{}/sa/{}",
                    pcr.metadata.namespace.as_deref().unwrap_or_default(),
                    pcr.spec.service_account_name
                )
                .try_into()
                .map_err(|e: rcgen::Error| e.to_string())?,
            ));
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, pcr.spec.pod_name.clone());
            params.not_before = not_before;
            params.not_after = not_after;
            let leaf = params
                .signed_by(&key, &ca.issuer)
                .map_err(|e| e.to_string())?;
            json!({
                "conditions": [{"type": "Issued", "status": "True", "reason": "Issued",
                    "message": "issued by the test signer", "lastTransitionTime": rfc3339(now)}],
                "certificateChain": format!("{}{}", leaf.pem(), ca.pem),
                "notBefore": rfc3339(not_before),
                "beginRefreshAt": rfc3339(not_before + time::Duration::hours(12)),
                "notAfter": rfc3339(not_after),
            })
        };
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .map_err(|e| format!("signing {name}: {e}"))?;
    }
    Ok(())
}

/// The PEM blocks of `text`: (type, DER).
fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    use base64::Engine;
    let mut out = Vec::new();
    let mut kind = None;
    let mut body = String::new();
    for line in text.lines() {
        if let Some(k) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        {
            kind = Some(k.to_string());
            body.clear();
        } else if line.starts_with("-----END ") {
            let der = base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .unwrap();
            out.push((kind.take().unwrap(), der));
        } else if kind.is_some() {
            body.push_str(line.trim());
        }
    }
    out
}

/// The credential's checks: the key is the leaf's, the leaf the test CA issued for the
/// pod's names, the chain the leaf then the CA.
fn check_credential(key_pem: &str, chain_pem: &str, ca: &TestCa, pod: &str, ns: &str) {
    let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
    let blocks = pem_blocks(chain_pem);
    assert_eq!(blocks.len(), 2, "{chain_pem}");
    assert!(
        blocks.iter().all(|(k, _)| k == "CERTIFICATE"),
        "{chain_pem}"
    );
    assert_eq!(blocks[1].1, ca.der, "the chain ends with the test CA");
    let (_, leaf) = X509Certificate::from_der(&blocks[0].1).unwrap();
    let (_, ca_cert) = X509Certificate::from_der(&ca.der).unwrap();
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw(),
        "the key is not the leaf's"
    );
    leaf.verify_signature(Some(ca_cert.public_key()))
        .expect("the leaf issued by the test CA");
    assert_eq!(leaf.issuer(), ca_cert.subject());
    let cn: Vec<_> = leaf
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(cn, [pod]);
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("dns:{d}"),
            GeneralName::URI(u) => format!("uri:{u}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        sans,
        [
            format!("dns:{pod}.{ns}.pod.test"),
            format!("uri:spiffe://cluster.test/ns/{ns}/sa/app")
        ]
    );
}

/// Where a P-256 PKCS#8 key (RFC 5915 inside RFC 5208) holds its private scalar: after
/// `SEQUENCE { INTEGER 0, SEQUENCE { ecPublicKey, prime256v1 }, OCTET STRING { SEQUENCE {
/// INTEGER 1, OCTET STRING (32)` — bytes 36..68, announced by `04 20` at 34.
const P256_PKCS8_SCALAR: std::ops::Range<usize> = 36..68;
/// Where an Ed25519 PKCS#8 key (RFC 8410) holds its seed: bytes 16..48, announced by
/// `04 20` at 14.
const ED25519_PKCS8_SEED: std::ops::Range<usize> = 16..48;

/// Asserts the secret bytes `der[secret]` of a PKCS#8 key appear in `logs` neither in
/// base64 (alone, or as the key's PEM body carries them, line by line) nor in hex.
fn assert_secret_not_logged(logs: &str, der: &[u8], secret: std::ops::Range<usize>, what: &str) {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(
        &der[secret.start - 2..secret.start],
        &[0x04, 0x20],
        "{what}: a 32-byte OCTET STRING at {secret:?}"
    );
    let bytes = &der[secret.clone()];
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut needles = vec![
        b64.encode(bytes),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        hex.clone(),
        hex.to_uppercase(),
    ];
    // The PEM body's characters that encode only secret bytes, cut at its 64-character
    // lines.
    let body = b64.encode(der);
    let (from, to) = (secret.start.div_ceil(3) * 4, secret.end / 3 * 4);
    let mut at = from;
    while at < to {
        let end = to.min((at / 64 + 1) * 64);
        if end - at >= 12 {
            needles.push(body[at..end].to_string());
        }
        at = end;
    }
    for n in needles {
        assert!(
            !logs.contains(&n),
            "{what}'s secret in the agent's log ({n})"
        );
    }
}

/// Whether request `r` carries a Denied condition with `reason`.
fn pod_certificate_outcome_is_denied(r: &PodCertificateRequest, reason: &str) -> bool {
    r.status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .any(|c| c.type_ == "Denied" && c.reason == reason)
}

async fn running(pods: &Api<Pod>, name: &str, agent: &AgentProcess) -> Pod {
    wait_until(&format!("pod {name} running"), T, || async {
        let p = pods.get(name).await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => Ok(p),
            other => Err(format!("{other:?}\n{}", agent.logs())),
        }
    })
    .await
}

#[tokio::test]
async fn pods_get_certificates_from_a_signer_for_their_projected_pod_certificates() {
    if cannot_run_containers() {
        return;
    }
    if external() {
        println!("skipped: needs controller processes of its own");
        return;
    }
    let ns = TestNamespace::new("pod-certificate").await;
    let pp = PostParams::default();
    let agent_sa = format!("{}-node-agent", ns.name);
    let controllers_sa = format!("{}-controllers", ns.name);
    let _agent_rbac = rbac::apply_chart_rbac(&ns, "templates/node-agent-rbac.yaml", "node-agent");
    let _controllers_rbac =
        rbac::apply_chart_rbac(&ns, "templates/controllers-rbac.yaml", "controllers");
    let _policy = rbac::apply_node_restriction(&ns);
    let service_accounts: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), &ns.name);
    let app = service_accounts
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap(),
        )
        .await
        .unwrap();

    // The test signer, every half second until the test ends.
    let ca = std::sync::Arc::new(test_ca());
    let pcrs: Api<PodCertificateRequest> = Api::namespaced(ns.client.clone(), &ns.name);
    let signer = {
        let (pcrs, ca) = (pcrs.clone(), ca.clone());
        tokio::spawn(async move {
            loop {
                if let Err(e) = sign_pending(&pcrs, &ca).await {
                    eprintln!("test signer: {e}");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    // The agent as the chart runs it, its node's own identity for the requests.
    ns.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}))
        .await
        .unwrap();
    let node = ns.cluster_name("n");
    let token = rbac::service_account_token(&ns, &agent_sa, Some(("Node", &node)));
    let agent_kubeconfig = rbac::token_kubeconfig(&ns, &agent_sa, &token);
    let controllers_kubeconfig = rbac::service_account_kubeconfig(&ns, &controllers_sa);
    let controllers = ControllerProcess::start_with_env(
        &ns.name,
        &["--controllers=node-authorizer"],
        &[("KUBECONFIG", controllers_kubeconfig.to_str().unwrap())],
    );
    let agent = AgentProcess::start_real_with_env(
        &ns,
        "n",
        &["--node-identity-namespace", &ns.name],
        &[("KUBECONFIG", agent_kubeconfig.to_str().unwrap())],
    );
    wait_until("the node's service account", T, || async {
        match service_accounts.get_opt(&node).await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}\n{}", controllers.logs())),
        }
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let bundle = pods
        .create(
            &pp,
            &pod(
                &node,
                "bundle",
                "ED25519",
                json!({"credentialBundlePath": "credentialbundle.pem"}),
            ),
        )
        .await
        .unwrap();
    let separate = pods
        .create(
            &pp,
            &pod(
                &node,
                "separate",
                "ECDSAP256",
                json!({"keyPath": "key.pem", "certificateChainPath": "certificates.pem"}),
            ),
        )
        .await
        .unwrap();
    pods.create(
        &pp,
        &pod(
            &node,
            "denied",
            "ED25519",
            json!({"credentialBundlePath": "credentialbundle.pem"}),
        ),
    )
    .await
    .unwrap();

    let running_bundle = running(&pods, "bundle", &agent).await;
    let running_separate = running(&pods, "separate", &agent).await;

    // The credential bundle: the key, then the chain.
    let (out, err, ok) = agent.exec_shell(
        &running_bundle,
        "c",
        "ls /certs && stat -L -c %a /certs/credentialbundle.pem && cat /certs/credentialbundle.pem",
    );
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("credentialbundle.pem"), "{out}");
    assert_eq!(lines.next(), Some("644"), "{out}");
    let bundle_text: String = lines.map(|l| format!("{l}\n")).collect();
    let blocks = pem_blocks(&bundle_text);
    assert_eq!(
        blocks.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"],
        "{bundle_text}"
    );
    let split = bundle_text.find("-----BEGIN CERTIFICATE-----").unwrap();
    check_credential(
        &bundle_text[..split],
        &bundle_text[split..],
        &ca,
        "bundle",
        &ns.name,
    );

    // Separate key and chain files.
    let (key_pem, err, ok) = agent.exec_shell(&running_separate, "c", "cat /certs/key.pem");
    assert!(ok, "{err}");
    let (chain_pem, err, ok) =
        agent.exec_shell(&running_separate, "c", "cat /certs/certificates.pem");
    assert!(ok, "{err}");
    let (ls, _, _) = agent.exec_shell(&running_separate, "c", "ls /certs | tr '\\n' ,");
    assert_eq!(ls.trim(), "certificates.pem,key.pem,");
    check_credential(&key_pem, &chain_pem, &ca, "separate", &ns.name);

    // The requests name the rekube Pods, their ServiceAccount and the rekube Node.
    let node_uid = Api::<rekube_crds::Node>::all(ns.client.clone())
        .get(&node)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    for (p, key_type) in [(&bundle, "ED25519"), (&separate, "ECDSAP256")] {
        let name = p.metadata.name.clone().unwrap();
        let all = pcrs.list(&ListParams::default()).await.unwrap();
        let mine: Vec<_> = all.iter().filter(|r| r.spec.pod_name == name).collect();
        assert_eq!(mine.len(), 1, "one request for pod {name}: {mine:?}");
        let s = &mine[0].spec;
        assert_eq!(s.pod_uid, p.metadata.uid.clone().unwrap());
        assert_eq!(
            (
                s.service_account_name.as_str(),
                Some(&s.service_account_uid)
            ),
            ("app", app.metadata.uid.as_ref())
        );
        assert_eq!(
            (s.node_name.as_str(), &s.node_uid),
            (node.as_str(), &node_uid)
        );
        assert_eq!(s.max_expiration_seconds, Some(86400));
        assert_eq!(
            s.unverified_user_annotations.as_ref().unwrap()["test.example.com/pod"],
            name
        );
        let key = requested_key(&s.stub_pkc_s10_request.0).unwrap();
        let want = if key_type == "ED25519" {
            &rcgen::PKCS_ED25519
        } else {
            &rcgen::PKCS_ECDSA_P256_SHA256
        };
        assert_eq!(key.alg, want);
        let owner = &mine[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.uid.as_str()
            ),
            ("rekube.io/v1", "Pod", p.metadata.uid.as_deref().unwrap())
        );
    }

    // The node's identity holds no more than its pods need: their ServiceAccount, not
    // another; requests in its pods' namespace, not elsewhere.
    let node_token = rbac::service_account_token(&ns, &node, Some(("Node", &node)));
    let as_node = rbac::token_client(&ns, &node, &node_token).await;
    let node_sas: Api<ServiceAccount> = Api::namespaced(as_node.clone(), &ns.name);
    node_sas.get("app").await.unwrap();
    refused(
        "the node reading a ServiceAccount none of its pods' certificates name",
        node_sas.get("default").await,
        "cannot get resource \"serviceaccounts\"",
    );
    let elsewhere: Api<PodCertificateRequest> = Api::namespaced(as_node.clone(), "default");
    let dry_run = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let mut request = pcrs.list(&ListParams::default()).await.unwrap().items[0].clone();
    request.metadata = serde_json::from_value(json!({"generateName": "req-"})).unwrap();
    request.status = None;
    refused(
        "the node creating a request where it runs no pod",
        elsewhere.create(&dry_run, &request).await,
        "cannot create resource \"podcertificaterequests\"",
    );

    // The node restriction policy (upstream's NodeRestriction admitPodCertificateRequest):
    // the node's own request passes; one naming another ServiceAccount, another node, a
    // pod not of the node or an owner that is not the pod is refused; rekube-controllers
    // may create none.
    let mine: Api<PodCertificateRequest> = Api::namespaced(as_node.clone(), &ns.name);
    let legit = {
        let of_bundle = pcrs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|r| r.spec.pod_name == "bundle")
            .unwrap();
        let mut r = of_bundle.clone();
        r.metadata = serde_json::from_value(json!({"generateName": "req-",
            "ownerReferences": of_bundle.metadata.owner_references}))
        .unwrap();
        r.status = None;
        r
    };
    mine.create(&dry_run, &legit)
        .await
        .expect("the node's own request");
    let not_running = format!(
        "pod \"{}/elsewhere\" is not running on node \"{node}\" named in the PodCertificateRequest",
        ns.name
    );
    let with = |f: &dyn Fn(&mut PodCertificateRequest)| {
        let mut r = legit.clone();
        f(&mut r);
        r
    };
    for (what, request, message) in [
        (
            "a request naming a ServiceAccount of none of the node's podCertificate pods",
            with(&|r| r.spec.service_account_name = "default".into()),
            "contains serviceAccountName (\"default\") that is the service account of no \
             podCertificate pod of node",
        ),
        (
            "a request naming another node",
            with(&|r| r.spec.node_name = "elsewhere".into()),
            "PodCertificateRequest.Spec.NodeName=\"elsewhere\", which is not the requesting node",
        ),
        (
            "a request for a pod not of the node",
            with(&|r| {
                r.spec.pod_name = "elsewhere".into();
                r.metadata.owner_references.as_mut().unwrap()[0].name = "elsewhere".into();
            }),
            not_running.as_str(),
        ),
        (
            "a request whose pod UID is not its owner's",
            with(&|r| r.spec.pod_uid = "00000000-0000-0000-0000-000000000000".into()),
            "must have exactly one owner reference",
        ),
        (
            "a request owned by nothing",
            with(&|r| r.metadata.owner_references = None),
            "must have exactly one owner reference",
        ),
    ] {
        refused(what, mine.create(&dry_run, &request).await, message);
    }
    let controllers_token = rbac::service_account_token(&ns, &controllers_sa, None);
    let as_controllers = rbac::token_client(&ns, &controllers_sa, &controllers_token).await;
    refused(
        "rekube-controllers creating a request",
        Api::<PodCertificateRequest>::namespaced(as_controllers, &ns.name)
            .create(&dry_run, &legit)
            .await,
        "rekube-controllers may not create PodCertificateRequests",
    );

    // The denied pod waits with upstream's message.
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let want = "MountVolume.SetUp failed for volume \"cert\" : PodCertificateRequest was \
                permanently denied: reason=\"TestDenied\" message=\"the test signer denies pod denied\"";
    // The set-up does not wait for the signer: its first failure is upstream's "not
    // issued yet", and kube's event recorder keeps a series' first note (its series key
    // has no note), so the denied message is the event's only when the request was
    // denied before the pod's first set-up read it. The request's Denied condition says
    // the rest.
    let not_issued = "MountVolume.SetUp failed for volume \"cert\" : credential bundle is not \
                      issued yet";
    wait_until("the denied pod's FailedMount", T, || async {
        let notes = event_notes(&events, Some("Pod"), "denied", "FailedMount").await;
        let denied = pcrs
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .iter()
            .any(|r| {
                r.spec.pod_name == "denied" && pod_certificate_outcome_is_denied(r, "TestDenied")
            });
        (notes.iter().any(|n| n == want) || (denied && notes.iter().any(|n| n == not_issued)))
            .then_some(())
            .ok_or_else(|| format!("{notes:?} (denied: {denied})\n{}", agent.logs()))
    })
    .await;
    let waiting = pods.get("denied").await.unwrap();
    assert_eq!(
        waiting.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );

    // No private key in the agent's log: the secret bytes of both keys (the P-256 scalar,
    // the Ed25519 seed; not the PKCS#8 headers, which are the same for every key).
    let logs = agent.logs();
    let separate_key = pem_blocks(&key_pem)[0].1.clone();
    let bundle_key = pem_blocks(&bundle_text)[0].1.clone();
    assert_secret_not_logged(&logs, &separate_key, P256_PKCS8_SCALAR, "the P-256 key");
    assert_secret_not_logged(&logs, &bundle_key, ED25519_PKCS8_SEED, "the Ed25519 key");

    // The pods deleted: the garbage collector deletes their requests.
    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    wait_until("the requests deleted with their pods", T, || async {
        let left = pcrs
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        left.items
            .is_empty()
            .then_some(())
            .ok_or_else(|| format!("{} left", left.items.len()))
    })
    .await;
    signer.abort();
    for (what, logs) in [("agent", agent.logs()), ("controllers", controllers.logs())] {
        assert!(
            !logs.to_lowercase().contains("forbidden"),
            "the {what} hit a permission it lacks:\n{logs}"
        );
    }
}
