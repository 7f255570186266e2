//! Names shared with OpenKruise and the kubelet: env markers, labels and annotations.

pub mod clamp;
pub mod kruise;
pub mod names;
pub mod role;
pub mod well_known;
