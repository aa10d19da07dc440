//! One call as both sides see it: the request Python reads, and the answers Python hands back
//! to the tokio task that owns the HTTP/2 stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::mpsc::UnboundedSender;

use crate::queue::CallQueue;
use crate::status::Code;

/// What Python sends down a call: messages (framed), then one end.
pub enum Out {
    Message(Bytes),
    End(Code, String),
}

#[derive(Default)]
struct Answer {
    finished: bool,   // an end (answer, error, stream close) has been decided
    dispatched: bool, // Python has been handed the call
    tx: Option<UnboundedSender<Out>>,
}

pub struct CallInner {
    pub id: u64,
    pub method: String,
    pub request: Bytes,
    pub metadata: Vec<(String, String)>,
    pub client_verified: bool,
    pub deadline: Option<Instant>,
    pub max_send: usize,
    cancelled: AtomicBool,
    answer: Mutex<Answer>,
}

/// Why Python could not hand over an answer.
pub enum Refused {
    Over,            // the call is answered, cancelled or ended by the transport
    TooLarge(usize), // the message exceeds grpc.max_send_message_length
}

/// What arrived of a call: everything Python reads of it.
pub struct Received {
    pub method: String,
    pub request: Bytes,
    pub metadata: Vec<(String, String)>,
    pub client_verified: bool,
    pub deadline: Option<Instant>,
}

impl CallInner {
    pub fn new(id: u64, received: Received, max_send: usize, tx: UnboundedSender<Out>) -> Self {
        CallInner {
            id,
            method: received.method,
            request: received.request,
            metadata: received.metadata,
            client_verified: received.client_verified,
            deadline: received.deadline,
            max_send,
            cancelled: AtomicBool::new(false),
            answer: Mutex::new(Answer {
                tx: Some(tx),
                ..Answer::default()
            }),
        }
    }

    pub fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    pub fn expired(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    pub fn mark_dispatched(&self) {
        self.answer.lock().unwrap().dispatched = true;
    }

    /// Send `out` unless the call is over; `end` makes it the call's last word.
    fn send(&self, out: Out, end: bool) -> bool {
        let mut answer = self.answer.lock().unwrap();
        if answer.finished {
            return false;
        }
        let Some(tx) = answer.tx.as_ref() else {
            return false;
        };
        if tx.send(out).is_err() {
            return false;
        }
        if end {
            answer.finished = true;
            answer.tx = None;
        }
        true
    }

    /// The unary answer: its one message, then OK.
    pub fn finish(&self, response: &[u8]) -> Result<(), Refused> {
        let message = self.frame(response)?;
        let mut answer = self.answer.lock().unwrap();
        if answer.finished {
            return Err(Refused::Over);
        }
        let Some(tx) = answer.tx.take() else {
            return Err(Refused::Over);
        };
        answer.finished = true;
        drop(answer);
        let sent = tx.send(Out::Message(message)).is_ok()
            && tx.send(Out::End(Code::Ok, String::new())).is_ok();
        if sent {
            Ok(())
        } else {
            Err(Refused::Over)
        }
    }

    pub fn abort(&self, code: Code, message: String) -> bool {
        self.send(Out::End(code, message), true)
    }

    pub fn write(&self, message: &[u8]) -> Result<(), Refused> {
        let message = self.frame(message)?;
        if self.send(Out::Message(message), false) {
            Ok(())
        } else {
            Err(Refused::Over)
        }
    }

    pub fn close_stream(&self) -> bool {
        self.send(Out::End(Code::Ok, String::new()), true)
    }

    /// The transport ended the call (client reset, deadline, stop): nothing more may be sent,
    /// and a dispatcher that holds the call hears of it (so a batch can drop the caller).
    pub fn end_early(self: &Arc<Self>, queue: &CallQueue) {
        self.cancelled.store(true, Ordering::Release);
        let notify = {
            let mut answer = self.answer.lock().unwrap();
            let notify = answer.dispatched && !answer.finished;
            answer.finished = true;
            answer.tx = None;
            notify
        };
        if notify {
            queue.push(Arc::clone(self), 0);
        }
    }

    /// A gRPC length-prefixed message (uncompressed).
    fn frame(&self, message: &[u8]) -> Result<Bytes, Refused> {
        if message.len() > self.max_send {
            return Err(Refused::TooLarge(message.len()));
        }
        let mut framed = BytesMut::with_capacity(message.len() + 5);
        framed.put_u8(0);
        framed.put_u32(message.len() as u32);
        framed.put_slice(message);
        Ok(framed.freeze())
    }
}

/// Held by whatever owns the stream (the request future, then the response body): dropped
/// before the call reached its end, it ends the call early. hyper drops it when the client
/// resets the stream or the connection goes, so cancellation needs no polling.
pub struct CallGuard {
    pub call: Arc<CallInner>,
    pub queue: Arc<CallQueue>,
    done: bool,
    _live: tokio::sync::mpsc::Sender<()>, // counts live calls for a stop (Frontend::shutdown)
}

impl CallGuard {
    pub fn new(
        call: Arc<CallInner>,
        queue: Arc<CallQueue>,
        live: tokio::sync::mpsc::Sender<()>,
    ) -> Self {
        CallGuard {
            call,
            queue,
            done: false,
            _live: live,
        }
    }

    /// The end Python chose has been handed to HTTP/2.
    pub fn complete(&mut self) {
        self.done = true;
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.done {
            self.call.end_early(&self.queue);
        }
    }
}
