//! ClusterTrustBundle projections: the trust anchors a projected volume's
//! `clusterTrustBundle` source writes (upstream's kubelet clustertrustbundle manager,
//! pkg/kubelet/clustertrustbundle/clustertrustbundle_manager.go `GetTrustAnchorsByName`
//! and `GetTrustAnchorsBySigner`, and projected.go `collectData`'s branch). Pure: the
//! shell lists the cluster's `certificates.k8s.io/v1beta1` ClusterTrustBundles as the
//! node ([`Bundles`]) at each set-up of the volume, and this picks and normalizes.
//!
//! - By `name`: that bundle; missing: an error, or no certificates when `optional`.
//! - By `signerName` and `labelSelector`: every bundle of that signer whose labels the
//!   selector matches (a missing selector matches nothing, an empty one everything, as
//!   `metav1.LabelSelectorAsSelector`); none: an error, or no certificates when
//!   `optional`. The selector's canonical form may not be longer than 100 KiB.
//! - The trust anchors: every PEM block of the bundles, deduplicated by content and
//!   written back as `CERTIFICATE` blocks in the order of their DER bytes. Upstream then
//!   shuffles them (an order that changes with each kubelet restart, so that nobody
//!   relies on one); rekube keeps the sorted order, so that the file changes only when the
//!   anchors do (the atomic writer rewrites it at every sync otherwise).
//!
//! Not reproduced: upstream's informer and its 5-minute normalization cache (the shell
//! reads afresh at each set-up, so an edited bundle reaches running pods at their next
//! sync), its v1alpha1 fallback (rekube reads v1beta1 only), and `labels.NewRequirement`'s
//! syntax checks of the selector's keys and values (an invalid key or value matches
//! nothing here, where upstream fails the source: no object can carry such a label).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use k8s_openapi::api::certificates::v1beta1::ClusterTrustBundle;
use k8s_openapi::api::core::v1::{ClusterTrustBundleProjection, ProjectedVolumeSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// upstream's `maxLabelSelectorLength`: the longest canonical label selector accepted.
pub const MAX_LABEL_SELECTOR_LENGTH: usize = 100 * 1024;

/// The ClusterTrustBundles the shell read for a projected volume.
#[derive(Debug, Clone, Default)]
pub enum Bundles {
    /// Not read (the volume has no clusterTrustBundle source).
    #[default]
    NotRead,
    /// Every ClusterTrustBundle of the cluster.
    Listed(Vec<ClusterTrustBundle>),
    /// The apiserver does not serve `certificates.k8s.io/v1beta1` clustertrustbundles
    /// (the list was answered 404).
    NotServed,
    /// The list failed: why.
    Failed(String),
}

impl From<Result<Option<Vec<ClusterTrustBundle>>, String>> for Bundles {
    /// The shell's list ([`super::manager::ObjectReader::cluster_trust_bundles`]).
    fn from(listed: Result<Option<Vec<ClusterTrustBundle>>, String>) -> Self {
        match listed {
            Ok(Some(all)) => Bundles::Listed(all),
            Ok(None) => Bundles::NotServed,
            Err(e) => Bundles::Failed(e),
        }
    }
}

/// Whether a projected volume has a clusterTrustBundle source (the shell lists the
/// bundles only then).
pub fn has_cluster_trust_bundle_source(source: &ProjectedVolumeSource) -> bool {
    source
        .sources
        .iter()
        .flatten()
        .any(|s| s.cluster_trust_bundle.is_some())
}

/// The trust anchors of one clusterTrustBundle source (projected.go `collectData`'s
/// branch): by name, else by signer name, else upstream's error.
pub fn trust_anchors(
    projection: &ClusterTrustBundleProjection,
    bundles: &Bundles,
) -> Result<Vec<u8>, String> {
    let allow_missing = projection.optional == Some(true);
    if let Some(name) = &projection.name {
        trust_anchors_by_name(bundles, name, allow_missing)
    } else if let Some(signer) = &projection.signer_name {
        trust_anchors_by_signer(
            bundles,
            signer,
            projection.label_selector.as_ref(),
            allow_missing,
        )
    } else {
        Err("ClusterTrustBundle projection requires either name or signerName to be set".into())
    }
}

/// The bundles listed, or the error every source gets.
fn listed(bundles: &Bundles) -> Result<&[ClusterTrustBundle], ListError> {
    match bundles {
        Bundles::Listed(all) => Ok(all),
        Bundles::NotServed => Err(ListError::NotServed),
        Bundles::Failed(e) => Err(ListError::Failed(e.clone())),
        Bundles::NotRead => Err(ListError::Failed(
            "the ClusterTrustBundles were not read".into(),
        )),
    }
}

enum ListError {
    NotServed,
    Failed(String),
}

/// upstream NoopManager's refusal, where the apiserver serves no ClusterTrustBundles (its
/// `ClusterTrustBundle` feature gate and runtime config off): every source fails, optional
/// or not, as upstream's.
fn not_served() -> String {
    "ClusterTrustBundle projection is not supported: the apiserver does not serve \
     certificates.k8s.io/v1beta1 clustertrustbundles"
        .into()
}

/// upstream `GetTrustAnchorsByName`: the normalized anchors of bundle `name`; a missing
/// bundle is no anchors when `allow_missing`, else the lister's NotFound.
pub fn trust_anchors_by_name(
    bundles: &Bundles,
    name: &str,
    allow_missing: bool,
) -> Result<Vec<u8>, String> {
    let all = match listed(bundles) {
        Ok(all) => all,
        Err(ListError::NotServed) => return Err(not_served()),
        Err(ListError::Failed(e)) => return Err(format!("while getting ClusterTrustBundle: {e}")),
    };
    match all
        .iter()
        .find(|b| b.metadata.name.as_deref() == Some(name))
    {
        Some(bundle) => Ok(normalize_trust_anchors([bundle])),
        None if allow_missing => Ok(Vec::new()),
        None => Err(format!(
            "while getting ClusterTrustBundle: clustertrustbundle.certificates.k8s.io \"{name}\" not found"
        )),
    }
}

/// upstream `GetTrustAnchorsBySigner`: the normalized anchors of every bundle of
/// `signer` that `selector` selects (`None`: nothing; `{}`: everything); none is no
/// anchors when `allow_missing`, else an error.
pub fn trust_anchors_by_signer(
    bundles: &Bundles,
    signer: &str,
    selector: Option<&LabelSelector>,
    allow_missing: bool,
) -> Result<Vec<u8>, String> {
    let selector =
        Selector::of(selector).map_err(|e| format!("while parsing label selector: {e}"))?;
    let canonical = selector.to_string();
    if canonical.len() > MAX_LABEL_SELECTOR_LENGTH {
        return Err(format!(
            "label selector length ({}) is larger than {MAX_LABEL_SELECTOR_LENGTH}",
            canonical.len()
        ));
    }
    let all = match listed(bundles) {
        Ok(all) => all,
        Err(ListError::NotServed) => return Err(not_served()),
        Err(ListError::Failed(e)) => {
            return Err(format!(
                "while listing ClusterTrustBundles matching label selector \"{canonical}\": {e}"
            ));
        }
    };
    let chosen: Vec<&ClusterTrustBundle> = all
        .iter()
        .filter(|b| selector.matches(b.metadata.labels.as_ref()))
        .filter(|b| b.spec.signer_name.as_deref().unwrap_or_default() == signer)
        .collect();
    if chosen.is_empty() {
        if allow_missing {
            return Ok(Vec::new());
        }
        return Err(
            "combination of signerName and labelSelector matched zero ClusterTrustBundles".into(),
        );
    }
    Ok(normalize_trust_anchors(chosen))
}

/// upstream `normalizeTrustAnchors`: every PEM block of the bundles' `trustBundle`,
/// deduplicated by content, as `CERTIFICATE` blocks in the order of their bytes (upstream
/// shuffles that order: see the module docs).
pub fn normalize_trust_anchors<'a>(
    bundles: impl IntoIterator<Item = &'a ClusterTrustBundle>,
) -> Vec<u8> {
    let anchors: BTreeSet<Vec<u8>> = bundles
        .into_iter()
        .flat_map(|b| pem_blocks(&b.spec.trust_bundle))
        .collect();
    anchors
        .iter()
        .flat_map(|der| pem_certificate(der).into_bytes())
        .collect()
}

/// The contents of the PEM blocks in `data` (Go's `pem.Decode` in a loop): text between
/// blocks skipped, a block's headers (`Key: value` lines up to a blank line) left out, a
/// block whose body is not base64 or that has no `-----END <type>-----` skipped.
fn pem_blocks(data: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut lines = data.lines().map(|l| l.trim_end());
    while let Some(line) = lines.next() {
        let Some(kind) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        let end = format!("-----END {kind}-----");
        let mut body = String::new();
        let mut ended = false;
        let mut in_headers = true;
        for l in lines.by_ref() {
            if l == end {
                ended = true;
                break;
            }
            if in_headers && l.contains(':') {
                continue;
            }
            in_headers = false;
            body.extend(l.chars().filter(|c| !c.is_whitespace()));
        }
        if !ended {
            break;
        }
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(body) {
            out.push(der);
        }
    }
    out
}

/// A `CERTIFICATE` PEM block of `der` (Go's `pem.EncodeToMemory`: 64 base64 characters a
/// line).
fn pem_certificate(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A label selector's operator (matchLabels' pairs are `Equals`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Equals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted.
    values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::Equals | Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

impl std::fmt::Display for Requirement {
    /// upstream `Requirement.String`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.operator {
            Operator::Equals => write!(f, "{}={}", self.key, self.values.join(",")),
            Operator::In => write!(f, "{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => write!(f, "{} notin ({})", self.key, self.values.join(",")),
            Operator::Exists => write!(f, "{}", self.key),
            Operator::DoesNotExist => write!(f, "!{}", self.key),
        }
    }
}

/// upstream's `labels.Selector` of a `metav1.LabelSelector` (`LabelSelectorAsSelector`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    /// No selector: matches nothing.
    Nothing,
    /// Every requirement must hold (none: matches everything). Sorted by key.
    Requirements(Vec<Requirement>),
}

impl Selector {
    fn of(selector: Option<&LabelSelector>) -> Result<Selector, String> {
        let Some(ls) = selector else {
            return Ok(Selector::Nothing);
        };
        let mut requirements: Vec<Requirement> = Vec::new();
        for (k, v) in ls.match_labels.iter().flatten() {
            requirements.push(Requirement {
                key: k.clone(),
                operator: Operator::Equals,
                values: vec![v.clone()],
            });
        }
        for expr in ls.match_expressions.iter().flatten() {
            let operator = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            let mut values = expr.values.clone().unwrap_or_default();
            match operator {
                Operator::In | Operator::NotIn if values.is_empty() => {
                    return Err(format!(
                        "values: Invalid value: {values:?}: for 'in', 'notin' operators, values set can't be empty"
                    ));
                }
                Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                    return Err(format!(
                        "values: Invalid value: {values:?}: values set must be empty for exists and does not exist"
                    ));
                }
                _ => {}
            }
            values.sort();
            requirements.push(Requirement {
                key: expr.key.clone(),
                operator,
                values,
            });
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Selector::Requirements(requirements))
    }

    fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        let empty = BTreeMap::new();
        let labels = labels.unwrap_or(&empty);
        match self {
            Selector::Nothing => false,
            Selector::Requirements(r) => r.iter().all(|r| r.matches(labels)),
        }
    }
}

impl std::fmt::Display for Selector {
    /// upstream `internalSelector.String` (`Nothing` prints "").
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Selector::Requirements(r) = self {
            for (i, r) in r.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{r}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! After upstream's clustertrustbundle_manager_test.go (`TestGetTrustAnchorsByName`,
    //! `TestGetTrustAnchorsBySignerName`, the caching tests' "yields the new certificate",
    //! `TestLazyInformerManager_ensureManagerSet`'s "API unavailable") and projected.go's
    //! clusterTrustBundle branch. The certificates are PEM blocks of distinct bytes, as
    //! upstream's `mustMakeRoot` certificates are to the manager (it never parses them).

    use super::*;
    use serde_json::json;

    /// A root's PEM (one `CERTIFICATE` block of bytes naming `cn`).
    fn root(cn: &str) -> String {
        pem_certificate(format!("certificate of {cn}").as_bytes())
    }

    fn ctb(name: &str, signer: &str, labels: &[(&str, &str)], bundle: &str) -> ClusterTrustBundle {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"signerName": (!signer.is_empty()).then_some(signer), "trustBundle": bundle},
        }))
        .unwrap()
    }

    fn selector(json: serde_json::Value) -> LabelSelector {
        serde_json::from_value(json).unwrap()
    }

    /// The anchors as text, for readable failures.
    fn text(got: Result<Vec<u8>, String>) -> Result<String, String> {
        got.map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn get_trust_anchors_by_name() {
        let (r1, r2) = (root("root1"), root("root2"));
        let bundles = Bundles::Listed(vec![ctb("ctb1", "", &[], &r1), ctb("ctb2", "", &[], &r2)]);
        assert_eq!(text(trust_anchors_by_name(&bundles, "ctb1", false)), Ok(r1));
        assert_eq!(text(trust_anchors_by_name(&bundles, "ctb2", false)), Ok(r2));
        assert_eq!(
            text(trust_anchors_by_name(&bundles, "not-found", false)),
            Err(
                "while getting ClusterTrustBundle: clustertrustbundle.certificates.k8s.io \"not-found\" not found"
                    .into()
            )
        );
        assert_eq!(
            text(trust_anchors_by_name(&bundles, "not-found", true)),
            Ok(String::new())
        );
    }

    /// upstream's caching tests, without the cache: the bundle deleted and made again with
    /// another certificate yields the new one at the next read.
    #[test]
    fn a_replaced_bundle_yields_the_new_certificate() {
        let (r1, r2) = (root("root1"), root("root2"));
        let before = Bundles::Listed(vec![ctb("foo", "", &[], &r1)]);
        let after = Bundles::Listed(vec![ctb("foo", "", &[], &r2)]);
        assert_eq!(
            text(trust_anchors_by_name(&before, "foo", false)),
            Ok(r1.clone())
        );
        assert_eq!(
            text(trust_anchors_by_name(&after, "foo", false)),
            Ok(r2.clone())
        );
        let label_a = selector(json!({"matchLabels": {"label": "a"}}));
        let before = Bundles::Listed(vec![ctb(
            "signer-a-label-a-1",
            "foo.bar/a",
            &[("label", "a")],
            &r1,
        )]);
        let after = Bundles::Listed(vec![ctb(
            "signer-a-label-a-2",
            "foo.bar/a",
            &[("label", "a")],
            &r2,
        )]);
        assert_eq!(
            text(trust_anchors_by_signer(
                &before,
                "foo.bar/a",
                Some(&label_a),
                false
            )),
            Ok(r1)
        );
        assert_eq!(
            text(trust_anchors_by_signer(
                &after,
                "foo.bar/a",
                Some(&label_a),
                false
            )),
            Ok(r2)
        );
    }

    #[test]
    fn get_trust_anchors_by_signer_name() {
        let (r0, r1, r2, r3) = (root("0"), root("1"), root("2"), root("3"));
        let bundles = Bundles::Listed(vec![
            ctb("signer-a-label-a-1", "foo.bar/a", &[("label", "a")], &r0),
            ctb("signer-a-label-a-2", "foo.bar/a", &[("label", "a")], &r1),
            ctb("signer-a-label-2-dup", "foo.bar/a", &[("label", "a")], &r1),
            ctb("signer-a-label-b-1", "foo.bar/a", &[("label", "b")], &r2),
            ctb("signer-b-label-a-1", "foo.bar/b", &[("label", "a")], &r3),
        ]);
        let label = |v: &str| Some(selector(json!({"matchLabels": {"label": v}})));
        let long_value = "v".repeat(63);
        let big: BTreeMap<String, String> = (0..100 * 1024 / 63 + 1)
            .map(|i| (format!("key-{i}"), long_value.clone()))
            .collect();
        let big = Some(selector(json!({ "matchLabels": big })));
        let zero = "combination of signerName and labelSelector matched zero ClusterTrustBundles";
        /// Name, signer, selector, optional, the anchors or the error's start.
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<LabelSelector>,
            bool,
            Result<String, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (
                "big labelselector should cause error",
                "foo.bar/a",
                big,
                false,
                Err("label selector length"),
            ),
            (
                "signer-a label-a should yield two sorted certificates",
                "foo.bar/a",
                label("a"),
                false,
                Ok(r0.clone() + &r1),
            ),
            (
                "signer-a with nil selector should yield zero certificates",
                "foo.bar/a",
                None,
                true,
                Ok(String::new()),
            ),
            (
                "signer-b with empty selector should yield one certificates",
                "foo.bar/b",
                Some(LabelSelector::default()),
                false,
                Ok(r3.clone()),
            ),
            (
                "signer-a label-b should yield one certificate",
                "foo.bar/a",
                label("b"),
                false,
                Ok(r2.clone()),
            ),
            (
                "signer-b label-a should yield one certificate",
                "foo.bar/b",
                label("a"),
                false,
                Ok(r3.clone()),
            ),
            (
                "signer-b label-b allowMissing=true should yield zero certificates",
                "foo.bar/b",
                label("b"),
                true,
                Ok(String::new()),
            ),
            (
                "signer-b label-b allowMissing=false should yield zero certificates (error)",
                "foo.bar/b",
                label("b"),
                false,
                Err(zero),
            ),
            // rekube's: a nil selector without optional is an error; expressions.
            (
                "signer-a with nil selector, not optional",
                "foo.bar/a",
                None,
                false,
                Err(zero),
            ),
            (
                "signer-a label notin (a)",
                "foo.bar/a",
                Some(selector(
                    json!({"matchExpressions": [{"key": "label", "operator": "NotIn", "values": ["a"]}]}),
                )),
                false,
                Ok(r2.clone()),
            ),
            (
                "signer-a label exists",
                "foo.bar/a",
                Some(selector(
                    json!({"matchExpressions": [{"key": "label", "operator": "Exists"}]}),
                )),
                false,
                Ok(r0.clone() + &r1 + &r2),
            ),
            (
                "an invalid operator",
                "foo.bar/a",
                Some(selector(
                    json!({"matchExpressions": [{"key": "label", "operator": "Near"}]}),
                )),
                true,
                Err(
                    "while parsing label selector: \"Near\" is not a valid label selector operator",
                ),
            ),
        ];
        for (name, signer, sel, allow_missing, want) in cases {
            let got = text(trust_anchors_by_signer(
                &bundles,
                signer,
                sel.as_ref(),
                allow_missing,
            ));
            match want {
                Ok(want) => assert_eq!(got, Ok(want), "{name}"),
                Err(want) => {
                    let e = got.expect_err(name);
                    assert!(e.starts_with(want), "{name}: {e}");
                }
            }
        }
    }

    /// The anchors are sorted by their bytes whatever the bundles' order, duplicates once,
    /// text around and headers in the blocks dropped, every block re-encoded as a
    /// CERTIFICATE of 64-character lines.
    #[test]
    fn normalized_anchors_are_deduplicated_sorted_and_reencoded() {
        let long = vec![7u8; 100];
        let b1 = ctb(
            "x",
            "",
            &[],
            &format!(
                "comment\n{}{}",
                root("b"),
                pem_certificate(&long).replace("CERTIFICATE", "TRUSTED CERTIFICATE")
            ),
        );
        let b2 = ctb("y", "", &[], &format!("{}\r\n{}", root("a"), root("b")));
        let with_headers = ctb(
            "z",
            "",
            &[],
            "-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\n\nY2VydGlmaWNhdGUgb2YgYw==\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        );
        let got = String::from_utf8(normalize_trust_anchors([&b1, &b2, &with_headers])).unwrap();
        let want = pem_certificate(&long) + &root("a") + &root("b") + &root("c");
        assert_eq!(got, want);
        let long_pem = pem_certificate(&long);
        let lines: Vec<&str> = long_pem.lines().collect();
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.len(), 2 + 136usize.div_ceil(64));
        assert_eq!(pem_blocks(&long_pem), [long]);
    }

    #[test]
    fn selector_canonical_form_is_upstreams() {
        let sel = selector(json!({
            "matchLabels": {"b": "1", "a": "2"},
            "matchExpressions": [
                {"key": "c", "operator": "In", "values": ["y", "x"]},
                {"key": "d", "operator": "NotIn", "values": ["z"]},
                {"key": "e", "operator": "Exists"},
                {"key": "f", "operator": "DoesNotExist"},
            ],
        }));
        assert_eq!(
            Selector::of(Some(&sel)).unwrap().to_string(),
            "a=2,b=1,c in (x,y),d notin (z),e,!f"
        );
        assert_eq!(Selector::of(None).unwrap().to_string(), "");
        assert!(!Selector::of(None).unwrap().matches(None));
        assert!(
            Selector::of(Some(&LabelSelector::default()))
                .unwrap()
                .matches(None)
        );
        let bad = selector(json!({"matchExpressions": [{"key": "c", "operator": "In"}]}));
        assert_eq!(
            Selector::of(Some(&bad)).unwrap_err(),
            "values: Invalid value: []: for 'in', 'notin' operators, values set can't be empty"
        );
    }

    /// The source's choice (projected.go): by name before signer, neither an error; an
    /// apiserver that serves no ClusterTrustBundles fails every source, optional too
    /// (upstream's NoopManager, "API unavailable"); a failed list names the read.
    #[test]
    fn the_sources_choice_and_the_apis_absence() {
        let r1 = root("root1");
        let bundles = Bundles::Listed(vec![ctb(
            "example.com:signer:a",
            "example.com/signer",
            &[("k", "v")],
            &r1,
        )]);
        let projection = |json: serde_json::Value| -> ClusterTrustBundleProjection {
            serde_json::from_value(json).unwrap()
        };
        let by_name = projection(
            json!({"path": "p", "name": "example.com:signer:a", "signerName": "other/x"}),
        );
        assert_eq!(text(trust_anchors(&by_name, &bundles)), Ok(r1.clone()));
        let by_signer = projection(
            json!({"path": "p", "signerName": "example.com/signer", "labelSelector": {}}),
        );
        assert_eq!(text(trust_anchors(&by_signer, &bundles)), Ok(r1));
        assert_eq!(
            text(trust_anchors(&projection(json!({"path": "p"})), &bundles)),
            Err(
                "ClusterTrustBundle projection requires either name or signerName to be set".into()
            )
        );
        let optional = projection(json!({"path": "p", "name": "gone", "optional": true}));
        let not_served = "ClusterTrustBundle projection is not supported: the apiserver does not serve certificates.k8s.io/v1beta1 clustertrustbundles";
        assert_eq!(
            text(trust_anchors(&optional, &Bundles::NotServed)),
            Err(not_served.into())
        );
        assert_eq!(
            text(trust_anchors(&by_signer, &Bundles::NotServed)),
            Err(not_served.into())
        );
        let failed = Bundles::Failed("forbidden".into());
        assert_eq!(
            text(trust_anchors(&optional, &failed)),
            Err("while getting ClusterTrustBundle: forbidden".into())
        );
        assert_eq!(
            text(trust_anchors(&by_signer, &failed)),
            Err("while listing ClusterTrustBundles matching label selector \"\": forbidden".into())
        );
    }
}
