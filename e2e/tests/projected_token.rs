//! Projected serviceAccountToken volumes on a real `rekube-node-agent run` (as root),
//! under the chart's RBAC and NodeRestriction policy, with the node authorizer and the
//! pod token binding controller of rekube-controllers (under the chart's RBAC too) and
//! the host cluster's garbage collector.
//!
//! A pod with upstream's `kube-api-access` volume (a serviceAccountToken of audience
//! `rekube-test` for 600 s, the `kube-root-ca.crt` ConfigMap, the namespace from the
//! downward API) first waits with a FailedMount naming its missing token binding Secret
//! while no pod token binding controller runs; once one runs it reads its files, and
//! the token passes a real TokenReview as the pod's ServiceAccount, for its audience
//! only, its claims bound to the binding Secret (name and UID; no pod or node claims), on
//! a tmpfs and nowhere else on the node's disk. The binding Secret deleted while the pod
//! lives: the token is refused at once, the controller makes the Secret again, and the
//! agent writes a new token bound to the new Secret into the running pod. The pod
//! deleted: the garbage collector deletes its binding Secret and the apiserver refuses
//! the pod's last token. Nothing is left on the node.
//!
//! The refresh at 80% of a token's life cannot be waited for here (the apiserver issues
//! no token shorter than 600 s: TokenRequest validation's "may not specify a duration
//! less than 10 minutes"), so it is proved by the token manager's tables with a fake
//! clock (`volume::token_manager::tests`); the rewrite of a running pod's token through
//! the atomic writer is proved here by the new token after the binding's re-creation.
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, PostParams};
use rekube_crds::Pod;
use rekube_crds::token_binding::{TOKEN_BINDING_SECRET_TYPE, pod_token_binding_secret_name};
use rekube_e2e::agent::{AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers};
use rekube_e2e::controllers::{ControllerProcess, external};
use rekube_e2e::storage::event_notes;
use rekube_e2e::{TestNamespace, rbac, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);
const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
const AUDIENCE: &str = "rekube-test";

/// The pod: upstream's kube-api-access volume (as its ServiceAccount admission injects
/// it, with this test's audience and 600 s), mounted where upstream mounts it.
fn pod(node: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "rekube.io/v1", "kind": "Pod",
        "metadata": {"name": "reader"},
        "spec": {
            "nodeName": node, "serviceAccountName": "app", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                "command": ["sh", "-c", "echo ready; sleep 3600"],
                "volumeMounts": [{"name": "kube-api-access", "mountPath": MOUNT, "readOnly": true}]}],
            "volumes": [{"name": "kube-api-access", "projected": {"defaultMode": 0o644, "sources": [
                {"serviceAccountToken": {"audience": AUDIENCE, "expirationSeconds": 600, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ]}}],
        },
    }))
    .unwrap()
}

/// A TokenReview of `token` (for `audiences`, or the apiserver's own when empty).
async fn review(client: &kube::Client, token: &str, audiences: &[&str]) -> TokenReviewStatus {
    let review: TokenReview = serde_json::from_value(json!({
        "spec": {"token": token, "audiences": audiences}
    }))
    .unwrap();
    Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .unwrap_or_default()
}

/// Whether the review's error is the apiserver's for a token whose bound object is gone
/// (pkg/serviceaccount/claims.go: "service account token has been invalidated").
fn invalidated(s: &TokenReviewStatus) -> bool {
    s.error
        .as_deref()
        .is_some_and(|e| e.contains("service account token has been invalidated"))
}

/// The JWT's claims (its middle part), unverified: the TokenReview is the verification.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The token file as the container sees it.
fn token_in_pod(agent: &AgentProcess, pod: &Pod) -> String {
    let (out, err, ok) = agent.exec_shell(pod, "c", &format!("cat {MOUNT}/token"));
    assert!(ok, "reading the token in the pod: {err}");
    out
}

/// The regular files under `dir` that hold `needle`, the directories `skip` (mount
/// points) left out.
fn files_holding(dir: &std::path::Path, needle: &[u8], skip: &[std::path::PathBuf]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if skip.contains(&d) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = path.symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && meta.len() < 64 << 20
                && std::fs::read(&path)
                    .is_ok_and(|data| data.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// Mount points under `dir` and their filesystem type, from /proc/self/mountinfo.
fn mounts_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            let point = std::path::PathBuf::from(fields.get(4)?);
            let fstype = fields.get(sep + 1)?.to_string();
            point.starts_with(dir).then_some((point, fstype))
        })
        .collect()
}

#[tokio::test]
async fn a_pod_reads_its_projected_service_account_token_bound_to_its_binding_secret() {
    if cannot_run_containers() {
        return;
    }
    if external() {
        println!("skipped: needs controller processes of its own");
        return;
    }
    let ns = TestNamespace::new("projected-token").await;
    let pp = PostParams::default();
    let agent_sa = format!("{}-node-agent", ns.name);
    let controllers_sa = format!("{}-controllers", ns.name);
    let _agent_rbac = rbac::apply_chart_rbac(&ns, "templates/node-agent-rbac.yaml", "node-agent");
    let _controllers_rbac =
        rbac::apply_chart_rbac(&ns, "templates/controllers-rbac.yaml", "controllers");
    let _policy = rbac::apply_node_restriction(&ns);
    // The pod's ServiceAccount, and the namespace's CA bundle (kube-controller-manager's
    // root-ca-cert-publisher makes it in every namespace).
    Api::<ServiceAccount>::namespaced(ns.client.clone(), &ns.name)
        .create(
            &pp,
            &serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap(),
        )
        .await
        .unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(ns.client.clone(), &ns.name);
    let ca = wait_until("the namespace's kube-root-ca.crt", T, || async {
        match config_maps.get_opt("kube-root-ca.crt").await {
            Ok(Some(cm)) => Ok(cm.data.unwrap_or_default()["ca.crt"].clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // The agent, as the chart runs it: its ServiceAccount's token bound to its node,
    // its node's own identity for the pods' Secrets, ConfigMaps and tokens.
    ns.create(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}))
        .await
        .unwrap();
    let node = ns.cluster_name("n");
    let token = rbac::service_account_token(&ns, &agent_sa, Some(("Node", &node)));
    let agent_kubeconfig = rbac::token_kubeconfig(&ns, &agent_sa, &token);
    let controllers_kubeconfig = rbac::service_account_kubeconfig(&ns, &controllers_sa);
    let controllers_env = [("KUBECONFIG", controllers_kubeconfig.to_str().unwrap())];
    // First the node authorizer alone: nobody makes the pod's token binding.
    let mut controllers = ControllerProcess::start_with_env(
        &ns.name,
        &["--controllers=node-authorizer"],
        &controllers_env,
    );
    let agent = AgentProcess::start_real_with_env(
        &ns,
        "n",
        &["--node-identity-namespace", &ns.name],
        &[("KUBECONFIG", agent_kubeconfig.to_str().unwrap())],
    );
    assert_eq!(agent.node_name, node);
    // The node's identity exists before the pod does: the pod's first FailedMount (the
    // one event of its series whose note the recorder keeps) is about its binding.
    let service_accounts: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), &ns.name);
    wait_until("the node's service account", T, || async {
        match service_accounts.get_opt(&node).await {
            Ok(Some(_)) => Ok(()),
            other => Err(format!("{other:?}\n{}", controllers.logs())),
        }
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let created = pods.create(&pp, &pod(&node)).await.unwrap();
    let binding = pod_token_binding_secret_name(&created);
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let want = format!(
        "MountVolume.SetUp failed for volume \"kube-api-access\" : failed to fetch token: \
         secret {ns}/{binding}, the token binding of pod {ns}/reader, not found \
         (rekube-controllers' pod-token-binding-controller creates it)",
        ns = ns.name
    );
    wait_until("the FailedMount naming the missing binding", T, || async {
        let notes = event_notes(&events, Some("Pod"), "reader", "FailedMount").await;
        notes
            .contains(&want)
            .then_some(())
            .ok_or_else(|| format!("{notes:?}\n{}", agent.logs()))
    })
    .await;
    let waiting = pods.get("reader").await.unwrap();
    assert_eq!(
        waiting.status.and_then(|s| s.phase).as_deref(),
        Some("Pending"),
        "the pod ran without its token"
    );

    // The pod token binding controller too (checking every second, for the re-creation
    // below): the binding is made, and the pod runs.
    controllers.terminate();
    let controllers = ControllerProcess::start_with_env(
        &ns.name,
        &[
            "--controllers=node-authorizer,pod-token-binding",
            "--pod-token-binding-resync-period",
            "1s",
        ],
        &controllers_env,
    );
    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), &ns.name);
    let running = wait_until("the pod running", T, || async {
        let p = pods.get("reader").await.map_err(|e| e.to_string())?;
        match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Running") => Ok(p),
            other => Err(format!("{other:?}\n{}", controllers.logs())),
        }
    })
    .await;
    let secret = secrets.get(&binding).await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some(TOKEN_BINDING_SECRET_TYPE));
    assert_eq!(secret.immutable, Some(true));
    assert!(secret.data.unwrap_or_default().is_empty());
    let owner = &secret.metadata.owner_references.clone().unwrap()[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            owner.uid.as_str(),
            owner.controller
        ),
        (
            "Pod",
            "reader",
            created.metadata.uid.as_deref().unwrap(),
            Some(true)
        )
    );
    let secret_uid = secret.metadata.uid.clone().unwrap();

    // The files, as upstream's kube-api-access has them.
    let (out, err, ok) = agent.exec_shell(
        &running,
        "c",
        &format!(
            "cd {MOUNT} && echo \"$(ls | tr '\\n' ,)\" && cat namespace && echo && \
             stat -L -c %a token && awk '$2 == \"{MOUNT}\" {{print $3, $4}}' /proc/mounts"
        ),
    );
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "ca.crt,namespace,token,", "{out}");
    assert_eq!(lines[1], ns.name, "{out}");
    assert_eq!(lines[2], "644", "{out}");
    assert!(lines[3].starts_with("tmpfs ro,"), "{out}");
    let (pod_ca, _, _) = agent.exec_shell(&running, "c", &format!("cat {MOUNT}/ca.crt"));
    assert_eq!(pod_ca.trim(), ca.trim());

    // The token: the pod's ServiceAccount for audience rekube-test, bound to the Secret.
    let first = token_in_pod(&agent, &running);
    let status = review(&ns.client, &first, &[AUDIENCE]).await;
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let user = status.user.clone().unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{}:app", ns.name).as_str())
    );
    assert_eq!(
        status.audiences.as_deref(),
        Some(&[AUDIENCE.to_string()][..])
    );
    // No pod or node in the user's extra info (a Secret-bound token carries neither).
    let extra = user.extra.unwrap_or_default();
    assert!(
        !extra.contains_key("authentication.kubernetes.io/pod-name")
            && !extra.contains_key("authentication.kubernetes.io/node-name"),
        "{extra:?}"
    );
    let c = claims(&first);
    assert_eq!(c["aud"], json!([AUDIENCE]), "{c}");
    assert_eq!(c["sub"], format!("system:serviceaccount:{}:app", ns.name));
    assert_eq!(
        c["kubernetes.io"]["secret"],
        json!({"name": binding, "uid": secret_uid}),
        "{c}"
    );
    assert_eq!(c["kubernetes.io"]["pod"], Value::Null, "{c}");
    assert_eq!(c["kubernetes.io"]["node"], Value::Null, "{c}");
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        600,
        "{c}"
    );
    // For its audience only.
    let other = review(&ns.client, &first, &[]).await;
    assert_ne!(other.authenticated, Some(true), "{other:?}");
    assert!(
        other
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("audiences"),
        "{other:?}"
    );

    // In memory only: the volume is a tmpfs, and no file of the node's disk under the
    // agent's root holds the token; nor does the agent's log.
    let uid = running.metadata.uid.clone().unwrap();
    let volume = agent
        .root
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~projected/kube-api-access");
    let mounts = mounts_under(&agent.root);
    assert!(
        mounts.iter().any(|(p, t)| *p == volume && t == "tmpfs"),
        "{volume:?} is not a tmpfs: {mounts:?}"
    );
    // Every mount under the root but the root itself (the volume's tmpfs among them).
    let skip: Vec<std::path::PathBuf> = mounts
        .iter()
        .map(|(p, _)| p.clone())
        .filter(|p| *p != agent.root)
        .collect();
    let holding = files_holding(&agent.root, first.as_bytes(), &skip);
    assert!(holding.is_empty(), "the token on disk: {holding:?}");
    assert!(
        !agent.logs().contains(&first),
        "the token in the agent's log"
    );

    // The binding deleted while the pod lives: the token is refused at once (the
    // apiserver's token cache aside), the controller makes the Secret again within its
    // resync, and the agent's next sync writes a token bound to the new Secret.
    secrets
        .delete(&binding, &DeleteParams::default())
        .await
        .unwrap();
    wait_until("the token refused with its binding gone", T, || async {
        let s = review(&ns.client, &first, &[AUDIENCE]).await;
        // Gone, or already made again (another UID): both refuse the token.
        let error = s.error.as_deref().unwrap_or_default();
        let other_uid = error.contains("does not match service account secret ref claim");
        (s.authenticated != Some(true) && (invalidated(&s) || other_uid))
            .then_some(())
            .ok_or_else(|| format!("{s:?}"))
    })
    .await;
    let second = wait_until("a new token in the running pod", T, || async {
        let now = token_in_pod(&agent, &running);
        if now == first || now.is_empty() {
            return Err(format!("still the first token\n{}", controllers.logs()));
        }
        Ok(now)
    })
    .await;
    let recreated = secrets.get(&binding).await.unwrap();
    let new_uid = recreated.metadata.uid.clone().unwrap();
    assert_ne!(new_uid, secret_uid);
    assert_eq!(claims(&second)["kubernetes.io"]["secret"]["uid"], new_uid);
    let status = review(&ns.client, &second, &[AUDIENCE]).await;
    assert_eq!(status.authenticated, Some(true), "{status:?}");
    let p = pods.get("reader").await.unwrap();
    assert_eq!(
        p.status.and_then(|s| s.phase).as_deref(),
        Some("Running"),
        "the pod kept running"
    );

    // The pod deleted: the garbage collector deletes its binding, and its token dies.
    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;
    wait_until("the binding deleted with its pod", T, || async {
        match secrets.get_opt(&binding).await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    wait_until("the pod's last token refused", T, || async {
        let s = review(&ns.client, &second, &[AUDIENCE]).await;
        (s.authenticated != Some(true) && invalidated(&s))
            .then_some(())
            .ok_or_else(|| format!("{s:?}"))
    })
    .await;
    for (what, logs) in [("agent", agent.logs()), ("controllers", controllers.logs())] {
        assert!(
            !logs.to_lowercase().contains("forbidden"),
            "the {what} hit a permission it lacks:\n{logs}"
        );
    }
}
