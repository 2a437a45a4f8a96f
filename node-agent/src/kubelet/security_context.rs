//! runAsNonRoot, as the kubelet checks it before creating a container
//! (kuberuntime/security_context_others.go `verifyRunAsNonRoot`, with
//! kuberuntime_container.go `getImageUser` and containerd's CRI `getUserFromImage` for the
//! image's user). A failure is the container's CreateContainerConfigError, upstream's
//! message word for word.

use k8s_openapi::api::core::v1::Container;
use rekube_crds::Pod;

/// upstream `format.Pod`: `name_namespace(uid)`.
pub fn format_pod(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default()
    )
}

/// The image's user as the kubelet sees it (`getImageUser` over containerd's
/// `getUserFromImage`): the part before `:`, a uid when numeric, else a user name; an
/// image without USER runs as uid 0.
pub fn image_user(user: &str) -> (Option<i64>, String) {
    if user.is_empty() {
        return (Some(0), String::new());
    }
    let user = user.split(':').next().unwrap_or_default();
    match user.parse::<i64>() {
        Ok(uid) => (Some(uid), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

/// upstream `verifyRunAsNonRoot`: with runAsNonRoot (container's, else pod's), a
/// runAsUser (container's, else pod's) must not be 0; without one, the image's user must
/// be a numeric uid other than 0, within 0..=2147483647.
pub fn verify_run_as_non_root(
    pod: &Pod,
    container: &Container,
    uid: Option<i64>,
    username: &str,
) -> Result<(), String> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let run_as_non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or(pod_sc.and_then(|s| s.run_as_non_root));
    if run_as_non_root != Some(true) {
        return Ok(());
    }
    let pod_name = format_pod(pod);
    let name = &container.name;
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    if let Some(user) = run_as_user {
        if user == 0 {
            return Err(format!(
                "container's runAsUser breaks non-root policy (pod: {pod_name:?}, container: {name})"
            ));
        }
        return Ok(());
    }
    match uid {
        None if !username.is_empty() => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({username}), cannot verify user is non-root (pod: {pod_name:?}, container: {name})"
        )),
        Some(0) => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: {pod_name:?}, container: {name})"
        )),
        Some(uid) if !(0..=i64::from(i32::MAX)).contains(&uid) => Err(format!(
            "container has runAsNonRoot and image has an invalid user id ({uid}). (Must be 1-({})): must be between 0 and {}, inclusive (pod: {pod_name:?}, container: {name})",
            i32::MAX,
            i32::MAX
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SecurityContext};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(sc: Option<SecurityContext>, pod_sc: Option<PodSecurityContext>) -> (Pod, Container) {
        let container = Container {
            name: "foo".into(),
            image: Some("busybox".into()),
            security_context: sc,
            ..Default::default()
        };
        let pod = Pod {
            metadata: ObjectMeta {
                uid: Some("12345678".into()),
                name: Some("bar".into()),
                namespace: Some("new".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![container.clone()],
                security_context: pod_sc,
                ..Default::default()
            }),
            status: None,
        };
        (pod, container)
    }

    fn sc(non_root: Option<bool>, user: Option<i64>) -> Option<SecurityContext> {
        Some(SecurityContext {
            run_as_non_root: non_root,
            run_as_user: user,
            ..Default::default()
        })
    }

    /// upstream TestVerifyRunAsNonRoot.
    #[test]
    fn verify_run_as_non_root_table() {
        let (root, any, invalid, negative, max) = (
            Some(0),
            Some(1000),
            Some(2_147_483_648),
            Some(-1000),
            Some(i64::from(i32::MAX)),
        );
        for (desc, sc, uid, username, fail) in [
            ("Pass if SecurityContext is not set", None, root, "", false),
            (
                "Pass if RunAsUser is non-root and RunAsNonRoot is true",
                sc(Some(true), any),
                None,
                "",
                false,
            ),
            (
                "Pass if RunAsNonRoot is not set",
                sc(None, root),
                root,
                "",
                false,
            ),
            (
                "Pass if RunAsNonRoot is false (image user is root)",
                sc(Some(false), None),
                root,
                "",
                false,
            ),
            (
                "Pass if RunAsNonRoot is false (RunAsUser is root)",
                sc(Some(false), root),
                root,
                "",
                false,
            ),
            (
                "Fail if container's RunAsUser is root and RunAsNonRoot is true",
                sc(Some(true), root),
                root,
                "",
                true,
            ),
            (
                "Fail if image's user is root and RunAsNonRoot is true",
                sc(Some(true), None),
                root,
                "",
                true,
            ),
            (
                "Fail if image's username is set and RunAsNonRoot is true",
                sc(Some(true), None),
                None,
                "test",
                true,
            ),
            (
                "Pass if image's user is non-root and RunAsNonRoot is true",
                sc(Some(true), None),
                any,
                "",
                false,
            ),
            (
                "Pass if container's user and image's user aren't set and RunAsNonRoot is true",
                sc(Some(true), None),
                None,
                "",
                false,
            ),
            (
                "Fail if image's user is invalid and RunAsNonRoot is true",
                sc(Some(true), None),
                invalid,
                "",
                true,
            ),
            (
                "Fail if image's user is negative and RunAsNonRoot is true",
                sc(Some(true), None),
                negative,
                "",
                true,
            ),
            (
                "Pass if image's user is math.MaxInt32 and RunAsNonRoot is true",
                sc(Some(true), None),
                max,
                "",
                false,
            ),
        ] {
            let (p, c) = pod(sc, None);
            assert_eq!(
                verify_run_as_non_root(&p, &c, uid, username).is_err(),
                fail,
                "{desc}"
            );
        }
    }

    #[test]
    fn messages_are_upstream_s() {
        let (p, c) = pod(sc(Some(true), Some(0)), None);
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(0), "").unwrap_err(),
            r#"container's runAsUser breaks non-root policy (pod: "bar_new(12345678)", container: foo)"#
        );
        let (p, c) = pod(sc(Some(true), None), None);
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(0), "").unwrap_err(),
            r#"container has runAsNonRoot and image will run as root (pod: "bar_new(12345678)", container: foo)"#
        );
        assert_eq!(
            verify_run_as_non_root(&p, &c, None, "nobody").unwrap_err(),
            r#"container has runAsNonRoot and image has non-numeric user (nobody), cannot verify user is non-root (pod: "bar_new(12345678)", container: foo)"#
        );
        assert_eq!(
            verify_run_as_non_root(&p, &c, Some(-1), "").unwrap_err(),
            r#"container has runAsNonRoot and image has an invalid user id (-1). (Must be 1-(2147483647)): must be between 0 and 2147483647, inclusive (pod: "bar_new(12345678)", container: foo)"#
        );
    }

    /// The pod's security context applies when the container's does not set the field.
    #[test]
    fn pod_level_fields_apply() {
        let pod_sc = |non_root, user| {
            Some(PodSecurityContext {
                run_as_non_root: non_root,
                run_as_user: user,
                ..Default::default()
            })
        };
        let (p, c) = pod(None, pod_sc(Some(true), None));
        assert!(verify_run_as_non_root(&p, &c, Some(0), "").is_err());
        let (p, c) = pod(None, pod_sc(Some(true), Some(1000)));
        assert!(verify_run_as_non_root(&p, &c, Some(0), "").is_ok());
        // The container's false overrides the pod's true.
        let (p, c) = pod(sc(Some(false), None), pod_sc(Some(true), None));
        assert!(verify_run_as_non_root(&p, &c, Some(0), "").is_ok());
        // The container's runAsUser 0 overrides the pod's 1000.
        let (p, c) = pod(sc(None, Some(0)), pod_sc(Some(true), Some(1000)));
        assert!(verify_run_as_non_root(&p, &c, Some(1000), "").is_err());
    }

    #[test]
    fn image_user_as_the_kubelet_sees_it() {
        assert_eq!(image_user(""), (Some(0), String::new()));
        assert_eq!(image_user("1000"), (Some(1000), String::new()));
        assert_eq!(image_user("1000:1000"), (Some(1000), String::new()));
        assert_eq!(image_user("0:100"), (Some(0), String::new()));
        assert_eq!(image_user("nobody"), (None, "nobody".to_string()));
        assert_eq!(image_user("app:staff"), (None, "app".to_string()));
    }
}
