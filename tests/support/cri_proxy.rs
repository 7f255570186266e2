//! A recording CRI proxy: a tonic server from k8s-cri's service definitions on a unix socket that
//! forwards every RuntimeService and ImageService call to the test bed's containerd. It records
//! each `PullImageRequest`, counts the pulls and the verbose `ContainerStatus` reads in flight (and
//! the most at once), can hold pulls of chosen images back for a while (a slow registry, without a
//! slow registry) and verbose status reads too (a loaded runtime), and can leave calls of chosen
//! methods unanswered until the client gives up (a hung runtime).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::image_service_server::{ImageService, ImageServiceServer};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use k8s_cri::v1::*;
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Pulls of images whose reference contains `pattern` wait `delay` before being forwarded, for
/// the next `times` pulls (all when `None`).
struct Delay {
    pattern: String,
    delay: Duration,
    times: Option<usize>,
}

/// Calls of `method` (its snake-case name) are never answered, for the next `times` calls (all
/// when `None`).
struct Hang {
    method: &'static str,
    times: Option<usize>,
}

/// Calls of one kind in flight, and the most at once.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

#[derive(Default)]
struct Recorder {
    pulls: Mutex<Vec<PullImageRequest>>,
    pulls_in_flight: Gauge,
    verbose_status_in_flight: Gauge,
    verbose_status_delay: Mutex<Option<Duration>>,
    delays: Mutex<Vec<Delay>>,
    hangs: Mutex<Vec<Hang>>,
    hung: AtomicUsize,
}

impl Recorder {
    /// Whether this call of `method` is to hang, consuming one of its `times`.
    fn hangs(&self, method: &str) -> bool {
        let mut hangs = self.hangs.lock().unwrap();
        let Some(h) = hangs
            .iter_mut()
            .find(|h| h.method == method && h.times.is_none_or(|n| n > 0))
        else {
            return false;
        };
        if let Some(n) = &mut h.times {
            *n -= 1;
        }
        self.hung.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// The delay for a pull of `image`, consuming one of its `times`.
    fn delay_for(&self, image: &str) -> Option<Duration> {
        let mut delays = self.delays.lock().unwrap();
        let d = delays
            .iter_mut()
            .find(|d| image.contains(&d.pattern) && d.times.is_none_or(|n| n > 0))?;
        if let Some(n) = &mut d.times {
            *n -= 1;
        }
        Some(d.delay)
    }
}

/// Counts a call as in flight until dropped (also when the client gives up on it).
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn new(gauge: &'a Gauge) -> Self {
        let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.max.fetch_max(now, Ordering::SeqCst);
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct CriProxy {
    socket: PathBuf,
    recorder: Arc<Recorder>,
    stop: Option<oneshot::Sender<()>>,
}

struct Runtime {
    rt: RuntimeServiceClient<Channel>,
    recorder: Arc<Recorder>,
}

struct Images {
    img: ImageServiceClient<Channel>,
    recorder: Arc<Recorder>,
}

impl CriProxy {
    /// Serve on `socket`, forwarding to the runtime at `upstream`. Runs on the caller's runtime
    /// until dropped.
    pub fn start(upstream: &Path, socket: &Path) -> Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket)
            .with_context(|| format!("binding the CRI proxy on {}", socket.display()))?;
        let channel = nodeward::cri::channel(upstream);
        let recorder = Arc::new(Recorder::default());
        let runtime = Runtime {
            rt: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(16 << 20),
            recorder: recorder.clone(),
        };
        let images = Images {
            img: ImageServiceClient::new(channel).max_decoding_message_size(16 << 20),
            recorder: recorder.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(RuntimeServiceServer::new(runtime).max_decoding_message_size(16 << 20))
                .add_service(ImageServiceServer::new(images))
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                eprintln!("CRI proxy stopped: {e}");
            }
        });
        Ok(Self {
            socket: socket.to_path_buf(),
            recorder,
            stop: Some(stop),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every PullImageRequest received so far.
    pub fn pulls(&self) -> Vec<PullImageRequest> {
        self.recorder.pulls.lock().unwrap().clone()
    }

    /// The PullImageRequests for images whose reference contains `pattern`.
    pub fn pulls_of(&self, pattern: &str) -> Vec<PullImageRequest> {
        self.pulls()
            .into_iter()
            .filter(|p| p.image.as_ref().is_some_and(|i| i.image.contains(pattern)))
            .collect()
    }

    pub fn in_flight(&self) -> usize {
        self.recorder.pulls_in_flight.now.load(Ordering::SeqCst)
    }

    /// The most pulls that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.recorder.pulls_in_flight.max.load(Ordering::SeqCst)
    }

    /// Hold every verbose `ContainerStatus` read for `delay` before forwarding it.
    pub fn delay_verbose_status(&self, delay: Duration) {
        *self.recorder.verbose_status_delay.lock().unwrap() = Some(delay);
    }

    /// The most verbose `ContainerStatus` reads that were in flight at once.
    pub fn max_verbose_status_in_flight(&self) -> usize {
        self.recorder
            .verbose_status_in_flight
            .max
            .load(Ordering::SeqCst)
    }

    /// Hold the next `times` pulls (all: `None`) of images containing `pattern` for `delay`.
    pub fn delay_pulls(&self, pattern: &str, delay: Duration, times: Option<usize>) {
        self.recorder.delays.lock().unwrap().push(Delay {
            pattern: pattern.to_string(),
            delay,
            times,
        });
    }

    /// Leave the next `times` calls (all: `None`) of `method` (snake case, e.g. `stop_container`)
    /// unanswered until the client gives up.
    pub fn hang(&self, method: &'static str, times: Option<usize>) {
        self.recorder
            .hangs
            .lock()
            .unwrap()
            .push(Hang { method, times });
    }

    /// Answer every call again (calls already hung stay so until their client gives up).
    pub fn stop_hanging(&self) {
        self.recorder.hangs.lock().unwrap().clear();
    }

    /// How many calls were left unanswered so far.
    pub fn hung(&self) -> usize {
        self.recorder.hung.load(Ordering::SeqCst)
    }
}

impl Drop for CriProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Forward unary calls to the upstream client `$client`. Written out in the shape
/// `#[async_trait]` gives trait methods, since that attribute does not see into macro calls.
macro_rules! forward {
    ($client:ident; $($method:ident($req:ty) -> $resp:ty;)*) => {
        $(
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                request: Request<$req>,
            ) -> Pin<Box<dyn Future<Output = Result<Response<$resp>, Status>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                let mut client = self.$client.clone();
                let hang = self.recorder.hangs(stringify!($method));
                Box::pin(async move {
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    client.$method(request.into_inner()).await
                })
            }
        )*
    };
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    type GetContainerEventsStream = tonic::Streaming<ContainerEventResponse>;

    async fn get_container_events(
        &self,
        request: Request<GetEventsRequest>,
    ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
        self.rt
            .clone()
            .get_container_events(request.into_inner())
            .await
    }

    async fn container_status(
        &self,
        request: Request<ContainerStatusRequest>,
    ) -> Result<Response<ContainerStatusResponse>, Status> {
        let req = request.into_inner();
        if self.recorder.hangs("container_status") {
            std::future::pending::<()>().await;
        }
        let _in_flight = req
            .verbose
            .then(|| InFlight::new(&self.recorder.verbose_status_in_flight));
        let delay = *self.recorder.verbose_status_delay.lock().unwrap();
        if let (true, Some(delay)) = (req.verbose, delay) {
            tokio::time::sleep(delay).await;
        }
        self.rt.clone().container_status(req).await
    }

    forward! { rt;
        version(VersionRequest) -> VersionResponse;
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        stop_container(StopContainerRequest) -> StopContainerResponse;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        list_containers(ListContainersRequest) -> ListContainersResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        status(StatusRequest) -> StatusResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse;
    }
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn pull_image(
        &self,
        request: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = request.into_inner();
        self.recorder.pulls.lock().unwrap().push(req.clone());
        let _in_flight = InFlight::new(&self.recorder.pulls_in_flight);
        let image = req
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if let Some(delay) = self.recorder.delay_for(&image) {
            tokio::time::sleep(delay).await;
        }
        self.img.clone().pull_image(req).await
    }

    forward! { img;
        list_images(ListImagesRequest) -> ListImagesResponse;
        image_status(ImageStatusRequest) -> ImageStatusResponse;
        remove_image(RemoveImageRequest) -> RemoveImageResponse;
        image_fs_info(ImageFsInfoRequest) -> ImageFsInfoResponse;
    }
}

/// Assert that a recorded pull carried the NodeImage's `sandboxConfig` the tests use (label
/// `app=web`, annotation `team=x`) and the agent's `apps.kruise.io/pulling-image-by` annotation.
pub fn assert_sandbox_forwarded(req: &k8s_cri::v1::PullImageRequest) {
    let sandbox = req.sandbox_config.as_ref().expect("a sandbox config");
    assert_eq!(sandbox.labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(
        sandbox.annotations.get("team").map(String::as_str),
        Some("x")
    );
    assert_eq!(
        sandbox
            .annotations
            .get("apps.kruise.io/pulling-image-by")
            .map(String::as_str),
        Some("nodeward")
    );
}
