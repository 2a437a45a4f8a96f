//! An informer, as client-go's: one watch of a resource type (kube's `watcher`, with its
//! relists and backoff), a local cache (kube's reflector `Store`) and the handlers that the
//! controllers register to hear of additions, updates and deletions. Managed fields are
//! dropped before caching to keep the cache small.
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// An object's cache key: `namespace/name`, or `name` when cluster-scoped
/// (client-go's MetaNamespaceKeyFunc).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn of<K: Resource>(obj: &K) -> Self {
        ObjectKey {
            namespace: obj.meta().namespace.clone(),
            name: obj.meta().name.clone().unwrap_or_default(),
        }
    }

    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        ObjectKey {
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    pub fn object_ref<K: Resource<DynamicType = ()>>(&self) -> ObjectRef<K> {
        let r = ObjectRef::new(&self.name);
        match &self.namespace {
            Some(ns) => r.within(ns),
            None => r,
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// What happened to a cached object.
pub enum Change<'a, K> {
    Added(&'a Arc<K>),
    Updated { old: &'a Arc<K>, new: &'a Arc<K> },
    Deleted(&'a Arc<K>),
}

type Handler<K> = Box<dyn Fn(Change<'_, K>) + Send + Sync>;

/// One watched resource type, its cache and its handlers.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    config: watcher::Config,
    store: Store<K>,
    writer: Mutex<Option<Writer<K>>>,
    handlers: Mutex<Vec<Handler<K>>>,
    synced: watch::Sender<bool>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + fmt::Debug + Send + Sync + 'static,
{
    pub fn new(api: Api<K>, config: watcher::Config) -> Arc<Self> {
        let writer = Writer::default();
        Arc::new(Informer {
            api,
            config,
            store: writer.as_reader(),
            writer: Mutex::new(Some(writer)),
            handlers: Mutex::new(Vec::new()),
            synced: watch::channel(false).0,
        })
    }

    /// The cache; complete once [`Self::has_synced`] says so.
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        self.store.get(&key.object_ref())
    }

    /// Registers a handler; call before [`Self::run`].
    pub fn add_handler(&self, handler: impl Fn(Change<'_, K>) + Send + Sync + 'static) {
        self.handlers.lock().unwrap().push(Box::new(handler));
    }

    /// The resource's plural name (`pods`), for logs.
    pub fn resource(&self) -> String {
        K::plural(&()).into_owned()
    }

    /// Whether the first list is in the cache, as a [`HasSynced`] for
    /// [`wait_for_named_cache_sync`].
    pub fn has_synced(&self) -> HasSynced {
        HasSynced {
            resource: K::plural(&()).into_owned(),
            synced: self.synced.subscribe(),
        }
    }

    fn notify(&self, change: Change<'_, K>) {
        for h in self.handlers.lock().unwrap().iter() {
            h(match &change {
                Change::Added(o) => Change::Added(o),
                Change::Updated { old, new } => Change::Updated { old, new },
                Change::Deleted(o) => Change::Deleted(o),
            });
        }
    }

    /// Watches until the stream ends (never, in practice: the watcher relists on errors;
    /// the supervisor takes the process down if it does).
    pub async fn run(self: Arc<Self>) {
        let mut writer = self
            .writer
            .lock()
            .unwrap()
            .take()
            .expect("an informer runs once");
        let stream = watcher(self.api.clone(), self.config.clone()).default_backoff();
        futures::pin_mut!(stream);
        // Objects seen during a relist, to diff against the cache when it completes.
        let mut relisted: HashMap<ObjectRef<K>, ()> = HashMap::new();
        while let Some(event) = stream.next().await {
            let mut event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(resource = %K::plural(&()), error = %e, "watch failed; retrying");
                    continue;
                }
            };
            strip_managed_fields(&mut event);
            match &event {
                Event::Apply(obj) => {
                    let key = ObjectRef::from_obj(obj);
                    let old = self.store.get(&key);
                    writer.apply_watcher_event(&event);
                    if let Some(new) = self.store.get(&key) {
                        match old {
                            Some(old) => self.notify(Change::Updated {
                                old: &old,
                                new: &new,
                            }),
                            None => self.notify(Change::Added(&new)),
                        }
                    }
                }
                Event::Delete(obj) => {
                    let key = ObjectRef::from_obj(obj);
                    let last = self
                        .store
                        .get(&key)
                        .unwrap_or_else(|| Arc::new(obj.clone()));
                    writer.apply_watcher_event(&event);
                    self.notify(Change::Deleted(&last));
                }
                Event::Init => {
                    relisted.clear();
                    writer.apply_watcher_event(&event);
                }
                Event::InitApply(obj) => {
                    relisted.insert(ObjectRef::from_obj(obj), ());
                    writer.apply_watcher_event(&event);
                }
                Event::InitDone => {
                    let before: HashMap<ObjectRef<K>, Arc<K>> = self
                        .store
                        .state()
                        .into_iter()
                        .map(|o| (ObjectRef::from_obj(&*o), o))
                        .collect();
                    writer.apply_watcher_event(&event);
                    for new in self.store.state() {
                        match before.get(&ObjectRef::from_obj(&*new)) {
                            Some(old) => self.notify(Change::Updated { old, new: &new }),
                            None => self.notify(Change::Added(&new)),
                        }
                    }
                    for (key, old) in &before {
                        if !relisted.contains_key(key) {
                            self.notify(Change::Deleted(old));
                        }
                    }
                    relisted.clear();
                    self.synced.send_replace(true);
                }
            }
        }
    }
}

/// One informer's "first list done" signal (client-go's `cache.InformerSynced`).
pub struct HasSynced {
    resource: String,
    synced: watch::Receiver<bool>,
}

/// Waits until every informer a controller reads has its first list in the cache
/// (client-go's `cache.WaitForNamedCacheSync`). A controller that syncs before this sees
/// an empty or partial cache: a ReplicaSet whose pods are not listed yet would create a
/// second full set of them. Every controller calls it before its first sync.
pub async fn wait_for_named_cache_sync(controller: &str, informers: Vec<HasSynced>) {
    let resources: Vec<&str> = informers.iter().map(|i| i.resource.as_str()).collect();
    tracing::info!(controller, caches = ?resources, "waiting for caches to sync");
    futures::future::join_all(informers.into_iter().map(|mut i| async move {
        let _ = i.synced.wait_for(|synced| *synced).await;
    }))
    .await;
    tracing::info!(controller, "caches are synced");
}

fn strip_managed_fields<K: Resource>(event: &mut Event<K>) {
    match event {
        Event::Apply(o) | Event::Delete(o) | Event::InitApply(o) => o.managed_fields_mut().clear(),
        Event::Init | Event::InitDone => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_like_client_go() {
        assert_eq!(ObjectKey::new(Some("ns"), "web").to_string(), "ns/web");
        assert_eq!(ObjectKey::new(None, "node-a").to_string(), "node-a");
    }
}
