//! The kubelet's token manager (pkg/kubelet/token/token_manager.go): the service account
//! tokens of the node's pods, cached by request, and requested again through the
//! TokenRequest API when a cached one is older than 80% of its life or than 24 hours.
//!
//! As upstream: [`TokenManager::get_service_account_token`] serves a cached token that
//! does not need a refresh; else it asks the API (`get_token`); a failed refresh keeps
//! serving the old token while it is still valid, and fails once it has expired. Keys are
//! upstream's `keyFunc` (the ServiceAccount, namespace, audiences, expiration, bound
//! object and UID precondition; nothing secret, safe to log). Expired entries are dropped
//! (upstream's `cleanup`, at most once a minute, here when a token is asked for), and a
//! pod's entries when its volumes are torn down
//! ([`TokenManager::delete_service_account_token`]).
//!
//! rekube binds a pod's tokens to its token binding Secret
//! ([`rekube_crds::token_binding`]), not to the pod, so the pod's UID that upstream reads
//! from the bound object reference is recorded beside each entry.
//!
//! Tokens live in memory here and in the projected volume's tmpfs; never on disk, never
//! in a log.
use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::authentication::v1::TokenRequest;

/// upstream's `maxTTL`: a token older than this is refreshed whatever its expiry.
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// upstream's `gcPeriod`.
const GC_PERIOD: Duration = Duration::from_secs(60);
/// upstream's `maxJitter`.
const MAX_JITTER: Duration = Duration::from_secs(10);

/// The time source (a fake one in tests).
pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

/// The wall clock: token expiries are wall-clock times.
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// upstream's jitter: a whole number of seconds in [0, 10) (`rand.Float64() *
/// maxJitter.Seconds()`, truncated).
fn random_jitter() -> Duration {
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_secs(random % MAX_JITTER.as_secs())
}

struct Entry {
    tr: TokenRequest,
    /// The pod the token was requested for.
    pod_uid: String,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<String, Entry>,
    last_cleanup: Option<Timestamp>,
}

pub struct TokenManager {
    cache: Mutex<Cache>,
    clock: Box<dyn Clock>,
    jitter: fn() -> Duration,
}

impl Default for TokenManager {
    fn default() -> Self {
        Self::new(Box::new(RealClock))
    }
}

/// `t` plus or minus a std duration.
fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(t)
}

fn sub(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_sub(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(t)
}

fn expiration(tr: &TokenRequest) -> Option<Timestamp> {
    tr.status
        .as_ref()
        .and_then(|s| s.expiration_timestamp.as_ref())
        .map(|t| t.0)
}

/// upstream `keyFunc`: the request's ServiceAccount, namespace, audiences, expiration,
/// bound object and UID precondition.
pub fn key_func(name: &str, namespace: &str, tr: &TokenRequest) -> String {
    let spec = tr.spec.as_ref();
    let audiences = spec.and_then(|s| s.audiences.as_ref());
    let exp = spec.and_then(|s| s.expiration_seconds).unwrap_or(0);
    let r = spec.and_then(|s| s.bound_object_ref.as_ref());
    let field = |f: Option<&String>| f.cloned().unwrap_or_default();
    let reference = format!(
        "{{APIVersion:{:?}, Kind:{:?}, Name:{:?}, UID:{:?}}}",
        field(r.and_then(|r| r.api_version.as_ref())),
        field(r.and_then(|r| r.kind.as_ref())),
        field(r.and_then(|r| r.name.as_ref())),
        field(r.and_then(|r| r.uid.as_ref())),
    );
    let uid = tr.metadata.uid.clone().unwrap_or_default();
    format!("{name:?}/{namespace:?}/{audiences:?}/{exp}/{reference}/{uid:?}")
}

impl TokenManager {
    pub fn new(clock: Box<dyn Clock>) -> Self {
        TokenManager {
            cache: Mutex::default(),
            clock,
            jitter: random_jitter,
        }
    }

    /// upstream `GetServiceAccountToken`: the token of ServiceAccount `namespace/name`
    /// for the request `tr` made for pod `pod_uid`, from the cache or from `get_token`
    /// (the TokenRequest API: the request as the apiserver answered it, spec and status).
    pub async fn get_service_account_token<F, Fut>(
        &self,
        pod_uid: &str,
        namespace: &str,
        name: &str,
        tr: &TokenRequest,
        get_token: F,
    ) -> Result<TokenRequest, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<TokenRequest, String>>,
    {
        self.cleanup_if_due();
        let key = key_func(name, namespace, tr);
        let cached = self.get(&key);
        if let Some(ctr) = &cached
            && !self.requires_refresh(ctr)
        {
            return Ok(ctr.clone());
        }
        match get_token().await {
            Ok(fresh) => {
                self.set(key, fresh.clone(), pod_uid);
                Ok(fresh)
            }
            Err(err) => match cached {
                None => Err(format!("failed to fetch token: {err}")),
                Some(ctr) if self.expired(&ctr) => {
                    Err(format!("token {key} expired and refresh failed: {err}"))
                }
                Some(ctr) => {
                    tracing::error!(cache_key = %key, error = %err, "couldn't update token");
                    Ok(ctr)
                }
            },
        }
    }

    /// upstream `DeleteServiceAccountToken`: the pod is gone, its tokens with it.
    pub fn delete_service_account_token(&self, pod_uid: &str) {
        self.cache
            .lock()
            .unwrap()
            .entries
            .retain(|_, e| e.pod_uid != pod_uid);
    }

    /// upstream `cleanup`: expired tokens dropped.
    pub fn cleanup(&self) {
        let now = self.clock.now();
        let mut cache = self.cache.lock().unwrap();
        cache
            .entries
            .retain(|_, e| expiration(&e.tr).is_some_and(|exp| now <= exp));
        cache.last_cleanup = Some(now);
    }

    /// [`Self::cleanup`], at most once a [`GC_PERIOD`] (upstream runs it on a timer).
    fn cleanup_if_due(&self) {
        let now = self.clock.now();
        let due = self
            .cache
            .lock()
            .unwrap()
            .last_cleanup
            .is_none_or(|last| add(last, GC_PERIOD) <= now);
        if due {
            self.cleanup();
        }
    }

    fn get(&self, key: &str) -> Option<TokenRequest> {
        self.cache
            .lock()
            .unwrap()
            .entries
            .get(key)
            .map(|e| e.tr.clone())
    }

    fn set(&self, key: String, tr: TokenRequest, pod_uid: &str) {
        self.cache.lock().unwrap().entries.insert(
            key,
            Entry {
                tr,
                pod_uid: pod_uid.to_string(),
            },
        );
    }

    /// The number of cached tokens.
    pub fn len(&self) -> usize {
        self.cache.lock().unwrap().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expired(&self, tr: &TokenRequest) -> bool {
        expiration(tr).is_none_or(|exp| self.clock.now() > exp)
    }

    /// upstream `requiresRefresh`: the token is older than 80% of its total TTL (minus a
    /// jitter of up to 10 s), or older than 24 hours (minus the jitter). A request without
    /// `expirationSeconds` is never refreshed (upstream logs it as an error).
    pub fn requires_refresh(&self, tr: &TokenRequest) -> bool {
        let Some(seconds) = tr.spec.as_ref().and_then(|s| s.expiration_seconds) else {
            tracing::error!("expiration seconds was nil for token request");
            return false;
        };
        let Some(exp) = expiration(tr) else {
            return true;
        };
        let now = self.clock.now();
        let ttl = Duration::from_secs(seconds.max(0) as u64);
        let iat = sub(exp, ttl);
        let jitter = (self.jitter)();
        if now > add(iat, MAX_TTL.saturating_sub(jitter)) {
            return true;
        }
        // Within 20% of the TTL plus a jitter from the expiration time.
        let fifth = Duration::from_secs((seconds.max(0) as u64 * 20) / 100);
        now > sub(sub(exp, fifth), jitter)
    }
}

#[cfg(test)]
mod tests {
    //! upstream token_manager_test.go, every test and case: TestTokenCachingAndExpiration
    //! (5/5), TestRequiresRefresh (5/5), TestDeleteServiceAccountToken (10/10),
    //! TestCleanup (2/2), TestKeyFunc (7/7), TestServiceAccountRecreationCacheInvalidation
    //! (1/1). upstream's fake clock is [`FakeClock`]; its `getToken` fakes are closures
    //! counting their calls.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use k8s_openapi::api::authentication::v1::{
        BoundObjectReference, TokenRequestSpec, TokenRequestStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    use super::*;

    /// A clock the test sets (k8s.io/utils/clock/testing's FakeClock).
    #[derive(Clone)]
    pub struct FakeClock(Arc<Mutex<Timestamp>>);

    impl FakeClock {
        pub fn new(t: Timestamp) -> Self {
            FakeClock(Arc::new(Mutex::new(t)))
        }
        pub fn set_time(&self, t: Timestamp) {
            *self.0.lock().unwrap() = t;
        }
        pub fn step(&self, d: Duration) {
            let t = self.now();
            self.set_time(add(t, d));
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Timestamp {
            *self.0.lock().unwrap()
        }
    }

    /// Go's `time.Time{}.Add(d)`: year 1 plus `d`.
    fn go_zero_plus(d: Duration) -> Timestamp {
        add("0001-01-01T00:00:00Z".parse::<Timestamp>().unwrap(), d)
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const MINUTE: Duration = Duration::from_secs(60);

    fn manager(clock: &FakeClock) -> TokenManager {
        TokenManager::new(Box::new(clock.clone()))
    }

    fn bound(kind: &str, name: &str, uid: &str) -> BoundObjectReference {
        BoundObjectReference {
            api_version: None,
            kind: Some(kind.into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
        }
    }

    fn request(
        sa_uid: Option<&str>,
        audiences: &[&str],
        exp: Option<i64>,
        r: Option<BoundObjectReference>,
    ) -> TokenRequest {
        TokenRequest {
            metadata: ObjectMeta {
                uid: sa_uid.map(String::from),
                ..Default::default()
            },
            spec: Some(TokenRequestSpec {
                audiences: (!audiences.is_empty())
                    .then(|| audiences.iter().map(|a| a.to_string()).collect()),
                expiration_seconds: exp,
                bound_object_ref: r,
            }),
            status: None,
        }
    }

    /// upstream `getTokenRequest`.
    fn get_token_request() -> TokenRequest {
        request(
            None,
            &["foo1", "foo2"],
            Some(2000),
            Some(bound("pod", "foo-pod", "foo-uid")),
        )
    }

    fn status(token: &str, exp: Timestamp) -> Option<TokenRequestStatus> {
        Some(TokenRequestStatus {
            token: Some(token.into()),
            expiration_timestamp: Some(Time(exp)),
        })
    }

    /// upstream's `fakeTokenGetter`: counts calls, answers `tr` or `err`.
    #[derive(Clone)]
    struct FakeTokenGetter {
        count: Arc<AtomicUsize>,
        tr: TokenRequest,
        err: Option<String>,
    }

    impl FakeTokenGetter {
        fn count(&self) -> usize {
            self.count.load(Ordering::SeqCst)
        }
        async fn get_token(&self) -> Result<TokenRequest, String> {
            self.count.fetch_add(1, Ordering::SeqCst);
            match &self.err {
                Some(e) => Err(e.clone()),
                None => Ok(self.tr.clone()),
            }
        }
    }

    async fn get(
        mgr: &TokenManager,
        tg: &FakeTokenGetter,
        namespace: &str,
        name: &str,
        tr: &TokenRequest,
    ) -> Result<TokenRequest, String> {
        mgr.get_service_account_token("pod-uid", namespace, name, tr, || tg.get_token())
            .await
    }

    /// upstream TestTokenCachingAndExpiration (5/5). Note upstream's argument order:
    /// `GetServiceAccountToken("a", "b", ...)` is namespace "a", name "b".
    #[tokio::test]
    async fn token_caching_and_expiration() {
        let cases: &[(&str, Duration)] = &[
            ("rotate hour token expires in the last 12 minutes", HOUR),
            ("rotate 24 hour token that expires in 40 hours", 40 * HOUR),
            (
                "rotate hour token fails, old token is still valid, doesn't error",
                HOUR,
            ),
            (
                "service account recreated - cache miss due to different UID",
                HOUR,
            ),
            ("service account UID consistent - cache hit", HOUR),
        ];
        for (name, exp) in cases {
            let clock = FakeClock::new(go_zero_plus(30 * 24 * HOUR));
            let mgr = manager(&clock);
            let tg = FakeTokenGetter {
                count: Arc::default(),
                tr: TokenRequest {
                    spec: Some(TokenRequestSpec {
                        expiration_seconds: Some(exp.as_secs() as i64),
                        ..Default::default()
                    }),
                    status: status("foo", add(clock.now(), *exp)),
                    ..Default::default()
                },
                err: None,
            };
            get(&mgr, &tg, "a", "b", &get_token_request())
                .await
                .unwrap_or_else(|e| panic!("{name}: unexpected error: {e}"));
            assert_eq!(tg.count(), 1, "{name}: unexpected client call");
            get(&mgr, &tg, "a", "b", &get_token_request())
                .await
                .unwrap();
            assert_eq!(
                tg.count(),
                1,
                "{name}: expected token to be served from cache"
            );

            match *name {
                "rotate hour token expires in the last 12 minutes" => {
                    clock.step(50 * MINUTE);
                    get(&mgr, &tg, "a", "b", &get_token_request())
                        .await
                        .unwrap();
                    assert_eq!(tg.count(), 2, "{name}: expected token to be refreshed");
                }
                "rotate 24 hour token that expires in 40 hours" => {
                    clock.step(25 * HOUR);
                    get(&mgr, &tg, "a", "b", &get_token_request())
                        .await
                        .unwrap();
                    assert_eq!(tg.count(), 2, "{name}: expected token to be refreshed");
                }
                "rotate hour token fails, old token is still valid, doesn't error" => {
                    clock.step(50 * MINUTE);
                    let failing = FakeTokenGetter {
                        err: Some("err".into()),
                        ..tg.clone()
                    };
                    let tr = get(&mgr, &failing, "a", "b", &get_token_request())
                        .await
                        .unwrap();
                    assert_eq!(tr.status.unwrap().token.as_deref(), Some("foo"), "{name}");
                }
                "service account recreated - cache miss due to different UID" => {
                    let r = Some(bound("pod", "foo-pod", "foo-uid"));
                    let tr1 = request(
                        Some("service-account-uid-1"),
                        &["foo1", "foo2"],
                        Some(3600),
                        r.clone(),
                    );
                    get(&mgr, &tg, "a", "b", &tr1).await.unwrap();
                    assert_eq!(tg.count(), 2, "{name}: expected first token request");
                    let tr2 = request(
                        Some("service-account-uid-2"),
                        &["foo1", "foo2"],
                        Some(3600),
                        r,
                    );
                    get(&mgr, &tg, "a", "b", &tr2).await.unwrap();
                    assert_eq!(
                        tg.count(),
                        3,
                        "{name}: expected cache miss due to different service account UID"
                    );
                }
                "service account UID consistent - cache hit" => {
                    let tr = request(
                        Some("consistent-service-account-uid"),
                        &["foo1", "foo2"],
                        Some(3600),
                        Some(bound("pod", "foo-pod", "foo-uid")),
                    );
                    get(&mgr, &tg, "a", "b", &tr).await.unwrap();
                    get(&mgr, &tg, "a", "b", &tr).await.unwrap();
                    assert_eq!(
                        tg.count(),
                        2,
                        "{name}: expected cache hit with same service account UID"
                    );
                }
                other => unreachable!("{other}"),
            }
        }
    }

    /// upstream TestRequiresRefresh (5/5).
    #[test]
    fn requires_refresh() {
        let start = Timestamp::now();
        // (now, exp, expect refresh, expirationSeconds left out)
        let cases = [
            (
                add(start, 10 * MINUTE),
                add(start, 60 * MINUTE),
                false,
                false,
            ),
            (
                add(start, 50 * MINUTE),
                add(start, 60 * MINUTE),
                true,
                false,
            ),
            (add(start, 25 * HOUR), add(start, 60 * HOUR), true, false),
            (
                add(start, 70 * MINUTE),
                add(start, 60 * MINUTE),
                true,
                false,
            ),
            // expiry will be overwritten by the tweak below.
            (start, add(start, 60 * MINUTE), false, true),
        ];
        for (i, (now, exp, expect_refresh, no_expiration)) in cases.into_iter().enumerate() {
            let clock = FakeClock::new(now);
            let secs = exp.duration_since(start).as_secs();
            let mut tr = TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(secs),
                    ..Default::default()
                }),
                status: status("", exp),
                ..Default::default()
            };
            if no_expiration {
                tr.spec.as_mut().unwrap().expiration_seconds = None;
            }
            let mgr = manager(&clock);
            assert_eq!(mgr.requires_refresh(&tr), expect_refresh, "case {i}");
        }
    }

    /// The refresh point of rekube's own default: a 3600 s token is served from the cache
    /// until 80% of its life less the jitter, and refreshed from there (the jitter pinned
    /// at its extremes, 0 and 9 s). And a 600 s token (the apiserver's minimum) at 480 s.
    #[test]
    fn refresh_at_eighty_percent_of_the_ttl() {
        let issued = Timestamp::now();
        for (ttl, jitter) in [(3600u64, 0u64), (3600, 9), (600, 0), (600, 9)] {
            let clock = FakeClock::new(issued);
            let mut mgr = manager(&clock);
            mgr.jitter = match jitter {
                0 => || Duration::ZERO,
                _ => || Duration::from_secs(9),
            };
            let tr = TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(ttl as i64),
                    ..Default::default()
                }),
                status: status("t", add(issued, Duration::from_secs(ttl))),
                ..Default::default()
            };
            let threshold = ttl * 80 / 100 - jitter;
            clock.set_time(add(issued, Duration::from_secs(threshold)));
            assert!(
                !mgr.requires_refresh(&tr),
                "{ttl}s, jitter {jitter}s: at {threshold}s"
            );
            clock.set_time(add(issued, Duration::from_secs(threshold + 1)));
            assert!(
                mgr.requires_refresh(&tr),
                "{ttl}s, jitter {jitter}s: after {threshold}s"
            );
        }
    }

    /// upstream TestDeleteServiceAccountToken (10/10).
    #[tokio::test]
    async fn delete_service_account_token() {
        // (name, namespace, request, should fail); the pod UID is the bound object's.
        let requests: Vec<(&str, &str, TokenRequest, bool)> = (1..=5)
            .map(|i| {
                let n = i.min(4);
                let tr = TokenRequest {
                    spec: Some(TokenRequestSpec {
                        bound_object_ref: Some(BoundObjectReference {
                            uid: Some(format!("fake-uid-{n}")),
                            name: Some(format!("fake-name-{n}")),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let names = ["fake-name-1", "fake-name-2", "fake-name-3", "fake-name-4"];
                let namespaces = [
                    "fake-namespace-1",
                    "fake-namespace-2",
                    "fake-namespace-3",
                    "fake-namespace-4",
                ];
                // The 4th fails; the 5th is the same request, and succeeds.
                (names[n - 1], namespaces[n - 1], tr, i == 4)
            })
            .collect();
        struct Case {
            name: &'static str,
            request_index: &'static [usize],
            delete_pod_uid: &'static [&'static str],
            exp_left_index: &'static [usize],
        }
        let cases = [
            Case {
                name: "delete none with all success requests",
                request_index: &[0, 1, 2],
                delete_pod_uid: &[],
                exp_left_index: &[0, 1, 2],
            },
            Case {
                name: "delete one with all success requests",
                request_index: &[0, 1, 2],
                delete_pod_uid: &["fake-uid-1"],
                exp_left_index: &[1, 2],
            },
            Case {
                name: "delete two with all success requests",
                request_index: &[0, 1, 2],
                delete_pod_uid: &["fake-uid-1", "fake-uid-3"],
                exp_left_index: &[1],
            },
            Case {
                name: "delete all with all success requests",
                request_index: &[0, 1, 2],
                delete_pod_uid: &["fake-uid-1", "fake-uid-2", "fake-uid-3"],
                exp_left_index: &[],
            },
            Case {
                name: "delete no pod with failed requests",
                request_index: &[0, 1, 2, 3],
                delete_pod_uid: &[],
                exp_left_index: &[0, 1, 2],
            },
            Case {
                name: "delete other pod with failed requests",
                request_index: &[0, 1, 2, 3],
                delete_pod_uid: &["fake-uid-2"],
                exp_left_index: &[0, 2],
            },
            Case {
                name: "delete no pod with request which success after failure",
                request_index: &[0, 1, 2, 3, 4],
                delete_pod_uid: &[],
                exp_left_index: &[0, 1, 2, 4],
            },
            Case {
                name: "delete the pod which success after failure",
                request_index: &[0, 1, 2, 3, 4],
                delete_pod_uid: &["fake-uid-4"],
                exp_left_index: &[0, 1, 2],
            },
            Case {
                name: "delete other pod with request which success after failure",
                request_index: &[0, 1, 2, 3, 4],
                delete_pod_uid: &["fake-uid-1"],
                exp_left_index: &[1, 2, 4],
            },
            Case {
                name: "delete some pod not in the set",
                request_index: &[0, 1, 2],
                delete_pod_uid: &["fake-uid-100", "fake-uid-200"],
                exp_left_index: &[0, 1, 2],
            },
        ];
        for c in cases {
            let clock = FakeClock::new(go_zero_plus(30 * 24 * HOUR));
            let mgr = manager(&clock);
            for &index in c.request_index {
                let (name, namespace, tr, should_fail) = &requests[index];
                let pod_uid = tr
                    .spec
                    .as_ref()
                    .and_then(|s| s.bound_object_ref.as_ref())
                    .and_then(|r| r.uid.clone())
                    .unwrap();
                // upstream's successGetToken answers the request with a status added.
                let answer = TokenRequest {
                    status: status("", add(clock.now(), 10 * HOUR)),
                    ..tr.clone()
                };
                let _ = mgr
                    .get_service_account_token(&pod_uid, namespace, name, tr, || async {
                        if *should_fail {
                            Err("fail tr".to_string())
                        } else {
                            Ok(answer)
                        }
                    })
                    .await;
            }
            for uid in c.delete_pod_uid {
                mgr.delete_service_account_token(uid);
            }
            assert_eq!(
                mgr.len(),
                c.exp_left_index.len(),
                "{}: unexpected left cache size",
                c.name
            );
            for &left in c.exp_left_index {
                let (name, namespace, tr, _) = &requests[left];
                assert!(
                    mgr.get(&key_func(name, namespace, tr)).is_some(),
                    "{}: expected token request {left} to exist in cache",
                    c.name
                );
            }
        }
    }

    /// upstream TestCleanup (2/2): an entry expiring an hour ago goes, one expiring in an
    /// hour stays (upstream's case names have the two the other way round).
    #[test]
    fn cleanup() {
        for (name, relative_exp, want) in [
            ("don't cleanup unexpired tokens", -1i64, 0usize),
            ("cleanup expired tokens", 1, 1),
        ] {
            let clock = FakeClock::new(go_zero_plus(24 * HOUR));
            let mgr = manager(&clock);
            let exp = if relative_exp < 0 {
                sub(clock.now(), HOUR)
            } else {
                add(clock.now(), HOUR)
            };
            mgr.set(
                "key".into(),
                TokenRequest {
                    status: status("", exp),
                    ..Default::default()
                },
                "pod",
            );
            mgr.cleanup();
            assert_eq!(mgr.len(), want, "{name}");
        }
    }

    /// upstream TestKeyFunc (7/7).
    #[test]
    fn key_func_table() {
        let foo = |sa_uid: Option<&str>, exp: i64, pod: &str| {
            request(
                sa_uid,
                &["foo1", "foo2"],
                Some(exp),
                Some(bound("pod", pod, "foo-uid")),
            )
        };
        let ame = request(
            None,
            &["ame1", "ame2"],
            Some(2000),
            Some(bound("pod", "ame-pod", "ame-uid")),
        );
        type Unit = (&'static str, &'static str, TokenRequest);
        let unit = |tr: TokenRequest| -> Unit { ("foo-sa", "foo-ns", tr) };
        let cases: Vec<(&str, Vec<Unit>, Unit, bool)> = vec![
            (
                "hit",
                vec![unit(foo(None, 2000, "foo-pod")), ("ame-sa", "ame-ns", ame)],
                unit(foo(None, 2000, "foo-pod")),
                true,
            ),
            (
                "not hit due to different ExpirationSeconds",
                vec![unit(foo(None, 2000, "foo-pod"))],
                unit(foo(None, 2001, "foo-pod")),
                false,
            ),
            (
                "not hit due to different BoundObjectRef",
                vec![unit(foo(None, 2000, "foo-pod"))],
                unit(foo(None, 2000, "diff-pod")),
                false,
            ),
            (
                "not hit due to different service account UID",
                vec![unit(foo(
                    Some("old-service-account-uid-123"),
                    2000,
                    "foo-pod",
                ))],
                unit(foo(Some("new-service-account-uid-456"), 2000, "foo-pod")),
                false,
            ),
            (
                "hit with same service account UID",
                vec![unit(foo(
                    Some("same-service-account-uid-123"),
                    2000,
                    "foo-pod",
                ))],
                unit(foo(Some("same-service-account-uid-123"), 2000, "foo-pod")),
                true,
            ),
            (
                "hit with empty UID (backward compatibility)",
                vec![unit(foo(None, 2000, "foo-pod"))],
                unit(foo(None, 2000, "foo-pod")),
                true,
            ),
            (
                "not hit when one has UID and other doesn't",
                vec![unit(foo(Some("service-account-uid-123"), 2000, "foo-pod"))],
                unit(foo(None, 2000, "foo-pod")),
                false,
            ),
        ];
        for (name, trus, target, should_hit) in cases {
            let clock = FakeClock::new(go_zero_plus(30 * 24 * HOUR));
            let mgr = manager(&clock);
            for (sa, ns, tr) in &trus {
                mgr.set(
                    key_func(sa, ns, tr),
                    TokenRequest {
                        // make sure the token cache would not be cleaned by the cleanup
                        status: status("", add(clock.now(), 50 * MINUTE)),
                        ..Default::default()
                    },
                    "pod",
                );
            }
            let (sa, ns, tr) = &target;
            let hit = mgr.get(&key_func(sa, ns, tr)).is_some();
            assert_eq!(hit, should_hit, "{name}");
        }
    }

    /// upstream TestServiceAccountRecreationCacheInvalidation (1/1).
    #[tokio::test]
    async fn service_account_recreation_cache_invalidation() {
        let clock = FakeClock::new(go_zero_plus(30 * 24 * HOUR));
        let mgr = manager(&clock);
        let calls = AtomicUsize::new(0);
        let get_token = |tr: &TokenRequest| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            let answer = TokenRequest {
                // Preserve the UID from the request.
                metadata: tr.metadata.clone(),
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                }),
                status: status(&format!("token-{n}"), add(clock.now(), HOUR)),
            };
            async move { Ok(answer) }
        };
        let original = request(
            Some("original-sa-uid-123"),
            &["test-audience"],
            Some(3600),
            None,
        );
        let recreated = request(
            Some("recreated-sa-uid-456"),
            &["test-audience"],
            Some(3600),
            None,
        );
        let token = |tr: TokenRequest| tr.status.unwrap().token.unwrap_or_default();
        // 1. the original UID: requested.
        let t1 = mgr
            .get_service_account_token("p", "test-ns", "test-sa", &original, || {
                get_token(&original)
            })
            .await
            .unwrap();
        assert_eq!(
            (calls.load(Ordering::SeqCst), token(t1)),
            (1, "token-1".into())
        );
        // 2. again: from the cache.
        let t2 = mgr
            .get_service_account_token("p", "test-ns", "test-sa", &original, || {
                get_token(&original)
            })
            .await
            .unwrap();
        assert_eq!(
            (calls.load(Ordering::SeqCst), token(t2)),
            (1, "token-1".into())
        );
        // 3. the ServiceAccount made again: a cache miss.
        let t3 = mgr
            .get_service_account_token("p", "test-ns", "test-sa", &recreated, || {
                get_token(&recreated)
            })
            .await
            .unwrap();
        assert_eq!(
            (calls.load(Ordering::SeqCst), token(t3)),
            (2, "token-2".into())
        );
        // 4. the recreated one again: from the cache.
        let t4 = mgr
            .get_service_account_token("p", "test-ns", "test-sa", &recreated, || {
                get_token(&recreated)
            })
            .await
            .unwrap();
        assert_eq!(
            (calls.load(Ordering::SeqCst), token(t4)),
            (2, "token-2".into())
        );
    }

    /// Beyond upstream's tables: a failed first request is upstream's "failed to fetch
    /// token" error; a failed refresh of an expired token is an error naming the key and
    /// not the token; the cleanup drops an expired entry on the first request a minute
    /// after the last cleanup.
    #[tokio::test]
    async fn errors_and_expiry() {
        let clock = FakeClock::new(go_zero_plus(30 * 24 * HOUR));
        let mgr = manager(&clock);
        let tr = get_token_request();
        let got = mgr
            .get_service_account_token("p", "ns", "sa", &tr, || async {
                Err::<TokenRequest, _>("secrets \"x\" not found".to_string())
            })
            .await;
        assert_eq!(
            got.unwrap_err(),
            "failed to fetch token: secrets \"x\" not found"
        );
        let answer = |ttl: Duration| TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(ttl.as_secs() as i64),
                ..Default::default()
            }),
            status: status("secret-token", add(clock.now(), ttl)),
            ..Default::default()
        };
        let short = answer(Duration::from_secs(30));
        mgr.get_service_account_token("p", "ns", "sa", &tr, || async { Ok(short) })
            .await
            .unwrap();
        // Expired, the cleanup not due yet (45 s since the last): the refresh fails.
        clock.step(Duration::from_secs(45));
        let err = mgr
            .get_service_account_token("p", "ns", "sa", &tr, || async {
                Err::<TokenRequest, _>("unavailable".to_string())
            })
            .await
            .unwrap_err();
        assert_eq!(
            err,
            format!(
                "token {} expired and refresh failed: unavailable",
                key_func("sa", "ns", &tr)
            )
        );
        assert!(!err.contains("secret-token"));
        assert_eq!(mgr.len(), 1);
        // A minute after the last cleanup: the expired entry goes before the request.
        clock.step(Duration::from_secs(20));
        let err = mgr
            .get_service_account_token("p", "ns", "sa", &tr, || async {
                Err::<TokenRequest, _>("unavailable".to_string())
            })
            .await
            .unwrap_err();
        assert_eq!(err, "failed to fetch token: unavailable");
        assert!(mgr.is_empty());
    }
}
