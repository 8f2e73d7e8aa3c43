//! VM power operations through ARM's REST API (the 1.x SDK has no compute
//! client, so the two calls are made here on its pipeline): the power state
//! from `GET …/virtualMachines/{vm}/instanceView` and `POST …/start`, both
//! at api-version 2024-07-01, on an `azure_core` pipeline with a bearer
//! token for `https://management.azure.com/.default`.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::error::CheckSuccessOptions;
use azure_core::http::policies::Policy;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{
    ClientOptions, Context, Method, Pipeline, PipelineSendOptions, Request, Transport, Url,
};
use serde::Deserialize;

use crate::CloudError;

/// The ARM API version of the compute calls.
pub const API_VERSION: &str = "2024-07-01";
const SCOPE: &str = "https://management.azure.com/.default";

/// A VM's power state, as the instance view's `PowerState/*` code says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerState {
    /// `running`.
    Running,
    /// `deallocated`: evicted (Spot) or stopped and released; must be started.
    Deallocated,
    /// `stopped`: stopped but still allocated.
    Stopped,
    /// `starting`, `stopping`, `deallocating`: on its way.
    Transitioning(String),
    /// No power state reported.
    Unknown,
}

impl PowerState {
    /// Whether starting the VM is what it needs.
    pub fn needs_start(&self) -> bool {
        matches!(self, PowerState::Deallocated | PowerState::Stopped)
    }
}

#[derive(Deserialize)]
struct InstanceView {
    #[serde(default)]
    statuses: Vec<StatusCode>,
}

#[derive(Deserialize)]
struct StatusCode {
    code: String,
}

/// Power state from an instance view's status codes.
pub fn power_state<'a>(codes: impl IntoIterator<Item = &'a str>) -> PowerState {
    for code in codes {
        if let Some(state) = code.strip_prefix("PowerState/") {
            return match state {
                "running" => PowerState::Running,
                "deallocated" => PowerState::Deallocated,
                "stopped" => PowerState::Stopped,
                other => PowerState::Transitioning(other.to_owned()),
            };
        }
    }
    PowerState::Unknown
}

/// VMs of one resource group.
pub struct Vms {
    pipeline: Pipeline,
    base: Url,
}

impl Vms {
    /// VMs of `resource_group` in `subscription`; `endpoint` is ARM's
    /// (`https://management.azure.com/`); `transport` replaces the HTTP
    /// client (tests).
    pub fn new(
        endpoint: &str,
        subscription: &str,
        resource_group: &str,
        credential: Arc<dyn TokenCredential>,
        transport: Option<Transport>,
    ) -> Result<Vms, CloudError> {
        let base = Url::parse(endpoint)
            .and_then(|u| {
                u.join(&format!(
                    "subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/virtualMachines/"
                ))
            })
            .map_err(|e| CloudError::Invalid(format!("ARM endpoint {endpoint:?}: {e}")))?;
        let auth: Arc<dyn Policy> =
            Arc::new(BearerTokenAuthorizationPolicy::new(credential, [SCOPE]));
        let pipeline = Pipeline::new(
            option_env!("CARGO_PKG_NAME"),
            option_env!("CARGO_PKG_VERSION"),
            ClientOptions {
                transport,
                ..Default::default()
            },
            Vec::new(),
            vec![auth],
            None,
        );
        Ok(Vms { pipeline, base })
    }

    fn url(&self, vm: &str, action: &str) -> Result<Url, CloudError> {
        let mut url = self
            .base
            .join(&format!("{vm}/{action}"))
            .map_err(|e| CloudError::Invalid(format!("VM name {vm:?}: {e}")))?;
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        Ok(url)
    }

    async fn send(
        &self,
        what: String,
        request: &mut Request,
        ok: &'static [u16],
    ) -> Result<Vec<u8>, CloudError> {
        let options = PipelineSendOptions {
            check_success: CheckSuccessOptions { success_codes: ok },
            ..Default::default()
        };
        let response = self
            .pipeline
            .send(&Context::default(), request, Some(options))
            .await
            .map_err(|source| CloudError::Azure {
                what: what.clone(),
                source,
            })?;
        Ok(response.into_body().to_vec())
    }

    /// The power state of `vm`.
    pub async fn power_state(&self, vm: &str) -> Result<PowerState, CloudError> {
        let what = format!("reading the instance view of VM {vm}");
        let mut request = Request::new(self.url(vm, "instanceView")?, Method::Get);
        request.insert_header("accept", "application/json");
        let body = self.send(what.clone(), &mut request, &[200]).await?;
        let view: InstanceView = serde_json::from_slice(&body).map_err(|e| CloudError::Answer {
            what,
            reason: e.to_string(),
        })?;
        Ok(power_state(view.statuses.iter().map(|s| s.code.as_str())))
    }

    /// Starts `vm` (ARM answers 202 and starts it asynchronously).
    pub async fn start(&self, vm: &str) -> Result<(), CloudError> {
        let mut request = Request::new(self.url(vm, "start")?, Method::Post);
        request.insert_header("content-length", "0");
        self.send(format!("starting VM {vm}"), &mut request, &[200, 202])
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_states_read_like_the_instance_view() {
        assert_eq!(
            power_state(["ProvisioningState/succeeded", "PowerState/deallocated"]),
            PowerState::Deallocated
        );
        assert_eq!(power_state(["PowerState/running"]), PowerState::Running);
        assert_eq!(
            power_state(["PowerState/starting"]),
            PowerState::Transitioning("starting".into())
        );
        assert_eq!(
            power_state(["ProvisioningState/succeeded"]),
            PowerState::Unknown
        );
        assert!(PowerState::Deallocated.needs_start() && !PowerState::Running.needs_start());
    }
}
