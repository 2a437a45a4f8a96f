//! The `rekube_resource!` macro: a rekube.io/v1 object whose body is the upstream
//! object's body, field for field.
//!
//! Each kind is a plain struct holding `metadata` plus the upstream top-level fields,
//! typed with the k8s-openapi types (`spec: Option<k8s_openapi::api::apps::v1::DeploymentSpec>`).
//! The macro implements `k8s_openapi::Resource` and `k8s_openapi::Metadata`, which gives
//! the kube `Resource` trait through kube's blanket impl, and serializes `apiVersion: rekube.io/v1`
//! and the kind. Deserialization ignores `apiVersion`/`kind` (the apiserver checks them).

/// Whether a top-level field is left out of the serialized object (upstream's `omitempty`).
pub trait OmitEmpty {
    fn omit(&self) -> bool;
}

impl<T> OmitEmpty for Option<T> {
    fn omit(&self) -> bool {
        self.is_none()
    }
}

/// A required list (EndpointSlice's `endpoints`) is always written, `[]` when empty.
impl<T> OmitEmpty for Vec<T> {
    fn omit(&self) -> bool {
        false
    }
}

/// CSIDriver's spec, a required struct upstream: always written.
impl OmitEmpty for k8s_openapi::api::storage::v1::CSIDriverSpec {
    fn omit(&self) -> bool {
        false
    }
}

impl OmitEmpty for String {
    fn omit(&self) -> bool {
        false
    }
}

/// Declares a rekube kind.
///
/// ```ignore
/// rekube_resource! {
///     /// docs
///     Deployment("deployments"), upstream = k8s_openapi::api::apps::v1::Deployment,
///     scope = k8s_openapi::NamespaceResourceScope,
///     { spec: Option<DeploymentSpec> = "spec", status: Option<DeploymentStatus> = "status" }
/// }
/// ```
#[macro_export]
macro_rules! rekube_resource {
    (
        $(#[$doc:meta])*
        $kind:ident($plural:literal), upstream = $upstream:ty, scope = $scope:ty,
        { $($field:ident : $ty:ty = $wire:literal),* $(,)? }
    ) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
        pub struct $kind {
            #[serde(default)]
            pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
            $(
                #[serde(default, rename = $wire)]
                pub $field: $ty,
            )*
        }

        impl k8s_openapi::Resource for $kind {
            const API_VERSION: &'static str = $crate::API_VERSION;
            const GROUP: &'static str = $crate::GROUP;
            const KIND: &'static str = stringify!($kind);
            const VERSION: &'static str = $crate::VERSION;
            const URL_PATH_SEGMENT: &'static str = $plural;
            type Scope = $scope;
        }

        impl k8s_openapi::Metadata for $kind {
            type Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
            fn metadata(&self) -> &Self::Ty {
                &self.metadata
            }
            fn metadata_mut(&mut self) -> &mut Self::Ty {
                &mut self.metadata
            }
        }

        impl serde::Serialize for $kind {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                #[allow(unused_imports)]
                use $crate::resource::OmitEmpty;
                let mut state = serializer.serialize_struct(stringify!($kind), 3 + [$($wire),*].len())?;
                state.serialize_field("apiVersion", $crate::API_VERSION)?;
                state.serialize_field("kind", stringify!($kind))?;
                state.serialize_field("metadata", &self.metadata)?;
                $(
                    if self.$field.omit() {
                        state.skip_field($wire)?;
                    } else {
                        state.serialize_field($wire, &self.$field)?;
                    }
                )*
                state.end()
            }
        }

        impl $crate::resource::Upstream for $kind {
            type Upstream = $upstream;
        }
    };
}

/// Links a rekube kind to the upstream type whose schema and fields it mirrors.
pub trait Upstream {
    type Upstream: schemars::JsonSchema + serde::Serialize + serde::de::DeserializeOwned;
}
