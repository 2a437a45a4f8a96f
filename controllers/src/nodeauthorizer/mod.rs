//! The node authorizer (upstream's Node authorizer, plugin/pkg/auth/authorizer/node, as
//! RBAC written by a controller): a node agent may read only the Secrets, ConfigMaps and
//! PersistentVolumeClaims of the pods bound to its node, the PersistentVolumes of those
//! claims and the VolumeAttachments naming its node. [`grants`] is the pure core,
//! [`controller`] the reconciler.
pub mod controller;
pub mod grants;
