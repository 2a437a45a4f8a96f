//! upstream k8s.io/endpointslice/util EndpointSliceTracker: the generation of every slice
//! this controller wrote, per Service, so that its own writes coming back through the
//! informer do not sync the Service again, and a sync against a cache that has not seen
//! them yet is refused (it would undo or repeat them).
use std::collections::HashMap;
use std::sync::Mutex;

use rekube_crds::EndpointSlice;

use super::utils::{LABEL_SERVICE_NAME, service_controller_key};
use crate::manager::informer::Change;

/// The generation a slice has when this controller expects it to be deleted.
const DELETION_EXPECTED: i64 = -1;

type ServiceKey = (String, String);

#[derive(Debug, Default)]
pub struct EndpointSliceTracker {
    generations_by_service: Mutex<HashMap<ServiceKey, HashMap<String, i64>>>,
}

fn service_of(slice: &EndpointSlice) -> ServiceKey {
    (
        slice.metadata.namespace.clone().unwrap_or_default(),
        slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_SERVICE_NAME))
            .cloned()
            .unwrap_or_default(),
    )
}

fn uid(slice: &EndpointSlice) -> String {
    slice.metadata.uid.clone().unwrap_or_default()
}

fn generation(slice: &EndpointSlice) -> i64 {
    slice.metadata.generation.unwrap_or_default()
}

impl EndpointSliceTracker {
    /// The slices whose owners (a Service, or mirrored Endpoints) an informer event about
    /// a slice should sync: upstream's onEndpointSliceAdd / Update / Delete, shared by
    /// the EndpointSlice and mirroring controllers. A slice added or updated by someone
    /// else; both owners when its service-name label moved; a slice deleted that this
    /// controller did not delete. The informer sees only the controller's own slices, so
    /// one whose managed-by label changed away arrives as a deletion (upstream's
    /// ManagedByChanged) and its owner gets a slice of its own again.
    pub fn slices_to_queue<'a>(
        &self,
        change: &Change<'a, EndpointSlice>,
    ) -> Vec<&'a EndpointSlice> {
        match *change {
            Change::Added(s) => {
                if self.should_sync(s) {
                    vec![s.as_ref()]
                } else {
                    vec![]
                }
            }
            Change::Updated { old, new } => {
                if service_controller_key(old) != service_controller_key(new) {
                    vec![new.as_ref(), old.as_ref()]
                } else if self.should_sync(new) {
                    vec![new.as_ref()]
                } else {
                    vec![]
                }
            }
            Change::Deleted(s) => {
                if self.has(s) && !self.handle_deletion(s) {
                    vec![s.as_ref()]
                } else {
                    vec![]
                }
            }
        }
    }

    /// upstream Has.
    pub fn has(&self, slice: &EndpointSlice) -> bool {
        let g = self.generations_by_service.lock().unwrap();
        g.get(&service_of(slice))
            .is_some_and(|s| s.contains_key(&uid(slice)))
    }

    /// upstream ShouldSync: the slice is not one this controller wrote, or someone changed
    /// it since (a newer generation).
    pub fn should_sync(&self, slice: &EndpointSlice) -> bool {
        let g = self.generations_by_service.lock().unwrap();
        match g.get(&service_of(slice)).and_then(|s| s.get(&uid(slice))) {
            None => true,
            Some(expected) => generation(slice) > *expected,
        }
    }

    /// upstream StaleSlices: the cache lacks a write of this controller (an older
    /// generation, a slice expected deleted still there, a slice written missing).
    pub fn stale_slices(&self, namespace: &str, service: &str, slices: &[&EndpointSlice]) -> bool {
        let g = self.generations_by_service.lock().unwrap();
        let Some(gfs) = g.get(&(namespace.to_string(), service.to_string())) else {
            return false;
        };
        let mut provided = std::collections::HashSet::new();
        for s in slices {
            provided.insert(uid(s));
            if let Some(expected) = gfs.get(&uid(s))
                && (*expected == DELETION_EXPECTED || *expected > generation(s))
            {
                return true;
            }
        }
        gfs.iter()
            .any(|(uid, g)| *g != DELETION_EXPECTED && !provided.contains(uid))
    }

    /// upstream Update: this controller wrote the slice at its generation.
    pub fn update(&self, slice: &EndpointSlice) {
        let mut g = self.generations_by_service.lock().unwrap();
        g.entry(service_of(slice))
            .or_default()
            .insert(uid(slice), generation(slice));
    }

    /// upstream ExpectDeletion.
    pub fn expect_deletion(&self, slice: &EndpointSlice) {
        let mut g = self.generations_by_service.lock().unwrap();
        g.entry(service_of(slice))
            .or_default()
            .insert(uid(slice), DELETION_EXPECTED);
    }

    /// upstream HandleDeletion: forgets the slice; whether its deletion was expected
    /// (false: someone else deleted it, the Service must be synced).
    pub fn handle_deletion(&self, slice: &EndpointSlice) -> bool {
        let mut g = self.generations_by_service.lock().unwrap();
        if let Some(gfs) = g.get_mut(&service_of(slice))
            && let Some(expected) = gfs.remove(&uid(slice))
            && expected != DELETION_EXPECTED
        {
            return false;
        }
        true
    }

    /// upstream DeleteService.
    pub fn delete_service(&self, namespace: &str, name: &str) {
        self.generations_by_service
            .lock()
            .unwrap()
            .remove(&(namespace.to_string(), name.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn slice(uid: &str, generation: i64) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("ns1".into()),
                name: Some(format!("svc1-{uid}")),
                uid: Some(uid.into()),
                generation: Some(generation),
                labels: Some([(LABEL_SERVICE_NAME.to_string(), "svc1".to_string())].into()),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            ..Default::default()
        }
    }

    // upstream TestEndpointSliceTrackerUpdate / TestEndpointSliceTrackerStaleSlices /
    // TestEndpointSliceTrackerDeletion, their cases.
    #[test]
    fn should_sync_only_on_changes_by_others() {
        let t = EndpointSliceTracker::default();
        let s = slice("a", 1);
        assert!(t.should_sync(&s), "unknown slice");
        t.update(&s);
        assert!(t.has(&s));
        assert!(!t.should_sync(&s), "own write");
        assert!(t.should_sync(&slice("a", 2)), "newer generation");
        assert!(!t.should_sync(&slice("a", 0)), "older generation");
    }

    #[test]
    fn stale_slices() {
        let t = EndpointSliceTracker::default();
        assert!(
            !t.stale_slices("ns1", "svc1", &[&slice("a", 1)]),
            "untracked service"
        );
        t.update(&slice("a", 2));
        assert!(
            t.stale_slices("ns1", "svc1", &[&slice("a", 1)]),
            "older generation cached"
        );
        assert!(!t.stale_slices("ns1", "svc1", &[&slice("a", 2)]));
        assert!(
            !t.stale_slices("ns1", "svc1", &[&slice("a", 3)]),
            "newer is fine"
        );
        assert!(
            t.stale_slices("ns1", "svc1", &[]),
            "written slice missing from the cache"
        );
        t.expect_deletion(&slice("a", 2));
        assert!(
            t.stale_slices("ns1", "svc1", &[&slice("a", 2)]),
            "deleted slice still cached"
        );
        assert!(!t.stale_slices("ns1", "svc1", &[]));
    }

    #[test]
    fn deletion() {
        let t = EndpointSliceTracker::default();
        let s = slice("a", 1);
        t.update(&s);
        assert!(!t.handle_deletion(&s), "deleted by someone else");
        assert!(!t.has(&s));
        t.expect_deletion(&s);
        assert!(t.handle_deletion(&s), "our own deletion");
        assert!(t.handle_deletion(&slice("b", 1)), "unknown slice");
        t.update(&s);
        t.delete_service("ns1", "svc1");
        assert!(!t.has(&s));
    }
}
