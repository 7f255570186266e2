//! The CloneSet controller (issue 19), in steps: the pure scale decisions (`decide`: the
//! numbers upstream's `calculateDiffsWithExpectation` gives, the next scale step, instance ids,
//! `disablePVCReuse`'s PVC cleanup, the deletion order) are here; the reconciler that carries
//! them out (pods and PVCs, revisions, status, the scale subresource) comes next and is not
//! wired into the controller yet. Upstream's behaviour: `docs/upstream/cloneset.md`.

pub mod decide;
