//! The node authorizer's reconciler: one key per node. A pod bound to it (or unbound
//! from it), its Node, or one of the node's Roles, RoleBindings or ServiceAccount changing
//! queues the node; `sync_node` reads the caches, asks [`super::grants`] what to write,
//! and writes it with server-side apply (field manager `rekube-node-authorizer`).
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use rekube_crds::node_identity::{
    MANAGED_BY_LABEL, MANAGED_BY_NODE_AUTHORIZER, node_of_role, node_role_name,
};
use rekube_crds::{Node, Pod};
use serde_json::json;

use super::grants::{self, Action, Actual};
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;

pub const CONTROLLER_NAME: &str = "node-authorizer-controller";
const FIELD_MANAGER: &str = "rekube-node-authorizer";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: {action} {kind} {namespace}/{name}: {source}")]
    Write {
        node: String,
        action: &'static str,
        kind: &'static str,
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// The label selector of the objects the node authorizer owns.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_NODE_AUTHORIZER}")
}

/// The informers it reads: the shared pods and Nodes, and its own objects (label
/// [`managed_selector`]).
pub struct Informers {
    pub pods: Arc<Informer<Pod>>,
    pub nodes: Arc<Informer<Node>>,
    pub roles: Arc<Informer<Role>>,
    pub bindings: Arc<Informer<RoleBinding>>,
    pub service_accounts: Arc<Informer<ServiceAccount>>,
}

pub struct NodeAuthorizer {
    client: Client,
    informers: Informers,
    /// Where the nodes' ServiceAccounts live (`--node-identity-namespace`).
    identity_namespace: String,
    queue: Arc<WorkQueue<ObjectKey>>,
    metrics: Metrics,
}

fn node_key(node: &str) -> ObjectKey {
    ObjectKey::new(None, node)
}

impl NodeAuthorizer {
    pub fn new(
        client: Client,
        informers: Informers,
        identity_namespace: String,
        metrics: Metrics,
    ) -> Arc<Self> {
        let c = Arc::new(NodeAuthorizer {
            client,
            informers,
            identity_namespace,
            queue: WorkQueue::new(CONTROLLER_NAME),
            metrics,
        });
        let enqueue = {
            let weak = Arc::downgrade(&c);
            move |node: &str| {
                if let Some(c) = weak.upgrade() {
                    c.metrics.queue_add(CONTROLLER_NAME);
                    c.queue.add(node_key(node));
                }
            }
        };
        let e = enqueue.clone();
        c.informers.pods.add_handler(move |change| match change {
            Change::Added(p) | Change::Deleted(p) => {
                if let Some(n) = grants::node_name(p) {
                    e(n)
                }
            }
            // Status updates (most of them) change no reference.
            Change::Updated { old, new } => {
                if old.spec != new.spec {
                    for n in [grants::node_name(old), grants::node_name(new)]
                        .into_iter()
                        .flatten()
                    {
                        e(n)
                    }
                }
            }
        });
        let e = enqueue.clone();
        c.informers.nodes.add_handler(move |change| match change {
            Change::Added(n) | Change::Deleted(n) => {
                e(n.metadata.name.as_deref().unwrap_or_default())
            }
            Change::Updated { .. } => {}
        });
        let e = enqueue.clone();
        c.informers.roles.add_handler(move |change| {
            if let Some(n) = changed_name(&change).and_then(node_of_role) {
                e(n)
            }
        });
        let e = enqueue.clone();
        c.informers.bindings.add_handler(move |change| {
            if let Some(n) = changed_name(&change).and_then(node_of_role) {
                e(n)
            }
        });
        let e = enqueue;
        c.informers.service_accounts.add_handler(move |change| {
            if let Some(n) = changed_name(&change) {
                e(n)
            }
        });
        c
    }

    pub fn queue(&self) -> Arc<WorkQueue<ObjectKey>> {
        Arc::clone(&self.queue)
    }

    pub async fn run(self: Arc<Self>, workers: usize) {
        let i = &self.informers;
        wait_for_named_cache_sync(
            CONTROLLER_NAME,
            vec![
                i.pods.has_synced(),
                i.nodes.has_synced(),
                i.roles.has_synced(),
                i.bindings.has_synced(),
                i.service_accounts.has_synced(),
            ],
        )
        .await;
        let this = Arc::clone(&self);
        run_workers(self.queue(), workers, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.sync_node(&key.name).await }
        })
        .await
    }

    /// What the cluster holds for `node`, from the caches.
    fn actual(&self, node: &str) -> Actual {
        let role_name = node_role_name(node);
        let i = &self.informers;
        let ours = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.name.as_deref() == Some(role_name.as_str())
        };
        Actual {
            service_account: i
                .service_accounts
                .get(&ObjectKey::new(Some(&self.identity_namespace), node))
                .is_some(),
            roles: i
                .roles
                .store()
                .state()
                .iter()
                .filter(|r| ours(&r.metadata))
                .map(|r| {
                    (
                        r.metadata.namespace.clone().unwrap_or_default(),
                        r.rules.clone().unwrap_or_default(),
                    )
                })
                .collect(),
            bindings: i
                .bindings
                .store()
                .state()
                .iter()
                .filter(|b| ours(&b.metadata))
                .map(|b| {
                    (
                        b.metadata.namespace.clone().unwrap_or_default(),
                        grants::binding_is_current(b, node, &self.identity_namespace),
                    )
                })
                .collect(),
        }
    }

    /// Brings one node's ServiceAccount, Roles and RoleBindings in line with its Node and
    /// the pods bound to it.
    pub async fn sync_node(&self, node: &str) -> Result<Option<Duration>, Error> {
        let exists = self.informers.nodes.get(&node_key(node)).is_some();
        let pods = self.informers.pods.store().state();
        let desired = grants::node_grants(node, pods.iter().map(|p| p.as_ref()));
        for action in grants::sync_actions(exists, &desired, &self.actual(node)) {
            self.write(node, action).await?;
        }
        Ok(None)
    }

    async fn write(&self, node: &str, action: Action) -> Result<(), Error> {
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let labels = json!({ MANAGED_BY_LABEL: MANAGED_BY_NODE_AUTHORIZER });
        let role_name = node_role_name(node);
        let err = |action: &'static str, kind: &'static str, namespace: &str, name: &str| {
            let (node, namespace, name) =
                (node.to_string(), namespace.to_string(), name.to_string());
            move |source| Error::Write {
                node,
                action,
                kind,
                namespace,
                name,
                source,
            }
        };
        match action {
            Action::ApplyServiceAccount => {
                let ns = &self.identity_namespace;
                let sa = json!({
                    "apiVersion": "v1", "kind": "ServiceAccount",
                    "metadata": {"name": node, "namespace": ns, "labels": labels},
                    // The node reads through RBAC grants only: no token mounted anywhere.
                    "automountServiceAccountToken": false,
                });
                Api::<ServiceAccount>::namespaced(self.client.clone(), ns)
                    .patch(node, &apply, &Patch::Apply(&sa))
                    .await
                    .map_err(err("applying", "serviceaccount", ns, node))?;
                tracing::info!(node, namespace = %ns, "created the node's service account");
            }
            Action::DeleteServiceAccount => {
                let ns = &self.identity_namespace;
                delete(
                    Api::<ServiceAccount>::namespaced(self.client.clone(), ns),
                    node,
                )
                .await
                .map_err(err("deleting", "serviceaccount", ns, node))?;
                tracing::info!(node, namespace = %ns, "deleted the node's service account");
            }
            Action::ApplyRole { namespace, rules } => {
                let role = json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                    "metadata": {"name": role_name, "namespace": namespace, "labels": labels},
                    "rules": rules,
                });
                Api::<Role>::namespaced(self.client.clone(), &namespace)
                    .patch(&role_name, &apply, &Patch::Apply(&role))
                    .await
                    .map_err(err("applying", "role", &namespace, &role_name))?;
            }
            Action::DeleteRole { namespace } => {
                delete(
                    Api::<Role>::namespaced(self.client.clone(), &namespace),
                    &role_name,
                )
                .await
                .map_err(err("deleting", "role", &namespace, &role_name))?;
            }
            Action::ApplyBinding { namespace } => {
                let (role_ref, subjects) = grants::binding_parts(node, &self.identity_namespace);
                let binding = json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": role_name, "namespace": namespace, "labels": labels},
                    "roleRef": role_ref, "subjects": subjects,
                });
                Api::<RoleBinding>::namespaced(self.client.clone(), &namespace)
                    .patch(&role_name, &apply, &Patch::Apply(&binding))
                    .await
                    .map_err(err("applying", "rolebinding", &namespace, &role_name))?;
            }
            Action::DeleteBinding { namespace } => {
                delete(
                    Api::<RoleBinding>::namespaced(self.client.clone(), &namespace),
                    &role_name,
                )
                .await
                .map_err(err("deleting", "rolebinding", &namespace, &role_name))?;
            }
        }
        Ok(())
    }
}

fn changed_name<'a, K: kube::Resource>(change: &'a Change<'a, K>) -> Option<&'a str> {
    let obj = match change {
        Change::Added(o) | Change::Deleted(o) => o,
        Change::Updated { new, .. } => new,
    };
    obj.meta().name.as_deref()
}

/// Deletes `name`; already gone is fine.
async fn delete<K>(api: Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
