"""PlaneClient across a link that goes dead under an open connection (a real data plane
behind a TCP relay whose connections can be frozen, as a network cut leaves them)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from controlplane.client import PlaneClient, PlaneUnreachable
from tests.support.processes import DataPlaneProcess, start_dataplane


class Relay:
    """Forwards TCP connections to `target`; `cut()` freezes those open now (bytes are held,
    nothing is closed), while connections made afterwards flow again."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[threading.Event] = []  # one "frozen" flag per connection
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            frozen = threading.Event()
            self.connections.append(frozen)
            self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, frozen), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, frozen: threading.Event) -> None:
        try:
            while (data := src.recv(65536)) and not frozen.is_set():
                dst.sendall(data)
        except OSError:
            pass  # the test closed the relay
        # a frozen link drops what arrives and never closes

    def cut(self) -> None:
        for frozen in self.connections:
            frozen.set()

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
def plane(tmp_path) -> Iterator[DataPlaneProcess]:
    process = start_dataplane("--grace_period_seconds=1", log_dir=tmp_path)
    yield process
    process.stop()


def test_a_timed_out_call_reconnects_so_a_healed_link_answers_at_once(plane) -> None:
    relay = Relay(plane.grpc_port)
    client = PlaneClient(f"127.0.0.1:{relay.port}", deadline_s=3.0)
    try:
        assert client.info() is not None
        assert len(relay.connections) == 1
        relay.cut()  # the open connection is dead; the next one will work
        with pytest.raises(PlaneUnreachable, match="DEADLINE_EXCEEDED"):
            client.info()
        assert client.info() is not None  # on a new connection, not the dead one
        assert len(relay.connections) == 2
    finally:
        client.close()
        relay.close()
