//! downwardAPI volumes' content: upstream pkg/volume/downwardapi/downwardapi.go
//! `CollectData`: one file per item, at its cleaned path, holding a field of the pod's
//! metadata (`fieldRef`, pkg/fieldpath `ExtractFieldPathAsString`) or a resource of one of
//! its containers (`resourceFieldRef`, api/v1/resource
//! `ExtractResourceValueByContainerNameAndNodeAllocatable`: unset limits read as the
//! node's allocatable), with the item's mode or the default one. Every failing item is
//! reported, in one error (apimachinery's `NewAggregate`). Pure: the shell writes the
//! payload with the atomic writer.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::DownwardAPIVolumeFile;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rekube_crds::Pod;

use super::aggregate_message;
use super::atomic_writer::clean;
use super::{FileProjection, Payload};
use crate::kubelet::env::{
    EnvError, container_resource_runtime_value, extract_field_path_as_string, find_container_in_pod,
};

/// Why a downwardAPI volume's files could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownwardApiError {
    #[error("no defaultMode used, not even the default value for it")]
    NoDefaultMode,
    /// The items that failed, shown as upstream's aggregate error: one message as it is,
    /// several as `[a, b]` without repeats.
    #[error("{}", aggregate_message(.0.iter().map(ToString::to_string)))]
    Items(Vec<EnvError>),
}

/// Upstream `CollectData`: the files of a downwardAPI volume of `pod`.
/// `node_allocatable` is the node's allocatable resources (the value of a `limits.*`
/// resource a container leaves unset), as for environment variables.
pub fn collect_data(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    node_allocatable: &BTreeMap<String, Quantity>,
    default_mode: Option<i32>,
) -> Result<Payload, DownwardApiError> {
    let default_mode = default_mode.ok_or(DownwardApiError::NoDefaultMode)?;
    let mut errors = Vec::new();
    let mut data = Payload::new();
    for item in items {
        let mode = item.mode.unwrap_or(default_mode) as u32;
        let value = if let Some(field) = &item.field_ref {
            extract_field_path_as_string(pod, &field.field_path)
        } else if let Some(resource) = &item.resource_field_ref {
            let name = resource.container_name.as_deref().unwrap_or_default();
            find_container_in_pod(pod, name).and_then(|container| {
                container_resource_runtime_value(resource, pod, container, node_allocatable)
            })
        } else {
            Ok(String::new())
        };
        let content = value.unwrap_or_else(|e| {
            errors.push(e);
            String::new()
        });
        data.insert(
            clean(&item.path),
            FileProjection {
                data: content.into_bytes(),
                mode,
                fs_user: None,
            },
        );
    }
    if !errors.is_empty() {
        return Err(DownwardApiError::Items(errors));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::env::format_map;
    use k8s_openapi::api::core::v1::{
        Container, ObjectFieldSelector, PodSpec, ResourceFieldSelector, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const TEST_NAMESPACE: &str = "test_metadata_namespace";
    const TEST_NAME: &str = "test_metadata_name";

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn labels1() -> BTreeMap<String, String> {
        map(&[("key1", "value1"), ("key2", "value2")])
    }

    fn labels2() -> BTreeMap<String, String> {
        map(&[("key1", "value1"), ("key2", "value2"), ("key3", "value3")])
    }

    fn annotations() -> BTreeMap<String, String> {
        map(&[("a1", "value1"), ("a2", "value2"), ("multiline", "c\nb\na")])
    }

    fn pod(
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        containers: Vec<Container>,
    ) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(TEST_NAME.into()),
                namespace: Some(TEST_NAMESPACE.into()),
                uid: Some("test_pod_uid".into()),
                labels: (!labels.is_empty()).then_some(labels),
                annotations: (!annotations.is_empty()).then_some(annotations),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn field(path: &str, field_path: &str, mode: Option<i32>) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                api_version: None,
                field_path: field_path.into(),
            }),
            mode,
            resource_field_ref: None,
        }
    }

    fn resource(
        path: &str,
        container: &str,
        name: &str,
        divisor: Option<&str>,
    ) -> DownwardAPIVolumeFile {
        DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: None,
            mode: None,
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some(container.into()),
                divisor: divisor.map(|d| Quantity(d.into())),
                resource: name.into(),
            }),
        }
    }

    fn files(payload: &Payload) -> Vec<(String, String, u32)> {
        payload
            .iter()
            .map(|(p, f)| {
                (
                    p.clone(),
                    String::from_utf8(f.data.clone()).unwrap(),
                    f.mode,
                )
            })
            .collect()
    }

    fn want(expected: &[(&str, String, u32)]) -> Vec<(String, String, u32)> {
        expected
            .iter()
            .map(|(p, d, m)| (p.to_string(), d.clone(), *m))
            .collect()
    }

    /// upstream TestDownwardAPI, the cases about what the files hold: (name, items,
    /// labels, annotations, expected files (path, content, mode)). The pod's volume has
    /// defaultMode 0644 as upstream's test gives it. The two "write twice" cases are in
    /// [`collect_twice`]; writing (symlinks, `..data`) is the atomic writer's.
    #[test]
    fn downward_api_table() {
        type Case = (
            &'static str,
            Vec<DownwardAPIVolumeFile>,
            BTreeMap<String, String>,
            BTreeMap<String, String>,
            Vec<(&'static str, String, u32)>,
        );
        let none = BTreeMap::new;
        let cases: Vec<Case> = vec![
            (
                "test_labels",
                vec![field("labels", "metadata.labels", None)],
                labels1(),
                none(),
                vec![("labels", format_map(&labels1()), 0o644)],
            ),
            (
                "test_annotations",
                vec![field("annotations", "metadata.annotations", None)],
                none(),
                annotations(),
                vec![("annotations", format_map(&annotations()), 0o644)],
            ),
            (
                "test_name",
                vec![field("name_file_name", "metadata.name", None)],
                none(),
                none(),
                vec![("name_file_name", TEST_NAME.into(), 0o644)],
            ),
            (
                "test_namespace",
                vec![field("namespace_file_name", "metadata.namespace", None)],
                none(),
                none(),
                vec![("namespace_file_name", TEST_NAMESPACE.into(), 0o644)],
            ),
            (
                "test_write_with_unix_path",
                vec![
                    field("these/are/my/labels", "metadata.labels", None),
                    field("these/are/your/annotations", "metadata.annotations", None),
                ],
                labels1(),
                annotations(),
                vec![
                    ("these/are/my/labels", format_map(&labels1()), 0o644),
                    (
                        "these/are/your/annotations",
                        format_map(&annotations()),
                        0o644,
                    ),
                ],
            ),
            (
                "test_write_with_two_consecutive_slashes_in_the_path",
                vec![field("this//labels", "metadata.labels", None)],
                labels1(),
                none(),
                vec![("this/labels", format_map(&labels1()), 0o644)],
            ),
            (
                "test_default_mode",
                vec![field("name_file_name", "metadata.name", None)],
                none(),
                none(),
                vec![("name_file_name", TEST_NAME.into(), 0o644)],
            ),
            (
                "test_item_mode",
                vec![field("name_file_name", "metadata.name", Some(0o400))],
                none(),
                none(),
                vec![("name_file_name", TEST_NAME.into(), 0o400)],
            ),
        ];
        for (name, items, labels, annotations, expected) in cases {
            let pod = pod(labels, annotations, vec![]);
            let got = collect_data(&items, &pod, &BTreeMap::new(), Some(0o644))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(files(&got), want(&expected), "{name}");
        }
    }

    /// upstream's test_write_twice_no_update and test_write_twice_with_update: the same
    /// pod collects the same files; changed labels, the new ones.
    #[test]
    fn collect_twice() {
        let items = [field("labels", "metadata.labels", None)];
        let mut pod = pod(labels1(), BTreeMap::new(), vec![]);
        let first = collect_data(&items, &pod, &BTreeMap::new(), Some(0o644)).unwrap();
        let again = collect_data(&items, &pod, &BTreeMap::new(), Some(0o644)).unwrap();
        assert_eq!(first, again);
        pod.metadata.labels = Some(labels2());
        let updated = collect_data(&items, &pod, &BTreeMap::new(), Some(0o644)).unwrap();
        assert_eq!(
            files(&updated),
            want(&[("labels", format_map(&labels2()), 0o644)])
        );
    }

    fn container(name: &str, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        let list = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect(),
            )
        };
        Container {
            name: name.into(),
            resources: Some(ResourceRequirements {
                requests: list(requests),
                limits: list(limits),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Resource items (rekube's cases; upstream's downwardapi_test.go has none, the
    /// values follow api/v1/resource's rules): (resource, divisor, expected content).
    #[test]
    fn resource_limits_table() {
        let pod = pod(
            BTreeMap::new(),
            BTreeMap::new(),
            vec![container(
                "client-container",
                &[("cpu", "250m"), ("memory", "32Mi")],
                &[("memory", "64Mi")],
            )],
        );
        let allocatable: BTreeMap<String, Quantity> = [
            ("cpu".to_string(), Quantity("4".into())),
            ("memory".to_string(), Quantity("8Gi".into())),
        ]
        .into();
        let cases = [
            ("limits.memory", None, "67108864"),
            ("limits.memory", Some("1Mi"), "64"),
            ("requests.memory", Some("1Mi"), "32"),
            ("requests.cpu", None, "1"),
            ("requests.cpu", Some("1m"), "250"),
            // Unset: the node's allocatable.
            ("limits.cpu", None, "4"),
            ("limits.cpu", Some("1m"), "4000"),
        ];
        for (name, divisor, expected) in cases {
            let items = [resource("f", "client-container", name, divisor)];
            let got = collect_data(&items, &pod, &allocatable, Some(0o644))
                .unwrap_or_else(|e| panic!("{name} {divisor:?}: {e}"));
            assert_eq!(
                files(&got),
                want(&[("f", expected.to_string(), 0o644)]),
                "{name} {divisor:?}"
            );
        }
    }

    #[test]
    fn errors_are_aggregated() {
        let pod = pod(
            BTreeMap::new(),
            BTreeMap::new(),
            vec![container("c", &[], &[])],
        );
        let alloc = BTreeMap::new();
        assert_eq!(
            collect_data(&[], &pod, &alloc, None)
                .unwrap_err()
                .to_string(),
            "no defaultMode used, not even the default value for it"
        );
        let one = [
            field("name", "metadata.name", None),
            resource("x", "missing", "limits.cpu", None),
        ];
        assert_eq!(
            collect_data(&one, &pod, &alloc, Some(0o644))
                .unwrap_err()
                .to_string(),
            "container missing not found"
        );
        let several = [
            field("a", "spec.nodeName", None),
            resource("x", "missing", "limits.cpu", None),
            resource("y", "missing", "limits.memory", None),
            resource("z", "c", "limits.bogus", None),
        ];
        assert_eq!(
            collect_data(&several, &pod, &alloc, Some(0o644))
                .unwrap_err()
                .to_string(),
            "[unsupported fieldPath: spec.nodeName, container missing not found, \
             unsupported container resource : limits.bogus]"
        );
    }

    #[test]
    fn paths_are_cleaned_as_go_does() {
        let cases = [
            ("a/b", "a/b"),
            ("this//labels", "this/labels"),
            ("./a/./b/", "a/b"),
            ("a/../b", "b"),
            ("../a", "../a"),
            ("/../a", "/a"),
            ("", "."),
            ("a/..", "."),
        ];
        for (input, want) in cases {
            assert_eq!(clean(input), want, "{input:?}");
        }
    }
}
