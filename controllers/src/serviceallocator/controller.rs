//! `service-allocator-controller`: cluster IPs and NodePorts for rekube Services. Upstream
//! allocates both inside the apiserver, in the Service registry's create and update
//! (pkg/registry/core/service/storage/alloc.go), and repairs them with the
//! `ipallocator-repair-controller` and `portallocator-repair-controller` loops; a CRD has no
//! registry, so this controller does both, one work-queue key per Service:
//!
//! - a cluster IP is reserved by creating the host cluster's own `networking.k8s.io/v1`
//!   IPAddress named after it (KEP-1880: the first writer wins, a 409 means taken), with a
//!   parentRef to the rekube Service (`group: rekube.io`) and the label
//!   `ipaddress.kubernetes.io/managed-by: ipallocator.rekube.io`, which the host's repair
//!   loop leaves alone; so a rekube Service and a core Service can never get the same IP;
//! - a NodePort is reserved by creating a coordination.k8s.io Lease `rekube-nodeport-<port>`
//!   in the manager's namespace (the same first-writer-wins create; upstream keeps a bitmap
//!   in one RangeAllocation object no client can reach);
//! - then the Service's spec is patched (clusterIP, clusterIPs, ipFamilies,
//!   ipFamilyPolicy, nodePorts, healthCheckNodePort) with its resourceVersion as
//!   precondition, so two replicas racing never both write; the loser releases what it
//!   reserved;
//! - a requested IP or port that is taken or out of range cannot be refused after the
//!   fact: the Service gets a Warning event and the condition `Allocated` False with
//!   upstream's message;
//! - reservations go with their Service: at once when its deletion was seen (its UID is
//!   remembered), else after upstream's 60 s grace (an allocation in flight in another
//!   replica); on start every Service is synced and every reservation whose Service is
//!   gone is released, which repairs what a crash left.
//!
//! The decisions are [`super::alloc`], [`super::ipallocator`], [`super::portallocator`].
use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use rekube_crds::Service;
use serde_json::{Value, json};

use super::alloc::{self, Config, Plan, Refusal};
use super::ipallocator::IpFamily;
use crate::manager::client::ignore_not_found;
use crate::manager::events::EventRecorder;
use crate::manager::informer::{Change, Informer, ObjectKey, wait_for_named_cache_sync};
use crate::manager::metrics::Metrics;
use crate::manager::worker::run_workers;
use crate::manager::workqueue::WorkQueue;

pub const CONTROLLER_NAME: &str = "service-allocator-controller";
/// `ipaddress.kubernetes.io/managed-by` of rekube's IPAddresses. The host's repair loop
/// (repairip.go) only touches those labelled `ipallocator.k8s.io`.
pub const IP_MANAGED_BY: &str = "ipallocator.rekube.io";
pub const LABEL_IP_MANAGED_BY: &str = "ipaddress.kubernetes.io/managed-by";
const LABEL_IP_FAMILY: &str = "ipaddress.kubernetes.io/ip-family";
/// The Service a reservation belongs to: its UID and namespace on IPAddresses and Leases
/// (for selection), its name on Leases (an IPAddress has both in its parentRef, which is
/// what counts).
pub const LABEL_SERVICE_UID: &str = "service-allocator.rekube.io/service-uid";
pub const LABEL_SERVICE_NAMESPACE: &str = "service-allocator.rekube.io/service-namespace";
pub const LABEL_SERVICE_NAME: &str = "service-allocator.rekube.io/service-name";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const PORT_MANAGED_BY: &str = "rekube-service-allocator";
pub const NODE_PORT_LEASE_PREFIX: &str = "rekube-nodeport-";
/// The condition reporting a refusal (and, once it clears, success).
pub const CONDITION_ALLOCATED: &str = "Allocated";
/// How long a reservation not (yet) in its Service's spec is kept: an allocation of
/// another replica may be in flight (upstream repairip.go's grace period).
const GRACE: Duration = Duration::from_secs(60);
/// How soon a Service whose request was refused for a reason that may clear is retried.
const RETRY_REFUSED: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("service {service}: {action} {object}: {source}")]
    Write {
        service: String,
        action: &'static str,
        object: String,
        source: Box<kube::Error>,
    },
}

/// The selector of the node port Leases' informer.
pub fn port_lease_selector() -> String {
    format!("{LABEL_MANAGED_BY}={PORT_MANAGED_BY}")
}

pub struct Informers {
    pub services: Arc<Informer<Service>>,
    /// Every IPAddress of the cluster (the host's own included: they are taken too).
    pub ip_addresses: Arc<Informer<IPAddress>>,
    /// The node port Leases ([`port_lease_selector`]).
    pub port_leases: Arc<Informer<Lease>>,
}

/// What a refused Service waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Wait {
    Held(Held),
    IpRange(IpFamily),
    PortRange,
}

/// A refusal and what would clear it.
struct Refused {
    refusal: Refusal,
    wait: Option<Wait>,
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Self {
        Refused {
            refusal,
            wait: None,
        }
    }
}

/// One IP or port reserved for a Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Held {
    Ip(IpAddr),
    Port(u16),
}

#[derive(Debug, Clone)]
struct Reservation {
    held: Held,
    uid: Option<String>,
    age: Option<Duration>,
}

pub struct ServiceAllocator {
    client: Client,
    informers: Informers,
    config: Config,
    /// Where the node port Leases live.
    lease_namespace: String,
    /// `--namespace`: only reservations of Services in it are this instance's.
    scope: String,
    queue: Arc<WorkQueue<ObjectKey>>,
    metrics: Metrics,
    recorder: EventRecorder,
    /// UIDs of Services whose deletion was seen: their reservations go at once.
    tombstones: Mutex<HashMap<String, Instant>>,
    /// Services refused for a reason that may clear, and what they wait for: synced again
    /// as soon as it is released, besides every [`RETRY_REFUSED`].
    waiting: Mutex<HashMap<ObjectKey, Vec<Wait>>>,
    /// What this process reserved and its caches may not show yet (the watch lags the
    /// create): spares the next sync of the same Service a create and a read.
    reserved_here: Mutex<HashMap<ObjectKey, Vec<(Held, String)>>>,
    /// The reservations in the caches by Service (kept by the informers' handlers), so a
    /// sync does not scan every IPAddress and Lease.
    by_parent: Mutex<HashMap<ObjectKey, BTreeSet<Held>>>,
    /// How many cached Services name each IP and port in their spec ([`alloc::spec_holds`]):
    /// never handed out dynamically.
    in_specs: Mutex<HashMap<Held, usize>>,
    random: AtomicU64,
}

fn key_of(namespace: &str, name: &str) -> ObjectKey {
    ObjectKey::new(Some(namespace), name)
}

fn age(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Duration> {
    let created = meta.creation_timestamp.as_ref()?.0;
    let now = jiff::Timestamp::now();
    Some(Duration::try_from(now.duration_since(created)).unwrap_or(Duration::ZERO))
}

fn lease_port(name: &str) -> Option<u16> {
    name.strip_prefix(NODE_PORT_LEASE_PREFIX)?.parse().ok()
}

impl ServiceAllocator {
    pub fn new(
        client: Client,
        informers: Informers,
        config: Config,
        lease_namespace: String,
        scope: String,
        metrics: Metrics,
    ) -> Arc<Self> {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let c = Arc::new(ServiceAllocator {
            recorder: EventRecorder::new(client.clone(), CONTROLLER_NAME),
            client,
            informers,
            config,
            lease_namespace,
            scope,
            queue: WorkQueue::new(CONTROLLER_NAME),
            metrics,
            tombstones: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            reserved_here: Mutex::new(HashMap::new()),
            by_parent: Mutex::new(HashMap::new()),
            in_specs: Mutex::new(HashMap::new()),
            random: AtomicU64::new(seed),
        });
        let enqueue = {
            let weak = Arc::downgrade(&c);
            move |key: ObjectKey| {
                if let Some(c) = weak.upgrade() {
                    c.metrics.queue_add(CONTROLLER_NAME);
                    c.queue.add(key);
                }
            }
        };
        let weak = Arc::downgrade(&c);
        c.informers.services.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let (removed, added) = match change {
                Change::Added(s) => (None, Some(s)),
                Change::Updated { old, new } => (Some(old), Some(new)),
                Change::Deleted(s) => (Some(s), None),
            };
            let held = |s: &Service| {
                let (ips, ports) = alloc::spec_holds(&s.spec.clone().unwrap_or_default());
                ips.into_iter()
                    .map(Held::Ip)
                    .chain(ports.into_iter().map(Held::Port))
                    .collect::<Vec<_>>()
            };
            let mut in_specs = c.in_specs.lock().unwrap();
            for h in removed.map(|s| held(s)).into_iter().flatten() {
                if let Some(n) = in_specs.get_mut(&h) {
                    *n -= 1;
                    if *n == 0 {
                        in_specs.remove(&h);
                    }
                }
            }
            for h in added.map(|s| held(s)).into_iter().flatten() {
                *in_specs.entry(h).or_default() += 1;
            }
        });
        let (e, weak) = (enqueue.clone(), Arc::downgrade(&c));
        c.informers
            .services
            .add_handler(move |change| match change {
                Change::Added(s) => e(ObjectKey::of(s.as_ref())),
                // Our own status writes change no spec.
                Change::Updated { old, new } => {
                    if old.spec != new.spec || old.metadata.uid != new.metadata.uid {
                        e(ObjectKey::of(new.as_ref()))
                    }
                }
                Change::Deleted(s) => {
                    if let (Some(c), Some(uid)) = (weak.upgrade(), s.metadata.uid.clone()) {
                        let mut t = c.tombstones.lock().unwrap();
                        t.retain(|_, seen| seen.elapsed() < GRACE * 10);
                        t.insert(uid, Instant::now());
                    }
                    e(ObjectKey::of(s.as_ref()))
                }
            });
        // A reservation deleted by someone else: its Service, if it still holds the IP or
        // port, gets it back (upstream's ClusterIPNotAllocated repair).
        // The index of reservations by Service.
        let weak = Arc::downgrade(&c);
        c.informers.ip_addresses.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let held = |ip: &IPAddress| {
                let addr = ip.metadata.name.as_deref()?.parse().ok()?;
                Some((c.ip_parent(ip)?, Held::Ip(addr)))
            };
            c.index(change, held);
        });
        let weak = Arc::downgrade(&c);
        c.informers.port_leases.add_handler(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let held = |l: &Lease| {
                let port = lease_port(l.metadata.name.as_deref()?)?;
                Some((c.lease_parent(l)?, Held::Port(port)))
            };
            c.index(change, held);
        });
        // Something released: the Services waiting for it try again.
        let (e, weak) = (enqueue.clone(), Arc::downgrade(&c));
        c.informers.ip_addresses.add_handler(move |change| {
            if let (Change::Deleted(ip), Some(c)) = (change, weak.upgrade()) {
                c.ip_parent(ip).into_iter().for_each(&e);
                if let Some(addr) = ip.metadata.name.as_deref().and_then(|n| n.parse().ok()) {
                    c.waiters(&Held::Ip(addr)).into_iter().for_each(&e);
                }
            }
        });
        let (e, weak) = (enqueue, Arc::downgrade(&c));
        c.informers.port_leases.add_handler(move |change| {
            if let (Change::Deleted(l), Some(c)) = (change, weak.upgrade()) {
                c.lease_parent(l).into_iter().for_each(&e);
                if let Some(port) = l.metadata.name.as_deref().and_then(lease_port) {
                    c.waiters(&Held::Port(port)).into_iter().for_each(&e);
                }
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
                i.services.has_synced(),
                i.ip_addresses.has_synced(),
                i.port_leases.has_synced(),
            ],
        )
        .await;
        self.warn_on_overlap().await;
        // Repair on start: every Service was queued by its first list; the reservations
        // whose Service is gone are queued here (upstream's runOnce).
        let mut orphans = BTreeSet::new();
        for ip in i.ip_addresses.store().state() {
            orphans.extend(self.ip_parent(&ip));
        }
        for l in i.port_leases.store().state() {
            orphans.extend(self.lease_parent(&l));
        }
        for key in orphans {
            if i.services.get(&key).is_none() {
                self.queue.add(key);
            }
        }
        let this = Arc::clone(&self);
        run_workers(self.queue(), workers, self.metrics.clone(), move |key| {
            let this = Arc::clone(&this);
            async move { this.sync_service(&key).await }
        })
        .await
    }

    /// Warns when a range overlaps one of the cluster's own ServiceCIDRs: allocation stays
    /// correct (an IPAddress exists once), but the cluster's kube-proxy (nftables mode)
    /// drops traffic to addresses of its ranges it did not program.
    async fn warn_on_overlap(&self) {
        if self.config.ip_ranges.is_empty() {
            return;
        }
        let cidrs = match Api::<ServiceCIDR>::all(self.client.clone())
            .list(&Default::default())
            .await
        {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "listing the cluster's ServiceCIDRs");
                return;
            }
        };
        for c in cidrs {
            for cidr in c.spec.iter().flat_map(|s| s.cidrs.iter().flatten()) {
                let Ok(theirs) = cidr.parse::<crate::nodelifecycle::cidr::IpNet>() else {
                    continue;
                };
                for r in &self.config.ip_ranges {
                    if alloc::overlaps(&r.cidr(), &theirs) {
                        tracing::warn!(
                            range = %r.cidr(),
                            servicecidr = c.metadata.name.as_deref().unwrap_or_default(),
                            cidr = %theirs,
                            "--service-cluster-ip-range overlaps the cluster's own ServiceCIDR: rekube and core Services still never share an IP, but the cluster's kube-proxy may drop traffic to rekube's"
                        );
                    }
                }
            }
        }
    }

    /// The Services waiting for `released`: for that very IP or port, or for any of its
    /// range.
    fn waiters(&self, released: &Held) -> Vec<ObjectKey> {
        let in_range = match released {
            Held::Ip(ip) => Wait::IpRange(IpFamily::of(ip)),
            Held::Port(_) => Wait::PortRange,
        };
        let in_range = match released {
            Held::Ip(ip) => self
                .config
                .range(IpFamily::of(ip))
                .is_some_and(|r| r.check(ip).is_ok())
                .then_some(in_range),
            Held::Port(p) => self
                .config
                .node_ports
                .contains(i32::from(*p))
                .then_some(in_range),
        };
        self.waiting
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, waits)| {
                waits
                    .iter()
                    .any(|w| w == &Wait::Held(released.clone()) || Some(w) == in_range.as_ref())
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn in_scope(&self, namespace: &str) -> bool {
        self.scope.is_empty() || self.scope == namespace
    }

    /// The rekube Service an IPAddress of ours belongs to.
    fn ip_parent(&self, ip: &IPAddress) -> Option<ObjectKey> {
        let labels = ip.metadata.labels.as_ref()?;
        if labels.get(LABEL_IP_MANAGED_BY).map(String::as_str) != Some(IP_MANAGED_BY) {
            return None;
        }
        let parent = &ip.spec.parent_ref;
        let namespace = parent.namespace.as_deref()?;
        (parent.group.as_deref() == Some(rekube_crds::GROUP)
            && parent.resource == "services"
            && self.in_scope(namespace))
        .then(|| key_of(namespace, &parent.name))
    }

    fn lease_parent(&self, lease: &Lease) -> Option<ObjectKey> {
        let labels = lease.metadata.labels.as_ref()?;
        let namespace = labels.get(LABEL_SERVICE_NAMESPACE)?;
        let name = labels.get(LABEL_SERVICE_NAME)?;
        self.in_scope(namespace).then(|| key_of(namespace, name))
    }

    /// Keeps [`Self::by_parent`] in step with a cache change.
    fn index<K>(&self, change: Change<'_, K>, held: impl Fn(&K) -> Option<(ObjectKey, Held)>) {
        let mut index = self.by_parent.lock().unwrap();
        let mut remove = |o: &K| {
            if let Some((parent, h)) = held(o)
                && let Some(set) = index.get_mut(&parent)
            {
                set.remove(&h);
                if set.is_empty() {
                    index.remove(&parent);
                }
            }
        };
        match &change {
            Change::Deleted(o) => remove(o),
            Change::Updated { old, .. } => remove(old),
            Change::Added(_) => {}
        }
        if let Change::Added(o) | Change::Updated { new: o, .. } = change
            && let Some((parent, h)) = held(o)
        {
            index.entry(parent).or_default().insert(h);
        }
    }

    /// What is reserved for the Service `key`, from the caches.
    fn reservations_of(&self, key: &ObjectKey) -> Vec<Reservation> {
        let uid = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            m.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SERVICE_UID))
                .cloned()
        };
        let held: Vec<Held> = self
            .by_parent
            .lock()
            .unwrap()
            .get(key)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        held.into_iter()
            .filter_map(|h| {
                let meta = match &h {
                    Held::Ip(ip) => self
                        .informers
                        .ip_addresses
                        .get(&ObjectKey::new(None, &ip.to_string()))?
                        .metadata
                        .clone(),
                    Held::Port(p) => self
                        .informers
                        .port_leases
                        .get(&ObjectKey::new(
                            Some(&self.lease_namespace),
                            &format!("{NODE_PORT_LEASE_PREFIX}{p}"),
                        ))?
                        .metadata
                        .clone(),
                };
                Some(Reservation {
                    held: h,
                    uid: uid(&meta),
                    age: age(&meta),
                })
            })
            .collect()
    }

    fn next_random(&self) -> u64 {
        // splitmix64 over a per-process seed: each allocation starts somewhere else, so
        // concurrent workers and replicas rarely try the same address first.
        let mut z = self
            .random
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Brings one Service's reservations and spec in line (see the module doc).
    pub async fn sync_service(&self, key: &ObjectKey) -> Result<Option<Duration>, Error> {
        let mut reservations = self.reservations_of(key);
        // Reserved here but not in the caches yet.
        let here = self.reserved_here.lock().unwrap().remove(key);
        for (held, uid) in here.into_iter().flatten() {
            if !reservations.iter().any(|r| r.held == held) {
                reservations.push(Reservation {
                    held,
                    uid: Some(uid),
                    age: Some(Duration::ZERO),
                });
            }
        }
        let Some(svc) = self.informers.services.get(key) else {
            self.waiting.lock().unwrap().remove(key);
            return self.release(key, &reservations, None, &[]).await;
        };
        let spec = svc.spec.clone().unwrap_or_default();
        let uid = svc.metadata.uid.clone().unwrap_or_default();
        let plan = match alloc::plan(&spec, &self.config) {
            Ok(p) => p,
            Err(refusals) => {
                let refused = refusals.into_iter().map(Refused::from).collect();
                return self.refuse(&svc, refused).await;
            }
        };
        // What the spec holds must be reserved (a requested IP or port, or a reservation
        // lost); taken by another object is a refusal.
        let mut refusals = Vec::new();
        for ip in plan.held_ips() {
            if !reservations.iter().any(|r| r.held == Held::Ip(ip))
                && !self.reserve_ip(&svc, &uid, ip).await?
            {
                refusals.push(Refused {
                    refusal: alloc::ip_taken(&spec, &ip),
                    wait: Some(Wait::Held(Held::Ip(ip))),
                });
            }
        }
        for port in plan.held_ports() {
            if !reservations.iter().any(|r| r.held == Held::Port(port))
                && !self.reserve_port(&svc, &uid, port).await?
            {
                refusals.push(Refused {
                    refusal: alloc::port_taken(&spec, port),
                    wait: Some(Wait::Held(Held::Port(port))),
                });
            }
        }
        if !refusals.is_empty() {
            return self.refuse(&svc, refusals).await;
        }
        let (new_ips, new_ports) = match self.allocate(&svc, &uid, &plan).await? {
            Ok(new) => new,
            Err(refused) => return self.refuse(&svc, vec![refused]).await,
        };
        if let Some(mut patch) = plan.spec_patch(&spec, &new_ips, &new_ports) {
            patch["metadata"] = json!({ "resourceVersion": svc.metadata.resource_version });
            let api = Api::<Service>::namespaced(
                self.client.clone(),
                key.namespace.as_deref().unwrap_or_default(),
            );
            if let Err(source) = api
                .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                // Changed meanwhile (another replica wrote first, or the user): what was
                // reserved here goes back; the Service's update event syncs it again.
                let mut news: Vec<Held> = new_ips.iter().map(|ip| Held::Ip(*ip)).collect();
                news.extend(new_ports.iter().map(|p| Held::Port(*p)));
                for h in news {
                    self.delete_reservation(key, &h).await?;
                }
                return Err(Error::Write {
                    service: key.to_string(),
                    action: "patching",
                    object: "its spec".into(),
                    source: Box::new(source),
                });
            }
            tracing::info!(service = %key, ips = ?plan.final_ips(&new_ips), node_ports = ?new_ports, "allocated");
            let mut here = self.reserved_here.lock().unwrap();
            let entry = here.entry(key.clone()).or_default();
            entry.extend(new_ips.iter().map(|ip| (Held::Ip(*ip), uid.clone())));
            entry.extend(new_ports.iter().map(|p| (Held::Port(*p), uid.clone())));
        }
        self.clear_refusal(&svc).await;
        let keep = KeepSet {
            ips: plan.final_ips(&new_ips),
            ports: plan.final_ports(&new_ports),
        };
        self.release(key, &reservations, Some(&uid), &keep.as_held())
            .await
    }

    /// Allocates the new IPs and ports `plan` needs; `Ok(Err(_))`: a range is full (what
    /// was allocated is released).
    async fn allocate(
        &self,
        svc: &Service,
        uid: &str,
        plan: &Plan,
    ) -> Result<Result<(Vec<IpAddr>, Vec<u16>), Refused>, Error> {
        let key = ObjectKey::of(svc);
        let mut new_ips = Vec::new();
        let mut new_ports = Vec::new();
        let mut full = None;
        for family in plan.ips_to_allocate() {
            match self.allocate_ip(svc, uid, family).await? {
                Some(ip) => new_ips.push(ip),
                None => {
                    full = Some(Refused {
                        refusal: alloc::ip_range_full(family),
                        wait: Some(Wait::IpRange(family)),
                    });
                    break;
                }
            }
        }
        if full.is_none() {
            for _ in 0..plan.ports_to_allocate() {
                match self.allocate_port(svc, uid).await? {
                    Some(p) => new_ports.push(p),
                    None => {
                        full = Some(Refused {
                            refusal: alloc::port_range_full(),
                            wait: Some(Wait::PortRange),
                        });
                        break;
                    }
                }
            }
        }
        if let Some(refusal) = full {
            for ip in new_ips {
                self.delete_reservation(&key, &Held::Ip(ip)).await?;
            }
            for p in new_ports {
                self.delete_reservation(&key, &Held::Port(p)).await?;
            }
            return Ok(Err(refusal));
        }
        Ok(Ok((new_ips, new_ports)))
    }

    /// The next free IP of `family`'s range, reserved (upstream allocateFromRange: skip
    /// what the cache has, create, on 409 try the next).
    async fn allocate_ip(
        &self,
        svc: &Service,
        uid: &str,
        family: IpFamily,
    ) -> Result<Option<IpAddr>, Error> {
        let Some(range) = self.config.range(family) else {
            return Ok(None);
        };
        for ip in range.candidates(self.next_random()) {
            if self
                .informers
                .ip_addresses
                .get(&ObjectKey::new(None, &ip.to_string()))
                .is_some()
                || self.in_specs.lock().unwrap().contains_key(&Held::Ip(ip))
            {
                continue;
            }
            if self.create_ip(svc, uid, ip).await? {
                return Ok(Some(ip));
            }
        }
        Ok(None)
    }

    async fn allocate_port(&self, svc: &Service, uid: &str) -> Result<Option<u16>, Error> {
        for port in self.config.node_ports.candidates(self.next_random()) {
            let name = format!("{NODE_PORT_LEASE_PREFIX}{port}");
            if self
                .informers
                .port_leases
                .get(&ObjectKey::new(Some(&self.lease_namespace), &name))
                .is_some()
                || self
                    .in_specs
                    .lock()
                    .unwrap()
                    .contains_key(&Held::Port(port))
            {
                continue;
            }
            if self.create_port(svc, uid, port).await? {
                return Ok(Some(port));
            }
        }
        Ok(None)
    }

    /// Creates the IPAddress; false when it exists already (taken).
    async fn create_ip(&self, svc: &Service, uid: &str, ip: IpAddr) -> Result<bool, Error> {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let obj: IPAddress = serde_json::from_value(json!({
            "metadata": {
                "name": ip.to_string(),
                "labels": {
                    LABEL_IP_FAMILY: IpFamily::of(&ip).as_str(),
                    LABEL_IP_MANAGED_BY: IP_MANAGED_BY,
                    LABEL_SERVICE_NAMESPACE: ns,
                    LABEL_SERVICE_UID: uid,
                },
            },
            "spec": { "parentRef": {
                "group": rekube_crds::GROUP, "resource": "services",
                "namespace": ns, "name": name,
            }},
        }))
        .expect("a valid IPAddress");
        created(
            Api::<IPAddress>::all(self.client.clone())
                .create(&PostParams::default(), &obj)
                .await,
            &ObjectKey::of(svc),
            format!("ipaddress {ip}"),
        )
    }

    async fn create_port(&self, svc: &Service, uid: &str, port: u16) -> Result<bool, Error> {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let obj: Lease = serde_json::from_value(json!({
            "metadata": {
                "name": format!("{NODE_PORT_LEASE_PREFIX}{port}"),
                "namespace": self.lease_namespace,
                "labels": {
                    LABEL_MANAGED_BY: PORT_MANAGED_BY,
                    LABEL_SERVICE_NAMESPACE: ns,
                    LABEL_SERVICE_NAME: name,
                    LABEL_SERVICE_UID: uid,
                },
            },
            "spec": { "holderIdentity": format!("services.{}/{ns}/{name}", rekube_crds::GROUP) },
        }))
        .expect("a valid Lease");
        created(
            Api::<Lease>::namespaced(self.client.clone(), &self.lease_namespace)
                .create(&PostParams::default(), &obj)
                .await,
            &ObjectKey::of(svc),
            format!(
                "lease {}/{NODE_PORT_LEASE_PREFIX}{port}",
                self.lease_namespace
            ),
        )
    }

    /// Reserves an IP the spec holds: true when it is (now, or already) this Service's.
    async fn reserve_ip(&self, svc: &Service, uid: &str, ip: IpAddr) -> Result<bool, Error> {
        if self.create_ip(svc, uid, ip).await? {
            return Ok(true);
        }
        // Exists: ours (the cache lags), or another object's.
        let existing = Api::<IPAddress>::all(self.client.clone())
            .get_opt(&ip.to_string())
            .await
            .map_err(|source| Error::Write {
                service: ObjectKey::of(svc).to_string(),
                action: "reading",
                object: format!("ipaddress {ip}"),
                source: Box::new(source),
            })?;
        Ok(existing.is_some_and(|e| self.ip_parent(&e) == Some(ObjectKey::of(svc))))
    }

    async fn reserve_port(&self, svc: &Service, uid: &str, port: u16) -> Result<bool, Error> {
        if self.create_port(svc, uid, port).await? {
            return Ok(true);
        }
        let name = format!("{NODE_PORT_LEASE_PREFIX}{port}");
        let existing = Api::<Lease>::namespaced(self.client.clone(), &self.lease_namespace)
            .get_opt(&name)
            .await
            .map_err(|source| Error::Write {
                service: ObjectKey::of(svc).to_string(),
                action: "reading",
                object: format!("lease {name}"),
                source: Box::new(source),
            })?;
        Ok(existing.is_some_and(|e| self.lease_parent(&e) == Some(ObjectKey::of(svc))))
    }

    async fn delete_reservation(&self, key: &ObjectKey, held: &Held) -> Result<(), Error> {
        let (result, object) = match held {
            Held::Ip(ip) => (
                Api::<IPAddress>::all(self.client.clone())
                    .delete(&ip.to_string(), &DeleteParams::default())
                    .await
                    .map(|_| ()),
                format!("ipaddress {ip}"),
            ),
            Held::Port(p) => (
                Api::<Lease>::namespaced(self.client.clone(), &self.lease_namespace)
                    .delete(
                        &format!("{NODE_PORT_LEASE_PREFIX}{p}"),
                        &DeleteParams::default(),
                    )
                    .await
                    .map(|_| ()),
                format!("lease {}/{NODE_PORT_LEASE_PREFIX}{p}", self.lease_namespace),
            ),
        };
        ignore_not_found(result).map_err(|source| Error::Write {
            service: key.to_string(),
            action: "deleting",
            object,
            source: Box::new(source),
        })
    }

    /// Releases the reservations of `key` not in `keep`: at once when they belong to a
    /// Service known to be gone (its deletion seen, or another UID now has the name),
    /// else once older than the grace period.
    async fn release(
        &self,
        key: &ObjectKey,
        reservations: &[Reservation],
        current_uid: Option<&str>,
        keep: &[Held],
    ) -> Result<Option<Duration>, Error> {
        let mut requeue: Option<Duration> = None;
        for r in reservations.iter().filter(|r| !keep.contains(&r.held)) {
            let deleted = r
                .uid
                .as_ref()
                .is_some_and(|u| self.tombstones.lock().unwrap().contains_key(u));
            match alloc::release_after(r.uid.as_deref(), current_uid, deleted, r.age, GRACE) {
                None => {
                    self.delete_reservation(key, &r.held).await?;
                    tracing::info!(service = %key, released = ?r.held, "released");
                }
                Some(left) => requeue = Some(requeue.map_or(left, |d| d.min(left))),
            }
        }
        Ok(requeue)
    }

    /// Reports refusals: a Warning event each and the condition `Allocated` False.
    async fn refuse(
        &self,
        svc: &Service,
        refusals: Vec<Refused>,
    ) -> Result<Option<Duration>, Error> {
        let object = svc.object_ref(&());
        for Refused { refusal: r, .. } in &refusals {
            tracing::warn!(service = %ObjectKey::of(svc), reason = r.reason, message = %r.message, "refused");
            self.recorder
                .warning(&object, r.reason, r.message.clone())
                .await;
        }
        let message = refusals
            .iter()
            .map(|r| r.refusal.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        self.set_condition(svc, "False", refusals[0].refusal.reason, &message)
            .await;
        let retry = refusals.iter().any(|r| r.refusal.retry);
        let waits: Vec<Wait> = refusals.iter().filter_map(|r| r.wait.clone()).collect();
        if waits.is_empty() {
            self.waiting.lock().unwrap().remove(&ObjectKey::of(svc));
        } else {
            self.waiting
                .lock()
                .unwrap()
                .insert(ObjectKey::of(svc), waits);
        }
        Ok(retry.then_some(RETRY_REFUSED))
    }

    async fn clear_refusal(&self, svc: &Service) {
        self.waiting.lock().unwrap().remove(&ObjectKey::of(svc));
        let refused = svc
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == CONDITION_ALLOCATED && c.status != "True")
            });
        if refused {
            self.set_condition(svc, "True", "Allocated", "").await;
        }
    }

    /// Writes the condition (a merge patch of the status' conditions, the others kept);
    /// best effort: a failure is logged, the event says it anyway.
    async fn set_condition(&self, svc: &Service, status: &str, reason: &str, message: &str) {
        let mut conditions: Vec<Value> = svc
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.type_ != CONDITION_ALLOCATED)
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect();
        let same = svc
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| {
                c.type_ == CONDITION_ALLOCATED
                    && c.status == status
                    && c.reason == reason
                    && c.message == message
            });
        if same {
            return;
        }
        conditions.push(json!({
            "type": CONDITION_ALLOCATED,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": jiff::Timestamp::now().round(jiff::Unit::Second).unwrap_or_else(|_| jiff::Timestamp::now()).to_string(),
            "observedGeneration": svc.metadata.generation,
        }));
        let key = ObjectKey::of(svc);
        let api = Api::<Service>::namespaced(
            self.client.clone(),
            key.namespace.as_deref().unwrap_or_default(),
        );
        let patch = json!({ "status": { "conditions": conditions } });
        if let Err(e) = api
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(service = %key, error = %e, "writing the Allocated condition");
        }
    }
}

struct KeepSet {
    ips: Vec<IpAddr>,
    ports: BTreeSet<u16>,
}

impl KeepSet {
    fn as_held(&self) -> Vec<Held> {
        self.ips
            .iter()
            .map(|ip| Held::Ip(*ip))
            .chain(self.ports.iter().map(|p| Held::Port(*p)))
            .collect()
    }
}

/// A create's outcome: true created, false already exists (taken).
fn created<K>(
    result: Result<K, kube::Error>,
    service: &ObjectKey,
    object: String,
) -> Result<bool, Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(source) => Err(Error::Write {
            service: service.to_string(),
            action: "creating",
            object,
            source: Box::new(source),
        }),
    }
}
