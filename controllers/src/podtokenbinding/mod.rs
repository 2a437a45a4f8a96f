//! The pod token binding controller (`pod-token-binding-controller`): rekube's own, with
//! no upstream twin. Upstream's kubelet binds a pod's projected service account tokens to
//! the Pod itself (TokenRequest `boundObjectRef` kind Pod), so that they die with it; the
//! apiserver binds tokens to core Pods, Secrets and Nodes only, and a rekube Pod is a
//! custom resource. So for each rekube Pod bound to a node whose volumes project a
//! `serviceAccountToken`, this controller creates the pod's token binding Secret
//! (`<pod>-token-binding-<first 8 of its UID>`, type `rekube.io/token-binding`, empty,
//! immutable, controlled by the pod: [`rekube_crds::token_binding`]), and the node agent
//! requests the pod's tokens bound to that Secret. The garbage collector deletes the
//! Secret with the pod, and the apiserver then refuses the tokens.
//!
//! It creates that Secret and nothing else: an existing Secret of the name that is not
//! the pod's is left alone (a FailedTokenBinding event on the pod, retried after a
//! backoff); pods not scheduled yet, finished, being deleted or without the source are
//! ignored; a binding deleted while its pod lives is made again at the pod's next resync
//! (`--pod-token-binding-resync-period`). [`binding`] is the pure core, [`controller`]
//! the reconciler.
pub mod binding;
pub mod controller;
