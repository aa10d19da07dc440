//! The response body of a call: Python's messages as they come, then the trailers.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::Sleep;

use crate::call::{CallGuard, Out};
use crate::status::{put_status, Code};

pub struct GrpcBody {
    first: Option<Bytes>,
    rest: Option<Streaming>,
}

/// What a streaming answer still needs: Python's channel, the deadline, and the call's guard
/// (dropped with the body when the client goes away, which ends the call).
struct Streaming {
    answers: UnboundedReceiver<Out>,
    deadline: Option<Pin<Box<Sleep>>>,
    guard: CallGuard,
}

impl GrpcBody {
    /// No body: a Trailers-Only answer, the status already in the headers.
    pub fn empty() -> Self {
        GrpcBody {
            first: None,
            rest: None,
        }
    }

    pub fn streaming(
        first: Bytes,
        answers: UnboundedReceiver<Out>,
        deadline: Option<Pin<Box<Sleep>>>,
        guard: CallGuard,
    ) -> Self {
        GrpcBody {
            first: Some(first),
            rest: Some(Streaming {
                answers,
                deadline,
                guard,
            }),
        }
    }
}

fn trailers(code: Code, message: &str) -> Frame<Bytes> {
    let mut headers = HeaderMap::new();
    put_status(&mut headers, code, message);
    Frame::trailers(headers)
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let (frame, end) = match rest.answers.poll_recv(cx) {
            Poll::Ready(Some(Out::Message(message))) => (Frame::data(message), false),
            Poll::Ready(Some(Out::End(code, message))) => (trailers(code, &message), true),
            Poll::Ready(None) => (trailers(Code::Cancelled, "the call was ended"), true),
            Poll::Pending => match rest.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => {
                    let mut rest = self.rest.take().expect("checked above");
                    rest.guard.call.end_early(&rest.guard.queue);
                    rest.guard.complete();
                    return Poll::Ready(Some(Ok(trailers(
                        Code::DeadlineExceeded,
                        "Deadline Exceeded",
                    ))));
                }
                _ => return Poll::Pending,
            },
        };
        if end {
            let mut rest = self.rest.take().expect("checked above");
            rest.guard.complete();
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
