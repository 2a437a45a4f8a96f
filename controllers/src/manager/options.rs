//! Command-line flags, named and defaulted as kube-controller-manager's.
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

/// Every controller this binary hosts, by upstream name.
pub const KNOWN_CONTROLLERS: &[&str] = &["deployment-controller", "replicaset-controller"];

#[derive(Debug, Parser)]
#[command(
    name = "rekube-controllers",
    version,
    about = "rekube's controller manager: the controllers of kube-controller-manager, for rekube.io objects"
)]
pub struct Options {
    /// Controllers to run: '*' runs all, 'foo' enables foo, '-foo' disables foo. Names:
    /// deployment-controller, replicaset-controller (or without the -controller suffix).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,

    /// Deployments synced concurrently.
    #[arg(long, default_value_t = 5)]
    pub concurrent_deployment_syncs: usize,

    /// ReplicaSets synced concurrently.
    #[arg(long, default_value_t = 5)]
    pub concurrent_replicaset_syncs: usize,

    /// Sustained API requests per second to the apiserver.
    #[arg(long, default_value_t = 20.0)]
    pub kube_api_qps: f32,

    /// API requests allowed in a burst above the QPS.
    #[arg(long, default_value_t = 30)]
    pub kube_api_burst: u32,

    /// Elect a leader on a Lease before acting, so that only one replica acts at a time.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// How long a standby waits after the leader's last renewal before taking over.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub leader_elect_lease_duration: Duration,

    /// How long the leader keeps trying to renew before it stops leading.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub leader_elect_renew_deadline: Duration,

    /// How often to try to acquire or renew the lease.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub leader_elect_retry_period: Duration,

    /// The Lease's name.
    #[arg(long, default_value = "rekube-controllers")]
    pub leader_elect_resource_name: String,

    /// The Lease's namespace.
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,

    /// Watch and act in this namespace only (all namespaces when empty). Not in
    /// kube-controller-manager; for running several instances side by side, as the tests do.
    #[arg(long, default_value = "")]
    pub namespace: String,

    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:10258")]
    pub bind_address: SocketAddr,

    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error(
        "unknown controller {0:?} in --controllers (known: deployment-controller, replicaset-controller)"
    )]
    UnknownController(String),
    #[error(
        "the leader election renew deadline ({renew:?}) must be shorter than the lease duration ({lease:?}) and longer than the retry period ({retry:?})"
    )]
    LeaderElectionTimings {
        lease: Duration,
        renew: Duration,
        retry: Duration,
    },
}

fn canonical(name: &str) -> Result<&'static str, Error> {
    let full = if name.ends_with("-controller") {
        name.to_string()
    } else {
        format!("{name}-controller")
    };
    KNOWN_CONTROLLERS
        .iter()
        .copied()
        .find(|k| *k == full)
        .ok_or_else(|| Error::UnknownController(name.to_string()))
}

/// The controllers `--controllers` enables (kube-controller-manager's IsControllerEnabled):
/// an explicit `-name` wins, then an explicit `name`, then `*`.
pub fn enabled_controllers(flags: &[String]) -> Result<BTreeSet<&'static str>, Error> {
    let mut star = false;
    let mut on = BTreeSet::new();
    let mut off = BTreeSet::new();
    for f in flags.iter().map(|f| f.trim()).filter(|f| !f.is_empty()) {
        match f {
            "*" => star = true,
            _ => match f.strip_prefix('-') {
                Some(name) => {
                    off.insert(canonical(name)?);
                }
                None => {
                    on.insert(canonical(f)?);
                }
            },
        }
    }
    Ok(KNOWN_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !off.contains(c) && (star || on.contains(c)))
        .collect())
}

impl Options {
    /// Checks that flags agree with each other, as upstream's option validation does.
    pub fn validate(&self) -> Result<BTreeSet<&'static str>, Error> {
        if self.leader_elect
            && !(self.leader_elect_renew_deadline < self.leader_elect_lease_duration
                && self.leader_elect_retry_period < self.leader_elect_renew_deadline)
        {
            return Err(Error::LeaderElectionTimings {
                lease: self.leader_elect_lease_duration,
                renew: self.leader_elect_renew_deadline,
                retry: self.leader_elect_retry_period,
            });
        }
        enabled_controllers(&self.controllers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(flags: &[&str]) -> Result<Vec<&'static str>, Error> {
        enabled_controllers(&flags.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map(|s| s.into_iter().collect())
    }

    #[test]
    fn controllers_flag_follows_kube_controller_manager() {
        let all = vec!["deployment-controller", "replicaset-controller"];
        assert_eq!(enabled(&["*"]).unwrap(), all);
        assert_eq!(
            enabled(&["*", "-deployment"]).unwrap(),
            vec!["replicaset-controller"]
        );
        assert_eq!(
            enabled(&["*", "-replicaset-controller"]).unwrap(),
            vec!["deployment-controller"]
        );
        assert_eq!(
            enabled(&["deployment"]).unwrap(),
            vec!["deployment-controller"]
        );
        assert_eq!(
            enabled(&["deployment", "-deployment"]).unwrap(),
            Vec::<&str>::new()
        );
        assert_eq!(enabled(&[]).unwrap(), Vec::<&str>::new());
        assert_eq!(
            enabled(&["*", "-cronjob"]),
            Err(Error::UnknownController("cronjob".into()))
        );
    }

    #[test]
    fn defaults_are_upstreams() {
        let o = Options::parse_from(["rekube-controllers"]);
        assert_eq!((o.kube_api_qps, o.kube_api_burst), (20.0, 30));
        assert_eq!(
            (o.concurrent_deployment_syncs, o.concurrent_replicaset_syncs),
            (5, 5)
        );
        assert!(o.leader_elect);
        assert_eq!(o.leader_elect_lease_duration, Duration::from_secs(15));
        assert_eq!(o.leader_elect_renew_deadline, Duration::from_secs(10));
        assert_eq!(o.leader_elect_retry_period, Duration::from_secs(2));
        assert!(o.validate().is_ok());
    }

    #[test]
    fn inconsistent_leader_election_timings_are_refused() {
        let o = Options::parse_from(["rekube-controllers", "--leader-elect-renew-deadline", "20s"]);
        assert!(matches!(
            o.validate(),
            Err(Error::LeaderElectionTimings { .. })
        ));
    }
}
