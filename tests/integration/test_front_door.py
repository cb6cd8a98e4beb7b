"""The host's HTTP front door (issue 11), end to end: what any HTTP server in front of the router
must withstand, whatever its implementation. A host, one agent (node-a) whose default engine is
the fake OpenAI engine (tests/support/fake_engine.py, paced at ENGINE_RATE tokens/s), and
test-org/tiny-llama from the fake Hugging Face hub, served once per test before the checks.

Covered here:
  * 1,000 concurrent streamed chat completions through the router, every one whole and in
    order. The engine holds each stream after its first event (POST /_fake/hold) until all
    1,000 are open, so "open at once" is counted, not hoped for on a busy machine; the client
    is one asyncio loop on raw sockets (HTTP/1.1, chunked transfer decoded here).
  * Slowloris: request heads sent a byte every 0.5 s are cut off (408, or closed) within
    host.http_header_timeout_s plus slack while normal requests keep their latency.
  * Size limits: a Content-Length over host.http_max_body_mb gets 413 in the OpenAI error shape
    on /v1/ and in GSwarm's REST shape elsewhere, a chunked body growing past it too, and a
    100 KiB header gets 431 (or 400); the server keeps serving.
  * A client that disconnects mid-stream ends the engine's request and frees its slot in the
    router (client.max_concurrent_requests 1: the next request is served, not queued).
  * Keep-alive: many requests (streams included) on one connection, pipelined requests answered
    in order, an idle connection closed after host.http_keep_alive_timeout_s.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_front_door
"""

import asyncio
import contextlib
import http.client
import json
import resource
import select
import socket
import sys
import threading
import time
import unittest

from gswarm_harness import wait_until
from gswarm_harness import http as rest_call
from test_router import MODEL_A, RouterTestCase, chat_body, hold_for
from test_serving import ENGINES, engine_command, fake_stats

# The suite's engine: slow enough that a stream of a few hundred tokens outlives any check,
# fast enough that a one-token answer is quick; room for every stream at once.
ENGINE_RATE = 10
ENGINE = "front"
FRONT_ENGINES = dict(ENGINES, **{ENGINE: {
    "command": engine_command("--tokens-per-second", str(ENGINE_RATE), "--max-num-seqs", "4096",
                              "--disable-log-requests"),
    "ready_timeout_s": 15}})

# The event-driven server's keys, small so the tests are quick.
HEADER_TIMEOUT_S = 2
MAX_BODY_MB = 1
KEEP_ALIVE_TIMEOUT_S = 2
HTTP_KEYS = {"http_header_timeout_s": HEADER_TIMEOUT_S, "http_max_body_mb": MAX_BODY_MB,
             "http_keep_alive_timeout_s": KEEP_ALIVE_TIMEOUT_S, "http_io_threads": 2}
# A timeout that fires "within T" fires within T plus this (timers, a loaded 2-core machine).
SLACK_S = 2.5
# A request that nothing holds up: a one-token answer is 1/ENGINE_RATE s at the engine.
NORMAL_LATENCY_S = 1.5

STREAMS = 1000
STREAM_TOKENS = 8
# Streams being connected at once (each until its first event): the ramp.
RAMP_WIDTH = 32
STREAMS_OPEN_TIMEOUT_S = 90.0
STREAMS_TIMEOUT_S = 120.0  # the whole test, ramp included
# client.max_concurrent_requests for the many-streams test, and host.router_queue_size: today's
# server holds a thread per connection, 128 plus the queue size.
MANY = 2000
QUEUE_FOR_THREADS = 1024


# ---- raw HTTP/1.1 --------------------------------------------------------------------------

def request_bytes(method, path, body=None, headers=None, port=0):
    """One request's bytes; `body` (bytes, or JSON-encoded) gets a Content-Length."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    hdrs = dict(headers or {})
    if body is not None:
        hdrs.setdefault("Content-Type", "application/json")
        hdrs.setdefault("Content-Length", str(len(body)))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


class RawResponse:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    @property
    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def __repr__(self):
        return f"<HTTP {self.status} {self.headers} {self.body[:300]!r}>"


def read_response(f, head=False):
    """Reads one response from the binary file `f`; None when the connection ended before a
    status line. Bodies: Content-Length, chunked, or up to the end of the connection."""
    line = f.readline(65536)
    if not line:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise AssertionError(f"not an HTTP status line: {line!r}")
    headers = {}
    while True:
        h = f.readline(65536)
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    status = int(parts[1])
    if head or status in (204, 304) or 100 <= status < 200:
        return RawResponse(status, parts[2] if len(parts) > 2 else "", headers, b"")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size_line = f.readline(1024)
            if not size_line:
                raise AssertionError(f"chunked body cut short after {len(body)} bytes")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while f.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                break
            body += f.read(size)
            f.readline(1024)
    elif "content-length" in headers:
        n = int(headers["content-length"])
        body = f.read(n)
        if len(body) != n:
            raise AssertionError(f"body cut short: {len(body)} of {n} bytes")
    else:
        body = f.read()
    return RawResponse(status, parts[2] if len(parts) > 2 else "", headers, body)


def sse_events(body):
    """The data of each `data:` line of an SSE body: parsed JSON, or "[DONE]"."""
    out = []
    for line in body.decode().splitlines():
        if line.startswith("data: "):
            data = line[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def expected_tokens(prompt, n):
    """What the fake engine streams for `prompt`: its words, cycled, n of them."""
    words = prompt.split()
    return [(words[k % len(words)] if k == 0 else " " + words[k % len(words)]) for k in range(n)]


def stream_problem(status, content_type, events, terminated, prompt, n):
    """What is wrong with one chat stream as the client saw it, or None when it is whole and in
    order: a role delta, the n content deltas, a finish chunk, [DONE], the closing chunk."""
    if status != 200:
        return f"HTTP {status}: {events[:1]}"
    if not content_type.startswith("text/event-stream"):
        return f"Content-Type {content_type!r}"
    if not terminated:
        return f"no closing chunk after {len(events)} events"
    if not events or events[-1] != "[DONE]" or events.count("[DONE]") != 1:
        return f"does not end in exactly one [DONE]: {events[-2:]}"
    chunks = events[:-1]
    if len({c.get("id") for c in chunks}) != 1:
        return f"chunks of several answers: {sorted({c.get('id') for c in chunks})}"
    deltas = [c["choices"][0] for c in chunks]
    if deltas[0].get("delta", {}).get("role") != "assistant":
        return f"first event is not the role delta: {chunks[0]}"
    got = [d.get("delta", {}).get("content") for d in deltas[1:-1]]
    if got != expected_tokens(prompt, n):
        return f"content {got} != {expected_tokens(prompt, n)}"
    if deltas[-1].get("finish_reason") != "length":
        return f"last chunk has no finish_reason: {chunks[-1]}"
    return None


# ---- many streams: one asyncio loop ----------------------------------------------------------

class Stream:
    """One streamed completion as the client saw it."""

    def __init__(self, i):
        self.i = i
        self.prompt = f"s{i} t{i}"
        self.status = None
        self.content_type = ""
        self.events = []
        self.terminated = False  # the closing 0-size chunk arrived
        self.opened_at = None    # the first event arrived
        self.ended_at = None
        self.error = None

    def problem(self):
        if self.error is not None:
            return f"failed: {self.error}"
        return stream_problem(self.status, self.content_type, self.events, self.terminated,
                              self.prompt, STREAM_TOKENS)


async def _read_head(reader):
    line = await reader.readline()
    if not line:
        raise ConnectionError("closed before a status line")
    status = int(line.split()[1])
    headers = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            return status, headers
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()


async def _run_stream(s, port, ramp, on_open):
    """Connects (holding a ramp slot until the first event), then reads the stream to its end."""
    payload = request_bytes("POST", "/v1/chat/completions", port=port, body=chat_body(
        MODEL_A, s.prompt, max_tokens=STREAM_TOKENS, stream=True))
    writer = None
    await ramp.acquire()
    in_ramp = True
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        await writer.drain()
        s.status, headers = await _read_head(reader)
        s.content_type = headers.get("content-type", "")
        if s.status != 200 or "chunked" not in headers.get("transfer-encoding", "").lower():
            n = int(headers.get("content-length", "0") or 0)
            s.events = [(await reader.readexactly(n)).decode("utf-8", "replace")]
            return
        buf = b""
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionError(f"closed mid-stream after {len(s.events)} events")
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                await reader.readline()
                s.terminated = True
                break
            buf += await reader.readexactly(size)
            await reader.readexactly(2)
            while b"\n\n" in buf:
                event, buf = buf.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if line.startswith(b"data: "):
                        data = line[len(b"data: "):].decode()
                        s.events.append(data if data == "[DONE]" else json.loads(data))
                if s.opened_at is None and s.events:
                    s.opened_at = time.monotonic()
                    ramp.release()
                    in_ramp = False
                    on_open()
        if buf.strip():
            s.error = f"bytes after the last event: {buf[:200]!r}"
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as e:
        s.error = repr(e)
    finally:
        s.ended_at = time.monotonic()
        if in_ramp:
            ramp.release()
        if writer is not None:
            writer.close()


async def _many_streams(port, n, all_open):
    """Opens n streams; once all have their first event, awaits all_open() (a blocking check
    run on a thread, returning the release time) and then their ends. Returns (streams, times)."""
    ramp = asyncio.Semaphore(RAMP_WIDTH)
    streams = [Stream(i) for i in range(n)]
    opened = [0]

    def on_open():
        opened[0] += 1

    t0 = time.monotonic()
    tasks = [asyncio.create_task(_run_stream(s, port, ramp, on_open)) for s in streams]
    try:
        deadline = t0 + STREAMS_OPEN_TIMEOUT_S
        while opened[0] < n:
            failed = [s for s in streams if s.ended_at is not None and s.opened_at is None]
            if failed:
                raise AssertionError(f"{len(failed)} streams ended before their first event "
                                     f"(e.g. {failed[0].i}: {failed[0].problem()})")
            if time.monotonic() > deadline:
                raise AssertionError(f"only {opened[0]} of {n} streams had their first event "
                                     f"after {STREAMS_OPEN_TIMEOUT_S:.0f} s")
            await asyncio.sleep(0.05)
        t_open = time.monotonic()
        t_release = await asyncio.to_thread(all_open)
        left = t0 + STREAMS_TIMEOUT_S - time.monotonic()
        _, pending = await asyncio.wait(tasks, timeout=max(left, 1.0))
        if pending:
            raise AssertionError(f"{len(pending)} of {n} streams still open "
                                 f"{STREAMS_TIMEOUT_S:.0f} s after the first connect")
        return streams, {"start": t0, "all_open": t_open, "release": t_release,
                         "end": time.monotonic()}
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def raise_fd_limit(need):
    """Lifts this process's open-file limit (inherited by the host, agent and engine it starts)
    to at least `need`, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < need:
        raise unittest.SkipTest(f"open-file limit {soft} (hard {hard}) is below the {need} "
                                "this test needs")


# ---- the suite -------------------------------------------------------------------------------

class FrontDoorTestCase(RouterTestCase):
    """A host with HTTP_KEYS (plus `host_extra`) and node-a whose default engine is ENGINE;
    MODEL_A downloaded and served (`self.endpoint`: the engine's URL)."""

    def start_front_door(self, host_extra=None, **host_client_extra):
        home = self.new_home("host")
        self.token = ""
        host = dict(HTTP_KEYS, **(host_extra or {}))
        home.write_config({
            "host": self.host_section(home, token="", **host),
            "client": self.client_section(home, "node-local", token="", **host_client_extra),
        })
        self.host_home = home
        self.host = self.start_host()
        agent_home = self.make_agent_home(
            "node-a", sections={"host": {"cleanup_on_shutdown": True}}, default_engine=ENGINE,
            engines=FRONT_ENGINES)
        agent = self.start_agent("node-a", home=agent_home, env_extra=self.hub_env())
        self.cluster = (self.host, agent)
        self.wait_node("node-a", "online", procs=self.cluster)
        self.download_ok(MODEL_A, "hf://test-org/tiny-llama")
        self.endpoint = self.serve_ok(MODEL_A)["endpoint"]
        self.engine_call("POST", "/_fake/stats/reset")
        return self.host

    def engine_call(self, method, path, body=None):
        r = rest_call(method, self.endpoint + path, body=body)
        self.assertEqual(r.status, 200, f"{method} {path} on the engine: {r!r}")
        return r.json

    def release_streams(self):
        """Lets the engine's held streams go on (a cleanup: the engine may be gone)."""
        with contextlib.suppress(OSError):
            rest_call("POST", self.endpoint + "/_fake/hold", body={"hold": False})

    def connect(self, timeout=10.0):
        """A socket to the host's HTTP port and a binary reader on it, both closed at the end."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        self.addCleanup(s.close)
        f = s.makefile("rb")
        self.addCleanup(f.close)
        return s, f

    def request(self, method, path, body=None, headers=None):
        return request_bytes(method, path, body, headers, self.port)

    def instance_in_flight(self):
        """The router's requests in flight to MODEL_A's instance (GET /serving)."""
        (inst,) = self.ready_instances(MODEL_A)
        return int(inst.get("requests_in_flight", 0))

    def timed_normal_requests(self):
        """GET /health and a one-token completion: [(what, seconds)]; fails unless both are 200
        with the right answer."""
        out = []
        t = time.monotonic()
        r = self.rest("GET", "/health", timeout=10)
        out.append(("GET /health", time.monotonic() - t))
        self.assertEqual(r.status, 200, r)
        t = time.monotonic()
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "quick", 1),
                                  timeout=10)
        out.append(("POST /v1/chat/completions", time.monotonic() - t))
        self.assertEqual(status, 200, body)
        self.assertEqual(body["choices"][0]["message"]["content"], "quick", body)
        return out


class ManyStreamsTest(FrontDoorTestCase):

    def test_thousand_concurrent_streams_arrive_whole_and_in_order(self):
        raise_fd_limit(2 * STREAMS + 512)  # the host holds both sides of every stream
        self.start_front_door(host_extra={"router_queue_size": QUEUE_FOR_THREADS},
                              max_concurrent_requests=MANY)
        self.engine_call("POST", "/_fake/hold", {"hold": True})
        self.addCleanup(self.release_streams)
        held = {}

        def all_open():
            # Every stream has its first event; the engine must hold them all at once too.
            def engine_holds_all():
                stats = fake_stats(self.endpoint)
                held.update(stats)
                return stats["held"] == STREAMS
            wait_until(engine_holds_all, 30, f"the engine to hold {STREAMS} streams",
                       procs=self.cluster, describe=lambda: {k: held.get(k) for k in (
                           "held", "in_flight", "max_in_flight", "streams")})
            t = time.monotonic()
            self.engine_call("POST", "/_fake/hold", {"hold": False})
            return t

        streams, t = asyncio.run(_many_streams(self.port, STREAMS, all_open))
        sys.stderr.write(
            f"\n  {STREAMS} streams: all open {t['all_open'] - t['start']:.1f} s after the first "
            f"connect, all ended {t['end'] - t['release']:.1f} s after the release\n")
        bad = [(s.i, s.problem()) for s in streams if s.problem() is not None]
        self.assertEqual(bad[:5], [], f"{len(bad)} of {STREAMS} streams were not whole and in "
                                      "order (first 5 shown)")
        # All were open at once: none ended before the engine let them go on.
        first_end = min(s.ended_at for s in streams)
        self.assertGreater(first_end, t["release"], "a stream ended before the release")
        self.assertGreaterEqual(held["max_in_flight"], STREAMS, held)
        stats = fake_stats(self.endpoint)
        self.assertEqual((stats["streams"], stats["streams_completed"], stats["disconnects"],
                          stats["in_flight"]), (STREAMS, STREAMS, 0, 0), stats)
        wait_until(lambda: self.instance_in_flight() == 0, 10,
                   "the router's in-flight count to fall back to 0",
                   describe=self.instance_in_flight)
        self.timed_normal_requests()


class SlowlorisTest(FrontDoorTestCase):

    SLOW_CLIENTS = 8
    BYTE_EVERY_S = 0.5

    def slowloris(self, head, give_up):
        """Sends `head` a byte every BYTE_EVERY_S s and never finishes it. Returns (seconds until
        the server closed the connection or None if it did not within `give_up`, bytes sent,
        bytes answered)."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        t0 = time.monotonic()
        sent, answer, next_byte = 0, b"", t0
        try:
            while True:
                now = time.monotonic()
                if now - t0 > give_up:
                    return None, sent, answer
                if now >= next_byte:
                    try:
                        s.send(head[sent:sent + 1])
                    except OSError:
                        break  # closed: EPIPE or ECONNRESET
                    sent += 1
                    next_byte = now + self.BYTE_EVERY_S
                wait = max(0.0, min(next_byte, t0 + give_up) - time.monotonic())
                if select.select([s], [], [], wait)[0]:
                    try:
                        got = s.recv(4096)
                    except OSError:
                        got = b""
                    if not got:
                        break
                    answer += got
        finally:
            s.close()
        return time.monotonic() - t0, sent, answer

    def test_slow_request_heads_are_cut_off_and_others_proceed(self):
        self.start_front_door()
        baseline = self.timed_normal_requests()
        # A head that never ends, even if it were sent whole.
        head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nX-Padding: " + b"p" * 4096)
        give_up = HEADER_TIMEOUT_S + SLACK_S + 3
        results = [None] * self.SLOW_CLIENTS

        def run(i):
            results[i] = self.slowloris(head, give_up)
        threads = [threading.Thread(target=run, args=(i,), daemon=True)
                   for i in range(self.SLOW_CLIENTS)]
        for t in threads:
            t.start()
        during = []
        while any(t.is_alive() for t in threads):
            during += self.timed_normal_requests()
        for t in threads:
            t.join(give_up + 5)
        sys.stderr.write(f"\n  before: {baseline}; during the slow clients, the slowest of "
                         f"{len(during)}: {max(during, key=lambda x: x[1])}\n")
        for i, res in enumerate(results):
            self.assertIsNotNone(res, f"slow client {i} did not finish")
            cut_after, sent, answer = res
            self.assertIsNotNone(cut_after, f"slow client {i} still connected after {give_up} s "
                                            f"({sent} bytes sent, answer {answer[:100]!r})")
            self.assertLessEqual(cut_after, HEADER_TIMEOUT_S + SLACK_S,
                                 f"slow client {i} was cut off only after {cut_after:.1f} s")
            # Cut off by the timeout, not by something else at once.
            self.assertGreaterEqual(cut_after, HEADER_TIMEOUT_S - 0.5, f"slow client {i}")
            if answer:
                self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer[:200])
        slow = [(what, d) for what, d in during if d > NORMAL_LATENCY_S]
        self.assertEqual(slow, [], "requests slowed down by the slow clients")


class LimitsTest(FrontDoorTestCase):
    LIMIT = MAX_BODY_MB * 1024 * 1024

    def exchange(self, data, feed=()):
        """Sends `data` and then `feed`'s pieces from another thread while the answer is read
        here (a server may answer and close before it has read everything); returns the first
        response, or None when the connection ended without one."""
        s, f = self.connect(timeout=15)

        def send():
            try:
                s.sendall(data)
                for piece in feed:
                    s.sendall(piece)
            except OSError:
                pass  # refused before the end: the answer tells
        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            return read_response(f)
        except ConnectionResetError:
            return None
        finally:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            sender.join(15)

    def assert_openai_error(self, r, status):
        self.assertIsNotNone(r, "the connection was closed without an answer")
        self.assertEqual(r.status, status, r)
        err = (r.json or {}).get("error") if isinstance(r.json, dict) else None
        self.assertIsInstance(err, dict, r)
        self.assertIsInstance(err.get("message"), str, r)
        self.assertIsInstance(err.get("type"), str, r)

    def assert_rest_error(self, r, status):
        self.assertIsNotNone(r, "the connection was closed without an answer")
        self.assertEqual(r.status, status, r)
        err = (r.json or {}).get("error") if isinstance(r.json, dict) else None
        self.assertIsInstance(err, dict, r)
        self.assertEqual(err.get("code"), status, r)
        self.assertIsInstance(err.get("status"), str, r)
        self.assertIsInstance(err.get("message"), str, r)

    def chunked_past_the_limit(self):
        """A chat request's JSON in chunks, growing to twice the limit."""
        def chunk(b):
            return b"%x\r\n%s\r\n" % (len(b), b)
        yield chunk(f'{{"model": "{MODEL_A}", "max_tokens": 1, "messages": '
                    '[{"role": "user", "content": "'.encode())
        piece = b"a" * (64 * 1024)
        for _ in range(2 * self.LIMIT // len(piece)):
            yield chunk(piece)
        yield chunk(b'"}]}') + b"0\r\n\r\n"

    def test_over_size_bodies_and_headers_are_refused(self):
        self.start_front_door()
        over = str(2 * self.LIMIT)
        # A Content-Length over the limit: refused on the headers, before any body byte.
        r = self.exchange(self.request("POST", "/v1/chat/completions", headers={
            "Content-Type": "application/json", "Content-Length": over}))
        self.assert_openai_error(r, 413)
        r = self.exchange(self.request("POST", "/download", headers={
            "Content-Type": "application/json", "Content-Length": over}))
        self.assert_rest_error(r, 413)
        # A chunked body is refused once it grows past the limit.
        chunked = {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}
        r = self.exchange(self.request("POST", "/v1/chat/completions", headers=chunked),
                          self.chunked_past_the_limit())
        self.assert_openai_error(r, 413)
        r = self.exchange(self.request("POST", "/download", headers=chunked),
                          self.chunked_past_the_limit())
        self.assert_rest_error(r, 413)
        # A 100 KiB header: 431 (or 400).
        r = self.exchange(self.request("GET", "/health", headers={"X-Big": "b" * 102400}))
        self.assertIsNotNone(r, "the connection was closed without an answer")
        self.assertIn(r.status, (431, 400), r)
        # A body under the limit is served; so is everyone else.
        big_word = "w" * (self.LIMIT * 8 // 10)
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, big_word, 1))
        self.assertEqual(status, 200, str(body)[:300])
        self.assertEqual(body["choices"][0]["message"]["content"], big_word)
        self.timed_normal_requests()


class DisconnectTest(FrontDoorTestCase):

    SLOW_TOKENS = 600  # 60 s at ENGINE_RATE: far longer than any wait below

    def test_client_disconnect_ends_the_upstream_request(self):
        self.start_front_door(max_concurrent_requests=1)

        def engine_saw_the_end():
            stats = fake_stats(self.endpoint)
            return stats["disconnects"] == 1 and stats["in_flight"] == 0

        for round_ in range(3):  # a leaked slot would show by the second round
            self.engine_call("POST", "/_fake/stats/reset")
            s, f = self.connect(timeout=20)
            s.sendall(self.request("POST", "/v1/chat/completions", chat_body(
                MODEL_A, f"gone{round_}", max_tokens=self.SLOW_TOKENS, stream=True)))
            status_line = f.readline()
            self.assertIn(b" 200 ", status_line)
            # Read up to the first token: role delta, then content.
            seen = b""
            while f"gone{round_}".encode() not in seen:
                line = f.readline()
                self.assertTrue(line, f"stream ended early: {seen[-300:]!r}")
                seen += line
            self.assertEqual(self.instance_in_flight(), 1)
            f.close()
            s.close()
            # The engine sees its request end (its next write fails) long before its 60 s.
            wait_until(engine_saw_the_end, 10,
                       f"the engine to see the request of stream {round_} end",
                       procs=self.cluster, describe=lambda: fake_stats(self.endpoint))
            wait_until(lambda: self.instance_in_flight() == 0, 10,
                       f"the router's in-flight count to fall back to 0 after stream {round_}",
                       describe=self.instance_in_flight)
            # max_concurrent_requests is 1: the slot must be free for the next request.
            t = time.monotonic()
            status, body, _ = self.v1("/v1/chat/completions",
                                      chat_body(MODEL_A, f"next{round_}", 2), timeout=20)
            self.assertEqual(status, 200, body)
            self.assertEqual(body["choices"][0]["message"]["content"],
                             f"next{round_} next{round_}", body)
            self.assertLess(time.monotonic() - t, 10)
            stats = fake_stats(self.endpoint)
            self.assertEqual((stats["streams_completed"], stats["max_in_flight"]), (0, 1),
                             stats)


class SilentStreamTest(FrontDoorTestCase):

    def test_stream_outlives_the_idle_timeouts(self):
        # An engine may say nothing for a long while mid-answer (a long prompt before the first
        # token): the server's header and keep-alive timeouts are not for open responses.
        self.start_front_door()
        self.engine_call("POST", "/_fake/hold", {"hold": True})
        self.addCleanup(self.release_streams)
        s, f = self.connect(timeout=30)
        s.sendall(self.request("POST", "/v1/chat/completions",
                               chat_body(MODEL_A, "patience", 3, stream=True)))
        wait_until(lambda: fake_stats(self.endpoint)["held"] == 1, 10,
                   "the engine to hold the stream", procs=self.cluster)
        gap = max(HEADER_TIMEOUT_S, KEEP_ALIVE_TIMEOUT_S) + SLACK_S
        hold_for(lambda: fake_stats(self.endpoint)["held"] == 1, gap,
                 "the held stream to stay open", describe=lambda: fake_stats(self.endpoint))
        self.engine_call("POST", "/_fake/hold", {"hold": False})
        r = read_response(f)
        self.assertIsNotNone(r, "the connection was closed without an answer")
        self.assertEqual(stream_problem(r.status, r.headers.get("content-type", ""),
                                        sse_events(r.body), True, "patience", 3), None)


class KeepAliveTest(FrontDoorTestCase):

    def test_many_requests_on_one_connection(self):
        self.start_front_door()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        self.addCleanup(conn.close)
        calls = [
            ("GET", "/health", None),
            ("POST", "/v1/chat/completions", chat_body(MODEL_A, "one", 2)),
            ("POST", "/v1/chat/completions", chat_body(MODEL_A, "two three", 4, stream=True)),
            ("GET", "/v1/models", None),
            ("POST", "/v1/completions", {"model": MODEL_A, "prompt": "four", "max_tokens": 1}),
            ("GET", "/nodes", None),
            ("POST", "/v1/completions", {"model": MODEL_A, "prompt": "five six", "max_tokens": 3,
                                         "stream": True}),
            ("GET", "/health", None),
        ]
        first_sock = None
        for method, path, body in calls:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data,
                         headers={"Content-Type": "application/json"} if data else {})
            if first_sock is None:
                first_sock = conn.sock
            self.assertIs(conn.sock, first_sock, f"{method} {path} went on a new connection")
            resp = conn.getresponse()
            raw = resp.read()
            self.assertEqual(resp.status, 200, (method, path, raw[:300]))
            self.assertFalse(resp.will_close, f"the server closed after {method} {path}")
            if path == "/v1/chat/completions" and body.get("stream"):
                events = sse_events(raw)
                self.assertEqual(stream_problem(200, resp.getheader("Content-Type", ""), events,
                                                True, "two three", 4), None)
            elif path == "/v1/completions" and body.get("stream"):
                events = sse_events(raw)
                self.assertEqual(events[-1], "[DONE]")
                self.assertEqual("".join(e["choices"][0]["text"] for e in events[:-1]),
                                 "five six five")
            elif path == "/v1/chat/completions":
                self.assertEqual(json.loads(raw)["choices"][0]["message"]["content"], "one one")
            elif path == "/v1/completions":
                self.assertEqual(json.loads(raw)["choices"][0]["text"], "four")
        self.assertIs(conn.sock, first_sock)

    def test_pipelined_requests_are_answered_in_order(self):
        self.start_front_door()
        s, f = self.connect(timeout=20)
        # The slow one first: a server that answers as requests finish would reorder them.
        s.sendall(b"".join([
            self.request("POST", "/v1/chat/completions", chat_body(MODEL_A, "first", 10)),
            self.request("GET", "/health"),
            self.request("POST", "/v1/completions",
                         {"model": MODEL_A, "prompt": "third", "max_tokens": 2}),
            self.request("POST", "/v1/chat/completions",
                         chat_body(MODEL_A, "fourth", 3, stream=True)),
            self.request("GET", "/nodes", headers={"Connection": "close"}),
        ]))
        answers = [read_response(f) for _ in range(5)]
        for i, r in enumerate(answers):
            self.assertIsNotNone(r, f"no answer {i + 1}")
            self.assertEqual(r.status, 200, f"answer {i + 1}: {r!r}")
        self.assertEqual(answers[0].json["choices"][0]["message"]["content"],
                         " ".join(["first"] * 10))
        self.assertEqual(answers[1].json.get("status"), "ok", answers[1])
        self.assertEqual(answers[2].json["choices"][0]["text"], "third third")
        events = sse_events(answers[3].body)
        self.assertEqual(stream_problem(200, answers[3].headers.get("content-type", ""), events,
                                        True, "fourth", 3), None)
        self.assertIn("node-a", answers[4].body.decode())
        # Connection: close on the last one is honoured.
        s.settimeout(5)
        self.assertEqual(f.read(), b"")

    def test_idle_connection_is_closed_after_the_keep_alive_timeout(self):
        self.start_front_door()
        s, f = self.connect(timeout=KEEP_ALIVE_TIMEOUT_S + SLACK_S + 5)
        s.sendall(self.request("GET", "/health"))
        r = read_response(f)
        self.assertEqual(r.status, 200, r)
        t = time.monotonic()
        try:
            rest = f.read()  # blocks until the server closes (or the socket times out)
        except (TimeoutError, socket.timeout):
            self.fail(f"an idle keep-alive connection was still open after "
                      f"{time.monotonic() - t:.1f} s")
        except ConnectionResetError:
            rest = b""
        idle = time.monotonic() - t
        self.assertEqual(rest, b"", "nothing is sent on an idle connection")
        self.assertGreaterEqual(idle, KEEP_ALIVE_TIMEOUT_S - 0.5)
        self.assertLessEqual(idle, KEEP_ALIVE_TIMEOUT_S + SLACK_S)


if __name__ == "__main__":
    unittest.main()
