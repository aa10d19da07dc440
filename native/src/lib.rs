//! dataplane.transport._native: the data plane's gRPC transport, in Rust (and REST's HTTP/1.1:
//! rest.rs, rest_frontend.rs).
//!
//! hyper's HTTP/2 server (h2) and rustls own the sockets, framing, deadlines, flow control and
//! TLS on tokio threads that never take the GIL. A call whose request message has arrived is
//! queued; ONE Python dispatcher thread takes everything queued in one step (one GIL hand-off
//! for many calls), decodes, runs and answers. Answers go back over a channel to the task that
//! owns the stream, so the Python thread that has one hands it over without waiting on the
//! network. Anything the transport can refuse alone (wrong content-type, compressed or
//! oversize messages, passed deadlines, a full queue) never reaches Python.
//!
//! The transport is generic: it knows method paths and bytes, never protobuf messages.

mod body;
mod call;
mod config;
mod grpc;
mod queue;
mod rest;
#[cfg(fuzzing)]
pub use rest::serve_rest_bytes;
mod rest_frontend;
mod runtime;
mod server;
#[cfg(fuzzing)]
pub use server::serve_bytes;
mod status;
mod tls;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::call::{CallInner, Refused};
use crate::config::Limits;
use crate::queue::CallQueue;
use crate::server::Server;
use crate::status::Code;

/// One call whose request message has arrived (and, again, its early end).
#[pyclass(frozen, module = "dataplane.transport._native")]
struct Call {
    inner: Arc<CallInner>,
}

fn refused(result: Result<(), Refused>) -> PyResult<bool> {
    match result {
        Ok(()) => Ok(true),
        Err(Refused::Over) => Ok(false),
        Err(Refused::TooLarge(length)) => Err(PyValueError::new_err(format!(
            "the message is {length} bytes, over grpc.max_send_message_length"
        ))),
    }
}

#[pymethods]
impl Call {
    #[getter]
    fn id(&self) -> u64 {
        self.inner.id
    }
    #[getter]
    fn method(&self) -> &str {
        &self.inner.method
    }
    #[getter]
    fn request<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.request)
    }
    #[getter]
    fn cancelled(&self) -> bool {
        self.inner.cancelled()
    }
    #[getter]
    fn metadata(&self) -> Vec<(String, String)> {
        self.inner.metadata.clone()
    }
    #[getter]
    fn client_verified(&self) -> bool {
        self.inner.client_verified
    }
    #[getter]
    fn expired(&self) -> bool {
        self.inner.expired()
    }
    /// The unary answer. An answer over grpc.max_send_message_length ends the call with
    /// RESOURCE_EXHAUSTED instead, as gRPC does.
    fn finish(&self, response: &[u8]) -> bool {
        match self.inner.finish(response) {
            Ok(()) => true,
            Err(Refused::Over) => false,
            Err(Refused::TooLarge(length)) => self.inner.abort(
                Code::ResourceExhausted,
                format!(
                    "Sent message larger than max ({length} vs. {})",
                    self.inner.max_send
                ),
            ),
        }
    }
    fn abort(&self, code: i64, message: String) -> PyResult<bool> {
        let code =
            Code::error(code).ok_or_else(|| PyValueError::new_err("not a gRPC error code"))?;
        Ok(self.inner.abort(code, message))
    }
    fn write(&self, message: &[u8]) -> PyResult<bool> {
        refused(self.inner.write(message))
    }
    fn close_stream(&self) -> bool {
        self.inner.close_stream()
    }
}

#[derive(FromPyObject)]
enum ChannelArg {
    Int(i64),
    Str(#[allow(dead_code)] String),
}

/// One gRPC server: its listening addresses, HTTP/2 connections and the queue of calls for Python.
#[pyclass(module = "dataplane.transport._native")]
struct Frontend {
    addresses: Vec<String>,
    limits: Limits,
    tls: Option<tls::TlsFiles>,
    max_pending_calls: usize,
    queue: Arc<CallQueue>,
    server: Mutex<Option<Server>>,
}

#[pymethods]
impl Frontend {
    #[new]
    #[pyo3(signature = (addresses, channel_args, spin_microseconds=0, tls=None, max_pending_calls=0))]
    fn new(
        addresses: Vec<String>,
        channel_args: Vec<(String, ChannelArg)>,
        spin_microseconds: u64,
        tls: Option<tls::TlsFiles>,
        max_pending_calls: usize,
    ) -> PyResult<Self> {
        let args: Vec<(String, i64)> = channel_args
            .into_iter()
            .filter_map(|(name, value)| match value {
                ChannelArg::Int(v) => Some((name, v)),
                ChannelArg::Str(_) => None, // no string argument changes this transport
            })
            .collect();
        let limits = Limits::from_args(&args).map_err(PyValueError::new_err)?;
        Ok(Frontend {
            addresses,
            limits,
            tls,
            max_pending_calls,
            queue: Arc::new(CallQueue::new(Duration::from_micros(spin_microseconds))),
            server: Mutex::new(None),
        })
    }

    /// Bind every address and start serving; the bound ports, one per address.
    fn start(&self) -> PyResult<Vec<u16>> {
        let mut server = self.server.lock().unwrap();
        if server.is_some() {
            return Err(PyRuntimeError::new_err(
                "the gRPC server is already started",
            ));
        }
        let acceptor = match &self.tls {
            None => None,
            Some(files) => Some(tokio_rustls::TlsAcceptor::from(
                tls::server_config(files)
                    .map_err(|e| PyValueError::new_err(format!("TLS: {e}")))?,
            )),
        };
        let io = runtime::IoThreads::start().map_err(PyRuntimeError::new_err)?;
        let (mut listeners, mut ports, mut files) = (Vec::new(), Vec::new(), Vec::new());
        {
            let _entered = io.enter();
            for address in &self.addresses {
                let (listener, port, file) = server::bind(address, &self.limits).map_err(|e| {
                    PyRuntimeError::new_err(format!("cannot listen on {address}: {e}"))
                })?;
                listeners.push(listener);
                ports.push(port);
                files.extend(file);
            }
        }
        let shared = |live| grpc::Shared {
            queue: Arc::clone(&self.queue),
            limits: self.limits.clone(),
            max_pending_calls: self.max_pending_calls,
            next_id: AtomicU64::new(0),
            live,
        };
        let client_verify = self.tls.as_ref().is_some_and(|t| t.3);
        *server = Some(Server::start(
            io,
            listeners,
            files,
            shared,
            acceptor,
            client_verify,
        ));
        Ok(ports)
    }

    /// Stop taking calls, give in-flight ones `grace_seconds`, then cancel what is left.
    fn shutdown(&self, py: Python<'_>, grace_seconds: f64) {
        let grace = Duration::try_from_secs_f64(grace_seconds.max(0.0)).unwrap_or(Duration::MAX);
        py.detach(|| {
            if let Some(server) = self.server.lock().unwrap().as_mut() {
                server.shutdown(grace);
            }
        });
    }

    /// Every call queued, blocking (without the GIL) while there is none; [] once closed.
    fn next_calls<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let calls = py.detach(|| self.queue.take_all());
        for call in &calls {
            call.mark_dispatched();
        }
        PyList::new(py, calls.into_iter().map(|inner| Call { inner }))
    }

    /// Wake the dispatcher for good: next_calls returns [] from now on.
    fn close(&self) {
        self.queue.close();
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.queue.close();
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Call>()?;
    m.add_class::<Frontend>()?;
    m.add_class::<rest_frontend::RestFrontend>()?;
    m.add_class::<rest_frontend::RestRequest>()?;
    Ok(())
}
