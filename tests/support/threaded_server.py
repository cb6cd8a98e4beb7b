"""The lifecycle the fake servers share (fake_hf_hub.FakeHub, fake_engine.FakeEngine): serve on a
daemon thread, remember open connections so that stop() can cut them (a client blocked on a slow
or endless response must not hold the test up), and work as a context manager.

A subclass sets `self.host`, `self._lock`, `self._conns` (a set), `self._server` and
`self._thread` (None) in its __init__, builds its server in start() and hands it to
_start_server(); its request handler derives from TrackedHandler with `owner` set to the server.
"""

import contextlib
import http.server
import socket
import socketserver
import sys
import threading


class ThreadedServer:
    _thread_name = "fake-server"
    _poll_interval = 0.1

    def _start_server(self, server) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": self._poll_interval},
                                        name=self._thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None

    def __enter__(self):
        return self.start() if self._server is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = "[%s]" % self.host if ":" in self.host else self.host
        return "http://%s:%d" % (host, self.port)

    def _track(self, conn, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)


class TrackedHandler(http.server.BaseHTTPRequestHandler):
    """Request handler base for the fakes: HTTP/1.1 keep-alive, responses sent at once (the fakes
    write headers and body separately: without TCP_NODELAY each response would wait on the
    client's delayed ACK, ~40 ms, which no real server makes anyone pay), every connection
    registered with its server so stop() can cut it, and quiet about clients that hang up."""

    protocol_version = "HTTP/1.1"
    sys_version = ""
    owner: ThreadedServer  # set on the per-server subclass

    def version_string(self):
        return self.server_version

    def setup(self):
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.owner._track(self.connection, True)

    def finish(self):
        with contextlib.suppress(OSError):
            super().finish()
        self.owner._track(self.connection, False)

    def handle(self):
        with contextlib.suppress(ConnectionError, TimeoutError):
            super().handle()


class QuietServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that binds without a DNS lookup and does not print a traceback
    for every client that hangs up."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    block_on_close = False

    def server_bind(self):
        # Skip HTTPServer.server_bind's getfqdn() (a DNS lookup that can stall).
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = host, port

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)
