//! The I/O half of upstream's ControllerRefManager: applies the pure claim decisions
//! ([`crate::util::claim`]) with JSON Patches whose `test` operations make them safe against
//! concurrent changes (UID preconditions).
use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::util::claim::{self, ClaimDecision};
use crate::util::labels::Selector;

/// Adopts matching orphans among `candidates`, releases owned objects that stopped
/// matching, and returns the objects `controller` owns afterwards. An object that vanished
/// or changed meanwhile (404, 409, or a failed `test`: 422) is left to the next sync.
pub async fn claim_objects<K>(
    api: &Api<K>,
    controller: &ObjectMeta,
    owner: Option<&OwnerReference>,
    selector: &Selector,
    candidates: &[&K],
) -> Result<Vec<K>, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let controller_uid = controller.uid.clone().unwrap_or_default();
    let mut owned = Vec::new();
    for obj in candidates {
        let patch = match claim::claim_decision(controller, selector, obj.meta()) {
            ClaimDecision::Keep => {
                owned.push((*obj).clone());
                continue;
            }
            ClaimDecision::Ignore => continue,
            ClaimDecision::Adopt => match owner {
                Some(owner) => claim::adopt_patch(owner, obj.meta()),
                None => continue,
            },
            ClaimDecision::Release => claim::release_patch(&controller_uid, obj.meta()),
        };
        let adopting = claim::get_controller_of(obj.meta()).is_none();
        let patch: json_patch::Patch =
            serde_json::from_value(patch).expect("claim patches are JSON Patch documents");
        match api
            .patch(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            )
            .await
        {
            Ok(patched) if adopting => owned.push(patched),
            Ok(_) => {}
            Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(owned)
}
