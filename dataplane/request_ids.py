"""Request ids of the data plane's front ends, for JSON logs (json_logs.py).

REST: `with_request_ids` wraps the API's handler (only when logs are JSON): the request's
`x-request-id` header, if well formed, or a new id, is set as the logging context while the
request is handled on the loop and again while its answer is settled, and is sent back as the
response's `x-request-id` header.

gRPC: nothing runs per call. The dispatcher already keeps the call being handled in
`tracing.CURRENT_CALL`; `log_context` reads its metadata only when a record is formatted. The
transport's `Call` can send a response and a status but no metadata, so a gRPC client does not
get the id back: it sees its own `x-request-id` in the logs, or, when it sent none, an id made
of this process's prefix and the call's number.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from concurrent.futures import Future, InvalidStateError

from dataplane.http_server import ErrorResponder, Handler, Request, Response
from dataplane.json_logs import HEADER, REQUEST, Fields, request_id, trace_id
from dataplane.tracing import CURRENT_CALL

# Names the calls of this process apart from another's (gRPC calls without an id).
_PROCESS = uuid.uuid4().hex[:12]
_MODEL_PATH = re.compile(r"/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?(?::(\w+))?")


def log_context() -> Fields | None:
    """The fields of the request this thread handles: REST's context, else the gRPC call."""
    fields = REQUEST.get()
    if fields is not None:
        return fields
    call = CURRENT_CALL.get()
    if call is None:
        return None
    metadata = dict(call.metadata)
    sent = metadata.get(HEADER)
    return {
        "request_id": request_id(sent) if sent else f"{_PROCESS}-{call.id}",
        "method": call.method,
        "trace_id": trace_id(metadata.get("traceparent")),
    }


def rest_fields(request: Request, rid: str) -> Fields:
    """The id, method and, from the path, the model and version (or label)."""
    fields: dict[str, str | None] = {
        "request_id": rid,
        "method": f"{request.method} {request.path}",
        "trace_id": trace_id(request.headers.get("traceparent")),
    }
    found = _MODEL_PATH.match(request.path)
    if found:
        fields["model"] = found.group(1)
        fields["version"] = found.group(2) or found.group(3)
    return fields


def with_request_ids(handler: Handler, error_response: ErrorResponder) -> Handler:
    """`handler`, its logs tagged with the request's id and its answers carrying the id."""

    def handle(request: Request) -> Response | Future[Response]:
        rid = request_id(request.headers.get(HEADER))
        fields = rest_fields(request, rid)
        token = REQUEST.set(fields)
        try:
            answer = handler(request)
        except Exception as exc:  # answered here, so that its log line has the id
            answer = error_response(exc)
        finally:
            REQUEST.reset(token)
        if isinstance(answer, Future):
            return _tagged_later(answer, fields, error_response)
        return _tagged(answer, rid)

    return handle


def _tagged(response: Response, rid: str) -> Response:
    return dataclasses.replace(response, headers=(*response.headers, (HEADER, rid)))


def _tagged_later(
    answer: Future[Response], fields: Fields, error_response: ErrorResponder
) -> Future[Response]:
    """A future of `answer` with the id header; its cancellation (a timeout) cancels `answer`."""
    tagged: Future[Response] = Future()
    rid = str(fields["request_id"])

    def settle(done: Future[Response]) -> None:
        if done.cancelled():
            tagged.cancel()
            return
        token = REQUEST.set(fields)
        try:
            error = done.exception()
            response = error_response(error) if error is not None else done.result()
            tagged.set_result(_tagged(response, rid))
        except InvalidStateError:  # already cancelled by the server's timeout
            pass
        finally:
            REQUEST.reset(token)

    tagged.add_done_callback(lambda outer: answer.cancel() if outer.cancelled() else None)
    answer.add_done_callback(settle)
    return tagged
