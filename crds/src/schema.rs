//! OpenAPI v3 schemas for the CRDs, derived from the upstream k8s-openapi types.
//!
//! The upstream type's schema is generated with schemars, made structural with kube's
//! rewriters, and then shaped like apiextensions wants a CRD root: `metadata` becomes a
//! bare object, `nullable` is dropped (upstream's built-in types prune nulls rather than
//! keep them, and a nullable field would not be defaulted).
use kube::core::schema::{OptionalEnum, OptionalIntOrString, StructuralSchemaRewriter};
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

/// The structural OpenAPI schema of an upstream type, ready to sit at a CRD version's root.
pub fn upstream_root_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(OptionalEnum)
        .with_transform(OptionalIntOrString)
        .with_transform(StructuralSchemaRewriter)
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    strip_keys(
        &mut schema,
        &["nullable", "$schema", "title", "definitions", "components"],
    );
    let root = schema.as_object_mut().expect("root schema is an object");
    root.insert("type".into(), json!("object"));
    if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert("metadata".into(), json!({ "type": "object" }));
    }
    schema
}

fn strip_keys(v: &mut Value, keys: &[&str]) {
    match v {
        Value::Object(map) => {
            // `properties` maps field names to schemas: a field may be called "title".
            for (k, child) in map.iter_mut() {
                if k == "properties" {
                    if let Value::Object(props) = child {
                        props.values_mut().for_each(|p| strip_keys(p, keys));
                    }
                } else {
                    strip_keys(child, keys);
                }
            }
            for k in keys {
                map.remove(*k);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| strip_keys(i, keys)),
        _ => {}
    }
}

/// Removes descriptions deeper than `depth` property levels (the root's own properties are
/// depth 1). Keeps CRDs under the 262144-byte limit of kubectl's last-applied annotation.
pub fn trim_descriptions(schema: &mut Value, depth: usize) {
    fn walk(v: &mut Value, level: usize, depth: usize) {
        let Value::Object(map) = v else { return };
        if level > depth {
            map.remove("description");
        }
        for (k, child) in map.iter_mut() {
            match k.as_str() {
                "properties" => {
                    if let Value::Object(props) = child {
                        props.values_mut().for_each(|p| walk(p, level + 1, depth));
                    }
                }
                "items" | "additionalProperties" => walk(child, level, depth),
                "allOf" | "anyOf" | "oneOf" => {
                    if let Value::Array(items) = child {
                        items.iter_mut().for_each(|i| walk(i, level, depth));
                    }
                }
                _ => {}
            }
        }
    }
    walk(schema, 0, depth);
}

/// The JSON pointer of the schema node at a dotted path of property names; `[]` steps
/// into array items and `{}` into map values: `spec.template.spec.containers[].ports[]`.
pub fn pointer(path: &str) -> String {
    let mut out = String::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, suffix) = part.split_at(part.find(['[', '{']).unwrap_or(part.len()));
        out.push_str("/properties/");
        out.push_str(name);
        for step in suffix.as_bytes().chunks(2) {
            out.push_str(if step == b"[]" {
                "/items"
            } else {
                "/additionalProperties"
            });
        }
    }
    out
}

/// The schema node at `path` (see [`pointer`]); crdgen's tables name only nodes that exist,
/// and the unit tests run every table, so a wrong path fails the build's tests.
pub fn node<'a>(schema: &'a mut Value, path: &str) -> &'a mut Value {
    schema
        .pointer_mut(&pointer(path))
        .unwrap_or_else(|| panic!("schema has no node at {path:?}"))
}
