//! The I/O threads that own the network: each runs its own single-threaded tokio runtime, and
//! a connection lives on one of them for its whole life (dealt round-robin at accept).
//!
//! Why not tokio's multi-thread runtime: there, a stream's task woken by a Python answer may be
//! stolen by the other worker, which then has to be woken (a futex) and writes through the
//! connection the first one also polls. Here a connection's socket, streams, writes and timers
//! stay on one thread; the cross-thread wake-ups left are the two a call needs (the dispatcher
//! for its arrival, and the connection's thread for its answer: an eventfd write into that
//! thread's epoll). docs/performance.md has the A/B.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::{Builder, EnterGuard, Handle};
use tokio::sync::oneshot;

/// Two, not one: with one, the canned server's p50 at 32 clients was twice as long
/// (docs/performance.md).
const IO_THREADS: usize = 2;

struct IoThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The running I/O threads; they never take the GIL. Dropped, they stop: the tasks left on
/// them (connections, calls) are dropped, which cancels those calls.
pub struct IoThreads {
    threads: Vec<IoThread>,
    spawner: Arc<Spawner>,
}

/// Puts tasks on the I/O threads; the accept loops hold one to deal out connections.
pub struct Spawner {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

impl Spawner {
    /// Run `task` on the first thread: sockets bound under `IoThreads::enter` are polled there.
    pub fn spawn_first<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handles[0].spawn(task);
    }

    /// Run `task` on the next thread in turn; it stays there. A socket it uses must be
    /// registered from inside it (e.g. `TcpStream::from_std`) to be polled on that thread.
    pub fn spawn_next<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        self.handles[index].spawn(task);
    }
}

impl IoThreads {
    pub fn start() -> Result<IoThreads, String> {
        let (mut threads, mut handles) = (Vec::new(), Vec::new());
        for _ in 0..IO_THREADS {
            let (thread, handle) = spawn_thread()?;
            threads.push(thread);
            handles.push(handle);
        }
        let spawner = Arc::new(Spawner {
            handles,
            next: AtomicUsize::new(0),
        });
        Ok(IoThreads { threads, spawner })
    }

    pub fn spawner(&self) -> Arc<Spawner> {
        Arc::clone(&self.spawner)
    }

    /// The runtime context of the first thread: sockets bound under it are polled there (the
    /// accept loops run on that thread).
    pub fn enter(&self) -> EnterGuard<'_> {
        self.spawner.handles[0].enter()
    }

    /// Wait for `future` on this (non-I/O) thread; its timers are driven by the first I/O
    /// thread, which is running.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.spawner.handles[0].block_on(future)
    }

    /// Stop every thread and wait for it: what ran on them is dropped.
    pub fn stop(&mut self) {
        for thread in &mut self.threads {
            if let Some(stop) = thread.stop.take() {
                let _ = stop.send(());
            }
        }
        for thread in &mut self.threads {
            if let Some(joined) = thread.thread.take() {
                let _ = joined.join();
            }
        }
    }
}

impl Drop for IoThreads {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn_thread() -> Result<(IoThread, Handle), String> {
    let runtime = Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("grpc-io".into())
        .spawn(move || {
            let _ = runtime.block_on(stopped);
            runtime.shutdown_background();
        })
        .map_err(|e| e.to_string())?;
    let thread = IoThread {
        stop: Some(stop),
        thread: Some(thread),
    };
    Ok((thread, handle))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn tasks_are_dealt_to_the_threads_in_turn_and_stay_there() {
        let io = IoThreads::start().unwrap();
        let (tx, rx) = mpsc::channel();
        for _ in 0..2 * IO_THREADS {
            let tx = tx.clone();
            io.spawner().spawn_next(async move {
                let first = std::thread::current().id();
                tokio::time::sleep(Duration::from_millis(5)).await;
                tx.send((first, std::thread::current().id())).unwrap();
            });
        }
        let seen: Vec<_> = (0..2 * IO_THREADS)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert!(seen.iter().all(|(first, then)| first == then));
        let threads: HashSet<_> = seen.iter().map(|(first, _)| *first).collect();
        assert_eq!(threads.len(), IO_THREADS);
        assert!(!threads.contains(&std::thread::current().id()));
    }

    #[test]
    fn block_on_outside_the_threads_has_working_timers() {
        let io = IoThreads::start().unwrap();
        let waited = io.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                tokio::time::sleep(Duration::from_millis(20)),
            )
            .await
        });
        assert!(waited.is_ok());
    }

    #[test]
    fn stop_drops_the_tasks_still_running() {
        let mut io = IoThreads::start().unwrap();
        let (held, dropped) = oneshot::channel::<()>();
        io.spawner().spawn_next(async move {
            let _held = held;
            std::future::pending::<()>().await
        });
        io.stop();
        assert!(dropped.blocking_recv().is_err()); // its sender went with the task
    }
}
