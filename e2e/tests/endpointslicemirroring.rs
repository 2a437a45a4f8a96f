//! The EndpointSlice mirroring controller against the real apiserver: upstream's
//! test/e2e/network/endpointslicemirroring.go ("should mirror a custom Endpoints
//! resource through create update and delete" [Conformance], "should mirror a custom
//! Endpoint with multiple subsets and same IP address"), plus what is not mirrored:
//! Endpoints of a Service with a selector, ones labelled skip-mirror, and the mirrored
//! slices going when the Service gains a selector. Only
//! `endpointslice-mirroring-controller` runs.
use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rekube_crds::{EndpointSlice, Endpoints, Service};
use rekube_e2e::controllers::ControllerProcess;
use rekube_e2e::{TestNamespace, wait_until};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
const CONTROLLER: &str = "endpointslicemirroring-controller.rekube.io";

/// A mirrored slice as the tests compare it: address type, sorted ports, sorted
/// (address, ready).
type Mirrored = (String, Vec<i32>, Vec<(String, bool)>);
/// The same, written in a test.
type Want<'a> = (&'a str, Vec<i32>, Vec<(&'a str, bool)>);

struct Env {
    /// Deleted on drop, with everything the test made.
    _ns: TestNamespace,
    services: Api<Service>,
    endpoints: Api<Endpoints>,
    slices: Api<EndpointSlice>,
    controllers: ControllerProcess,
}

async fn env(prefix: &str) -> Env {
    let ns = TestNamespace::new(prefix).await;
    let controllers =
        ControllerProcess::start(&ns.name, &["--controllers", "endpointslice-mirroring"]);
    Env {
        services: Api::namespaced(ns.client.clone(), &ns.name),
        endpoints: Api::namespaced(ns.client.clone(), &ns.name),
        slices: Api::namespaced(ns.client.clone(), &ns.name),
        _ns: ns,
        controllers,
    }
}

impl Env {
    async fn create<K>(&self, api: &Api<K>, obj: Value) -> K
    where
        K: kube::Resource
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let obj: K = serde_json::from_value(obj).unwrap();
        api.create(&PostParams::default(), &obj).await.unwrap()
    }

    /// The slices of `service` as (address type, sorted ports, sorted (address, ready)).
    async fn mirrored(&self, service: &str) -> Result<Vec<Mirrored>, String> {
        let list = self
            .slices
            .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
            .await
            .map_err(|e| e.to_string())?;
        let mut out: Vec<_> = list
            .items
            .iter()
            .map(|s| {
                assert_eq!(
                    s.labels().get(MANAGED_BY).map(String::as_str),
                    Some(CONTROLLER)
                );
                let mut ports: Vec<i32> = s.ports.iter().flatten().filter_map(|p| p.port).collect();
                ports.sort();
                let mut eps: Vec<(String, bool)> = s
                    .endpoints
                    .iter()
                    .map(|e| {
                        (
                            e.addresses.join(","),
                            e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false),
                        )
                    })
                    .collect();
                eps.sort();
                (s.address_type.clone(), ports, eps)
            })
            .collect();
        out.sort();
        Ok(out)
    }

    async fn wait_mirrored(&self, service: &str, want: Vec<Want<'_>>) {
        let mut want: Vec<Mirrored> = want
            .into_iter()
            .map(|(t, p, e)| {
                (
                    t.to_string(),
                    p,
                    e.into_iter().map(|(a, r)| (a.to_string(), r)).collect(),
                )
            })
            .collect();
        want.sort();
        wait_until(&format!("slices of {service}: {want:?}"), T, || async {
            let got = self.mirrored(service).await?;
            (got == want)
                .then_some(())
                .ok_or_else(|| format!("{got:?}\n{}", self.controllers.logs()))
        })
        .await
    }
}

/// upstream "should mirror a custom Endpoints resource through create update and delete"
/// [Conformance].
#[tokio::test]
async fn mirrors_custom_endpoints_through_create_update_and_delete() {
    let e = env("mirror-crud").await;
    let svc: Service = e
        .create(
            &e.services,
            json!({
                "apiVersion": "rekube.io/v1", "kind": "Service",
                "metadata": {"name": "example-custom-endpoints"},
                "spec": {"ports": [{"name": "example", "port": 80, "protocol": "TCP"}]},
            }),
        )
        .await;
    let ep: Endpoints = e
        .create(
            &e.endpoints,
            json!({
                "apiVersion": "rekube.io/v1", "kind": "Endpoints",
                "metadata": {"name": svc.name_any(), "labels": {"team": "net"}},
                "subsets": [{"ports": [{"port": 80}], "addresses": [{"ip": "10.1.2.3"}]}],
            }),
        )
        .await;
    e.wait_mirrored(
        "example-custom-endpoints",
        vec![("IPv4", vec![80], vec![("10.1.2.3", true)])],
    )
    .await;
    let slices = e.slices.list(&ListParams::default()).await.unwrap().items;
    let owner = &slices[0].owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Endpoints", "example-custom-endpoints")
    );
    assert_eq!(Some(&owner.uid), ep.metadata.uid.as_ref());
    assert_eq!(
        slices[0].labels().get("team").map(String::as_str),
        Some("net")
    );
    e.endpoints
        .patch(
            "example-custom-endpoints",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"subsets": [{"ports": [{"port": 80}], "addresses": [{"ip": "10.2.3.4"}]}]}),
            ),
        )
        .await
        .unwrap();
    e.wait_mirrored(
        "example-custom-endpoints",
        vec![("IPv4", vec![80], vec![("10.2.3.4", true)])],
    )
    .await;
    e.endpoints
        .delete("example-custom-endpoints", &DeleteParams::default())
        .await
        .unwrap();
    e.wait_mirrored("example-custom-endpoints", vec![]).await;
}

/// upstream "should mirror a custom Endpoint with multiple subsets and same IP address":
/// a slice per set of ports, ready and not-ready addresses as listed, IPv6 in a slice of
/// its own.
#[tokio::test]
async fn mirrors_multiple_subsets_with_the_same_ip() {
    let e = env("mirror-subsets").await;
    let _: Service = e
        .create(
            &e.services,
            json!({
                "apiVersion": "rekube.io/v1", "kind": "Service",
                "metadata": {"name": "example-custom-endpoints"},
                "spec": {"ports": [{"name": "port80", "port": 80}, {"name": "port81", "port": 81}]},
            }),
        )
        .await;
    let _: Endpoints = e
        .create(&e.endpoints, json!({
            "apiVersion": "rekube.io/v1", "kind": "Endpoints",
            "metadata": {"name": "example-custom-endpoints"},
            "subsets": [
                {"ports": [{"name": "port80", "port": 80}], "addresses": [{"ip": "10.1.2.3"}, {"ip": "2001:db8::1"}]},
                {"ports": [{"name": "port81", "port": 81}], "addresses": [{"ip": "10.1.2.3"}],
                 "notReadyAddresses": [{"ip": "10.1.2.4"}]},
            ],
        }))
        .await;
    e.wait_mirrored(
        "example-custom-endpoints",
        vec![
            ("IPv4", vec![80], vec![("10.1.2.3", true)]),
            (
                "IPv4",
                vec![81],
                vec![("10.1.2.3", true), ("10.1.2.4", false)],
            ),
            ("IPv6", vec![80], vec![("2001:db8::1", true)]),
        ],
    )
    .await;
}

/// Not mirrored: the Endpoints of a Service with a selector (their slices are the
/// EndpointSlice controller's), and Endpoints labelled skip-mirror; mirrored slices go
/// when the Service gains a selector.
#[tokio::test]
async fn only_selectorless_services_are_mirrored() {
    let e = env("mirror-skip").await;
    for (name, selector) in [
        ("selected", Some(json!({"app": "x"}))),
        ("skipped", None),
        ("later", None),
    ] {
        let mut spec = json!({"ports": [{"port": 80}]});
        if let Some(s) = selector {
            spec["selector"] = s;
        }
        let _: Service = e
            .create(
                &e.services,
                json!({"apiVersion": "rekube.io/v1", "kind": "Service",
                "metadata": {"name": name}, "spec": spec}),
            )
            .await;
        let labels = if name == "skipped" {
            json!({"endpointslice.kubernetes.io/skip-mirror": "true"})
        } else {
            json!({})
        };
        let _: Endpoints = e
            .create(
                &e.endpoints,
                json!({"apiVersion": "rekube.io/v1", "kind": "Endpoints",
                "metadata": {"name": name, "labels": labels},
                "subsets": [{"ports": [{"port": 80}], "addresses": [{"ip": "10.1.2.3"}]}]}),
            )
            .await;
    }
    // The control, created last, is mirrored: the others would be by now.
    e.wait_mirrored("later", vec![("IPv4", vec![80], vec![("10.1.2.3", true)])])
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["selected", "skipped"] {
        assert_eq!(e.mirrored(name).await.unwrap(), vec![], "{name}");
    }
    e.services
        .patch(
            "later",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"app": "x"}}})),
        )
        .await
        .unwrap();
    e.wait_mirrored("later", vec![]).await;
}
