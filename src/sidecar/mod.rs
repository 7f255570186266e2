//! Job sidecar terminator: when a Job pod's main containers are done, stop its sidecars.
//! `decide` is the pure rule; `run` carries out one decision through CRI.

pub mod decide;
pub mod run;
