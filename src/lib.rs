//! nodeward: a node agent (and, later, a slim controller) implementing OpenKruise's node-side
//! features. The library holds every capability; `src/main.rs` is a thin CLI over it.

pub mod agent;
pub mod api;
pub mod cluster;
pub mod config_file;
pub mod controller;
pub mod cri;
pub mod ctl;
pub mod imagepull;
pub mod journal;
pub mod node;
pub mod recreate;
pub mod report;
pub mod sidecar;
pub mod telemetry;
