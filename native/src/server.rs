//! The listening side: sockets (TCP and unix), TLS handshakes, HTTP/2 connections with their
//! limits, and a stop that drains before it cancels.

use std::convert::Infallible;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::config::Limits;
use crate::grpc::{self, Shared};
use crate::runtime::{IoThreads, Spawner};

/// Where a server is in its life; connections watch it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    Draining, // no new connections or streams; in-flight calls may finish
    Ending,   // the grace period is over: drop every connection
}

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// Bind one address as gRPC spells it: "host:port" (port 0 picks one), "unix:PATH" or
/// "unix://ABSOLUTE_PATH". Returns the listener and its port (1 for a unix socket, as gRPC).
pub fn bind(address: &str, limits: &Limits) -> Result<(Listener, u16, Option<PathBuf>), String> {
    if let Some(path) = address.strip_prefix("unix:") {
        let path = PathBuf::from(path.strip_prefix("//").unwrap_or(path));
        remove_stale_socket(&path);
        let listener = UnixListener::bind(&path).map_err(|e| e.to_string())?;
        return Ok((Listener::Unix(listener), 1, Some(path)));
    }
    let target = address
        .to_socket_addrs()
        .map_err(|e| e.to_string())?
        .next()
        .ok_or_else(|| "the address resolves to nothing".to_string())?;
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    socket.set_reuseaddr(true).map_err(|e| e.to_string())?;
    socket
        .set_reuseport(limits.reuse_port)
        .map_err(|e| e.to_string())?;
    socket.bind(target).map_err(|e| e.to_string())?;
    let listener = socket.listen(1024).map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    Ok((Listener::Tcp(listener), port, None))
}

/// A socket file left by a process that is gone would make the bind fail (gRPC removes it too).
fn remove_stale_socket(path: &PathBuf) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// A started server: its I/O threads, the phase its connections watch, and the count of what is
/// still alive (connections and calls hold senders of `live`; the receiver ends when all are gone).
pub struct Server {
    io: Option<IoThreads>,
    phase: watch::Sender<Phase>,
    live: mpsc::Receiver<()>,
    socket_files: Vec<PathBuf>,
}

impl Server {
    /// Serve `listeners` (bound under `io.enter()`) on `io`.
    pub fn start(
        io: IoThreads,
        listeners: Vec<Listener>,
        socket_files: Vec<PathBuf>,
        make_shared: impl FnOnce(mpsc::Sender<()>) -> Shared,
        tls: Option<TlsAcceptor>,
        client_verify: bool,
    ) -> Server {
        let (live_tx, live) = mpsc::channel(1);
        let shared = Arc::new(make_shared(live_tx));
        let (phase, watching) = watch::channel(Phase::Serving);
        for listener in listeners {
            let context = Context {
                shared: Arc::clone(&shared),
                tls: tls.clone(),
                client_verify,
                phase: watching.clone(),
            };
            io.spawner()
                .spawn_first(accept_loop(listener, io.spawner(), context));
        }
        Server {
            io: Some(io),
            phase,
            live,
            socket_files,
        }
    }

    /// Stop taking connections and streams, let in-flight calls end within `grace`, then drop
    /// every connection (the calls left are cancelled, and Python hears of those it holds).
    pub fn shutdown(&mut self, grace: Duration) {
        let Some(mut io) = self.io.take() else {
            return;
        };
        let _ = self.phase.send(Phase::Draining);
        let live = &mut self.live;
        let drained = io.block_on(async { tokio::time::timeout(grace, live.recv()).await.is_ok() });
        if !drained {
            let _ = self.phase.send(Phase::Ending);
            io.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), live.recv())
                    .await
                    .ok()
            });
        }
        for path in self.socket_files.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        io.stop();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

#[derive(Clone)]
struct Context {
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    client_verify: bool,
    phase: watch::Receiver<Phase>,
}

/// Accept connections and deal them to the I/O threads in turn, each to stay on its thread.
async fn accept_loop(listener: Listener, io: Arc<Spawner>, mut context: Context) {
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            _ = context.phase.wait_for(|p| *p != Phase::Serving) => return,
        };
        match accepted {
            Ok(accepted) => io.spawn_next(serve_accepted(accepted, context.clone())),
            // Out of descriptors or a connection reset before accept: wait a moment, go on.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// An accepted socket, out of the accepting thread's poller so another thread can take it.
enum Accepted {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    Ok(match listener {
        Listener::Tcp(l) => {
            let stream = l.accept().await?.0;
            let _ = stream.set_nodelay(true);
            Accepted::Tcp(stream.into_std()?)
        }
        Listener::Unix(l) => Accepted::Unix(l.accept().await?.0.into_std()?),
    })
}

/// On the connection's I/O thread: register its socket with this thread's poller, then serve.
async fn serve_accepted(accepted: Accepted, context: Context) {
    match accepted {
        Accepted::Tcp(stream) => {
            if let Ok(stream) = TcpStream::from_std(stream) {
                connection(stream, context).await;
            }
        }
        Accepted::Unix(stream) => {
            if let Ok(stream) = UnixStream::from_std(stream) {
                connection(stream, context).await;
            }
        }
    }
}

async fn connection<I>(io: I, context: Context)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(acceptor) = context.tls.clone() else {
        return serve_http2(io, false, context).await;
    };
    let handshake =
        tokio::time::timeout(context.shared.limits.handshake_timeout, acceptor.accept(io));
    let Ok(Ok(stream)) = handshake.await else {
        return;
    };
    let verified = context.client_verify && stream.get_ref().1.peer_certificates().is_some();
    serve_http2(stream, verified, context).await
}

async fn serve_http2<I>(io: I, verified: bool, mut context: Context)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &context.shared.limits;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_size)
        .max_pending_accept_reset_streams(limits.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(limits.max_local_error_reset_streams)
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_timeout);
    let shared = Arc::clone(&context.shared);
    let service = service_fn(move |request| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(grpc::serve(shared, verified, request).await) }
    });
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let phase = *context.phase.borrow_and_update();
        if phase == Phase::Ending {
            return;
        }
        if phase == Phase::Draining && !draining {
            draining = true;
            connection.as_mut().graceful_shutdown();
        }
        tokio::select! {
            _ = connection.as_mut() => return,
            changed = context.phase.changed() => if changed.is_err() { return },
        }
    }
}

/// The request path without sockets or Python, for the fuzz target (native/fuzz): `input`
/// arrives as the bytes of one HTTP/2 connection after the preface; what the server answers
/// is read and dropped. Calls that reach the queue are never answered (nobody takes them),
/// so the pending-call bound, deadlines and the connection's end all get exercised.
#[cfg(fuzzing)]
pub fn serve_bytes(input: &[u8]) {
    use std::sync::atomic::AtomicU64;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::queue::CallQueue;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (live, _all_gone) = mpsc::channel(1);
        let limits = Limits {
            max_receive: 4096,
            ..Limits::default()
        };
        let queue = Arc::new(CallQueue::new(Duration::ZERO));
        let shared = Arc::new(Shared {
            queue: Arc::clone(&queue),
            limits,
            max_pending_calls: 4,
            next_id: AtomicU64::new(0),
            live,
        });
        let (_phase, watching) = watch::channel(Phase::Serving);
        let context = Context {
            shared,
            tls: None,
            client_verify: false,
            phase: watching,
        };
        let (client, server) = tokio::io::duplex(1 << 16);
        let serving = tokio::spawn(serve_http2(server, false, context));
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 16];
            while matches!(from_server.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let _ = to_server
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await;
        let _ = to_server.write_all(input).await;
        let _ = to_server.shutdown().await;
        // The connection ends at the input's end; one still open after this is a hang.
        let _ = tokio::time::timeout(Duration::from_secs(10), serving)
            .await
            .expect("the connection outlived its input by 10 s");
        drain.abort();
        queue.close();
    });
}
