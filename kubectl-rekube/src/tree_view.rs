//! What `kubectl rekube tree` prints (the kubectl-tree plugin's view, for rekube objects):
//! the pure part. Objects become [`Object`]s with a one-line status each; [`render`] walks
//! the ownerReferences down from the named object and draws the tree.
use rekube_crds::{
    Deployment, EndpointSlice, Endpoints, PersistentVolumeClaim, Pod, ReplicaSet, Service,
};

/// One object of the tree: kind, name, uid, the uids of its owners, and its status line.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub owners: Vec<String>,
    pub status: String,
}

/// The order children of one owner are listed in (then by name).
const KIND_ORDER: [&str; 7] = [
    "Deployment",
    "ReplicaSet",
    "Pod",
    "PersistentVolumeClaim",
    "Service",
    "EndpointSlice",
    "Endpoints",
];

/// The tree under the object with `root_uid`, one line per object: the name column
/// (`Kind/name` indented with the tree's branches) padded to one width, then the status.
/// Objects owned more than once appear under each owner; a cycle of ownerReferences is cut.
pub fn render(objects: &[Object], root_uid: &str) -> Option<String> {
    let root = objects.iter().find(|o| o.uid == root_uid)?;
    let mut rows: Vec<(String, &str)> =
        vec![(format!("{}/{}", root.kind, root.name), &root.status)];
    let mut path = vec![root.uid.as_str()];
    walk(objects, root, "", &mut path, &mut rows);
    let width = rows
        .iter()
        .map(|(n, _)| n.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = format!("{:width$}  STATUS\n", "NAME");
    for (name, status) in rows {
        let pad = width - name.chars().count();
        out.push_str(format!("{name}{}  {status}", " ".repeat(pad)).trim_end());
        out.push('\n');
    }
    Some(out)
}

fn walk<'a>(
    objects: &'a [Object],
    parent: &Object,
    prefix: &str,
    path: &mut Vec<&'a str>,
    rows: &mut Vec<(String, &'a str)>,
) {
    let mut children: Vec<&Object> = objects
        .iter()
        .filter(|o| o.owners.contains(&parent.uid) && !path.contains(&o.uid.as_str()))
        .collect();
    children.sort_by_key(|o| (KIND_ORDER.iter().position(|k| *k == o.kind), o.name.clone()));
    let last = children.len().saturating_sub(1);
    for (i, child) in children.into_iter().enumerate() {
        let (branch, next) = if i == last {
            ("└─", "  ")
        } else {
            ("├─", "│ ")
        };
        rows.push((
            format!("{prefix}{branch}{}/{}", child.kind, child.name),
            &child.status,
        ));
        path.push(&child.uid);
        walk(objects, child, &format!("{prefix}{next}"), path, rows);
        path.pop();
    }
}

/// "3/3 ready, 3 up-to-date, 3 available" (kubectl get deployment's columns), and the
/// Progressing condition's reason when the rollout is not complete.
pub fn deployment_status(d: &Deployment) -> String {
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let st = d.status.clone().unwrap_or_default();
    let mut s = format!(
        "{}/{want} ready, {} up-to-date, {} available",
        st.ready_replicas.unwrap_or(0),
        st.updated_replicas.unwrap_or(0),
        st.available_replicas.unwrap_or(0)
    );
    if let Some(c) = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        && c.reason.as_deref() != Some("NewReplicaSetAvailable")
    {
        s.push_str(&format!(", {}", c.reason.as_deref().unwrap_or(&c.status)));
    }
    if d.spec.as_ref().and_then(|s| s.paused) == Some(true) {
        s.push_str(", paused");
    }
    s
}

/// "2/3 ready" (desired from the spec).
pub fn replica_set_status(rs: &ReplicaSet) -> String {
    let want = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = rs
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    format!("{ready}/{want} ready")
}

/// "Running, Ready, 10.245.1.3 on rekube-node-1": the phase (Terminating once deleted),
/// readiness, the pod IP and the node; "Pending, not scheduled" before binding.
pub fn pod_status(p: &Pod) -> String {
    let st = p.status.clone().unwrap_or_default();
    let phase = if p.metadata.deletion_timestamp.is_some() {
        "Terminating".to_string()
    } else {
        st.phase.clone().unwrap_or_else(|| "Pending".into())
    };
    let ready = st
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let mut s = format!("{phase}, {}", if ready { "Ready" } else { "not ready" });
    let restarts: i32 = st
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .sum();
    if restarts > 0 {
        s.push_str(&format!(", {restarts} restarts"));
    }
    match (
        st.pod_ip.as_deref(),
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
    ) {
        (Some(ip), Some(node)) => s.push_str(&format!(", {ip} on {node}")),
        (None, Some(node)) => s.push_str(&format!(", on {node}")),
        _ => s.push_str(", not scheduled"),
    }
    s
}

/// "Bound to pvc-…, 1Gi, RWO" or the phase.
pub fn claim_status(c: &PersistentVolumeClaim) -> String {
    let st = c.status.clone().unwrap_or_default();
    let phase = st.phase.unwrap_or_else(|| "Pending".into());
    match c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
        Some(v) if phase == "Bound" => {
            let size = st
                .capacity
                .as_ref()
                .and_then(|c| c.get("storage"))
                .map(|q| format!(", {}", q.0))
                .unwrap_or_default();
            format!("Bound to {v}{size}")
        }
        _ => phase,
    }
}

/// "ClusterIP 10.112.0.10, 80/TCP" (kubectl get service's type, cluster IP and ports).
pub fn service_status(s: &Service) -> String {
    let spec = s.spec.clone().unwrap_or_default();
    let kind = spec.type_.unwrap_or_else(|| "ClusterIP".into());
    let ip = spec.cluster_ip.unwrap_or_else(|| "<none>".into());
    let ports: Vec<String> = spec
        .ports
        .iter()
        .flatten()
        .map(|p| {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            match p.node_port {
                Some(n) => format!("{}:{n}/{proto}", p.port),
                None => format!("{}/{proto}", p.port),
            }
        })
        .collect();
    if ports.is_empty() {
        format!("{kind} {ip}")
    } else {
        format!("{kind} {ip}, {}", ports.join(","))
    }
}

/// "3 ready of 3: 10.245.0.4, 10.245.1.3, 10.245.1.4".
pub fn endpoint_slice_status(s: &EndpointSlice) -> String {
    let endpoints = &s.endpoints;
    let ready = endpoints
        .iter()
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .count();
    let addresses: Vec<&str> = endpoints
        .iter()
        .flat_map(|e| e.addresses.iter().map(String::as_str))
        .collect();
    addresses_line(ready, endpoints.len(), &addresses)
}

/// The same for the Endpoints of a Service: ready addresses and not-ready ones.
pub fn endpoints_status(e: &Endpoints) -> String {
    let subsets = e.subsets.iter().flatten();
    let ready: Vec<&str> = subsets
        .clone()
        .flat_map(|s| s.addresses.iter().flatten().map(|a| a.ip.as_str()))
        .collect();
    let not_ready = subsets
        .flat_map(|s| s.not_ready_addresses.iter().flatten())
        .count();
    addresses_line(ready.len(), ready.len() + not_ready, &ready)
}

fn addresses_line(ready: usize, all: usize, addresses: &[&str]) -> String {
    if addresses.is_empty() {
        return format!("{ready} ready of {all}");
    }
    format!("{ready} ready of {all}: {}", addresses.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(kind: &str, name: &str, uid: &str, owners: &[&str], status: &str) -> Object {
        Object {
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            owners: owners.iter().map(|s| s.to_string()).collect(),
            status: status.into(),
        }
    }

    #[test]
    fn renders_a_deployment_with_its_replica_sets_and_pods() {
        let objects = vec![
            obj("Pod", "web-b-2", "p2", &["rs-b"], "Running, Ready"),
            obj("ReplicaSet", "web-b", "rs-b", &["d"], "2/2 ready"),
            obj("Deployment", "web", "d", &[], "2/2 ready"),
            obj("Pod", "web-b-1", "p1", &["rs-b"], "Running, Ready"),
            obj("ReplicaSet", "web-a", "rs-a", &["d"], "0/0 ready"),
            obj("Pod", "other", "p3", &["rs-x"], "Running"),
        ];
        let want = "\
NAME                STATUS
Deployment/web      2/2 ready
├─ReplicaSet/web-a  0/0 ready
└─ReplicaSet/web-b  2/2 ready
  ├─Pod/web-b-1     Running, Ready
  └─Pod/web-b-2     Running, Ready
";
        assert_eq!(render(&objects, "d").unwrap(), want);
    }

    #[test]
    fn renders_a_service_with_its_slices_and_a_pod_with_its_claim() {
        let objects = vec![
            obj("Service", "web", "s", &[], "ClusterIP 10.112.0.10, 80/TCP"),
            obj("Endpoints", "web", "e", &["s"], "1 ready of 1: 10.0.0.1"),
            obj(
                "EndpointSlice",
                "web-x",
                "es",
                &["s"],
                "1 ready of 1: 10.0.0.1",
            ),
            obj("ReplicaSet", "rs", "rs", &[], "1/1 ready"),
            obj("Pod", "p", "p", &["rs"], "Running"),
            obj(
                "PersistentVolumeClaim",
                "p-data",
                "c",
                &["p"],
                "Bound to pv-1",
            ),
        ];
        let want = "\
NAME                   STATUS
Service/web            ClusterIP 10.112.0.10, 80/TCP
├─EndpointSlice/web-x  1 ready of 1: 10.0.0.1
└─Endpoints/web        1 ready of 1: 10.0.0.1
";
        assert_eq!(render(&objects, "s").unwrap(), want);
        let rs = render(&objects, "rs").unwrap();
        assert!(
            rs.ends_with("  └─PersistentVolumeClaim/p-data  Bound to pv-1\n"),
            "{rs}"
        );
    }

    #[test]
    fn an_unknown_root_is_none_and_an_ownership_cycle_is_cut() {
        let objects = vec![
            obj("Pod", "a", "a", &["b"], ""),
            obj("Pod", "b", "b", &["a"], ""),
        ];
        assert_eq!(render(&objects, "zz"), None);
        assert_eq!(
            render(&objects, "a").unwrap(),
            "NAME     STATUS\nPod/a\n└─Pod/b\n"
        );
    }

    #[test]
    fn status_lines() {
        let d: Deployment = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": 3, "selector": {}, "template": {}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}
        }))
        .unwrap();
        assert_eq!(
            deployment_status(&d),
            "2/3 ready, 3 up-to-date, 2 available, ReplicaSetUpdated"
        );
        let p: Pod = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.245.1.3",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 2}]}
        }))
        .unwrap();
        assert_eq!(
            pod_status(&p),
            "Running, Ready, 2 restarts, 10.245.1.3 on n1"
        );
        let pending: Pod = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": []}
        }))
        .unwrap();
        assert_eq!(pod_status(&pending), "Pending, not ready, not scheduled");
        let s: Service = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "clusterIP": "10.112.0.10",
                "ports": [{"port": 80, "nodePort": 30080}, {"port": 53, "protocol": "UDP"}]}
        }))
        .unwrap();
        assert_eq!(
            service_status(&s),
            "NodePort 10.112.0.10, 80:30080/TCP,53/UDP"
        );
        let es: EndpointSlice = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "EndpointSlice", "metadata": {"name": "web-x"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}}]
        }))
        .unwrap();
        assert_eq!(
            endpoint_slice_status(&es),
            "1 ready of 2: 10.0.0.1, 10.0.0.2"
        );
        let e: Endpoints = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "Endpoints", "metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "10.0.0.1"}], "notReadyAddresses": [{"ip": "10.0.0.2"}]}]
        }))
        .unwrap();
        assert_eq!(endpoints_status(&e), "1 ready of 2: 10.0.0.1");
        let c: PersistentVolumeClaim = serde_json::from_value(json!({
            "apiVersion": "rekube.io/v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
            "spec": {"volumeName": "pv-1"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}
        }))
        .unwrap();
        assert_eq!(claim_status(&c), "Bound to pv-1, 1Gi");
    }
}
