//! The kubelet's podcertificate manager (pkg/kubelet/podcertificate, `IssuingManager`):
//! the credentials of the node's pods' podCertificate projected sources, by (pod UID,
//! volume, source index). The shell around [`super::pod_certificate`].
//!
//! Where upstream runs a work queue fed by a PodCertificateRequest informer, rekube steps
//! a source's state when its volume is set up (every sync of a running pod, as the token
//! manager): no request yet → a key and a request created as the node (at most one per
//! projection every [`MIN_CREATE_INTERVAL`]); a request in flight → read it, without
//! waiting (not issued yet: upstream's error, the set-up retried with back-off); issued →
//! the credential served until its `beginRefreshAt` (plus upstream's jitter of up to five minutes), then a refresh request
//! while the old credential is still served; denied or failed → that error for good (the
//! pod waits with FailedMount, as upstream's). A request that disappears is forgotten and
//! made again. A pod's entries go when its volumes are torn down ([`Self::forget_pod`]).
//!
//! Private keys live in memory here and in the projected volume's tmpfs; never on disk,
//! never in a log.
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ProjectedVolumeSource;
use rekube_crds::Pod;

use super::manager::ObjectReader;
use super::pod_certificate::{
    self, Action, CredState, Credentials, RequestFor, after_create, apply_outcome, next_action,
};

/// The least time between two requests created for one projection (rekube's: a signer
/// whose `beginRefreshAt` is already past, or requests deleted as they are made, would
/// otherwise have one created at every sync of the pod).
const MIN_CREATE_INTERVAL: Duration = Duration::from_secs(30);
/// upstream's `jitterDuration`: up to five minutes added to `beginRefreshAt`.
const MAX_REFRESH_JITTER_SECS: u64 = 5 * 60;

/// A podCertificate source of a pod's volume.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ProjectionKey {
    pod_uid: String,
    volume: String,
    source_index: usize,
}

/// A projection's state and when its last request was created.
#[derive(Default)]
struct ProjectionRecord {
    state: Option<CredState>,
    last_create: Option<std::time::Instant>,
}

type Record = Arc<tokio::sync::Mutex<ProjectionRecord>>;

#[derive(Default)]
pub struct PodCertificateManager {
    records: Mutex<HashMap<ProjectionKey, Record>>,
}

fn refresh_jitter() -> SignedDuration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    SignedDuration::from_secs((random % MAX_REFRESH_JITTER_SECS) as i64)
}

impl PodCertificateManager {
    fn record(&self, key: ProjectionKey) -> Record {
        self.records.lock().unwrap().entry(key).or_default().clone()
    }

    /// Upstream `ForgetPod`: the pod's entries dropped.
    pub fn forget_pod(&self, pod_uid: &str) {
        self.records
            .lock()
            .unwrap()
            .retain(|k, _| k.pod_uid != pod_uid);
    }

    /// The credentials of projected volume `volume`'s podCertificate sources (upstream
    /// `GetPodCertificateCredentialBundle` after the manager handled each projection).
    pub async fn credentials<R: ObjectReader>(
        &self,
        reader: &R,
        pod: &Pod,
        volume: &str,
        source: &ProjectedVolumeSource,
    ) -> Credentials {
        let mut out = Credentials::new();
        for (i, s) in source.sources.iter().flatten().enumerate() {
            let Some(projection) = &s.pod_certificate else {
                continue;
            };
            let key = ProjectionKey {
                pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                volume: volume.to_string(),
                source_index: i,
            };
            let record = self.record(key);
            let mut record = record.lock().await;
            let got = match self
                .handle_projection(reader, pod, projection, &mut record)
                .await
            {
                Ok(()) => pod_certificate::credential(record.state.as_ref()),
                // A failed step keeps serving a fresh credential (a refresh that could
                // not be asked for yet), as upstream's state stays.
                Err(e) => pod_certificate::credential(record.state.as_ref()).map_err(|_| e),
            };
            out.insert(i, got);
        }
        out
    }

    /// Upstream `handleProjection`: at most one request created (initial, or the fresh
    /// credential's refresh) and the request in flight read once; never a wait for the
    /// signer (the volume's set-up fails with [`pod_certificate::NOT_ISSUED_YET`] and is
    /// retried with back-off, and every sync of the pod steps the source again).
    async fn handle_projection<R: ObjectReader>(
        &self,
        reader: &R,
        pod: &Pod,
        projection: &k8s_openapi::api::core::v1::PodCertificateProjection,
        record: &mut ProjectionRecord,
    ) -> Result<(), String> {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        if next_action(record.state.as_ref(), Timestamp::now()) == Action::Create {
            let refresh = record.state.is_some();
            let which = if refresh { "refresh" } else { "initial" };
            if let Some(last) = record.last_create
                && last.elapsed() < MIN_CREATE_INTERVAL
            {
                return Err(format!(
                    "while creating {which} PodCertificateRequest: the last one was created {}s \
                     ago, less than the minimum interval of {}s",
                    last.elapsed().as_secs(),
                    MIN_CREATE_INTERVAL.as_secs()
                ));
            }
            let (key_pem, name) = create_request(reader, pod, projection)
                .await
                .map_err(|e| format!("while creating {which} PodCertificateRequest: {e}"))?;
            record.last_create = Some(std::time::Instant::now());
            tracing::info!(pod = %format!("{namespace}/{}", pod.metadata.name.as_deref().unwrap_or_default()),
                request = %format!("{namespace}/{name}"), "created a PodCertificateRequest");
            record.state = Some(after_create(record.state.take(), key_pem, name));
        }
        let Action::Check(name) = next_action(record.state.as_ref(), Timestamp::now()) else {
            return Ok(());
        };
        let state = &mut record.state;
        let pcr = reader
            .pod_certificate_request(namespace, &name)
            .await
            .map_err(|e| {
                format!("while getting PodCertificateRequest \"{namespace}/{name}\": {e}")
            })?;
        let Some(pcr) = pcr else {
            // Forget the request in flight: the next step makes another.
            *state = match state.take() {
                Some(CredState::Fresh {
                    credential,
                    begin_refresh_at,
                    not_after,
                    ..
                }) => Some(CredState::Fresh {
                    credential,
                    begin_refresh_at,
                    not_after,
                    refresh: None,
                }),
                _ => None,
            };
            return Err(format!(
                "PodCertificateRequest \"{namespace}/{name}\" appears to have been deleted"
            ));
        };
        let before = state.take().expect("a request in flight has a state");
        let mut after = apply_outcome(before, pod_certificate::outcome(&pcr));
        if let CredState::Fresh {
            begin_refresh_at,
            refresh: None,
            ..
        } = &mut after
        {
            *begin_refresh_at = begin_refresh_at
                .checked_add(refresh_jitter())
                .unwrap_or(*begin_refresh_at);
        }
        *state = Some(after);
        Ok(())
    }
}

/// Upstream `createPodCertificateRequest`: the pod's ServiceAccount (its UID) and the
/// node (its UID) read, a key generated, the request created as the node. The key and the
/// request's name.
async fn create_request<R: ObjectReader>(
    reader: &R,
    pod: &Pod,
    projection: &k8s_openapi::api::core::v1::PodCertificateProjection,
) -> Result<(Vec<u8>, String), String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let sa_name = pod
        .spec
        .as_ref()
        .map(rekube_crds::token_binding::service_account_name)
        .unwrap_or_else(|| "default".into());
    let sa = reader
        .service_account(namespace, &sa_name)
        .await
        .map_err(|e| format!("while fetching service account: {e}"))?
        .ok_or_else(|| {
            format!("while fetching service account: serviceaccount \"{sa_name}\" not found")
        })?;
    let (node_name, node_uid) = reader
        .node_name_and_uid()
        .await
        .map_err(|e| format!("while getting node object: {e}"))?;
    let key_type = projection.key_type.clone();
    let generated =
        tokio::task::spawn_blocking(move || pod_certificate::generate_key_and_proof(&key_type))
            .await
            .map_err(|e| format!("while generating keypair: {e}"))?
            .map_err(|e| format!("while generating keypair: {e}"))?;
    let pod_uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let sa_uid = sa.metadata.uid.unwrap_or_default();
    let request = pod_certificate::pod_certificate_request(
        &RequestFor {
            namespace,
            pod_name: pod.metadata.name.as_deref().unwrap_or_default(),
            pod_uid,
            service_account_name: &sa_name,
            service_account_uid: &sa_uid,
            node_name: &node_name,
            node_uid: &node_uid,
        },
        projection,
        generated.stub_pkcs10_request,
    );
    let created = reader
        .create_pod_certificate_request(namespace, &request)
        .await
        .map_err(|e| format!("while creating on API: {e}"))?;
    Ok((generated.key_pem, created.metadata.name.unwrap_or_default()))
}
