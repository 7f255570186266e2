//! The Helm chart (`packaging/helm/nodeward`) is the one source of the objects: `helm lint`
//! passes with the default values and with every switch turned; packaging/kubernetes is the chart
//! rendered with its defaults (rerun with UPDATE_SNAPSHOTS=1 to render it again), its CRDs are
//! `nodeward crds`; and the values reach the objects (runtime socket directory, hostPID, node
//! affinity, feature gates, replicas), unknown ones refused by the values schema. helm is built
//! from its Go module ([`support::helm`]).

use nodeward_testkit as support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;
use support::helm::{self, CHART};

const K8S: &str = "packaging/kubernetes";
/// Chart templates and the plain manifest each renders to.
const RENDERED: [(&str, &str); 8] = [
    ("agent-rbac.yaml", "agent-rbac.yaml"),
    ("agent-policy.yaml", "agent-policy.yaml"),
    ("controller-rbac.yaml", "controller-rbac.yaml"),
    ("agent-daemonset.yaml", "agent-daemonset.yaml"),
    ("controller-deployment.yaml", "controller-deployment.yaml"),
    ("controller-pdb.yaml", "controller-pdb.yaml"),
    ("controller-webhook.yaml", "controller-webhook.yaml"),
    (
        "servicemonitor.yaml",
        "components/servicemonitor/servicemonitor.yaml",
    ),
];

fn repo(rel: &str) -> PathBuf {
    support::repo().join(rel)
}

fn run_helm(args: &[&str]) -> (bool, String, String) {
    helm::run(args, &[])
}

/// `helm template` of the chart in namespace nodeward-system with `sets`, by template file:
/// the documents of each as one YAML stream, `# Source` lines dropped.
fn render(sets: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let mut args = vec![
        "template",
        "nodeward",
        CHART,
        "--namespace",
        "nodeward-system",
    ];
    for s in sets {
        args.extend(["--set", s]);
    }
    let (ok, stdout, stderr) = run_helm(&args);
    if !ok {
        return Err(stderr);
    }
    let mut files: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for doc in stdout.split("---\n").filter(|d| !d.trim().is_empty()) {
        let (source, body) = doc.split_once('\n').unwrap_or((doc, ""));
        let file = source
            .strip_prefix("# Source: nodeward/templates/")
            .unwrap_or_else(|| panic!("a document without its source: {doc}"));
        files
            .entry(file.to_string())
            .or_default()
            .push(body.to_string());
    }
    Ok(files
        .into_iter()
        .map(|(file, docs)| {
            let docs: Vec<&str> = docs.iter().map(|d| d.trim_end()).collect();
            (file, docs.join("\n---\n") + "\n")
        })
        .collect())
}

/// The rendered documents of `file` as JSON values.
fn objects(rendered: &BTreeMap<String, String>, file: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&rendered[file]).expect("YAML")
}

#[test]
fn the_chart_lints_with_every_switch() {
    let (ok, out, err) = run_helm(&["lint", "--strict", CHART]);
    assert!(ok, "{out}{err}");
    let turned = "runtime=cri-o,agent.hostPID=true,serviceMonitor.enabled=true,featureGates.PodProbeMarkerGate=false,controller.replicas=1,controller.featureGates.CloneSetController=true";
    let (ok, out, err) = run_helm(&["lint", "--strict", CHART, "--set", turned]);
    assert!(ok, "{out}{err}");
}

#[test]
fn packaging_kubernetes_is_the_chart_rendered() {
    let defaults = render(&["image.reference=nodeward"]).unwrap();
    let monitor = render(&["image.reference=nodeward", "serviceMonitor.enabled=true"]).unwrap();
    assert!(
        !defaults.contains_key("servicemonitor.yaml"),
        "off by default"
    );
    let update = std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1");
    for (template, plain) in RENDERED {
        let rendered = if template == "servicemonitor.yaml" {
            &monitor[template]
        } else {
            &defaults[template]
        };
        let path = repo(&format!("{K8S}/{plain}"));
        if update {
            std::fs::write(&path, rendered).unwrap();
        } else {
            let committed = std::fs::read_to_string(&path).unwrap();
            assert!(
                &committed == rendered,
                "{} differs from the chart's {template} (rerun with UPDATE_SNAPSHOTS=1)",
                path.display()
            );
        }
    }
    assert_eq!(
        std::fs::read_to_string(repo(&format!("{CHART}/crds/crds.yaml"))).unwrap(),
        nodeward::api::kruise::crds_yaml(),
        "regenerate with: nodeward crds > {CHART}/crds/crds.yaml"
    );
}

#[test]
fn values_reach_the_objects() {
    let rendered = render(&[
        "runtime=cri-dockerd",
        "agent.hostPID=true",
        "agent.nodeAffinity[0].key=nodeward.io/agent",
        "agent.nodeAffinity[0].operator=In",
        "agent.nodeAffinity[0].values[0]=yes",
        "featureGates.PodProbeMarkerGate=false",
        "featureGates.ImagePullJobGate=false",
        "controller.featureGates.ImagePullJobGate=true",
        "controller.replicas=3",
        "image.tag=9.9.9",
    ])
    .unwrap();
    let ds = &objects(&rendered, "agent-daemonset.yaml")[0];
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let runtime = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "runtime")
        .unwrap();
    assert_eq!(runtime["hostPath"]["path"], "/var/run");
    let terms = &pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchExpressions"];
    assert_eq!(terms.as_array().unwrap().len(), 2, "{terms}");
    assert_eq!(terms[1]["key"], "nodeward.io/agent");
    let agent = &pod["containers"][0];
    assert_eq!(agent["image"], "ghcr.io/nodeward/nodeward:9.9.9");
    let gates = "--feature-gates=ImagePullJobGate=false,PodProbeMarkerGate=false";
    assert!(
        agent["args"].as_array().unwrap().iter().any(|a| a == gates),
        "{}",
        agent["args"]
    );
    let deploy = &objects(&rendered, "controller-deployment.yaml")[0];
    assert_eq!(deploy["spec"]["replicas"], 3);
    // The controller's own gate wins over the common one.
    let controller = &deploy["spec"]["template"]["spec"]["containers"][0];
    let own = "--feature-gates=ImagePullJobGate=true,PodProbeMarkerGate=false";
    assert!(
        controller["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == own),
        "{}",
        controller["args"]
    );
    // The chart's appVersion when no tag is given.
    let plain = render(&[]).unwrap();
    let ds = &objects(&plain, "agent-daemonset.yaml")[0];
    let image = &ds["spec"]["template"]["spec"]["containers"][0]["image"];
    assert_eq!(image, "ghcr.io/nodeward/nodeward:0.1.0");

    // The CloneSet controller's gate brings the grants of packaging's cloneset component.
    let rbac_of = |rendered: &BTreeMap<String, String>| -> Vec<Value> {
        objects(rendered, "controller-rbac.yaml")
            .into_iter()
            .filter(|o| o["metadata"]["name"] == "nodeward-controller-cloneset")
            .collect()
    };
    assert!(rbac_of(&plain).is_empty());
    let on = render(&["controller.featureGates.CloneSetController=true"]).unwrap();
    let component: Vec<Value> = serde_saphyr::from_multiple(
        &std::fs::read_to_string(repo(&format!(
            "{K8S}/components/cloneset/cloneset-rbac.yaml"
        )))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(rbac_of(&on), component);
    let hooks: Vec<String> = objects(&on, "controller-webhook.yaml")
        .iter()
        .flat_map(|o| o["webhooks"].as_array().cloned().unwrap_or_default())
        .map(|w| w["name"].as_str().unwrap_or_default().to_string())
        .collect();
    for name in ["mcloneset.nodeward.io", "vcloneset.nodeward.io"] {
        assert!(hooks.iter().any(|h| h == name), "{name} in {hooks:?}");
    }
    let deploy = &objects(&on, "controller-deployment.yaml")[0];
    let args = &deploy["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--feature-gates=CloneSetController=true"),
        "{args}"
    );

    let err = render(&["agent.featureGates.KruiseDaemon=true"]).unwrap_err();
    assert!(err.contains("KruiseDaemon"), "{err}");
    let err = render(&["runtime=docker"]).unwrap_err();
    assert!(err.contains("runtime"), "{err}");
}
