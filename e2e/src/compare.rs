//! Comparing JSON objects field by field, with the differing paths as the result.
use serde_json::Value;

/// Paths at which `actual` lacks or changes a value that `expected` has. Fields only in
/// `actual` (server-side defaults, metadata) are allowed.
pub fn missing_or_changed(expected: &Value, actual: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_subset(expected, actual, String::new(), &mut out);
    out
}

fn walk_subset(expected: &Value, actual: &Value, path: String, out: &mut Vec<String>) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                match a.get(k) {
                    Some(av) => walk_subset(ev, av, format!("{path}.{k}"), out),
                    None => out.push(format!("{path}.{k}: missing (expected {ev})")),
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                walk_subset(ev, av, format!("{path}[{i}]"), out);
            }
        }
        _ if expected == actual => {}
        _ => out.push(format!("{path}: expected {expected}, got {actual}")),
    }
}

/// Every path where `a` and `b` differ, both ways.
pub fn differences(a: &Value, b: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_diff(a, b, String::new(), &mut out);
    out
}

fn walk_diff(a: &Value, b: &Value, path: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(xv), Some(yv)) => walk_diff(xv, yv, p, out),
                    (Some(_), None) | (None, Some(_)) => out.push(p),
                    (None, None) => unreachable!(),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (xv, yv)) in x.iter().zip(y).enumerate() {
                walk_diff(xv, yv, format!("{path}[{i}]"), out);
            }
        }
        _ if a == b => {}
        _ => out.push(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_reports_missing_and_changed_fields() {
        let expected = json!({"a": 1, "b": {"c": [1, 2]}, "d": "x"});
        let actual = json!({"a": 1, "b": {"c": [1, 3]}, "e": true});
        assert_eq!(
            missing_or_changed(&expected, &actual),
            vec![".b.c[1]: expected 2, got 3", ".d: missing (expected \"x\")"]
        );
        assert!(missing_or_changed(&json!({"a": 1}), &json!({"a": 1, "z": 2})).is_empty());
    }

    #[test]
    fn differences_go_both_ways() {
        let a = json!({"a": 1, "b": [1], "only_a": 0});
        let b = json!({"a": 2, "b": [1, 2], "only_b": 0});
        assert_eq!(differences(&a, &b), vec![".a", ".b", ".only_a", ".only_b"]);
    }
}
