//! Building a `CustomResourceDefinition` from a kind's descriptor.
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceColumnDefinition as Column, CustomResourceDefinition,
    CustomResourceDefinitionNames, CustomResourceDefinitionSpec, CustomResourceDefinitionVersion,
    CustomResourceSubresourceScale, CustomResourceSubresourceStatus, CustomResourceSubresources,
    CustomResourceValidation, JSONSchemaProps, SelectableField,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::{CATEGORY, GROUP, VERSION};

/// Everything that distinguishes one rekube CRD from another.
pub struct CrdDescriptor {
    pub kind: &'static str,
    pub plural: &'static str,
    pub short_name: &'static str,
    pub namespaced: bool,
    /// The structural schema of the whole object, upstream defaults and rules applied.
    pub schema: Value,
    pub status_subresource: bool,
    /// The scale subresource: `.spec.replicas` / `.status.replicas`.
    pub scale: bool,
    /// `(name, type, jsonPath, priority)`; AGE is appended to every kind.
    pub columns: &'static [(&'static str, &'static str, &'static str, i32)],
    pub selectable_fields: &'static [&'static str],
}

impl CrdDescriptor {
    pub fn name(&self) -> String {
        format!("{}.{GROUP}", self.plural)
    }

    /// The CRD, with the schema's descriptions kept down to `description_depth` levels.
    pub fn crd(&self, description_depth: usize) -> CustomResourceDefinition {
        let mut schema = self.schema.clone();
        crate::schema::trim_descriptions(&mut schema, description_depth);
        let schema: JSONSchemaProps = serde_json::from_value(schema)
            .unwrap_or_else(|e| panic!("schema of {} is not a JSONSchemaProps: {e}", self.kind));
        let mut columns: Vec<Column> = self
            .columns
            .iter()
            .map(|&(name, type_, json_path, priority)| Column {
                name: name.into(),
                type_: type_.into(),
                json_path: json_path.into(),
                priority: (priority != 0).then_some(priority),
                ..Default::default()
            })
            .collect();
        let age = Column {
            name: "Age".into(),
            type_: "date".into(),
            json_path: ".metadata.creationTimestamp".into(),
            ..Default::default()
        };
        // Upstream prints AGE after the status columns and before the -o wide ones.
        let wide_at = columns
            .iter()
            .position(|c| c.priority.is_some())
            .unwrap_or(columns.len());
        columns.insert(wide_at, age);
        CustomResourceDefinition {
            metadata: ObjectMeta {
                name: Some(self.name()),
                ..Default::default()
            },
            spec: CustomResourceDefinitionSpec {
                group: GROUP.into(),
                names: CustomResourceDefinitionNames {
                    kind: self.kind.into(),
                    list_kind: Some(format!("{}List", self.kind)),
                    plural: self.plural.into(),
                    singular: Some(self.kind.to_lowercase()),
                    short_names: Some(vec![self.short_name.into()]),
                    categories: Some(vec![CATEGORY.into()]),
                },
                scope: if self.namespaced {
                    "Namespaced"
                } else {
                    "Cluster"
                }
                .into(),
                versions: vec![CustomResourceDefinitionVersion {
                    name: VERSION.into(),
                    served: true,
                    storage: true,
                    schema: Some(CustomResourceValidation {
                        open_api_v3_schema: Some(schema),
                    }),
                    subresources: (self.status_subresource || self.scale).then(|| {
                        CustomResourceSubresources {
                            status: self
                                .status_subresource
                                .then_some(CustomResourceSubresourceStatus(serde_json::json!({}))),
                            scale: self.scale.then(|| CustomResourceSubresourceScale {
                                spec_replicas_path: ".spec.replicas".into(),
                                status_replicas_path: ".status.replicas".into(),
                                label_selector_path: None,
                            }),
                        }
                    }),
                    additional_printer_columns: Some(columns),
                    selectable_fields: (!self.selectable_fields.is_empty()).then(|| {
                        self.selectable_fields
                            .iter()
                            .map(|f| SelectableField {
                                json_path: format!(".{f}"),
                            })
                            .collect()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
            status: None,
        }
    }
}
