//! A container's environment: upstream kubelet_pods.go `makeEnvironmentVariables` with
//! `podFieldSelectorRuntimeValue` (the downward API fields), pkg/fieldpath
//! `ExtractFieldPathAsString`, api/pod `ConvertDownwardAPIFieldLabel`, api/v1/resource
//! `ExtractContainerResourceValue` and `MergeContainerResourceLimits` (node allocatable
//! for unset limits, kubelet_resources.go `defaultPodLimitsForDownwardAPI`).
//!
//! ConfigMaps and Secrets are inputs (plain maps of the pod's namespace), so this stays
//! pure; the errors are upstream's texts, which the sync shows as the container's
//! `CreateContainerConfigError` message. `$(VAR)` references are expanded with
//! [`crate::runtime::expansion`] (upstream third_party/forked/golang/expansion).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use rekube_crds::Pod;

use super::quantity::{Amount, amount, parse_quantity};
use crate::runtime::expansion::{expand, mapping_func_for};

/// Why a container's environment could not be made (the start fails with
/// `CreateContainerConfigError` and this message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKeyNotFound {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("unsupported pod version: {0}")]
    UnsupportedPodVersion(String),
    #[error("field label does not support subscript: {0}")]
    FieldLabelSubscript(String),
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
    #[error("invalid key subscript in {path}: {detail}")]
    InvalidKeySubscript { path: String, detail: String },
    #[error("unsupported fieldPath: {0}")]
    UnsupportedFieldPath(String),
    #[error("cannot resolve {0}: the node has no address")]
    NoHostIp(String),
    #[error("unsupported container resource : {0}")]
    UnsupportedContainerResource(String),
    /// A quantity the apiserver should have refused: the variable is not made up.
    #[error("invalid quantity for {field}: {source}")]
    Quantity {
        field: String,
        source: super::quantity::QuantityError,
    },
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("env {0}: fileKeyRef is not supported")]
    FileKeyRefUnsupported(String),
}

/// What the environment is made from besides the pod and the container.
#[derive(Debug, Clone, Copy)]
pub struct EnvSources<'a> {
    /// The ConfigMaps of the pod's namespace: name → data.
    pub config_maps: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// The Secrets of the pod's namespace: name → data.
    pub secrets: &'a BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// The service variables (`KUBERNETES_SERVICE_HOST`, …) for the pod, if any.
    pub service_env: &'a BTreeMap<String, String>,
    /// The pod's IPs, primary first (`status.podIP`, `status.podIPs`).
    pub pod_ips: &'a [String],
    /// The node's IPs, primary first (`status.hostIP`, `status.hostIPs`).
    pub host_ips: &'a [String],
    /// The node's allocatable resources: the value of a `limits.*` resourceFieldRef whose
    /// limit is unset.
    pub node_allocatable: &'a BTreeMap<String, Quantity>,
}

/// Upstream `makeEnvironmentVariables`: envFrom first, then env (which overrides it) in
/// order, `$(VAR)` in values expanded against the variables before it and the service
/// variables; then the service variables not set otherwise. Sorted by name, then the
/// service variables (upstream's order is a map's).
pub fn make_environment_variables(
    pod: &Pod,
    container: &Container,
    sources: &EnvSources<'_>,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let mut tmp_env: BTreeMap<String, String> = BTreeMap::new();

    for env_from in container.env_from.iter().flatten() {
        let prefix = env_from.prefix.as_deref().unwrap_or_default();
        if let Some(cm) = &env_from.config_map_ref {
            match sources.config_maps.get(&cm.name) {
                Some(data) => {
                    for (k, v) in data {
                        tmp_env.insert(format!("{prefix}{k}"), v.clone());
                    }
                }
                None if cm.optional == Some(true) => {}
                None => return Err(EnvError::ConfigMapNotFound(cm.name.clone())),
            }
        } else if let Some(s) = &env_from.secret_ref {
            match sources.secrets.get(&s.name) {
                Some(data) => {
                    for (k, v) in data {
                        tmp_env.insert(
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(v).into_owned(),
                        );
                    }
                }
                None if s.optional == Some(true) => {}
                None => return Err(EnvError::SecretNotFound(s.name.clone())),
            }
        }
    }

    for env in container.env.iter().flatten() {
        let value = env.value.clone().unwrap_or_default();
        let runtime_val = if !value.is_empty() {
            let contexts = [&tmp_env, sources.service_env];
            expand(&value, mapping_func_for(&contexts))
        } else if let Some(from) = &env.value_from {
            if let Some(fs) = &from.field_ref {
                pod_field_selector_runtime_value(fs, pod, sources)?
            } else if let Some(rs) = &from.resource_field_ref {
                container_resource_runtime_value(rs, pod, container, sources.node_allocatable)?
            } else if let Some(cm) = &from.config_map_key_ref {
                let optional = cm.optional == Some(true);
                let Some(data) = sources.config_maps.get(&cm.name) else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::ConfigMapNotFound(cm.name.clone()));
                };
                match data.get(&cm.key) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::ConfigMapKeyNotFound {
                            key: cm.key.clone(),
                            namespace,
                            name: cm.name.clone(),
                        });
                    }
                }
            } else if let Some(s) = &from.secret_key_ref {
                let optional = s.optional == Some(true);
                let Some(data) = sources.secrets.get(&s.name) else {
                    if optional {
                        continue;
                    }
                    return Err(EnvError::SecretNotFound(s.name.clone()));
                };
                match data.get(&s.key) {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if optional => continue,
                    None => {
                        return Err(EnvError::SecretKeyNotFound {
                            key: s.key.clone(),
                            namespace,
                            name: s.name.clone(),
                        });
                    }
                }
            } else if from.file_key_ref.is_some() {
                return Err(EnvError::FileKeyRefUnsupported(env.name.clone()));
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        tmp_env.insert(env.name.clone(), runtime_val);
    }

    let mut result: Vec<(String, String)> = tmp_env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in sources.service_env {
        if !tmp_env.contains_key(k) {
            result.push((k.clone(), v.clone()));
        }
    }
    Ok(result)
}

/// Upstream `podFieldSelectorRuntimeValue`: a downward API field of the pod.
pub fn pod_field_selector_runtime_value(
    fs: &ObjectFieldSelector,
    pod: &Pod,
    sources: &EnvSources<'_>,
) -> Result<String, EnvError> {
    let version = fs
        .api_version
        .as_deref()
        .filter(|v| !v.is_empty())
        .unwrap_or("v1");
    let path = convert_downward_api_field_label(version, &fs.field_path)?;
    let spec = pod.spec.as_ref();
    let host_ip = || {
        sources
            .host_ips
            .first()
            .cloned()
            .ok_or_else(|| EnvError::NoHostIp(path.clone()))
    };
    match path.as_str() {
        "spec.nodeName" => Ok(spec.and_then(|s| s.node_name.clone()).unwrap_or_default()),
        "spec.serviceAccountName" => Ok(spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default()),
        "status.hostIP" => host_ip(),
        "status.hostIPs" => {
            host_ip()?;
            Ok(sources.host_ips.join(","))
        }
        "status.podIP" => Ok(sources.pod_ips.first().cloned().unwrap_or_default()),
        "status.podIPs" => Ok(sources.pod_ips.join(",")),
        _ => extract_field_path_as_string(pod, &path),
    }
}

/// Upstream `fieldpath.SplitMaybeSubscriptedPath`: `metadata.labels['k']` →
/// (`metadata.labels`, `k`).
pub fn split_maybe_subscripted_path(field_path: &str) -> Option<(&str, &str)> {
    let s = field_path.strip_suffix("']")?;
    let (path, subscript) = s.split_once("['")?;
    (!path.is_empty()).then_some((path, subscript))
}

/// Upstream `ConvertDownwardAPIFieldLabel` for pods: the supported field paths.
pub fn convert_downward_api_field_label(version: &str, label: &str) -> Result<String, EnvError> {
    if version != "v1" {
        return Err(EnvError::UnsupportedPodVersion(version.to_string()));
    }
    if let Some((path, _)) = split_maybe_subscripted_path(label) {
        return match path {
            "metadata.annotations" | "metadata.labels" => Ok(label.to_string()),
            _ => Err(EnvError::FieldLabelSubscript(label.to_string())),
        };
    }
    match label {
        "metadata.annotations"
        | "metadata.labels"
        | "metadata.name"
        | "metadata.namespace"
        | "metadata.uid"
        | "spec.nodeName"
        | "spec.restartPolicy"
        | "spec.serviceAccountName"
        | "spec.schedulerName"
        | "status.phase"
        | "status.hostIP"
        | "status.hostIPs"
        | "status.podIP"
        | "status.podIPs" => Ok(label.to_string()),
        "spec.host" => Ok("spec.nodeName".to_string()),
        _ => Err(EnvError::FieldLabelNotSupported(label.to_string())),
    }
}

/// Upstream `fieldpath.ExtractFieldPathAsString` for a pod's metadata.
pub fn extract_field_path_as_string(pod: &Pod, field_path: &str) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let labels = meta.labels.clone().unwrap_or_default();
    let annotations = meta.annotations.clone().unwrap_or_default();
    if let Some((path, subscript)) = split_maybe_subscripted_path(field_path) {
        return match path {
            "metadata.annotations" => {
                is_qualified_name(&subscript.to_lowercase()).map_err(|detail| {
                    EnvError::InvalidKeySubscript {
                        path: field_path.to_string(),
                        detail,
                    }
                })?;
                Ok(annotations.get(subscript).cloned().unwrap_or_default())
            }
            "metadata.labels" => {
                is_qualified_name(subscript).map_err(|detail| EnvError::InvalidKeySubscript {
                    path: field_path.to_string(),
                    detail,
                })?;
                Ok(labels.get(subscript).cloned().unwrap_or_default())
            }
            _ => Err(EnvError::UnsupportedFieldPath(field_path.to_string())),
        };
    }
    match field_path {
        "metadata.annotations" => Ok(format_map(&annotations)),
        "metadata.labels" => Ok(format_map(&labels)),
        "metadata.name" => Ok(meta.name.clone().unwrap_or_default()),
        "metadata.namespace" => Ok(meta.namespace.clone().unwrap_or_default()),
        "metadata.uid" => Ok(meta.uid.clone().unwrap_or_default()),
        _ => Err(EnvError::UnsupportedFieldPath(field_path.to_string())),
    }
}

/// Upstream `fieldpath.FormatMap`: `key="value"` lines, keys sorted, values quoted as Go's
/// `strconv.Quote` does.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", go_quote(v)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Upstream `validation.IsQualifiedName`, with a short message: `[prefix/]name`, the
/// prefix a DNS subdomain, the name at most 63 alphanumerics, `-`, `_` or `.`, starting
/// and ending with an alphanumeric.
fn is_qualified_name(value: &str) -> Result<(), String> {
    let (prefix, name) = match value.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, value),
    };
    if let Some(p) = prefix {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if p.is_empty() || p.len() > 253 || !p.split('.').all(label_ok) {
            return Err("prefix part must be a lowercase RFC 1123 subdomain".to_string());
        }
    }
    let ok_middle = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
    let bytes = name.as_bytes();
    if name.is_empty() {
        return Err("name part must be non-empty".to_string());
    }
    if name.len() > 63 {
        return Err("name part must be no more than 63 characters".to_string());
    }
    if !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
        || !bytes.iter().all(|b| ok_middle(*b))
    {
        return Err(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
                .to_string(),
        );
    }
    Ok(())
}

/// Upstream `MergeContainerResourceLimits`: unset (or zero) cpu, memory and
/// ephemeral-storage limits take the node's allocatable.
pub fn merge_container_resource_limits(
    container: &Container,
    allocatable: &BTreeMap<String, Quantity>,
) -> BTreeMap<String, Quantity> {
    let mut limits = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default();
    for resource in ["cpu", "memory", "ephemeral-storage"] {
        // An unparsable limit is kept (and refused where it is read), not replaced.
        let unset = limits
            .get(resource)
            .is_none_or(|q| parse_quantity(&q.0).is_ok_and(|a| a.is_zero()));
        if let Some(cap) = allocatable.get(resource).filter(|_| unset) {
            limits.insert(resource.to_string(), cap.clone());
        }
    }
    limits
}

/// Upstream `containerResourceRuntimeValue`: a resourceFieldRef of this container, or of
/// the named one, with the node's allocatable for unset limits.
pub fn container_resource_runtime_value(
    fs: &ResourceFieldSelector,
    pod: &Pod,
    container: &Container,
    node_allocatable: &BTreeMap<String, Quantity>,
) -> Result<String, EnvError> {
    let target = match fs.container_name.as_deref().filter(|n| !n.is_empty()) {
        None => container,
        Some(name) => find_container_in_pod(pod, name)?,
    };
    let limits = merge_container_resource_limits(target, node_allocatable);
    let requests = target
        .resources
        .as_ref()
        .and_then(|r| r.requests.clone())
        .unwrap_or_default();
    extract_container_resource_value(fs, &requests, &limits)
}

/// Upstream `findContainerInPod`: the container, or else the init container, named
/// `name`.
pub fn find_container_in_pod<'a>(pod: &'a Pod, name: &str) -> Result<&'a Container, EnvError> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == name)
        .ok_or_else(|| EnvError::ContainerNotFound(name.to_string()))
}

/// Upstream `ExtractContainerResourceValue`: the resource in units of the divisor (1 when
/// unset), rounded up; cpu through milli-units, the others through whole units.
pub fn extract_container_resource_value(
    fs: &ResourceFieldSelector,
    requests: &BTreeMap<String, Quantity>,
    limits: &BTreeMap<String, Quantity>,
) -> Result<String, EnvError> {
    let parse = |field: &str, q: &Quantity| {
        parse_quantity(&q.0).map_err(|source| EnvError::Quantity {
            field: field.to_string(),
            source,
        })
    };
    let divisor = match fs.divisor.as_ref() {
        Some(d) => parse("divisor", d)?,
        None => Amount::ZERO,
    };
    let divisor = if divisor.is_zero() {
        amount(&Quantity("1".into()))
    } else {
        divisor
    };
    let get = |list: &BTreeMap<String, Quantity>, name: &str| -> Result<Amount, EnvError> {
        list.get(name)
            .map(|q| parse(name, q))
            .transpose()
            .map(|a| a.unwrap_or(Amount::ZERO))
    };
    let ceil_div = |a: i64, b: i64| -> String {
        let b = i128::from(b.max(1));
        let a = i128::from(a);
        (a.div_euclid(b) + i128::from(a.rem_euclid(b) != 0)).to_string()
    };
    let cpu = |q: Amount| ceil_div(q.milli_value(), divisor.milli_value());
    let units = |q: Amount| ceil_div(q.value(), divisor.value());
    let resource = fs.resource.as_str();
    match resource {
        "limits.cpu" => return Ok(cpu(get(limits, "cpu")?)),
        "limits.memory" => return Ok(units(get(limits, "memory")?)),
        "limits.ephemeral-storage" => return Ok(units(get(limits, "ephemeral-storage")?)),
        "requests.cpu" => return Ok(cpu(get(requests, "cpu")?)),
        "requests.memory" => return Ok(units(get(requests, "memory")?)),
        "requests.ephemeral-storage" => return Ok(units(get(requests, "ephemeral-storage")?)),
        _ => {}
    }
    if let Some(name) = resource
        .strip_prefix("requests.")
        .filter(|n| n.starts_with("hugepages-"))
    {
        return Ok(units(get(requests, name)?));
    }
    if let Some(name) = resource
        .strip_prefix("limits.")
        .filter(|n| n.starts_with("hugepages-"))
    {
        return Ok(units(get(limits, name)?));
    }
    Err(EnvError::UnsupportedContainerResource(resource.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource, PodSpec,
        ResourceRequirements, SecretEnvSource, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("dapi-test-pod-name".into()),
                namespace: Some("downward-api".into()),
                uid: Some("12345678".into()),
                labels: Some(
                    [
                        ("app".to_string(), "web".to_string()),
                        ("tier".to_string(), "a\"b".to_string()),
                    ]
                    .into(),
                ),
                annotations: Some([("example.com/owner".to_string(), "team".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-name".into()),
                service_account_name: Some("special".into()),
                containers,
                ..Default::default()
            }),
            status: None,
        }
    }

    fn literal(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            ..Default::default()
        }
    }

    fn from(name: &str, source: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value_from: Some(source),
            ..Default::default()
        }
    }

    fn field(name: &str, path: &str) -> EnvVar {
        from(
            name,
            EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: path.into(),
                }),
                ..Default::default()
            },
        )
    }

    struct World {
        config_maps: BTreeMap<String, BTreeMap<String, String>>,
        secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
        service_env: BTreeMap<String, String>,
        pod_ips: Vec<String>,
        host_ips: Vec<String>,
        allocatable: BTreeMap<String, Quantity>,
    }

    impl World {
        fn new() -> Self {
            World {
                config_maps: [(
                    "test-config-map".to_string(),
                    [
                        ("REPLACE_ME".to_string(), "FROM_CONFIG_MAP".to_string()),
                        ("DUPE_TEST".to_string(), "CONFIG_MAP".to_string()),
                    ]
                    .into(),
                )]
                .into(),
                secrets: [(
                    "test-secret".to_string(),
                    [
                        ("REPLACE_ME".to_string(), b"FROM_SECRET".to_vec()),
                        ("DUPE_TEST".to_string(), b"SECRET".to_vec()),
                    ]
                    .into(),
                )]
                .into(),
                service_env: BTreeMap::new(),
                pod_ips: vec!["1.2.3.4".into(), "fd00::6".into()],
                host_ips: vec!["127.0.0.1".into(), "::1".into()],
                allocatable: [
                    ("cpu".to_string(), Quantity("4".into())),
                    ("memory".to_string(), Quantity("8Gi".into())),
                ]
                .into(),
            }
        }

        fn sources(&self) -> EnvSources<'_> {
            EnvSources {
                config_maps: &self.config_maps,
                secrets: &self.secrets,
                service_env: &self.service_env,
                pod_ips: &self.pod_ips,
                host_ips: &self.host_ips,
                node_allocatable: &self.allocatable,
            }
        }
    }

    fn env_of(c: &Container, w: &World) -> Result<Vec<(String, String)>, EnvError> {
        make_environment_variables(&pod(vec![c.clone()]), c, &w.sources())
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = v
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.sort();
        out
    }

    /// kubelet_pods_test.go TestMakeEnvironmentVariables "downward api pod".
    #[test]
    fn downward_api_pod() {
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                field("POD_NAME", "metadata.name"),
                field("POD_NAMESPACE", "metadata.namespace"),
                field("POD_NODE_NAME", "spec.nodeName"),
                field("POD_SERVICE_ACCOUNT_NAME", "spec.serviceAccountName"),
                field("POD_IP", "status.podIP"),
                field("POD_IPS", "status.podIPs"),
                field("HOST_IP", "status.hostIP"),
                field("HOST_IPS", "status.hostIPs"),
                field("POD_UID", "metadata.uid"),
                field("APP", "metadata.labels['app']"),
                field("OWNER", "metadata.annotations['example.com/owner']"),
                field("LABELS", "metadata.labels"),
            ]),
            ..Default::default()
        };
        let got = env_of(&c, &World::new()).unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("POD_NAME", "dapi-test-pod-name"),
                ("POD_NAMESPACE", "downward-api"),
                ("POD_NODE_NAME", "node-name"),
                ("POD_SERVICE_ACCOUNT_NAME", "special"),
                ("POD_IP", "1.2.3.4"),
                ("POD_IPS", "1.2.3.4,fd00::6"),
                ("HOST_IP", "127.0.0.1"),
                ("HOST_IPS", "127.0.0.1,::1"),
                ("POD_UID", "12345678"),
                ("APP", "web"),
                ("OWNER", "team"),
                ("LABELS", "app=\"web\"\ntier=\"a\\\"b\""),
            ])
        );
    }

    /// "env expansion".
    #[test]
    fn env_expansion() {
        let c = Container {
            name: "c".into(),
            env: Some(vec![
                literal("TEST_LITERAL", "test-test-test"),
                field("POD_NAME", "metadata.name"),
                literal("OUT_OF_ORDER_TEST", "$(OUT_OF_ORDER_TARGET)"),
                literal("OUT_OF_ORDER_TARGET", "FOO"),
                EnvVar {
                    name: "EMPTY_VAR".into(),
                    ..Default::default()
                },
                literal("EMPTY_TEST", "foo-$(EMPTY_VAR)"),
                literal("POD_NAME_TEST2", "test2-$(POD_NAME)"),
                literal("POD_NAME_TEST3", "$(POD_NAME_TEST2)-3"),
                literal("LITERAL_TEST", "literal-$(TEST_LITERAL)"),
                literal("TEST_UNDEFINED", "$(UNDEFINED_VAR)"),
                literal(
                    "SERVICE_REF",
                    "$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)",
                ),
            ]),
            ..Default::default()
        };
        let mut w = World::new();
        w.service_env = [
            ("KUBERNETES_SERVICE_HOST".to_string(), "1.2.3.1".to_string()),
            ("KUBERNETES_SERVICE_PORT".to_string(), "8081".to_string()),
        ]
        .into();
        let got = env_of(&c, &w).unwrap();
        let mut want = pairs(&[
            ("TEST_LITERAL", "test-test-test"),
            ("POD_NAME", "dapi-test-pod-name"),
            ("POD_NAME_TEST2", "test2-dapi-test-pod-name"),
            ("POD_NAME_TEST3", "test2-dapi-test-pod-name-3"),
            ("LITERAL_TEST", "literal-test-test-test"),
            ("OUT_OF_ORDER_TEST", "$(OUT_OF_ORDER_TARGET)"),
            ("OUT_OF_ORDER_TARGET", "FOO"),
            ("TEST_UNDEFINED", "$(UNDEFINED_VAR)"),
            ("EMPTY_VAR", ""),
            ("EMPTY_TEST", "foo-"),
            ("SERVICE_REF", "1.2.3.1:8081"),
        ]);
        want.extend(pairs(&[
            ("KUBERNETES_SERVICE_HOST", "1.2.3.1"),
            ("KUBERNETES_SERVICE_PORT", "8081"),
        ]));
        assert_eq!(got, want);
    }

    /// "configmap" and "secret": envFrom with a prefix, env overriding it, and `$(…)` over
    /// envFrom values.
    #[test]
    fn env_from_config_map_and_secret() {
        for secret in [false, true] {
            let source = if secret {
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "test-secret".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }
            } else {
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "test-config-map".into(),
                        optional: None,
                    }),
                    ..Default::default()
                }
            };
            let prefixed = EnvFromSource {
                prefix: Some("p_".into()),
                ..source.clone()
            };
            let c = Container {
                name: "c".into(),
                env_from: Some(vec![source, prefixed]),
                env: Some(vec![
                    literal("TEST_LITERAL", "test-test-test"),
                    literal("EXPANSION_TEST", "$(REPLACE_ME)"),
                    literal("DUPE_TEST", "ENV_VAR"),
                ]),
                ..Default::default()
            };
            let expected_from = if secret {
                "FROM_SECRET"
            } else {
                "FROM_CONFIG_MAP"
            };
            let expected_dupe = if secret { "SECRET" } else { "CONFIG_MAP" };
            assert_eq!(
                env_of(&c, &World::new()).unwrap(),
                pairs(&[
                    ("REPLACE_ME", expected_from),
                    ("p_REPLACE_ME", expected_from),
                    ("p_DUPE_TEST", expected_dupe),
                    ("DUPE_TEST", "ENV_VAR"),
                    ("TEST_LITERAL", "test-test-test"),
                    ("EXPANSION_TEST", expected_from),
                ])
            );
        }
    }

    #[test]
    fn missing_and_optional_sources() {
        let w = World::new();
        let cm_ref = |name: &str, key: &str, optional: Option<bool>| EnvVarSource {
            config_map_key_ref: Some(ConfigMapKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        };
        let secret_ref = |name: &str, key: &str, optional: Option<bool>| EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: name.into(),
                key: key.into(),
                optional,
            }),
            ..Default::default()
        };
        let one = |source: EnvVarSource| Container {
            name: "c".into(),
            env: Some(vec![from("V", source)]),
            ..Default::default()
        };
        // configmapkeyref_missing_optional, configmapkeyref_missing_key_optional, and the
        // secret twins: nothing set.
        for source in [
            cm_ref("missing", "k", Some(true)),
            cm_ref("test-config-map", "missing", Some(true)),
            secret_ref("missing", "k", Some(true)),
            secret_ref("test-secret", "missing", Some(true)),
        ] {
            assert_eq!(env_of(&one(source), &w).unwrap(), vec![]);
        }
        assert_eq!(
            env_of(&one(cm_ref("test-config-map", "REPLACE_ME", None)), &w).unwrap(),
            pairs(&[("V", "FROM_CONFIG_MAP")])
        );
        assert_eq!(
            env_of(&one(secret_ref("test-secret", "REPLACE_ME", None)), &w).unwrap(),
            pairs(&[("V", "FROM_SECRET")])
        );
        for (source, message) in [
            (cm_ref("x", "k", None), r#"configmap "x" not found"#),
            (
                cm_ref("test-config-map", "k", Some(false)),
                "couldn't find key k in ConfigMap downward-api/test-config-map",
            ),
            (secret_ref("x", "k", None), r#"secret "x" not found"#),
            (
                secret_ref("test-secret", "k", None),
                "couldn't find key k in Secret downward-api/test-secret",
            ),
        ] {
            assert_eq!(env_of(&one(source), &w).unwrap_err().to_string(), message);
        }
        // configmap_missing / configmap_missing_optional / secret_missing…
        let env_from = |cm: bool, optional: Option<bool>| Container {
            name: "c".into(),
            env_from: Some(vec![if cm {
                EnvFromSource {
                    config_map_ref: Some(ConfigMapEnvSource {
                        name: "missing".into(),
                        optional,
                    }),
                    ..Default::default()
                }
            } else {
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: "missing".into(),
                        optional,
                    }),
                    ..Default::default()
                }
            }]),
            ..Default::default()
        };
        assert_eq!(
            env_of(&env_from(true, None), &w).unwrap_err(),
            EnvError::ConfigMapNotFound("missing".into())
        );
        assert_eq!(
            env_of(&env_from(false, None), &w).unwrap_err(),
            EnvError::SecretNotFound("missing".into())
        );
        assert_eq!(env_of(&env_from(true, Some(true)), &w).unwrap(), vec![]);
        assert_eq!(env_of(&env_from(false, Some(true)), &w).unwrap(), vec![]);
    }

    #[test]
    fn field_path_errors() {
        let w = World::new();
        let one = |path: &str, version: Option<&str>| Container {
            name: "c".into(),
            env: Some(vec![from(
                "V",
                EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: version.map(String::from),
                        field_path: path.into(),
                    }),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        };
        assert_eq!(
            env_of(&one("metadata.name", None), &w).unwrap(),
            pairs(&[("V", "dapi-test-pod-name")])
        );
        assert_eq!(
            env_of(&one("spec.host", None), &w).unwrap(),
            pairs(&[("V", "node-name")])
        );
        for (path, version, message) in [
            ("metadata.name", Some("v2"), "unsupported pod version: v2"),
            (
                "spec.containers",
                None,
                "field label not supported: spec.containers",
            ),
            (
                "metadata.name['x']",
                None,
                "field label does not support subscript: metadata.name['x']",
            ),
            ("status.phase", None, "unsupported fieldPath: status.phase"),
        ] {
            assert_eq!(
                env_of(&one(path, version), &w).unwrap_err().to_string(),
                message
            );
        }
        assert!(matches!(
            env_of(&one("metadata.labels['-bad-']", None), &w),
            Err(EnvError::InvalidKeySubscript { .. })
        ));
        let mut no_host = World::new();
        no_host.host_ips.clear();
        assert_eq!(
            env_of(&one("status.hostIP", None), &no_host)
                .unwrap_err()
                .to_string(),
            "cannot resolve status.hostIP: the node has no address"
        );
    }

    fn resource_env(
        name: &str,
        container_name: Option<&str>,
        resource: &str,
        divisor: Option<&str>,
    ) -> EnvVar {
        from(
            name,
            EnvVarSource {
                resource_field_ref: Some(ResourceFieldSelector {
                    container_name: container_name.map(String::from),
                    resource: resource.into(),
                    divisor: divisor.map(|d| Quantity(d.into())),
                }),
                ..Default::default()
            },
        )
    }

    /// api/v1/resource helpers_test.go TestExtractResourceValue, and the node allocatable
    /// default for unset limits.
    #[test]
    fn resource_field_refs() {
        let q = |s: &str| Quantity(s.into());
        let c = Container {
            name: "app".into(),
            resources: Some(ResourceRequirements {
                requests: Some(
                    [
                        ("cpu".to_string(), q("250m")),
                        ("memory".to_string(), q("64Mi")),
                    ]
                    .into(),
                ),
                limits: Some([("cpu".to_string(), q("1500m"))].into()),
                ..Default::default()
            }),
            env: Some(vec![
                resource_env("LIMIT_CPU", None, "limits.cpu", None),
                resource_env("LIMIT_CPU_M", None, "limits.cpu", Some("1m")),
                resource_env("REQ_CPU", None, "requests.cpu", None),
                resource_env("REQ_CPU_M", None, "requests.cpu", Some("1m")),
                resource_env("REQ_MEM", None, "requests.memory", None),
                resource_env("REQ_MEM_MI", None, "requests.memory", Some("1Mi")),
                resource_env("LIMIT_MEM_MI", None, "limits.memory", Some("1Mi")),
                resource_env("LIMIT_STORAGE", None, "limits.ephemeral-storage", None),
                resource_env("SIDE_CPU", Some("side"), "limits.cpu", None),
            ]),
            ..Default::default()
        };
        let side = Container {
            name: "side".into(),
            ..Default::default()
        };
        let p = pod(vec![c.clone(), side]);
        let w = World::new();
        let got = make_environment_variables(&p, &c, &w.sources()).unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("LIMIT_CPU", "2"),
                ("LIMIT_CPU_M", "1500"),
                ("REQ_CPU", "1"),
                ("REQ_CPU_M", "250"),
                ("REQ_MEM", "67108864"),
                ("REQ_MEM_MI", "64"),
                ("LIMIT_MEM_MI", "8192"),
                ("LIMIT_STORAGE", "0"),
                ("SIDE_CPU", "4"),
            ])
        );
        let bad = Container {
            env: Some(vec![resource_env("X", None, "limits.gpu", None)]),
            ..c.clone()
        };
        assert_eq!(
            make_environment_variables(&p, &bad, &w.sources())
                .unwrap_err()
                .to_string(),
            "unsupported container resource : limits.gpu"
        );
        let missing = Container {
            env: Some(vec![resource_env("X", Some("nope"), "limits.cpu", None)]),
            ..c.clone()
        };
        assert_eq!(
            make_environment_variables(&p, &missing, &w.sources())
                .unwrap_err()
                .to_string(),
            "container nope not found"
        );
        // Quantities that do not parse are refused, not read as zero (nor, for a limit,
        // replaced by the node's allocatable).
        let bad_divisor = Container {
            env: Some(vec![resource_env("X", None, "limits.cpu", Some("1x"))]),
            ..c.clone()
        };
        assert_eq!(
            make_environment_variables(&p, &bad_divisor, &w.sources())
                .unwrap_err()
                .to_string(),
            format!(
                "invalid quantity for divisor: {}",
                parse_quantity("1x").unwrap_err()
            )
        );
        let mut bad_limit = c.clone();
        bad_limit.resources.as_mut().unwrap().limits =
            Some([("memory".to_string(), q("lots"))].into());
        bad_limit.env = Some(vec![resource_env("X", None, "limits.memory", None)]);
        let p = pod(vec![bad_limit.clone()]);
        assert_eq!(
            make_environment_variables(&p, &bad_limit, &w.sources())
                .unwrap_err()
                .to_string(),
            format!(
                "invalid quantity for memory: {}",
                parse_quantity("lots").unwrap_err()
            )
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(
            split_maybe_subscripted_path("metadata.annotations['myKey']"),
            Some(("metadata.annotations", "myKey"))
        );
        assert_eq!(
            split_maybe_subscripted_path("metadata.annotations['a[b]c']"),
            Some(("metadata.annotations", "a[b]c"))
        );
        assert_eq!(
            split_maybe_subscripted_path("metadata.labels['']"),
            Some(("metadata.labels", ""))
        );
        assert_eq!(split_maybe_subscripted_path("metadata.labels"), None);
        assert_eq!(split_maybe_subscripted_path("['x']"), None);
        assert!(is_qualified_name("example.com/owner").is_ok());
        assert!(is_qualified_name("app").is_ok());
        assert!(is_qualified_name("").is_err());
        assert!(is_qualified_name("Bad_Prefix/x").is_err());
        assert_eq!(go_quote("a\u{1}\"é"), "\"a\\x01\\\"é\"");
    }
}
