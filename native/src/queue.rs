//! The queue of calls (gRPC calls, or REST requests) waiting for the one Python dispatcher.
//!
//! The tokio threads push calls (and, again, dispatched calls that ended early); the
//! dispatcher takes everything queued in one step, so one GIL hand-off serves many calls.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::call::CallInner;

struct State<T> {
    items: Vec<Arc<T>>,
    closed: bool,
    sleeping: bool, // the consumer waits on `ready`: only then is a wake-up worth a syscall
}

pub struct CallQueue<T = CallInner> {
    state: Mutex<State<T>>,
    ready: Condvar,
    size: AtomicUsize, // items.len(), readable without the lock (the spin reads it)
    spin: Duration,
    last_taken: AtomicUsize, // only the one consumer uses it
}

impl<T> CallQueue<T> {
    pub fn new(spin: Duration) -> Self {
        CallQueue {
            state: Mutex::new(State {
                items: Vec::new(),
                closed: false,
                sleeping: false,
            }),
            ready: Condvar::new(),
            size: AtomicUsize::new(0),
            spin,
            last_taken: AtomicUsize::new(0),
        }
    }

    /// Queue a call for Python; with `limit` > 0, refuse it (false) when that many wait already.
    pub fn push(&self, call: Arc<T>, limit: usize) -> bool {
        let mut state = self.state.lock().unwrap();
        if state.closed || (limit > 0 && state.items.len() >= limit) {
            return false;
        }
        state.items.push(call);
        self.size.store(state.items.len(), Ordering::Release);
        // One wake-up per sleep: the pushes that follow before the consumer runs find it
        // already woken (each would otherwise be a futex syscall of its own).
        let wake = std::mem::take(&mut state.sleeping);
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        true
    }

    /// Everything queued, waiting while there is nothing; empty only once closed.
    ///
    /// Under light load (the last take found one call) the consumer first spins for `spin`
    /// before it sleeps: an idle vCPU wakes slowly and the futex wake-up is a hop of its own
    /// (docs/performance.md). Under load takes find several calls, so nobody spins.
    pub fn take_all(&self) -> Vec<Arc<T>> {
        if !self.spin.is_zero() && self.last_taken.load(Ordering::Relaxed) <= 1 {
            self.spin_while_empty();
        }
        let mut state = self.state.lock().unwrap();
        while state.items.is_empty() && !state.closed {
            state.sleeping = true; // a push clears it when it wakes the consumer
            state = self.ready.wait(state).unwrap();
        }
        let taken = std::mem::take(&mut state.items);
        self.size.store(0, Ordering::Release);
        drop(state);
        self.last_taken.store(taken.len(), Ordering::Relaxed);
        taken
    }

    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.ready.notify_all();
    }

    fn spin_while_empty(&self) {
        let until = Instant::now() + self.spin;
        while self.size.load(Ordering::Acquire) == 0 && Instant::now() < until {
            std::thread::yield_now(); // gives the core to the thread about to push, if it shares it
        }
    }
}
