//! The I/O of `kubectl rekube tree KIND/NAME`: lists the namespace's rekube workload and
//! Service objects and prints the ownership tree under the named one ([`tree_view`]
//! decides what it looks like).
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use rekube_crds::{
    Deployment, EndpointSlice, Endpoints, PersistentVolumeClaim, Pod, ReplicaSet, Service,
};
use serde::de::DeserializeOwned;

use crate::tree_view::{self, Object};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{0:?}: want KIND/NAME, KIND one of deployment (rdeploy), replicaset (rrs), pod (rpod), \
         service (rsvc), persistentvolumeclaim (rpvc)"
    )]
    Target(String),
    #[error("listing {kind} in namespace {namespace}: {source}")]
    List {
        kind: String,
        namespace: String,
        source: kube::Error,
    },
    #[error("{kind}.rekube.io {name:?} not found in namespace {namespace}")]
    NotFound {
        kind: &'static str,
        name: String,
        namespace: String,
    },
}

/// The upstream kind `target`'s KIND names (kubectl's names, short names and rekube's).
fn parse_target(target: &str) -> Result<(&'static str, &str), Error> {
    let bad = || Error::Target(target.into());
    let (kind, name) = target.split_once('/').ok_or_else(bad)?;
    let kind = match kind
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .as_str()
    {
        "deployment" | "deployments" | "deploy" | "rdeploy" => "Deployment",
        "replicaset" | "replicasets" | "rs" | "rrs" => "ReplicaSet",
        "pod" | "pods" | "po" | "rpod" => "Pod",
        "service" | "services" | "svc" | "rsvc" => "Service",
        "persistentvolumeclaim" | "persistentvolumeclaims" | "pvc" | "rpvc" => {
            "PersistentVolumeClaim"
        }
        _ => return Err(bad()),
    };
    if name.is_empty() {
        return Err(bad());
    }
    Ok((kind, name))
}

/// Prints the tree under `target` (KIND/NAME) in `namespace`.
pub async fn tree(client: &Client, namespace: &str, target: &str) -> Result<String, Error> {
    let (kind, name) = parse_target(target)?;
    let mut objects = Vec::new();
    for d in list::<Deployment>(client, namespace).await? {
        objects.push(object(&d, tree_view::deployment_status(&d)));
    }
    for rs in list::<ReplicaSet>(client, namespace).await? {
        objects.push(object(&rs, tree_view::replica_set_status(&rs)));
    }
    for p in list::<Pod>(client, namespace).await? {
        objects.push(object(&p, tree_view::pod_status(&p)));
    }
    for c in list::<PersistentVolumeClaim>(client, namespace).await? {
        objects.push(object(&c, tree_view::claim_status(&c)));
    }
    let services = list::<Service>(client, namespace).await?;
    for s in &services {
        objects.push(object(s, tree_view::service_status(s)));
    }
    for es in list::<EndpointSlice>(client, namespace).await? {
        objects.push(object(&es, tree_view::endpoint_slice_status(&es)));
    }
    // Endpoints carry no ownerReference (upstream's endpoints controller sets none): they
    // belong to the Service of their name.
    for e in list::<Endpoints>(client, namespace).await? {
        let mut o = object(&e, tree_view::endpoints_status(&e));
        o.owners.extend(
            services
                .iter()
                .filter(|s| s.name_any() == e.name_any())
                .filter_map(|s| s.uid()),
        );
        objects.push(o);
    }
    let root = objects
        .iter()
        .find(|o| o.kind == kind && o.name == name)
        .ok_or_else(|| Error::NotFound {
            kind,
            name: name.into(),
            namespace: namespace.into(),
        })?;
    Ok(tree_view::render(&objects, &root.uid.clone()).unwrap_or_default())
}

async fn list<K>(client: &Client, namespace: &str) -> Result<Vec<K>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|source| Error::List {
            kind: K::kind(&Default::default()).into_owned(),
            namespace: namespace.into(),
            source,
        })
}

fn object<K: Resource<DynamicType = ()>>(o: &K, status: String) -> Object {
    Object {
        kind: K::kind(&()).into_owned(),
        name: o.meta().name.clone().unwrap_or_default(),
        uid: o.meta().uid.clone().unwrap_or_default(),
        owners: o.owner_references().iter().map(|r| r.uid.clone()).collect(),
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            parse_target("deployment/web").unwrap(),
            ("Deployment", "web")
        );
        assert_eq!(parse_target("rdeploy/web").unwrap(), ("Deployment", "web"));
        assert_eq!(
            parse_target("deployments.rekube.io/web").unwrap(),
            ("Deployment", "web")
        );
        assert_eq!(parse_target("svc/web").unwrap(), ("Service", "web"));
        assert_eq!(
            parse_target("rpvc/data").unwrap(),
            ("PersistentVolumeClaim", "data")
        );
        for bad in ["web", "deployment/", "statefulset/web"] {
            let e = parse_target(bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{bad:?}: want KIND/NAME")), "{e}");
        }
    }
}
