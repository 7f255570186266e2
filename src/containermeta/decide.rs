//! Pure rules of container meta: which pods count, the two hashes as kruise computes them
//! (byte for byte), the annotation a pod should carry, the containers whose env must be read,
//! and the containers to restart. Facts: `docs/upstream/container-meta.md`.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::api::kruise::{
    ANNOTATION_RUNTIME_CONTAINERS_META, ANNOTATION_SIDECARSET_HASH, ENV_SIDECARSET_VERSION,
    ENV_SIDECARSET_VERSION_ALT, GROUP, POD_CONDITION_INPLACE_UPDATE_READY, RuntimeContainerHashes,
    RuntimeContainerMeta, RuntimeContainerMetaSet,
};
use crate::node::model::State;
use crate::node::view::ContainerView;

/// The env-from-metadata hash of a container without such env (Go's `json.Marshal(nil)`, `null`).
pub const NO_METADATA_ENV_HASH: u64 = 86_995_377;

/// Where an env value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Label,
    Annotation,
}

/// One env var taken from a pod label or annotation through the downward API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetadataEnv {
    pub name: String,
    pub source: Source,
    pub key: String,
}

/// The container's env taken from `metadata.labels['k']` or `metadata.annotations['k']`, in spec
/// order, as kruise selects it: no literal value, a `fieldRef` with a subscript, not one of the
/// SidecarSet version variables.
pub fn metadata_env(c: &Container) -> Vec<MetadataEnv> {
    c.env
        .iter()
        .flatten()
        .filter(|e| e.value.as_deref().unwrap_or_default().is_empty())
        .filter(|e| e.name != ENV_SIDECARSET_VERSION && e.name != ENV_SIDECARSET_VERSION_ALT)
        .filter_map(|e| {
            let path = &e.value_from.as_ref()?.field_ref.as_ref()?.field_path;
            let (field, key) = path.strip_suffix("']")?.split_once("['")?;
            let source = match field {
                "metadata.labels" => Source::Label,
                "metadata.annotations" => Source::Annotation,
                _ => return None,
            };
            Some(MetadataEnv {
                name: e.name.clone(),
                source,
                key: key.to_string(),
            })
        })
        .collect()
}

/// The value the kubelet gives the env from the pod's metadata now (`""` for a missing key).
fn value_in<'a>(pod: &'a Pod, env: &MetadataEnv) -> &'a str {
    let map = match env.source {
        Source::Label => pod.metadata.labels.as_ref(),
        Source::Annotation => pod.metadata.annotations.as_ref(),
    };
    map.and_then(|m| m.get(&env.key))
        .map(String::as_str)
        .unwrap_or_default()
}

/// What the container's env-from-metadata hash should be for the pod's metadata now
/// (kruise's `GetExpectHash`).
pub fn expected_hash(c: &Container, pod: &Pod) -> u64 {
    let envs = metadata_env(c);
    hash_envs(envs.iter().map(|e| (e.name.as_str(), value_in(pod, e))))
}

/// The container's env-from-metadata hash from the output of `env` run in it (kruise's
/// `GetCurrentHash`). Where the output holds exactly the value the pod's metadata gives now, that
/// value is taken whole (spaces and newlines included); otherwise the variable's line as
/// upstream reads it (trimmed; `""` when absent). Upstream trims every value, so a value with
/// spaces at either end never matches and the container is restarted again and again; here it
/// matches. (As upstream, a container running with `"v "` where the metadata now says `"v"`
/// reads as up to date: trimmed, the two are one.)
pub fn current_hash(c: &Container, pod: &Pod, env_output: &str) -> u64 {
    let lines = env_lines(env_output);
    let envs = metadata_env(c);
    hash_envs(envs.iter().map(|e| {
        let now = value_in(pod, e);
        if holds_exactly(env_output, &e.name, now) {
            (e.name.as_str(), now)
        } else {
            (
                e.name.as_str(),
                lines.get(e.name.as_str()).copied().unwrap_or_default(),
            )
        }
    }))
}

/// `NAME=value` as upstream reads `env`'s output: trimmed lines split at the first `=`.
fn env_lines(output: &str) -> HashMap<&str, &str> {
    output
        .trim()
        .split('\n')
        .filter_map(|line| line.trim().split_once('='))
        .collect()
}

/// Whether `env`'s output has the entry `name=value` whole, at the start of a line and ending the
/// output or a line.
fn holds_exactly(output: &str, name: &str, value: &str) -> bool {
    let entry = format!("{name}={value}");
    output.match_indices(&entry).any(|(at, _)| {
        let starts = at == 0 || output[..at].ends_with('\n');
        let rest = &output[at + entry.len()..];
        starts && (rest.is_empty() || rest.starts_with('\n'))
    })
}

/// kruise's `hashEnvs`: the env sorted by name (stable), as Go's JSON of `[]v1.EnvVar` (an empty
/// value omitted; no env at all is `null`), hashed as `DeepHashObject` hashes a byte slice.
fn hash_envs<'a>(envs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut envs: Vec<(&str, &str)> = envs.collect();
    if envs.is_empty() {
        return deep_hash_json(b"null");
    }
    envs.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut json = String::from("[");
    for (i, (name, value)) in envs.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        json.push_str("{\"name\":");
        go_json_string(&mut json, name);
        if !value.is_empty() {
            json.push_str(",\"value\":");
            go_json_string(&mut json, value);
        }
        json.push('}');
    }
    json.push(']');
    deep_hash_json(json.as_bytes())
}

/// The kubelet's container hash since 1.31 (`HashContainer`: name and image only), as it writes
/// it in hex on the CRI container (`io.kubernetes.container.hash`).
pub fn kubelet_hash(c: &Container) -> u64 {
    let mut json = String::from("{\"image\":");
    go_json_string(&mut json, c.image.as_deref().unwrap_or_default());
    json.push_str(",\"name\":");
    go_json_string(&mut json, &c.name);
    json.push('}');
    deep_hash_json(json.as_bytes())
}

/// `hashutil.DeepHashObject(fnv32a, jsonBytes)`: go-spew prints a `[]byte` as
/// `([]uint8)[b0 b1 …]` (decimal, one space apart), and that text is hashed with FNV-1a 32.
fn deep_hash_json(json: &[u8]) -> u64 {
    let mut text = String::with_capacity(10 + json.len() * 4);
    text.push_str("([]uint8)[");
    for (i, b) in json.iter().enumerate() {
        if i > 0 {
            text.push(' ');
        }
        text.push_str(&b.to_string());
    }
    text.push(']');
    u64::from(crate::hash::fnv1a_32(text.bytes()))
}

/// A string as Go's `encoding/json` writes it (HTML-safe: `<`, `>`, `&` escaped; U+2028 and
/// U+2029 escaped; `\b` and `\f` short since Go 1.22; other controls as `\u00xx`).
fn go_json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(ch)));
            }
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Whether the pod is one whose containers' meta kruise-manager reads: its controller is an
/// `apps.kruise.io` workload (any kind), or a SidecarSet injected it.
pub fn eligible(pod: &Pod) -> bool {
    let kruise_owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.api_version.split('/').next() == Some(GROUP));
    kruise_owner
        || pod
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_SIDECARSET_HASH))
}

/// What is known of a container's env, by container id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvRead {
    /// Its env-from-metadata hash, from `env` run in it.
    Hash(u64),
    /// `env` could not be run (yet); retried later by the capability.
    Failed,
}

/// A container to stop so that the kubelet starts it again with the env of the pod's metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    pub container: String,
    pub id: String,
    pub sandbox_id: String,
    pub running: u64,
    pub expected: u64,
}

/// What to do for one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The annotation's new value, when it differs from the pod's (never while an env read is
    /// outstanding: one write, not two).
    pub annotation: Option<String>,
    /// Containers (name, id) whose `env` must be read.
    pub read_env: Vec<(String, String)>,
    pub restart: Vec<Restart>,
}

/// The plan for one pod: `runtime` is the latest attempt of each of its containers as the runtime
/// reports it, `runtime_name` the runtime's name in container ids (`containerd`), `reads` what is
/// known of running containers' env.
pub fn plan(
    pod: &Pod,
    runtime: &[ContainerView],
    runtime_name: &str,
    reads: &HashMap<String, EnvRead>,
) -> Plan {
    let mut plan = Plan::default();
    let Some(status) = pod.status.as_ref() else {
        return plan;
    };
    let statuses = status.container_statuses.as_deref().unwrap_or_default();
    if !eligible(pod) || pod.metadata.deletion_timestamp.is_some() || statuses.is_empty() {
        return plan;
    }
    let annotations = pod.metadata.annotations.as_ref();
    let old = RuntimeContainerMetaSet::parse(
        annotations
            .and_then(|a| a.get(ANNOTATION_RUNTIME_CONTAINERS_META))
            .map(String::as_str),
    );
    let updating = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == POD_CONDITION_INPLACE_UPDATE_READY && c.status == "False");
    let spec = pod.spec.as_ref();
    let mut set = RuntimeContainerMetaSet::default();
    for cs in statuses {
        let Some(rt) = runtime.iter().find(|c| c.name == cs.name) else {
            continue;
        };
        let Some(container) = spec.and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|c| c.name == cs.name)
        }) else {
            continue;
        };
        let id = format!("{runtime_name}://{}", rt.id);
        let mut entry = old
            .iter()
            .flat_map(|o| o.containers.iter())
            .rfind(|m| m.container_id == id)
            .cloned()
            .unwrap_or_else(|| RuntimeContainerMeta {
                name: rt.name.clone(),
                container_id: id,
                restart_count: i32::try_from(rt.restart_count).unwrap_or(i32::MAX),
                hashes: RuntimeContainerHashes {
                    plain_hash: rt.hash,
                    extracted_env_from_metadata_hash: 0,
                },
            });
        let running = rt.state == State::Running;
        if entry.hashes.extracted_env_from_metadata_hash == 0 && running {
            if metadata_env(container).is_empty() {
                entry.hashes.extracted_env_from_metadata_hash = NO_METADATA_ENV_HASH;
            } else {
                match reads.get(&rt.id) {
                    Some(EnvRead::Hash(h)) => entry.hashes.extracted_env_from_metadata_hash = *h,
                    Some(EnvRead::Failed) => {}
                    None => plan.read_env.push((rt.name.clone(), rt.id.clone())),
                }
            }
        }
        let current = entry.hashes.extracted_env_from_metadata_hash;
        let expected = expected_hash(container, pod);
        // The kubelet recreates a container whose spec changed (its hash no longer matches) by
        // itself: a second stop would restart it twice.
        let kubelet_content = rt.hash == kubelet_hash(container);
        if updating && running && current > 0 && current != expected && kubelet_content {
            plan.restart.push(Restart {
                container: rt.name.clone(),
                id: rt.id.clone(),
                sandbox_id: rt.sandbox_id.clone(),
                running: current,
                expected,
            });
        }
        set.containers.push(entry);
    }
    if plan.read_env.is_empty() && old.as_ref() != Some(&set) {
        plan.annotation = serde_json::to_string(&set).ok();
    }
    plan
}

#[cfg(test)]
mod tests;
