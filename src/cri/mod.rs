//! Thin adapter over the CRI v1 gRPC API: connection and runtime detection, a typed client, and
//! decoding of the labels and annotations the kubelet puts on sandboxes and containers.

pub mod client;
pub mod connect;
pub mod handler;
pub mod image;
pub mod kill;
pub mod kubelet;

pub use client::{CriClient, CriError};
pub use connect::{RuntimeInfo, channel, detect};
