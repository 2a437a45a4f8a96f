//! The health check node ports of LoadBalancer Services with externalTrafficPolicy Local
//! (pkg/proxy/healthcheck/service_health.go's `server` without its listeners): each
//! answers 200 while the node has a ready endpoint of the Service and the proxy is
//! healthy, 503 otherwise, so that a load balancer sends the Service's traffic only to
//! nodes that can serve it locally. Pure: the I/O shell (`super::serve`) opens and closes
//! the listeners this state asks for.

use std::collections::BTreeMap;

use super::Reply;
use crate::proxy::types::NamespacedName;

/// One Service's health check (`hcInstance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Instance {
    port: u16,
    /// Ready endpoints of the Service on this node.
    endpoints: usize,
}

/// What a [`ServiceHealthState::sync_services`] changes: listeners to close and to open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicesChange {
    pub close: Vec<(NamespacedName, u16)>,
    pub open: Vec<(NamespacedName, u16)>,
}

/// The Services with a health check on this node and their local endpoint counts.
#[derive(Debug, Clone, Default)]
pub struct ServiceHealthState {
    services: BTreeMap<NamespacedName, Instance>,
}

impl ServiceHealthState {
    /// `SyncServices`, first half: forgets the Services that are gone or whose port
    /// changed and says which listeners to close, and which to open (new Services and
    /// changed ports). The shell calls [`Self::opened`] for each listener it could open;
    /// one that failed is tried again at the next sync.
    pub fn sync_services(&mut self, new: &BTreeMap<NamespacedName, u16>) -> ServicesChange {
        let mut change = ServicesChange::default();
        self.services.retain(|name, svc| {
            let keep = new.get(name) == Some(&svc.port);
            if !keep {
                change.close.push((name.clone(), svc.port));
            }
            keep
        });
        change.open = new
            .iter()
            .filter(|(name, _)| !self.services.contains_key(*name))
            .map(|(name, port)| (name.clone(), *port))
            .collect();
        change
    }

    /// `SyncServices`, second half: the Service's listeners are open (no endpoints yet).
    pub fn opened(&mut self, name: NamespacedName, port: u16) {
        self.services.insert(name, Instance { port, endpoints: 0 });
    }

    /// `SyncEndpoints`: the local ready endpoint count of each Service with a health check;
    /// counts of other Services are dropped, a Service missing from `new` has none.
    pub fn sync_endpoints(&mut self, new: &BTreeMap<NamespacedName, usize>) {
        for (name, svc) in &mut self.services {
            svc.endpoints = new.get(name).copied().unwrap_or(0);
        }
    }

    /// The Services with an open health check and their ports.
    pub fn services(&self) -> BTreeMap<NamespacedName, u16> {
        self.services
            .iter()
            .map(|(name, svc)| (name.clone(), svc.port))
            .collect()
    }

    /// The local ready endpoint count of a Service with a health check.
    pub fn endpoints(&self, name: &NamespacedName) -> Option<usize> {
        self.services.get(name).map(|svc| svc.endpoints)
    }

    /// The answer of the Service's health check port (`hcHandler.ServeHTTP`): 200 with a
    /// local endpoint and a healthy proxy, else 503; the count also as the
    /// `X-Load-Balancing-Endpoint-Weight` header. None when the Service has no health
    /// check (a request racing its close).
    pub fn reply(&self, name: &NamespacedName, proxy_healthy: bool) -> Option<Reply> {
        let count = self.endpoints(name)?;
        let status = if count != 0 && proxy_healthy {
            200
        } else {
            503
        };
        let quote = |s: &str| serde_json::Value::from(s).to_string();
        let body = format!(
            "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\"localEndpoints\": {count},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
            quote(&name.namespace),
            quote(&name.name),
        );
        let mut reply = Reply::new(status, "application/json", body);
        reply
            .headers
            .push(("X-Load-Balancing-Endpoint-Weight", count.to_string()));
        Some(reply)
    }
}

#[cfg(test)]
mod tests {
    //! Upstream's `TestServer` (pkg/proxy/healthcheck/healthcheck_test.go): the fake
    //! listener's open ports are the listeners this state asks the shell to keep open.

    use std::collections::BTreeSet;

    use super::*;
    use crate::proxy::types::{
        EndpointInfo, Protocol, ProxySnapshot, ServicePortInfo, ServicePortName,
    };

    fn nsn(ns: &str, name: &str) -> NamespacedName {
        NamespacedName::new(ns, name)
    }

    /// The shell's side: every listener asked for opens.
    struct Server {
        state: ServiceHealthState,
        open_ports: BTreeSet<u16>,
    }

    impl Server {
        fn sync_services(&mut self, new: &[(NamespacedName, u16)]) {
            let change = self.state.sync_services(&new.iter().cloned().collect());
            for (_, port) in change.close {
                assert!(self.open_ports.remove(&port), "closing {port}, not open");
            }
            for (name, port) in change.open {
                assert!(self.open_ports.insert(port), "opening {port} twice");
                self.state.opened(name, port);
            }
        }

        fn sync_endpoints(&mut self, new: &[(NamespacedName, usize)]) {
            self.state.sync_endpoints(&new.iter().cloned().collect());
        }

        fn check(&self, name: &NamespacedName, status: u16, endpoints: usize, healthy: bool) {
            assert_eq!(self.state.endpoints(name), Some(endpoints), "{name}");
            let reply = self.state.reply(name, healthy).expect("open");
            assert_eq!(reply.status, status, "{name}");
            let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
            assert_eq!(body["service"]["namespace"], name.namespace.as_str());
            assert_eq!(body["service"]["name"], name.name.as_str());
            assert_eq!(body["localEndpoints"], endpoints);
            assert_eq!(body["serviceProxyHealthy"], healthy);
            assert_eq!(
                reply.headers,
                vec![
                    ("Content-Type", "application/json".to_string()),
                    ("X-Content-Type-Options", "nosniff".to_string()),
                    ("X-Load-Balancing-Endpoint-Weight", endpoints.to_string()),
                ]
            );
        }
    }

    #[test]
    fn server() {
        let mut hcs = Server {
            state: ServiceHealthState::default(),
            open_ports: BTreeSet::new(),
        };
        // Nothing, then unknown endpoints, which are dropped.
        hcs.sync_services(&[]);
        hcs.sync_endpoints(&[]);
        hcs.sync_endpoints(&[(nsn("a", "b"), 93)]);
        assert!(hcs.state.services().is_empty());

        // A real Service: its port opens, no endpoints.
        let n = nsn("a", "b");
        hcs.sync_services(&[(n.clone(), 9376)]);
        assert_eq!(hcs.open_ports, BTreeSet::from([9376]));
        hcs.check(&n, 503, 0, true);
        hcs.sync_endpoints(&[(n.clone(), 18)]);
        hcs.check(&n, 200, 18, true);
        hcs.sync_endpoints(&[(n.clone(), 0)]);
        hcs.check(&n, 503, 0, true);
        hcs.sync_endpoints(&[(n.clone(), 11)]);
        assert_eq!(hcs.state.endpoints(&n), Some(11));
        hcs.sync_endpoints(&[]);
        hcs.check(&n, 503, 0, true);
        hcs.sync_endpoints(&[(n.clone(), 18)]);
        assert_eq!(hcs.state.endpoints(&n), Some(18));
        // Deleting the Service closes its port.
        hcs.sync_services(&[]);
        assert!(hcs.state.services().is_empty());
        assert!(hcs.open_ports.is_empty());

        // Several Services.
        let (n1, n2, n3, n4) = (nsn("a", "b"), nsn("c", "d"), nsn("e", "f"), nsn("g", "h"));
        hcs.sync_services(&[(n1.clone(), 9376), (n2.clone(), 12909), (n3.clone(), 11113)]);
        assert_eq!(hcs.open_ports, BTreeSet::from([9376, 12909, 11113]));
        for n in [&n1, &n2, &n3] {
            hcs.check(n, 503, 0, true);
        }
        hcs.sync_endpoints(&[(n1.clone(), 9), (n2.clone(), 3), (n3.clone(), 7)]);
        hcs.check(&n1, 200, 9, true);
        hcs.check(&n2, 200, 3, true);
        hcs.check(&n3, 200, 7, true);

        // Remove n1, leave n2, change n3's port, add n4.
        hcs.sync_services(&[
            (n2.clone(), 12909),
            (n3.clone(), 11114),
            (n4.clone(), 11878),
        ]);
        assert_eq!(hcs.state.services().len(), 3);
        assert_eq!(hcs.open_ports, BTreeSet::from([12909, 11114, 11878]));
        hcs.check(&n2, 200, 3, true);
        hcs.check(&n3, 503, 0, true);
        hcs.check(&n4, 503, 0, true);
        assert_eq!(hcs.state.reply(&n1, true), None);

        hcs.sync_endpoints(&[
            (n1.clone(), 9),
            (n2.clone(), 3),
            (n3.clone(), 7),
            (n4.clone(), 6),
        ]);
        hcs.check(&n2, 200, 3, true);
        hcs.check(&n3, 200, 7, true);
        hcs.check(&n4, 200, 6, true);

        // n2 missing from the endpoints: none.
        hcs.sync_endpoints(&[(n3.clone(), 7), (n4.clone(), 6)]);
        hcs.check(&n2, 503, 0, true);
        hcs.check(&n3, 200, 7, true);
        hcs.check(&n4, 200, 6, true);

        // An unhealthy proxy fails every health check, endpoints or not.
        hcs.check(&n2, 503, 0, false);
        hcs.check(&n3, 503, 7, false);
        hcs.check(&n4, 503, 6, false);
    }

    #[test]
    fn body_is_upstreams_text() {
        let mut state = ServiceHealthState::default();
        state.opened(nsn("a", "b"), 9376);
        state.sync_endpoints(&[(nsn("a", "b"), 2)].into_iter().collect());
        assert_eq!(
            state.reply(&nsn("a", "b"), true).unwrap().body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"a\",\n\t\t\"name\": \"b\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
    }

    /// What the proxier gives the server: health check node ports (only where the model
    /// set one) and local ready endpoints counted by IP, without terminating ones.
    #[test]
    fn snapshot_health_check_ports_and_local_ready_endpoints() {
        let ip = |s: &str| s.parse().unwrap();
        let mut snap = ProxySnapshot::default();
        let mut lb = ServicePortInfo::cluster_ip(ip("10.96.0.10"), 80, Protocol::Tcp);
        lb.health_check_node_port = 30123;
        let http = ServicePortName::new("ns", "lb", "http", Protocol::Tcp);
        let https = ServicePortName::new("ns", "lb", "https", Protocol::Tcp);
        let plain = ServicePortName::new("ns", "plain", "", Protocol::Tcp);
        snap.service_ports.insert(http.clone(), lb.clone());
        snap.service_ports.insert(https.clone(), lb);
        snap.service_ports.insert(
            plain.clone(),
            ServicePortInfo::cluster_ip(ip("10.96.0.11"), 80, Protocol::Tcp),
        );
        let mut terminating = EndpointInfo::ready(ip("10.244.0.7"), 80, true);
        terminating.ready = false;
        terminating.terminating = true;
        snap.endpoints.insert(
            http,
            vec![
                EndpointInfo::ready(ip("10.244.0.5"), 80, true),
                EndpointInfo::ready(ip("10.244.1.5"), 80, false),
                terminating,
            ],
        );
        // The same pod on another port counts once.
        snap.endpoints.insert(
            https,
            vec![
                EndpointInfo::ready(ip("10.244.0.5"), 443, true),
                EndpointInfo::ready(ip("10.244.0.6"), 443, true),
            ],
        );
        snap.endpoints.insert(
            plain,
            vec![EndpointInfo::ready(ip("10.244.1.9"), 80, false)],
        );
        assert_eq!(
            snap.health_check_node_ports(),
            BTreeMap::from([(nsn("ns", "lb"), 30123)])
        );
        assert_eq!(
            snap.local_ready_endpoints(),
            BTreeMap::from([(nsn("ns", "lb"), 2)])
        );
    }
}
