//! The node authorizer's reconciler: one key per node. A pod bound to it (or unbound
//! from it), its Node, the volume one of its pods' claims is bound to, a VolumeAttachment
//! naming it, or one of the node's Roles, RoleBindings, ClusterRole, ClusterRoleBinding or ServiceAccount changing
//! queues the node; `sync_node` reads the caches, asks [`super::grants`] what to write,
//! and writes it with server-side apply (field manager `rekube-node-authorizer`).
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use rekube_crds::node_identity::{
    MANAGED_BY_LABEL, MANAGED_BY_NODE_AUTHORIZER, NODE_IDENTITY_NAMESPACE_LABEL,
    node_cluster_role_name, node_of_role, node_role_name,
};
use rekube_crds::{Node, PersistentVolumeClaim, Pod, VolumeAttachment};
use serde_json::json;

use super::grants::{self, Action, Actual, ClusterActual, ClusterGrant};
use crate::manager::client::ignore_not_found;
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;

pub const CONTROLLER_NAME: &str = "node-authorizer-controller";
const FIELD_MANAGER: &str = "rekube-node-authorizer";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("node {node}: {action} {kind} {object}: {source}")]
    Write {
        node: String,
        action: &'static str,
        kind: &'static str,
        /// `namespace/name`, or `name` when cluster-scoped.
        object: ObjectKey,
        source: kube::Error,
    },
}

/// The label selector of the objects the node authorizer owns.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY_NODE_AUTHORIZER}")
}

/// The label selector of its cluster-scoped objects: those binding ServiceAccounts of
/// `identity_namespace` (another node authorizer's, of another identity namespace, are
/// not its own).
pub fn cluster_managed_selector(identity_namespace: &str) -> String {
    format!(
        "{},{NODE_IDENTITY_NAMESPACE_LABEL}={identity_namespace}",
        managed_selector()
    )
}

/// The informers it reads: the shared pods, claims and Nodes, and its own objects (label
/// [`managed_selector`]).
pub struct Informers {
    pub pods: Arc<Informer<Pod>>,
    pub claims: Arc<Informer<PersistentVolumeClaim>>,
    pub nodes: Arc<Informer<Node>>,
    /// The VolumeAttachments (shared with the attach/detach controller).
    pub volume_attachments: Arc<Informer<VolumeAttachment>>,
    pub roles: Arc<Informer<Role>>,
    pub bindings: Arc<Informer<RoleBinding>>,
    pub service_accounts: Arc<Informer<ServiceAccount>>,
}

pub struct NodeAuthorizer {
    client: Client,
    informers: Informers,
    /// Its ClusterRoles and ClusterRoleBindings ([`cluster_managed_selector`]): read by
    /// this controller only, so watched by it ([`Self::run`]) rather than by the manager.
    cluster_roles: Arc<Informer<ClusterRole>>,
    cluster_bindings: Arc<Informer<ClusterRoleBinding>>,
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
        let owned = watcher::Config::default()
            .page_size(500)
            .labels(&cluster_managed_selector(&identity_namespace));
        let c = Arc::new(NodeAuthorizer {
            cluster_roles: Informer::new(Api::all(client.clone()), owned.clone()),
            cluster_bindings: Informer::new(Api::all(client.clone()), owned),
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
        // A claim's bound volume changed: the nodes of the pods using it.
        let (e, weak) = (enqueue.clone(), Arc::downgrade(&c));
        c.informers.claims.add_handler(move |change| {
            let claim = match change {
                Change::Added(c) | Change::Deleted(c) => {
                    grants::claim_volume_name(c).is_some().then_some(c)
                }
                Change::Updated { old, new } => (grants::claim_volume_name(old)
                    != grants::claim_volume_name(new))
                .then_some(new),
            };
            let (Some(claim), Some(c)) = (claim, weak.upgrade()) else {
                return;
            };
            let (ns, name) = (
                claim.metadata.namespace.as_deref().unwrap_or_default(),
                claim.metadata.name.as_deref().unwrap_or_default(),
            );
            let pods = c.informers.pods.store().state();
            for n in grants::nodes_using_claim(ns, name, pods.iter().map(|p| p.as_ref())) {
                e(&n)
            }
        });
        let e = enqueue.clone();
        c.informers.nodes.add_handler(move |change| match change {
            Change::Added(n) | Change::Deleted(n) => {
                e(n.metadata.name.as_deref().unwrap_or_default())
            }
            Change::Updated { .. } => {}
        });
        // A VolumeAttachment created, deleted or moved: the nodes it names.
        let e = enqueue.clone();
        c.informers.volume_attachments.add_handler(move |change| {
            let node = |va: &VolumeAttachment| va.spec.as_ref().map(|s| s.node_name.clone());
            match change {
                Change::Added(va) | Change::Deleted(va) => {
                    if let Some(n) = node(va) {
                        e(&n)
                    }
                }
                Change::Updated { old, new } => {
                    if node(old) != node(new) {
                        for n in [node(old), node(new)].into_iter().flatten() {
                            e(&n)
                        }
                    }
                }
            }
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
        let e = enqueue.clone();
        c.cluster_roles.add_handler(move |change| {
            if let Some(n) = changed_name(&change).and_then(node_of_role) {
                e(n)
            }
        });
        let e = enqueue.clone();
        c.cluster_bindings.add_handler(move |change| {
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

    /// Watches its ClusterRoles and ClusterRoleBindings and runs the workers until the
    /// queue shuts down (or, never in practice, one of those watches ends: then it
    /// returns, and the supervisor takes the process down).
    pub async fn run(self: Arc<Self>, workers: usize) {
        let roles_watch = Arc::clone(&self.cluster_roles).run();
        let bindings_watch = Arc::clone(&self.cluster_bindings).run();
        let i = &self.informers;
        let synced = vec![
            i.pods.has_synced(),
            i.claims.has_synced(),
            i.nodes.has_synced(),
            i.volume_attachments.has_synced(),
            i.roles.has_synced(),
            i.bindings.has_synced(),
            i.service_accounts.has_synced(),
            self.cluster_roles.has_synced(),
            self.cluster_bindings.has_synced(),
        ];
        let this = Arc::clone(&self);
        let work = async move {
            wait_for_named_cache_sync(CONTROLLER_NAME, synced).await;
            run_workers(self.queue(), workers, self.metrics.clone(), move |key| {
                let this = Arc::clone(&this);
                async move { this.sync_node(&key.name).await }
            })
            .await
        };
        tokio::select! {
            _ = roles_watch => tracing::error!("the watch of its cluster roles ended"),
            _ = bindings_watch => tracing::error!("the watch of its cluster role bindings ended"),
            _ = work => {}
        }
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

    /// What the cluster holds of `node`'s ClusterRole and ClusterRoleBinding, from the
    /// caches.
    fn cluster_actual(&self, node: &str) -> ClusterActual {
        let key = ObjectKey::new(None, &node_cluster_role_name(node));
        ClusterActual {
            cluster_role: self
                .cluster_roles
                .get(&key)
                .map(|r| r.rules.clone().unwrap_or_default()),
            cluster_binding: self
                .cluster_bindings
                .get(&key)
                .map(|b| grants::cluster_binding_is_current(&b, node, &self.identity_namespace)),
        }
    }

    /// Brings one node's ServiceAccount, Roles, RoleBindings, ClusterRole and
    /// ClusterRoleBinding in line with its Node, the pods bound to it and their claims.
    pub async fn sync_node(&self, node: &str) -> Result<Option<Duration>, Error> {
        let exists = self.informers.nodes.get(&node_key(node)).is_some();
        let pods = self.informers.pods.store().state();
        let desired = grants::node_grants(node, pods.iter().map(|p| p.as_ref()));
        let volumes = grants::node_volume_names(&desired, |ns, name| {
            self.informers.claims.get(&ObjectKey::new(Some(ns), name))
        });
        let attachments = self.informers.volume_attachments.store().state();
        let cluster = ClusterGrant {
            volumes,
            attachments: grants::node_volume_attachment_names(
                node,
                attachments.iter().map(|va| va.as_ref()),
            ),
        };
        let actions = grants::sync_actions(exists, &desired, &self.actual(node))
            .into_iter()
            .chain(grants::cluster_sync_actions(
                &cluster,
                &self.cluster_actual(node),
            ));
        for action in actions {
            self.write(node, action).await?;
        }
        Ok(None)
    }

    async fn write(&self, node: &str, action: Action) -> Result<(), Error> {
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let labels = json!({ MANAGED_BY_LABEL: MANAGED_BY_NODE_AUTHORIZER });
        let role_name = node_role_name(node);
        // `namespace` empty: a cluster-scoped object.
        let err = |action: &'static str, kind: &'static str, namespace: &str, name: &str| {
            let node = node.to_string();
            let object = ObjectKey::new(Some(namespace).filter(|ns| !ns.is_empty()), name);
            move |source| Error::Write {
                node,
                action,
                kind,
                object,
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
            Action::ApplyClusterRole { rules } => {
                let name = node_cluster_role_name(node);
                let role = json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "metadata": {"name": name, "labels": self.cluster_labels()},
                    "rules": rules,
                });
                Api::<ClusterRole>::all(self.client.clone())
                    .patch(&name, &apply, &Patch::Apply(&role))
                    .await
                    .map_err(err("applying", "clusterrole", "", &name))?;
            }
            Action::DeleteClusterRole => {
                let name = node_cluster_role_name(node);
                delete(Api::<ClusterRole>::all(self.client.clone()), &name)
                    .await
                    .map_err(err("deleting", "clusterrole", "", &name))?;
            }
            Action::ApplyClusterBinding => {
                let name = node_cluster_role_name(node);
                let (role_ref, subjects) =
                    grants::cluster_binding_parts(node, &self.identity_namespace);
                let binding = json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                    "metadata": {"name": name, "labels": self.cluster_labels()},
                    "roleRef": role_ref, "subjects": subjects,
                });
                Api::<ClusterRoleBinding>::all(self.client.clone())
                    .patch(&name, &apply, &Patch::Apply(&binding))
                    .await
                    .map_err(err("applying", "clusterrolebinding", "", &name))?;
            }
            Action::DeleteClusterBinding => {
                let name = node_cluster_role_name(node);
                delete(Api::<ClusterRoleBinding>::all(self.client.clone()), &name)
                    .await
                    .map_err(err("deleting", "clusterrolebinding", "", &name))?;
            }
        }
        Ok(())
    }

    /// The labels of its cluster-scoped objects ([`cluster_managed_selector`]).
    fn cluster_labels(&self) -> serde_json::Value {
        json!({
            MANAGED_BY_LABEL: MANAGED_BY_NODE_AUTHORIZER,
            NODE_IDENTITY_NAMESPACE_LABEL: self.identity_namespace,
        })
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
    ignore_not_found(api.delete(name, &DeleteParams::default()).await)
}
