//! Bad manifests are refused by the apiserver at the earliest point (CRD schema, CRD CEL
//! rules, rekube's ValidatingAdmissionPolicies) with a message that says what is wrong,
//! and nothing is created.
use kube::api::{Api, DynamicObject, PostParams};
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
