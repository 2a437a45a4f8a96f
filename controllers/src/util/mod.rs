//! Helpers shared by the controllers (upstream: pkg/controller/controller_utils.go,
//! pkg/api/v1/pod, apimachinery's labels and selectors).
pub mod claim;
pub mod labels;
pub mod pod;
