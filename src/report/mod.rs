//! Reporting what the agent did: the local gRPC API (for `nodeward ctl` and node tooling).

pub mod api;
pub mod socket;

/// Types generated from `proto/nodeward/agent/v1/agent.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("nodeward.agent.v1");
}
