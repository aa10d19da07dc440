"""Type stub for the native transport built from native/ (Rust: hyper + h2 + rustls): gRPC
and REST's HTTP/1.1."""

from collections.abc import Sequence

class Call:
    """One call whose request message has arrived (and, again, its early end)."""

    @property
    def id(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def request(self) -> bytes: ...
    @property
    def cancelled(self) -> bool:
        """The client cancelled, the deadline passed, or the transport ended the call."""
    @property
    def metadata(self) -> list[tuple[str, str]]:
        """ASCII request metadata, keys lower-case; "-bin" keys and transport headers omitted."""
    @property
    def client_verified(self) -> bool:
        """TLS verified the client's certificate against custom_ca."""
    @property
    def expired(self) -> bool:
        """The client's deadline has passed."""
    def finish(self, response: bytes) -> bool:
        """The unary answer; False if the call is already over. One over
        grpc.max_send_message_length ends the call with RESOURCE_EXHAUSTED instead."""
    def abort(self, code: int, message: str) -> bool:
        """End the call with an error code (1-16; ValueError otherwise)."""
    def write(self, message: bytes) -> bool:
        """Queue one streamed message (ValueError when over grpc.max_send_message_length)."""
    def close_stream(self) -> bool:
        """End the stream with OK once the queued messages are written."""

class Frontend:
    def __init__(
        self,
        addresses: Sequence[str],
        channel_args: Sequence[tuple[str, int | str]],
        spin_microseconds: int = 0,
        tls: tuple[bytes, bytes, bytes, bool] | None = None,
        max_pending_calls: int = 0,
    ) -> None:
        """`tls`: (server_key_pem, server_cert_pem, custom_ca_pem or b"", client_verify).
        `max_pending_calls` > 0: calls beyond that many waiting for Python get UNAVAILABLE."""
    def start(self) -> list[int]:
        """Bind every address (RuntimeError "cannot listen on ADDRESS: ..."); the ports bound."""
    def shutdown(self, grace_seconds: float) -> None: ...
    def next_calls(self) -> list[Call]:
        """Every queued call; blocks (GIL released) while there is none; [] once closed."""
    def close(self) -> None: ...

class RestRequest:
    """One REST request whose body has arrived (and, again, its early end)."""

    @property
    def id(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def query(self) -> str: ...
    @property
    def headers(self) -> list[tuple[str, str]]:
        """Lower-case names, each once (repeated fields joined with ", "), Latin-1 values."""
    @property
    def body(self) -> bytes: ...
    @property
    def ended(self) -> bool:
        """Answered, timed out (the client got 504) or its client gone."""
    @property
    def expired(self) -> bool:
        """The answer deadline (--rest_api_timeout_in_ms) has passed."""
    def respond(
        self, status: int, content_type: str, headers: Sequence[tuple[str, str]], body: bytes
    ) -> bool:
        """The answer (Content-Length and Date are added); False if the request is over.
        ValueError for a status or header field HTTP cannot carry."""

class RestFrontend:
    def __init__(
        self,
        address: str,
        max_body_bytes: int,
        read_timeout_seconds: float,
        answer_timeout_seconds: float,
        idle_timeout_seconds: float,
        max_connections: int,
        max_pending: int,
        spin_microseconds: int = 0,
        tls: tuple[bytes, bytes, bytes, bool] | None = None,
    ) -> None:
        """Seconds of 0 or less: a day; counts of 0: no bound. `tls` as Frontend's."""
    def start(self) -> int:
        """Bind (RuntimeError "cannot listen on ADDRESS: ..."); the port bound."""
    def shutdown(self, grace_seconds: float) -> None: ...
    def next_requests(self) -> list[RestRequest]:
        """Every queued request; blocks (GIL released) while there is none; [] once closed."""
    def close(self) -> None: ...
