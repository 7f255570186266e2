//! Image pre-pull through the agent against direct CRI pulls: 8 distinct images of about 5 MiB
//! (busybox plus random padding) from the test bed's registry, at most 2 pulls at once both ways.
//! Agent rounds: write the NodeImage spec (a new version each round) into the in-memory API
//! server and time until its status shows every tag Succeeded. Direct rounds: `PullImage` calls,
//! 2 at a time. Rounds alternate (which comes first too), the images are removed before each.
//! Prints `RESULT image_pull images=8 agent_s=… direct_s=… ratio=… agent_rss_mib=…` (medians;
//! the agent's VmRSS after its ready line and after the last round).

use nodeward_testkit as support;

use support::bench::env_or;

use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use k8s_cri::v1::{ImageSpec as CriImageSpec, PullImageRequest, RemoveImageRequest};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::PostParams;
use kube::runtime::wait::await_condition;
use nodeward::api::kruise::{
    ImagePullPhase, ImageSpec, ImageTagPullPolicy, ImageTagSpec, NodeImage, NodeImageSpec,
};
use support::agent::AgentProcess;
use support::apiserver::ApiServer;
use support::rbac;
use support::registry;
use support::testbed::{TestBed, cri_call};

const IMAGES: usize = 8;
const CONCURRENCY: usize = 2;
/// Padding per image; with the ~1.9 MiB static busybox about 5 MiB each.
const PAD_KIB: usize = 3 * 1024;
const NODE: &str = "bench-node";

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spec(keys: &[String], version: i64) -> NodeImageSpec {
    let tag = ImageTagSpec {
        tag: "v1".into(),
        created_at: Some(Time(k8s_openapi::jiff::Timestamp::now())),
        pull_policy: Some(ImageTagPullPolicy {
            timeout_seconds: Some(600),
            backoff_limit: Some(3),
            ttl_seconds_after_finished: Some(600),
            active_deadline_seconds: None,
        }),
        version,
        ..Default::default()
    };
    NodeImageSpec {
        images: keys
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    ImageSpec {
                        tags: vec![tag.clone()],
                        ..Default::default()
                    },
                )
            })
            .collect(),
    }
}

async fn remove_all(tb: &TestBed, keys: &[String]) -> anyhow::Result<()> {
    let mut images = tb.image_service();
    for key in keys {
        let req = RemoveImageRequest {
            image: Some(CriImageSpec {
                image: format!("{key}:v1"),
                ..Default::default()
            }),
        };
        cri_call("RemoveImage", images.remove_image(req)).await?;
    }
    // Let containerd's garbage collector drop the content before the next round.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

async fn agent_round(
    nodeimages: &Api<NodeImage>,
    keys: &[String],
    version: i64,
) -> anyhow::Result<f64> {
    let done = await_condition(nodeimages.clone(), NODE, move |n: Option<&NodeImage>| {
        n.and_then(|n| n.status.as_ref()).is_some_and(|s| {
            s.succeeded as usize == IMAGES
                && s.image_statuses.values().all(|i| {
                    i.tags
                        .iter()
                        .all(|t| t.version == version && t.phase == ImagePullPhase::Succeeded)
                })
        })
    });
    let start = Instant::now();
    match nodeimages.get_opt(NODE).await? {
        Some(mut obj) => {
            obj.spec = spec(keys, version);
            nodeimages
                .replace(NODE, &PostParams::default(), &obj)
                .await?;
        }
        None => {
            let obj = NodeImage::new(NODE, spec(keys, version));
            nodeimages.create(&PostParams::default(), &obj).await?;
        }
    }
    tokio::time::timeout(Duration::from_secs(300), done).await??;
    Ok(start.elapsed().as_secs_f64())
}

async fn direct_round(tb: &TestBed, keys: &[String]) -> anyhow::Result<f64> {
    let images = tb.image_service();
    let start = Instant::now();
    stream::iter(keys)
        .map(|key| {
            let mut images = images.clone();
            let req = PullImageRequest {
                image: Some(CriImageSpec {
                    image: format!("{key}:v1"),
                    ..Default::default()
                }),
                ..Default::default()
            };
            async move { cri_call("PullImage", images.pull_image(req)).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(start.elapsed().as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let rounds = env_or("NODEWARD_BENCH_ROUNDS", 5u64).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let tb = TestBed::shared();
        let api = ApiServer::start().await?;
        let kubeconfig = api.service_account_kubeconfig(tb.dir(), rbac::AGENT)?;
        let layout =
            tokio::task::spawn_blocking(|| support::images::ensure_pull_layout(IMAGES, PAD_KIB))
                .await??;
        let mut keys = Vec::new();
        for i in 0..IMAGES {
            let key = format!("127.0.0.1:{}/bench-{i}", tb.registry_port());
            registry::push(&layout, &format!("pull-{i}"), &format!("{key}:v1"), None).await?;
            keys.push(key);
        }
        let agent = AgentProcess::spawn(
            tb,
            &[
                "--kubeconfig",
                kubeconfig.to_str().unwrap_or_default(),
                "--node-name",
                NODE,
                "--max-concurrent-pulls",
                &CONCURRENCY.to_string(),
            ],
        )?;
        agent.wait_ready().await?;
        let ready_rss = agent.rss_kib().unwrap_or_default();
        let nodeimages: Api<NodeImage> = Api::all(api.client());
        // One unmeasured pull of everything warms the registry and the agent up.
        direct_round(tb, &keys).await?;
        let (mut agent_s, mut direct_s) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let version = i64::try_from(round)?;
            for agent_first in [round % 2 == 0, round % 2 == 1] {
                remove_all(tb, &keys).await?;
                if agent_first {
                    let s = agent_round(&nodeimages, &keys, version).await?;
                    eprintln!("image_pull: round {round} agent {s:.3} s");
                    agent_s.push(s);
                } else {
                    let s = direct_round(tb, &keys).await?;
                    eprintln!("image_pull: round {round} direct {s:.3} s");
                    direct_s.push(s);
                }
            }
        }
        let (a, d) = (median(&mut agent_s), median(&mut direct_s));
        let mib = |kib: u64| kib as f64 / 1024.0;
        let rss = agent.rss_kib().unwrap_or_default();
        println!(
            "RESULT image_pull images={IMAGES} agent_s={a:.3} direct_s={d:.3} ratio={:.3} agent_rss_mib={:.1} agent_rss_ready_mib={:.1}",
            a / d,
            mib(rss),
            mib(ready_rss),
        );
        agent.stop().await?;
        remove_all(tb, &keys).await?;
        tb.shutdown().await?;
        anyhow::Ok(())
    })
}
