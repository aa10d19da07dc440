//! One gRPC call on the server side: check what can be refused without Python, read the
//! one request message, queue the call for the dispatcher, and turn its answer into HTTP/2.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::body::GrpcBody;
use crate::call::{CallGuard, CallInner, Out, Received};
use crate::config::Limits;
use crate::queue::CallQueue;
use crate::status::{put_status, Code};

/// What every call of one server shares.
pub struct Shared {
    pub queue: Arc<CallQueue>,
    pub limits: Limits,
    pub max_pending_calls: usize,
    pub next_id: AtomicU64,
    pub live: mpsc::Sender<()>, // cloned into each call's guard; Frontend::shutdown waits on it
}

/// Headers the transport consumes itself; everything else (ASCII) is the call's metadata.
const TRANSPORT_HEADERS: [&str; 6] = [
    "content-type",
    "te",
    "grpc-timeout",
    "grpc-encoding",
    "grpc-accept-encoding",
    "content-length",
];

type Answer = Response<GrpcBody>;

fn status_only(code: Code, message: &str) -> Answer {
    let mut response = Response::new(GrpcBody::empty());
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    put_status(headers, code, message);
    response
}

fn http_error(status: StatusCode) -> Answer {
    let mut response = Response::new(GrpcBody::empty());
    *response.status_mut() = status;
    response
}

/// grpc-timeout: at most 8 digits and a unit (gRPC's HTTP/2 protocol spec).
fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

fn is_grpc_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get("content-type").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    match value.strip_prefix("application/grpc") {
        Some(rest) => rest.is_empty() || rest.starts_with('+') || rest.starts_with(';'),
        None => false,
    }
}

fn metadata(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            !name.ends_with("-bin") && !TRANSPORT_HEADERS.contains(&name)
        })
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect()
}

/// Why a request message could not be read.
enum ReadError {
    NoMessage,
    TooLarge(usize),
    Compressed,
    Transport,
}

/// The first length-prefixed message of the request body, refused before it is buffered
/// whole when its declared length is over the limit.
async fn read_message(body: &mut Incoming, max: usize) -> Result<Bytes, ReadError> {
    let mut buffer = BytesMut::new();
    loop {
        if buffer.len() >= 5 {
            if buffer[0] != 0 {
                return Err(ReadError::Compressed);
            }
            let length = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
            if length > max {
                return Err(ReadError::TooLarge(length));
            }
            if buffer.len() >= 5 + length {
                buffer.advance(5);
                return Ok(buffer.split_to(length).freeze());
            }
        }
        match body.frame().await {
            None => return Err(ReadError::NoMessage),
            Some(Err(_)) => return Err(ReadError::Transport),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if buffer.is_empty() && data.len() >= 5 {
                        buffer = BytesMut::from(data); // the common case: one frame, one copy less
                    } else {
                        buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Serve one HTTP/2 request as a gRPC call. `verified`: the connection's TLS verified a
/// client certificate against the custom CA.
pub async fn serve(shared: Arc<Shared>, verified: bool, request: Request<Incoming>) -> Answer {
    let arrived = Instant::now();
    if request.method() != Method::POST {
        return http_error(StatusCode::METHOD_NOT_ALLOWED);
    }
    if !is_grpc_content_type(request.headers()) {
        return http_error(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let headers = request.headers();
    if let Some(encoding) = headers.get("grpc-encoding") {
        if encoding.as_bytes() != b"identity" {
            let name = String::from_utf8_lossy(encoding.as_bytes());
            let mut answer = status_only(
                Code::Unimplemented,
                &format!("Compression algorithm '{name}' is not supported"),
            );
            answer
                .headers_mut()
                .insert("grpc-accept-encoding", HeaderValue::from_static("identity"));
            return answer;
        }
    }
    let deadline = match headers.get("grpc-timeout") {
        None => None,
        Some(value) => match parse_timeout(value.as_bytes()) {
            Some(timeout) => Some(
                arrived
                    .checked_add(timeout)
                    .unwrap_or(arrived + Duration::from_secs(86400 * 365)),
            ),
            None => return status_only(Code::Internal, "malformed grpc-timeout"),
        },
    };
    let method = request.uri().path().to_owned();
    let metadata = metadata(headers);
    let mut body = request.into_body();
    let read = read_message(&mut body, shared.limits.max_receive);
    let message = match deadline {
        None => read.await,
        Some(deadline) => match tokio::time::timeout_at(deadline.into(), read).await {
            Ok(message) => message,
            Err(_) => return status_only(Code::DeadlineExceeded, "Deadline Exceeded"),
        },
    };
    let request = match message {
        Ok(request) => request,
        Err(ReadError::NoMessage) => {
            return status_only(Code::Internal, "the call carried no request message")
        }
        Err(ReadError::TooLarge(length)) => {
            let message = format!(
                "Received message larger than max ({length} vs. {})",
                shared.limits.max_receive
            );
            return status_only(Code::ResourceExhausted, &message);
        }
        Err(ReadError::Compressed) => {
            return status_only(
                Code::Internal,
                "a compressed message without a grpc-encoding",
            )
        }
        Err(ReadError::Transport) => {
            return status_only(Code::Cancelled, "the request stream failed")
        }
    };
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return status_only(Code::DeadlineExceeded, "Deadline Exceeded");
    }
    let received = Received {
        method,
        request,
        metadata,
        client_verified: verified,
        deadline,
    };
    dispatch(shared, received, body).await
}

/// Hand the call to Python and wait for the start of its answer.
async fn dispatch(shared: Arc<Shared>, received: Received, body: Incoming) -> Answer {
    let mut sleep: Option<Pin<Box<tokio::time::Sleep>>> = received
        .deadline
        .map(|d| Box::pin(tokio::time::sleep_until(d.into())));
    let (tx, mut answers) = mpsc::unbounded_channel();
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
    let call = Arc::new(CallInner::new(id, received, shared.limits.max_send, tx));
    let mut guard = CallGuard::new(
        Arc::clone(&call),
        Arc::clone(&shared.queue),
        shared.live.clone(),
    );
    if !shared.queue.push(call, shared.max_pending_calls) {
        guard.complete(); // Python never saw it
        return status_only(Code::Unavailable, "too many calls are waiting to be served");
    }
    let first = match sleep.as_mut() {
        None => answers.recv().await,
        Some(sleep) => tokio::select! {
            first = answers.recv() => first,
            _ = sleep.as_mut() => {
                drop(guard); // ends the call: Python hears of it if it holds it
                return status_only(Code::DeadlineExceeded, "Deadline Exceeded");
            }
        },
    };
    drop(body); // the request side is done with: its window need not stay open
    match first {
        Some(Out::Message(message)) => {
            let mut response = Response::new(GrpcBody::streaming(message, answers, sleep, guard));
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/grpc"));
            response
        }
        Some(Out::End(code, message)) => {
            guard.complete();
            status_only(code, &message)
        }
        None => {
            drop(guard);
            status_only(Code::Cancelled, "the call was ended")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_the_spec_says() {
        assert_eq!(parse_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_timeout(b"20m"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_timeout(b"123456789S"), None); // 9 digits
        assert_eq!(parse_timeout(b"S"), None);
        assert_eq!(parse_timeout(b"5x"), None);
        assert_eq!(parse_timeout(b"-5S"), None);
    }
}
