//! Label selectors (upstream: apimachinery `pkg/labels/selector.go` and
//! `pkg/apis/meta/v1/helpers.go`).
//!
//! [`label_selector_as_selector`] turns a `metav1.LabelSelector` into a [`Selector`] exactly
//! as `metav1.LabelSelectorAsSelector` does: a missing selector selects nothing, an empty one
//! (`{}`) selects everything, otherwise every `matchLabels` pair and every `matchExpressions`
//! entry must hold. Keys and values are validated as `labels.NewRequirement` validates them,
//! and [`Selector`]'s `Display` is upstream's canonical `String()` form
//! (`"a=b,c in (x,y),!d,e"`, requirements sorted by key, `in`/`notin` values sorted).
use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Errors building a selector (upstream: the `field.ErrorList` of `labels.NewRequirement` and
/// the operator check of `metav1.LabelSelectorAsSelector`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error(
        "label selector operator {operator:?} for key {key:?} is not a valid label selector operator"
    )]
    InvalidOperator { key: String, operator: String },
    #[error("label selector key {key:?} is invalid: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("label selector value {value:?} for key {key:?} is invalid: {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error("label selector requirement on key {key:?} has invalid values: {reason}")]
    InvalidValues { key: String, reason: String },
}

/// A selection operator (upstream: `k8s.io/apimachinery/pkg/selection.Operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

/// One requirement of a selector (upstream: `labels.Requirement`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

impl Requirement {
    /// Builds and validates a requirement (upstream: `labels.NewRequirement`).
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Self, LabelError> {
        let key = key.into();
        validate_label_key(&key)?;
        match operator {
            Operator::In | Operator::NotIn => {
                if values.is_empty() {
                    return Err(LabelError::InvalidValues {
                        key,
                        reason: "for 'in', 'notin' operators, values set can't be empty".into(),
                    });
                }
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals => {
                if values.len() != 1 {
                    return Err(LabelError::InvalidValues {
                        key,
                        reason: "exact-match compatibility requires one single value".into(),
                    });
                }
            }
            Operator::Exists | Operator::DoesNotExist => {
                if !values.is_empty() {
                    return Err(LabelError::InvalidValues {
                        key,
                        reason: "values set must be empty for exists and does not exist".into(),
                    });
                }
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    return Err(LabelError::InvalidValues {
                        key,
                        reason: "for 'Gt', 'Lt' operators, exactly one value is required".into(),
                    });
                }
                if values[0].parse::<i64>().is_err() {
                    return Err(LabelError::InvalidValues {
                        key,
                        reason: "for 'Gt', 'Lt' operators, the value must be an integer".into(),
                    });
                }
            }
        }
        for value in &values {
            validate_label_value(&key, value)?;
        }
        // Kept sorted so that equal requirements compare equal; upstream sorts on output only,
        // and neither matching nor the string form depends on the order.
        let mut values = values;
        values.sort_unstable();
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn has_value(&self, value: &str) -> bool {
        self.values.iter().any(|v| v == value)
    }

    /// Whether the labels satisfy this requirement (upstream: `Requirement.Matches`).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| self.has_value(v))
            }
            Operator::NotIn | Operator::NotEquals => value.is_none_or(|v| !self.has_value(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(Ok(have)) = value.map(|v| v.parse::<i64>()) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    /// Upstream: `Requirement.String`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
        };
        f.write_str(op)?;
        let parens = matches!(self.operator, Operator::In | Operator::NotIn);
        if parens {
            f.write_str("(")?;
        }
        // Upstream normalizes the value order on output (safeSort) and keeps duplicates.
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        if parens {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector (upstream: `labels.Selector`: `internalSelector`, or the
/// `nothingSelector` returned for a missing `metav1.LabelSelector`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Matches no object (upstream: `labels.Nothing()`).
    Nothing,
    /// Matches objects satisfying every requirement; no requirement matches everything
    /// (upstream: `internalSelector`, `labels.Everything()` when empty). Kept sorted by key.
    Requirements(Vec<Requirement>),
}

impl Selector {
    /// The selector matching every object (upstream: `labels.Everything`).
    pub fn everything() -> Self {
        Selector::Requirements(Vec::new())
    }

    /// Builds a selector from requirements, sorted by key as upstream's `Selector.Add` does.
    pub fn from_requirements(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Selector::Requirements(requirements)
    }

    /// Whether the labels (None = no labels) satisfy the selector (upstream: `Selector.Matches`).
    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        let labels = labels.unwrap_or(&EMPTY);
        match self {
            Selector::Nothing => false,
            Selector::Requirements(reqs) => reqs.iter().all(|r| r.matches(labels)),
        }
    }

    /// Whether the selector has no requirement (upstream: `Selector.Empty`; true for
    /// `Everything`, false for `Nothing`).
    pub fn is_empty(&self) -> bool {
        matches!(self, Selector::Requirements(r) if r.is_empty())
    }

    pub fn requirements(&self) -> &[Requirement] {
        match self {
            Selector::Nothing => &[],
            Selector::Requirements(r) => r,
        }
    }
}

impl fmt::Display for Selector {
    /// Upstream: `internalSelector.String` (requirements joined by `,`); `Nothing` prints "".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Converts a `metav1.LabelSelector` into a [`Selector`] (upstream:
/// `metav1.LabelSelectorAsSelector`): `None` selects nothing, `{}` selects everything.
pub fn label_selector_as_selector(
    selector: Option<&LabelSelector>,
) -> Result<Selector, LabelError> {
    let Some(ls) = selector else {
        return Ok(Selector::Nothing);
    };
    let match_labels = ls.match_labels.as_ref();
    let match_expressions = ls.match_expressions.as_deref().unwrap_or_default();
    if match_labels.is_none_or(BTreeMap::is_empty) && match_expressions.is_empty() {
        return Ok(Selector::everything());
    }
    let mut requirements = Vec::new();
    for (k, v) in match_labels.into_iter().flatten() {
        requirements.push(Requirement::new(
            k.clone(),
            Operator::Equals,
            vec![v.clone()],
        )?);
    }
    for expr in match_expressions {
        let operator = match expr.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                return Err(LabelError::InvalidOperator {
                    key: expr.key.clone(),
                    operator: other.to_string(),
                });
            }
        };
        requirements.push(Requirement::new(
            expr.key.clone(),
            operator,
            expr.values.clone().unwrap_or_default(),
        )?);
    }
    Ok(Selector::from_requirements(requirements))
}

/// Whether `labels` satisfy the label selector; an invalid selector matches nothing, as
/// upstream callers treat a conversion error (upstream: `LabelSelectorAsSelector` + `Matches`).
pub fn selector_matches(
    selector: Option<&LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    label_selector_as_selector(selector).is_ok_and(|s| s.matches(labels))
}

/// Upstream's canonical string of a label selector (`LabelSelectorAsSelector(s).String()`),
/// e.g. `"a=b,c in (x,y),!d,e"`; `""` for the empty selector, `"<error>"` for an invalid one
/// (as `metav1.FormatLabelSelector` reports it).
pub fn selector_to_string(selector: &LabelSelector) -> String {
    match label_selector_as_selector(Some(selector)) {
        Ok(s) => s.to_string(),
        Err(_) => "<error>".to_string(),
    }
}

/// Upstream: `metav1.FormatLabelSelector`: like [`selector_to_string`] but `"<none>"` for a
/// selector without requirements.
pub fn format_label_selector(selector: Option<&LabelSelector>) -> String {
    match label_selector_as_selector(selector) {
        Err(_) => "<error>".to_string(),
        Ok(s) => {
            let out = s.to_string();
            if out.is_empty() {
                "<none>".to_string()
            } else {
                out
            }
        }
    }
}

/// Whether every `key=value` of `set` is among `labels` (upstream:
/// `labels.SelectorFromSet(set).Matches` / `Set.AsSelectorPreValidated`); an empty set
/// matches everything.
pub fn set_matches(
    set: Option<&BTreeMap<String, String>>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    set.into_iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

const QUALIFIED_NAME_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const LABEL_VALUE_MAX: usize = 63;

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_qualified_name_part(s: &str) -> bool {
    let (Some(first), Some(last)) = (s.chars().next(), s.chars().last()) else {
        return false;
    };
    is_alnum(first)
        && is_alnum(last)
        && s.chars()
            .all(|c| is_alnum(c) || c == '-' || c == '_' || c == '.')
}

/// Upstream: `validation.IsDNS1123Subdomain`.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    if s.is_empty() || s.len() > DNS1123_SUBDOMAIN_MAX {
        return false;
    }
    s.split('.').all(|label| {
        let (Some(first), Some(last)) = (label.chars().next(), label.chars().last()) else {
            return false;
        };
        let lower_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        lower_alnum(first) && lower_alnum(last) && label.chars().all(|c| lower_alnum(c) || c == '-')
    })
}

/// Upstream: `validation.IsQualifiedName` (label keys).
fn validate_label_key(key: &str) -> Result<(), LabelError> {
    let invalid = |reason: &str| LabelError::InvalidKey {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let parts: Vec<&str> = key.split('/').collect();
    let name = match parts.as_slice() {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                return Err(invalid("prefix part must be non-empty"));
            }
            if !is_dns1123_subdomain(prefix) {
                return Err(invalid(
                    "prefix part must be a lowercase RFC 1123 subdomain of at most 253 characters",
                ));
            }
            name
        }
        _ => {
            return Err(invalid(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', with an optional DNS subdomain prefix and '/'",
            ));
        }
    };
    if name.is_empty() {
        return Err(invalid("name part must be non-empty"));
    }
    if name.len() > QUALIFIED_NAME_MAX {
        return Err(invalid("name part must be no more than 63 characters"));
    }
    if !is_qualified_name_part(name) {
        return Err(invalid(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        ));
    }
    Ok(())
}

/// Upstream: `validation.IsValidLabelValue`.
fn validate_label_value(key: &str, value: &str) -> Result<(), LabelError> {
    let invalid = |reason: &str| LabelError::InvalidValue {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    if value.len() > LABEL_VALUE_MAX {
        return Err(invalid("must be no more than 63 characters"));
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        return Err(invalid(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::type_complexity)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, op: Operator, values: &[&str]) -> Requirement {
        Requirement::new(key, op, values.iter().map(|v| v.to_string()).collect())
            .unwrap_or_else(|e| panic!("requirement {key}: {e}"))
    }

    /// A small parser for the selector syntax used by upstream's tests
    /// (`x=y`, `x!=y`, `x==y`, `x in (a,b)`, `x notin (a)`, `x`, `!x`, `x>1`, `x<1`).
    fn parse(s: &str) -> Selector {
        if s.is_empty() {
            return Selector::everything();
        }
        let mut reqs = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            // split at the next comma outside parentheses
            let mut depth = 0;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' if depth == 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let term = rest[..end].trim();
            rest = if end < rest.len() {
                &rest[end + 1..]
            } else {
                ""
            };
            let r = if let Some(k) = term.strip_prefix('!') {
                req(k, Operator::DoesNotExist, &[])
            } else if let Some((k, v)) = term.split_once(" notin ") {
                let v = v.trim().trim_start_matches('(').trim_end_matches(')');
                req(k.trim(), Operator::NotIn, &v.split(',').collect::<Vec<_>>())
            } else if let Some((k, v)) = term.split_once(" in ") {
                let v = v.trim().trim_start_matches('(').trim_end_matches(')');
                req(k.trim(), Operator::In, &v.split(',').collect::<Vec<_>>())
            } else if let Some((k, v)) = term.split_once("!=") {
                req(k, Operator::NotEquals, &[v])
            } else if let Some((k, v)) = term.split_once("==") {
                req(k, Operator::DoubleEquals, &[v])
            } else if let Some((k, v)) = term.split_once('=') {
                req(k, Operator::Equals, &[v])
            } else if let Some((k, v)) = term.split_once('>') {
                req(k, Operator::GreaterThan, &[v])
            } else if let Some((k, v)) = term.split_once('<') {
                req(k, Operator::LessThan, &[v])
            } else {
                req(term, Operator::Exists, &[])
            };
            reqs.push(r);
        }
        Selector::from_requirements(reqs)
    }

    // Port of selector_test.go TestSelectorMatches.
    #[test]
    fn selector_matches_table() {
        let cases: &[(&str, &[(&str, &str)], bool)] = &[
            ("", &[("x", "y")], true),
            ("x=y", &[("x", "y")], true),
            ("x=y,z=w", &[("x", "y"), ("z", "w")], true),
            ("x!=y,z!=w", &[("x", "z"), ("z", "a")], true),
            ("notin=in", &[("notin", "in")], true),
            ("x", &[("x", "z")], true),
            ("!x", &[("y", "z")], true),
            ("x>1", &[("x", "2")], true),
            ("x<1", &[("x", "0")], true),
            ("x=z", &[], false),
            ("x=y", &[("x", "z")], false),
            ("x=y,z=w", &[("x", "w"), ("z", "w")], false),
            ("x!=y,z!=w", &[("x", "z"), ("z", "w")], false),
            ("x", &[("y", "z")], false),
            ("!x", &[("x", "z")], false),
            ("x>1", &[("x", "0")], false),
            ("x<1", &[("x", "2")], false),
            ("foo=bar", &[("foo", "bar"), ("baz", "blah")], true),
            ("baz=blah", &[("foo", "bar"), ("baz", "blah")], true),
            ("foo=bar,baz=blah", &[("foo", "bar"), ("baz", "blah")], true),
            ("foo=blah", &[("foo", "bar"), ("baz", "blah")], false),
            ("baz=bar", &[("foo", "bar"), ("baz", "blah")], false),
            (
                "foo=bar,foobar=bar,baz=blah",
                &[("foo", "bar"), ("baz", "blah")],
                false,
            ),
        ];
        for (sel, labels, want) in cases {
            let l = set(labels);
            assert_eq!(parse(sel).matches(Some(&l)), *want, "{sel:?} on {labels:?}");
        }
    }

    // Port of selector_test.go TestRequirementSelectorMatching.
    #[test]
    fn requirement_selector_matching() {
        let cases: Vec<(BTreeMap<String, String>, Vec<Requirement>, bool)> = vec![
            (
                set(&[("x", "foo"), ("y", "baz")]),
                vec![
                    req("x", Operator::In, &["foo"]),
                    req("y", Operator::NotIn, &["alpha"]),
                ],
                true,
            ),
            (
                set(&[("x", "foo"), ("y", "baz")]),
                vec![
                    req("x", Operator::In, &["foo"]),
                    req("y", Operator::In, &["alpha"]),
                ],
                false,
            ),
            (
                set(&[("y", "")]),
                vec![
                    req("x", Operator::NotIn, &[""]),
                    req("y", Operator::Exists, &[]),
                ],
                true,
            ),
            (
                set(&[("y", "")]),
                vec![
                    req("x", Operator::DoesNotExist, &[]),
                    req("y", Operator::Exists, &[]),
                ],
                true,
            ),
            (
                set(&[("y", "")]),
                vec![
                    req("x", Operator::NotIn, &[""]),
                    req("y", Operator::DoesNotExist, &[]),
                ],
                false,
            ),
            (
                set(&[("y", "baz")]),
                vec![req("x", Operator::In, &[""])],
                false,
            ),
            (
                set(&[("z", "2")]),
                vec![req("z", Operator::GreaterThan, &["1"])],
                true,
            ),
            (
                set(&[("z", "v2")]),
                vec![req("z", Operator::GreaterThan, &["1"])],
                false,
            ),
        ];
        for (labels, reqs, want) in cases {
            let s = Selector::from_requirements(reqs);
            assert_eq!(s.matches(Some(&labels)), want, "{s} on {labels:?}");
        }
    }

    // Port of selector_test.go TestRequirementConstructor (operators metav1 can express,
    // plus Gt/Lt).
    #[test]
    fn requirement_constructor() {
        let long_key = "a".repeat(254);
        let long_value = "a".repeat(64);
        let cases: Vec<(&str, Operator, Vec<&str>, bool)> = vec![
            ("x1", Operator::In, vec![], false),
            ("x2", Operator::NotIn, vec![], false),
            ("x3", Operator::In, vec!["foo"], true),
            ("x4", Operator::NotIn, vec!["foo"], true),
            ("x5", Operator::Equals, vec!["foo", "bar"], false),
            ("x6", Operator::Exists, vec![], true),
            ("x7", Operator::DoesNotExist, vec![], true),
            ("x8", Operator::Exists, vec!["foo"], false),
            ("x9", Operator::In, vec!["bar"], true),
            ("x10", Operator::In, vec!["bar"], true),
            ("x11", Operator::GreaterThan, vec!["1"], true),
            ("x12", Operator::LessThan, vec!["6"], true),
            ("x13", Operator::GreaterThan, vec![], false),
            ("x14", Operator::GreaterThan, vec!["bar"], false),
            ("x15", Operator::LessThan, vec!["bar"], false),
            (long_key.as_str(), Operator::Exists, vec![], false),
            ("x16", Operator::Equals, vec![long_value.as_str()], false),
            ("x17", Operator::Equals, vec!["a b"], false),
            ("x18", Operator::Equals, vec!["-a"], false),
            ("1foo", Operator::In, vec!["bar"], true),
            ("1234", Operator::In, vec!["bar"], true),
            ("y.io/z", Operator::In, vec!["bar"], true),
            ("Y.io/z", Operator::In, vec!["bar"], false),
            ("/z", Operator::In, vec!["bar"], false),
            ("a/b/c", Operator::In, vec!["bar"], false),
            ("z_", Operator::Exists, vec![], false),
            ("", Operator::Exists, vec![], false),
            ("x19", Operator::In, vec![""], true),
        ];
        for (key, op, values, ok) in cases {
            let got = Requirement::new(key, op, values.iter().map(|v| v.to_string()).collect());
            assert_eq!(got.is_ok(), ok, "{key:?} {op:?} {values:?}: {got:?}");
        }
    }

    // Port of selector_test.go TestToString.
    #[test]
    fn to_string_table() {
        let cases: Vec<(Vec<Requirement>, &str)> = vec![
            (
                vec![
                    req("x", Operator::In, &["abc", "def"]),
                    req("y", Operator::NotIn, &["jkl"]),
                    req("z", Operator::Exists, &[]),
                ],
                "x in (abc,def),y notin (jkl),z",
            ),
            (
                vec![
                    req("x", Operator::NotIn, &["abc", "def"]),
                    req("y", Operator::NotEquals, &["jkl"]),
                    req("z", Operator::DoesNotExist, &[]),
                ],
                "x notin (abc,def),y!=jkl,!z",
            ),
            (
                vec![
                    req("x", Operator::NotIn, &["abc"]),
                    req("y", Operator::In, &["jkl", "mno"]),
                    req("z", Operator::NotIn, &[""]),
                ],
                "x notin (abc),y in (jkl,mno),z notin ()",
            ),
            (
                vec![
                    req("x", Operator::Equals, &["abc"]),
                    req("y", Operator::DoubleEquals, &["jkl"]),
                    req("z", Operator::NotEquals, &["a"]),
                    req("z", Operator::Exists, &[]),
                ],
                "x=abc,y==jkl,z!=a,z",
            ),
            (
                vec![
                    req("x", Operator::GreaterThan, &["2"]),
                    req("y", Operator::LessThan, &["8"]),
                    req("z", Operator::Exists, &[]),
                ],
                "x>2,y<8,z",
            ),
            (
                vec![req("x", Operator::In, &["def", "abc", "abc"])],
                "x in (abc,abc,def)",
            ),
        ];
        for (reqs, want) in cases {
            assert_eq!(Selector::from_requirements(reqs).to_string(), want);
        }
    }

    // Port of helpers_test.go TestLabelSelectorAsSelector.
    #[test]
    fn label_selector_as_selector_table() {
        let match_labels = Some(set(&[("foo", "bar")]));
        let match_expressions = Some(vec![LabelSelectorRequirement {
            key: "baz".into(),
            operator: "In".into(),
            values: Some(vec!["qux".into(), "norf".into()]),
        }]);
        let cases: Vec<(Option<LabelSelector>, Option<Selector>)> = vec![
            (None, Some(Selector::Nothing)),
            (Some(LabelSelector::default()), Some(Selector::everything())),
            (
                Some(LabelSelector {
                    match_labels: match_labels.clone(),
                    ..Default::default()
                }),
                Some(parse("foo=bar")),
            ),
            (
                Some(LabelSelector {
                    match_expressions: match_expressions.clone(),
                    ..Default::default()
                }),
                Some(parse("baz in (norf,qux)")),
            ),
            (
                Some(LabelSelector {
                    match_labels: match_labels.clone(),
                    match_expressions: match_expressions.clone(),
                }),
                Some(parse("baz in (norf,qux),foo=bar")),
            ),
            (
                Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "baz".into(),
                        operator: "Exists".into(),
                        values: Some(vec!["qux".into(), "norf".into()]),
                    }]),
                    ..Default::default()
                }),
                None,
            ),
            (
                Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "baz".into(),
                        operator: "Gt".into(),
                        values: Some(vec!["1".into()]),
                    }]),
                    ..Default::default()
                }),
                None,
            ),
        ];
        for (input, want) in cases {
            let got = label_selector_as_selector(input.as_ref());
            match want {
                Some(want) => {
                    let got = got.unwrap_or_else(|e| panic!("{input:?}: {e}"));
                    assert_eq!(got.to_string(), want.to_string(), "{input:?}");
                    assert_eq!(got, want, "{input:?}");
                }
                None => assert!(got.is_err(), "{input:?} should fail, got {got:?}"),
            }
        }
    }

    #[test]
    fn nil_matches_nothing_empty_matches_everything() {
        let labels = set(&[("any", "label")]);
        assert!(!selector_matches(None, Some(&labels)));
        assert!(!selector_matches(None, None));
        assert!(selector_matches(
            Some(&LabelSelector::default()),
            Some(&labels)
        ));
        assert!(selector_matches(Some(&LabelSelector::default()), None));
        let empty_maps = LabelSelector {
            match_labels: Some(BTreeMap::new()),
            match_expressions: Some(vec![]),
        };
        assert!(selector_matches(Some(&empty_maps), None));
        assert!(Selector::everything().is_empty());
        assert!(!Selector::Nothing.is_empty());
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: Some(set(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["db".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
                LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "Exists".into(),
                    values: Some(vec![]),
                },
            ]),
        };
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[("app", "web"), ("env", "prod")], true),
            (&[("app", "web"), ("env", "prod"), ("tier", "front")], true),
            (&[("app", "web"), ("env", "prod"), ("tier", "db")], false),
            (&[("app", "web"), ("env", "prod"), ("canary", "")], false),
            (&[("app", "web")], false),
            (&[("app", "api"), ("env", "prod")], false),
        ];
        for (labels, want) in cases {
            assert_eq!(
                selector_matches(Some(&sel), Some(&set(labels))),
                *want,
                "{labels:?}"
            );
        }
        assert_eq!(
            selector_to_string(&sel),
            "app=web,!canary,env,tier notin (db)"
        );
        // invalid selector: matches nothing, prints <error>
        let bad = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "a".into(),
                operator: "In".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(!selector_matches(Some(&bad), Some(&set(&[("a", "b")]))));
        assert_eq!(selector_to_string(&bad), "<error>");
        assert!(matches!(
            label_selector_as_selector(Some(&bad)),
            Err(LabelError::InvalidValues { .. })
        ));
    }

    #[test]
    fn canonical_string_is_sorted() {
        let sel = LabelSelector {
            match_labels: Some(set(&[("z", "1"), ("a", "b")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "c".into(),
                    operator: "In".into(),
                    values: Some(vec!["y".into(), "x".into()]),
                },
                LabelSelectorRequirement {
                    key: "d".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
                LabelSelectorRequirement {
                    key: "e".into(),
                    operator: "Exists".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(selector_to_string(&sel), "a=b,c in (x,y),!d,e,z=1");
        assert_eq!(selector_to_string(&LabelSelector::default()), "");
        assert_eq!(
            format_label_selector(Some(&LabelSelector::default())),
            "<none>"
        );
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(format_label_selector(Some(&sel)), "a=b,c in (x,y),!d,e,z=1");
    }

    #[test]
    fn set_matches_table() {
        let template = set(&[("name", "foo"), ("type", "production")]);
        assert!(set_matches(Some(&template), Some(&template)));
        assert!(set_matches(
            Some(&template),
            Some(&set(&[
                ("name", "foo"),
                ("type", "production"),
                ("extra", "x")
            ]))
        ));
        assert!(!set_matches(
            Some(&template),
            Some(&set(&[("name", "foo")]))
        ));
        assert!(!set_matches(Some(&template), None));
        assert!(set_matches(None, None));
        assert!(set_matches(
            Some(&BTreeMap::new()),
            Some(&set(&[("a", "b")]))
        ));
    }

    #[test]
    fn dns1123_subdomain() {
        assert!(is_dns1123_subdomain("a"));
        assert!(is_dns1123_subdomain("a.b-c.d"));
        assert!(is_dns1123_subdomain(&"a".repeat(253)));
        assert!(!is_dns1123_subdomain(&"a".repeat(254)));
        assert!(!is_dns1123_subdomain("a-"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(!is_dns1123_subdomain("A"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain(""));
    }
}
