//! Rollback decisions (upstream: pkg/controller/deployment/rollback.go).
//!
//! apps/v1 has no `spec.rollbackTo`; like upstream, the request travels in the
//! `deprecated.deployment.rollback.to` annotation (revision 0 = the revision before the
//! current one). Whatever the outcome, the annotation is cleared ([`apply_rollback`]) and
//! the Deployment updated.
use k8s_openapi::api::core::v1::PodTemplateSpec;
use rekube_crds::{Deployment, ReplicaSet};
use std::collections::BTreeMap;

use super::util::{self, ROLLBACK_TO_ANNOTATION};

/// What a rollback request resolves to (upstream rollback / rollbackToTemplate).
#[derive(Debug, Clone, PartialEq)]
pub enum RollbackDecision {
    /// No (valid) rollback annotation.
    NotRequested,
    /// Copy `template` (the ReplicaSet's, without the pod-template-hash label) and the
    /// ReplicaSet's annotations into the Deployment; event DeploymentRollback.
    ToTemplate {
        rs_name: String,
        revision: i64,
        template: Box<PodTemplateSpec>,
        rs_annotations: BTreeMap<String, String>,
    },
    /// No ReplicaSet has the requested revision; Warning event
    /// DeploymentRollbackRevisionNotFound "Unable to find the revision to rollback to.".
    RevisionNotFound,
    /// Revision 0 was requested but there is no revision before the current one; Warning
    /// event DeploymentRollbackRevisionNotFound "Unable to find last revision.".
    LastRevisionNotFound,
    /// The revision's template is already the Deployment's; Warning event
    /// DeploymentRollbackTemplateUnchanged.
    TemplateUnchanged { rs_name: String, revision: i64 },
}

/// An event to record on the Deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackEvent {
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

impl RollbackDecision {
    /// The event upstream records for this decision (emitRollback{Warning,Normal}Event).
    pub fn event(&self, d: &Deployment) -> Option<RollbackEvent> {
        let d_name = util::name(&d.metadata);
        match self {
            RollbackDecision::NotRequested => None,
            RollbackDecision::ToTemplate { revision, .. } => Some(RollbackEvent {
                type_: util::EVENT_TYPE_NORMAL,
                reason: util::ROLLBACK_DONE,
                message: format!(
                    "Rolled back deployment {} to revision {revision}",
                    util::quote(d_name)
                ),
            }),
            RollbackDecision::RevisionNotFound => Some(RollbackEvent {
                type_: util::EVENT_TYPE_WARNING,
                reason: util::ROLLBACK_REVISION_NOT_FOUND,
                message: "Unable to find the revision to rollback to.".to_string(),
            }),
            RollbackDecision::LastRevisionNotFound => Some(RollbackEvent {
                type_: util::EVENT_TYPE_WARNING,
                reason: util::ROLLBACK_REVISION_NOT_FOUND,
                message: "Unable to find last revision.".to_string(),
            }),
            RollbackDecision::TemplateUnchanged { .. } => Some(RollbackEvent {
                type_: util::EVENT_TYPE_WARNING,
                reason: util::ROLLBACK_TEMPLATE_UNCHANGED,
                message: format!(
                    "The rollback revision contains the same template as current deployment {}",
                    util::quote(d_name)
                ),
            }),
        }
    }
}

/// getRollbackTo: the revision requested by the rollback annotation (`None` when absent,
/// empty or not an integer).
pub fn get_rollback_to(d: &Deployment) -> Option<i64> {
    let revision = d
        .metadata
        .annotations
        .as_ref()?
        .get(ROLLBACK_TO_ANNOTATION)?;
    if revision.is_empty() {
        return None;
    }
    // An invalid value is ignored.
    revision.parse::<i64>().ok()
}

/// setRollbackTo(d, nil): removes the rollback annotation.
pub fn clear_rollback_to(d: &mut Deployment) {
    if let Some(annotations) = d.metadata.annotations.as_mut() {
        annotations.remove(ROLLBACK_TO_ANNOTATION);
    }
}

/// rollback: resolves the requested revision against all the Deployment's ReplicaSets
/// (old ones then the new one, which upstream creates first if missing).
pub fn rollback_target(d: &Deployment, all_rss: &[&ReplicaSet]) -> RollbackDecision {
    let Some(mut to_revision) = get_rollback_to(d) else {
        return RollbackDecision::NotRequested;
    };
    // Revision 0: roll back to the last revision.
    if to_revision == 0 {
        to_revision = util::last_revision(all_rss);
        if to_revision == 0 {
            return RollbackDecision::LastRevisionNotFound;
        }
    }
    for rs in all_rss {
        // Unparsable revisions are skipped.
        if util::revision(&rs.metadata).ok() != Some(to_revision) {
            continue;
        }
        let rs_name = util::name(&rs.metadata).to_string();
        let rs_template = util::replica_set_template(rs);
        if util::equal_ignore_hash(&util::deployment_template(d), &rs_template) {
            return RollbackDecision::TemplateUnchanged {
                rs_name,
                revision: to_revision,
            };
        }
        let mut template = rs_template;
        if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            labels.remove(util::DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY);
        }
        return RollbackDecision::ToTemplate {
            rs_name,
            revision: to_revision,
            template: Box::new(template),
            rs_annotations: rs.metadata.annotations.clone().unwrap_or_default(),
        };
    }
    RollbackDecision::RevisionNotFound
}

/// rollbackToTemplate + updateDeploymentAndClearRollbackTo: the Deployment to write back.
/// For ToTemplate it takes the template (SetFromReplicaSetTemplate) and the ReplicaSet's
/// annotations (SetDeploymentAnnotationsTo); in every case the rollback annotation is
/// cleared. Returns whether a rollback was performed.
pub fn apply_rollback(d: &mut Deployment, decision: &RollbackDecision) -> bool {
    let performed = match decision {
        RollbackDecision::ToTemplate {
            template,
            rs_annotations,
            ..
        } => {
            util::set_from_replica_set_template(d, template);
            // The Deployment takes the old RS's annotations (e.g. change-cause), otherwise
            // its current ones would be copied onto the RS after the rollback.
            let rs = ReplicaSet {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    annotations: Some(rs_annotations.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            util::set_deployment_annotations_to(d, &rs);
            true
        }
        _ => false,
    };
    clear_rollback_to(d);
    performed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::util::test_helpers::*;
    use crate::deployment::util::{DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY, REVISION_ANNOTATION};

    fn with_image(d: &Deployment, image: &str) -> Deployment {
        let mut d = d.clone();
        d.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some(image.to_string());
        d
    }

    fn revisioned(d: &Deployment, name: &str, revision: &str, image: &str) -> ReplicaSet {
        let mut r = owned_replica_set(&with_image(d, image), name, 0);
        set_annotation(&mut r.metadata, REVISION_ANNOTATION, revision);
        set_annotation(&mut r.metadata, "change-cause", image);
        let labels = r
            .spec
            .as_mut()
            .unwrap()
            .template
            .as_mut()
            .unwrap()
            .metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap();
        labels.insert(
            DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY.to_string(),
            format!("hash-{name}"),
        );
        r
    }

    fn setup() -> (Deployment, ReplicaSet, ReplicaSet, ReplicaSet) {
        let base = new_deployment("foo", 1, None, None, None, &[("foo", "bar")]);
        let rs1 = revisioned(&base, "foo-1", "1", "v1");
        let rs2 = revisioned(&base, "foo-2", "2", "v2");
        let rs3 = revisioned(&base, "foo-3", "3", "v3");
        let mut d = with_image(&base, "v3");
        set_annotation(&mut d.metadata, REVISION_ANNOTATION, "3");
        set_annotation(&mut d.metadata, "change-cause", "v3");
        (d, rs1, rs2, rs3)
    }

    #[test]
    fn rollback_annotation_parsing() {
        let mut d = new_deployment("foo", 1, None, None, None, &[]);
        assert_eq!(get_rollback_to(&d), None);
        set_annotation(&mut d.metadata, ROLLBACK_TO_ANNOTATION, "");
        assert_eq!(get_rollback_to(&d), None);
        set_annotation(&mut d.metadata, ROLLBACK_TO_ANNOTATION, "abc");
        assert_eq!(get_rollback_to(&d), None);
        set_annotation(&mut d.metadata, ROLLBACK_TO_ANNOTATION, "0");
        assert_eq!(get_rollback_to(&d), Some(0));
        set_annotation(&mut d.metadata, ROLLBACK_TO_ANNOTATION, "12");
        assert_eq!(get_rollback_to(&d), Some(12));
        clear_rollback_to(&mut d);
        assert_eq!(get_rollback_to(&d), None);
    }

    #[test]
    fn not_requested() {
        let (d, rs1, rs2, rs3) = setup();
        assert_eq!(
            rollback_target(&d, &[&rs1, &rs2, &rs3]),
            RollbackDecision::NotRequested
        );
    }

    #[test]
    fn revision_zero_rolls_back_to_the_previous_revision() {
        let (mut d, rs1, rs2, rs3) = setup();
        set_annotation(&mut d.metadata, ROLLBACK_TO_ANNOTATION, "0");
        let decision = rollback_target(&d, &[&rs1, &rs2, &rs3]);
        let RollbackDecision::ToTemplate {
            rs_name,
            revision,
            template,
            ..
        } = &decision
        else {
            panic!("unexpected {decision:?}");
        };
        assert_eq!((rs_name.as_str(), *revision), ("foo-2", 2));
        let labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert!(!labels.contains_key(DEFAULT_DEPLOYMENT_UNIQUE_LABEL_KEY));
        let event = decision.event(&d).unwrap();
        assert_eq!(event.reason, "DeploymentRollback");
        assert_eq!(event.type_, "Normal");
        assert_eq!(
            event.message,
            "Rolled back deployment \"foo\" to revision 2"
        );

        assert!(apply_rollback(&mut d, &decision));
        assert_eq!(get_rollback_to(&d), None, "annotation cleared");
        let t = util::deployment_template(&d);
        assert_eq!(t.spec.unwrap().containers[0].image.as_deref(), Some("v2"));
        let annotations = d.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations.get("change-cause").map(String::as_str),
            Some("v2")
        );
        // The Deployment keeps its own revision; the next sync raises the RS's.
        assert_eq!(
            annotations.get(REVISION_ANNOTATION).map(String::as_str),
            Some("3")
        );
    }

    #[test]
    fn explicit_revision() {
        let (mut d, rs1, rs2, rs3) = setup();
        set_annotation(&mut d.metadata, ROLLBACK_TO_ANNOTATION, "1");
        match rollback_target(&d, &[&rs1, &rs2, &rs3]) {
            RollbackDecision::ToTemplate {
                rs_name, revision, ..
            } => assert_eq!((rs_name.as_str(), revision), ("foo-1", 1)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn revision_not_found() {
        let (mut d, rs1, rs2, rs3) = setup();
        set_annotation(&mut d.metadata, ROLLBACK_TO_ANNOTATION, "9");
        let decision = rollback_target(&d, &[&rs1, &rs2, &rs3]);
        assert_eq!(decision, RollbackDecision::RevisionNotFound);
        let event = decision.event(&d).unwrap();
        assert_eq!(
            (event.type_, event.reason),
            ("Warning", "DeploymentRollbackRevisionNotFound")
        );
        assert_eq!(event.message, "Unable to find the revision to rollback to.");
        let before = util::deployment_template(&d);
        assert!(!apply_rollback(&mut d, &decision));
        assert_eq!(util::deployment_template(&d), before);
        assert_eq!(
            get_rollback_to(&d),
            None,
            "a failed rollback is cleared too"
        );
    }

    #[test]
    fn no_last_revision() {
        let (mut d, _, _, rs3) = setup();
        set_annotation(&mut d.metadata, ROLLBACK_TO_ANNOTATION, "0");
        let decision = rollback_target(&d, &[&rs3]);
        assert_eq!(decision, RollbackDecision::LastRevisionNotFound);
        let event = decision.event(&d).unwrap();
        assert_eq!(event.reason, "DeploymentRollbackRevisionNotFound");
        assert_eq!(event.message, "Unable to find last revision.");
        assert!(!apply_rollback(&mut d, &decision));
        assert_eq!(get_rollback_to(&d), None);
    }

    // TestReentrantRollback (deployment_controller_test.go): rolling back to a revision
    // whose template is the current one changes nothing but clears the request.
    #[test]
    fn template_unchanged() {
        let (mut d, rs1, rs2, rs3) = setup();
        set_annotation(&mut d.metadata, ROLLBACK_TO_ANNOTATION, "3");
        let decision = rollback_target(&d, &[&rs1, &rs2, &rs3]);
        assert_eq!(
            decision,
            RollbackDecision::TemplateUnchanged {
                rs_name: "foo-3".to_string(),
                revision: 3
            }
        );
        let event = decision.event(&d).unwrap();
        assert_eq!(
            (event.type_, event.reason),
            ("Warning", "DeploymentRollbackTemplateUnchanged")
        );
        assert_eq!(
            event.message,
            "The rollback revision contains the same template as current deployment \"foo\""
        );
        let before = d.clone();
        assert!(!apply_rollback(&mut d, &decision));
        let mut expected = before;
        clear_rollback_to(&mut expected);
        assert_eq!(d, expected);
    }
}
