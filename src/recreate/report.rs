//! What the CRR executor reports: the CRR's `/status` (phase, container states, completion),
//! written with merge patches guarded by the resourceVersion, and the Pod Events of a stop.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::info;

use super::{Crr, Executor, Phase, State, SyncError, decide, name_of};
use crate::cluster::events::{EventType, Note};
use crate::cluster::{is_conflict, is_not_found};

impl Executor {
    pub(super) fn api(&self, crr: &Crr) -> Api<Crr> {
        Api::namespaced(
            self.cfg.client.clone(),
            &crr.namespace().unwrap_or_default(),
        )
    }

    pub(super) async fn patch_status(
        &self,
        crr: &Crr,
        what: &'static str,
        patch: serde_json::Value,
    ) -> Result<Arc<Crr>, SyncError> {
        let patched = self
            .api(crr)
            .patch_status(
                &crr.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|source| SyncError::Api {
                crr: name_of(crr),
                what,
                source,
            })?;
        Ok(self.remember(patched))
    }

    /// Set the CRR's phase, guarded by its resourceVersion so a completion written meanwhile by
    /// the controller is never overwritten.
    pub(super) async fn set_phase(&self, crr: &Crr, phase: Phase) -> Result<Arc<Crr>, SyncError> {
        let patch = json!({
            "metadata": {"resourceVersion": crr.metadata.resource_version},
            "status": {"phase": phase},
        });
        let out = self.patch_status(crr, "setting the phase", patch).await?;
        info!(crr = %name_of(crr), pod = %crr.spec.pod_name, phase = %phase, "CRR phase");
        Ok(out)
    }

    /// Report `Recreating` and the container states when they changed. Guarded by the
    /// resourceVersion: when the CRR changed meanwhile it is read again, and a CRR the controller
    /// completed meanwhile (deadline) keeps its final states.
    pub(super) async fn write_progress(
        &self,
        crr: &Crr,
        states: &[State],
    ) -> Result<(), SyncError> {
        let mut crr = crr.clone();
        for _ in 0..3 {
            let current = crr.status.clone().unwrap_or_default();
            if current.phase == Some(Phase::Recreating)
                && current.container_recreate_states == states
            {
                return Ok(());
            }
            let patch = json!({
                "metadata": {"resourceVersion": crr.metadata.resource_version},
                "status": {"phase": Phase::Recreating, "containerRecreateStates": states},
            });
            match self.patch_status(&crr, "reporting progress", patch).await {
                Ok(_) => return Ok(()),
                Err(SyncError::Api { source, .. }) if is_conflict_or_gone(&source) => {}
                Err(e) => return Err(e),
            }
            crr = match self.api(&crr).get_status(&crr.name_any()).await {
                Ok(c) => c,
                Err(e) if is_conflict_or_gone(&e) => return Ok(()),
                Err(source) => {
                    return Err(SyncError::Api {
                        crr: name_of(&crr),
                        what: "reading the CRR",
                        source,
                    });
                }
            };
            if !decide::is_open(&crr) {
                info!(crr = %name_of(&crr), "CRR completed meanwhile; its final states stand");
                return Ok(());
            }
        }
        Ok(())
    }

    pub(super) async fn complete(
        &self,
        crr: &Crr,
        message: &str,
        states: Option<&[State]>,
    ) -> Result<(), SyncError> {
        let at = k8s_openapi::jiff::Timestamp::now();
        let mut patch = json!({
            "metadata": {"resourceVersion": crr.metadata.resource_version},
            "status": {"phase": Phase::Completed, "completionTime": Time(at), "message": message},
        });
        if let Some(states) = states {
            patch["status"]["containerRecreateStates"] = json!(states);
        }
        self.patch_status(crr, "completing", patch).await?;
        info!(crr = %name_of(crr), pod = %crr.spec.pod_name, message = %message, "CRR completed");
        Ok(())
    }

    /// Write an Event on the pod in the background: the stop does not wait for the API.
    pub(super) fn event(
        &self,
        crr: &Crr,
        container: &str,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let n = Note::new(
            Self::pod_reference(crr, container),
            type_,
            reason,
            "RecreateContainer",
            note,
        );
        self.events.spawn(n);
    }

    /// The Pod as an Event's subject (`spec.containers{name}` as the kubelet's Events do).
    pub(super) fn pod_reference(crr: &Crr, container: &str) -> ObjectReference {
        ObjectReference {
            field_path: Some(format!("spec.containers{{{container}}}")),
            ..crate::cluster::events::pod_reference(
                &crr.namespace().unwrap_or_default(),
                &crr.spec.pod_name,
                crr.pod_uid(),
            )
        }
    }
}

pub(super) fn is_conflict_or_gone(e: &kube::Error) -> bool {
    is_conflict(e) || is_not_found(e)
}
