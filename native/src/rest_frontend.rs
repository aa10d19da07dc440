//! The REST server's Python boundary: `RestFrontend` (the listening socket, its runtime and the
//! queue) and `RestRequest` (one request as the dispatcher reads and answers it).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use tokio::runtime::Runtime;
use tokio::sync::watch;

use crate::config::Limits;
use crate::queue::CallQueue;
use crate::rest::{self, Answer, Exchange, Phase, RestLimits, Shared};
use crate::{server, tls};

/// One REST request whose body has arrived (and, again, its early end, if Python holds it).
#[pyclass(frozen, module = "dataplane.transport._native")]
pub struct RestRequest {
    inner: Arc<Exchange>,
}

#[pymethods]
impl RestRequest {
    #[getter]
    fn id(&self) -> u64 {
        self.inner.id
    }
    #[getter]
    fn method(&self) -> &str {
        &self.inner.method
    }
    #[getter]
    fn path(&self) -> &str {
        &self.inner.path
    }
    #[getter]
    fn query(&self) -> &str {
        &self.inner.query
    }
    #[getter]
    fn headers(&self) -> Vec<(String, String)> {
        self.inner.headers.clone()
    }
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.body)
    }
    /// Answered, timed out (the client got 504) or its client gone: nothing more to do.
    #[getter]
    fn ended(&self) -> bool {
        self.inner.ended()
    }
    /// The answer deadline (--rest_api_timeout_in_ms) has passed.
    #[getter]
    fn expired(&self) -> bool {
        Instant::now() >= self.inner.deadline
    }
    /// The answer; false when the request is already over. Content-Length and Date are added.
    fn respond(
        &self,
        status: u16,
        content_type: &str,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> PyResult<bool> {
        let status = StatusCode::from_u16(status)
            .map_err(|_| PyValueError::new_err(format!("not an HTTP status: {status}")))?;
        let mut map = HeaderMap::with_capacity(headers.len() + 1);
        map.insert("content-type", header_value(content_type)?);
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| PyValueError::new_err(format!("not a header name: {name:?}")))?;
            map.append(name, header_value(&value)?);
        }
        Ok(self.inner.respond(Answer {
            status,
            headers: map,
            body: Bytes::from(body),
        }))
    }
}

fn header_value(value: &str) -> PyResult<HeaderValue> {
    HeaderValue::from_str(value)
        .map_err(|_| PyValueError::new_err(format!("not a header value: {value:?}")))
}

/// A started server: its runtime, the phase its connections watch.
struct Running {
    runtime: Runtime,
    phase: watch::Sender<Phase>,
}

/// One REST server: its listening address, HTTP/1.1 connections and the queue for Python.
#[pyclass(module = "dataplane.transport._native")]
pub struct RestFrontend {
    address: String,
    tls: Option<tls::TlsFiles>,
    shared: Arc<Shared>,
    running: Mutex<Option<Running>>,
}

#[pymethods]
impl RestFrontend {
    /// Seconds of 0 or less: a day (no timeout); counts of 0: no bound.
    #[new]
    #[pyo3(signature = (address, max_body_bytes, read_timeout_seconds, answer_timeout_seconds,
                        idle_timeout_seconds, max_connections, max_pending, spin_microseconds=0,
                        tls=None))]
    #[allow(clippy::too_many_arguments)] // one per limit, as the REST flags have them
    fn new(
        address: String,
        max_body_bytes: usize,
        read_timeout_seconds: f64,
        answer_timeout_seconds: f64,
        idle_timeout_seconds: f64,
        max_connections: usize,
        max_pending: usize,
        spin_microseconds: u64,
        tls: Option<tls::TlsFiles>,
    ) -> Self {
        let limits = RestLimits {
            max_body: max_body_bytes,
            read_timeout: seconds(read_timeout_seconds),
            answer_timeout: seconds(answer_timeout_seconds),
            idle_timeout: seconds(idle_timeout_seconds),
            max_connections,
            max_pending,
        };
        RestFrontend {
            address,
            tls,
            shared: Arc::new(Shared {
                queue: Arc::new(CallQueue::new(Duration::from_micros(spin_microseconds))),
                limits,
                next_id: AtomicU64::new(0),
                pending: AtomicUsize::new(0),
                connections: AtomicUsize::new(0),
            }),
            running: Mutex::new(None),
        }
    }

    /// Bind and start serving; the bound port.
    fn start(&self) -> PyResult<u16> {
        let mut running = self.running.lock().unwrap();
        if running.is_some() {
            return Err(PyRuntimeError::new_err(
                "the REST server is already started",
            ));
        }
        let acceptor = match &self.tls {
            None => None,
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(http1_tls(files)?)),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1) // one: the dispatcher needs the other core (docs/performance.md)
            .thread_name("rest-io")
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let listener = {
            let _entered = runtime.enter();
            bind(&self.address).map_err(|e| {
                PyRuntimeError::new_err(format!("cannot listen on {}: {e}", self.address))
            })?
        };
        let port = listener
            .local_addr()
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?
            .port();
        let (phase, watching) = watch::channel(Phase::Serving);
        runtime.spawn(rest::accept_loop(
            listener,
            Arc::clone(&self.shared),
            acceptor,
            watching,
        ));
        *running = Some(Running { runtime, phase });
        Ok(port)
    }

    /// Stop accepting, let requests under way finish within `grace_seconds`, close the rest.
    fn shutdown(&self, py: Python<'_>, grace_seconds: f64) {
        let Some(running) = self.running.lock().unwrap().take() else {
            return;
        };
        let until = Instant::now() + seconds(grace_seconds.max(0.0));
        py.detach(|| {
            let _ = running.phase.send(Phase::Draining);
            while self.shared.connections.load(Ordering::Acquire) > 0 && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(5));
            }
            running.runtime.shutdown_background(); // drops the connections left
        });
    }

    /// Every request queued, blocking (without the GIL) while there is none; [] once closed.
    fn next_requests<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let taken = py.detach(|| self.shared.queue.take_all());
        for exchange in &taken {
            exchange.mark_dispatched();
        }
        PyList::new(py, taken.into_iter().map(|inner| RestRequest { inner }))
    }

    /// Wake the dispatcher for good: next_requests returns [] from now on.
    fn close(&self) {
        self.shared.queue.close();
    }
}

impl Drop for RestFrontend {
    fn drop(&mut self) {
        self.shared.queue.close();
        if let Some(running) = self.running.lock().unwrap().take() {
            running.runtime.shutdown_background();
        }
    }
}

fn seconds(value: f64) -> Duration {
    if value <= 0.0 {
        return Duration::from_secs(86400);
    }
    Duration::try_from_secs_f64(value).unwrap_or(Duration::from_secs(86400))
}

/// "host:port" (port 0 picks one) as a listening socket, as the gRPC port binds it.
fn bind(address: &str) -> Result<tokio::net::TcpListener, String> {
    match server::bind(address, &Limits::default())? {
        (server::Listener::Tcp(listener), _, _) => Ok(listener),
        (server::Listener::Unix(_), _, _) => Err("REST listens on TCP only".to_string()),
    }
}

/// The gRPC port's TLS config (same files), offering HTTP/1.1 instead of h2.
fn http1_tls(files: &tls::TlsFiles) -> PyResult<Arc<rustls::ServerConfig>> {
    let config =
        tls::server_config(files).map_err(|e| PyValueError::new_err(format!("TLS: {e}")))?;
    let mut config = (*config).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
