//! Names shared with OpenKruise and the kubelet: env markers, labels and annotations.

pub mod well_known;
