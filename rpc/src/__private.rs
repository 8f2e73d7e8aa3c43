//! Helpers called by `#[rpc::service]`-generated code. Not a public API.

pub use crate::service::CallFuture;
pub use bytes::Bytes;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::Error;
use crate::service::{CallOptions, Method, Transport};
use crate::status::Status;

/// Decodes a request body, naming the method, the field (by its path in
/// the body: `txn.success[0].Put.key`; "the body" when the fault is the
/// body as a whole) and serde's reason on failure; structs must be JSON
/// objects (see [`crate::strict`]).
pub fn decode_request<T: DeserializeOwned>(method: &Method, body: &[u8]) -> Result<T, Status> {
    crate::strict::from_slice_with_path(body).map_err(|(path, e)| {
        let at = if path == "." {
            "the body".to_string()
        } else {
            format!("field `{path}`")
        };
        Status::invalid_argument(format!(
            "request body of {} is not valid: {at}: {e}",
            method.path
        ))
    })
}

/// Encodes a response body.
pub fn encode_response<T: Serialize>(response: &T) -> Result<Bytes, Status> {
    serde_json::to_vec(response)
        .map(Bytes::from)
        .map_err(|e| Status::internal(format!("cannot encode the response: {e}")))
}

/// One client call: encode, send with a deadline, decode.
pub async fn call<Req, Resp>(
    transport: &dyn Transport,
    method: &'static Method,
    request: &Req,
    options: &CallOptions,
) -> Result<Resp, Error>
where
    Req: Serialize + ?Sized,
    Resp: DeserializeOwned,
{
    let body = serde_json::to_vec(request).map_err(|e| Error::Encode {
        path: method.path,
        reason: e.to_string(),
    })?;
    let timeout = options
        .timeout
        .unwrap_or_else(|| transport.default_timeout());
    let options = CallOptions {
        timeout: Some(timeout),
        ..*options
    };
    let span = tracing::debug_span!("rpc.call", path = method.path);
    let sent = transport.call(method, Bytes::from(body), &options);
    let response = match tokio::time::timeout(timeout, sent).instrument(span).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(Error::DeadlineExceeded {
                path: method.path,
                timeout,
            });
        }
    };
    serde_json::from_slice(&response).map_err(|e| Error::Decode {
        path: method.path,
        reason: e.to_string(),
    })
}
