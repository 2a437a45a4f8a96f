//! The PV protection controller (upstream kube-controller-manager's
//! `persistentvolume-protection-controller`, alias `pv-protection`;
//! pkg/controller/volume/pvprotection): keeps the `kubernetes.io/pv-protection` finalizer
//! on every PersistentVolume, and removes it from a volume being deleted once the volume is
//! no longer bound (`status.phase` is not `Bound`). [`protection`] is the pure core,
//! [`controller`] the reconciler.
//!
//! Upstream tests ported (cases ported / upstream cases, all passing):
//!
//! | upstream test | file | ported |
//! |---|---|---|
//! | TestPVProtectionController | pv_protection_controller_test.go | 6 / 6 |
//!
//! Each case replays upstream's event (pvAddedUpdated's filter) and queue processing over
//! [`protection::process_pv`], its expected `Update` actions becoming the finalizer patches
//! the core produces (finalizers after each update); the "update fails -> controller
//! retries" cases fail the first two patches and expect the same decision three times
//! (the retry's backoff is the work queue's, tested in `manager::workqueue`). upstream's
//! protectionutil tests are ported in `pvcprotection`, where those helpers live.
pub mod controller;
pub mod protection;
