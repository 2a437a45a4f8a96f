//! CSI driver registration through the plugin registration directory, on the real
//! apiserver, as root: a real `rekube-node-agent run` started without `--csi-driver`,
//! then the real `rekube-csi` driver and `rekube-csi registrar` (node-driver-registrar's
//! role) started after it. The agent's plugin manager finds the registrar's socket in
//! `<root-dir>/plugins_registry`, registers the driver and puts its NodeGetInfo on the
//! Node (the `csi.volume.kubernetes.io/nodeid` annotation, the topology label); a pod
//! using a static PersistentVolume of the driver runs and sees its volume. A second
//! registrar of the same driver is refused (NotifyRegistrationStatus false) and exits
//! with status 1, as node-driver-registrar does. The first registrar stopped, its socket
//! goes, the agent deregisters the driver: its Node annotation entry is removed and a
//! new pod's volume fails with upstream's "not found in the list of registered CSI
//! drivers". Nothing is left: no socket, no mount, no loop device.
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, PostParams};
use rekube_crds::{Node, Pod};
use rekube_e2e::agent::{
    AgentProcess, cannot_run_containers, delete_all_pods_and_check_leftovers, wait_pod_succeeded,
};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::storage::{
    CsiDriverProcess, MIB, create_csi_driver, delete_claim_and_volume, event_notes, loops_under,
    mounts_under, static_csi_volume_and_claim,
};
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::json;

const T: Duration = Duration::from_secs(60);
const NODE_ID_ANNOTATION: &str = "csi.volume.kubernetes.io/nodeid";

/// The entries of a directory, recursively, relative to it.
fn entries_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            found.push(
                path.strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
            if path.is_dir() {
                pending.push(path);
            }
        }
    }
    found.sort();
    found
}

#[tokio::test]
async fn a_driver_registers_through_the_plugin_registration_directory() {
    if cannot_run_containers() {
        return;
    }
    let ns = TestNamespace::new("csi-reg").await;
    let _controllers = ControllerProcess::start(
        &ns.name,
        &[
            "--controllers=persistentvolume-binder,persistentvolumeclaim-protection,persistentvolume-protection",
        ],
    );
    let node = ns.cluster_name("n");
    // No attach for rekube-csi volumes (its CSIDriver says so): pods do not wait for a
    // VolumeAttachment.
    let driver_name = create_csi_driver(&ns, false).await;

    // The agent first, with no --csi-driver: it makes its registration directory.
    let agent = AgentProcess::start_real(&ns, "n", &[]);
    assert_eq!(agent.node_name, node);
    let registry = agent.root.join("plugins_registry");
    wait_until("the plugin registration directory", T, || async {
        if registry.is_dir() {
            Ok(())
        } else {
            Err(agent.logs())
        }
    })
    .await;
    let nodes: Api<Node> = Api::all(ns.client.clone());
    let node_id_annotation = || async {
        let n = nodes.get(&node).await.map_err(|e| e.to_string())?;
        Ok::<_, String>((
            n.metadata
                .annotations
                .unwrap_or_default()
                .get(NODE_ID_ANNOTATION)
                .cloned(),
            n.metadata.labels.unwrap_or_default(),
        ))
    };
    assert_eq!(
        node_id_annotation().await.unwrap().0,
        None,
        "no driver before registration"
    );

    // Then the driver and its registrar.
    let dir = std::env::temp_dir().join(format!("rekube-e2e-csi-reg-{}", ns.name));
    let driver = CsiDriverProcess::start(&dir, &driver_name, &node, &[]);
    let mut registrar = driver.start_registrar(&registry, "registrar");
    let (ids, labels) = wait_until("the driver registered on the Node", T, || async {
        match node_id_annotation().await? {
            (Some(ids), labels) => Ok((ids, labels)),
            (None, _) => Err(format!(
                "{}\n--- registrar\n{}",
                agent.logs(),
                registrar.logs()
            )),
        }
    })
    .await;
    assert_eq!(ids, format!("{{\"{driver_name}\":\"{node}\"}}"));
    assert_eq!(
        labels.get("topology.csi.rekube.io/node"),
        Some(&node),
        "the driver's topology as a Node label"
    );
    assert!(registrar.socket.exists(), "{}", registrar.logs());
    wait_until("the registrar told of its registration", T, || async {
        let log = registrar.logs();
        if log.contains("received NotifyRegistrationStatus call")
            && log.contains("plugin_registered=true")
        {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;

    // A second registrar of the same driver (another socket, the same version): refused
    // by ValidatePlugin; it exits with status 1 and removes its socket, as upstream's.
    let second_dir = registry.join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let mut second = driver.start_registrar(&second_dir, "second-registrar");
    let status = second
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the second registrar still runs:\n{}", second.logs()));
    assert_eq!(status.code(), Some(1), "{}", second.logs());
    assert!(
        second.logs().contains(&format!(
            "rekube-csi registrar: registration process failed with error: RegisterPlugin error -- plugin validation failed with err: validation failed for CSI Driver {driver_name} at endpoint {}: kubernetes.io/csi: ValidatePlugin for CSI driver \"{driver_name}\" failed. Another driver with the same name is already registered with a higher supported version: \"1.0.0\"",
            driver.socket.display()
        )),
        "{}",
        second.logs()
    );
    assert!(
        !second.socket.exists(),
        "the refused registrar's socket went"
    );
    drop(second);
    std::fs::remove_dir(&second_dir).unwrap();

    // The provisioner's part, done by the test: CreateVolume of a 64 MiB local-disk.
    let handle = driver
        .create_local_disk(&format!("pvc-{}", ns.name), 64 * MIB)
        .await;

    // A static PersistentVolume of it on the agent's node, a claim, a pod.
    let pv_name = static_csi_volume_and_claim(&ns, &driver_name, &handle, &node).await;
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), &ns.name);
    let pp = PostParams::default();
    let pod = |name: &str, script: &str| -> Pod {
        serde_json::from_value(json!({"apiVersion": "rekube.io/v1", "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "c", "image": "busybox:1.36", "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "volumeMounts": [{"name": "v", "mountPath": "/data"}]}],
                "volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "data"}}]}}))
        .unwrap()
    };
    pods.create(
        &pp,
        &pod(
            "writer",
            "echo registered > /data/file && cat /data/file && df -k /data",
        ),
    )
    .await
    .unwrap();
    let writer = wait_pod_succeeded(&pods, "writer", Duration::from_secs(90), || {
        format!("{}\n{}", agent.logs(), driver.logs())
    })
    .await;
    let uid = writer.metadata.uid.clone().unwrap();
    let log = agent.container_log(&ns.name, "writer", &uid, "c", 0);
    assert!(log.contains("registered"), "{log}");
    let df = log
        .lines()
        .find(|l| l.trim_end().ends_with(" /data"))
        .unwrap_or_else(|| panic!("no df line in {log:?}"));
    assert!(
        df.contains("/dev/loop"),
        "the pod's /data is the driver's loop device: {df}"
    );
    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;

    // The registrar stopped: its socket goes, the agent deregisters the driver.
    let status = registrar.stop().expect("the registrar ran");
    assert!(status.success(), "{status:?}\n{}", registrar.logs());
    assert!(
        !registrar.socket.exists(),
        "the registrar removed its socket"
    );
    wait_until("the driver's node id off the Node", T, || async {
        match node_id_annotation().await? {
            (None, _) => Ok(()),
            (Some(ids), _) => Err(format!("{ids}\n{}", agent.logs())),
        }
    })
    .await;
    // Its volumes cannot be set up any more: upstream's message for an unknown driver.
    pods.create(&pp, &pod("after", "cat /data/file"))
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(ns.client.clone(), &ns.name);
    let notes = wait_until("after's FailedMount", T, || async {
        let notes = event_notes(&events, Some("Pod"), "after", "FailedMount").await;
        if notes.is_empty() {
            Err(agent.logs())
        } else {
            Ok(notes)
        }
    })
    .await;
    assert_eq!(
        notes[0],
        format!(
            "MountVolume.MountDevice failed for volume \"{pv_name}\" : kubernetes.io/csi: attacher.MountDevice failed to create newCsiDriverClient: driver name {driver_name} not found in the list of registered CSI drivers"
        )
    );
    delete_all_pods_and_check_leftovers(&pods, &agent, T).await;

    // Nothing left: no socket in the registration directory, no mount, no loop device.
    assert_eq!(entries_under(&registry), Vec::<String>::new());
    assert_eq!(mounts_under(&agent.root), Vec::<String>::new());
    assert_eq!(mounts_under(&dir), Vec::<String>::new());
    delete_claim_and_volume(&ns, &driver, "data", handle, T).await;
    assert_eq!(loops_under(&driver.state), Vec::new());
    drop(registrar);
    drop(driver);
    assert!(!dir.exists(), "the driver's directory went");
}
