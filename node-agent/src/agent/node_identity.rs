//! The identity the agent reads its pods' Secrets and ConfigMaps with, and requests its
//! pods' service account tokens with (the kubelet's secret and configmap managers' and
//! token manager's client, under upstream's Node authorizer).
//!
//! With `--node-identity-namespace` set (the chart does), the agent's own ServiceAccount
//! may read no Secret or ConfigMap. It asks the apiserver who it is (SelfSubjectReview:
//! its token names its node and that node's UID), requests a token of the ServiceAccount
//! named after its node in that namespace (TokenRequest, bound to its Node, an hour), and
//! reads with a client using that token, which the node authorizer of rekube-controllers
//! grants `get` on exactly the names its pods refer to. The token is renewed after 80% of
//! its life (the kubelet's token manager's rule) or when the apiserver no longer accepts it.
//!
//! Without the flag the agent reads with its own credentials (an agent run by hand with
//! a user's kubeconfig).
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{
    BoundObjectReference, SelfSubjectReview, TokenRequest, TokenRequestSpec,
};
use k8s_openapi::api::certificates::v1beta1::PodCertificateRequest;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::{Client, Config};
use rekube_crds::node_identity::NODE_UID_EXTRA;
use rekube_crds::node_restriction::NODE_NAME_EXTRA;
use rekube_crds::{CSIDriver, Node, PersistentVolume, PersistentVolumeClaim, VolumeAttachment};

/// How long a requested token lives (upstream's default for TokenRequest).
const TOKEN_EXPIRATION_SECONDS: i64 = 3600;

/// A grant written by the node authorizer lags the pod's binding by a moment: a
/// forbidden read is tried again for this long before it counts (upstream's in-process
/// graph has no such lag).
const GRANT_LAG: Duration = Duration::from_secs(3);
const GRANT_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: asking the apiserver who the agent is: {source}")]
    Review { node: String, source: kube::Error },
    #[error(
        "node {node}: the agent's credentials name no node ({user}); a token bound to the agent's pod or Node is needed to read Secrets and ConfigMaps as the node"
    )]
    NoNode { node: String, user: String },
    #[error("node {node}: the agent's credentials are those of node {other}")]
    OtherNode { node: String, other: String },
    #[error("node {node}: requesting a token of service account {namespace}/{node}: {source}")]
    TokenRequest {
        node: String,
        namespace: String,
        source: kube::Error,
    },
    #[error("node {node}: the token request for {namespace}/{node} returned no token")]
    EmptyToken { node: String, namespace: String },
    #[error("node {node}: building a client: {message}")]
    Client { node: String, message: String },
}

/// When a token issued at `issued` that expires after `lifetime` is renewed: at 80% of
/// its life (kubelet token manager `requiresRefresh`).
pub fn refresh_at(issued: Instant, lifetime: Duration) -> Instant {
    issued + lifetime.mul_f64(0.8)
}

/// The node name and UID a SelfSubjectReview's user carries (extra info of a pod-bound or
/// node-bound token).
pub fn node_of_review(review: &SelfSubjectReview) -> (Option<String>, Option<String>, String) {
    let user = review.status.as_ref().and_then(|s| s.user_info.as_ref());
    let extra = |key: &str| {
        user.and_then(|u| u.extra.as_ref())
            .and_then(|e| e.get(key))
            .filter(|v| v.len() == 1)
            .map(|v| v[0].clone())
    };
    let name = user.and_then(|u| u.username.clone()).unwrap_or_default();
    (extra(NODE_NAME_EXTRA), extra(NODE_UID_EXTRA), name)
}

/// The TokenRequest for a node's ServiceAccount, bound to its Node.
pub fn token_request(node: &str, node_uid: &str) -> TokenRequest {
    TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.into()),
                uid: Some(node_uid.into()),
            }),
        }),
        ..Default::default()
    }
}

struct Cached {
    client: Client,
    refresh_at: Instant,
}

/// Reads the Secrets and ConfigMaps of the node's pods, as the node.
pub struct NodeReader {
    own: Client,
    node: String,
    /// `--node-identity-namespace`; `None`: read with the agent's own client.
    identity_namespace: Option<String>,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

impl NodeReader {
    pub fn new(own: Client, node: &str, identity_namespace: Option<String>) -> Self {
        NodeReader {
            own,
            node: node.to_string(),
            identity_namespace: identity_namespace.filter(|n| !n.is_empty()),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    /// The client to read with: the agent's own, or one with a fresh token of the node's
    /// ServiceAccount.
    async fn client(&self) -> Result<Client, Error> {
        let Some(namespace) = &self.identity_namespace else {
            return Ok(self.own.clone());
        };
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && Instant::now() < c.refresh_at
        {
            return Ok(c.client.clone());
        }
        let node = self.node.clone();
        let review = Api::<SelfSubjectReview>::all(self.own.clone())
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map_err(|source| Error::Review {
                node: node.clone(),
                source,
            })?;
        let (name, uid, user) = node_of_review(&review);
        let (Some(name), Some(uid)) = (name, uid) else {
            return Err(Error::NoNode { node, user });
        };
        if name != node {
            return Err(Error::OtherNode { node, other: name });
        }
        let issued = Instant::now();
        let tr = Api::<ServiceAccount>::namespaced(self.own.clone(), namespace)
            .create_token_request(&node, &PostParams::default(), &token_request(&node, &uid))
            .await
            .map_err(|source| Error::TokenRequest {
                node: node.clone(),
                namespace: namespace.clone(),
                source,
            })?;
        let token = tr.status.and_then(|s| s.token).unwrap_or_default();
        if token.is_empty() {
            return Err(Error::EmptyToken {
                node,
                namespace: namespace.clone(),
            });
        }
        let client = token_client(&token)
            .await
            .map_err(|message| Error::Client {
                node: node.clone(),
                message,
            })?;
        let lifetime = Duration::from_secs(TOKEN_EXPIRATION_SECONDS as u64);
        tracing::info!(node = %node, service_account = %format!("{namespace}/{node}"), "requested the node's token");
        *cached = Some(Cached {
            client: client.clone(),
            refresh_at: refresh_at(issued, lifetime),
        });
        Ok(client)
    }

    /// Forgets the token (the apiserver refused it: expired, or its Node was recreated).
    async fn forget(&self) {
        *self.cached.lock().await = None;
    }

    /// Runs `call` as the node: a refusal (403) is retried for [`GRANT_LAG`] (the node
    /// authorizer's grants follow a new pod within it), an unauthenticated token (401)
    /// renewed once. Without a node identity (an admin kubeconfig) the first answer counts.
    async fn as_node<T, F, Fut>(&self, call: F) -> Result<T, String>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, kube::Error>>,
    {
        let deadline = Instant::now() + GRANT_LAG;
        let mut renewed = false;
        loop {
            let client = self.client().await.map_err(|e| e.to_string())?;
            match call(client).await {
                Ok(answered) => return Ok(answered),
                Err(kube::Error::Api(s))
                    if s.code == 401 && !renewed && self.identity_namespace.is_some() =>
                {
                    renewed = true;
                    self.forget().await;
                }
                Err(kube::Error::Api(s))
                    if s.code == 403
                        && self.identity_namespace.is_some()
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(GRANT_POLL).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// GETs `name` through `api` (the kind and namespace), as the node ([`Self::as_node`]);
    /// `Ok(None)` when it does not exist.
    async fn get<K>(&self, api: impl Fn(Client) -> Api<K>, name: &str) -> Result<Option<K>, String>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        self.as_node(|client| {
            let api = api(client);
            async move { api.get_opt(name).await }
        })
        .await
    }

    /// A token of ServiceAccount `namespace/name` (TokenRequest `tr`), requested as the
    /// node ([`Self::as_node`]): the node authorizer grants `create` on
    /// `serviceaccounts/token` for exactly the ServiceAccounts of the node's pods that
    /// project a token.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        tr: &TokenRequest,
    ) -> Result<TokenRequest, String> {
        self.as_node(|client| async move {
            Api::<ServiceAccount>::namespaced(client, namespace)
                .create_token_request(name, &PostParams::default(), tr)
                .await
        })
        .await
        .map_err(|e| format!("requesting a token of service account {namespace}/{name}: {e}"))
    }

    pub async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        self.get(|c| Api::namespaced(c, namespace), name).await
    }

    pub async fn persistent_volume_claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, String> {
        self.get(|c| Api::namespaced(c, namespace), name).await
    }

    /// Patches the status of claim `namespace/name` (a JSON merge patch), as the node
    /// ([`Self::as_node`]): the node authorizer grants `patch` on the status of its pods'
    /// claims and the NodeRestriction policy lets it change the capacity, the conditions
    /// and the allocated resources only (the kubelet's `MarkFSResizeFinished` and friends).
    pub async fn patch_claim_status(
        &self,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<PersistentVolumeClaim, String> {
        self.as_node(|client| async move {
            Api::<PersistentVolumeClaim>::namespaced(client, namespace)
                .patch_status(
                    name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(patch),
                )
                .await
        })
        .await
        .map_err(|e| format!("can't patch status of persistentvolumeclaim {namespace}/{name}: {e}"))
    }

    pub async fn persistent_volume(&self, name: &str) -> Result<Option<PersistentVolume>, String> {
        self.get(Api::all, name).await
    }

    /// A CSIDriver (every node may read them all, as upstream's system:node role).
    pub async fn csi_driver(&self, name: &str) -> Result<Option<CSIDriver>, String> {
        self.get(Api::all, name).await
    }

    /// Every ClusterTrustBundle (`certificates.k8s.io/v1beta1`), as the node
    /// ([`Self::as_node`]; the chart lets every node's identity read them all, as
    /// upstream's system:node role): `Ok(None)` when the apiserver does not serve them
    /// (a 404 answering a list: the feature gate or the runtime config is off).
    pub async fn cluster_trust_bundles(
        &self,
    ) -> Result<Option<Vec<k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle>>, String>
    {
        self.as_node(|client| async move {
            let api =
                Api::<k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle>::all(client);
            // resourceVersion=0: served from the apiserver's watch cache, not etcd (it is
            // read at each set-up of each such volume).
            match api
                .list(&kube::api::ListParams::default().match_any())
                .await
            {
                Ok(list) => Ok(Some(list.items)),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// A VolumeAttachment of the node (the node authorizer grants the node's own).
    pub async fn volume_attachment(&self, name: &str) -> Result<Option<VolumeAttachment>, String> {
        self.get(Api::all, name).await
    }

    /// The unique names in the Node's `status.volumesAttached`, read with the agent's own
    /// client (which posts that status).
    pub async fn volumes_attached(&self) -> Result<Vec<String>, String> {
        let node = Api::<Node>::all(self.own.clone())
            .get_status(&self.node)
            .await
            .map_err(|e| e.to_string())?;
        Ok(node
            .status
            .and_then(|s| s.volumes_attached)
            .into_iter()
            .flatten()
            .map(|v| v.name)
            .collect())
    }

    pub async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, String> {
        self.get(|c| Api::namespaced(c, namespace), name).await
    }

    /// Creates a PodCertificateRequest in `namespace`, as the node ([`Self::as_node`]):
    /// the node authorizer grants `create` on podcertificaterequests in the namespaces of
    /// the node's pods that project a podCertificate. The apiserver's NodeRestriction
    /// cross-check of the request's pod, node and ServiceAccount applies to
    /// `system:node:<name>` users only, not to this ServiceAccount.
    pub async fn create_pod_certificate_request(
        &self,
        namespace: &str,
        request: &PodCertificateRequest,
    ) -> Result<PodCertificateRequest, String> {
        self.as_node(|client| async move {
            Api::<PodCertificateRequest>::namespaced(client, namespace)
                .create(&PostParams::default(), request)
                .await
        })
        .await
    }

    /// A PodCertificateRequest in `namespace`, as the node (`get`, granted with `create`).
    pub async fn pod_certificate_request(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PodCertificateRequest>, String> {
        self.get(|c| Api::namespaced(c, namespace), name).await
    }

    /// A ServiceAccount of the node's pods, as the node (the node authorizer grants `get`
    /// on those of its pods that project a podCertificate).
    pub async fn service_account(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ServiceAccount>, String> {
        self.get(|c| Api::namespaced(c, namespace), name).await
    }

    /// The node's name and its Node's UID, read with the agent's own client (which
    /// registers the Node).
    pub async fn node_name_and_uid(&self) -> Result<(String, String), String> {
        let node = Api::<Node>::all(self.own.clone())
            .get(&self.node)
            .await
            .map_err(|e| e.to_string())?;
        Ok((self.node.clone(), node.metadata.uid.unwrap_or_default()))
    }
}

/// A client of the agent's apiserver (as its own client finds it) with `token` instead of
/// the agent's credentials.
async fn token_client(token: &str) -> Result<Client, String> {
    let mut config = Config::infer().await.map_err(|e| e.to_string())?;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_string().into()),
        ..Default::default()
    };
    Client::try_from(config).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renewal_at_eighty_percent() {
        let t = Instant::now();
        assert_eq!(
            refresh_at(t, Duration::from_secs(3600)),
            t + Duration::from_secs(2880)
        );
    }

    #[test]
    fn the_node_of_a_review() {
        let review: SelfSubjectReview = serde_json::from_value(json!({
            "status": {"userInfo": {"username": "system:serviceaccount:r:agent",
                "extra": {NODE_NAME_EXTRA: ["n1"], NODE_UID_EXTRA: ["u1"]}}}
        }))
        .unwrap();
        assert_eq!(
            node_of_review(&review),
            (
                Some("n1".into()),
                Some("u1".into()),
                "system:serviceaccount:r:agent".into()
            )
        );
        let unbound: SelfSubjectReview = serde_json::from_value(json!({
            "status": {"userInfo": {"username": "admin"}}
        }))
        .unwrap();
        assert_eq!(node_of_review(&unbound), (None, None, "admin".into()));
    }

    #[test]
    fn the_token_is_bound_to_the_node() {
        let spec = token_request("n1", "u1").spec.unwrap();
        let r = spec.bound_object_ref.unwrap();
        assert_eq!(
            (
                r.api_version.as_deref(),
                r.kind.as_deref(),
                r.name.as_deref(),
                r.uid.as_deref()
            ),
            (Some("v1"), Some("Node"), Some("n1"), Some("u1"))
        );
        assert_eq!(spec.expiration_seconds, Some(3600));
    }
}
