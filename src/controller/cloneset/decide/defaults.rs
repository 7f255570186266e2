//! The defaults kruise-manager's CloneSet webhook writes into a template (upstream
//! `apis/apps/defaults.SetDefaultPodSpec`: the core API's pod-spec, container, probe, volume and
//! field-selector defaults, with `imagePullPolicy: Always` for every app container). Two
//! templates are compared with these applied to both, so that a template kruise-manager defaulted
//! and the same template written later without its defaults (a `kubectl apply` of the user's own
//! file replaces the containers list) read as one: no new revision, and an image change stays an
//! in-place update.

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, Lifecycle, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
    Volume,
};

/// `template` with the defaults applied.
pub fn defaulted(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut template = template.clone();
    if let Some(spec) = template.spec.as_mut() {
        pod_spec(spec);
    }
    template
}

/// 0644, the mode of secret, config map, downward API and projected volume files.
const FILE_MODE: i32 = 0o644;

fn pod_spec(spec: &mut PodSpec) {
    set(&mut spec.dns_policy, "ClusterFirst");
    set(&mut spec.restart_policy, "Always");
    spec.security_context.get_or_insert_default();
    spec.termination_grace_period_seconds.get_or_insert(30);
    set(&mut spec.scheduler_name, "default-scheduler");
    for volume in spec.volumes.iter_mut().flatten() {
        self::volume(volume);
    }
    for c in spec.init_containers.iter_mut().flatten() {
        if c.image_pull_policy
            .as_deref()
            .unwrap_or_default()
            .is_empty()
        {
            let policy = pull_policy(c.image.as_deref().unwrap_or_default());
            c.image_pull_policy = Some(policy.to_string());
        }
        container(c);
    }
    for c in &mut spec.containers {
        set(&mut c.image_pull_policy, "Always");
        container(c);
    }
}

fn container(c: &mut Container) {
    set(&mut c.termination_message_path, "/dev/termination-log");
    set(&mut c.termination_message_policy, "File");
    for port in c.ports.iter_mut().flatten() {
        set(&mut port.protocol, "TCP");
    }
    for env in c.env.iter_mut().flatten() {
        if let Some(field) = env.value_from.as_mut().and_then(|v| v.field_ref.as_mut()) {
            field_selector(field);
        }
    }
    c.resources.get_or_insert_default();
    for probe in [
        &mut c.liveness_probe,
        &mut c.readiness_probe,
        &mut c.startup_probe,
    ] {
        if let Some(probe) = probe.as_mut() {
            self::probe(probe);
        }
    }
    if let Some(Lifecycle {
        post_start,
        pre_stop,
        ..
    }) = c.lifecycle.as_mut()
    {
        for handler in [post_start, pre_stop].into_iter().flatten() {
            if let Some(get) = handler.http_get.as_mut() {
                http_get(get);
            }
        }
    }
}

fn probe(p: &mut Probe) {
    for (field, default) in [
        (&mut p.timeout_seconds, 1),
        (&mut p.period_seconds, 10),
        (&mut p.success_threshold, 1),
        (&mut p.failure_threshold, 3),
    ] {
        if field.unwrap_or(0) == 0 {
            *field = Some(default);
        }
    }
    if let Some(get) = p.http_get.as_mut() {
        http_get(get);
    }
}

fn http_get(get: &mut HTTPGetAction) {
    set(&mut get.path, "/");
    set(&mut get.scheme, "HTTP");
}

fn field_selector(field: &mut ObjectFieldSelector) {
    set(&mut field.api_version, "v1");
}

fn volume(v: &mut Volume) {
    // No source at all: an emptyDir.
    let has_source = serde_json::to_value(&*v)
        .ok()
        .and_then(|v| v.as_object().map(|m| m.keys().any(|k| k != "name")))
        .unwrap_or(true);
    if !has_source {
        v.empty_dir = Some(Default::default());
    }
    if let Some(host) = v.host_path.as_mut() {
        host.type_.get_or_insert_default();
    }
    if let Some(secret) = v.secret.as_mut() {
        secret.default_mode.get_or_insert(FILE_MODE);
    }
    if let Some(config) = v.config_map.as_mut() {
        config.default_mode.get_or_insert(FILE_MODE);
    }
    if let Some(downward) = v.downward_api.as_mut() {
        downward.default_mode.get_or_insert(FILE_MODE);
        for item in downward.items.iter_mut().flatten() {
            if let Some(field) = item.field_ref.as_mut() {
                field_selector(field);
            }
        }
    }
    if let Some(projected) = v.projected.as_mut() {
        projected.default_mode.get_or_insert(FILE_MODE);
        for source in projected.sources.iter_mut().flatten() {
            let items = source.downward_api.as_mut().and_then(|d| d.items.as_mut());
            for item in items.into_iter().flatten() {
                if let Some(field) = item.field_ref.as_mut() {
                    field_selector(field);
                }
            }
            if let Some(token) = source.service_account_token.as_mut() {
                token.expiration_seconds.get_or_insert(3600);
            }
        }
    }
}

/// The core API's pull policy for an init container: `Always` for `latest`, named or implied (no
/// tag and no digest), else `IfNotPresent`.
fn pull_policy(image: &str) -> &'static str {
    let (named, digest) = match image.split_once('@') {
        Some((named, digest)) => (named, Some(digest)),
        None => (image, None),
    };
    let tag = named
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'));
    match (tag, digest) {
        (Some("latest"), _) | (None, None) => "Always",
        _ => "IfNotPresent",
    }
}

/// `field` set to `default` when unset or empty (Go's zero string).
fn set(field: &mut Option<String>, default: &str) {
    if field.as_deref().unwrap_or_default().is_empty() {
        *field = Some(default.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn template(spec: Value) -> PodTemplateSpec {
        serde_json::from_value(json!({"spec": spec})).unwrap()
    }

    #[test]
    fn kruise_managers_defaults() {
        let t = defaulted(&template(json!({
            "initContainers": [
                {"name": "a", "image": "busybox"},
                {"name": "b", "image": "busybox:1"},
                {"name": "c", "image": "host:5000/busybox:latest"},
                {"name": "d", "image": "busybox@sha256:0123"},
                {"name": "e", "image": "busybox", "imagePullPolicy": "Never"},
            ],
            "containers": [{
                "name": "app", "image": "busybox:1",
                "ports": [{"containerPort": 80}],
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "readinessProbe": {"httpGet": {"port": 80}, "periodSeconds": 5},
                "lifecycle": {"preStop": {"httpGet": {"port": 80, "path": "/stop"}}},
            }],
            "volumes": [
                {"name": "bare"},
                {"name": "host", "hostPath": {"path": "/x"}},
                {"name": "cm", "configMap": {"name": "c"}},
                {"name": "sec", "secret": {"secretName": "s", "defaultMode": 256}},
                {"name": "proj", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
            ],
        })));
        let v = serde_json::to_value(&t).unwrap()["spec"].clone();
        let policies: Vec<&str> = v["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["imagePullPolicy"].as_str().unwrap())
            .collect();
        assert_eq!(
            policies,
            ["Always", "IfNotPresent", "Always", "IfNotPresent", "Never"]
        );
        let app = &v["containers"][0];
        assert_eq!(app["imagePullPolicy"], "Always", "kruise's own default");
        assert_eq!(app["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(app["terminationMessagePolicy"], "File");
        assert_eq!(app["resources"], json!({}));
        assert_eq!(app["ports"][0]["protocol"], "TCP");
        assert_eq!(app["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert_eq!(
            app["readinessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "periodSeconds": 5,
                "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3})
        );
        assert_eq!(app["lifecycle"]["preStop"]["httpGet"]["path"], "/stop");
        assert_eq!(app["lifecycle"]["preStop"]["httpGet"]["scheme"], "HTTP");
        assert_eq!(v["dnsPolicy"], "ClusterFirst");
        assert_eq!(v["restartPolicy"], "Always");
        assert_eq!(v["schedulerName"], "default-scheduler");
        assert_eq!(v["terminationGracePeriodSeconds"], 30);
        assert_eq!(v["securityContext"], json!({}));
        let volumes = &v["volumes"];
        assert_eq!(volumes[0]["emptyDir"], json!({}));
        assert_eq!(volumes[1]["hostPath"]["type"], "");
        assert_eq!(volumes[2]["configMap"]["defaultMode"], 420);
        assert_eq!(volumes[3]["secret"]["defaultMode"], 256, "set values kept");
        assert_eq!(volumes[4]["projected"]["defaultMode"], 420);
        assert_eq!(
            volumes[4]["projected"]["sources"][0]["serviceAccountToken"]["expirationSeconds"],
            3600
        );
        assert_eq!(defaulted(&t), t, "applying them twice changes nothing");
    }
}
