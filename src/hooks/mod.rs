//! Webhooks: the calls a Canary makes at the points of a release its `analysis.webhooks`
//! name (Flagger's payload and semantics, every 2xx a success), and the event webhook.

mod payload;

pub use payload::{Payload, checksum};
