"""Tests for fake_engine.py: the model checks, the OpenAI protocol, and the process behaviour
GSwarm's supervisor relies on (startup delay, never ready, crash, signals, process groups),
and the engines' sleep APIs with simulated GPU memory.

Run: cd tests/support && /usr/bin/python3 -m unittest -v test_fake_engine
Standard library only. Every engine process is started through fake_engine.EngineProcess, in
its own session, and killed and reaped by its ``with`` block.
"""

import http.client
import io
import json
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fake_engine as fe  # noqa: E402
import fake_hf_hub as fh  # noqa: E402

ROOT = None
MODEL = None
ENGINE = None       # shared EngineProcess for the protocol tests
NAME = "tiny-chat"
RATE = 50.0         # tokens per second of the shared engine


def setUpModule():
    global ROOT, MODEL, ENGINE
    ROOT = tempfile.mkdtemp(prefix="fake_engine_test_")
    MODEL = fe.write_tiny_model(os.path.join(ROOT, "tiny"))
    ENGINE = fe.EngineProcess(MODEL, NAME, "--tokens-per-second", str(RATE), "--max-num-seqs", "8")
    try:
        ENGINE.wait_ready(10)
    except Exception:
        ENGINE.close()
        raise


def tearDownModule():
    if ENGINE is not None:
        ENGINE.close()
    if ROOT is not None:
        shutil.rmtree(ROOT, ignore_errors=True)


def wait_for(pred, timeout=5.0, poll=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(poll)


def api(method, path, body=None, url=None):
    status, obj, _ = fe.http_json(url or ENGINE.url, method, path, body)
    return status, obj


def alive(pid):
    """Whether pid is a live process (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def new_dir(name):
    d = os.path.join(ROOT, name)
    os.makedirs(d)
    return d


# ---------------------------------------------------------------------------------------------

class TestModelLoading(unittest.TestCase):
    """load_model in-process: what passes, and that each failure names the file."""

    def assertModelError(self, path, *fragments):
        with self.assertRaises(fe.ModelError) as cm:
            fe.load_model(path)
        for frag in fragments:
            self.assertIn(frag, str(cm.exception))
        return str(cm.exception)

    def test_tiny_safetensors_and_gguf(self):
        m = fe.load_model(MODEL)
        self.assertEqual((m.format, m.tensors, m.config["model_type"]), ("safetensors", 3, "llama"))
        self.assertEqual(m.max_position_embeddings, 2048)
        g = fe.load_model(fe.write_tiny_model(new_dir("g1"), "gguf"))
        self.assertEqual((g.format, g.tensors, g.files[0]["architecture"]), ("gguf", 2, "llama"))
        # A GGUF file on its own (llama-server's -m FILE), and read_weights reads every byte.
        f = os.path.join(ROOT, "g1", "tiny.gguf")
        self.assertEqual(fe.load_model(f, read_weights=True).bytes_read, os.path.getsize(f))

    def test_gguf_only_dir_needs_no_config(self):
        d = new_dir("g2")
        with open(os.path.join(d, "m.gguf"), "wb") as f:
            f.write(fe.make_gguf_bytes())
        self.assertIsNone(fe.load_model(d).config)

    def test_fake_hub_models_load(self):
        # What the fake Hub serves must load: tiny-llama's sharded snapshot with its index, and a
        # GGUF written by the hub's own generator.
        d = new_dir("hub-llama")
        for name, content in fh._tiny_llama_snapshot(2).items():
            with open(os.path.join(d, name), "wb") as f:
                for b in fh._chunks_of(content):
                    f.write(b)
        m = fe.load_model(d)
        self.assertEqual(len(m.files), 2)
        with open(os.path.join(d, "model.safetensors.index.json")) as f:
            index = json.load(f)
        self.assertEqual(m.tensors, len(index["weight_map"]))
        self.assertEqual(m.tensor_bytes, index["metadata"]["total_size"])
        g = new_dir("hub-gguf")
        kvs = [("general.architecture", fh.GGUF_STRING, "llama"),
               ("tokenizer.ggml.tokens", fh.GGUF_ARRAY, (fh.GGUF_STRING, ["a", "b", "c"]))]
        tensors = [("tok.weight", [64, 4], fh.GGML_TYPE_Q8_0, "s1"),
                   ("norm.weight", [64], fh.GGML_TYPE_F32, "s2")]
        with open(os.path.join(g, "tiny.Q8_0.gguf"), "wb") as f:
            f.write(fh.make_gguf(kvs, tensors))
        self.assertEqual(fe.load_model(g).tensors, 2)
        # A shard named in the index but missing is an error naming it.
        os.remove(os.path.join(d, "model-00002-of-00002.safetensors"))
        self.assertModelError(d, "model-00002-of-00002.safetensors", "missing")

    def test_missing_and_empty(self):
        self.assertModelError(os.path.join(ROOT, "nope"), "does not exist", "nope")
        self.assertModelError(new_dir("empty"), "empty")
        d = new_dir("noweights")
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write("{}")
        self.assertModelError(d, "no weights")

    def test_config_missing_or_invalid(self):
        d = fe.write_tiny_model(new_dir("cfg"))
        cfg = os.path.join(d, "config.json")
        with open(cfg, "w") as f:
            f.write("{not json")
        self.assertModelError(d, cfg, "invalid JSON")
        with open(cfg, "w") as f:
            f.write("[1, 2]")
        self.assertModelError(d, cfg, "not a JSON object")
        os.remove(cfg)
        self.assertModelError(d, cfg, "missing")

    def test_corrupt_safetensors(self):
        d = fe.write_tiny_model(new_dir("st"))
        st = os.path.join(d, "model.safetensors")
        with open(st, "rb") as f:
            good = f.read()
        (n,) = struct.unpack("<Q", good[:8])
        cases = {
            "huge header length": struct.pack("<Q", 1 << 40) + good[8:],
            "header not JSON": good[:8] + b"#" + good[9:],
            "truncated data": good[:-10],
            "shorter than 8 bytes": b"\x01\x02",
            "bad tensor entry": None,
        }
        bad_entry = json.dumps({"w": {"dtype": "F32", "shape": "x", "data_offsets": [0, 4]}}).encode()
        bad_entry += b" " * (-len(bad_entry) % 8)
        cases["bad tensor entry"] = struct.pack("<Q", len(bad_entry)) + bad_entry + b"\0" * 4
        for why, blob in cases.items():
            with self.subTest(why):
                with open(st, "wb") as f:
                    f.write(blob)
                self.assertModelError(d, st, "corrupt")
        self.assertGreater(n, 0)

    def test_corrupt_gguf(self):
        d = new_dir("gbad")
        path = os.path.join(d, "m.gguf")
        good = fe.make_gguf_bytes()
        for why, blob in {"bad magic": b"GGUX" + good[4:], "truncated data": good[:-40],
                          "truncated header": good[:40], "bad version": good[:4] + b"\x09" + good[5:]
                          }.items():
            with self.subTest(why):
                with open(path, "wb") as f:
                    f.write(blob)
                self.assertModelError(d, path, "corrupt")


# ---------------------------------------------------------------------------------------------

class TestProtocol(unittest.TestCase):
    """The shared engine process: the OpenAI endpoints, streaming, errors, connections."""

    def test_health_models_stats(self):
        self.assertEqual(api("GET", "/health"), (200, {"status": "ok"}))
        status, body = api("GET", "/v1/models")
        self.assertEqual(status, 200)
        self.assertEqual(body["object"], "list")
        self.assertEqual([(m["id"], m["object"], m["owned_by"]) for m in body["data"]],
                         [(NAME, "model", "fake-engine")])
        self.assertEqual(api("GET", "/v1/models/" + NAME)[1]["id"], NAME)
        status, body = api("GET", "/_fake/stats")
        self.assertEqual(status, 200)
        self.assertEqual((body["pid"], body["pgid"]), (ENGINE.pid, ENGINE.pid))  # own group
        self.assertTrue(body["ready"])
        self.assertGreaterEqual(body["requests"], 1)
        self.assertEqual(body["settings"]["max_num_seqs"], 8)

    def test_nim_health_ready_alias(self):
        # NVIDIA NIM answers readiness on /v1/health/ready: the same answer as /health, both ways.
        self.assertEqual(api("GET", "/v1/health/ready"), (200, {"status": "ok"}))
        self.assertEqual(api("POST", "/_fake/health", {"ready": False})[0], 200)
        try:
            self.assertEqual(api("GET", "/v1/health/ready"), (503, {"status": "loading"}))
            self.assertEqual(api("GET", "/health")[0], 503)
        finally:
            api("POST", "/_fake/health", {"ready": None})
        self.assertEqual(api("GET", "/v1/health/ready")[0], 200)

    def test_chat_completion(self):
        status, body = api("POST", "/v1/chat/completions", {
            "model": NAME, "max_tokens": 5,
            "messages": [{"role": "system", "content": "be brief"},
                         {"role": "user", "content": "hello big world"}]})
        self.assertEqual(status, 200, body)
        self.assertEqual((body["object"], body["model"]), ("chat.completion", NAME))
        self.assertTrue(body["id"].startswith("chatcmpl-"))
        c = body["choices"][0]
        self.assertEqual(c["message"], {"role": "assistant", "content": "hello big world hello big"})
        self.assertEqual(c["finish_reason"], "length")
        self.assertEqual(body["usage"], {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10})
        # Content parts, max_completion_tokens, and no "model" (the served name is used).
        status, body = api("POST", "/v1/chat/completions", {
            "max_completion_tokens": 2, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "parts work"}]}]})
        self.assertEqual((status, body["choices"][0]["message"]["content"], body["model"]),
                         (200, "parts work", NAME))

    def test_completion(self):
        status, body = api("POST", "/v1/completions", {"model": NAME, "prompt": "a b c", "max_tokens": 4})
        self.assertEqual(status, 200, body)
        self.assertEqual((body["object"], body["model"]), ("text_completion", NAME))
        self.assertEqual(body["choices"][0]["text"], "a b c a")
        self.assertEqual(body["usage"]["completion_tokens"], 4)
        status, body = api("POST", "/v1/completions", {"model": NAME, "prompt": ["x", "y z"], "max_tokens": 2})
        self.assertEqual([c["text"] for c in body["choices"]], ["x x", "y z"])
        self.assertEqual(body["usage"]["completion_tokens"], 4)
        status, body = api("POST", "/v1/completions", {"model": NAME, "prompt": [5, 6]})
        self.assertEqual(len(body["choices"][0]["text"].split()), fe.DEFAULT_MAX_TOKENS)

    def check_stream(self, path, req, kind):
        status, events, headers = fe.sse(ENGINE.url, path, req)
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/event-stream"))
        self.assertEqual(headers["Transfer-Encoding"], "chunked")
        self.assertEqual(events[-1][1], "[DONE]")
        self.assertEqual(sum(1 for _, d in events if d == "[DONE]"), 1)
        chunks = [d for _, d in events[:-1]]
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self.assertTrue(all(c["object"] == obj and c["model"] == NAME for c in chunks))
        self.assertEqual(len({c["id"] for c in chunks}), 1)
        with_choices = [c for c in chunks if c["choices"]]
        self.assertEqual(with_choices[-1]["choices"][0]["finish_reason"], "length")
        if kind == "chat":
            self.assertEqual(with_choices[0]["choices"][0]["delta"], {"role": "assistant", "content": ""})
            pieces = [(t, c["choices"][0]["delta"]["content"]) for (t, c) in events[:-1]
                      if c["choices"] and c["choices"][0]["delta"].get("content")]
        else:
            pieces = [(t, c["choices"][0]["text"]) for (t, c) in events[:-1]
                      if c["choices"] and c["choices"][0]["text"]]
        return pieces, chunks

    def test_chat_stream(self):
        req = {"model": NAME, "max_tokens": 20, "messages": [{"role": "user", "content": "one two three"}]}
        pieces, _ = self.check_stream("/v1/chat/completions", req, "chat")
        self.assertEqual(len(pieces), 20)  # one chunk per token
        self.assertEqual("".join(p for _, p in pieces), " ".join((["one", "two", "three"] * 7)[:20]))
        # Paced, and passed through as they are made (not buffered to the end): 19 token
        # intervals at RATE is 0.38 s between the first and the last.
        self.assertGreater(pieces[-1][0] - pieces[0][0], 0.15)
        # The same text as the non-streaming answer.
        self.assertEqual(api("POST", "/v1/chat/completions", req)[1]["choices"][0]["message"]["content"],
                         "".join(p for _, p in pieces))

    def test_completion_stream_with_usage(self):
        req = {"model": NAME, "prompt": "p q", "max_tokens": 3, "stream_options": {"include_usage": True}}
        pieces, chunks = self.check_stream("/v1/completions", req, "completion")
        self.assertEqual([p for _, p in pieces], ["p", " q", " p"])
        self.assertEqual(chunks[-1]["choices"], [])
        self.assertEqual(chunks[-1]["usage"], {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5})

    def test_embeddings(self):
        status, body = api("POST", "/v1/embeddings", {"model": NAME, "input": ["a", "b"]})
        self.assertEqual(status, 200, body)
        self.assertEqual([len(d["embedding"]) for d in body["data"]], [fe.EMBEDDING_DIM] * 2)
        self.assertEqual(body["data"][0]["embedding"],
                         api("POST", "/v1/embeddings", {"model": NAME, "input": "a"})[1]["data"][0]["embedding"])

    def test_errors(self):
        for path, body in (("/v1/chat/completions", {"model": "other", "messages": [{"role": "user", "content": "x"}]}),
                           ("/v1/completions", {"model": "other", "prompt": "x"}),
                           ("/v1/embeddings", {"model": "other", "input": "x"})):
            with self.subTest(path):
                status, err = api("POST", path, body)
                self.assertEqual(status, 404)
                self.assertEqual((err["error"]["type"], err["error"]["code"]),
                                 ("invalid_request_error", "model_not_found"))
                self.assertIn("other", err["error"]["message"])
        status, err = fe.sse(ENGINE.url, "/v1/completions", {"model": "other", "prompt": "x"})[:2]
        self.assertEqual((status, err[0][1]["error"]["code"]), (404, "model_not_found"))
        self.assertEqual(api("GET", "/v1/models/other")[0], 404)
        status, err = api("POST", "/v1/completions", b"{oops")
        self.assertEqual((status, err["error"]["type"]), (400, "invalid_request_error"))
        for bad in ({"prompt": "x", "max_tokens": 0}, {"prompt": "x", "max_tokens": "3"},
                    {"prompt": 7}, {"prompt": "x", "max_tokens": 10 ** 6}, {"prompt": "x", "stream": "yes"}):
            with self.subTest(bad=bad):
                self.assertEqual(api("POST", "/v1/completions", bad)[0], 400)
        self.assertEqual(api("POST", "/v1/chat/completions", {"messages": []})[0], 400)
        self.assertEqual(api("GET", "/v1/nothing")[0], 404)
        self.assertEqual(api("GET", "/v1/completions")[0], 405)

    def test_keep_alive_and_content_length(self):
        c = http.client.HTTPConnection("127.0.0.1", int(ENGINE.url.rsplit(":", 1)[1]), timeout=10)
        try:
            socks = set()
            for method, path, body in (("GET", "/health", None), ("GET", "/v1/models", None),
                                       ("POST", "/v1/completions", {"prompt": "k", "max_tokens": 2}),
                                       ("POST", "/v1/completions", {"prompt": "k", "max_tokens": 2, "stream": True}),
                                       ("POST", "/v1/completions", {"model": "x", "prompt": "k"}),
                                       ("GET", "/health", None)):
                c.request(method, path, body=None if body is None else json.dumps(body))
                r = c.getresponse()
                raw = r.read()
                socks.add(id(c.sock))
                if body is None or not body.get("stream"):
                    self.assertEqual(int(r.headers["Content-Length"]), len(raw))
                else:
                    self.assertTrue(raw.endswith(b"data: [DONE]\n\n"))
                self.assertFalse(r.will_close)
            self.assertEqual(len(socks), 1)
        finally:
            c.close()

    def test_http10_stream_closes_connection(self):
        port = int(ENGINE.url.rsplit(":", 1)[1])
        body = json.dumps({"prompt": "z", "max_tokens": 2, "stream": True}).encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /v1/completions HTTP/1.0\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            data = b""
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        head, _, payload = data.partition(b"\r\n\r\n")
        self.assertNotIn(b"chunked", head.lower())
        self.assertTrue(payload.endswith(b"data: [DONE]\n\n"))

    def test_concurrency_and_disconnect(self):
        before = api("GET", "/_fake/stats")[1]
        results = []

        def one():
            results.append(fe.sse(ENGINE.url, "/v1/completions", {"prompt": "c", "max_tokens": 50})[0])

        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: api("GET", "/_fake/stats")[1]["in_flight"] >= 3, what="3 in flight")
        finally:
            for t in threads:
                t.join(10)
        self.assertEqual(results, [200] * 3)
        # A client that goes away mid-stream is counted and does not disturb the engine.
        c = http.client.HTTPConnection("127.0.0.1", int(ENGINE.url.rsplit(":", 1)[1]), timeout=10)
        c.request("POST", "/v1/completions", body=json.dumps({"prompt": "d", "max_tokens": 200, "stream": True}))
        r = c.getresponse()
        r.readline()
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
        wait_for(lambda: api("GET", "/_fake/stats")[1]["disconnects"] > before["disconnects"],
                 what="the disconnect to be counted")
        stats = api("GET", "/_fake/stats")[1]
        self.assertEqual(stats["in_flight"], 0)
        self.assertGreaterEqual(stats["max_in_flight"], 3)
        self.assertEqual(api("GET", "/health")[0], 200)
        self.assertNotIn("Traceback", ENGINE.output())

    def test_hold_streams_until_released(self):
        self.assertEqual(api("POST", "/_fake/hold", {"hold": True}),
                         (200, {"ok": True, "hold": True, "held": 0}))
        results = [None] * 3

        def one(i):
            results[i] = fe.sse(ENGINE.url, "/v1/chat/completions", {
                "messages": [{"role": "user", "content": "h%d" % i}], "max_tokens": 2})

        threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda: api("GET", "/_fake/stats")[1]["held"] == 3, what="3 held streams")
            self.assertEqual(results, [None] * 3)  # none finished while held
            released = time.monotonic()
        finally:
            status, _ = api("POST", "/_fake/hold", {"hold": False})
            for t in threads:
                t.join(10)
        self.assertEqual(status, 200)
        for i, (status, events, _) in enumerate(results):
            self.assertEqual(status, 200, events)
            self.assertEqual(events[0][1]["choices"][0]["delta"]["role"], "assistant")
            # The role delta came before the release, every token after it.
            self.assertLess(events[0][0], released)
            self.assertGreater(events[1][0], released)
            self.assertEqual([e["choices"][0]["delta"].get("content") for _, e in events[1:3]],
                             ["h%d" % i, " h%d" % i])
            self.assertEqual(events[-1][1], "[DONE]")
        stats = api("GET", "/_fake/stats")[1]
        self.assertEqual((stats["held"], stats["hold"]), (0, False))
        # Released: later streams run straight through.
        self.assertEqual(fe.sse(ENGINE.url, "/v1/completions", {"prompt": "x", "max_tokens": 1})[0], 200)
        self.assertEqual(api("POST", "/_fake/hold", {"hold": "yes"})[0], 400)

    def test_in_process_engine(self):
        with fe.FakeEngine(MODEL, ["a", "b"], tokens_per_second=0, startup_delay=30) as eng:
            self.assertFalse(eng.ready)
            self.assertEqual(fe.http_json(eng.url, "GET", "/health")[0], 503)
            eng.startup_delay = 0
            status, body, _ = fe.http_json(eng.url, "POST", "/v1/completions", {"model": "b", "prompt": "q"})
            self.assertEqual((status, body["model"], body["choices"][0]["text"].split()[0]), (200, "b", "q"))
            self.assertEqual(eng.stats()["requests"], 2)
            # Crashing would kill the caller: refused in-process.
            self.assertEqual(fe.http_json(eng.url, "POST", "/_fake/crash", {})[0], 501)


# ---------------------------------------------------------------------------------------------

class TestProcess(unittest.TestCase):
    """Each test runs its own engine process: startup, failure, crash and signal behaviour."""

    def start(self, *args, model=None, name="m"):
        p = fe.EngineProcess(model or MODEL, name, *args)
        self.addCleanup(p.close)
        return p

    def test_startup_delay(self):
        p = self.start("--startup-delay", "1.0")
        url = p.wait_listening(10)
        self.assertEqual(p.health(), 503)
        self.assertEqual(fe.http_json(url, "GET", "/health")[1], {"status": "loading"})
        status, err, _ = fe.http_json(url, "POST", "/v1/completions", {"prompt": "x"})
        self.assertEqual((status, err["error"]["code"]), (503, "model_loading"))
        p.wait_ready(10)
        self.assertGreaterEqual(time.monotonic() - p.started, 1.0)
        wait_for(lambda: any("ready: serving m" in line for line in p.stdout_lines), what="ready line")
        self.assertEqual(p.terminate(), 0)

    def test_never_ready(self):
        p = self.start("--never-ready")
        p.wait_listening(10)
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            self.assertEqual(p.health(), 503)
            time.sleep(0.05)
        self.assertFalse(fe.http_json(p.url, "GET", "/_fake/stats")[1]["ready"])
        # The test control can force health either way.
        fe.http_json(p.url, "POST", "/_fake/health", {"ready": True})
        self.assertEqual(p.health(), 200)
        self.assertEqual(p.terminate(), 0)

    def test_crash_after(self):
        p = self.start("--crash-after", "0.4", "--exit-code", "3")
        p.wait_ready(10)
        self.assertEqual(p.wait_exit(10), 3)
        self.assertIn("crashing", "\n".join(p.stderr_lines))
        self.assertGreaterEqual(time.monotonic() - p.started, 0.4)
        self.assertEqual(self.start("--crash-after", "0.1").wait_exit(10), 1)  # default code

    def test_crash_on_request(self):
        p = self.start()
        p.wait_ready(10)
        self.assertEqual(fe.http_json(p.url, "POST", "/_fake/crash", {"exit_code": 7})[0], 200)
        self.assertEqual(p.wait_exit(10), 7)

    def test_corrupt_safetensors_exits_before_listening(self):
        d = fe.write_tiny_model(new_dir("proc-corrupt"))
        st = os.path.join(d, "model.safetensors")
        with open(st, "r+b") as f:
            f.write(struct.pack("<Q", 1 << 50))
        p = self.start(model=d)
        self.assertEqual(p.wait_exit(10), 1)
        self.assertIn(st, "\n".join(p.stderr_lines))
        self.assertIsNone(p.url)
        self.assertIn("loading model from", "\n".join(p.stdout_lines))

    def test_missing_or_empty_model_exits_1(self):
        for d in (os.path.join(ROOT, "absent"), new_dir("proc-empty")):
            with self.subTest(d):
                p = self.start(model=d)
                self.assertEqual(p.wait_exit(10), 1)
                err = "\n".join(p.stderr_lines)
                self.assertIn(d, err)
                self.assertIn("error", err)

    def test_port_in_use_exits_1(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            p = fe.EngineProcess(MODEL, "m", port=s.getsockname()[1])
            self.addCleanup(p.close)
            self.assertEqual(p.wait_exit(10), 1)
        self.assertIn("cannot listen", "\n".join(p.stderr_lines))

    def test_sigterm_exits_0(self):
        p = self.start()
        p.wait_ready(10)
        p.signal(signal.SIGTERM)
        self.assertEqual(p.wait_exit(5), 0)
        out = "\n".join(p.stdout_lines)
        self.assertIn("shutting down", out)
        self.assertIn("stopped", out)

    def test_group_sigterm_with_workers(self):
        # As the supervisor does it: the engine leads its own process group, with workers in it;
        # SIGTERM to the group; everything is gone afterwards. Unknown engine flags are ignored.
        p = self.start("--workers", "2", "--tensor-parallel-size", "1")
        p.wait_ready(10)
        stats = fe.http_json(p.url, "GET", "/_fake/stats")[1]
        kids = stats["children"]
        self.assertEqual(len(kids), 2)
        for k in kids:
            self.assertEqual(os.getpgid(k), p.pid)
        self.assertIn("ignoring unknown arguments: --tensor-parallel-size 1", "\n".join(p.stdout_lines))
        p.signal(signal.SIGTERM, group=True)
        self.assertEqual(p.wait_exit(5), 0)
        for k in kids:
            self.assertFalse(alive(k), "worker %d survived" % k)

    def test_ignore_sigterm_needs_sigkill(self):
        p = self.start("--ignore-sigterm", "--workers", "1")
        p.wait_ready(10)
        kid = fe.http_json(p.url, "GET", "/_fake/stats")[1]["children"][0]
        p.signal(signal.SIGTERM, group=True)
        wait_for(lambda: any("ignoring SIGTERM" in line for line in p.stdout_lines), what="log line")
        self.assertEqual(p.health(), 200)
        self.assertIsNone(p.proc.poll())
        p.signal(signal.SIGKILL, group=True)
        self.assertEqual(p.wait_exit(5), -signal.SIGKILL)
        # The worker was not our child: wait for the kernel to take it away.
        wait_for(lambda: not alive(kid), what="the worker to die")


# ---------------------------------------------------------------------------------------------

GPU_MIB = 1024
FULL = GPU_MIB * fe.MIB


class TestSleep(unittest.TestCase):
    """vLLM's sleep mode and SGLang's memory saver, each test on its own engine process with
    simulated GPU memory: what the agent drives to put a model to sleep and check it freed."""

    def start(self, *args, dev_mode=True, ready=True):
        env = {k: v for k, v in os.environ.items() if k != "VLLM_SERVER_DEV_MODE"}
        if dev_mode:
            env["VLLM_SERVER_DEV_MODE"] = "1"
        p = fe.EngineProcess(MODEL, "m", "--tokens-per-second", "0", *args, env=env)
        self.addCleanup(p.close)
        if ready:
            p.wait_ready(10)
        return p

    def vllm(self, *args, **kw):
        return self.start("--enable-sleep-mode", "--simulated-gpu-mib", str(GPU_MIB), *args, **kw)

    @staticmethod
    def complete(p, path="/v1/completions"):
        body = ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
                if "chat" in path else {"prompt": "x", "max_tokens": 2})
        return api("POST", path, body, url=p.url)

    @staticmethod
    def memory(p):
        status, mem = api("GET", "/_fake/memory", url=p.url)
        assert status == 200, (status, mem)
        return mem

    def assertSleepingError(self, p, path="/v1/completions"):
        status, err = self.complete(p, path)
        self.assertEqual(status, 503, err)
        self.assertIn("sleeping", err["error"]["message"])
        self.assertEqual((err["error"]["type"], err["error"]["code"]), ("service_unavailable", 503))

    def assertAsleepMemory(self, mem, level):
        self.assertEqual((mem["sleeping"], mem["sleep_level"]), (True, level))
        self.assertAlmostEqual(mem["gpu_bytes"] / FULL, 0.02, delta=0.001)  # the CUDA context

    def assertAwake(self, p):
        self.assertEqual(api("GET", "/is_sleeping", url=p.url), (200, {"is_sleeping": False}))
        self.assertEqual(self.memory(p), {"gpu_bytes": FULL, "sleeping": False, "sleep_level": 0,
                                          "weights_loaded": True})
        for path in ("/v1/completions", "/v1/chat/completions"):
            self.assertEqual(self.complete(p, path)[0], 200)

    def logged(self, p, text):
        return wait_for(lambda: any(text in line for line in p.stdout_lines), what=repr(text))

    def test_endpoints_404_without_flag_or_env(self):
        vllm = ("/sleep", "/wake_up", "/is_sleeping")
        sglang = ("/release_memory_occupation", "/resume_memory_occupation", "/pause_generation",
                  "/continue_generation")
        # The flag without VLLM_SERVER_DEV_MODE=1 (as vLLM): nothing is served, and a warning
        # says why. /_fake/memory is always there: no --simulated-gpu-mib, no bytes.
        p = self.start("--enable-sleep-mode", dev_mode=False)
        for path in vllm + ("/collective_rpc",) + sglang:
            with self.subTest(path):
                self.assertEqual(api("GET" if path == "/is_sleeping" else "POST", path, {},
                                     url=p.url)[0], 404)
        self.logged(p, "without VLLM_SERVER_DEV_MODE=1")
        self.assertEqual(self.memory(p), {"gpu_bytes": 0, "sleeping": False, "sleep_level": 0,
                                          "weights_loaded": True})
        # The env without the flag: no sleep endpoints either, but /collective_rpc is served in
        # dev mode, as in vLLM.
        p = self.start()
        for path in vllm + sglang:
            with self.subTest(path):
                self.assertEqual(api("GET" if path == "/is_sleeping" else "POST", path, {},
                                     url=p.url)[0], 404)
        self.assertEqual(api("POST", "/collective_rpc", {"method": "reload_weights"}, url=p.url),
                         (200, {"results": [None]}))
        self.assertEqual(self.complete(p)[0], 200)

    def test_sleep_level1_then_wake(self):
        p = self.vllm()
        self.assertAwake(p)
        status, body, headers = fe.http_json(p.url, "POST", "/sleep?level=1")
        self.assertEqual((status, body, headers["Content-Length"]), (200, None, "0"))
        self.assertEqual(api("GET", "/is_sleeping", url=p.url), (200, {"is_sleeping": True}))
        mem = self.memory(p)
        self.assertAsleepMemory(mem, 1)
        self.assertTrue(mem["weights_loaded"])  # offloaded to CPU, not lost
        self.assertSleepingError(p)
        self.assertSleepingError(p, "/v1/chat/completions")
        # The server stays up: health and the model list answer.
        self.assertEqual(api("GET", "/health", url=p.url)[0], 200)
        self.assertEqual(api("GET", "/v1/models", url=p.url)[0], 200)
        self.logged(p, "sleep level=1: gpu 1024 MiB -> 20 MiB")
        # Asleep already: fine, nothing changes. So is a wake while awake, later.
        self.assertEqual(api("POST", "/sleep?level=2", url=p.url)[0], 200)
        self.assertAsleepMemory(self.memory(p), 1)
        self.assertEqual(api("POST", "/wake_up", url=p.url), (200, None))
        self.assertAwake(p)
        self.logged(p, "wake_up tags=weights,kv_cache: gpu 20 MiB -> 1024 MiB")
        self.assertEqual(api("POST", "/wake_up", url=p.url)[0], 200)
        self.assertAwake(p)

    def test_sleep_level2_needs_reload_weights(self):
        p = self.vllm()
        self.assertEqual(api("POST", "/sleep?level=2", url=p.url)[0], 200)
        mem = self.memory(p)
        self.assertAsleepMemory(mem, 2)
        self.assertFalse(mem["weights_loaded"])
        self.assertSleepingError(p)
        # Reloading into weights that are asleep fails.
        self.assertEqual(api("POST", "/collective_rpc", {"method": "reload_weights"},
                             url=p.url)[0], 500)
        self.assertEqual(api("POST", "/wake_up", url=p.url)[0], 200)
        # Awake, memory back, but the weights are empty: completions fail until reloaded.
        self.assertEqual(self.memory(p), {"gpu_bytes": FULL, "sleeping": False, "sleep_level": 0,
                                          "weights_loaded": False})
        for path in ("/v1/completions", "/v1/chat/completions"):
            status, err = self.complete(p, path)
            self.assertEqual(status, 500, err)
            self.assertIn("reload_weights", err["error"]["message"])
        for bad in ({"method": "init_device"}, {}, b"{oops"):
            with self.subTest(bad=bad):
                status, err = api("POST", "/collective_rpc", bad, url=p.url)
                self.assertEqual(status, 400, err)
                self.assertIn("message", err["error"])
        self.assertEqual(self.complete(p)[0], 500)
        self.assertEqual(api("POST", "/collective_rpc", {"method": "reload_weights"}, url=p.url),
                         (200, {"results": [None]}))
        self.assertAwake(p)
        self.logged(p, "collective_rpc reload_weights: reloaded 3 tensors")
        self.assertNotIn("Traceback", p.output())

    def test_bad_sleep_level_is_400(self):
        p = self.vllm()
        for q in ("?level=3", "?level=0", "?level=abc", "?level="):
            with self.subTest(q):
                status, err = api("POST", "/sleep" + q, url=p.url)
                self.assertEqual(status, 400, err)
                self.assertEqual((err["error"]["code"], err["error"]["param"]), (400, "level"))
        self.assertEqual(api("GET", "/sleep", url=p.url)[0], 405)
        self.assertEqual(api("POST", "/is_sleeping", url=p.url)[0], 405)
        self.assertAwake(p)

    def test_wake_up_by_tags(self):
        p = self.vllm()
        self.assertEqual(api("POST", "/sleep", url=p.url)[0], 200)  # level 1 by default
        self.assertAsleepMemory(self.memory(p), 1)
        # A tag that is not asleep changes nothing (vLLM warns and answers 200).
        self.assertEqual(api("POST", "/wake_up?tags=bogus", url=p.url)[0], 200)
        self.assertAsleepMemory(self.memory(p), 1)
        self.assertEqual(api("POST", "/wake_up?tags=weights", url=p.url)[0], 200)
        mem = self.memory(p)
        self.assertEqual((mem["sleeping"], mem["sleep_level"]), (True, 1))
        self.assertAlmostEqual(mem["gpu_bytes"] / FULL, 0.32, delta=0.001)  # context + weights
        self.assertEqual(api("GET", "/is_sleeping", url=p.url)[1], {"is_sleeping": True})
        self.assertSleepingError(p)
        self.assertEqual(api("POST", "/wake_up?tags=kv_cache", url=p.url)[0], 200)
        self.assertAwake(p)
        # Both tags at once is the same as none.
        self.assertEqual(api("POST", "/sleep?level=1", url=p.url)[0], 200)
        self.assertEqual(api("POST", "/wake_up?tags=weights&tags=kv_cache", url=p.url)[0], 200)
        self.assertAwake(p)

    def test_sleep_leak_keeps_memory(self):
        p = self.vllm("--sleep-leak")
        self.assertEqual(api("POST", "/sleep?level=1", url=p.url)[0], 200)
        self.assertEqual(api("GET", "/is_sleeping", url=p.url)[1], {"is_sleeping": True})
        mem = self.memory(p)
        self.assertEqual((mem["gpu_bytes"], mem["sleeping"]), (FULL, True))
        self.assertSleepingError(p)
        self.logged(p, "sleep level=1: gpu 1024 MiB -> 1024 MiB (--sleep-leak")
        self.assertEqual(api("POST", "/wake_up", url=p.url)[0], 200)
        self.assertAwake(p)

    def test_sglang_release_resume_cycle(self):
        p = self.start("--enable-memory-saver", "--simulated-gpu-mib", str(GPU_MIB),
                       dev_mode=False)
        for path in ("/sleep", "/wake_up", "/collective_rpc"):
            self.assertEqual(api("POST", path, {}, url=p.url)[0], 404)
        # pause_generation: a new request waits until continue_generation.
        self.assertEqual(api("POST", "/pause_generation", {}, url=p.url)[0], 200)
        before = api("GET", "/_fake/stats", url=p.url)[1]["by_path"].get("/v1/completions", 0)
        result = []
        t = threading.Thread(target=lambda: result.append(self.complete(p)[0]))
        t.start()
        try:
            wait_for(lambda: api("GET", "/_fake/stats", url=p.url)[1]["by_path"].get(
                "/v1/completions", 0) > before, what="the request to arrive")
            self.assertEqual(result, [])
            self.assertTrue(api("GET", "/_fake/stats", url=p.url)[1]["paused"])
        finally:
            status, _ = api("POST", "/continue_generation", url=p.url)
            t.join(10)
        self.assertEqual((status, result), (200, [200]))
        # Release in parts, then all (an empty body is all).
        status, body = api("POST", "/release_memory_occupation", {"tags": ["kv_cache"]}, url=p.url)
        self.assertEqual((status, body), (200, None))
        mem = self.memory(p)
        self.assertEqual((mem["sleeping"], mem["sleep_level"]), (True, 1))
        self.assertAlmostEqual(mem["gpu_bytes"] / FULL, 0.32, delta=0.001)
        self.assertEqual(api("POST", "/release_memory_occupation", url=p.url)[0], 200)
        self.assertAsleepMemory(self.memory(p), 1)
        self.assertSleepingError(p)
        self.assertEqual(api("GET", "/health", url=p.url)[0], 200)
        self.logged(p, "release_memory_occupation tags=weights,kv_cache: gpu 327 MiB -> 20 MiB")
        for bad in ({"tags": ["bogus"]}, {"tags": "weights"}, [1]):
            with self.subTest(bad=bad):
                self.assertEqual(api("POST", "/release_memory_occupation", bad, url=p.url)[0], 400)
        self.assertEqual(api("POST", "/resume_memory_occupation", {}, url=p.url)[0], 200)
        self.assertEqual(self.memory(p), {"gpu_bytes": FULL, "sleeping": False, "sleep_level": 0,
                                          "weights_loaded": True})
        self.assertEqual(self.complete(p)[0], 200)
        self.logged(p, "resume_memory_occupation tags=weights,kv_cache: gpu 20 MiB -> 1024 MiB")
        # Resuming what is not released is fine.
        self.assertEqual(api("POST", "/resume_memory_occupation", {}, url=p.url)[0], 200)

    def test_wake_delay_is_honoured(self):
        # A cold start (--startup-delay) against a wake (--wake-delay): the wake pays only its
        # own delay, whatever the start cost.
        p = self.vllm("--startup-delay", "1.0", "--wake-delay", "0.5", "--sleep-delay", "0.3",
                      ready=False)
        p.wait_listening(10)
        status, err = api("POST", "/sleep?level=1", url=p.url)
        self.assertEqual((status, err["error"]["code"]), (503, "model_loading"))
        p.wait_ready(10)
        self.assertGreaterEqual(time.monotonic() - p.started, 1.0)
        t0 = time.monotonic()
        self.assertEqual(api("POST", "/sleep?level=1", url=p.url)[0], 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        t0 = time.monotonic()
        self.assertEqual(api("POST", "/wake_up", url=p.url)[0], 200)
        self.assertGreaterEqual(time.monotonic() - t0, 0.5)
        self.assertAwake(p)

    def test_in_process(self):
        with fe.FakeEngine(MODEL, "m", tokens_per_second=0, enable_sleep_mode=True,
                           vllm_dev_mode=True, simulated_gpu_mib=100, sleep_delay=0,
                           wake_delay=0, out=io.StringIO()) as eng:
            eng.sleep(2)
            self.assertEqual(eng.memory(), {"gpu_bytes": 100 * fe.MIB * 2 // 100,
                                            "sleeping": True, "sleep_level": 2,
                                            "weights_loaded": False})
            self.assertEqual(fe.http_json(eng.url, "GET", "/is_sleeping")[1], {"is_sleeping": True})
            eng.wake_up()
            self.assertEqual(api("POST", "/v1/completions", {"prompt": "q"}, url=eng.url)[0], 500)
            eng.reload_weights()
            self.assertEqual(api("POST", "/v1/completions", {"prompt": "q"}, url=eng.url)[0], 200)
            with self.assertRaises(ValueError):
                eng.sleep(3)
            self.assertIn("sleep level=2: gpu 100 MiB -> 2 MiB", eng.out.getvalue())


if __name__ == "__main__":
    unittest.main()
