//! Resource quantities: the one implementation shared with the scheduler
//! (`rekube_crds::quantity`), so that the agent and the scheduler count the same bytes.
pub use rekube_crds::quantity::{Amount, QuantityError, amount, parse_quantity};
