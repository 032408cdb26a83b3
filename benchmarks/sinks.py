"""Loopback sinks for the peers, each run as its own process so it never shares a GIL with
the library under test.

``python -m benchmarks.sinks KIND [--port 0]`` prints ``ADDR <host:port>`` (where to send)
and ``STATS <url>`` (``GET`` answers ``{"received": n, ...}``), then serves until stdin
closes or SIGTERM.  Kinds:

- ``logstash``: TCP, newline-delimited JSON events (python-logstash-async's TcpTransport).
- ``fluent``: the fluentd forward protocol (msgpack; message, forward and packed-forward
  modes, with ``chunk`` acks), as fluent-logger speaks it.
- ``otlp``: OTLP/HTTP, ``POST /v1/logs`` answered 200, records counted by decoding the
  protobuf with ``opentelemetry-proto``.
- ``cloudwatch``: a moto server (CloudWatch Logs on loopback, as watchtower's tests use it),
  events counted as ``PutLogEvents`` stores them, then let go so memory stays flat.
- ``blackhole``: accepts every connection and never reads or answers (a hung service).

Counting is the sink's only work, so a sink is never what limits a peer's throughput.
"""

from __future__ import annotations

import argparse
import gzip
import json
import signal
import socket
import socketserver
import sys
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, List, Optional

__all__ = ["Counter", "KINDS", "main"]

KINDS = ("logstash", "fluent", "otlp", "cloudwatch", "blackhole")


class Counter:
    """Events received and connections seen, shared by a sink's connection threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.received = 0
        self.connections = 0
        self.bytes = 0

    def add(self, events: int, size: int = 0) -> None:
        with self._lock:
            self.received += events
            self.bytes += size

    def connected(self) -> None:
        with self._lock:
            self.connections += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"received": self.received, "connections": self.connections, "bytes": self.bytes}


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def _stream_server(port: int, counter: Counter, consume: Callable[[socket.socket, Counter], None]) -> _Server:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            counter.connected()
            try:
                consume(self.request, counter)
            except OSError:
                pass  # the client went away: what arrived is counted

    return _Server(("127.0.0.1", port), Handler)


def _consume_logstash(sock: socket.socket, counter: Counter) -> None:
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return
        counter.add(data.count(b"\n"), len(data))


def _fluent_events(obj: Any) -> int:
    """Events in one forward-protocol message: [tag, time, record] or [tag, entries(, opt)]."""
    if not isinstance(obj, (list, tuple)) or len(obj) < 2:
        return 0
    entries = obj[1]
    if isinstance(entries, (list, tuple)):  # forward mode
        return len(entries)
    if isinstance(entries, (bytes, bytearray)):  # packed forward: a msgpack stream of entries
        import msgpack

        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(entries)
        return sum(1 for _ in unpacker)
    return 1  # message mode


def _consume_fluent(sock: socket.socket, counter: Counter) -> None:
    import msgpack

    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    while True:
        data = sock.recv(1 << 16)
        if not data:
            return
        unpacker.feed(data)
        events = 0
        for obj in unpacker:
            events += _fluent_events(obj)
            option = obj[-1] if isinstance(obj, (list, tuple)) and len(obj) > 2 else None
            if isinstance(option, dict) and "chunk" in option:
                sock.sendall(msgpack.packb({"ack": option["chunk"]}))
        counter.add(events, len(data))


def _consume_blackhole(sock: socket.socket, counter: Counter) -> None:
    # Never read, never answer: the client's writes fill the socket buffers, its reads wait.
    # The connection is held until the client gives up (closing the other end changes
    # nothing here) or the sink stops.
    threading.Event().wait()


def _otlp_server(port: int, counter: Counter) -> ThreadingHTTPServer:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    empty = ExportLogsServiceResponse().SerializeToString()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

        def setup(self) -> None:
            super().setup()
            counter.connected()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            encoding = (self.headers.get("Content-Encoding") or "").lower()
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if self.path.split("?")[0] != "/v1/logs":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            request = ExportLogsServiceRequest()
            request.ParseFromString(body)
            events = sum(len(scope.log_records) for rl in request.resource_logs for scope in rl.scope_logs)
            counter.add(events, len(body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(empty)))
            self.end_headers()
            self.wfile.write(empty)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


class _MotoServer:
    """moto's threaded server on 127.0.0.1 with its ``PutLogEvents`` counting into ``counter``."""

    def __init__(self, port: int, counter: Counter) -> None:
        from moto.logs import models
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        store = models.LogStream.put_log_events

        def counted(stream: Any, log_events: list[dict[str, Any]]) -> str:
            token = store(stream, log_events)
            counter.add(len(stream.events), sum(len(e["message"]) for e in log_events))
            stream.events.clear()  # counted: keep moto's memory flat over a long run
            return token  # type: ignore[no-any-return]

        models.LogStream.put_log_events = counted  # type: ignore[method-assign]
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        self.server_address = self._server.get_host_and_port()

    def serve_forever(self) -> None:  # started by start(): nothing more to run
        pass


def _stats_server(counter: Counter) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            body = json.dumps(counter.snapshot()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    return server


def serve(kind: str, port: int = 0) -> tuple[Any, socketserver.BaseServer, Counter]:
    """Start a sink and its stats endpoint on background threads."""
    counter = Counter()
    if kind == "otlp":
        server: Any = _otlp_server(port, counter)
    elif kind == "cloudwatch":
        server = _MotoServer(port, counter)
    else:
        consume = {
            "logstash": _consume_logstash,
            "fluent": _consume_fluent,
            "blackhole": _consume_blackhole,
        }[kind]
        server = _stream_server(port, counter, consume)
    stats = _stats_server(counter)
    for srv, name in ((server, kind), (stats, "stats")):
        threading.Thread(target=srv.serve_forever, name=f"sink-{name}", daemon=True).start()
    return server, stats, counter


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sinks", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    server, stats, _ = serve(args.kind, args.port)
    host, port = server.server_address[:2]
    print(f"ADDR {host}:{port}", flush=True)
    print(f"STATS http://127.0.0.1:{stats.server_address[1]}/_stats", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def watch_stdin() -> None:  # the harness closes our stdin (or dies): stop
        try:
            while sys.stdin.buffer.read(1 << 10):
                pass
        except (OSError, ValueError):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, name="sink-stdin", daemon=True).start()
    while not stop.wait(0.2):
        pass
    return 0  # daemon threads (and held blackhole connections) end with the process


if __name__ == "__main__":
    sys.exit(main())
