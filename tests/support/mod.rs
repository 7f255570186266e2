//! Real-runtime test bed shared by integration tests (`mod support;`) and benchmarks
//! (`#[path = "../tests/support/mod.rs"] mod support;`): a private containerd with a local
//! registry ([`testbed::TestBed`]) and a fixture playing the kubelet's CRI role
//! ([`kubelet::Kubelet`]). Nothing here depends on the test harness.
//!
//! Needs root and the Debian packages of `scripts/deps.sh`. Images are built once into
//! `target/testbed-images/`. Each test bed lives in `/tmp/nodeward-tb-*` with cgroups under
//! `/sys/fs/cgroup/*/nodeward-tb-*`; its guard process (`nodeward-testbed-guard`) removes all of
//! it when the test bed is shut down or dropped, or when the process exits or dies. Set
//! `NODEWARD_TESTBED_KEEP_LOGS=<dir>` to keep the logs of containerd, the registry, the guard and
//! the pods' containers in `<dir>/nodeward-tb-*/`.

// Each test or bench binary uses a different subset of the helpers.
#![allow(dead_code)]

pub mod agent;
pub mod apiserver;
pub mod bench;
pub mod cluster;
pub mod cri_proxy;
pub mod images;
pub mod k8s;
pub mod kubelet;
pub mod rbac;
pub mod registry;
pub mod testbed;
pub mod wait;
