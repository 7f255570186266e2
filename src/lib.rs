//! nodeward: a node agent and a slim Kubernetes controller implementing OpenKruise's node-side
//! features (Job sidecar terminator, ContainerRecreateRequest, image pre-pull, custom pod probes,
//! container meta for in-place updates) with OpenKruise's API. The library holds every capability; `src/main.rs` is a thin CLI over it. The layers, the
//! four rooms of a capability and the data flow of a sidecar stop: `ARCHITECTURE.md`.

pub mod agent;
pub mod api;
pub mod backoff;
pub mod cluster;
pub mod config_file;
pub mod containermeta;
pub mod controller;
pub mod cri;
pub mod ctl;
pub mod gates;
pub mod hash;
pub mod imagepull;
pub mod journal;
pub mod node;
pub mod podprobe;
pub mod recreate;
pub mod report;
pub mod sidecar;
pub mod telemetry;
