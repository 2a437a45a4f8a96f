//! Resource quantities and a pod's resource requests (upstream:
//! `k8s.io/apimachinery/pkg/api/resource` quantity parsing, `k8s.io/component-helpers/resource/helpers.go`
//! `PodRequests`, `pkg/scheduler/framework/types.go` `Resource`, and the non-zero defaults of
//! `pkg/scheduler/util/pod_resources.go`).
//!
//! Amounts are kept exactly, in units of 10⁻⁹ (nano), while requests are summed and maxed,
//! and converted at the end as upstream converts them: `MilliValue()` for cpu, `Value()` for
//! everything else, both rounding up.
//!
//! Overflow: amounts saturate at ±`i128::MAX` nano, converted values at the int64 bounds, and
//! [`Resource`] sums saturate (upstream's int64 would wrap, so a node full of `8Ei` requests
//! would look empty). A node's running totals are kept exactly in i128 by
//! [`ResourceTotal`] so that removing a pod undoes adding it even past int64.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rekube_crds::Pod;

pub use rekube_crds::quantity::{Amount, QuantityError, amount, parse_quantity};

use crate::util::labels::is_dns1123_subdomain;

pub const RESOURCE_CPU: &str = "cpu";
pub const RESOURCE_MEMORY: &str = "memory";
pub const RESOURCE_EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const RESOURCE_PODS: &str = "pods";
pub const RESOURCE_STORAGE: &str = "storage";
const HUGE_PAGES_PREFIX: &str = "hugepages-";
const ATTACHABLE_VOLUMES_PREFIX: &str = "attachable-volumes-";
const DEFAULT_RESOURCE_REQUESTS_PREFIX: &str = "requests.";

/// The cpu a container without a cpu request counts as, for scoring (upstream:
/// `schedutil.DefaultMilliCPURequest`, 0.1 core).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// The memory a container without a memory request counts as, for scoring (upstream:
/// `schedutil.DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// A resource list with exact amounts (upstream: `v1.ResourceList`).
pub type ResourceList = BTreeMap<String, Amount>;

fn to_list(rl: Option<&BTreeMap<String, Quantity>>) -> ResourceList {
    rl.into_iter()
        .flatten()
        .map(|(k, q)| (k.clone(), amount(q)))
        .collect()
}

fn add_list(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_default();
        *e = e.plus(*v);
    }
}

fn max_list(into: &mut ResourceList, from: &ResourceList) {
    for (k, v) in from {
        let e = into.entry(k.clone()).or_default();
        if *v > *e {
            *e = *v;
        }
    }
}

/// Whether the name is `kubernetes.io/…` or `*.kubernetes.io/…` (upstream:
/// `IsPrefixedNativeResource`).
fn is_prefixed_native_resource(name: &str) -> bool {
    name.contains("kubernetes.io/")
}

/// Upstream `IsNativeResource`: unprefixed, or prefixed by kubernetes.io.
fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || is_prefixed_native_resource(name)
}

/// Upstream `IsExtendedResourceName`: not native, not `requests.*`, and a valid qualified
/// name (`domain/name`).
pub fn is_extended_resource_name(name: &str) -> bool {
    if is_native_resource(name) || name.starts_with(DEFAULT_RESOURCE_REQUESTS_PREFIX) {
        return false;
    }
    let Some((prefix, n)) = name.split_once('/') else {
        return false;
    };
    let name_ok = !n.is_empty()
        && n.len() <= 63
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.ends_with(|c: char| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    is_dns1123_subdomain(prefix) && name_ok
}

/// Upstream `schedutil.IsScalarResourceName`: extended, hugepages, kubernetes.io-prefixed
/// or attachable-volumes resources.
pub fn is_scalar_resource_name(name: &str) -> bool {
    is_extended_resource_name(name)
        || name.starts_with(HUGE_PAGES_PREFIX)
        || is_prefixed_native_resource(name)
        || name.starts_with(ATTACHABLE_VOLUMES_PREFIX)
}

/// Resources of a node or a pod as the scheduler counts them (upstream:
/// `framework.Resource`): cpu in millicores, the others in units.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resource {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    pub allowed_pod_number: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resource {
    /// Upstream `NewResource`: a node's allocatable (or any resource list).
    pub fn from_quantities(rl: Option<&BTreeMap<String, Quantity>>) -> Resource {
        let mut r = Resource::default();
        r.add_list(&to_list(rl));
        r
    }

    /// Upstream `Resource.Add` (saturating at the int64 bounds).
    pub fn add_list(&mut self, rl: &ResourceList) {
        for (name, q) in rl {
            let (field, v) = match name.as_str() {
                RESOURCE_CPU => (&mut self.milli_cpu, q.milli_value()),
                RESOURCE_MEMORY => (&mut self.memory, q.value()),
                RESOURCE_PODS => (&mut self.allowed_pod_number, q.value()),
                RESOURCE_EPHEMERAL_STORAGE => (&mut self.ephemeral_storage, q.value()),
                n if is_scalar_resource_name(n) => {
                    (self.scalar.entry(n.to_string()).or_default(), q.value())
                }
                _ => continue,
            };
            *field = field.saturating_add(v);
        }
    }

    /// Upstream `Resource.SetMaxResource`; pods are not a request and are ignored.
    pub fn set_max_list(&mut self, rl: &ResourceList) {
        for (name, q) in rl {
            match name.as_str() {
                RESOURCE_CPU => self.milli_cpu = self.milli_cpu.max(q.milli_value()),
                RESOURCE_MEMORY => self.memory = self.memory.max(q.value()),
                RESOURCE_EPHEMERAL_STORAGE => {
                    self.ephemeral_storage = self.ephemeral_storage.max(q.value())
                }
                n if is_scalar_resource_name(n) => {
                    let e = self.scalar.entry(n.to_string()).or_default();
                    *e = (*e).max(q.value());
                }
                _ => {}
            }
        }
    }

    /// Adds (`sign` 1) or subtracts (`sign` -1) another resource, pod counts aside
    /// (upstream: `NodeInfo.update`), saturating at the int64 bounds; past them a
    /// subtraction no longer undoes the addition (a node's totals use [`ResourceTotal`]).
    pub fn accumulate(&mut self, other: &Resource, sign: i64) {
        let term = |v: i64| if sign < 0 { v.saturating_neg() } else { v };
        self.milli_cpu = self.milli_cpu.saturating_add(term(other.milli_cpu));
        self.memory = self.memory.saturating_add(term(other.memory));
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(term(other.ephemeral_storage));
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_add(term(*v));
        }
    }

    /// Whether nothing at all is requested.
    pub fn is_empty_request(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.is_empty()
    }
}

/// An exact total at the int64 bounds.
fn saturate(v: i128) -> i64 {
    i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX })
}

/// The exact sum of many [`Resource`]s (pod counts aside), in i128 so that no realistic
/// number of int64 terms overflows and subtracting a term undoes adding it; read as a
/// [`Resource`] saturated at the int64 bounds (upstream: `NodeInfo.Requested`, whose int64
/// would wrap).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceTotal {
    milli_cpu: i128,
    memory: i128,
    ephemeral_storage: i128,
    scalar: BTreeMap<String, i128>,
}

impl ResourceTotal {
    /// Adds (`sign` 1) or subtracts (`sign` -1) a resource.
    pub fn accumulate(&mut self, other: &Resource, sign: i64) {
        let term = |v: i64| i128::from(sign.signum()) * i128::from(v);
        self.milli_cpu = self.milli_cpu.saturating_add(term(other.milli_cpu));
        self.memory = self.memory.saturating_add(term(other.memory));
        self.ephemeral_storage = self
            .ephemeral_storage
            .saturating_add(term(other.ephemeral_storage));
        for (k, v) in &other.scalar {
            let e = self.scalar.entry(k.clone()).or_default();
            *e = e.saturating_add(term(*v));
        }
    }

    /// The total as a [`Resource`], each amount saturated at the int64 bounds.
    pub fn to_resource(&self) -> Resource {
        Resource {
            milli_cpu: saturate(self.milli_cpu),
            memory: saturate(self.memory),
            ephemeral_storage: saturate(self.ephemeral_storage),
            allowed_pod_number: 0,
            scalar: self
                .scalar
                .iter()
                .map(|(k, v)| (k.clone(), saturate(*v)))
                .collect(),
        }
    }
}

/// Options of [`pod_requests`] (upstream: `PodResourcesOptions`, the fields the scheduler
/// uses for pods not yet running).
#[derive(Debug, Clone, Default)]
pub struct PodResourcesOptions {
    /// Replaces a container's missing (not zero) requests for these resources (upstream:
    /// `NonMissingContainerRequests`).
    pub non_missing_container_requests: ResourceList,
    /// Leave out `spec.overhead` (upstream: `ExcludeOverhead`).
    pub exclude_overhead: bool,
}

fn container_requests(c: &Container, opts: &PodResourcesOptions) -> ResourceList {
    let mut reqs = to_list(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
    for (k, v) in &opts.non_missing_container_requests {
        reqs.entry(k.clone()).or_insert(*v);
    }
    reqs
}

fn is_restartable_init_container(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Upstream `IsSupportedPodLevelResource`: cpu, memory and hugepages.
fn is_supported_pod_level_resource(name: &str) -> bool {
    name == RESOURCE_CPU || name == RESOURCE_MEMORY || name.starts_with(HUGE_PAGES_PREFIX)
}

/// The pod-level requests (`spec.resources.requests`) of supported resources, if any
/// (upstream: `IsPodLevelRequestsSet`).
fn pod_level_requests(pod: &Pod) -> Option<ResourceList> {
    let reqs = pod.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?;
    let list: ResourceList = to_list(Some(reqs))
        .into_iter()
        .filter(|(k, _)| is_supported_pod_level_resource(k))
        .collect();
    (!list.is_empty()).then_some(list)
}

/// The pod's effective requests (upstream: `resourcehelper.PodRequests` with the
/// scheduler's options): the sum of the regular containers and of the restartable
/// (sidecar) init containers, at least each regular init container plus the sidecars
/// started before it, pod-level requests replacing the aggregate where set, plus the
/// pod overhead.
pub fn pod_requests(pod: &Pod, opts: &PodResourcesOptions) -> ResourceList {
    let Some(spec) = pod.spec.as_ref() else {
        return ResourceList::new();
    };
    let mut result = ResourceList::new();
    for c in &spec.containers {
        add_list(&mut result, &container_requests(c, opts));
    }
    let mut restartable = ResourceList::new();
    let mut init = ResourceList::new();
    for c in spec.init_containers.iter().flatten() {
        let reqs = container_requests(c, opts);
        let in_use = if is_restartable_init_container(c) {
            add_list(&mut result, &reqs);
            add_list(&mut restartable, &reqs);
            restartable.clone()
        } else {
            let mut combined = reqs;
            add_list(&mut combined, &restartable);
            combined
        };
        max_list(&mut init, &in_use);
    }
    max_list(&mut result, &init);
    if let Some(pod_level) = pod_level_requests(pod) {
        result.extend(pod_level);
    }
    if !opts.exclude_overhead {
        add_list(&mut result, &to_list(spec.overhead.as_ref()));
    }
    result
}

/// What a pod requests, as NodeResourcesFit checks it (upstream:
/// `noderesources.computePodResourceRequest`).
pub fn compute_pod_resource_request(pod: &Pod) -> Resource {
    let mut r = Resource::default();
    r.set_max_list(&pod_requests(pod, &PodResourcesOptions::default()));
    r
}

fn default_non_missing() -> ResourceList {
    ResourceList::from([
        (
            RESOURCE_CPU.to_string(),
            Amount::from_milli(DEFAULT_MILLI_CPU_REQUEST),
        ),
        (
            RESOURCE_MEMORY.to_string(),
            Amount::from_value(DEFAULT_MEMORY_REQUEST),
        ),
    ])
}

/// A pod's cpu (millicores) and memory requests with 100m and 200Mi standing in for a
/// container that requests none, as scoring counts them so that many request-less pods do
/// not pile onto one node (upstream: `PodInfo.CalculateResource`'s `Non0CPU`/`Non0Mem`;
/// with pod-level requests only a resource set at neither level gets the default).
pub fn compute_pod_non_zero_request(pod: &Pod) -> (i64, i64) {
    let requests = pod_requests(pod, &PodResourcesOptions::default());
    let mut non_missing = default_non_missing();
    if pod_level_requests(pod).is_some() {
        non_missing.retain(|k, _| !requests.contains_key(k));
    }
    let non_zero = if non_missing.is_empty() {
        requests
    } else {
        pod_requests(
            pod,
            &PodResourcesOptions {
                non_missing_container_requests: non_missing,
                exclude_overhead: false,
            },
        )
    };
    let get = |k: &str| non_zero.get(k).copied().unwrap_or_default();
    (
        get(RESOURCE_CPU).milli_value(),
        get(RESOURCE_MEMORY).value(),
    )
}

/// A pod's request for one resource as the resource-allocation scorers see it (upstream:
/// `resourceAllocationScorer.calculatePodResourceRequest`): with `non_zero`, containers
/// without a cpu or memory request count the defaults.
pub fn pod_resource_request_for_scoring(pod: &Pod, resource: &str, non_zero: bool) -> i64 {
    let opts = PodResourcesOptions {
        non_missing_container_requests: if non_zero {
            default_non_missing()
        } else {
            ResourceList::new()
        },
        exclude_overhead: false,
    };
    let q = pod_requests(pod, &opts)
        .get(resource)
        .copied()
        .unwrap_or_default();
    if resource == RESOURCE_CPU {
        q.milli_value()
    } else {
        q.value()
    }
}

#[cfg(test)]
#[allow(clippy::type_complexity)] // table tests: one tuple per case
mod tests {
    use super::*;
    use crate::scheduler::testing::{PodBuilder, container, q};

    #[test]
    fn scalar_resource_names() {
        let cases = [
            ("cpu", false),
            ("memory", false),
            ("pods", false),
            ("example.com/aaa", true),
            ("kubernetes.io/something", true),
            ("subdomain.kubernetes.io/something", true),
            ("hugepages-2Mi", true),
            ("attachable-volumes-aws-ebs", true),
            ("requests.example.com/x", false),
            ("Bad_Domain/x", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_scalar_resource_name(name), want, "{name}");
        }
    }

    fn req(cpu: &str, mem: &str) -> Container {
        container("c", &[("cpu", cpu), ("memory", mem)])
    }

    /// Upstream helpers_test.go TestPodRequestsAndLimits / the sidecar KEP example.
    #[test]
    fn pod_requests_init_and_sidecar_arithmetic() {
        let sidecar = |cpu: &str, mem: &str| {
            let mut c = req(cpu, mem);
            c.restart_policy = Some("Always".into());
            c
        };
        // (name, containers, init containers, want cpu milli, want memory)
        let cases: Vec<(&str, Vec<Container>, Vec<Container>, i64, i64)> = vec![
            (
                "containers are summed",
                vec![req("1", "1G"), req("2", "1G")],
                vec![],
                3000,
                2_000_000_000,
            ),
            // types.go computePodResourceRequest doc: IC1 2/1G, IC2 2/3G, C1 2/1G, C2 1/1G → 3, 3G.
            (
                "init containers are maxed against the sum",
                vec![req("2", "1G"), req("1", "1G")],
                vec![req("2", "1G"), req("2", "3G")],
                3000,
                3_000_000_000,
            ),
            (
                "a big init container dominates",
                vec![req("1", "1G")],
                vec![req("5", "500M")],
                5000,
                1_000_000_000,
            ),
            (
                "a sidecar adds to the containers",
                vec![req("1", "1G")],
                vec![sidecar("500m", "100M")],
                1500,
                1_100_000_000,
            ),
            (
                "an init container after a sidecar runs alongside it",
                vec![req("1", "1G")],
                vec![sidecar("1", "1G"), req("2", "500M")],
                3000,
                2_000_000_000,
            ),
            (
                "an init container before the sidecar does not",
                vec![req("1", "1G")],
                vec![req("2", "500M"), sidecar("1", "1G")],
                2000,
                2_000_000_000,
            ),
            (
                "KEP 753 example",
                vec![req("1", "1G"), req("1", "1G")],
                vec![req("3", "1G"), sidecar("1", "2G"), req("3", "2G")],
                4000,
                4_000_000_000,
            ),
        ];
        for (name, containers, init, cpu, mem) in cases {
            let pod = PodBuilder::new("p")
                .containers(containers)
                .init_containers(init)
                .build();
            let r = compute_pod_resource_request(&pod);
            assert_eq!((r.milli_cpu, r.memory), (cpu, mem), "{name}");
        }
    }

    #[test]
    fn pod_requests_overhead_and_pod_level() {
        let pod = PodBuilder::new("p")
            .containers(vec![req("1", "1G")])
            .overhead(&[("cpu", "250m"), ("memory", "100M")])
            .build();
        let r = compute_pod_resource_request(&pod);
        assert_eq!((r.milli_cpu, r.memory), (1250, 1_100_000_000));
        let excluded = pod_requests(
            &pod,
            &PodResourcesOptions {
                exclude_overhead: true,
                ..Default::default()
            },
        );
        assert_eq!(excluded["cpu"].milli_value(), 1000);

        let mut pod = PodBuilder::new("p")
            .containers(vec![req("1", "1G")])
            .build();
        pod.spec.as_mut().unwrap().resources =
            Some(k8s_openapi::api::core::v1::ResourceRequirements {
                requests: Some(BTreeMap::from([("cpu".to_string(), q("4"))])),
                ..Default::default()
            });
        let r = compute_pod_resource_request(&pod);
        assert_eq!(
            (r.milli_cpu, r.memory),
            (4000, 1_000_000_000),
            "pod-level cpu wins"
        );
        assert_eq!(compute_pod_non_zero_request(&pod), (4000, 1_000_000_000));
    }

    #[test]
    fn scalar_and_ephemeral_requests() {
        let pod = PodBuilder::new("p")
            .containers(vec![container(
                "c",
                &[
                    ("example.com/gpu", "2"),
                    ("ephemeral-storage", "1Gi"),
                    ("pods", "3"),
                ],
            )])
            .build();
        let r = compute_pod_resource_request(&pod);
        assert_eq!(
            r.scalar,
            BTreeMap::from([("example.com/gpu".to_string(), 2)])
        );
        assert_eq!(r.ephemeral_storage, 1 << 30);
        assert_eq!(r.allowed_pod_number, 0, "pods is not a request");
    }

    /// Upstream types_test.go TestPodInfoCalculateResource / the non-zero defaults.
    #[test]
    fn non_zero_requests() {
        // (name, containers, want (cpu, memory))
        let cases: Vec<(&str, Vec<Container>, (i64, i64))> = vec![
            ("no containers", vec![], (0, 0)),
            (
                "no requests",
                vec![container("c", &[])],
                (100, DEFAULT_MEMORY_REQUEST),
            ),
            (
                "explicit zero is kept",
                vec![container("c", &[("cpu", "0"), ("memory", "0")])],
                (0, 0),
            ),
            (
                "only cpu set",
                vec![container("c", &[("cpu", "500m")])],
                (500, DEFAULT_MEMORY_REQUEST),
            ),
            (
                "each container gets the default",
                vec![container("a", &[]), container("b", &[("memory", "1Gi")])],
                (200, DEFAULT_MEMORY_REQUEST + (1 << 30)),
            ),
        ];
        for (name, containers, want) in cases {
            let pod = PodBuilder::new("p").containers(containers).build();
            assert_eq!(compute_pod_non_zero_request(&pod), want, "{name}");
        }
        let pod = PodBuilder::new("p")
            .containers(vec![container("c", &[])])
            .build();
        assert_eq!(pod_resource_request_for_scoring(&pod, "cpu", true), 100);
        assert_eq!(pod_resource_request_for_scoring(&pod, "cpu", false), 0);
        assert_eq!(
            pod_resource_request_for_scoring(&pod, "memory", true),
            DEFAULT_MEMORY_REQUEST
        );
    }

    #[test]
    fn node_allocatable_resource() {
        let rl = BTreeMap::from([
            ("cpu".to_string(), q("4")),
            ("memory".to_string(), q("8Gi")),
            ("pods".to_string(), q("110")),
            ("ephemeral-storage".to_string(), q("100Gi")),
            ("example.com/gpu".to_string(), q("2")),
            ("unknown".to_string(), q("7")),
        ]);
        let r = Resource::from_quantities(Some(&rl));
        assert_eq!(r.milli_cpu, 4000);
        assert_eq!(r.memory, 8 << 30);
        assert_eq!(r.allowed_pod_number, 110);
        assert_eq!(r.ephemeral_storage, 100 << 30);
        assert_eq!(
            r.scalar,
            BTreeMap::from([("example.com/gpu".to_string(), 2)])
        );
    }

    // --- Overflow: quantities at the int64 bounds (8Ei, 9223372036854775807) saturate.

    #[test]
    fn overflow_resource_sums_saturate() {
        const FIVE_EI: i64 = 5 << 60;
        let gpu = "example.com/gpu";
        let list = ResourceList::from([
            (RESOURCE_MEMORY.to_string(), parse_quantity("5Ei").unwrap()),
            (
                RESOURCE_CPU.to_string(),
                parse_quantity("9223372036854775807").unwrap(),
            ),
            (gpu.to_string(), parse_quantity("5Ei").unwrap()),
        ]);
        // Resource.Add twice: int64 would wrap negative.
        let mut r = Resource::default();
        r.add_list(&list);
        assert_eq!((r.memory, r.milli_cpu), (FIVE_EI, i64::MAX));
        r.add_list(&list);
        assert_eq!((r.memory, r.milli_cpu), (i64::MAX, i64::MAX));
        assert_eq!(r.scalar.get(gpu), Some(&i64::MAX));

        // accumulate saturates both ways; negating int64's min saturates too.
        let one = |memory: i64| Resource {
            memory,
            ..Resource::default()
        };
        let mut acc = one(i64::MAX - 1);
        acc.accumulate(&one(5), 1);
        assert_eq!(acc.memory, i64::MAX);
        acc.accumulate(&one(i64::MIN), -1);
        assert_eq!(acc.memory, i64::MAX);
        let mut acc = one(i64::MIN + 1);
        acc.accumulate(&one(5), -1);
        assert_eq!(acc.memory, i64::MIN);

        // ResourceTotal: exact, so that a removal undoes an addition past int64.
        let big = Resource {
            milli_cpu: i64::MAX,
            memory: FIVE_EI,
            ephemeral_storage: FIVE_EI,
            allowed_pod_number: 0,
            scalar: BTreeMap::from([(gpu.to_string(), FIVE_EI)]),
        };
        let mut total = ResourceTotal::default();
        total.accumulate(&big, 1);
        total.accumulate(&big, 1);
        let r = total.to_resource();
        assert_eq!(
            (
                r.milli_cpu,
                r.memory,
                r.ephemeral_storage,
                r.scalar.get(gpu)
            ),
            (i64::MAX, i64::MAX, i64::MAX, Some(&i64::MAX))
        );
        total.accumulate(&big, -1);
        assert_eq!(total.to_resource(), big);
        total.accumulate(&big, -1);
        let r = total.to_resource();
        assert_eq!((r.milli_cpu, r.memory, r.scalar.get(gpu)), (0, 0, Some(&0)));
    }

    #[test]
    fn overflow_pod_requests_saturate() {
        // Two 8Ei containers plus 8Ei overhead: the exact sum is beyond int64.
        let pod = PodBuilder::new("p")
            .containers(vec![
                container("a", &[("memory", "8Ei"), ("cpu", "9223372036854775807")]),
                container("b", &[("memory", "8Ei"), ("cpu", "9223372036854775807")]),
            ])
            .overhead(&[("memory", "8Ei")])
            .build();
        let r = compute_pod_resource_request(&pod);
        assert_eq!((r.memory, r.milli_cpu), (i64::MAX, i64::MAX));
        assert_eq!(compute_pod_non_zero_request(&pod), (i64::MAX, i64::MAX));
        assert_eq!(
            pod_resource_request_for_scoring(&pod, RESOURCE_MEMORY, true),
            i64::MAX
        );
    }

    proptest::proptest! {
        /// A node's total is the exact sum saturated at int64, and removing every term but
        /// the first gives the first back exactly, whatever the int64 values.
        #[test]
        fn overflow_resource_total_is_exact(
            terms in proptest::collection::vec(proptest::prelude::any::<(i64, i64)>(), 1..6),
        ) {
            let rs: Vec<Resource> = terms
                .iter()
                .map(|(cpu, memory)| Resource {
                    milli_cpu: *cpu,
                    memory: *memory,
                    ..Resource::default()
                })
                .collect();
            let mut total = ResourceTotal::default();
            for r in &rs {
                total.accumulate(r, 1);
            }
            let exact: i128 = terms.iter().map(|(_, m)| i128::from(*m)).sum();
            proptest::prop_assert_eq!(total.to_resource().memory, saturate(exact));
            for r in &rs[1..] {
                total.accumulate(r, -1);
            }
            let first = total.to_resource();
            proptest::prop_assert_eq!((first.milli_cpu, first.memory), terms[0]);
        }
    }
}
