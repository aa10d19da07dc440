//! REST's HTTP/1.1 side on hyper: framing, keep-alive, pipelining, `Expect: 100-continue`,
//! HEAD and HTTP/1.0 are hyper's; what a client could push on is bounded here, without Python
//! (body size, slow or idle clients, open connections, requests waiting for Python, answers
//! that take too long). Whole requests go to the one Python dispatcher through a `CallQueue`,
//! as gRPC calls do; Python routes them and hands back a status, headers and body bytes.
//! Every refusal is TensorFlow Serving's REST error shape, `{"error": "..."}`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_rustls::TlsAcceptor;

use crate::queue::CallQueue;

/// A request head (request line and header fields) larger than this is refused with 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What clients may make the server hold, and for how long (counts of 0: no bound).
#[derive(Clone, Debug)]
pub struct RestLimits {
    pub max_body: usize,
    /// To read one request's body, once its head has arrived.
    pub read_timeout: Duration,
    /// For Python's answer; past it the client gets 504 and Python's work is cancelled.
    pub answer_timeout: Duration,
    /// From the end of an answer (or the connection's start) to the end of the next head.
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_pending: usize,
}

/// What Python answers: status, header fields (Content-Length and Date are added), body.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One request whose body has arrived, as Python reads it, and the way back to its connection.
pub struct Exchange {
    pub id: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Lower-case names, each once (repeated fields joined with ", "), values as Latin-1.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub deadline: Instant,
    ended: AtomicBool, // answered, or ended without Python (timeout, client gone)
    dispatched: AtomicBool,
    answer: Mutex<Option<oneshot::Sender<Answer>>>,
}

impl Exchange {
    /// Whether the request is over for Python: answered, timed out, or its client gone.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub fn mark_dispatched(&self) {
        self.dispatched.store(true, Ordering::Release);
    }

    /// Hand Python's answer to the connection; false when the request is already over.
    pub fn respond(&self, answer: Answer) -> bool {
        let Some(tx) = self.answer.lock().unwrap().take() else {
            return false;
        };
        self.ended.store(true, Ordering::Release);
        tx.send(answer).is_ok()
    }

    /// The connection gave up on the request: Python, if it holds it, hears of it again
    /// (queued once more, now `ended`), so a batch can drop the caller.
    fn end_early(self: &Arc<Self>, queue: &CallQueue<Exchange>) {
        let unanswered = self.answer.lock().unwrap().take().is_some();
        self.ended.store(true, Ordering::Release);
        if unanswered && self.dispatched.load(Ordering::Acquire) {
            queue.push(Arc::clone(self), 0);
        }
    }
}

/// What every connection of one REST server shares.
pub struct Shared {
    pub queue: Arc<CallQueue<Exchange>>,
    pub limits: RestLimits,
    pub next_id: AtomicU64,
    pub pending: AtomicUsize,     // requests in Python's hands
    pub connections: AtomicUsize, // open connections
}

/// Holds a slot of a counter (`pending`, `connections`) until dropped.
struct Slot<'a>(&'a AtomicUsize);

impl<'a> Slot<'a> {
    /// A slot, unless `cap` (> 0) are taken already.
    fn take(counter: &'a AtomicUsize, cap: usize) -> Option<Slot<'a>> {
        let before = counter.fetch_add(1, Ordering::AcqRel);
        if cap > 0 && before >= cap {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(counter))
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn json_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut text = String::with_capacity(message.len() + 12);
    text.push_str("{\"error\":\"");
    for c in message.chars() {
        match c {
            '"' => text.push_str("\\\""),
            '\\' => text.push_str("\\\\"),
            c if (c as u32) < 0x20 => text.push_str(&format!("\\u{:04x}", c as u32)),
            c => text.push(c),
        }
    }
    text.push_str("\"}");
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
}

/// A refusal after which the connection cannot go on (the request was not read whole).
fn closing_error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = json_error(status, message);
    response
        .headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    response
}

fn body_too_large(max: usize) -> Response<Full<Bytes>> {
    closing_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!(
            "Request body is larger than the limit of {max} bytes (--rest_api_max_body_bytes)"
        ),
    )
}

fn headers(map: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::with_capacity(map.keys_len());
    for name in map.keys() {
        let mut value = String::new();
        for (i, v) in map.get_all(name).iter().enumerate() {
            if i > 0 {
                value.push_str(", ");
            }
            value.extend(v.as_bytes().iter().map(|&b| b as char)); // Latin-1, as HTTP/1.1 has it
        }
        out.push((name.as_str().to_owned(), value));
    }
    out
}

/// The request's body, refused past `max` bytes (at once when its Content-Length says so)
/// or when it does not arrive whole within `timeout`.
async fn read_body(
    body: Incoming,
    max: usize,
    timeout: Duration,
) -> Result<Bytes, Response<Full<Bytes>>> {
    if body.size_hint().lower() > max as u64 {
        return Err(body_too_large(max));
    }
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Err(_) => Err(closing_error(
            StatusCode::REQUEST_TIMEOUT,
            "Timed out reading the request",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            Err(body_too_large(max))
        }
        Ok(Err(_)) => Err(closing_error(
            StatusCode::BAD_REQUEST,
            "Malformed request body",
        )),
    }
}

/// Ends the request for Python if the connection drops it (client gone) before an answer.
struct Held {
    exchange: Arc<Exchange>,
    queue: Arc<CallQueue<Exchange>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.exchange.ended() {
            self.exchange.end_early(&self.queue);
        }
    }
}

/// Serve one request: read it whole, hand it to Python, wait for the answer.
pub async fn serve(shared: Arc<Shared>, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let limits = &shared.limits;
    let (head, body) = request.into_parts();
    let body = match read_body(body, limits.max_body, limits.read_timeout).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    let Some(_pending) = Slot::take(&shared.pending, limits.max_pending) else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "Too many requests are waiting for a model (--rest_api_max_pending_requests={})",
                limits.max_pending
            ),
        );
    };
    let (tx, rx) = oneshot::channel();
    let exchange = Arc::new(Exchange {
        id: shared.next_id.fetch_add(1, Ordering::Relaxed) + 1,
        // HEAD is served as GET; hyper sends the answer's head only.
        method: if head.method == Method::HEAD {
            "GET".to_owned()
        } else {
            head.method.as_str().to_owned()
        },
        path: head.uri.path().to_owned(),
        query: head.uri.query().unwrap_or("").to_owned(),
        headers: headers(&head.headers),
        body,
        deadline: Instant::now() + limits.answer_timeout,
        ended: AtomicBool::new(false),
        dispatched: AtomicBool::new(false),
        answer: Mutex::new(Some(tx)),
    });
    let held = Held {
        exchange: Arc::clone(&exchange),
        queue: Arc::clone(&shared.queue),
    };
    if !shared.queue.push(exchange, 0) {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "The server is stopping");
    }
    let answer = match tokio::time::timeout(limits.answer_timeout, rx).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(_)) => {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, "The request was cancelled")
        }
        Err(_) => {
            drop(held); // Python's work is cancelled: a batch drops this caller
            let ms = limits.answer_timeout.as_millis();
            return json_error(
                StatusCode::GATEWAY_TIMEOUT,
                &format!("Request timed out: no answer within {ms} ms (--rest_api_timeout_in_ms)"),
            );
        }
    };
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    response
}

/// Where a server is in its life; connections watch it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Draining, // no new connections; requests under way may finish
}

pub async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    mut phase: watch::Receiver<Phase>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = phase.wait_for(|p| *p != Phase::Serving) => return,
        };
        let Ok((stream, _)) = accepted else {
            // Out of descriptors or a connection reset before accept: wait a moment, go on.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (shared, tls, phase) = (Arc::clone(&shared), tls.clone(), phase.clone());
        tokio::spawn(async move {
            let cap = shared.limits.max_connections;
            let Some(_open) = Slot::take(&shared.connections, cap) else {
                return refuse_connection(stream).await;
            };
            match tls {
                None => serve_http1(stream, &shared, phase).await,
                Some(acceptor) => {
                    let handshake = acceptor.accept(stream);
                    if let Ok(Ok(stream)) =
                        tokio::time::timeout(shared.limits.read_timeout, handshake).await
                    {
                        serve_http1(stream, &shared, phase).await
                    }
                }
            }
        });
    }
}

/// One connection over the cap: a 503 written directly, then the close.
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    const BODY: &str = "{\"error\":\"Too many open connections\"}";
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let write = async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

pub async fn serve_http1<I>(io: I, shared: &Arc<Shared>, mut phase: watch::Receiver<Phase>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.limits.idle_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let for_requests = Arc::clone(shared);
    let service = service_fn(move |request| {
        let shared = Arc::clone(&for_requests);
        async move { Ok::<_, Infallible>(serve(shared, request).await) }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    if *phase.borrow_and_update() == Phase::Serving {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = phase.wait_for(|p| *p != Phase::Serving) => {},
        }
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_json_with_escapes() {
        let response = json_error(StatusCode::BAD_REQUEST, "a \"b\" \\ \n");
        let body = futures_body(response);
        assert_eq!(body, "{\"error\":\"a \\\"b\\\" \\\\ \\u000a\"}");
    }

    fn futures_body(response: Response<Full<Bytes>>) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn slots_stop_at_the_cap() {
        let counter = AtomicUsize::new(0);
        let first = Slot::take(&counter, 1);
        assert!(first.is_some());
        assert!(Slot::take(&counter, 1).is_none());
        drop(first);
        assert!(Slot::take(&counter, 1).is_some());
        assert_eq!(counter.load(Ordering::Acquire), 0);
    }
}

/// The REST request path without sockets or Python, for the fuzz target (native/fuzz):
/// `input` arrives as the bytes of one HTTP/1.1 connection; what the server answers is read
/// and dropped. A stand-in dispatcher answers every request it takes with a fixed body, so
/// the answer path, the pending bound and the body limit all get exercised.
#[cfg(fuzzing)]
pub fn serve_rest_bytes(input: &[u8]) {
    use tokio::io::AsyncReadExt;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let shared = Arc::new(Shared {
        queue: Arc::new(CallQueue::new(Duration::ZERO)),
        limits: RestLimits {
            max_body: 4096,
            read_timeout: Duration::from_secs(2),
            answer_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(2),
            max_connections: 0,
            max_pending: 4,
        },
        next_id: AtomicU64::new(0),
        pending: AtomicUsize::new(0),
        connections: AtomicUsize::new(0),
    });
    let queue = Arc::clone(&shared.queue);
    let dispatcher = std::thread::spawn(move || {
        while let taken @ [_, ..] = &queue.take_all()[..] {
            for exchange in taken {
                exchange.respond(Answer {
                    status: StatusCode::OK,
                    headers: HeaderMap::new(),
                    body: Bytes::from_static(b"{}"),
                });
            }
        }
    });
    runtime.block_on(async {
        let (_phase, watching) = watch::channel(Phase::Serving);
        let (client, server) = tokio::io::duplex(1 << 16);
        let serving = tokio::spawn({
            let shared = Arc::clone(&shared);
            async move { serve_http1(server, &shared, watching).await }
        });
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 16];
            while matches!(from_server.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let _ = to_server.write_all(input).await;
        let _ = to_server.shutdown().await;
        // The connection ends at the input's end (or a timeout); one open after this is a hang.
        let _ = tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .expect("the connection outlived its input by 10 s");
        drain.abort();
    });
    shared.queue.close();
    dispatcher.join().expect("the stand-in dispatcher");
}
