//! Bad manifests are refused by the apiserver at the earliest point (CRD schema, CRD CEL
//! rules, rekube's ValidatingAdmissionPolicies) with a message that says what is wrong,
//! and nothing is created.
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use rekube_e2e::{TestNamespace, to_rekube, type_of};
use serde_json::{Value, json};

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "busybox"}]}
            }
        }
    })
}

fn replica_set() -> Value {
    let mut rs = deployment();
    rs["kind"] = json!("ReplicaSet");
    rs
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pod"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    })
}

fn service() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}
    })
}

fn pvc() -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "claim"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    })
}

fn pv() -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pv"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/srv/pv"}}
    })
}

fn storage_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "sc"},
        "provisioner": "local.rekube.io", "parameters": {"type": "ssd"}
    })
}

fn pod_with_resources() -> Value {
    let mut p = pod();
    p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "500m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}});
    p["spec"]["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute", "tolerationSeconds": 60}]);
    p["spec"]["activeDeadlineSeconds"] = json!(600);
    p
}

fn bound_pod() -> Value {
    let mut p = pod();
    p["spec"]["nodeName"] = json!("node-a");
    p
}

fn gated_pod() -> Value {
    let mut p = pod();
    p["spec"]["schedulingGates"] = json!([{"name": "example.com/wait"}]);
    p
}

fn bound_pvc() -> Value {
    let mut c = pvc();
    c["spec"]["volumeName"] = json!("pv-a");
    c
}

fn node() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node"},
        "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "providerID": "rekube://node"}
    })
}

fn service_with_ip() -> Value {
    let mut s = service();
    s["spec"]["clusterIP"] = json!("10.96.0.10");
    s["spec"]["clusterIPs"] = json!(["10.96.0.10"]);
    s
}

fn volume_attachment() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment", "metadata": {"name": "va"},
        "spec": {"attacher": "local.rekube.io", "nodeName": "node-a", "source": {"persistentVolumeName": "pv-a"}}
    })
}

/// upstream validation_test.go's good slice (generateIPAddresses(1), hostname valid-123).
fn endpoint_slice() -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "hello"},
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.0.0.1"], "hostname": "valid-123"}]
    })
}

fn ipv6_endpoint_slice() -> Value {
    let mut s = endpoint_slice();
    s["addressType"] = json!("IPv6");
    s["endpoints"][0]["addresses"] = json!(["2001:db8::1"]);
    s
}

fn fqdn_endpoint_slice() -> Value {
    let mut s = endpoint_slice();
    s["addressType"] = json!("FQDN");
    s["endpoints"][0]["addresses"] = json!(["foo.example.com"]);
    s
}

fn set_addresses(s: &mut Value, addresses: Value) {
    s["endpoints"][0]["addresses"] = addresses;
}

/// One bad manifest: the valid base, the change that breaks it, and what the apiserver
/// must say.
struct Case {
    name: &'static str,
    base: fn() -> Value,
    mutate: fn(&mut Value),
    message: &'static str,
}

const CREATE_CASES: &[Case] = &[
    Case {
        name: "maxSurge and maxUnavailable both 0",
        base: deployment,
        mutate: |d| d["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}),
        message: "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: may not be 0 when maxSurge is 0",
    },
    Case {
        name: "maxUnavailable over 100%",
        base: deployment,
        mutate: |d| d["spec"]["strategy"] = json!({"rollingUpdate": {"maxUnavailable": "150%"}}),
        message: "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must be a non-negative integer or a percentage like '25%' no greater than 100%",
    },
    Case {
        name: "negative maxSurge",
        base: deployment,
        mutate: |d| d["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": -1}}),
        message: "spec.strategy.rollingUpdate.maxSurge: Invalid value: -1: must be a non-negative integer or a percentage like '25%'",
    },
    Case {
        name: "rollingUpdate with Recreate",
        base: deployment,
        mutate: |d| {
            d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})
        },
        message: "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy type is 'Recreate'",
    },
    Case {
        name: "deployment selector does not match template labels",
        base: deployment,
        mutate: |d| d["spec"]["template"]["metadata"]["labels"] = json!({"app": "other"}),
        message: "spec.template.metadata.labels: selector does not match template labels",
    },
    Case {
        name: "deployment matchExpressions do not match template labels",
        base: deployment,
        mutate: |d| {
            d["spec"]["selector"]["matchExpressions"] =
                json!([{"key": "tier", "operator": "Exists"}])
        },
        message: "spec.template.metadata.labels: selector does not match template labels",
    },
    Case {
        name: "empty deployment selector",
        base: deployment,
        mutate: |d| d["spec"]["selector"] = json!({}),
        message: "spec.selector: Invalid value: empty selector is invalid for deployment",
    },
    Case {
        name: "negative replicas",
        base: deployment,
        mutate: |d| d["spec"]["replicas"] = json!(-1),
        message: "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
    },
    Case {
        name: "progressDeadlineSeconds not above minReadySeconds",
        base: deployment,
        mutate: |d| {
            d["spec"]["minReadySeconds"] = json!(30);
            d["spec"]["progressDeadlineSeconds"] = json!(30);
        },
        message: "spec.progressDeadlineSeconds: Invalid value: must be greater than minReadySeconds",
    },
    Case {
        name: "template restartPolicy other than Always",
        base: deployment,
        mutate: |d| d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never"),
        message: "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
    },
    Case {
        name: "replicaset selector does not match template labels",
        base: replica_set,
        mutate: |d| d["spec"]["selector"]["matchLabels"] = json!({"app": "web", "extra": "x"}),
        message: "spec.template.metadata.labels: selector does not match template labels",
    },
    Case {
        name: "negative replicaset replicas",
        base: replica_set,
        mutate: |d| d["spec"]["replicas"] = json!(-3),
        message: "spec.replicas in body should be greater than or equal to 0",
    },
    Case {
        name: "duplicate container names",
        base: pod,
        mutate: |p| {
            p["spec"]["containers"] =
                json!([{"name": "main", "image": "a"}, {"name": "main", "image": "b"}])
        },
        message: "spec.containers[1]: Duplicate value: {\"name\":\"main\"}",
    },
    Case {
        name: "container name shared with an init container",
        base: pod,
        mutate: |p| p["spec"]["initContainers"] = json!([{"name": "main", "image": "a"}]),
        message: "spec: container names must be unique across containers, initContainers and ephemeralContainers",
    },
    Case {
        name: "container name not a DNS label",
        base: pod,
        mutate: |p| p["spec"]["containers"][0]["name"] = json!("Main_1"),
        message: "spec.containers[0].name: Invalid value: \"Main_1\": spec.containers[0].name in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
    },
    Case {
        name: "unknown restartPolicy",
        base: pod,
        mutate: |p| p["spec"]["restartPolicy"] = json!("Sometimes"),
        message: "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
    },
    Case {
        name: "pod without containers",
        base: pod,
        mutate: |p| p["spec"]["containers"] = json!([]),
        message: "spec.containers: Invalid value: 0: spec.containers in body should have at least 1 items",
    },
    Case {
        name: "pvc without requests.storage",
        base: pvc,
        mutate: |c| c["spec"]["resources"] = json!({"requests": {"cpu": "1"}}),
        message: "spec.resources: Required value: resources.requests.storage is required",
    },
    Case {
        name: "pvc without access modes",
        base: pvc,
        mutate: |c| {
            c["spec"]
                .as_object_mut()
                .unwrap()
                .remove("accessModes")
                .map(drop)
                .unwrap_or(())
        },
        message: "spec.accessModes: Required value: at least 1 access mode is required",
    },
    Case {
        name: "pv with two volume sources",
        base: pv,
        mutate: |v| v["spec"]["nfs"] = json!({"server": "nfs.example", "path": "/export"}),
        message: "spec: Forbidden: may not specify more than 1 volume type",
    },
    Case {
        name: "pv without a volume source",
        base: pv,
        mutate: |v| {
            v["spec"]
                .as_object_mut()
                .unwrap()
                .remove("hostPath")
                .map(drop)
                .unwrap_or(())
        },
        message: "spec: Required value: must specify a volume type",
    },
    Case {
        name: "unknown pv reclaim policy",
        base: pv,
        mutate: |v| v["spec"]["persistentVolumeReclaimPolicy"] = json!("Keep"),
        message: "spec.persistentVolumeReclaimPolicy: Unsupported value: \"Keep\": supported values: \"Retain\", \"Recycle\", \"Delete\"",
    },
    Case {
        name: "service port 0",
        base: service,
        mutate: |s| s["spec"]["ports"][0]["port"] = json!(0),
        message: "spec.ports[0].port: Invalid value: 0: spec.ports[0].port in body should be greater than or equal to 1",
    },
    Case {
        name: "service port above 65535",
        base: service,
        mutate: |s| s["spec"]["ports"][0]["port"] = json!(70000),
        message: "spec.ports[0].port: Invalid value: 70000: spec.ports[0].port in body should be less than or equal to 65535",
    },
    Case {
        name: "service targetPort out of range",
        base: service,
        mutate: |s| s["spec"]["ports"][0]["targetPort"] = json!(0),
        message: "spec.ports[].targetPort: must be a port number between 1 and 65535 or an IANA service name",
    },
    Case {
        name: "unnamed ports on a multi-port service",
        base: service,
        mutate: |s| s["spec"]["ports"] = json!([{"port": 80}, {"port": 81}]),
        message: "spec.ports: Required value: port names are required when a service has more than one port",
    },
    Case {
        name: "request quantity that does not parse",
        base: pod,
        mutate: |p| p["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "lots"}}),
        message: "spec.containers[0].resources.requests.cpu: Invalid value: \"lots\": spec.containers[0].resources.requests.cpu in body should match",
    },
    Case {
        name: "negative limit",
        base: pod,
        mutate: |p| p["spec"]["containers"][0]["resources"] = json!({"limits": {"memory": "-1Gi"}}),
        message: "spec.containers[0].resources.limits.memory: Invalid value: \"-1Gi\"",
    },
    Case {
        name: "emptyDir sizeLimit that does not parse",
        base: pod,
        mutate: |p| {
            p["spec"]["volumes"] = json!([{"name": "scratch", "emptyDir": {"sizeLimit": "1 GB"}}])
        },
        message: "spec.volumes[0].emptyDir.sizeLimit: Invalid value: \"1 GB\"",
    },
    Case {
        name: "pod overhead that does not parse",
        base: pod,
        mutate: |p| p["spec"]["overhead"] = json!({"cpu": "a lot"}),
        message: "spec.overhead.cpu: Invalid value: \"a lot\"",
    },
    Case {
        name: "pvc storage request that does not parse",
        base: pvc,
        mutate: |c| c["spec"]["resources"]["requests"]["storage"] = json!("lots"),
        message: "spec.resources.requests.storage: Invalid value: \"lots\"",
    },
    Case {
        name: "pv capacity that does not parse",
        base: pv,
        mutate: |v| v["spec"]["capacity"]["storage"] = json!("1.5.5Gi"),
        message: "spec.capacity.storage: Invalid value: \"1.5.5Gi\"",
    },
    Case {
        name: "request above limit",
        base: pod,
        mutate: |p| {
            p["spec"]["containers"][0]["resources"] =
                json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}})
        },
        message: "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1500m",
    },
    Case {
        name: "init container request above limit",
        base: pod,
        mutate: |p| {
            p["spec"]["initContainers"] = json!([
            {"name": "a", "image": "busybox"},
            {"name": "b", "image": "busybox", "resources": {"requests": {"memory": "1Gi"}, "limits": {"memory": 1048576}}}])
        },
        message: "spec.initContainers[1].resources.requests: Invalid value: \"1Gi\": must be less than or equal to memory limit of 1048576",
    },
    Case {
        name: "pod-level request above limit",
        base: pod,
        mutate: |p| {
            p["spec"]["resources"] =
                json!({"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}})
        },
        message: "spec.resources.requests: Invalid value: \"2Gi\": must be less than or equal to memory limit of 1Gi",
    },
    Case {
        name: "deployment template request above limit",
        base: deployment,
        mutate: |d| {
            d["spec"]["template"]["spec"]["containers"][0]["resources"] =
                json!({"requests": {"cpu": "1"}, "limits": {"cpu": "100m"}})
        },
        message: "spec.template.spec.containers[0].resources.requests: Invalid value: \"1\": must be less than or equal to cpu limit of 100m",
    },
    Case {
        name: "label value with a space in a deployment's template and selector",
        base: deployment,
        mutate: |d| {
            d["spec"]["selector"]["matchLabels"]["bad"] = json!("has space");
            d["spec"]["template"]["metadata"]["labels"]["bad"] = json!("has space");
        },
        message: "spec.template.metadata.labels.bad: Invalid value: \"has space\": spec.template.metadata.labels.bad in body should match '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$'",
    },
    Case {
        name: "label value with a space in a replicaset's selector",
        base: replica_set,
        mutate: |d| {
            d["spec"]["selector"]["matchLabels"]["bad"] = json!("has space");
            d["spec"]["template"]["metadata"]["labels"]["bad"] = json!("has space");
        },
        message: "spec.selector.matchLabels.bad: Invalid value: \"has space\"",
    },
    Case {
        name: "label key that is not a qualified name in a template",
        base: deployment,
        mutate: |d| d["spec"]["template"]["metadata"]["labels"]["bad key"] = json!("x"),
        message: "spec.template.metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters",
    },
    Case {
        name: "selector key that is not a qualified name",
        base: replica_set,
        mutate: |d| {
            d["spec"]["selector"]["matchLabels"]["-bad"] = json!("x");
            d["spec"]["template"]["metadata"]["labels"]["-bad"] = json!("x");
        },
        message: "spec.selector.matchLabels: Invalid value: \"-bad\": name part must consist of alphanumeric characters",
    },
    Case {
        name: "selector expression key that is not a qualified name",
        base: deployment,
        mutate: |d| {
            d["spec"]["selector"]["matchExpressions"] =
                json!([{"key": "a/b/c", "operator": "Exists"}])
        },
        message: "spec.selector.matchExpressions[0].key: Invalid value: \"a/b/c\"",
    },
    Case {
        name: "pod affinity selector value with a space",
        base: pod,
        mutate: |p| {
            p["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "two words"}}}]}})
        },
        message: "Invalid value: \"two words\"",
    },
    Case {
        name: "pod anti-affinity selector key that is not a qualified name",
        base: deployment,
        mutate: |d| {
            d["spec"]["template"]["spec"]["affinity"] = json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app name": "web"}}}}]}})
        },
        message: "spec.template.spec: Invalid value: \"app name\": a label selector key of an affinity term or topology spread constraint: name part must consist",
    },
    Case {
        name: "topology spread selector key that is not a qualified name",
        base: pod,
        mutate: |p| {
            p["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"a/b/c": "x"}}}])
        },
        message: "spec: Invalid value: \"a/b/c\": a label selector key of an affinity term",
    },
    Case {
        name: "nodeSelector key that is not a qualified name",
        base: pod,
        mutate: |p| p["spec"]["nodeSelector"] = json!({"disk type": "ssd"}),
        message: "spec.nodeSelector: Invalid value: \"disk type\": name part must consist of alphanumeric characters",
    },
    Case {
        name: "service selector value with a space",
        base: service,
        mutate: |s| s["spec"]["selector"]["app"] = json!("web app"),
        message: "spec.selector.app: Invalid value: \"web app\"",
    },
    Case {
        name: "pvc selector key that is not a qualified name",
        base: pvc,
        mutate: |c| c["spec"]["selector"] = json!({"matchLabels": {"tier!": "gold"}}),
        message: "spec.selector.matchLabels: Invalid value: \"tier!\": name part must consist",
    },
    Case {
        name: "container port name not an IANA service name",
        base: pod,
        mutate: |p| {
            p["spec"]["containers"][0]["ports"] =
                json!([{"name": "http--alt", "containerPort": 80}])
        },
        message: "spec.containers[0].ports[0].name: Invalid value: \"http--alt\"",
    },
    Case {
        name: "container port name without a letter",
        base: pod,
        mutate: |p| {
            p["spec"]["containers"][0]["ports"] = json!([{"name": "8080", "containerPort": 8080}])
        },
        message: "spec.containers[0].ports[0].name: Invalid value: \"8080\"",
    },
    Case {
        name: "container port name longer than 15",
        base: pod,
        mutate: |p| {
            p["spec"]["containers"][0]["ports"] =
                json!([{"name": "a-very-long-port-name", "containerPort": 80}])
        },
        message: "spec.containers[0].ports[0].name: Too long: may not be more than 15",
    },
    Case {
        name: "duplicate port names in a container",
        base: pod,
        mutate: |p| {
            p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
            p["spec"]["containers"] = json!([
                {"name": "a", "image": "busybox", "ports": [{"name": "http", "containerPort": 80}]},
                {"name": "b", "image": "busybox", "ports": [
                    {"name": "http", "containerPort": 8080}, {"containerPort": 9090}, {"name": "http", "containerPort": 8081}]}]);
        },
        message: "spec.containers[1].ports[2].name: Duplicate value: \"http\"",
    },
    Case {
        name: "containerPort 0",
        base: pod,
        mutate: |p| p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 0}]),
        message: "spec.containers[0].ports[0].containerPort: Invalid value: 0",
    },
    Case {
        name: "hostPort above 65535",
        base: pod,
        mutate: |p| {
            p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 70000}])
        },
        message: "spec.containers[0].ports[0].hostPort: Invalid value: 70000",
    },
    Case {
        name: "nodeName not a DNS subdomain",
        base: pod,
        mutate: |p| p["spec"]["nodeName"] = json!("Node_1"),
        message: "spec.nodeName: Invalid value: \"Node_1\": spec.nodeName in body should match",
    },
    Case {
        name: "activeDeadlineSeconds 0",
        base: pod,
        mutate: |p| p["spec"]["activeDeadlineSeconds"] = json!(0),
        message: "spec.activeDeadlineSeconds: Invalid value: 0: spec.activeDeadlineSeconds in body should be greater than or equal to 1",
    },
    Case {
        name: "hostname not a DNS label",
        base: pod,
        mutate: |p| p["spec"]["hostname"] = json!("web.example"),
        message: "spec.hostname: Invalid value: \"web.example\"",
    },
    Case {
        name: "ephemeral containers on create",
        base: pod,
        mutate: |p| {
            p["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "busybox"}])
        },
        message: "spec.ephemeralContainers: Forbidden: cannot be set on create",
    },
    // validateMountPropagation (pkg/apis/core/validation, v1.36.3): upstream's field path
    // names the volumeMounts list without an index; the schema's enum names the mount.
    Case {
        name: "bidirectional mount propagation in a non-privileged container",
        base: pod,
        mutate: |p| {
            p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
            p["spec"]["containers"] = json!([
                {"name": "main", "image": "busybox"},
                {"name": "side", "image": "busybox", "securityContext": {"privileged": false},
                 "volumeMounts": [{"name": "data", "mountPath": "/data", "mountPropagation": "Bidirectional"}]},
            ]);
        },
        message: "spec.containers[1].volumeMounts.mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers",
    },
    Case {
        name: "bidirectional mount propagation in a non-privileged init container",
        base: pod,
        mutate: |p| {
            p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
            p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox",
                "volumeMounts": [{"name": "data", "mountPath": "/data", "mountPropagation": "Bidirectional"}]}]);
        },
        message: "spec.initContainers[0].volumeMounts.mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers",
    },
    Case {
        name: "bidirectional mount propagation in a deployment's template",
        base: deployment,
        mutate: |d| {
            let spec = &mut d["spec"]["template"]["spec"];
            spec["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
            spec["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data", "mountPropagation": "Bidirectional"}]);
        },
        message: "spec.template.spec.containers[0].volumeMounts.mountPropagation: Forbidden: Bidirectional mount propagation is available only to privileged containers",
    },
    Case {
        name: "unknown mount propagation",
        base: pod,
        mutate: |p| {
            p["spec"]["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
            p["spec"]["containers"][0]["volumeMounts"] =
                json!([{"name": "data", "mountPath": "/data", "mountPropagation": "Sideways"}]);
        },
        message: "spec.containers[0].volumeMounts[0].mountPropagation: Unsupported value: \"Sideways\": supported values: \"Bidirectional\", \"HostToContainer\", \"None\"",
    },
    Case {
        name: "nodeName with scheduling gates",
        base: gated_pod,
        mutate: |p| p["spec"]["nodeName"] = json!("node-a"),
        message: "spec.nodeName: Forbidden: cannot be set until all schedulingGates have been cleared",
    },
    Case {
        name: "storage class without provisioner",
        base: storage_class,
        mutate: |c| {
            c.as_object_mut()
                .unwrap()
                .remove("provisioner")
                .map(drop)
                .unwrap_or(())
        },
        message: "provisioner: Required value",
    },
    // pkg/apis/discovery/validation/validation_test.go (v1.36.3), the failing cases.
    Case {
        name: "endpointslice duplicate-port-name",
        base: endpoint_slice,
        mutate: |s| {
            s["ports"] =
                json!([{"name": "http", "protocol": "TCP"}, {"name": "http", "protocol": "UDP"}])
        },
        message: "ports[1]: Duplicate value: {\"name\":\"http\"}",
    },
    Case {
        name: "endpointslice bad-port-name-caps",
        base: endpoint_slice,
        mutate: |s| s["ports"][0]["name"] = json!("aCapital"),
        message: "ports[0].name: Invalid value: \"aCapital\": ports[0].name in body should match",
    },
    Case {
        name: "endpointslice bad-port-name-chars",
        base: endpoint_slice,
        mutate: |s| s["ports"][0]["name"] = json!("almost_valid"),
        message: "ports[0].name: Invalid value: \"almost_valid\": ports[0].name in body should match",
    },
    Case {
        name: "endpointslice bad-port-name-length",
        base: endpoint_slice,
        mutate: |s| s["ports"][0]["name"] = json!("a".repeat(64)),
        message: "ports[0].name: Too long: may not be more than 63 bytes",
    },
    Case {
        name: "endpointslice invalid-port-protocol",
        base: endpoint_slice,
        mutate: |s| s["ports"][0]["protocol"] = json!("foo"),
        message: "ports[0].protocol: Unsupported value: \"foo\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
    },
    Case {
        name: "endpointslice too-many-ports",
        base: endpoint_slice,
        mutate: |s| {
            s["ports"] = (0..20001)
                .map(|i| json!({"name": format!("http-{i}"), "protocol": "TCP"}))
                .collect()
        },
        message: "ports: Too many: 20001: must have at most 20000 items",
    },
    Case {
        name: "endpointslice too-many-endpoints",
        base: endpoint_slice,
        mutate: |s| {
            s["endpoints"] = (0..1001)
                .map(|i| json!({"addresses": [format!("10.1.{}.{}", i / 250, i % 250 + 1)]}))
                .collect()
        },
        message: "endpoints: Too many: 1001: must have at most 1000 items",
    },
    Case {
        name: "endpointslice no-endpoint-addresses",
        base: endpoint_slice,
        mutate: |s| set_addresses(s, json!([])),
        message: "endpoints[0].addresses: Required value: must contain at least 1 address",
    },
    Case {
        name: "endpointslice too-many-addresses",
        base: endpoint_slice,
        mutate: |s| set_addresses(s, (1..=101).map(|i| json!(format!("10.0.0.{i}"))).collect()),
        message: "endpoints[0].addresses: Too many: 101: must have at most 100 items",
    },
    Case {
        name: "endpointslice bad-topology-key",
        base: endpoint_slice,
        mutate: |s| s["endpoints"][0]["deprecatedTopology"] = json!({"--INVALID": "example"}),
        message: "endpoints[0].deprecatedTopology: Invalid value: \"--INVALID\": name part must consist of",
    },
    Case {
        name: "endpointslice too-many-topology-keys",
        base: endpoint_slice,
        mutate: |s| {
            s["endpoints"][0]["deprecatedTopology"] = (0..17)
                .map(|i| (format!("key{i}"), json!("value")))
                .collect::<serde_json::Map<_, _>>()
                .into()
        },
        message: "endpoints[0].deprecatedTopology: Too many: 17: must have at most 16 items",
    },
    Case {
        name: "endpointslice bad-hostname",
        base: endpoint_slice,
        mutate: |s| s["endpoints"][0]["hostname"] = json!("--INVALID"),
        message: "endpoints[0].hostname: Invalid value: \"--INVALID\": endpoints[0].hostname in body should match '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'",
    },
    Case {
        name: "endpointslice bad-meta",
        base: endpoint_slice,
        mutate: |s| s["metadata"]["name"] = json!("*&^"),
        message: "metadata.name: Invalid value: \"*&^\": a lowercase RFC 1123 subdomain",
    },
    Case {
        name: "endpointslice bad-ip",
        base: endpoint_slice,
        mutate: |s| set_addresses(s, json!(["123.456.789.012"])),
        message: "endpoints[0].addresses[0]: Invalid value: \"123.456.789.012\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
    },
    Case {
        name: "endpointslice legacy-ip-with-strict-validation",
        base: endpoint_slice,
        mutate: |s| set_addresses(s, json!(["012.034.056.078"])),
        message: "endpoints[0].addresses[0]: Invalid value: \"012.034.056.078\": must be a valid IP address",
    },
    Case {
        name: "endpointslice bad-ipv4 (an IPv6 address)",
        base: endpoint_slice,
        mutate: |s| set_addresses(s, json!(["10.0.0.1", "2001:4860:4860::8888"])),
        message: "endpoints[0].addresses[1]: Invalid value: \"2001:4860:4860::8888\": must be an IPv4 address",
    },
    Case {
        name: "endpointslice bad-ipv6",
        base: ipv6_endpoint_slice,
        mutate: |s| set_addresses(s, json!(["2001:db8::1", "2001:4860:4860:defg"])),
        message: "endpoints[0].addresses[1]: Invalid value: \"2001:4860:4860:defg\": must be a valid IP address",
    },
    Case {
        name: "endpointslice bad-ipv6 (an IPv4 address)",
        base: ipv6_endpoint_slice,
        mutate: |s| set_addresses(s, json!(["10.0.0.1"])),
        message: "endpoints[0].addresses[0]: Invalid value: \"10.0.0.1\": must be an IPv6 address",
    },
    Case {
        name: "endpointslice ipv6 not canonical",
        base: ipv6_endpoint_slice,
        mutate: |s| set_addresses(s, json!(["2001:DB8:0:0::1"])),
        message: "endpoints[0].addresses[0]: Invalid value: \"2001:DB8:0:0::1\": must be in canonical form (\"2001:db8::1\")",
    },
    Case {
        name: "endpointslice bad-fqdns (wildcard)",
        base: fqdn_endpoint_slice,
        mutate: |s| set_addresses(s, json!(["foo.*"])),
        message: "endpoints[0].addresses[0]: Invalid value: \"foo.*\": a lowercase RFC 1123 subdomain",
    },
    Case {
        name: "endpointslice bad-fqdns (upper case)",
        base: fqdn_endpoint_slice,
        mutate: |s| set_addresses(s, json!(["foo.example.com", "FOO.example.com"])),
        message: "endpoints[0].addresses[1]: Invalid value: \"FOO.example.com\": a lowercase RFC 1123 subdomain",
    },
    Case {
        name: "endpointslice bad-fqdns (underscores)",
        base: fqdn_endpoint_slice,
        mutate: |s| set_addresses(s, json!(["underscores_are_bad.example.com"])),
        message: "endpoints[0].addresses[0]: Invalid value: \"underscores_are_bad.example.com\": a lowercase RFC 1123 subdomain",
    },
    Case {
        name: "endpointslice bad-fqdns (one segment)",
        base: fqdn_endpoint_slice,
        mutate: |s| set_addresses(s, json!(["localhost"])),
        message: "endpoints[0].addresses[0]: Invalid value: \"localhost\": should be a domain with at least two segments separated by dots",
    },
    Case {
        name: "endpointslice bad-app-protocol",
        base: endpoint_slice,
        mutate: |s| s["ports"][0]["appProtocol"] = json!("--"),
        message: "ports[0].appProtocol: Invalid value: \"--\": ports[0].appProtocol in body should match",
    },
    Case {
        name: "endpointslice invalid-zone-hint",
        base: endpoint_slice,
        mutate: |s| s["endpoints"][0]["hints"] = json!({"forZones": [{"name": "inv@lid"}]}),
        message: "endpoints[0].hints.forZones[0].name: Invalid value: \"inv@lid\"",
    },
    Case {
        name: "endpointslice overlapping-zone-hints",
        base: endpoint_slice,
        mutate: |s| {
            s["endpoints"][0]["hints"] =
                json!({"forZones": [{"name": "zone-a"}, {"name": "zone-b"}, {"name": "zone-a"}]})
        },
        message: "endpoints[0].hints.forZones[2]: Duplicate value: {\"name\":\"zone-a\"}",
    },
    Case {
        name: "endpointslice too-many-zone-hints",
        base: endpoint_slice,
        mutate: |s| s["endpoints"][0]["hints"] = json!({"forZones": ('a'..='i').map(|z| json!({"name": format!("zone-{z}")})).collect::<Vec<_>>()}),
        message: "endpoints[0].hints.forZones: Too many: 9: must have at most 8 items",
    },
    Case {
        name: "endpointslice invalid-node-hints",
        base: endpoint_slice,
        mutate: |s| s["endpoints"][0]["hints"] = json!({"forNodes": [{"name": "!@#$!@"}]}),
        message: "endpoints[0].hints.forNodes[0].name: Invalid value: \"!@#$!@\"",
    },
    Case {
        name: "endpointslice overlapping-node-hints",
        base: endpoint_slice,
        mutate: |s| {
            s["endpoints"][0]["hints"] =
                json!({"forNodes": [{"name": "node-1"}, {"name": "node-2"}, {"name": "node-1"}]})
        },
        message: "endpoints[0].hints.forNodes[2]: Duplicate value: {\"name\":\"node-1\"}",
    },
    Case {
        name: "endpointslice too-many-node-hints",
        base: endpoint_slice,
        mutate: |s| s["endpoints"][0]["hints"] = json!({"forNodes": (1..=9).map(|n| json!({"name": format!("node-{n}")})).collect::<Vec<_>>()}),
        message: "endpoints[0].hints.forNodes: Too many: 9: must have at most 8 items",
    },
    Case {
        name: "endpointslice special-ipv4",
        base: endpoint_slice,
        mutate: |s| set_addresses(s, json!(["127.0.0.1"])),
        message: "endpoints[0].addresses[0]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
    },
    Case {
        name: "endpointslice special-ipv6",
        base: ipv6_endpoint_slice,
        mutate: |s| set_addresses(s, json!(["fe80::9656:d028:8652:66b6"])),
        message: "endpoints[0].addresses[0]: Invalid value: \"fe80::9656:d028:8652:66b6\": may not be in the link-local range (169.254.0.0/16, fe80::/10)",
    },
    Case {
        name: "endpointslice unspecified ipv4",
        base: endpoint_slice,
        mutate: |s| set_addresses(s, json!(["0.0.0.0"])),
        message: "endpoints[0].addresses[0]: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)",
    },
    Case {
        name: "endpointslice link-local multicast ipv4",
        base: endpoint_slice,
        mutate: |s| set_addresses(s, json!(["224.0.0.1"])),
        message: "endpoints[0].addresses[0]: Invalid value: \"224.0.0.1\": may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
    },
    // TestValidateEndpointSliceCreate.
    Case {
        name: "endpointslice bad-node-name",
        base: endpoint_slice,
        mutate: |s| s["endpoints"][0]["nodeName"] = json!("INvalid-node-name"),
        message: "endpoints[0].nodeName: Invalid value: \"INvalid-node-name\"",
    },
    Case {
        name: "endpointslice deprecated-address-type",
        base: endpoint_slice,
        mutate: |s| s["addressType"] = json!("IP"),
        message: "addressType: Unsupported value: \"IP\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
    },
    Case {
        name: "endpointslice bad-address-type",
        base: endpoint_slice,
        mutate: |s| s["addressType"] = json!("other"),
        message: "addressType: Unsupported value: \"other\": supported values: \"FQDN\", \"IPv4\", \"IPv6\"",
    },
    Case {
        name: "endpointslice without addressType",
        base: endpoint_slice,
        mutate: |s| {
            s.as_object_mut().unwrap().remove("addressType");
        },
        message: "addressType: Required value",
    },
];

/// Updates that must be refused: the change is applied to the stored object.
const UPDATE_CASES: &[Case] = &[
    Case {
        name: "deployment selector changed",
        base: deployment,
        mutate: |d| d["spec"]["selector"]["matchLabels"]["tier"] = json!("web"),
        message: "spec.selector: Invalid value: field is immutable",
    },
    Case {
        name: "replicaset selector changed",
        base: replica_set,
        mutate: |d| d["spec"]["selector"]["matchLabels"]["tier"] = json!("web"),
        message: "spec.selector: Invalid value: field is immutable",
    },
    Case {
        name: "storage class provisioner changed",
        base: storage_class,
        mutate: |c| c["provisioner"] = json!("other.rekube.io"),
        message: "provisioner: Forbidden: updates to provisioner are forbidden",
    },
    Case {
        name: "storage class parameters changed",
        base: storage_class,
        mutate: |c| c["parameters"]["type"] = json!("hdd"),
        message: "parameters: Forbidden: updates to parameters are forbidden",
    },
    Case {
        name: "storage class reclaimPolicy changed",
        base: storage_class,
        mutate: |c| c["reclaimPolicy"] = json!("Retain"),
        message: "reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden",
    },
    Case {
        name: "storage class volumeBindingMode changed",
        base: storage_class,
        mutate: |c| c["volumeBindingMode"] = json!("WaitForFirstConsumer"),
        message: "volumeBindingMode: Forbidden: updates to volumeBindingMode are forbidden",
    },
    Case {
        name: "pod container command changed",
        base: pod,
        mutate: |p| p["spec"]["containers"][0]["command"] = json!(["sleep", "1"]),
        message: "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`",
    },
    Case {
        name: "pod resources changed",
        base: pod_with_resources,
        mutate: |p| p["spec"]["containers"][0]["resources"]["limits"]["cpu"] = json!("2"),
        message: "changed: spec.containers",
    },
    Case {
        name: "pod restartPolicy changed",
        base: pod,
        mutate: |p| p["spec"]["restartPolicy"] = json!("Never"),
        message: "changed: spec.restartPolicy",
    },
    Case {
        name: "pod container added",
        base: pod,
        mutate: |p| {
            p["spec"]["containers"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "side", "image": "busybox"}))
        },
        message: "spec.containers: Forbidden: pod updates may not add or remove containers",
    },
    Case {
        name: "pod bound to a node moved to another",
        base: bound_pod,
        mutate: |p| p["spec"]["nodeName"] = json!("node-b"),
        message: "spec.nodeName: Forbidden: pod is already assigned to node \"node-a\"",
    },
    Case {
        name: "pod bound to a node unbound",
        base: bound_pod,
        mutate: |p| {
            p["spec"].as_object_mut().unwrap().remove("nodeName");
        },
        message: "spec.nodeName: Forbidden: pod is already assigned to node \"node-a\"",
    },
    Case {
        name: "pod toleration modified",
        base: pod_with_resources,
        mutate: |p| p["spec"]["tolerations"][0]["value"] = json!("web"),
        message: "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds",
    },
    Case {
        name: "pod activeDeadlineSeconds raised",
        base: pod_with_resources,
        mutate: |p| p["spec"]["activeDeadlineSeconds"] = json!(601),
        message: "spec.activeDeadlineSeconds: Invalid value: 601: must be less than or equal to previous value",
    },
    Case {
        name: "pod activeDeadlineSeconds removed",
        base: pod_with_resources,
        mutate: |p| {
            p["spec"]
                .as_object_mut()
                .unwrap()
                .remove("activeDeadlineSeconds");
        },
        message: "spec.activeDeadlineSeconds: Invalid value: \"null\": must not update from a positive integer to nil value",
    },
    Case {
        name: "pod scheduling gate added",
        base: gated_pod,
        mutate: |p| {
            p["spec"]["schedulingGates"] =
                json!([{"name": "example.com/wait"}, {"name": "example.com/more"}])
        },
        message: "spec.schedulingGates: Forbidden: only deletion is allowed, but found new scheduling gate 'example.com/more'",
    },
    Case {
        name: "pod terminationGracePeriodSeconds changed",
        base: pod,
        mutate: |p| p["spec"]["terminationGracePeriodSeconds"] = json!(1),
        message: "changed: spec.terminationGracePeriodSeconds",
    },
    Case {
        name: "pvc access modes changed",
        base: pvc,
        mutate: |c| c["spec"]["accessModes"] = json!(["ReadWriteMany"]),
        message: "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims; changed: spec.accessModes",
    },
    Case {
        name: "pvc storage request changed while unbound",
        base: pvc,
        mutate: |c| c["spec"]["resources"]["requests"]["storage"] = json!("2Gi"),
        message: "changed: spec.resources.requests.storage",
    },
    Case {
        name: "pvc volumeName changed once set",
        base: bound_pvc,
        mutate: |c| c["spec"]["volumeName"] = json!("pv-b"),
        message: "changed: spec.volumeName",
    },
    Case {
        name: "pv source changed",
        base: pv,
        mutate: |v| v["spec"]["hostPath"]["path"] = json!("/srv/other"),
        message: "spec.persistentvolumesource: Forbidden: spec.persistentvolumesource is immutable after creation",
    },
    Case {
        name: "pv volumeMode changed",
        base: pv,
        mutate: |v| v["spec"]["volumeMode"] = json!("Block"),
        message: "volumeMode: Invalid value: field is immutable",
    },
    Case {
        name: "service clusterIP changed",
        base: service_with_ip,
        mutate: |s| {
            s["spec"]["clusterIP"] = json!("10.96.0.11");
            s["spec"]["clusterIPs"] = json!(["10.96.0.11"]);
        },
        message: "spec.clusterIPs[0]: Invalid value: \"10.96.0.11\": may not change once set",
    },
    Case {
        name: "node podCIDR changed",
        base: node,
        mutate: |n| {
            n["spec"]["podCIDR"] = json!("10.244.2.0/24");
            n["spec"]["podCIDRs"] = json!(["10.244.2.0/24"]);
        },
        message: "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid",
    },
    Case {
        name: "node providerID changed",
        base: node,
        mutate: |n| n["spec"]["providerID"] = json!("rekube://other"),
        message: "spec.providerID: Forbidden: node updates may not change providerID except from \"\" to valid",
    },
    Case {
        name: "volume attachment spec changed",
        base: volume_attachment,
        mutate: |v| v["spec"]["nodeName"] = json!("node-b"),
        message: "spec: Invalid value: field is immutable",
    },
    // TestValidateEndpointSliceUpdate.
    Case {
        name: "endpointslice addressType changed",
        base: fqdn_endpoint_slice,
        mutate: |s| s["addressType"] = json!("IPv4"),
        message: "addressType: Invalid value: \"IPv4\": field is immutable",
    },
    Case {
        name: "endpointslice changed IPs are revalidated",
        base: endpoint_slice,
        mutate: |s| set_addresses(s, json!(["10.1.2.03"])),
        message: "endpoints[0].addresses[0]: Invalid value: \"10.1.2.03\": must be a valid IP address",
    },
    Case {
        name: "endpointslice invalid node name set",
        base: endpoint_slice,
        mutate: |s| s["endpoints"][0]["nodeName"] = json!("INVALID foo"),
        message: "endpoints[0].nodeName: Invalid value: \"INVALID foo\"",
    },
];

/// Each bad manifest is refused with its message, and the object does not exist after.
#[tokio::test]
async fn bad_manifests_are_refused_with_a_clear_message() {
    let ns = TestNamespace::new("validation").await;
    let mut failures = Vec::new();
    for case in CREATE_CASES {
        let mut obj = to_rekube((case.base)());
        (case.mutate)(&mut obj);
        let (api_version, kind) = type_of(&obj).unwrap();
        match ns.create(obj.clone()).await {
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
            Err(e) if !e.to_string().contains(case.message) => failures.push(format!(
                "{}: expected {:?}\n  got {e}",
                case.name, case.message
            )),
            Err(_) => {}
        }
        let name = obj["metadata"]["name"].as_str().unwrap();
        let name = if matches!(kind.as_str(), "PersistentVolume" | "StorageClass") {
            ns.cluster_name(name)
        } else {
            name.into()
        };
        if ns
            .api(&api_version, &kind)
            .get_opt(&name)
            .await
            .unwrap()
            .is_some()
        {
            failures.push(format!("{}: the refused {kind} exists", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Updates that upstream forbids: selectors and a StorageClass's provisioner, parameters,
/// reclaimPolicy and volumeBindingMode never change.
#[tokio::test]
async fn immutable_fields_stay_as_created() {
    let ns = TestNamespace::new("immutable").await;
    let mut failures = Vec::new();
    for (i, case) in UPDATE_CASES.iter().enumerate() {
        let (mutate, message) = (case.mutate, case.message);
        let mut obj = to_rekube((case.base)());
        obj["metadata"]["name"] = json!(format!("obj-{i}"));
        let (_, kind) = type_of(&obj).unwrap();
        let created = ns
            .create(obj)
            .await
            .unwrap_or_else(|e| panic!("valid {kind}: {e}"));
        let api: Api<DynamicObject> = ns.api(rekube_crds::API_VERSION, &kind);
        let name = created["metadata"]["name"].as_str().unwrap().to_string();
        let mut changed = serde_json::to_value(api.get(&name).await.unwrap()).unwrap();
        let before = changed.clone();
        mutate(&mut changed);
        // Template labels follow the selector so that only immutability can refuse it.
        if let Some(labels) = changed["spec"]["selector"]["matchLabels"]
            .as_object()
            .cloned()
        {
            changed["spec"]["template"]["metadata"]["labels"] = Value::Object(labels);
        }
        let update: DynamicObject = serde_json::from_value(changed).unwrap();
        match api.replace(&name, &PostParams::default(), &update).await {
            Ok(_) => failures.push(format!("{kind} update accepted: {message}")),
            Err(e) if !e.to_string().contains(message) => {
                failures.push(format!("{kind}: expected {message:?}\n  got {e}"))
            }
            Err(_) => {}
        }
        let after = serde_json::to_value(api.get(&name).await.unwrap()).unwrap();
        if after["metadata"]["resourceVersion"] != before["metadata"]["resourceVersion"] {
            failures.push(format!(
                "{kind} {name} changed although the update was refused"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Merge-patches `name` and returns the apiserver's refusal, if any.
async fn patch(api: &Api<DynamicObject>, name: &str, patch: Value) -> Result<(), String> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// What upstream lets an update change is still allowed: images, tolerations added and
/// tolerationSeconds changed, activeDeadlineSeconds lowered, scheduling gates removed,
/// nodeName set once (the scheduler's binding), ephemeral containers added (and only
/// added), metadata and status; a PVC's volumeName and a Node's podCIDR set once.
#[tokio::test]
async fn allowed_updates_stay_allowed() {
    let ns = TestNamespace::new("updates").await;
    let pods = ns.api(rekube_crds::API_VERSION, "Pod");
    let mut p = to_rekube(pod_with_resources());
    p["spec"]["schedulingGates"] = json!([{"name": "example.com/a"}, {"name": "example.com/b"}]);
    ns.create(p).await.expect("valid pod");
    // A merge patch replaces whole lists: send the stored containers with a new image.
    let stored = serde_json::to_value(pods.get("pod").await.unwrap()).unwrap();
    let mut containers = stored["spec"]["containers"].clone();
    containers[0]["image"] = json!("busybox:1.36");
    let allowed = [
        ("image", json!({"spec": {"containers": containers}})),
        (
            "toleration added",
            json!({"spec": {"tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute", "tolerationSeconds": 60},
            {"key": "spot", "operator": "Exists"}]}}),
        ),
        (
            "tolerationSeconds changed",
            json!({"spec": {"tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute", "tolerationSeconds": 5},
            {"key": "spot", "operator": "Exists"}]}}),
        ),
        (
            "activeDeadlineSeconds lowered",
            json!({"spec": {"activeDeadlineSeconds": 300}}),
        ),
        (
            "scheduling gate removed",
            json!({"spec": {"schedulingGates": [{"name": "example.com/b"}]}}),
        ),
        (
            "nodeSelector added while gated",
            json!({"spec": {"nodeSelector": {"disk": "ssd"}}}),
        ),
        (
            "last scheduling gate removed",
            json!({"spec": {"schedulingGates": null}}),
        ),
        (
            "labels and a finalizer",
            json!({"metadata": {"labels": {"tier": "db"}, "finalizers": ["example.com/keep"]}}),
        ),
        (
            "nodeName set (the scheduler's binding)",
            json!({"spec": {"nodeName": "node-a"}}),
        ),
        (
            "nodeName set again to the same node",
            json!({"spec": {"nodeName": "node-a"}}),
        ),
        (
            "ephemeral container added",
            json!({"spec": {"ephemeralContainers": [
            {"name": "debug", "image": "busybox", "command": ["sh"]}]}}),
        ),
        (
            "ephemeral container targeting the app added",
            json!({"spec": {"ephemeralContainers": [
            {"name": "debug", "image": "busybox", "command": ["sh"]},
            {"name": "peek", "image": "busybox", "targetContainerName": "main", "stdin": true, "tty": true}]}}),
        ),
    ];
    let mut failures = Vec::new();
    for (what, body) in allowed {
        if let Err(e) = patch(&pods, "pod", body).await {
            failures.push(format!("{what}: refused: {e}"));
        }
    }
    let refused = [
        (
            "ephemeral container changed",
            json!({"spec": {"ephemeralContainers": [{"name": "debug", "image": "busybox", "command": ["bash"]}]}}),
            "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"debug\" may not be changed",
        ),
        (
            "ephemeral container removed",
            json!({"spec": {"ephemeralContainers": [{"name": "other", "image": "busybox"}]}}),
            "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"debug\" may not be removed",
        ),
        (
            "ephemeral container with a probe",
            json!({"spec": {"ephemeralContainers": [
                {"name": "debug", "image": "busybox", "command": ["sh"]},
                {"name": "peek", "image": "busybox", "targetContainerName": "main", "stdin": true, "tty": true},
                {"name": "probed", "image": "busybox", "readinessProbe": {"exec": {"command": ["true"]}}}]}}),
            "spec.ephemeralContainers[2].readinessProbe: Forbidden: cannot be set for an Ephemeral Container",
        ),
        (
            "ephemeral container with resources",
            json!({"spec": {"ephemeralContainers": [
                {"name": "debug", "image": "busybox", "command": ["sh"]},
                {"name": "peek", "image": "busybox", "targetContainerName": "main", "stdin": true, "tty": true},
                {"name": "big", "image": "busybox", "resources": {"limits": {"cpu": "1"}}}]}}),
            "spec.ephemeralContainers[2].resources: Forbidden: cannot be set for an Ephemeral Container",
        ),
        (
            "ephemeral container with a subPath mount",
            json!({"spec": {"ephemeralContainers": [
                {"name": "debug", "image": "busybox", "command": ["sh"]},
                {"name": "peek", "image": "busybox", "targetContainerName": "main", "stdin": true, "tty": true},
                {"name": "sub", "image": "busybox", "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "x"}]}]}}),
            "spec.ephemeralContainers[2].volumeMounts: Forbidden: subPath and subPathExpr cannot be set",
        ),
        (
            "ephemeral container targeting no container",
            json!({"spec": {"ephemeralContainers": [
                {"name": "debug", "image": "busybox", "command": ["sh"]},
                {"name": "peek", "image": "busybox", "targetContainerName": "main", "stdin": true, "tty": true},
                {"name": "peek2", "image": "busybox", "targetContainerName": "nope"}]}}),
            "spec.ephemeralContainers[2].targetContainerName: Not found: \"nope\"",
        ),
        (
            "nodeSelector changed once ungated",
            json!({"spec": {"nodeSelector": {"disk": "hdd"}}}),
            "changed: spec.nodeSelector",
        ),
        (
            "nodeName re-patched",
            json!({"spec": {"nodeName": "node-b"}}),
            "spec.nodeName: Forbidden: pod is already assigned to node \"node-a\"",
        ),
    ];
    for (what, body, message) in refused {
        match patch(&pods, "pod", body).await {
            Ok(()) => failures.push(format!("{what}: accepted")),
            Err(e) if !e.contains(message) => {
                failures.push(format!("{what}: expected {message:?}\n  got {e}"))
            }
            Err(_) => {}
        }
    }
    let status = json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}});
    if let Err(e) = pods
        .patch_status("pod", &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        failures.push(format!("status patch refused: {e}"));
    }
    let p = serde_json::to_value(pods.get("pod").await.unwrap()).unwrap();
    assert_eq!(p["spec"]["nodeName"], "node-a");
    assert_eq!(p["spec"]["containers"][0]["image"], "busybox:1.36");
    assert_eq!(p["spec"]["activeDeadlineSeconds"], 300);
    assert_eq!(p["spec"]["tolerations"][0]["tolerationSeconds"], 5);
    assert_eq!(p["spec"]["ephemeralContainers"][0]["name"], "debug");
    // The finalizer goes, so the namespace can go.
    if let Err(e) = patch(&pods, "pod", json!({"metadata": {"finalizers": null}})).await {
        failures.push(format!("finalizer removal refused: {e}"));
    }

    let claims = ns.api(rekube_crds::API_VERSION, "PersistentVolumeClaim");
    ns.create(to_rekube(pvc())).await.expect("valid pvc");
    if let Err(e) = patch(&claims, "claim", json!({"spec": {"volumeName": "pv-a"}})).await {
        failures.push(format!("pvc volumeName set: refused: {e}"));
    }

    let nodes = ns.api(rekube_crds::API_VERSION, "Node");
    let mut n = to_rekube(node());
    n["spec"] = json!({});
    let n = ns.create(n).await.expect("valid node");
    let name = n["metadata"]["name"].as_str().unwrap();
    for (what, body) in [
        (
            "podCIDR set",
            json!({"spec": {"podCIDR": "10.244.3.0/24", "podCIDRs": ["10.244.3.0/24"]}}),
        ),
        (
            "taints changed",
            json!({"spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}),
        ),
        ("unschedulable", json!({"spec": {"unschedulable": true}})),
    ] {
        if let Err(e) = patch(&nodes, name, body).await {
            failures.push(format!("node {what}: refused: {e}"));
        }
    }
    // A status capacity must parse too (the node agent writes it through the status
    // subresource, so a create cannot carry it).
    let bad = json!({"status": {"capacity": {"cpu": "four"}}});
    match nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&bad))
        .await
    {
        Ok(_) => failures.push("node capacity \"four\" accepted".into()),
        Err(e)
            if !e
                .to_string()
                .contains("status.capacity.cpu: Invalid value: \"four\"") =>
        {
            failures.push(format!("node capacity: got {e}"))
        }
        Err(_) => {}
    }
    // A Service replaced without its cluster IP keeps it, as upstream's registry does.
    let services = ns.api(rekube_crds::API_VERSION, "Service");
    ns.create(to_rekube(service_with_ip()))
        .await
        .expect("valid service");
    let mut replaced = serde_json::to_value(services.get("svc").await.unwrap()).unwrap();
    let spec = replaced["spec"].as_object_mut().unwrap();
    spec.remove("clusterIP");
    spec.remove("clusterIPs");
    replaced["spec"]["selector"]["app"] = json!("api");
    let replaced: DynamicObject = serde_json::from_value(replaced).unwrap();
    match services
        .replace("svc", &PostParams::default(), &replaced)
        .await
    {
        Ok(s) => {
            let s = serde_json::to_value(s).unwrap();
            assert_eq!(s["spec"]["clusterIP"], "10.96.0.10");
            assert_eq!(s["spec"]["clusterIPs"], json!(["10.96.0.10"]));
            assert_eq!(s["spec"]["selector"]["app"], "api");
        }
        Err(e) => failures.push(format!("service replaced without its clusterIP: {e}")),
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Large valid EndpointSlices pass the address policy within its runtime cost budget: the
/// controller's largest (1000 endpoints of one address), 100 endpoints of 100 addresses,
/// and 1000 of 30 (30 000 addresses, about the budget's end: upstream accepts up to
/// 100 000, see docs/crds.md).
#[tokio::test]
async fn large_endpoint_slices_are_accepted() {
    let ns = TestNamespace::new("large-eps").await;
    for (n, m) in [(1000, 1), (100, 100), (1000, 30)] {
        let endpoints: Vec<Value> = (0..n)
            .map(|i| {
                let addresses: Vec<String> = (0..m)
                    .map(|j| {
                        let k = i * m + j;
                        format!("10.{}.{}.{}", k / 62500, (k / 250) % 250, k % 250 + 1)
                    })
                    .collect();
                json!({"addresses": addresses})
            })
            .collect();
        let slice = json!({
            "apiVersion": "rekube.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("big-{n}-{m}")},
            "addressType": "IPv4", "endpoints": endpoints, "ports": [{"port": 80}],
        });
        ns.create(slice)
            .await
            .unwrap_or_else(|e| panic!("{n} endpoints of {m} addresses refused: {e}"));
    }
}

// --- mountPropagation: upstream parity ------------------------------------------------
//
// pkg/apis/core/validation/validation_test.go `TestValidateMountPropagation` (v1.36.3):
// each volumeMount and container of its table in a Pod sent with dryRun=All as v1 (the
// apiserver's own validation) and as rekube.io/v1, in a privileged namespace (Pod
// Security is not what is tested). Both admit, or both refuse with upstream's errors;
// the one known difference: the schema's enum names the mount's index
// (`volumeMounts[0].mountPropagation`) where upstream names the list. The table's last
// case (no container, the internal path of a template's defaulting) has no request.

/// `(name, volumeMount's mountPropagation, container's securityContext)`.
const MOUNT_PROPAGATION_CASES: &[(&str, Option<&str>, Option<bool>)] = &[
    (
        "implicitly non-privileged container + no propagation",
        None,
        None,
    ),
    (
        "implicitly non-privileged container + HostToContainer",
        Some("HostToContainer"),
        None,
    ),
    ("non-privileged container + None", Some("None"), None),
    (
        "error: implicitly non-privileged container + Bidirectional",
        Some("Bidirectional"),
        None,
    ),
    (
        "explicitly non-privileged container + no propagation",
        None,
        Some(false),
    ),
    (
        "explicitly non-privileged container + HostToContainer",
        Some("HostToContainer"),
        Some(false),
    ),
    (
        "explicitly non-privileged container + Bidirectional",
        Some("Bidirectional"),
        Some(false),
    ),
    ("privileged container + no propagation", None, Some(true)),
    (
        "privileged container + HostToContainer",
        Some("HostToContainer"),
        Some(true),
    ),
    (
        "privileged container + Bidirectional",
        Some("Bidirectional"),
        Some(true),
    ),
    (
        "error: privileged container + invalid mount propagation",
        Some("invalid"),
        Some(true),
    ),
];

#[tokio::test]
async fn mount_propagation_is_validated_as_upstream() {
    let ns = TestNamespace::privileged("mount-propagation").await;
    // Upstream's ServiceAccount admission wants the namespace's default account, which
    // the controller manager makes shortly after the namespace.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(ns.client.clone(), &ns.name);
    rekube_e2e::wait_until(
        "the default ServiceAccount",
        std::time::Duration::from_secs(30),
        || async {
            match accounts.get_opt("default").await {
                Ok(Some(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let mut failures = Vec::new();
    let mut refused = 0;
    for (i, (name, propagation, privileged)) in MOUNT_PROPAGATION_CASES.iter().enumerate() {
        let mut mount = json!({"name": "foo", "mountPath": "/foo"});
        if let Some(p) = propagation {
            mount["mountPropagation"] = json!(p);
        }
        let mut container = json!({"name": "c", "image": "busybox", "volumeMounts": [mount]});
        if let Some(p) = privileged {
            container["securityContext"] = json!({"privileged": p});
        }
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("case-{i}")},
            "spec": {"containers": [container],
                     "volumes": [{"name": "foo", "hostPath": {"path": "/foo/baz"}}]},
        });
        let upstream = send(
            &ns.client,
            "POST",
            &format!("/api/v1/namespaces/{}/pods?dryRun=All", ns.name),
            Some(&pod),
        )
        .await;
        let ours = send(
            &ns.client,
            "POST",
            &format!("/apis/rekube.io/v1/namespaces/{}/pods?dryRun=All", ns.name),
            Some(&to_rekube(pod)),
        )
        .await;
        let expect_error = name.starts_with("error:")
            || name.ends_with("non-privileged container + Bidirectional");
        let up_ok = upstream.status < 300;
        if up_ok == expect_error {
            failures.push(format!(
                "{name}: upstream answered {} {:?}, not as its test says",
                upstream.status, upstream.message
            ));
        }
        if up_ok != (ours.status < 300) {
            failures.push(format!(
                "{name}: upstream {} {:?}, rekube {} {:?}",
                upstream.status, upstream.message, ours.status, ours.message
            ));
            continue;
        }
        if up_ok {
            continue;
        }
        refused += 1;
        let ours_errors: Vec<String> = ours
            .errors()
            .iter()
            .map(|e| {
                e.replace(
                    "volumeMounts[0].mountPropagation",
                    "volumeMounts.mountPropagation",
                )
            })
            .collect();
        for e in upstream.errors() {
            if !ours_errors.contains(&e) {
                failures.push(format!(
                    "{name}: upstream's {e:?} missing from rekube's {ours_errors:?}"
                ));
            }
        }
    }
    assert_eq!(
        refused, 3,
        "the table's three error cases are refused by both"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// --- CSIDriver: upstream parity ---------------------------------------------------------
//
// Each case of pkg/apis/storage/validation/validation_test.go (v1.36.3) for CSIDriver is
// sent to the apiserver twice, as storage.k8s.io/v1 (upstream's own registry) and as
// rekube.io/v1, and the outcomes must be the same: both admitted with the same stored
// spec and the same warnings, or both refused with the same errors (every error upstream
// names, rekube names with the same text, and no other), but for the differences listed
// with each case. Upstream's unit tests call ValidateCSIDriver on objects that were never
// defaulted; through the API a field left nil is defaulted first, so some of their
// "error" cases are admitted by both: parity is with the apiserver, not the unit test.

/// What the apiserver answered to one request.
#[derive(Debug)]
struct Answer {
    status: u16,
    message: String,
    warnings: Vec<String>,
    object: Value,
}

impl Answer {
    /// The errors of a refusal, one per field: what follows `is invalid: ` (the
    /// aggregate's `[a, b]` split into its items), or what a policy's `denied request: `
    /// says (its items joined by `, ` too). The schema's note that rules were skipped is
    /// left out: upstream checks everything at once, so it has none.
    fn errors(&self) -> Vec<String> {
        let m = self.message.as_str();
        let m = m.split_once("denied request: ").map_or(m, |(_, r)| r);
        let m = m.split_once(" is invalid: ").map_or(m, |(_, r)| r);
        let m = m
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(m);
        let mut items: Vec<String> = Vec::new();
        let mut rest = m;
        while let Some(at) = [
            "spec.",
            "metadata.",
            "<nil>",
            "storageClassName: ",
            "capacity: ",
            "maximumVolumeSize: ",
            "nodeTopology",
        ]
        .iter()
        .filter_map(|p| rest.find(&format!(", {p}")))
        .min()
        {
            items.push(rest[..at].to_string());
            rest = &rest[at + 2..];
        }
        items.push(rest.to_string());
        items.retain(|i| !i.contains("some validation rules were not checked"));
        items
    }

    /// Warnings without the policy's `Validation failed for ValidatingAdmissionPolicy
    /// 'x' with binding 'x': ` prefix.
    fn warnings(&self) -> Vec<String> {
        self.warnings
            .iter()
            .map(|w| {
                w.split_once("': ")
                    .filter(|_| w.starts_with("Validation failed for"))
                    .map_or(w.clone(), |(_, t)| t.to_string())
            })
            .collect()
    }
}

/// The text of an RFC 7234 warning header value (`299 - "text"`).
fn warning_text(value: &str) -> String {
    let quoted = value
        .split_once(" - ")
        .map_or(value, |(_, t)| t)
        .trim()
        .trim_start_matches('"')
        .trim_end_matches('"');
    quoted.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// Sends `method` with `body` to `path`, raw, to read the Warning headers too.
async fn send(client: &kube::Client, method: &str, path: &str, body: Option<&Value>) -> Answer {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(
            body.map(|b| serde_json::to_vec(b).unwrap())
                .unwrap_or_default(),
        ))
        .unwrap();
    let response = client.send(request).await.expect("the apiserver answers");
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| warning_text(v.to_str().unwrap_or_default()))
        .collect();
    let bytes = response.into_body().collect_bytes().await.unwrap();
    let object: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let message = object["message"].as_str().unwrap_or_default().to_string();
    Answer {
        status,
        message,
        warnings,
        object,
    }
}

const UPSTREAM_CSI: &str = "/apis/storage.k8s.io/v1/csidrivers";
const REKUBE_CSI: &str = "/apis/rekube.io/v1/csidrivers";

/// A CSIDriver manifest (upstream's; [`to_rekube`] makes rekube's).
fn csi_driver(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": name}, "spec": spec})
}

/// Upstream's spec literals: `b(true)` for `&attachRequired` and so on.
fn spec_of(fields: &[(&str, Value)]) -> Value {
    Value::Object(
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

/// An update case's change to the object read back.
type Change = Box<dyn Fn(&mut Value)>;

/// One ported case: what it is, the manifest (create) or the old spec and the change
/// (update), and the differences allowed between upstream's and rekube's answers:
/// substrings of the errors one has and the other lacks, each of which must occur.
struct CsiCase {
    name: String,
    object: Value,
    change: Option<Change>,
    known: &'static [&'static str],
}

fn create(name: impl Into<String>, object: Value) -> CsiCase {
    CsiCase {
        name: name.into(),
        object,
        change: None,
        known: &[],
    }
}

fn update(name: &str, old: &Value, change: impl Fn(&mut Value) + 'static) -> CsiCase {
    CsiCase {
        name: name.into(),
        object: old.clone(),
        change: Some(Box::new(change)),
        known: &[],
    }
}

fn known(mut case: CsiCase, known: &'static [&'static str]) -> CsiCase {
    case.known = known;
    case
}

const INVALID_NAME: &str = "-invalid-@#$%^&*()-";
const LONG_NAME: &str =
    "my-a-b-c-d-c-f-g-h-i-j-k-l-m-n-o-p-q-r-s-t-u-v-w-x-y-z-ABCDEFGHIJKLMNOPQRSTUVWXYZ-driver";

/// TestCSIDriverValidation, TestCSIServiceAccountToken, TestCSIDriverStorageCapacityEnablement
/// and the create halves of the SELinuxMount and PreventPodSchedulingIfMissing gate tests
/// (the halves for the gates as v1.36.3 has them: SELinuxMountReadWriteOncePod GA and
/// locked on, VolumeLimitScaling alpha and off), then cases of rekube's own at the edges
/// of each rule. Names get `sfx` (this run's) so that parallel runs do not meet.
fn csi_create_cases(sfx: &str) -> Vec<CsiCase> {
    let t = || json!(true);
    let f = || json!(false);
    let n = |base: &str| format!("{base}-{sfx}");
    let driver = n("test-driver");
    // TestCSIDriverValidation's success cases: every field it sets, in its order.
    let base = |ar: bool, pim: bool, sc: bool| {
        vec![
            ("attachRequired", json!(ar)),
            ("podInfoOnMount", json!(pim)),
            ("requiresRepublish", f()),
            ("storageCapacity", json!(sc)),
            ("seLinuxMount", t()),
            ("preventPodSchedulingIfMissing", f()),
        ]
    };
    let with = |mut fields: Vec<(&'static str, Value)>, extra: &[(&'static str, Value)]| {
        for (k, v) in extra {
            match fields.iter_mut().find(|(f, _)| f == k) {
                Some(field) => field.1 = v.clone(),
                None => fields.push((k, v.clone())),
            }
        }
        spec_of(&fields)
    };
    let without = |fields: Vec<(&'static str, Value)>, drop: &[&str]| {
        spec_of(
            &fields
                .into_iter()
                .filter(|(k, _)| !drop.contains(k))
                .collect::<Vec<_>>(),
        )
    };
    let tokens = || json!([{"audience": "test-audience"}]);
    let mut cases = vec![
        create(
            "success: driver name",
            csi_driver(&driver, spec_of(&base(true, true, true))),
        ),
        create(
            "success: driver name: dot only",
            csi_driver(
                &n("io.kubernetes.storage.csi.driver"),
                spec_of(&base(true, true, false)),
            ),
        ),
        create(
            "success: driver name: dash only",
            csi_driver(
                &n("io-kubernetes-storage-csi-driver"),
                spec_of(&base(true, false, true)),
            ),
        ),
        create(
            "success: driver name: numbers",
            csi_driver(&n("1csi2driver3"), spec_of(&base(true, true, true))),
        ),
        create(
            "success: driver name: dot and dash",
            csi_driver(
                &n("io.kubernetes.storage.csi-driver"),
                spec_of(&base(true, true, true)),
            ),
        ),
        create(
            "success: podInfoOnMount false",
            csi_driver(&driver, spec_of(&base(true, false, true))),
        ),
        create(
            "success: podInfoOnMount true",
            csi_driver(&driver, spec_of(&base(true, true, true))),
        ),
        create(
            "success: attach not required",
            csi_driver(&driver, spec_of(&base(false, false, true))),
        ),
        create(
            "success: modes Persistent",
            csi_driver(
                &driver,
                with(
                    base(false, false, true),
                    &[("volumeLifecycleModes", json!(["Persistent"]))],
                ),
            ),
        ),
        create(
            "success: modes Ephemeral",
            csi_driver(
                &driver,
                with(
                    base(false, false, true),
                    &[("volumeLifecycleModes", json!(["Ephemeral"]))],
                ),
            ),
        ),
        create(
            "success: modes Ephemeral, Persistent",
            csi_driver(
                &driver,
                with(
                    base(false, false, true),
                    &[("volumeLifecycleModes", json!(["Ephemeral", "Persistent"]))],
                ),
            ),
        ),
        create(
            "success: modes Ephemeral, Persistent, Ephemeral",
            csi_driver(
                &driver,
                with(
                    base(false, false, true),
                    &[(
                        "volumeLifecycleModes",
                        json!(["Ephemeral", "Persistent", "Ephemeral"]),
                    )],
                ),
            ),
        ),
        create(
            "success: fsGroupPolicy File",
            csi_driver(
                &driver,
                with(
                    base(false, false, true),
                    &[("fsGroupPolicy", json!("File"))],
                ),
            ),
        ),
        create(
            "success: SELinuxMount false",
            csi_driver(
                &driver,
                with(base(false, false, true), &[("seLinuxMount", f())]),
            ),
        ),
        create(
            "success: nodeAllocatableUpdatePeriodSeconds nil",
            csi_driver(&driver, spec_of(&base(false, false, true))),
        ),
        create(
            "success: nodeAllocatableUpdatePeriodSeconds 10",
            csi_driver(
                &driver,
                with(
                    base(false, false, true),
                    &[("nodeAllocatableUpdatePeriodSeconds", json!(10))],
                ),
            ),
        ),
        create(
            "success: serviceAccountTokenInSecrets true with tokenRequests",
            csi_driver(
                &driver,
                with(
                    base(false, false, true),
                    &[
                        ("serviceAccountTokenInSecrets", t()),
                        ("tokenRequests", tokens()),
                    ],
                ),
            ),
        ),
        create(
            "success: serviceAccountTokenInSecrets false with tokenRequests",
            csi_driver(
                &driver,
                with(
                    base(false, false, true),
                    &[
                        ("serviceAccountTokenInSecrets", f()),
                        ("tokenRequests", tokens()),
                    ],
                ),
            ),
        ),
        create(
            "success: serviceAccountTokenInSecrets nil",
            csi_driver(&driver, spec_of(&base(false, false, true))),
        ),
        // Its error cases (no requiresRepublish in them).
        create(
            "error: invalid name",
            csi_driver(
                &n(INVALID_NAME),
                without(base(true, true, true), &["requiresRepublish"]),
            ),
        ),
        create(
            "error: long name",
            csi_driver(
                &n(LONG_NAME),
                without(base(false, false, true), &["requiresRepublish"]),
            ),
        ),
        create(
            "error: attachRequired not set (defaulted through the API)",
            csi_driver(
                &driver,
                without(
                    base(true, true, true),
                    &["requiresRepublish", "attachRequired"],
                ),
            ),
        ),
        create(
            "error: podInfoOnMount not set (defaulted through the API)",
            csi_driver(
                &driver,
                without(
                    base(false, true, true),
                    &["requiresRepublish", "podInfoOnMount"],
                ),
            ),
        ),
        create(
            "error: storageCapacity not set (defaulted through the API)",
            csi_driver(
                &driver,
                without(
                    base(false, true, true),
                    &["requiresRepublish", "storageCapacity"],
                ),
            ),
        ),
        known(
            create(
                "error: invalid mode",
                csi_driver(
                    &driver,
                    with(
                        owned(without(base(false, false, true), &["requiresRepublish"])),
                        &[("volumeLifecycleModes", json!(["no-such-mode"]))],
                    ),
                ),
            ),
            MODE_PATH,
        ),
        create(
            "error: invalid fsGroupPolicy",
            csi_driver(
                &driver,
                with(
                    owned(without(base(false, false, true), &["requiresRepublish"])),
                    &[("fsGroupPolicy", json!("invalid-mode"))],
                ),
            ),
        ),
        create(
            "error: no SELinuxMount (defaulted through the API)",
            csi_driver(
                &driver,
                without(
                    base(false, false, true),
                    &[
                        "requiresRepublish",
                        "seLinuxMount",
                        "preventPodSchedulingIfMissing",
                    ],
                ),
            ),
        ),
        create(
            "error: nodeAllocatableUpdatePeriodSeconds 9",
            csi_driver(
                &driver,
                with(
                    owned(without(base(false, false, true), &["requiresRepublish"])),
                    &[("nodeAllocatableUpdatePeriodSeconds", json!(9))],
                ),
            ),
        ),
        create(
            "error: serviceAccountTokenInSecrets without tokenRequests",
            csi_driver(
                &driver,
                with(
                    owned(without(base(false, false, true), &["requiresRepublish"])),
                    &[("serviceAccountTokenInSecrets", t())],
                ),
            ),
        ),
    ];
    // TestCSIServiceAccountToken: attachRequired, podInfoOnMount, storageCapacity and
    // seLinuxMount false (new(bool)), requiresRepublish false.
    let token_spec = |requests: Value| {
        json!({"tokenRequests": requests, "requiresRepublish": false, "attachRequired": false,
               "podInfoOnMount": false, "storageCapacity": false, "seLinuxMount": false})
    };
    for (what, requests) in [
        (
            "invalid: tokens with the same audience",
            json!([{"audience": "gcp"}, {"audience": "gcp"}]),
        ),
        (
            "invalid: expirationSeconds less than 10min",
            json!([{"audience": "gcp", "expirationSeconds": 10}]),
        ),
        (
            "invalid: expirationSeconds longer than 1<<32",
            json!([{"audience": "gcp", "expirationSeconds": (1i64 << 32) + 1}]),
        ),
        (
            "valid: at most one token with empty string audience",
            json!([{"audience": ""}]),
        ),
        (
            "valid: tokens with different audience",
            json!([{}, {"audience": "gcp"}, {"audience": "aws"}]),
        ),
    ] {
        cases.push(create(
            format!("service account token: {what}"),
            csi_driver(&driver, token_spec(requests)),
        ));
    }
    // TestCSIDriverStorageCapacityEnablement.
    for with_field in [true, false] {
        let mut spec = json!({"attachRequired": true, "podInfoOnMount": true, "requiresRepublish": true, "seLinuxMount": false});
        if with_field {
            spec["storageCapacity"] = t();
        }
        cases.push(create(
            format!("storage capacity: with-field={with_field}"),
            csi_driver(&driver, spec),
        ));
    }
    // TestCSIDriverValidationSELinuxMountEnabledDisabled (feature enabled) and
    // TestCSIDriverValidationPreventPodSchedulingIfMissingEnabledDisabled (feature
    // disabled): creates.
    let gated = || json!({"attachRequired": true, "podInfoOnMount": true, "requiresRepublish": true, "storageCapacity": true});
    cases.push(create(
        "seLinuxMount: feature enabled, nil value",
        csi_driver(&driver, gated()),
    ));
    let mut s = gated();
    s["seLinuxMount"] = t();
    cases.push(create(
        "seLinuxMount: feature enabled, non-nil value",
        csi_driver(&driver, s.clone()),
    ));
    cases.push(create(
        "preventPodSchedulingIfMissing: feature disabled, nil value",
        csi_driver(&driver, s.clone()),
    ));
    s["preventPodSchedulingIfMissing"] = t();
    cases.push(create(
        "preventPodSchedulingIfMissing: feature disabled, non-nil value",
        csi_driver(&driver, s),
    ));
    // rekube's own, at the edges of each rule.
    let edge = |what: &str, spec: Value| create(format!("edge: {what}"), csi_driver(&driver, spec));
    let long_ok = format!(
        "{}.{}",
        "a".repeat(63),
        "b".repeat(253 - 64 - sfx.len() - 1)
    );
    cases.extend([
        create("edge: no spec", json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": driver}})),
        edge("empty spec", json!({})),
        edge("null fields", json!({"attachRequired": null, "volumeLifecycleModes": null, "fsGroupPolicy": null})),
        edge("empty volumeLifecycleModes", json!({"volumeLifecycleModes": []})),
        edge("fsGroupPolicy None", json!({"fsGroupPolicy": "None"})),
        edge("fsGroupPolicy empty", json!({"fsGroupPolicy": ""})),
        edge("fsGroupPolicy lowercase", json!({"fsGroupPolicy": "file"})),
        known(edge("two unknown modes", json!({"volumeLifecycleModes": ["Foo", "Persistent", "Bar"]})), MODE_PATH),
        edge("expirationSeconds 599", json!({"tokenRequests": [{"audience": "a", "expirationSeconds": 599}]})),
        edge("expirationSeconds 600", json!({"tokenRequests": [{"audience": "a", "expirationSeconds": 600}]})),
        edge("expirationSeconds 2^32", json!({"tokenRequests": [{"audience": "a", "expirationSeconds": 1i64 << 32}]})),
        edge("expirationSeconds negative", json!({"tokenRequests": [{"audience": "a", "expirationSeconds": -1}]})),
        edge("tokenRequests without audiences", json!({"tokenRequests": [{}, {"expirationSeconds": 3600}]})),
        edge(
            "duplicates listed each",
            json!({"serviceAccountTokenInSecrets": true,
                   "tokenRequests": [{"audience": "a"}, {"audience": "b"}, {"audience": "b"}, {"audience": "a"}]}),
        ),
        edge("duplicate without serviceAccountTokenInSecrets (no warning)", json!({"tokenRequests": [{"audience": "a"}, {"audience": "a"}]})),
        edge("serviceAccountTokenInSecrets false, empty tokenRequests", json!({"serviceAccountTokenInSecrets": false, "tokenRequests": []})),
        edge("nodeAllocatableUpdatePeriodSeconds negative", json!({"nodeAllocatableUpdatePeriodSeconds": -5})),
        edge("nodeAllocatableUpdatePeriodSeconds large", json!({"nodeAllocatableUpdatePeriodSeconds": 86400})),
        edge("requiresRepublish and storageCapacity true", json!({"requiresRepublish": true, "storageCapacity": true})),
        // Only schema errors: upstream names each, rekube too (its rules wait for them).
        known(
            edge(
                "schema errors with rule errors",
                json!({"fsGroupPolicy": "x", "nodeAllocatableUpdatePeriodSeconds": 1,
                       "tokenRequests": [{"audience": "a", "expirationSeconds": 1}, {"audience": "a"}]}),
            ),
            &[
                "spec.tokenRequests[0].expirationSeconds: Invalid value: 1",
                "spec.tokenRequests[1].audience: Duplicate value",
                "spec.nodeAllocatableUpdatePeriodSeconds: Invalid value: 1",
            ],
        ),
        // A duplicate request's expirationSeconds is not checked upstream (it continues).
        known(
            edge(
                "duplicate with a bad expiration",
                json!({"serviceAccountTokenInSecrets": true,
                       "tokenRequests": [{"audience": "a"}, {"audience": "a", "expirationSeconds": 1}]}),
            ),
            &["spec.tokenRequests[1].audience: Duplicate value", "spec.tokenRequests[1].expirationSeconds"],
        ),
        create("edge: name of 64 characters", csi_driver(&format!("{}-{sfx}", "a".repeat(63 - sfx.len())), json!({}))),
        create("edge: name of 253 characters", csi_driver(&format!("{long_ok}-{sfx}"), json!({}))),
        create("edge: name of 254 characters", csi_driver(&format!("x{long_ok}-{sfx}"), json!({}))),
        create("edge: name with uppercase", csi_driver(&n("Driver"), json!({}))),
    ]);
    cases
}

/// A volumeLifecycleModes value upstream does not support: upstream names the list
/// (`spec.volumeLifecycleModes: Unsupported value: "x"`), the schema's enum the item
/// (`spec.volumeLifecycleModes[0]: ...`), with the same text.
const MODE_PATH: &[&str] = &["spec.volumeLifecycleModes"];

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn owned(spec: Value) -> Vec<(&'static str, Value)> {
    spec.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (leak(k), v.clone()))
        .collect()
}

/// TestCSIDriverValidationUpdate, and the update halves of the SELinuxMount (enabled) and
/// PreventPodSchedulingIfMissing (disabled) gate tests. The change applies to the object
/// read back after the create, which is then replaced (PUT).
fn csi_update_cases() -> Vec<CsiCase> {
    let old = json!({
        "attachRequired": false, "podInfoOnMount": false, "requiresRepublish": false,
        "volumeLifecycleModes": ["Ephemeral", "Persistent"], "storageCapacity": true,
        "seLinuxMount": true, "preventPodSchedulingIfMissing": false,
    });
    let unset = |o: &mut Value, f: &str| {
        o["spec"].as_object_mut().unwrap().remove(f);
    };
    let tokens = json!([{"audience": "test-audience"}]);
    let mut cases = vec![
        update("success: no change", &old, |_| {}),
        update("success: change TokenRequests", &old, |o| {
            o["spec"]["tokenRequests"] = json!([{"audience": "gcp"}])
        }),
        update("success: change RequiresRepublish", &old, |o| {
            o["spec"]["requiresRepublish"] = json!(true)
        }),
        update("success: StorageCapacity changed", &old, |o| {
            o["spec"]["storageCapacity"] = json!(false)
        }),
        update("success: SELinuxMount changed", &old, |o| {
            o["spec"]["seLinuxMount"] = json!(false)
        }),
        update("success: change PodInfoOnMount", &old, |o| {
            o["spec"]["podInfoOnMount"] = json!(true)
        }),
        update("success: change FSGroupPolicy", &old, |o| {
            o["spec"]["fsGroupPolicy"] = json!("File")
        }),
        update(
            "success: NodeAllocatableUpdatePeriodSeconds from nil to valid",
            &old,
            |o| o["spec"]["nodeAllocatableUpdatePeriodSeconds"] = json!(10),
        ),
    ];
    for (what, value) in [
        ("from nil to true with TokenRequests", true),
        ("from nil to false with TokenRequests", false),
        // Upstream's case sets a local `old` it never uses: nil to true, as above.
        ("from true to false", true),
    ] {
        let tokens = tokens.clone();
        cases.push(update(
            &format!("success: change ServiceAccountTokenInSecrets {what}"),
            &old,
            move |o| {
                o["spec"]["serviceAccountTokenInSecrets"] = json!(value);
                o["spec"]["tokenRequests"] = tokens.clone();
            },
        ));
    }
    cases.extend([
        update("error: invalid name", &old, |o| {
            o["metadata"]["name"] = json!(INVALID_NAME)
        }),
        update("error: long name", &old, |o| {
            o["metadata"]["name"] = json!(LONG_NAME)
        }),
        update("error: AttachRequired not set", &old, move |o| {
            unset(o, "attachRequired")
        }),
        update("error: AttachRequired changed", &old, |o| {
            o["spec"]["attachRequired"] = json!(true)
        }),
        update("error: PodInfoOnMount not set", &old, move |o| {
            unset(o, "podInfoOnMount")
        }),
        known(
            update("error: invalid volume lifecycle mode", &old, |o| {
                o["spec"]["volumeLifecycleModes"] = json!(["no-such-mode"])
            }),
            // The schema refuses the value before the policy compares it with the old one.
            &["spec.volumeLifecycleModes"],
        ),
        update("error: volume lifecycle modes not set", &old, move |o| {
            unset(o, "volumeLifecycleModes")
        }),
        update("error: VolumeLifecyclePersistent removed", &old, |o| {
            o["spec"]["volumeLifecycleModes"] = json!(["Ephemeral"])
        }),
        update("error: VolumeLifecycleEphemeral removed", &old, |o| {
            o["spec"]["volumeLifecycleModes"] = json!(["Persistent"])
        }),
        update("error: FSGroupPolicy invalidated", &old, |o| {
            o["spec"]["fsGroupPolicy"] = json!("invalid")
        }),
        update("error: TokenRequests invalidated", &old, |o| {
            o["spec"]["tokenRequests"] = json!([{"audience": "gcp"}, {"audience": "gcp"}])
        }),
        update("error: invalid nil StorageCapacity", &old, move |o| {
            unset(o, "storageCapacity")
        }),
        update("error: SELinuxMount not set", &old, move |o| {
            unset(o, "seLinuxMount")
        }),
        update(
            "error: NodeAllocatableUpdatePeriodSeconds to invalid value",
            &old,
            |o| o["spec"]["nodeAllocatableUpdatePeriodSeconds"] = json!(9),
        ),
        update(
            "error: ServiceAccountTokenInSecrets set without TokenRequests",
            &old,
            |o| o["spec"]["serviceAccountTokenInSecrets"] = json!(true),
        ),
    ]);
    // The gate tests' old objects: all four booleans true, seLinuxMount as the case says.
    let gated = |field: &str, value: Option<bool>| {
        let mut o = json!({"attachRequired": true, "podInfoOnMount": true, "requiresRepublish": true, "storageCapacity": true});
        if field == "preventPodSchedulingIfMissing" {
            o["seLinuxMount"] = json!(true);
        }
        if let Some(v) = value {
            o[field] = json!(v);
        }
        o
    };
    for (gate, field) in [
        ("seLinuxMount: feature enabled", "seLinuxMount"),
        (
            "preventPodSchedulingIfMissing: feature disabled",
            "preventPodSchedulingIfMissing",
        ),
    ] {
        for (what, old_value, new_value) in [
            ("nil->nil", None, None),
            ("nil->set", None, Some(true)),
            ("set->set", Some(true), Some(true)),
            ("set->nil", Some(true), None),
        ] {
            let field = field.to_string();
            cases.push(update(
                &format!("{gate}, {what}"),
                &gated(&field, old_value),
                move |o| match new_value {
                    Some(v) => o["spec"][&field] = json!(v),
                    None => unset(o, &field),
                },
            ));
        }
    }
    cases
}

/// Compares upstream's answer with rekube's; the differences, allowed or not.
fn csi_differences(upstream: &Answer, ours: &Answer) -> Vec<String> {
    let mut out = Vec::new();
    let (up_ok, our_ok) = (upstream.status < 300, ours.status < 300);
    if up_ok != our_ok || (!up_ok && upstream.status != ours.status) {
        out.push(format!(
            "outcome: upstream {} {:?}, rekube {} {:?}",
            upstream.status, upstream.message, ours.status, ours.message
        ));
        return out;
    }
    if up_ok {
        if upstream.object["spec"] != ours.object["spec"] {
            out.push(format!(
                "stored spec: upstream {}, rekube {}",
                upstream.object["spec"], ours.object["spec"]
            ));
        }
    } else {
        let (up, our) = (upstream.errors(), ours.errors());
        out.extend(
            up.iter()
                .filter(|e| !our.contains(e))
                .map(|e| format!("only upstream: {e}")),
        );
        out.extend(
            our.iter()
                .filter(|e| !up.contains(e))
                .map(|e| format!("only rekube: {e}")),
        );
    }
    if upstream.warnings() != ours.warnings() {
        out.push(format!(
            "warnings: upstream {:?}, rekube {:?}",
            upstream.warnings(),
            ours.warnings()
        ));
    }
    out
}

/// Checks one case's differences against its allowed ones: each difference must contain
/// an allowed substring, and each allowed substring must occur (or the list is stale).
fn check_csi_case(case: &CsiCase, found: Vec<String>, failures: &mut Vec<String>) {
    let unexpected: Vec<&String> = found
        .iter()
        .filter(|d| !case.known.iter().any(|k| d.contains(k)))
        .collect();
    if !unexpected.is_empty() {
        failures.push(format!("{}: {unexpected:#?}", case.name));
    }
    let stale: Vec<&&str> = case
        .known
        .iter()
        .filter(|k| !found.iter().any(|d| d.contains(**k)))
        .collect();
    if !stale.is_empty() {
        failures.push(format!(
            "{}: listed differences no longer occur: {stale:?}",
            case.name
        ));
    }
    eprintln!(
        "{}: {}",
        case.name,
        if found.is_empty() {
            "same".to_string()
        } else {
            format!("{found:?}")
        }
    );
}

/// Deletes `name` from both APIs (after a case; either may not exist).
async fn delete_csi_drivers(client: &kube::Client, name: &str) {
    for base in [UPSTREAM_CSI, REKUBE_CSI] {
        let path = format!("{base}/{}", urlencode(name));
        let _ = send(client, "DELETE", &path, None).await;
    }
}

fn urlencode(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// upstream validation_test.go's CSIDriver create cases, as upstream's apiserver and
/// rekube's CRD and policies answer them.
#[tokio::test]
async fn csi_driver_creates_match_upstream() {
    let ns = TestNamespace::new("csidriver").await;
    let sfx = &ns.name[ns.name.len() - 5..];
    let mut failures = Vec::new();
    let cases = csi_create_cases(sfx);
    for case in &cases {
        let name = case.object["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let upstream = send(&ns.client, "POST", UPSTREAM_CSI, Some(&case.object)).await;
        let ours = send(
            &ns.client,
            "POST",
            REKUBE_CSI,
            Some(&to_rekube(case.object.clone())),
        )
        .await;
        delete_csi_drivers(&ns.client, &name).await;
        check_csi_case(case, csi_differences(&upstream, &ours), &mut failures);
    }
    eprintln!("{} create cases", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// upstream validation_test.go's CSIDriver update cases: each old object created in
/// both APIs, read back, changed and replaced.
#[tokio::test]
async fn csi_driver_updates_match_upstream() {
    let ns = TestNamespace::new("csidriver-update").await;
    let sfx = &ns.name[ns.name.len() - 5..];
    let mut failures = Vec::new();
    let cases = csi_update_cases();
    for (i, case) in cases.iter().enumerate() {
        let name = format!("test-driver-{i}-{sfx}");
        let old = csi_driver(&name, case.object.clone());
        let mut answers = Vec::new();
        for (base, manifest) in [
            (UPSTREAM_CSI, old.clone()),
            (REKUBE_CSI, to_rekube(old.clone())),
        ] {
            let created = send(&ns.client, "POST", base, Some(&manifest)).await;
            if created.status >= 300 {
                failures.push(format!(
                    "{}: old object refused: {}",
                    case.name, created.message
                ));
                break;
            }
            let mut changed = created.object.clone();
            (case.change.as_ref().unwrap())(&mut changed);
            answers.push(send(&ns.client, "PUT", &format!("{base}/{name}"), Some(&changed)).await);
        }
        delete_csi_drivers(&ns.client, &name).await;
        if let [upstream, ours] = &answers[..] {
            check_csi_case(case, csi_differences(upstream, ours), &mut failures);
        }
    }
    eprintln!("{} update cases", cases.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// --- CSIStorageCapacity: upstream parity ------------------------------------------------
//
// As for CSIDriver: each case of upstream's tests for CSIStorageCapacity (v1.36.3:
// pkg/apis/storage/validation/validation_test.go TestValidateCSIStorageCapacity,
// pkg/registry/storage/csistoragecapacity/strategy_test.go TestCSIStorageCapacityStrategy
// and TestCSIStorageCapacityValidation) is sent to upstream's registry and to rekube's,
// in the test's namespace, and the answers must be the same but for the differences
// listed with each case; then cases of rekube's own at the edges of each rule.

/// The fields a CSIStorageCapacity holds (top-level, no spec).
const CSC_FIELDS: [&str; 4] = [
    "capacity",
    "maximumVolumeSize",
    "nodeTopology",
    "storageClassName",
];

fn csc_paths(ns: &str) -> [String; 2] {
    [
        format!("/apis/storage.k8s.io/v1/namespaces/{ns}/csistoragecapacities"),
        format!("/apis/rekube.io/v1/namespaces/{ns}/csistoragecapacities"),
    ]
}

/// A CSIStorageCapacity manifest (upstream's) named `name` with `fields`.
fn csc(name: &str, fields: Value) -> Value {
    let mut o = json!({"apiVersion": "storage.k8s.io/v1", "kind": "CSIStorageCapacity",
        "metadata": {"name": name}});
    for (k, v) in fields.as_object().unwrap() {
        o[k] = v.clone();
    }
    o
}

/// upstream's goodCapacity (validation_test.go): class `test-sc`, nothing else.
fn good_capacity() -> Value {
    json!({"storageClassName": "test-sc"})
}

/// upstream's getValidCSIStorageCapacity (strategy_test.go): class `bar`, topology
/// `node In [node1]`, capacity 1Mi or the one given.
fn valid_capacity(capacity: &str) -> Value {
    json!({"storageClassName": "bar",
        "nodeTopology": {"matchExpressions": [{"key": "node", "operator": "In", "values": ["node1"]}]},
        "capacity": if capacity.is_empty() { "1Mi" } else { capacity }})
}

/// A stored Quantity: upstream's canonical form (`0` for `-0` and for the number 0), the
/// CRD's as written.
const CANONICAL: &[&str] = &["stored capacity"];

/// A label key that is not a qualified name: upstream says which part is wrong (IsQualifiedName's
/// several messages), rekube's policy gives one message for all.
const LABEL_KEY: &[&str] = &["nodeTopology.matchLabels: Invalid value: "];

/// nodeTopology changed on update: upstream prints the new selector in the error, a CRD
/// rule on an object prints no value.
const TOPOLOGY_VALUE: &[&str] = &["nodeTopology: Invalid value: "];

/// The create cases: TestValidateCSIStorageCapacity's eight, then rekube's edges.
fn csc_create_cases() -> Vec<CsiCase> {
    let with = |f: &[(&str, Value)]| {
        let mut o = good_capacity();
        for (k, v) in f {
            o[*k] = v.clone();
        }
        o
    };
    let case = |name: &str, fields: Value| {
        create(
            name,
            csc("csc-329803da-fdd2-42e4-af6f-7b07e7ccc305", fields),
        )
    };
    vec![
        case("good-capacity", good_capacity()),
        case(
            "missing-storage-class-name",
            with(&[("storageClassName", json!(""))]),
        ),
        case(
            "bad-storage-class-name",
            with(&[("storageClassName", json!(INVALID_NAME))]),
        ),
        case("good-capacity-value", with(&[("capacity", json!("1"))])),
        case("bad-capacity-value", with(&[("capacity", json!("-11"))])),
        case(
            "good-topology",
            with(&[("nodeTopology", json!({"matchLabels": {"foo": "bar"}}))]),
        ),
        case("empty-topology", with(&[("nodeTopology", json!({}))])),
        case(
            "bad-topology-fields",
            with(&[(
                "nodeTopology",
                json!({"matchExpressions": [{"key": "foo", "operator": "no-such-operator", "values": ["bar"]}]}),
            )]),
        ),
        // rekube's own, at the edges of each rule.
        // upstream stores a Quantity in its canonical form, a CRD as written.
        known(
            case("edge: capacity -0", with(&[("capacity", json!("-0"))])),
            CANONICAL,
        ),
        known(
            case(
                "edge: capacity as a negative number",
                with(&[("capacity", json!(-5))]),
            ),
            // upstream prints the value as a string, a rule as the number it is.
            &["capacity: Invalid value: "],
        ),
        known(
            case("edge: capacity 0", with(&[("capacity", json!(0))])),
            CANONICAL,
        ),
        case(
            "edge: negative maximumVolumeSize (not checked upstream)",
            with(&[("maximumVolumeSize", json!("-1Mi"))]),
        ),
        case(
            "edge: both sizes",
            with(&[
                ("capacity", json!("10Gi")),
                ("maximumVolumeSize", json!("9Gi")),
            ]),
        ),
        case(
            "edge: storageClassName with dots",
            with(&[("storageClassName", json!("a.b-c.d"))]),
        ),
        case(
            "edge: storageClassName upper case",
            with(&[("storageClassName", json!("Fast"))]),
        ),
        known(
            case(
                "edge: storageClassName of 254 characters",
                with(&[("storageClassName", json!("a".repeat(254)))]),
            ),
            // upstream: "must be no more than 253 characters" and the regex is checked;
            // the schema's maxLength (which bounds the rule's cost) says "Too long".
            &["storageClassName"],
        ),
        known(
            case(
                "edge: matchLabels key not a qualified name",
                with(&[("nodeTopology", json!({"matchLabels": {"-bad": "x"}}))]),
            ),
            LABEL_KEY,
        ),
        known(
            case(
                "edge: matchLabels value not a label value",
                with(&[("nodeTopology", json!({"matchLabels": {"k": "not a value"}}))]),
            ),
            // The schema's pattern says what the value must match, upstream's message
            // what it must consist of.
            &["nodeTopology.matchLabels"],
        ),
        case(
            "edge: In without values",
            with(&[(
                "nodeTopology",
                json!({"matchExpressions": [{"key": "k", "operator": "In"}]}),
            )]),
        ),
        case(
            "edge: NotIn with empty values",
            with(&[(
                "nodeTopology",
                json!({"matchExpressions": [{"key": "k", "operator": "NotIn", "values": []}]}),
            )]),
        ),
        case(
            "edge: Exists with values",
            with(&[(
                "nodeTopology",
                json!({"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["v"]}]}),
            )]),
        ),
        case(
            "edge: DoesNotExist without values",
            with(&[(
                "nodeTopology",
                json!({"matchExpressions": [{"key": "k", "operator": "DoesNotExist"}]}),
            )]),
        ),
        known(
            case(
                "edge: two bad operators and a bad key",
                with(&[(
                    "nodeTopology",
                    json!({"matchLabels": {"a/b/c": "x"},
                           "matchExpressions": [{"key": "k", "operator": "in", "values": ["v"]},
                                                {"key": "k", "operator": "Exists"},
                                                {"key": "k", "operator": "", "values": ["v"]}]}),
                )]),
            ),
            LABEL_KEY,
        ),
        known(
            case(
                "edge: capacity not a quantity",
                with(&[("capacity", json!("lots"))]),
            ),
            // upstream refuses to decode it (400); the schema's pattern refuses it (422).
            &["outcome"],
        ),
    ]
}

/// The update cases: TestCSIStorageCapacityStrategy's immutable fields and
/// TestCSIStorageCapacityValidation's four, then rekube's edges. Each old object is
/// created, read back, changed and replaced (PUT to the old object's name).
fn csc_update_cases() -> Vec<CsiCase> {
    let old = valid_capacity("");
    vec![
        known(
            update("strategy: Topology", &old, |o| {
                o["nodeTopology"]["matchLabels"] = json!({"some-label": "some-value"})
            }),
            TOPOLOGY_VALUE,
        ),
        update("strategy: StorageClass", &old, |o| {
            o["storageClassName"] = json!("bar-suffix")
        }),
        update("before: no capacity, update: 1Gi capacity", &old, |o| {
            o["capacity"] = json!("1Gi")
        }),
        update(
            "before: 1Gi capacity, update: no capacity",
            &valid_capacity("1Gi"),
            |o| o["capacity"] = json!("1Mi"),
        ),
        update("name change", &old, |o| o["metadata"]["name"] = json!("b")),
        update("storage class name change", &old, |o| {
            o["storageClassName"] = json!("bar-update")
        }),
        // rekube's own.
        known(
            update("edge: nodeTopology removed", &old, |o| {
                o.as_object_mut().unwrap().remove("nodeTopology");
            }),
            TOPOLOGY_VALUE,
        ),
        known(
            update("edge: nodeTopology emptied", &old, |o| {
                o["nodeTopology"] = json!({})
            }),
            TOPOLOGY_VALUE,
        ),
        update("edge: capacity removed", &old, |o| {
            o.as_object_mut().unwrap().remove("capacity");
        }),
        update("edge: maximumVolumeSize added", &old, |o| {
            o["maximumVolumeSize"] = json!("512Ki")
        }),
        update("edge: labels added", &old, |o| {
            o["metadata"]["labels"] = json!({"csi.storage.k8s.io/drivername": "csi.rekube.io"})
        }),
        update("edge: capacity made negative", &old, |o| {
            o["capacity"] = json!("-1")
        }),
    ]
}

/// Compares upstream's answer with rekube's (the stored top-level fields, not a spec).
fn csc_differences(upstream: &Answer, ours: &Answer) -> Vec<String> {
    let mut out = csi_differences(upstream, ours);
    out.retain(|d| !d.starts_with("stored spec"));
    if upstream.status < 300 && ours.status < 300 {
        for f in CSC_FIELDS {
            if upstream.object[f] != ours.object[f] {
                out.push(format!(
                    "stored {f}: upstream {}, rekube {}",
                    upstream.object[f], ours.object[f]
                ));
            }
        }
    }
    out
}

/// The upstream case names (with the edges) and the number of each.
fn csc_report(kind: &str, cases: &[CsiCase]) {
    let upstream = cases
        .iter()
        .filter(|c| !c.name.starts_with("edge: "))
        .count();
    eprintln!(
        "{} {kind} cases: {upstream} of upstream's, {} of rekube's own",
        cases.len(),
        cases.len() - upstream
    );
}

/// upstream's CSIStorageCapacity create cases, as upstream's registry and rekube's CRD and
/// policy answer them.
#[tokio::test]
async fn csi_storage_capacity_creates_match_upstream() {
    let ns = TestNamespace::new("csisc").await;
    let mut failures = Vec::new();
    let cases = csc_create_cases();
    for case in &cases {
        let name = case.object["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        let [up_path, our_path] = csc_paths(&ns.name);
        let upstream = send(&ns.client, "POST", &up_path, Some(&case.object)).await;
        let ours = send(
            &ns.client,
            "POST",
            &our_path,
            Some(&to_rekube(case.object.clone())),
        )
        .await;
        for base in [&up_path, &our_path] {
            let _ = send(&ns.client, "DELETE", &format!("{base}/{name}"), None).await;
        }
        check_csi_case(case, csc_differences(&upstream, &ours), &mut failures);
    }
    csc_report("create", &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// upstream's CSIStorageCapacity update cases: each old object created in both APIs, read
/// back, changed and replaced.
#[tokio::test]
async fn csi_storage_capacity_updates_match_upstream() {
    let ns = TestNamespace::new("csisc-update").await;
    let mut failures = Vec::new();
    let cases = csc_update_cases();
    for (i, case) in cases.iter().enumerate() {
        let name = format!("test-{i}");
        let old = csc(&name, case.object.clone());
        let mut answers = Vec::new();
        let [up_path, our_path] = csc_paths(&ns.name);
        for (base, manifest) in [(&up_path, old.clone()), (&our_path, to_rekube(old.clone()))] {
            let created = send(&ns.client, "POST", base, Some(&manifest)).await;
            if created.status >= 300 {
                failures.push(format!(
                    "{}: old object refused: {}",
                    case.name, created.message
                ));
                break;
            }
            let mut changed = created.object.clone();
            (case.change.as_ref().unwrap())(&mut changed);
            answers.push(send(&ns.client, "PUT", &format!("{base}/{name}"), Some(&changed)).await);
            let _ = send(&ns.client, "DELETE", &format!("{base}/{name}"), None).await;
        }
        if let [upstream, ours] = &answers[..] {
            check_csi_case(case, csc_differences(upstream, ours), &mut failures);
        }
    }
    csc_report("update", &cases);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
