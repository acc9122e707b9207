//! The rollout state machine, as pure code: from a Canary's spec and status and what the
//! controller observed, decide the next phase, the actions to take and the records to write.
//! No client, no clock it was not given: everything here is unit-tested.

mod machine;
mod plan;
mod types;

pub use machine::*;
pub use plan::*;
pub use types::*;

#[cfg(test)]
mod tests;
