//! Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection
//! package: acquire when the lease is free or its holder stopped renewing for a lease
//! duration (measured on this process's own clock since the record last changed, so clock
//! skew between nodes does not matter); renew every retry period; give up leadership when
//! renewals fail for the renew deadline; release the lease on graceful shutdown.
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election lost: lease {namespace}/{name} not renewed within {deadline:?}")]
    Lost {
        namespace: String,
        name: String,
        deadline: Duration,
    },
    #[error("releasing lease {namespace}/{name}: {source}")]
    Release {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

#[derive(Clone, Debug)]
pub struct Config {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// The lease record as last observed, and when (on our clock) it last changed.
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    at: Instant,
}

pub struct LeaderElector {
    api: Api<Lease>,
    config: Config,
    observed: Option<Observed>,
}

impl LeaderElector {
    pub fn new(client: Client, config: Config) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Blocks until this process holds the lease.
    pub async fn acquire(&mut self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.lease_key(), identity = %self.config.identity, "acquired lease");
                    return;
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %self.lease_key(), error = %e, "acquiring lease"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the lease every retry period until `stop` (`Ok`) or until renewals have
    /// failed for the renew deadline (`Err`: the caller must stop acting as leader at
    /// once). As client-go's renew loop, each round of attempts is bounded by the renew
    /// deadline, so a request hung on a stalled connection cannot keep a deposed leader
    /// acting: the attempt is abandoned when the deadline passes. Every renewal is
    /// reported to `health` (the `/healthz` leader watchdog).
    pub async fn keep_renewing(
        &mut self,
        stop: &tokio_util::sync::CancellationToken,
        health: &super::health::Health,
    ) -> Result<(), Error> {
        let mut last_renew = Instant::now();
        health.lease_renewed(&self.lease_key(), last_renew, self.config.lease_duration);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.config.retry_period) => {}
            }
            let left = self
                .config
                .renew_deadline
                .saturating_sub(last_renew.elapsed());
            let attempt = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = tokio::time::timeout(left, self.try_acquire_or_renew()) => r,
            };
            match attempt {
                Ok(Ok(true)) => {
                    last_renew = Instant::now();
                    health.lease_renewed(&self.lease_key(), last_renew, self.config.lease_duration);
                }
                Ok(Ok(false)) => {
                    tracing::warn!(lease = %self.lease_key(), "lease held by another process")
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.lease_key(), error = %e, "renewing lease")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.lease_key(), deadline = ?self.config.renew_deadline, "renewing lease timed out")
                }
            }
            if last_renew.elapsed() >= self.config.renew_deadline {
                health.not_leading();
                return Err(Error::Lost {
                    namespace: self.config.namespace.clone(),
                    name: self.config.name.clone(),
                    deadline: self.config.renew_deadline,
                });
            }
        }
    }

    /// Gives the lease up so that a standby takes over at once (client-go ReleaseOnCancel).
    pub async fn release(&mut self) -> Result<(), Error> {
        let err = |source| Error::Release {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source,
        };
        let Some(mut lease) = self.api.get_opt(&self.config.name).await.map_err(err)? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(&self.config.identity) {
            return Ok(());
        }
        let now = MicroTime(jiff::Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now.clone());
        spec.acquire_time = Some(now);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
            .map_err(err)?;
        tracing::info!(lease = %self.lease_key(), "released lease");
        Ok(())
    }

    fn lease_key(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }

    /// One round of client-go's tryAcquireOrRenew; `Ok(true)` when we hold the lease after it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let duration_secs = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| o.holder != holder || o.renew_time != spec.renew_time);
        if changed {
            self.observed = Some(Observed {
                holder: holder.clone(),
                renew_time: spec.renew_time.clone(),
                at: Instant::now(),
            });
        }
        let ours = holder.as_deref() == Some(&self.config.identity);
        let held_duration =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration_secs).max(0) as u64);
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|o| o.at.elapsed() >= held_duration);
        if holder.is_some() && !ours && !expired {
            return Ok(false);
        }
        if !ours {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions =
                Some(spec.lease_transitions.unwrap_or(0) + i32::from(holder.is_some()));
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(duration_secs);
        spec.renew_time = Some(now);
        // resourceVersion from the read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(updated) => {
                let spec = updated.spec.unwrap_or_default();
                self.observed = Some(Observed {
                    holder: spec.holder_identity,
                    renew_time: spec.renew_time,
                    at: Instant::now(),
                });
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A process identity as client-go builds it: hostname, then a random suffix.
pub fn default_identity() -> String {
    use std::hash::{BuildHasher, Hasher};
    let host =
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "unknown".into());
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{}_{:016x}", host.trim(), h.finish())
}
