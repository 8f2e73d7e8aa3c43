//! HTTP/1.1 framing of calls, as pure functions of bytes.
//!
//! The server side uses hyper; these functions are what the pipelining client
//! needs on top (hyper's client cannot pipeline), plus the pieces both sides
//! share: the timeout header and the reading of an answer into a result.
//!
//! Invariants: a request head never contains caller-controlled bytes other
//! than the path (a `'static` from generated code), the token (checked to be
//! visible ASCII when the client is built) and numbers; a response is only
//! accepted with a `content-length` (the server always sends one).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::Error;
use crate::status::{Code, Status};

/// The header that carries a call's remaining time, in milliseconds.
pub(crate) const TIMEOUT_HEADER: &str = "rpc-timeout-ms";

/// Longest response head the client accepts.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Most headers the client parses in a response.
const MAX_HEADERS: usize = 32;

/// Encodes `timeout` as the header value: whole milliseconds, at least 1 so
/// that a nearly-expired deadline does not read as "none".
pub(crate) fn timeout_value(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Parses the timeout header's value.
pub(crate) fn parse_timeout(value: &[u8]) -> Result<Duration, Status> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_millis)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "header {TIMEOUT_HEADER} must be a whole number of milliseconds, got {:?}",
                String::from_utf8_lossy(value)
            ))
        })
}

/// The parts of a request head that stay the same for every call of a client.
#[derive(Debug, Clone)]
pub(crate) struct RequestHead {
    /// `host: ...\r\ncontent-type: ...\r\n[authorization: ...\r\n]`
    fixed: Bytes,
}

impl RequestHead {
    /// `host` and `token` must already be checked to be visible ASCII.
    pub(crate) fn new(host: &str, token: Option<&str>) -> Self {
        let mut fixed = BytesMut::new();
        fixed.put_slice(b"host: ");
        fixed.put_slice(host.as_bytes());
        fixed.put_slice(b"\r\ncontent-type: application/json\r\n");
        if let Some(token) = token {
            fixed.put_slice(b"authorization: Bearer ");
            fixed.put_slice(token.as_bytes());
            fixed.put_slice(b"\r\n");
        }
        RequestHead {
            fixed: fixed.freeze(),
        }
    }

    /// One complete request: head and body.
    pub(crate) fn encode(&self, path: &str, timeout: Option<Duration>, body: &[u8]) -> Bytes {
        let mut ints = itoa::Buffer::new();
        let mut out = BytesMut::with_capacity(64 + path.len() + self.fixed.len() + body.len());
        out.put_slice(b"POST ");
        out.put_slice(path.as_bytes());
        out.put_slice(b" HTTP/1.1\r\n");
        out.put_slice(&self.fixed);
        if let Some(timeout) = timeout {
            out.put_slice(TIMEOUT_HEADER.as_bytes());
            out.put_slice(b": ");
            out.put_slice(ints.format(timeout_value(timeout)).as_bytes());
            out.put_slice(b"\r\n");
        }
        out.put_slice(b"content-length: ");
        out.put_slice(ints.format(body.len()).as_bytes());
        out.put_slice(b"\r\n\r\n");
        out.put_slice(body);
        out.freeze()
    }
}

/// One parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The body.
    pub(crate) body: Bytes,
    /// The server will close the connection after this response: requests
    /// pipelined behind it were not processed (RFC 9112 §9.6).
    pub(crate) close: bool,
}

/// Takes one complete response off the front of `buf`; `Ok(None)` when more
/// bytes are needed. An error means the stream is unusable.
pub(crate) fn parse_response(
    buf: &mut BytesMut,
    max_body_bytes: usize,
) -> Result<Option<Response>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(format!("response head longer than {MAX_HEAD_BYTES} bytes"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("malformed response head: {e}")),
    };
    let status = parsed.code.ok_or("response without a status code")?;
    let mut close = parsed.version == Some(0);
    let mut content_length = None;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or("invalid content-length")?;
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("chunked responses are not supported".into());
        } else if h.name.eq_ignore_ascii_case("connection") {
            close |= String::from_utf8_lossy(h.value)
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"));
        }
    }
    let length = content_length.ok_or("response without content-length")?;
    if length > max_body_bytes {
        return Err(format!(
            "response body of {length} bytes exceeds the limit of {max_body_bytes}"
        ));
    }
    if buf.len() < head_len + length {
        buf.reserve(head_len + length - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(head_len + length);
    let body = frame.split_off(head_len).freeze();
    Ok(Some(Response {
        status,
        body,
        close,
    }))
}

/// Turns an answer into the call's result: the body on 200, else the error
/// envelope (or, if the body is not one, a status from the HTTP code).
pub(crate) fn into_result(status: u16, body: Bytes) -> Result<Bytes, Error> {
    if status == 200 {
        return Ok(body);
    }
    let status = serde_json::from_slice::<Status>(&body).unwrap_or_else(|_| {
        let shown: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        Status::new(
            Code::from_http_status(status),
            format!("HTTP {status} without an error envelope: {shown:?}"),
        )
    });
    Err(Error::Status(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_a_request() {
        let head = RequestHead::new("127.0.0.1:80", Some("s3cret"));
        let req = head.encode("/Echo/echo", Some(Duration::from_micros(1500)), b"{}");
        assert_eq!(
            &req[..],
            b"POST /Echo/echo HTTP/1.1\r\nhost: 127.0.0.1:80\r\ncontent-type: application/json\r\n\
              authorization: Bearer s3cret\r\nrpc-timeout-ms: 1\r\ncontent-length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn parses_pipelined_responses_across_partial_reads() {
        let wire = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\nconnection: close\r\n\r\nhello";
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for byte in wire {
            buf.put_u8(*byte);
            while let Some(r) = parse_response(&mut buf, 100).unwrap() {
                got.push(r);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].status, &got[0].body[..], got[0].close),
            (200, &b"{}"[..], false)
        );
        assert_eq!(
            (got[1].status, &got[1].body[..], got[1].close),
            (404, &b"hello"[..], true)
        );
    }

    #[test]
    fn refuses_oversized_and_unframed_responses() {
        let mut big = BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-length: 101\r\n\r\n"[..]);
        assert!(
            parse_response(&mut big, 100)
                .unwrap_err()
                .contains("exceeds")
        );
        let mut chunked =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"[..]);
        assert!(
            parse_response(&mut chunked, 100)
                .unwrap_err()
                .contains("chunked")
        );
        let mut garbage = BytesMut::from(&b"SSH-2.0-OpenSSH\r\n\r\n"[..]);
        assert!(parse_response(&mut garbage, 100).is_err());
    }

    #[test]
    fn answers_become_results() {
        let ok = into_result(200, Bytes::from_static(b"{}")).unwrap();
        assert_eq!(&ok[..], b"{}");
        let err = into_result(404, Status::not_found("gone").to_json()).unwrap_err();
        assert_eq!(err.status(), Some(&Status::not_found("gone")));
        let bare = into_result(503, Bytes::from_static(b"busy")).unwrap_err();
        assert_eq!(bare.code(), Code::Unavailable);
    }

    #[test]
    fn timeout_header_parses_strictly() {
        assert_eq!(parse_timeout(b"250").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_timeout(b"-1").unwrap_err().code,
            Code::InvalidArgument
        );
        assert_eq!(
            parse_timeout(b"1.5").unwrap_err().code,
            Code::InvalidArgument
        );
    }
}
