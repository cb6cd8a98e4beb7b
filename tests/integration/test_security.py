"""Security promises of issue 15, against the real binary: tokens never logged or echoed, the
agents' data port refuses traversal and symlinks out of a tier, engine commands reach the engine as
argv (never through a shell) and a model name cannot inject a flag.

What each test proves:
  TokenSecrecyTest.test_tokens_never_logged_or_echoed
      A host and an agent with a token (both at --log-level trace), a CLI and a wrong-token agent:
      authenticated and refused calls over REST (API, router, metrics, dashboard), gRPC, the data
      port and the CLI. Neither the right token nor a wrong one appears in any answer (body,
      headers, gRPC details, CLI output) or in any process log; refusals still say "token".
  DataPortTest.test_data_port_requires_the_cluster_token
      Every data-port route but /health is 401 without the token or with a wrong one.
  DataPortTest.test_data_port_refuses_traversal
      `..`, `%2e%2e`, `%2E%2E%2F`, absolute paths, encoded slashes and backslashes, NUL bytes (raw
      and encoded), in the file path, the model name and the log id: each a 4xx, none leaks a
      secret file written next to the tier or /etc/passwd.
  DataPortTest.test_data_port_refuses_symlinks_out_of_the_model
      A model imported with file://, then a listed file replaced by a symlink to a secret of the
      same size, a listed folder replaced by a symlink to an outside folder, and config.json by a
      symlink to /etc/passwd: each refused with a 4xx, no outside byte served.
  EngineArgvTest.test_bad_model_names_refused_before_any_engine
      `-rf`, `--x=y`, `a;touch ...`, `$(id)`, `a b`, ... are a 400 (gRPC INVALID_ARGUMENT) at
      register and download, a 4xx at serve and in the router; no engine starts, no file appears.
  EngineArgvTest.test_engine_argv_is_literal_no_shell
      An engine whose command holds shell syntax, served from a tier path with a space and with
      hostile extra_args, records its argv: exactly the template's elements with placeholders
      substituted inside their element, every shell word literal, no file created by a shell;
      the router does not forward the caller's token to the engine.
  EngineArgvTest.test_engine_does_not_inherit_the_cluster_token
      An agent given its token through GSWARM_TOKEN (as deploy/systemd does) starts an engine:
      no variable of the engine's environment holds the token.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_security
"""

import glob
import json
import os
import shutil
import signal
import socket
import time
import unittest
import urllib.parse

from gswarm_harness import (
    JOB_TIMEOUT_S, GSwarmTestCase, error_message, grpc_channel, import_stubs, mentions_token,
    wait_until)

TOKEN = "it-sec-token-5d2b9c41e07a8f36"
WRONG = "it-sec-wrong-7a1e44c0b9d3"
PYTHON = "/usr/bin/python3"
SERVE_TIMEOUT_S = 40.0

# Answered by every refusal below: no status (the server closed the connection) or a 4xx.
NO_ANSWER = None


def raw_request(port, target, token=None, method=b"GET", timeout=5.0, extra_headers=b""):
    """Sends one HTTP/1.1 request with `target` (bytes) exactly as given, and reads the answer
    to EOF. Returns (status or None when the server closed without one, headers, body)."""
    head = method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    if token is not None:
        head += b"Authorization: Bearer " + token.encode() + b"\r\n"
    data = head + extra_headers + b"\r\n"
    buf = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            buf += chunk
    if not buf.startswith(b"HTTP/"):
        return NO_ANSWER, {}, buf
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.strip().lower().decode("latin-1")] = v.strip().decode("latin-1")
    if "chunked" in headers.get("transfer-encoding", ""):
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            n = int(size_line.split(b";")[0] or b"0", 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2:]
        body = out
    return status, headers, body


def write_file(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return path


def secret_bytes(label, size=64):
    """`size` bytes that appear nowhere else: a marker a leak would carry."""
    marker = f"OUTSIDE-SECRET-{label}-{os.urandom(8).hex()}-".encode()
    return (marker * (size // len(marker) + 1))[:size]


class SecurityTestCase(GSwarmTestCase):

    def download_file_model(self, name, src, token=TOKEN):
        """Imports local folder `src` as model `name` (file://, disk tier, waits); its job."""
        r = self.rest("POST", "/download", token=token, timeout=JOB_TIMEOUT_S, body={
            "model_name": name, "source_url": f"file://{src}", "target_device": "disk",
            "wait": True})
        job = (r.json or {}).get("job") if isinstance(r.json, dict) else None
        if r.status != 200 or not job or job.get("state") != "succeeded":
            raise AssertionError(f"import of {src} as {name!r} should succeed: {r!r}")
        return job

    def data_port_of(self, home):
        with open(home.config_path) as f:
            for line in f:
                if line.strip().startswith("data_port:"):
                    return int(line.split(":", 1)[1])
        raise AssertionError(f"no data_port in {home.config_path}")

    def wait_data_port(self, port, procs):
        wait_until(lambda: raw_request(port, b"/health")[0] == 200, 15,
                   f"the data port {port} to answer /health", procs=procs)


# ---- 1. tokens are never logged nor echoed ----------------------------------------------------

class TokenSecrecyTest(SecurityTestCase):

    def assert_no_token(self, text, what):
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        for secret, label in ((TOKEN, "the cluster token"), (WRONG, "the wrong token")):
            self.assertNotIn(secret, text, f"{what} holds {label}")
            # Half of it is a leak too (a message that cuts or splits it).
            self.assertNotIn(secret[len(secret) // 2:], text, f"{what} holds part of {label}")

    def test_tokens_never_logged_or_echoed(self):
        trace = ["--log-level", "trace"]
        self.make_host_home(token=TOKEN)
        host = self.start_host(args=trace)
        agent_home = self.make_agent_home("node-a", token=TOKEN)
        agent = self.start_agent(home=agent_home, args=trace)
        self.wait_node("node-a", "online", procs=[host, agent])
        # An agent with a wrong token: refused, and its refusal is logged on both sides.
        bad = self.start_agent(home=self.make_agent_home("node-bad", token=WRONG), args=trace)
        wait_until(lambda: mentions_token(bad.log()) and "refused" in host.log(), 15,
                   "the wrong-token agent to be refused (both logs saying so)",
                   procs=[host, bad])
        self.assertNotIn("node-bad", self.nodes(token=TOKEN))
        seen = []  # (what, text) of every answer

        # REST, with the token: the API, the router, metrics, the dashboard.
        for method, path in (("GET", "/config"), ("GET", "/nodes"), ("GET", "/health"),
                             ("GET", "/memory/models"), ("GET", "/api/models"), ("GET", "/jobs"),
                             ("GET", "/serving"), ("GET", "/v1/models"), ("GET", "/metrics"),
                             ("GET", "/"), ("GET", f"/?token={TOKEN}"),
                             ("GET", "/api/models/no-such-model"), ("GET", "/no/such/route")):
            r = self.rest(method, path, token=TOKEN)
            self.assertLess(r.status, 500, f"{method} {path}: {r!r}")
            if path in ("/config", "/nodes", "/metrics", "/v1/models"):
                self.assertEqual(r.status, 200, f"{method} {path}: {r!r}")
            seen.append((f"{method} {path.replace(TOKEN, '<token>')} (right token)",
                         r.text + json.dumps(r.headers)))
        config = self.rest("GET", "/config", token=TOKEN).json["config"]
        self.assertEqual(config["host"]["auth_token"], "***", config["host"])

        # REST, refused: no token, a wrong one, malformed authorization values.
        refusals = [("/nodes", {"Authorization": f"Bearer {WRONG}"}),
                    ("/config", {"Authorization": f"Bearer {WRONG}"}),
                    ("/v1/models", {"Authorization": f"Bearer {WRONG}"}),
                    ("/metrics", {"Authorization": f"Bearer {WRONG}"}),
                    ("/nodes", {"Authorization": f"Basic {WRONG}"}),
                    ("/nodes", {"Authorization": WRONG}),
                    ("/nodes", {"Authorization": f"Bearer {WRONG} {WRONG}"}),
                    ("/nodes", {"Authorization": f"Bearer {TOKEN}x"}),
                    ("/nodes", {"Authorization": f"Bearer {TOKEN[:-1]}"}),
                    ("/nodes", {"Authorization": f"Bearer {TOKEN[::-1]}"}),
                    (f"/nodes?token={WRONG}", {}),
                    (f"/api/models/{WRONG}", {"Authorization": f"Bearer {WRONG}"})]
        for path, headers in refusals:
            extra = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
            status, hdrs, body = raw_request(self.port, path.encode(), extra_headers=extra)
            what = f"GET {path.replace(WRONG, '<wrong>')} with {list(headers.values())!r}"
            self.assertEqual(status, 401, f"{what}: {status} {body[:300]!r}")
            text = body.decode("utf-8", "replace")
            self.assertTrue(mentions_token(text), f"{what}: the refusal should say why: {text}")
            seen.append((what.replace(TOKEN, "<token>"), text + json.dumps(hdrs)))

        # gRPC: right, wrong and malformed metadata.
        grpc, api_pb2, api_pb2_grpc = import_stubs()
        with grpc_channel(self.grpc_target) as channel:
            stub = api_pb2_grpc.GSwarmStub(channel)
            right = [("authorization", f"Bearer {TOKEN}")]
            for rpc, request in (("GetConfig", api_pb2.GetConfigRequest()),
                                 ("ListNodes", api_pb2.ListNodesRequest()),
                                 ("Health", api_pb2.HealthRequest())):
                reply = getattr(stub, rpc)(request, metadata=right, timeout=5)
                seen.append((f"gRPC {rpc} (right token)", str(reply)))
            for label, metadata in (("wrong", [("authorization", f"Bearer {WRONG}")]),
                                    ("no scheme", [("authorization", WRONG)]),
                                    ("basic", [("authorization", f"Basic {WRONG}")]),
                                    ("prefix of the token", [("authorization",
                                                              f"Bearer {TOKEN[:-1]}")]),
                                    ("token plus a byte", [("authorization",
                                                            f"Bearer {TOKEN}0")])):
                for rpc, request in (("GetConfig", api_pb2.GetConfigRequest()),
                                     ("ListModels", api_pb2.ListModelsRequest())):
                    with self.assertRaises(grpc.RpcError) as ctx:
                        getattr(stub, rpc)(request, metadata=metadata, timeout=5)
                    self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAUTHENTICATED,
                                     f"{rpc} with {label}")
                    self.assertTrue(mentions_token(ctx.exception.details()),
                                    ctx.exception.details())
                    seen.append((f"gRPC {rpc} with {label} token",
                                 f"{ctx.exception.details()} "
                                 f"{ctx.exception.trailing_metadata()!r}"))

        # The data port: right, wrong, none.
        data_port = self.data_port_of(agent_home)
        for label, token in (("right", TOKEN), ("wrong", WRONG), ("no", None)):
            for target in (b"/api/models/gswarm/nothing/revision/main",
                           b"/gswarm/nothing/resolve/main/config.json", b"/logs/nothing"):
                status, hdrs, body = raw_request(data_port, target, token=token)
                self.assertIsNotNone(status, f"data port {target!r} with {label} token")
                self.assertLess(status, 500, f"data port {target!r}: {status} {body[:200]!r}")
                seen.append((f"data port {target.decode()} with {label} token",
                             body.decode("utf-8", "replace") + json.dumps(hdrs)))

        # The CLI: `gswarm config` (YAML and JSON) in homes holding the token in their file, in
        # GSWARM_TOKEN and as --token; a wrong token's error.
        for label, args, home, env in (
                ("config (host home)", ("config",), self.host_home, None),
                ("config --json (host home)", ("config", "--json"), self.host_home, None),
                ("config (agent home)", ("config",), agent_home, None),
                ("config with GSWARM_TOKEN", ("config", "--json"), self.new_home("cli-env"),
                 {"GSWARM_TOKEN": TOKEN}),
                ("config with --token", ("--token", TOKEN, "config"), self.new_home("cli-flag"),
                 None)):
            result = self.assert_cli_ok(self.cli(*args, home=home, env_extra=env))
            self.assertIn("auth_token", result.stdout, f"`gswarm {label}` prints the key")
            seen.append((f"`gswarm {label}`", result.stdout + result.stderr))
        wrong = self.cli("--host", self.grpc_target, "--token", WRONG, "nodes",
                         home=self.new_home("cli-wrong"))
        self.assertNotEqual(wrong.returncode, 0, wrong)
        self.assertTrue(mentions_token(wrong.stderr), wrong.stderr)
        seen.append(("`gswarm --token <wrong> nodes`", wrong.stdout + wrong.stderr))
        ok = self.assert_cli_ok(self.cli("--host", self.grpc_target, "--token", TOKEN, "nodes",
                                         home=self.new_home("cli-right")))
        seen.append(("`gswarm --token <token> nodes`", ok.stdout + ok.stderr))

        for what, text in seen:
            with self.subTest(answer=what):
                self.assert_no_token(text, what)
        for p in self.procs:
            with self.subTest(log=p.name):
                self.assertGreater(len(p.log()), 0, f"{p.name} logged nothing at trace level")
                self.assert_no_token(p.log(), f"{p.name}'s log ({p.log_path})")


# ---- 2. the data port -------------------------------------------------------------------------

MODEL = "sec-model"


class DataPortTest(SecurityTestCase):

    def setUp(self):
        super().setUp()
        self.secret = secret_bytes("file")
        self.sub_secret = secret_bytes("folder")
        self.weights = b"W" * len(self.secret)
        self.inner = b"I" * len(self.sub_secret)
        self.make_host_home(token=TOKEN)
        self.host = self.start_host()
        self.agent_home = self.make_agent_home("node-a", token=TOKEN)
        self.agent = self.start_agent(home=self.agent_home)
        self.wait_node("node-a", "online", procs=[self.host, self.agent])
        self.data_port = self.data_port_of(self.agent_home)
        self.wait_data_port(self.data_port, [self.agent])
        # Outside every tier: next to the disk tier (its parent is the agent's HOME), and a
        # folder elsewhere under the test's root.
        self.secret_path = write_file(os.path.join(self.agent_home.path, "secret.txt"),
                                      self.secret)
        self.outside_dir = os.path.join(self.root, "outside")
        write_file(os.path.join(self.outside_dir, "inner.bin"), self.sub_secret)
        src = os.path.join(self.root, "src")
        write_file(os.path.join(src, "config.json"),
                   json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"})
                   .encode())
        write_file(os.path.join(src, "weights.bin"), self.weights)
        write_file(os.path.join(src, "sub", "inner.bin"), self.inner)
        self.download_file_model(MODEL, src)
        self.model_dir = os.path.join(self.agent_home.path, "models", MODEL)
        self.assertTrue(os.path.isfile(os.path.join(self.model_dir, "weights.bin")),
                        f"the import should land in {self.model_dir}")
        with open("/etc/passwd", "rb") as f:
            self.passwd = f.read()

    def get(self, target, token=TOKEN):
        return raw_request(self.data_port, target, token=token)

    def assert_refused(self, target, status, body):
        what = f"data port GET {target!r}"
        self.assertTrue(status is NO_ANSWER or 400 <= status < 500,
                        f"{what}: should be refused with a 4xx, got {status} {body[:200]!r}")
        for secret, label in ((self.secret, "the secret file"),
                              (self.sub_secret, "the outside folder's file"),
                              (self.passwd[:32], "/etc/passwd"), (b"root:x:0:0", "/etc/passwd")):
            self.assertNotIn(secret[:24], body, f"{what} leaked {label}")

    def test_data_port_requires_the_cluster_token(self):
        good = f"/gswarm/{MODEL}/resolve/main/weights.bin".encode()
        status, _, body = self.get(good)
        self.assertEqual(status, 200, body[:200])
        self.assertEqual(body, self.weights)
        for target in (good, f"/api/models/gswarm/{MODEL}/revision/main".encode(),
                       f"/gswarm/{MODEL}/resolve/main/config.json".encode(), b"/logs/any-id"):
            for label, token in (("no", None), ("a wrong", WRONG), ("an empty", "")):
                with self.subTest(target=target, token=label):
                    status, _, body = self.get(target, token=token)
                    self.assertEqual(status, 401, f"{target!r} with {label} token: {body[:200]!r}")
                    self.assertNotIn(self.weights[:16], body)
                    self.assertNotIn(WRONG.encode(), body)
        self.assertEqual(self.get(b"/health", token=None)[0], 200, "/health needs no token")

    def test_data_port_refuses_traversal(self):
        listing = self.get(f"/api/models/gswarm/{MODEL}/revision/main".encode())
        self.assertEqual(listing[0], 200, listing)
        files = sorted(s["rfilename"] for s in json.loads(listing[2])["siblings"])
        self.assertEqual(files, ["config.json", "sub/inner.bin", "weights.bin"], files)
        base = f"/gswarm/{MODEL}/resolve/main/".encode()
        rel_secret = b"../../secret.txt"  # from the model folder to the file next to the tier
        targets = [
            base + rel_secret,
            base + b"../" + rel_secret,
            base + b"../../../../../../../../etc/passwd",
            base + b"%2e%2e/%2e%2e/secret.txt",
            base + b"%2E%2E%2F%2E%2E%2Fsecret.txt",
            base + b"%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            base + b"..%2F..%2Fsecret.txt",
            base + b"..%5c..%5csecret.txt",
            base + b"..\\..\\secret.txt",
            base + b"%252e%252e/%252e%252e/secret.txt",
            base + b"sub/../../../secret.txt",
            base + b"/etc/passwd",
            base + b"%2Fetc%2Fpasswd",
            base + self.secret_path.encode(),
            base + b"%2F" + self.secret_path[1:].replace("/", "%2F").encode(),
            base + b"file:///etc/passwd",
            base + b"weights.bin%00../../secret.txt",
            base + b"weights.bin\x00../../secret.txt",
            base + b"%00",
            base + b".gswarm/manifest.json",
            f"/gswarm/{MODEL}/resolve/..%2F..%2F..%2F..%2Fetc/passwd".encode(),
            b"/gswarm/..%2Fsecret.txt/resolve/main/x",
            b"/gswarm/%2e%2e/resolve/main/secret.txt",
            b"/gswarm/..%2F..%2F/resolve/main/secret.txt",
            b"/gswarm/..%2F..%2Foutside/resolve/main/inner.bin",
            b"/%2e%2e/%2e%2e/resolve/main/secret.txt",
            b"/../../secret.txt",
            b"/etc/passwd",
            b"//etc/passwd",
            b"/gswarm/" + MODEL.encode() + b"%00/resolve/main/weights.bin",
            b"/api/models/gswarm/%2e%2e/revision/main",
            b"/api/models/gswarm/..%2F..%2Foutside/revision/main",
            b"/api/models/..%2F..%2F/revision/main",
            b"/logs/..%2F..%2Fsecret.txt",
            b"/logs/..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd%00",
            b"/logs/../../secret",
            b"/logs/..",
            b"http://127.0.0.1/../../etc/passwd",
        ]
        for target in targets:
            with self.subTest(target=target):
                status, _, body = self.get(target)
                self.assert_refused(target, status, body)
        # Still serving after all of that.
        status, _, body = self.get(base + b"weights.bin")
        self.assertEqual((status, body), (200, self.weights))

    def test_data_port_refuses_symlinks_out_of_the_model(self):
        base = f"/gswarm/{MODEL}/resolve/main/".encode()
        # Before: each file is served, so the refusals below are about the symlinks.
        for path, data in ((b"weights.bin", self.weights), (b"sub/inner.bin", self.inner),
                           (b"sub%2Finner.bin", self.inner)):
            status, _, body = self.get(base + path)
            self.assertEqual((status, body), (200, data), path)
        # A listed file replaced by a symlink to a secret of exactly its size.
        os.remove(os.path.join(self.model_dir, "weights.bin"))
        os.symlink(self.secret_path, os.path.join(self.model_dir, "weights.bin"))
        # A listed folder replaced by a symlink to a folder outside, with a file of that size.
        shutil.rmtree(os.path.join(self.model_dir, "sub"))
        os.symlink(self.outside_dir, os.path.join(self.model_dir, "sub"))
        # config.json replaced by a symlink to /etc/passwd (another size).
        os.remove(os.path.join(self.model_dir, "config.json"))
        os.symlink("/etc/passwd", os.path.join(self.model_dir, "config.json"))
        for path in (b"weights.bin", b"sub/inner.bin", b"sub%2Finner.bin", b"config.json"):
            for extra in (b"", b"Range: bytes=0-15\r\n", b"Range: bytes=-16\r\n"):
                with self.subTest(path=path, range=extra):
                    status, _, body = raw_request(self.data_port, base + path, token=TOKEN,
                                                  extra_headers=extra)
                    self.assert_refused(base + path, status, body)
            with self.subTest(path=path, method="HEAD"):
                status, headers, _ = raw_request(self.data_port, base + path, token=TOKEN,
                                                 method=b"HEAD")
                self.assertTrue(status is NO_ANSWER or 400 <= status < 500,
                                f"HEAD {path!r}: {status} {headers}")
        # The peer copy path: another agent pulling the model over the data port gets no
        # outside bytes either (it fails, or it gets only what is inside the tier).
        other_home = self.make_agent_home("node-b", token=TOKEN)
        other = self.start_agent(home=other_home)
        self.wait_node("node-b", "online", procs=[self.host, other])
        r = self.rest("POST", "/copy", token=TOKEN, timeout=JOB_TIMEOUT_S, body={
            "model_name": MODEL, "source_node": "node-a", "target_node": "node-b",
            "source_device": "disk", "target_device": "disk", "wait": True})
        self.assertLess(r.status, 500, r)
        # Anywhere under node-b's disk tier: the model, its staging, partial files.
        for dirpath, _, names in os.walk(os.path.join(other_home.path, "models")):
            for n in names:
                with open(os.path.join(dirpath, n), "rb") as f:
                    data = f.read()
                self.assertNotIn(self.secret[:24], data, f"{n} on node-b holds the secret")
                self.assertNotIn(self.sub_secret[:24], data, f"{n} on node-b holds the secret")
                self.assertNotIn(b"root:x:0:0", data, f"{n} on node-b holds /etc/passwd")


# ---- 3. engine commands are argv, never a shell -------------------------------------------------

# The engine: records its argv and environment, then serves /health and the OpenAI routes,
# recording the headers of every request. It exits when the agent that started it is gone.
ENGINE_SCRIPT = r'''
import http.server, json, os, sys, threading, time
out = os.environ["SEC_ENGINE_OUT"]
ident = os.environ.get("SEC_ENGINE_ID") or str(os.getpid())
with open(os.path.join(out, ident + ".json.tmp"), "w") as f:
    json.dump({"argv": sys.argv, "env": dict(os.environ), "pid": os.getpid(),
               "pgid": os.getpgid(0)}, f)
os.rename(os.path.join(out, ident + ".json.tmp"), os.path.join(out, ident + ".json"))
args = sys.argv[1:]
host = args[args.index("--host") + 1]
port = int(args[args.index("--port") + 1])
parent = os.getppid()

def orphaned():
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)

threading.Thread(target=orphaned, daemon=True).start()

class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def reply(self, body):
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def record(self):
        with open(os.path.join(out, ident + ".headers"), "a") as f:
            f.write(json.dumps({"path": self.path, "headers": dict(self.headers.items())}) + "\n")
    def do_GET(self):
        self.record()
        self.reply({"status": "ok"} if self.path == "/health" else {"object": "list", "data": []})
    def do_POST(self):
        self.record()
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        self.reply({"id": "x", "object": "chat.completion", "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"},
             "finish_reason": "stop"}]})

http.server.ThreadingHTTPServer((host, port), H).serve_forever()
'''

SERVED = "m-rf"
BAD_NAMES = ["-rf", "--x=y", "-", "--", "a;touch PWNED", "$(id)", "`id`", "a b", "a|b", "a&b",
             "a>b", "../x", "a/b", ".hidden", "a\nb", "a\x00b", "x" * 129, "", "a..b",
             "$HOME", "a'b", 'a"b', "*"]


class EngineArgvTest(SecurityTestCase):

    def setUp(self):
        super().setUp()
        self.out = os.path.join(self.root, "engine-records")
        os.makedirs(self.out)
        self.script = write_file(os.path.join(self.root, "record_engine.py"),
                                 ENGINE_SCRIPT.encode())
        self.pwned = os.path.join(self.root, "pwned")  # every shell trick below targets it
        self.addCleanup(self._kill_engines)

    def _kill_engines(self):
        self._kill_all()  # the agent first: it must not restart an engine killed here
        for path in glob.glob(os.path.join(self.out, "*.json")):
            try:
                with open(path) as f:
                    record = json.load(f)
                os.killpg(record["pgid"], signal.SIGKILL)
            except (OSError, ValueError, KeyError):
                pass

    def pwned_files(self):
        return sorted(glob.glob(self.pwned + "*"))

    def records(self):
        out = {}
        for path in glob.glob(os.path.join(self.out, "*.json")):
            with open(path) as f:
                out[os.path.basename(path)[:-5]] = json.load(f)
        return out

    def start_cluster(self, agent_token_env=False):
        """A host with a token and node-a with the recording engine `rec` (its disk tier under a
        path with a space); returns the agent's disk tier path."""
        p = self.pwned
        command = (f'{PYTHON} {self.script} --host {{host}} --port {{port}} '
                   f'--model {{model_path}} --name={{model_name}} "{{model_name}} on {{port}}" '
                   f'"$(touch {p}-subst)" ;touch {p}-semicolon `touch {p}-backtick` '
                   f'$HOME|tee>{p}-pipe && {{{{literal}}}}')
        engines = {"rec": {"command": command, "ready_timeout_s": 15, "health_path": "/health",
                           "env": {"SEC_ENGINE_OUT": self.out, "SEC_ENGINE_ID": "{instance_id}",
                                   "SEC_ENGINE_NAME": "{model_name}",
                                   "SEC_ENGINE_EVIL": f"$(touch {p}-env)"}}}
        self.make_host_home(token=TOKEN)
        host = self.start_host()
        home = self.new_home("agent-node-a")
        tier = os.path.join(home.path, "disk tier")
        doc = {"client": self.client_section(home, "node-a",
                                             token="" if agent_token_env else TOKEN,
                                             model_cache_dir=tier, default_engine="rec",
                                             engines=engines)}
        home.write_config(doc)
        self.agent_homes["node-a"] = home
        env = {"GSWARM_TOKEN": TOKEN} if agent_token_env else None
        agent = self.start_agent(home=home, env_extra=env)
        self.wait_node("node-a", "online", procs=[host, agent])
        src = os.path.join(self.root, "src")
        write_file(os.path.join(src, "config.json"), b'{"model_type": "llama"}')
        write_file(os.path.join(src, "weights.bin"), b"w" * 1024)
        self.src = src
        self.download_file_model(SERVED, src)
        return tier, host, agent

    def serve(self, name, timeout=SERVE_TIMEOUT_S, **body):
        req = {"model_name": name, "gpu_device": "cpu", "engine": "rec", "wait": True,
               "source_device": "disk"}
        req.update(body)
        return self.rest("POST", "/serve", token=TOKEN, body=req, timeout=timeout)

    def test_bad_model_names_refused_before_any_engine(self):
        self.start_cluster()
        grpc, api_pb2, api_pb2_grpc = import_stubs()
        names = [n.replace("PWNED", self.pwned) for n in BAD_NAMES]
        with grpc_channel(self.grpc_target) as channel:
            stub = api_pb2_grpc.GSwarmStub(channel)
            for name in names:
                with self.subTest(name=name):
                    r = self.rest("POST", "/api/models", token=TOKEN,
                                  body={"model_name": name, "source_url": f"file://{self.src}"})
                    self.assertEqual(r.status, 400, f"register {name!r}: {r!r}")
                    if name:
                        self.assertIn("name", error_message(r).lower(), r)
                    r = self.rest("POST", "/download", token=TOKEN, timeout=JOB_TIMEOUT_S,
                                  body={"model_name": name, "source_url": f"file://{self.src}",
                                        "wait": True})
                    self.assertEqual(r.status, 400, f"download as {name!r}: {r!r}")
                    r = self.serve(name)
                    self.assertTrue(400 <= r.status < 500, f"serve {name!r}: {r!r}")
                    r = self.rest("POST", "/v1/chat/completions", token=TOKEN, timeout=20, body={
                        "model": name, "messages": [{"role": "user", "content": "hi"}]})
                    self.assertTrue(400 <= r.status < 500, f"router with {name!r}: {r!r}")
                    r = self.rest("POST", f"/api/models/{urllib.parse.quote(name, safe='')}/load",
                                  token=TOKEN, body={})
                    self.assertTrue(400 <= r.status < 500, f"load {name!r}: {r!r}")
                    with self.assertRaises(grpc.RpcError) as ctx:
                        stub.RegisterModel(api_pb2.RegisterModelRequest(
                            model_name=name, source_url=f"file://{self.src}"),
                            metadata=[("authorization", f"Bearer {TOKEN}")], timeout=5)
                    self.assertEqual(ctx.exception.code(), grpc.StatusCode.INVALID_ARGUMENT,
                                     f"gRPC RegisterModel {name!r}: {ctx.exception.details()}")
        listed = sorted(m["name"] for m in
                        self.rest("GET", "/api/models", token=TOKEN).json.get("models", []))
        self.assertEqual(listed, [SERVED], "only the valid name is registered")
        self.assertEqual(self.records(), {}, "no engine may have started")
        self.assertEqual(self.pwned_files(), [])
        tier = os.path.join(self.agent_homes["node-a"].path, "disk tier")
        self.assertEqual([e for e in sorted(os.listdir(tier)) if not e.startswith(".")],
                         [SERVED], "nothing but the valid model in the disk tier")

    def test_engine_argv_is_literal_no_shell(self):
        tier, _, _ = self.start_cluster()
        p = self.pwned
        extra = ["-rf", "--x=y", f"a;touch {p}-extra", f"$(touch {p}-extra2)",
                 f"`touch {p}-extra3`", "a b", f"|touch {p}-extra4", "*", "$HOME", "{port}"]
        r = self.serve(SERVED, instance_id="inst-argv", extra_args=extra)
        inst = ((r.json or {}).get("job") or {}).get("instance") or {}
        self.assertEqual((r.status, inst.get("state")), (200, "ready"), r)
        record = self.records().get("inst-argv")
        self.assertIsNotNone(record, f"the engine recorded nothing: {self.records()}")
        argv = record["argv"]
        port = str(inst.get("port") or inst["endpoint"].rsplit(":", 1)[1])
        model_path = argv[6] if len(argv) > 6 else ""
        self.assertEqual(os.path.realpath(model_path),
                         os.path.realpath(os.path.join(tier, SERVED)),
                         f"{{model_path}} (under a folder with a space) is one argument: {argv}")
        expected = [self.script, "--host", "127.0.0.1", "--port", port, "--model", model_path,
                    f"--name={SERVED}", f"{SERVED} on {port}", f"$(touch {p}-subst)",
                    ";touch", f"{p}-semicolon", "`touch", f"{p}-backtick`",
                    f"$HOME|tee>{p}-pipe", "&&", "{literal}", *extra]
        self.assertEqual(argv, expected, "argv is the template, element for element")
        env = record["env"]
        self.assertEqual(env.get("SEC_ENGINE_NAME"), SERVED)
        self.assertEqual(env.get("SEC_ENGINE_EVIL"), f"$(touch {p}-env)")
        # The router passes the request on without the caller's token.
        r = self.rest("POST", "/v1/chat/completions", token=TOKEN, timeout=20, body={
            "model": SERVED, "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(r.status, 200, r)
        with open(os.path.join(self.out, "inst-argv.headers")) as f:
            posts = [json.loads(line) for line in f if '"POST"' in line or "/v1/" in line]
        self.assertTrue(posts, "the engine saw the routed request")
        for post in posts:
            self.assertNotIn(TOKEN, json.dumps(post), "the router forwarded the token")
        self.assertEqual(self.pwned_files(), [], "a shell ran part of the command")

    def test_engine_does_not_inherit_the_cluster_token(self):
        self.start_cluster(agent_token_env=True)
        r = self.serve(SERVED, instance_id="inst-env")
        inst = ((r.json or {}).get("job") or {}).get("instance") or {}
        self.assertEqual((r.status, inst.get("state")), (200, "ready"), r)
        env = self.records()["inst-env"]["env"]
        holding = sorted(k for k, v in env.items() if TOKEN in v)
        self.assertEqual(holding, [],
                         "the engine (a third-party process) must not receive the cluster "
                         f"token; it got it in {holding}")


if __name__ == "__main__":
    unittest.main()
