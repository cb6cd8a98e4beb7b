"""Hostile clients (issue "Reliability"): a real host and one agent take thousands of malformed
calls, over REST and gRPC, and must answer every one of them with a client error (or a success,
where the random input happened to be valid), never a 5xx, a hang or a crash.

The calls come from random.Random(seed); the seed is printed first, and the same seed replays
the same calls (the calls never depend on the answers):

  REST, every route of the host (host/rest_gateway.cc's GSWARM_ROUTE table, the router's /v1/
  routes, /events, /metrics, /instances/{id}/logs, /, /dashboard/*): bad JSON, non-UTF-8 bytes,
  JSON nested 100 000 deep, wrong JSON types for known fields, unknown fields, absurd numbers,
  10 KB and odd names (/, .., %2e%2e, NUL, CR LF, unicode, a leading '-', shell syntax), path
  traversal in path parameters, unknown and local URL schemes in source_url, headers just under
  and over the 64 KiB limit, a few bodies over the 32 MiB limit, wrong methods, odd
  Authorization headers, chunked bodies (good and broken), malformed HTTP, random bytes.
  Every answer must be 2xx or 4xx; every 4xx carries {"error": {...}} (the OpenAI shape,
  {"error": {"message", "type", ...}}, under /v1/); every 2xx JSON answer parses. Only random
  bytes may be answered by closing the connection. One 5xx is allowed (and counted apart): the
  router's 503 when a valid request's model was placed on the node and its engine could not
  start there (this test's node has no engine installed).

  gRPC, every unary method of gswarm.v1.GSwarm (walked from the service descriptor), with
  requests built from each request message's descriptor: odd, 10 KB and 1 MB strings, strings
  that are not UTF-8, integers at and past their type's maximum, unknown fields (nested
  messages among them); and a few calls of the streaming methods (WatchEvents, WatchJob,
  GetInstanceLogs) cut short by a deadline. Statuses allowed: OK, INVALID_ARGUMENT, NOT_FOUND,
  FAILED_PRECONDITION, OUT_OF_RANGE, ALREADY_EXISTS, UNAUTHENTICATED, PERMISSION_DENIED,
  RESOURCE_EXHAUSTED, ABORTED, CANCELLED, and DEADLINE_EXCEEDED for the streams cut short.

  A second, smaller phase runs against a host with a token: calls with no token, a wrong one
  or a malformed Authorization header must get 401 / UNAUTHENTICATED (a few routes are public).

Afterwards the host and the agent must still run (/health 200, the node online), and nothing
may have been written or removed outside the test's temporary root: the traversal, absolute
path and shell payloads that would create something name it "gswhostile", and the test looks
for that name where they would land (the root's parent, /tmp, /dev/shm, /, the repository, the
test's directory, HOME), and checks canary files in and around the agent's and host's
directories.

Jobs that valid-looking calls start are never waited for (`wait` is never true). Each request
has a 10 s limit; a request that gets no answer in time is a failure. When the host dies, the
request that killed it is reported, the host is restarted, and requests of the same shape are
skipped for the rest of the phase (counted in the summary), so that one crash does not hide the
other findings.

Environment: GSWARM_HOSTILE_SEED (default 1337), GSWARM_HOSTILE_CALLS (default 10000; the token
phase makes a tenth as many, at least 200), GSWARM_HOSTILE_ONLY=I,J,... (send only those call
numbers of the seed's sequence, to replay a failure), GSWARM_HOSTILE_TRACE=1 (print every call
and its answer).

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_hostile
"""

import collections
import json
import os
import random
import re
import selectors
import socket
import struct
import sys
import time
import unittest
import urllib.parse

from gswarm_harness import (
    ONLINE_TIMEOUT_S, READY_TIMEOUT_S, RECONNECT_TIMEOUT_S, REPO_ROOT, HubTestCase, grpc_channel,
    import_stubs)

DEFAULT_SEED = 1337
DEFAULT_CALLS = 10000
REQUEST_TIMEOUT_S = 10.0
STREAM_DEADLINE_S = 0.3
MAX_STREAM_CALLS = 40
MAX_HEADER_BYTES = 64 << 10  # host/http_server.h
MAX_BODY_BYTES = 32 << 20  # host.http_max_body_mb
HUGE_BODIES = 5  # bodies of about 32 MiB per phase
MAX_HOST_RESTARTS = 4
MARKER = "gswhostile"
TOKEN = "hostile-secret-4f2a9c7e1b"
KNOWN_MODEL = "hx-known"
NODE = "node-a"
TINY_LLAMA = "hf://test-org/tiny-llama"

GRPC_ALLOWED = {"OK", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "OUT_OF_RANGE",
                "ALREADY_EXISTS", "UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                "ABORTED", "CANCELLED"}
GRPC_STREAMS = ("WatchEvents", "WatchJob", "GetInstanceLogs")
# The router's 503 when it placed a valid model on a node and the node's serve job failed (no
# engine here: vllm is not installed). The request was valid and the engine could not start:
# not an answer to hostile input. Counted apart, in the summary.
ENGINE_FAILED = re.compile(r'loading "[^"]*" on node \S+ (failed|cancelled): ')

# ---- the routes ---------------------------------------------------------------------------------

# (method, path, request message or body shape). {name}, {id}, {view}, {file} are path
# parameters. Kept in step with the host's sources by test_route_table_is_covered.
ROUTES = [
    ("GET", "/health", "HealthRequest"),
    ("GET", "/nodes", "ListNodesRequest"),
    ("GET", "/config", "GetConfigRequest"),
    ("GET", "/memory/{view}", "GetMemoryRequest"),
    ("DELETE", "/memory/dram/{name}", "EvictDramRequest"),
    ("GET", "/capacity", "GetCapacityRequest"),
    ("POST", "/api/models", "RegisterModelRequest"),
    ("GET", "/api/models", "ListModelsRequest"),
    ("GET", "/api/models/{name}", "GetModelRequest"),
    ("DELETE", "/api/models/{name}", "DeleteModelRequest"),
    ("POST", "/models", "RegisterModelRequest"),
    ("GET", "/models", "ListModelsRequest"),
    ("GET", "/models/{name}", "GetModelRequest"),
    ("DELETE", "/models/{name}", "DeleteModelRequest"),
    ("POST", "/models/validate", "ValidateModelRequest"),
    ("GET", "/models/{name}/validate", "ValidateModelRequest"),
    ("POST", "/api/models/{name}/load", "LoadModelRequest"),
    ("POST", "/api/orchestrate/load", "LoadModelRequest"),
    ("DELETE", "/v1/models/{name}", "UnloadModelRequest"),
    ("POST", "/api/models/{name}/unload", "UnloadModelRequest"),
    ("POST", "/download", "DownloadRequest"),
    ("POST", "/discover", "DiscoverRequest"),
    ("POST", "/copy", "CopyRequest"),
    ("POST", "/serve", "ServeRequest"),
    ("POST", "/stop_serve", "StopInstanceRequest"),
    ("DELETE", "/instances/{id}", "StopInstanceRequest"),
    ("POST", "/instances/{id}/sleep", "SleepInstanceRequest"),
    ("POST", "/instances/{id}/wake", "WakeInstanceRequest"),
    ("GET", "/serving", "ListInstancesRequest"),
    ("GET", "/serving/{name}", "ListInstancesRequest"),
    ("GET", "/jobs", "ListJobsRequest"),
    ("GET", "/jobs/{id}", "GetJobRequest"),
    ("DELETE", "/jobs/{id}", "GetJobRequest"),
    ("GET", "/events", "@events"),
    ("GET", "/metrics", None),
    ("GET", "/instances/{id}/logs", "@logs"),
    ("GET", "/", None),
    ("GET", "/dashboard/{file}", None),
    ("GET", "/v1/models", None),
    ("POST", "/v1/models/switch", "@openai"),
    ("POST", "/v1/models/load", "@openai"),
    ("POST", "/v1/chat/completions", "@openai"),
    ("POST", "/v1/completions", "@openai"),
    ("POST", "/v1/embeddings", "@openai"),
]
PARAM_ROUTES = [r for r in ROUTES if "{" in r[1]]
MESSAGE_ROUTES = [r for r in ROUTES if r[2] is not None]
BODY_ROUTES = [r for r in ROUTES if r[0] in ("POST", "DELETE") or r[2] == "@openai"]
SOURCE_ROUTES = [r for r in ROUTES if r[2] in ("DownloadRequest", "RegisterModelRequest")]
PUBLIC_PATHS = ("/health", "/")


def route_shape(path):
    """A path pattern with every parameter as {} ("/models/([^/]+)" and "/models/{name}")."""
    return re.sub(r"\{[a-z]+\}|\([^)]*\)", "{}", path)


def source_routes():
    """(method, shape) of every route the host's sources declare: GSWARM_ROUTE lines of
    host/rest_gateway.cc, and every Route("METHOD", "literal", ...) in host/*.cc. None when
    the sources are not there (an installed test tree)."""
    host_dir = os.path.join(REPO_ROOT, "host")
    gateway = os.path.join(host_dir, "rest_gateway.cc")
    if not os.path.isfile(gateway):
        return None
    found = set()
    with open(gateway) as f:
        text = f.read()
    for method, expr in re.findall(r'GSWARM_ROUTE\(\s*"([A-Z]+)",\s*([^,]+),', text):
        prefixes = ["/api/models", "/models"] if "prefix" in expr else [""]
        for prefix in prefixes:
            parts = []
            for token in expr.split("+"):
                token = token.strip()
                if token == "kName":
                    parts.append("{}")
                elif token == "prefix":
                    parts.append(prefix)
                else:
                    parts.append(token.strip('"'))
            found.add((method, route_shape("".join(parts))))
    for name in sorted(os.listdir(host_dir)):
        if name.endswith(".cc"):
            with open(os.path.join(host_dir, name)) as f:
                for method, path in re.findall(r'\bRoute\(\s*"([A-Z]+)",\s*"([^"]*)"', f.read()):
                    found.add((method, route_shape(path)))
    return found


# ---- values -------------------------------------------------------------------------------------

LONG = "n" * 10240
TRAVERSALS = [
    "..", "../..", f"../../{MARKER}-dotdot", f"..%2f..%2f{MARKER}-pct", "%2e%2e",
    f"%2e%2e%2f%2e%2e%2f{MARKER}-pct2", "%252e%252e%252f", f"..%5c..%5c{MARKER}-bs",
    f"....//....//{MARKER}-dbl", "..;", "/..", "%2f%2e%2e", ".%00.", "..%00",
    f"..%c0%af{MARKER}-overlong", "%c0%ae%c0%ae", f"~/../{MARKER}-tilde", "./.", "/etc/passwd",
    "%2fetc%2fpasswd", f"..%2F..%2F..%2F..%2F..%2F..%2Ftmp%2F{MARKER}-abs",
]
NAMES = [
    KNOWN_MODEL, KNOWN_MODEL, "tiny", "a", "A1", "model-1", "default", "node-a",
    "", " ", ".", "..", "...", "-", "-rf", "--help", "-x", "_", "a..b",
    f"../{MARKER}-up", f"../../{MARKER}-up2", f"../../../../../../tmp/{MARKER}-abs",
    f"/tmp/{MARKER}-abs", "/etc/passwd", "a/b", f"..\\..\\{MARKER}-bs", "%2e%2e",
    f"%2e%2e%2f{MARKER}-pct", f"..%2f{MARKER}-pct", "%252e%252e",
    f"{MARKER}\x00../../x", "\x00", "a\x00b", "a\nb", "a\r\nX-Injected: 1", "a\tb",
    "\u540d\u524d", "mod\u00e8le", "\U0001F600" * 50, "\u202emodel", "\ufeffmodel", "a b",
    f"$(touch /tmp/{MARKER}-cmd)", f"`touch /tmp/{MARKER}-bt`", f";touch /tmp/{MARKER}-semi",
    "|id", "'", '"', "<script>alert(1)</script>", "{model_path}", "{{", "}}", "CON", "NUL",
    "*", "?", "#", "%", "%%", "%zz", "%00", "~", "~root", "$HOME",
    "n" * 129, "n" * 1000, LONG, "x" * 300 + "/" + "y" * 300,
]
IDS = NAMES + ["0", "-1", "j-1", "00000000-0000-0000-0000-000000000000", "9" * 40, "ffffffff",
               "job-" + "f" * 32, "i-1"]
SOURCES = [
    TINY_LLAMA, "hf://test-org/tiny-gguf", "hf://test-org/nonexistent", "hf://../../etc",
    "hf://org/name@../../x", "hf://a/b@" + "r" * 300, "hf://", "hf:///", "hf://org",
    "hf://org/name/extra", "hf://test-org/tiny-llama@", "HF://test-org/tiny-gguf",
    "hf://test-org/tiny-llama\x00", "\u202ehf://x/y", "hf://" + "a" * 10000 + "/b",
    "https://127.0.0.1:1/model.bin", "http://127.0.0.1:1/x.safetensors", "https://",
    "https:///x", "https://127.0.0.1:1/", "https://127.0.0.1:1/..%2f..%2fetc%2fpasswd",
    "https://user:pass@127.0.0.1:1/a.bin", "https://127.0.0.1:1/%00.bin",
    "ftp://127.0.0.1/model.bin", "file://../../etc", "file://../../etc/passwd",
    "file://relative/dir", "file:///etc/passwd", "file:///dev/null",
    f"file:///nonexistent-{MARKER}/x", f"file:///tmp/{MARKER}-missing/..",
    f"file:///tmp/{MARKER}-missing/../../etc", "javascript:alert(1)", "data:text/plain,hi",
    "gopher://x", "s3://bucket/key", "//etc/passwd", "/etc", "../../etc", "", " ",
]
DEVICES = ["disk", "dram", "gpu", "DRAM", "", "nvme", "../x", "disk\x00", LONG]
GPUS = ["gpu0", "cpu", "gpu-1", "gpu99999999999", "", "../", "gpu0,gpu1", LONG]
ENGINE_NAMES = ["vllm", "llama-server", "sglang", "fake", "", "../../bin/sh", "/bin/sh", "sh",
                "{model_path}", LONG]
ARGS = ["--help", "; rm -rf /", f"$(touch /tmp/{MARKER}-arg)", "--port=-1", "", "\x00", LONG]
KINDS = ["node", "job", "replica", "instance", "router", "", "bogus", "node,job", LONG, "\x00"]
VIEWS = ["models", "dram", "gpu", "nodes", "", "bogus", "../models"]
STATES = ["running", "succeeded", "failed", "", "bogus", "ready", LONG]
TYPES = ["llm", "diffusion", "vision", "", "bogus", LONG]
REVISIONS = ["main", "v1.0", "refs/pr/1", "../../x", "", "a//b", "/main", LONG]
LOCATIONS = ["primary", "secondary", "custom", "", "bogus"]
CACHE_PATHS = [f"/tmp/{MARKER}-custom", f"../../{MARKER}-custom", "/", "/proc/self", "", LONG]
KEEP_ALIVES = ["5m", "-1", -1, 0, 300, 1e308, "1e400", "infinite", "inf", "nan", "99999999999h",
               "1h30m", True, [], {}, None, "", "-5m", "9223372036854775807s"]
BOOLS = [True, False, True, False]
WAIT_VALUES = [False, 0, "false", None, "no", [], {}, "", 0.0]  # never a true one: no waits

U32 = [0, 1, 2, 7, 100, 10000, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1]
U64 = U32 + [2 ** 53 + 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]
DOUBLES = [0.0, -1.0, 1.5, 1e308, -1e308, 5e-324, 1e15, float("inf"), float("-inf"),
           float("nan")]


class Raw:
    """JSON text (or any bytes) written into a body as it is."""

    def __init__(self, data):
        self.data = data if isinstance(data, bytes) else data.encode()


ABSURD_NUMBERS = [-1, -2 ** 63, 2 ** 32, 2 ** 64, 2 ** 64 + 1, 10 ** 30, -10 ** 30, 1.5, -0.5,
                  Raw("1e999"), Raw("-1e999"), Raw("NaN"), Raw("Infinity"), Raw("-0"),
                  Raw("1e308"), Raw("0x10"), Raw("01"), Raw("1."), Raw("+1"), Raw("1e-999"),
                  "12", "-5", "1e3", " 7", "", "4294967296", "18446744073709551616", "abc"]
WRONG_TYPES = [123, -1, 1.5, True, False, None, [], [1, 2], {}, {"a": 1}, "str", "",
               [[[]]], {"": {"": {}}}, Raw("1e999"), Raw("NaN")]


def pick(rng, seq):
    return seq[rng.randrange(len(seq))]


def encode_json(value, ascii_only=True):
    """JSON bytes for a nest of dicts, lists and scalars, Raw written as is; strings may hold
    lone surrogates (escaped as \\udXXX: valid JSON, not valid Unicode)."""
    if isinstance(value, Raw):
        return value.data
    if isinstance(value, dict):
        return b"{" + b",".join(
            (k.data if isinstance(k, Raw) else json.dumps(k, ensure_ascii=True).encode()) + b":" +
            encode_json(v, ascii_only) for k, v in value.items()) + b"}"
    if isinstance(value, (list, tuple)):
        return b"[" + b",".join(encode_json(v, ascii_only) for v in value) + b"]"
    if isinstance(value, str) and not ascii_only:
        try:
            return json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            pass
    return json.dumps(value, ensure_ascii=True).encode()


def percent(text, safe=""):
    return urllib.parse.quote(text, safe=safe, encoding="utf-8", errors="surrogatepass")


def percent_decode(data):
    """The host's decoding of a request path (host/http_server.cc PercentDecode, no '+')."""
    out = bytearray()
    i = 0
    while i < len(data):
        c = data[i]
        if c == 0x25 and i + 2 < len(data):
            try:
                out.append(int(data[i + 1:i + 3].decode("ascii"), 16))
                i += 3
                continue
            except (ValueError, UnicodeDecodeError):
                pass
        out.append(c)
        i += 1
    return bytes(out)


def encode_param(rng, text):
    """A path parameter or query value as bytes of a request target, encoded one of several
    ways: raw (whatever the bytes are), percent-encoded, '/' kept, doubly encoded, with bytes
    that are not UTF-8."""
    mode = rng.randrange(6)
    if mode == 0:
        return text.encode("utf-8", "surrogatepass")
    if mode in (1, 2):
        return percent(text).encode()
    if mode == 3:
        return percent(text, safe="/%").encode()
    if mode == 4:
        return percent(percent(text)).encode()
    return pick(rng, [b"\xff\xfe", b"%ff%fe", b"%c0%80", b"\xc3", b"%ed%a0%80"]) + \
        percent(text).encode()


# ---- protobuf descriptors -----------------------------------------------------------------------

class Proto:
    """The generated stubs, and per-field value choices."""

    def __init__(self):
        self.grpc, self.api_pb2, _ = import_stubs()
        from google.protobuf import descriptor as d  # noqa: PLC0415
        self.FD = d.FieldDescriptor
        self.service = self.api_pb2.DESCRIPTOR.services_by_name["GSwarm"]
        self.unary = [m for m in self.service.methods
                      if not m.client_streaming and not m.server_streaming]
        self.streams = [m for m in self.service.methods if m.server_streaming]

    def message(self, name):
        return self.api_pb2.DESCRIPTOR.message_types_by_name[name]

    def message_class(self, descriptor):
        return getattr(self.api_pb2, descriptor.name)

    def repeated(self, field):
        return field.label == self.FD.LABEL_REPEATED

    def string_choices(self, field_name):
        if field_name in ("source_url", "hf_path"):
            return SOURCES
        if field_name in ("target_device", "source_device", "tier"):
            return DEVICES
        if field_name == "gpu_device":
            return GPUS
        if field_name == "engine":
            return ENGINE_NAMES
        if field_name == "extra_args":
            return ARGS
        if field_name == "kinds":
            return KINDS
        if field_name == "view":
            return VIEWS
        if field_name == "state":
            return STATES
        if field_name == "type":
            return TYPES
        if field_name == "revision":
            return REVISIONS
        if field_name == "cache_location":
            return LOCATIONS
        if field_name == "cache_path":
            return CACHE_PATHS
        if field_name in ("job_id", "instance_id"):
            return IDS
        return NAMES

    def good_value(self, rng, field, absurd=False):
        """A value of the field's own type (odd, but of the right type)."""
        t = field.type
        if field.name == "wait":
            return False
        if t == self.FD.TYPE_BOOL:
            return pick(rng, BOOLS)
        if t == self.FD.TYPE_STRING:
            return pick(rng, self.string_choices(field.name))
        if t == self.FD.TYPE_BYTES:
            return bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        if t in (self.FD.TYPE_UINT32, self.FD.TYPE_FIXED32):
            return pick(rng, U32[-4:] if absurd else U32)
        if t in (self.FD.TYPE_UINT64, self.FD.TYPE_FIXED64):
            return pick(rng, U64[-5:] if absurd else U64)
        if t in (self.FD.TYPE_INT32, self.FD.TYPE_SINT32, self.FD.TYPE_SFIXED32):
            return pick(rng, [-2 ** 31, -1, 0, 1, 2 ** 31 - 1])
        if t in (self.FD.TYPE_INT64, self.FD.TYPE_SINT64, self.FD.TYPE_SFIXED64):
            return pick(rng, [-2 ** 63, -1, 0, 1, 2 ** 63 - 1])
        if t in (self.FD.TYPE_DOUBLE, self.FD.TYPE_FLOAT):
            return pick(rng, DOUBLES[3:] if absurd else DOUBLES)
        if t == self.FD.TYPE_ENUM:
            return pick(rng, [v.number for v in field.enum_type.values] + [0, 99])
        return None  # messages: built by the callers


# ---- REST requests ------------------------------------------------------------------------------

class Req:
    """One raw HTTP exchange to make, and what it is."""

    def __init__(self, kind, route, method, target, headers=(), body=b"", *, raw=None,
                 allow_drop=False, half_close=False, expect_401=False, content_length=True):
        self.kind = kind
        self.route = route  # "METHOD /pattern"
        self.method = method
        self.target = target
        self.headers = list(headers)
        self.body = body
        self.raw = raw  # bytes sent instead of a well-formed request
        self.allow_drop = allow_drop
        self.half_close = half_close
        self.expect_401 = expect_401
        self.content_length = content_length
        self.index = -1

    def signature(self):
        """Requests of the same shape (on any route): the host crashed on one, the others are
        skipped."""
        size = len(self.raw if self.raw is not None else self.target)
        return (self.kind, self.route if self.raw is not None else "REST", size > 16384)

    def bytes(self, port):
        if self.raw is not None:
            return self.raw
        head = [self.method.encode() + b" " + self.target + b" HTTP/1.1",
                b"Host: 127.0.0.1:" + str(port).encode(), b"Connection: close"]
        for name, value in self.headers:
            head.append(name + b": " + value)
        if self.content_length and self.body:
            head.append(b"Content-Length: " + str(len(self.body)).encode())
        return b"\r\n".join(head) + b"\r\n\r\n" + self.body

    def decoded_path(self):
        target = self.target
        if self.raw is not None:  # the request line's target, when there is one
            parts = self.raw.split(b"\r\n", 1)[0].split(b" ")
            target = parts[1] if len(parts) > 2 and parts[1].startswith(b"/") else b""
        return percent_decode(target.split(b"?", 1)[0])

    def describe(self, port):
        if self.raw is not None:
            return (f"#{self.index} [{self.kind}] raw bytes ({len(self.raw)}): "
                    f"{self.raw[:200]!r}")
        target = self.target if len(self.target) <= 300 else \
            self.target[:300] + b"...(%d bytes)" % len(self.target)
        headers = ", ".join(
            f"{n.decode(errors='replace')}: " +
            (repr(v[:60]) + (f"...({len(v)} bytes)" if len(v) > 60 else ""))
            for n, v in self.headers[:6])
        if len(self.headers) > 6:
            headers += f", ... ({len(self.headers)} headers)"
        return (f"#{self.index} [{self.kind}] {self.method} {target!r}"
                f"{'  headers: ' + headers if headers else ''}"
                f"  body ({len(self.body)} bytes): {self.body[:200]!r}")


class Answer:
    def __init__(self, outcome, status=0, headers=None, body=b"", note=""):
        self.outcome = outcome  # answered | dropped | timeout | refused
        self.status = status
        self.headers = headers or {}
        self.body = body
        self.note = note

    def __repr__(self):
        if self.outcome != "answered":
            return f"<{self.outcome}{': ' + self.note if self.note else ''}>"
        return f"<HTTP {self.status} {self.body[:300]!r}>"


def _parse_answer(buf, eof, head_only):
    """(Answer, done) from the bytes received so far."""
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None, False
        lines = bytes(buf[:end]).split(b"\r\n")
        m = re.match(rb"HTTP/\d\.\d (\d{3})", lines[0])
        if not m:
            return Answer("answered", -1, note=f"bad status line {lines[0][:100]!r}"), True
        status = int(m.group(1))
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
        if 100 <= status < 200:  # 100 Continue: the answer follows
            del buf[:end + 4]
            continue
        rest = bytes(buf[end + 4:])
        if head_only or headers.get("content-type", "").startswith("text/event-stream"):
            return Answer("answered", status, headers), True
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, pos = b"", 0
            while True:
                nl = rest.find(b"\r\n", pos)
                if nl < 0:
                    break
                try:
                    size = int(rest[pos:nl].split(b";")[0], 16)
                except ValueError:
                    return Answer("answered", status, headers, body, "bad chunk"), True
                if size == 0:
                    return Answer("answered", status, headers, body), True
                if len(rest) < nl + 2 + size + 2:
                    break
                body += rest[nl + 2:nl + 2 + size]
                pos = nl + 2 + size + 2
            if eof:
                return Answer("answered", status, headers, body, "chunked answer cut"), True
            return None, False
        if "content-length" in headers:
            length = int(headers["content-length"])
            if len(rest) >= length:
                return Answer("answered", status, headers, rest[:length]), True
            if eof:
                return Answer("answered", status, headers, rest, "answer shorter than its "
                              "Content-Length"), True
            return None, False
        if eof:
            return Answer("answered", status, headers, rest), True
        return None, False


def exchange(port, data, timeout=REQUEST_TIMEOUT_S, half_close=False, head_only=False):
    """Sends `data` on a new connection and reads one answer, sending and reading at once (an
    answer that comes before the whole body went out stops the sending: 413)."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except ConnectionRefusedError:
        return Answer("refused")
    except OSError as e:
        return Answer("refused", note=repr(e))
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    view = memoryview(data)
    sent = 0
    sending = True
    buf = bytearray()
    eof = False
    reset = ""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return Answer("timeout", note=f"{sent} of {len(data)} bytes sent, "
                              f"{len(buf)} received: {bytes(buf[:200])!r}")
            for _, mask in sel.select(min(left, 1.0)):
                if mask & selectors.EVENT_WRITE and sending:
                    try:
                        sent += sock.send(view[sent:sent + (256 << 10)])
                    except BlockingIOError:
                        pass
                    except OSError:  # the host refused the rest (and may have answered)
                        sending = False
                    if sent >= len(data):
                        sending = False
                        if half_close:
                            try:
                                sock.shutdown(socket.SHUT_WR)
                            except OSError:
                                pass
                    if not sending:
                        sel.modify(sock, selectors.EVENT_READ)
                if mask & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(256 << 10)
                    except BlockingIOError:
                        chunk = None
                    except OSError as e:
                        chunk, reset = b"", repr(e)
                    if chunk == b"":
                        eof = True
                    elif chunk:
                        buf += chunk
            answer, done = _parse_answer(buf, eof, head_only)
            if answer is not None and sending:
                sending = False
                sel.modify(sock, selectors.EVENT_READ)
            if done:
                return answer
            if eof:
                return Answer("dropped", note=f"{reset or 'closed'} after {sent} of {len(data)} "
                              f"bytes sent, {len(buf)} received: {bytes(buf[:200])!r}")
    finally:
        sel.close()
        sock.close()


class RestFuzzer:
    """Makes the REST requests of one phase (from the phase's rng only)."""

    def __init__(self, proto, hub_url, huge_at):
        self.proto = proto
        self.hub_url = hub_url
        self.huge_at = huge_at
        self.sources = SOURCES + [f"{hub_url}/test-org/tiny-llama/resolve/main/config.json",
                                  f"{hub_url}/../../etc/passwd"]

    # -- bodies and queries --

    def field_value(self, rng, field, mode):
        p = self.proto
        if field.name == "wait":
            return pick(rng, WAIT_VALUES)
        if mode == "wrong-types":
            return pick(rng, WRONG_TYPES)
        numeric = field.type not in (p.FD.TYPE_STRING, p.FD.TYPE_BOOL, p.FD.TYPE_BYTES,
                                     p.FD.TYPE_MESSAGE)
        if mode == "absurd-sizes" and numeric:
            value = pick(rng, ABSURD_NUMBERS)
        elif field.name in ("source_url", "hf_path"):
            value = pick(rng, self.sources)
        elif field.type == p.FD.TYPE_MESSAGE:
            value = {"unknown_nested": pick(rng, WRONG_TYPES)}
        else:
            value = p.good_value(rng, field, absurd=mode == "absurd-sizes")
            if isinstance(value, float) and value != value:
                value = Raw("NaN") if rng.random() < 0.5 else "NaN"
            elif isinstance(value, float) and value in (float("inf"), float("-inf")):
                value = str(value).replace("inf", "Infinity")
            elif isinstance(value, bytes):
                value = value.hex()
            elif isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.3:
                value = str(value)  # protobuf's JSON takes 64-bit numbers as strings
        if p.repeated(field) and not isinstance(value, list):
            value = [value] * rng.randrange(0, 4) if rng.random() < 0.8 else value
        return value

    def message_body(self, rng, message_name, mode):
        fields = {}
        if message_name.startswith("@"):
            return self.special_body(rng, message_name, mode)
        descriptor = self.proto.message(message_name)
        for field in descriptor.fields:
            if rng.random() < 0.6:
                key = field.name if rng.random() < 0.85 else field.json_name
                fields[key] = self.field_value(rng, field, mode)
        if mode == "unknown-fields" or rng.random() < 0.05:
            for _ in range(rng.randrange(1, 4)):
                fields[pick(rng, ["zz_unknown", "__proto__", "@type", "", "constructor",
                                  "modelName ", "MODEL_NAME", "\u0000", "a" * 1000,
                                  "wait\u0000"])] = pick(rng, WRONG_TYPES)
        return fields

    def special_body(self, rng, shape, mode):
        if shape == "@openai":
            body = {}
            if rng.random() < 0.85:
                body["model"] = pick(rng, NAMES) if mode != "wrong-types" else \
                    pick(rng, WRONG_TYPES)
            if rng.random() < 0.7:
                body["messages"] = pick(rng, [
                    [{"role": "user", "content": "hi"}], [], [{}], [{"role": 1}], "hi", {},
                    [{"role": "user", "content": pick(rng, NAMES)}], None,
                    [{"role": "user", "content": [{"type": "text", "text": LONG}]}]])
            for key, values in (("prompt", ["hi", [], [1, 2], None, LONG]),
                                ("input", ["hi", ["a", "b"], 5, None]),
                                ("stream", [True, False, "yes", 1, None]),
                                ("max_tokens", ABSURD_NUMBERS + [1, 4]),
                                ("keep_alive", KEEP_ALIVES),
                                ("temperature", ABSURD_NUMBERS)):
                if rng.random() < 0.3:
                    body[key] = pick(rng, values)
            if mode == "unknown-fields":
                body[pick(rng, ["zz", "model ", "", "Model"])] = pick(rng, WRONG_TYPES)
            return body
        if shape == "@events":
            return {pick(rng, ["kind", "model", "node", "since", "last", "follow"]):
                    pick(rng, NAMES)}
        return {"tail": pick(rng, ABSURD_NUMBERS)}

    def query(self, rng, route, mode):
        """Query pairs (bytes) for a route; job routes never get a true `wait`."""
        shape = route[2]
        pairs = []
        if shape == "@events":
            keys = ["kind", "kinds", "model", "node", "since", "last", "follow", "zz"]
            for _ in range(rng.randrange(0, 5)):
                key = pick(rng, keys)
                if key in ("since", "last"):
                    value = pick(rng, ABSURD_NUMBERS + [0, 1, 5])
                    value = value.data.decode() if isinstance(value, Raw) else str(value)
                elif key == "follow":
                    value = pick(rng, ["false", "false", "true", "", "yes", "0"])
                else:
                    value = pick(rng, KINDS + NAMES)
                pairs.append((key, value))
            if rng.random() < 0.8 and not any(k == "follow" for k, _ in pairs):
                pairs.append(("follow", "false"))
        elif shape == "@logs":
            if rng.random() < 0.8:
                pairs.append(("tail", str(pick(rng, [0, 1, 100, 10000, 10001, -1, 2 ** 32,
                                                     2 ** 64, "abc", "", "1e3", " 5"]))))
        elif shape and not shape.startswith("@"):
            for field in self.proto.message(shape).fields:
                if rng.random() < (0.5 if mode in ("query", "absurd-sizes") else 0.15):
                    value = self.field_value(rng, field, mode)
                    if field.name == "wait":
                        value = "false"
                    elif isinstance(value, Raw):
                        value = value.data.decode()
                    elif isinstance(value, bool):
                        value = "true" if value else "false"
                    elif not isinstance(value, str):
                        value = json.dumps(value) if rng.random() < 0.5 else str(value)
                    pairs.append((field.name, value))
        if mode == "query" or rng.random() < 0.05:
            for _ in range(rng.randrange(1, 4)):
                pairs.append((pick(rng, ["zz", "", "a[]", "%", "__proto__", "x" * 2000,
                                         "follow", "tail"]), pick(rng, NAMES)))
        out = []
        for key, value in pairs:
            if key == "wait":
                continue
            if isinstance(value, Raw):
                value = value.data.decode()
            out.append(encode_param(rng, key) + b"=" + encode_param(rng, str(value)))
        if mode == "query" and rng.random() < 0.3:
            out.append(pick(rng, [b"&&&", b"=", b"a=b=c", b"%", b"%zz=%zz", b"\xff=\xfe",
                                  b"a", b"follow", b"tail=" + b"9" * 5000]))
        return b"&".join(out)

    def path(self, rng, route, mode):
        """The route's path with its parameters filled: plausible values, odd names, or
        traversal payloads."""
        method, template, _ = route

        def value(param):
            if mode == "traversal":
                text = pick(rng, TRAVERSALS)
                return text.encode() if rng.random() < 0.6 else encode_param(rng, text)
            if mode == "odd-path":
                return encode_param(rng, pick(rng, NAMES))
            if param == "view":
                return pick(rng, ["models", "dram", "gpu", "nodes"]).encode()
            if param == "file":
                return pick(rng, ["index.html", "app.js", "style.css", "icon.svg", "nope.js",
                                  ".", "a/b.js"]).encode()
            if param == "id":
                return percent(pick(rng, IDS[-8:] + ["i-1", KNOWN_MODEL])).encode()
            return percent(pick(rng, [KNOWN_MODEL, "tiny", "model-1", "zz"])).encode()

        out = template.encode()
        for param in ("name", "id", "view", "file"):
            token = b"{" + param.encode() + b"}"
            if token in out:
                out = out.replace(token, value(param))
        return out

    def body_bytes(self, rng, route, mode):
        shape = route[2]
        if shape is None:
            return b""
        if mode == "bad-json":
            return pick(rng, [
                b"{", b"}", b"{\"model_name\": }", b"{'model_name': 'x'}", b"{\"a\":1,}",
                b"[1,2", b"nul", b"tru", b"{\"model_name\": \"x\"", b"{\"\\u12\": 1}",
                b"\"unterminated", b"{\"a\": 1} trailing", b"{\"a\": 1}{\"b\": 2}",
                b"/* c */ {}", b"{\"a\": 01}", b"{\"a\": .5}", b"{\"a\": +1}",
                b"{\"a\": \"\\x41\"}", b"{\"a\":\"\t\"}", b"\xef\xbb\xbf{}", b"\x00",
                b"{\"model\": \"a\" \"b\"}", b" ", b"null", b"[]", b"123", b"\"str\"",
                b"{\"model_name\": \"x\", \"model_name\": \"y\"}", b"{" * 5000])
        if mode == "non-utf8":
            junk = pick(rng, [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                              b"\xc0\xaf", b"\x80", b"\xfe\xff\x00"])
            key = pick(rng, ["model_name", "model", "source_url", "node", "instance_id",
                             "job_id", "zz"])
            if rng.random() < 0.5:
                return b"{\"" + key.encode() + b"\": \"a" + junk + b"b\"}"
            return b"{\"" + junk + b"\": 1}"
        if mode == "deep-json":
            depth = pick(rng, [1000, 10000, 100000])
            opener, closer = pick(rng, [(b"[", b"]"), (b"{\"a\":", b"}")])
            inner = opener * depth + b"1" + closer * depth
            if shape == "@openai":
                return b"{\"model\": \"a\", \"messages\": " + inner + b"}"
            return b"{\"model_name\": " + inner + b"}" if rng.random() < 0.5 else inner
        body = self.message_body(rng, shape, mode)
        return encode_json(body, ascii_only=rng.random() < 0.5)

    # -- one request --

    def make(self, rng, index, kind):
        if index in self.huge_at:
            return self.huge(rng)
        route = self.route_for(rng, kind)
        method, template, shape = route
        label = f"{method} {template}"
        if kind in ("garbage", "bad-http", "chunked", "big-head-under", "big-head-over",
                    "many-headers", "wrong-method", "auth-header"):
            return getattr(self, "make_" + kind.replace("-", "_"))(rng, route, label)
        mode = kind
        path = self.path(rng, route, mode)
        query = self.query(rng, route, mode)
        body = self.body_bytes(rng, route, mode) if (
            method != "GET" or rng.random() < 0.1 or kind in ("bad-json", "non-utf8")) else b""
        if kind == "source-url" and shape in ("DownloadRequest", "RegisterModelRequest"):
            fields = {"model_name": pick(rng, NAMES[:8] + ["hx-src"]),
                      "source_url": pick(rng, self.sources)}
            if rng.random() < 0.3:
                fields["revision"] = pick(rng, REVISIONS)
            body = encode_json(fields)
        headers = []
        if body:
            headers.append((b"Content-Type", pick(rng, [
                b"application/json", b"application/json", b"text/plain", b"",
                b"application/json; charset=latin-1", b"multipart/form-data; boundary=x",
                b"application/x-www-form-urlencoded"])))
        target = path + (b"?" + query if query else b"")
        return Req(kind, label, method, target, headers, body)

    def route_for(self, rng, kind):
        if kind in ("odd-path", "traversal"):
            return pick(rng, PARAM_ROUTES)
        if kind in ("bad-json", "non-utf8", "deep-json"):
            return pick(rng, BODY_ROUTES)
        if kind == "source-url":
            return pick(rng, SOURCE_ROUTES)
        if kind in ("fields", "wrong-types", "unknown-fields", "absurd-sizes", "query"):
            return pick(rng, MESSAGE_ROUTES)
        return pick(rng, ROUTES)

    def plain(self, rng, route, label, kind, headers=(), body=None, **kw):
        path = self.path(rng, route, "fields")
        query = self.query(rng, route, "fields")
        if body is None:
            body = self.body_bytes(rng, route, "fields") if route[0] != "GET" else b""
        target = path + (b"?" + query if query else b"")
        return Req(kind, label, kw.pop("method", route[0]), target, headers, body, **kw)

    def make_wrong_method(self, rng, route, label):
        method = pick(rng, ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE",
                            "CONNECT", "get", "FOO", "PROPFIND", "M" * 300, "G\x01T"])
        body = self.body_bytes(rng, route, "fields") if rng.random() < 0.5 else b""
        return self.plain(rng, route, label, "wrong-method", body=body, method=method)

    def make_auth_header(self, rng, route, label):
        value = pick(rng, [b"", b"Bearer", b"Bearer ", b"Bearer x", b"Basic dXNlcjpwYXNz",
                           b"Bearer " + b"A" * 4000, b"Bearer \xff\xfe", b"bearer  x ",
                           b"Token x", b"Bearer x, Bearer y", b"\x00"])
        return self.plain(rng, route, label, "auth-header", headers=[(b"Authorization", value)])

    def make_big_head_under(self, rng, route, label):
        """Request line and headers just under 64 KiB: a long header, path or query."""
        req = self.plain(rng, route, label, "big-head-under")
        room = MAX_HEADER_BYTES - len(req.bytes(1)) + len(req.body) - 600
        where = rng.randrange(3)
        if where == 0:
            req.headers.append((b"X-Pad", b"p" * room))
        elif where == 1 and "{" in route[1]:
            method, template, _ = route
            path = template.encode()
            for param in (b"{name}", b"{id}", b"{view}", b"{file}"):
                path = path.replace(param, b"q" * room, 1) if param in path else path
            req.target = path
        else:
            req.target += (b"&" if b"?" in req.target else b"?") + b"zz=" + b"q" * room
        return req

    def make_big_head_over(self, rng, route, label):
        req = self.plain(rng, route, label, "big-head-over")
        extra = MAX_HEADER_BYTES + rng.randrange(10, 200000)
        if rng.random() < 0.5:
            req.headers.append((b"X-Pad", b"p" * extra))
        else:
            req.target += (b"&" if b"?" in req.target else b"?") + b"zz=" + b"q" * extra
        return req

    def make_many_headers(self, rng, route, label):
        n = rng.randrange(100, 3000)
        headers = [(b"X-H%d" % i, b"v") for i in range(n)]
        if rng.random() < 0.5:
            headers += [(b"Content-Type", b"application/json")] * 50
        return self.plain(rng, route, label, "many-headers", headers=headers)

    def make_chunked(self, rng, route, label):
        body = self.body_bytes(rng, route, "fields") or b"{}"
        variant = rng.randrange(7)
        if variant <= 2:  # well-formed, in pieces
            chunks, pos = [], 0
            while pos < len(body):
                n = rng.randrange(1, 64)
                chunks.append(b"%x\r\n" % len(body[pos:pos + n]) + body[pos:pos + n] + b"\r\n")
                pos += n
            wire = b"".join(chunks) + b"0\r\n\r\n"
        elif variant == 3:
            wire = b"zz\r\n" + body + b"\r\n0\r\n\r\n"  # not a size
        elif variant == 4:
            wire = b"ffffffffffffffff\r\n" + body + b"\r\n0\r\n\r\n"  # absurd size
        elif variant == 5:
            wire = b"%x;ext=\"a\"\r\n" % len(body) + body + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
        else:
            wire = b"1\r\n" + body[:1] + b"XX\r\n0\r\n\r\n"  # chunk longer than its size
        headers = [(b"Content-Type", b"application/json"), (b"Transfer-Encoding", b"chunked")]
        if rng.random() < 0.2:
            headers.append((b"Content-Length", b"%d" % len(wire)))  # both: a smuggling try
        req = self.plain(rng, route, label, "chunked", headers=headers, body=wire,
                         content_length=False)
        return req

    def make_bad_http(self, rng, route, label):
        path = route[1].replace("{name}", KNOWN_MODEL).replace("{id}", "x").replace(
            "{view}", "models").replace("{file}", "app.js").encode()
        raw = pick(rng, [
            b"GET " + path + b" HTTP/9.9\r\nHost: x\r\n\r\n",
            b"GET " + path + b"\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\n\r\n",
            b"GET  " + path + b"  HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\nHost x\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\n: empty-name\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\nX: a\x00b\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\nX: \xff\xfe\r\nConnection: close\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\r\n folded: header\r\n\r\n",
            b"GET " + path + b" HTTP/1.1\nHost: x\n\n",
            b"POST " + path + b" HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST " + path + b" HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
            b"POST " + path + b" HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST " + path + b" HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
            b"POST " + path + b" HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            b"POST " + path + b" HTTP/1.1\r\nTransfer-Encoding: bogus\r\n\r\n{}",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET http://evil.example/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET /%00 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET /\x01\x02 HTTP/1.1\r\nHost: x\r\n\r\n",
            b"\r\n\r\nGET " + path + b" HTTP/1.1\r\nConnection: close\r\n\r\n",
            b"GET " + path + b" HTTP/1.0\r\n\r\n",
            b"POST " + path + b" HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n{}",
            b"GET " + path + b" HTTP/1.1\r\nConnection: close\r\n\r\nGET /health HTTP/1.1\r\n"
            b"\r\n",
        ])
        return Req("bad-http", label, "", b"", raw=raw)

    def make_garbage(self, rng, route, label):
        n = pick(rng, [1, 16, 300, 4096, 70000])
        raw = bytes(rng.randrange(256) for _ in range(min(n, 4096)))
        raw = (raw * (n // len(raw) + 1))[:n]
        if rng.random() < 0.5:
            raw += b"\r\n\r\n"
        return Req("garbage", label, "", b"", raw=raw, allow_drop=True, half_close=True)

    def huge(self, rng):
        """A body just over (or just under) the 32 MiB limit."""
        route = pick(rng, [r for r in BODY_ROUTES if r[0] == "POST"])
        label = f"{route[0]} {route[1]}"
        over = rng.random() < 0.6
        if over:
            body = b"{\"model_name\": \"" + b"h" * (MAX_BODY_BYTES + 4096) + b"\"}"
        else:
            body = b"{\"model_name\": \"" + b"h" * (MAX_BODY_BYTES - (1 << 20)) + b"\"}"
        req = self.plain(rng, route, label, "huge-body-over" if over else "huge-body-under",
                         headers=[(b"Content-Type", b"application/json")], body=body)
        return req


REST_KINDS = [
    ("fields", 14), ("wrong-types", 12), ("unknown-fields", 6), ("bad-json", 8), ("non-utf8", 6),
    ("deep-json", 1), ("odd-path", 10), ("traversal", 8), ("source-url", 6), ("absurd-sizes", 6),
    ("wrong-method", 5), ("query", 6), ("auth-header", 3), ("big-head-under", 1),
    ("big-head-over", 1), ("many-headers", 1), ("chunked", 3), ("bad-http", 3), ("garbage", 2),
]
# With a token: the kinds whose request reaches the token check (a request refused while it is
# read, 400/413/431, never does).
AUTH_KINDS = [("fields", 10), ("wrong-types", 6), ("odd-path", 6), ("traversal", 6),
              ("source-url", 3), ("bad-json", 4), ("non-utf8", 2), ("query", 4),
              ("wrong-method", 3), ("many-headers", 1)]
BAD_AUTH = [None, b"", b"Bearer", b"Bearer ", b"Bearer wrong", b"Basic dXNlcjpwYXNz",
            b"Bearer " + TOKEN[:-1].encode(), b"Bearer " + TOKEN.encode() + b"x",
            b"Token " + TOKEN.encode(), TOKEN.encode(), b"Bearer " + b"A" * 8000,
            b"Bearer \xff\xfe" + TOKEN.encode(), b"Bearer" + TOKEN.encode(),
            b"Bearer " + TOKEN.upper().encode()]


def weighted(rng, table):
    total = sum(w for _, w in table)
    x = rng.random() * total
    for kind, w in table:
        x -= w
        if x < 0:
            return kind
    return table[-1][0]


# ---- gRPC ---------------------------------------------------------------------------------------

def _varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number, wire_type, payload):
    key = _varint((number << 3) | wire_type)
    if wire_type == 2:
        return key + _varint(len(payload)) + payload
    return key + payload


class GrpcCall:
    def __init__(self, kind, method, request_bytes, text, stream=False, expect_unauth=False,
                 metadata=None):
        self.kind = kind
        self.method = method
        self.request_bytes = request_bytes
        self.text = text
        self.stream = stream
        self.expect_unauth = expect_unauth
        self.metadata = metadata
        self.index = -1

    def signature(self):
        return (self.kind, self.method, len(self.request_bytes) > 16384)

    def describe(self):
        auth = f" metadata={self.metadata!r}" if self.metadata else ""
        return (f"#{self.index} [{self.kind}] /gswarm.v1.GSwarm/{self.method}{auth} "
                f"request ({len(self.request_bytes)} bytes): {self.text[:200]!r} "
                f"wire: {self.request_bytes[:120].hex()}")


# Requests whose bytes are not a valid message for the method.
UNPARSEABLE_KINDS = ("invalid-utf8", "truncated")

GRPC_KINDS = [("fields", 40), ("max-ints", 12), ("empty", 4), ("huge-strings", 5),
              ("unknown-fields", 12), ("invalid-utf8", 8), ("truncated", 2)]


class GrpcFuzzer:
    def __init__(self, proto):
        self.proto = proto

    def random_message(self, rng, descriptor, kind, depth=0):
        p = self.proto
        msg = p.message_class(descriptor)()
        for field in descriptor.fields:
            if field.name == "wait" or rng.random() < (0.3 if kind != "max-ints" else 0.1):
                continue
            if field.type == p.FD.TYPE_MESSAGE:
                if depth < 3:
                    sub = self.random_message(rng, field.message_type, kind, depth + 1)
                    if p.repeated(field):
                        getattr(msg, field.name).add().CopyFrom(sub)
                    else:
                        getattr(msg, field.name).CopyFrom(sub)
                continue
            value = p.good_value(rng, field, absurd=kind == "max-ints")
            if kind == "huge-strings" and field.type == p.FD.TYPE_STRING:
                value = pick(rng, ["s" * 10240, "s" * (1 << 20), "\U0001F600" * 30000])
            if p.repeated(field):
                getattr(msg, field.name).extend([value] * rng.randrange(1, 5))
            else:
                setattr(msg, field.name, value)
        return msg

    def make(self, rng, methods, kind, stream=False):
        p = self.proto
        method = pick(rng, methods)
        descriptor = method.input_type
        if kind == "empty":
            msg = p.message_class(descriptor)()
        else:
            msg = self.random_message(rng, descriptor, kind)
        if method.name == "WatchEvents" and rng.random() < 0.3:
            msg.no_follow = True
        data = msg.SerializeToString()
        text = str(msg).replace("\n", " ")
        strings = [f for f in descriptor.fields if f.type == p.FD.TYPE_STRING]
        if kind == "unknown-fields":
            for _ in range(rng.randrange(1, 4)):
                number = rng.randrange(20, 1 << 29)
                wire = rng.randrange(3)
                if wire == 0:
                    data += _field(number, 0, _varint(pick(rng, [0, 1, 2 ** 64 - 1])))
                elif wire == 1:
                    data += _field(number, 1, struct.pack("<d", 1e308))
                else:  # a nested message, or bytes
                    nested = _field(1, 2, pick(rng, NAMES).encode("utf-8", "surrogatepass"))
                    nested += _field(2, 0, _varint(2 ** 63))
                    data += _field(number, 2, nested if rng.random() < 0.7 else b"\xff" * 50)
            text += " +unknown fields"
        elif kind == "invalid-utf8":
            junk = pick(rng, [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"a\x80b",
                              b"\xf4\x90\x80\x80", b"\xc0\xaf"])
            if strings:
                field = pick(rng, strings)
                data += _field(field.number, 2, b"x" + junk)
                text += f" {field.name}=<{junk!r}, not UTF-8>"
            else:  # no string field: an unknown one holding the bytes
                data += _field(99, 2, junk)
                text += f" field 99=<{junk!r}>"
        elif kind == "truncated":
            data = (data or _field(1, 2, b"abc"))[:-1] + b"\x0a\xff"
            text += " (truncated)"
        return GrpcCall(kind, method.name, data, text, stream=stream)


# ---- the test -----------------------------------------------------------------------------------

class TooManyCrashes(Exception):
    pass


class Stats:
    def __init__(self):
        self.rest = 0
        self.grpc = 0
        self.rest_classes = collections.Counter()
        self.rest_statuses = collections.Counter()
        self.grpc_codes = collections.Counter()
        self.skipped = 0
        self.garbage_dropped = 0
        self.huge = 0
        self.engine_failed = 0
        self.routes = collections.Counter()  # "METHOD /pattern" of each REST call
        self.methods = collections.Counter()  # each gRPC call's method


class HostileTestCase(HubTestCase):
    """A host and node-a, the fake hub as the agent's Hugging Face; KNOWN_MODEL downloaded."""

    hub_big_file_mb = 1  # the hub's big file is never downloaded here

    def setUp(self):
        super().setUp()
        self.seed = int(os.environ.get("GSWARM_HOSTILE_SEED") or DEFAULT_SEED)
        self.calls = int(os.environ.get("GSWARM_HOSTILE_CALLS") or DEFAULT_CALLS)
        only = os.environ.get("GSWARM_HOSTILE_ONLY", "").strip()
        self.only = {int(x) for x in only.split(",") if x.strip()} if only else None
        self.proto = Proto()
        self.restarts = 0
        self.agent_restarts = 0

    def log(self, text):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    # -- cluster --

    def start_cluster(self, token=""):
        home = self.new_home("host")
        self.token = token
        home.write_config({
            # A request for a model that cannot load is answered within a few seconds, not the
            # default 60 (each request here has 10 s).
            "host": self.host_section(home, token=token, router_queue_timeout_s=4),
            "client": self.client_section(home, "node-local", token=token),
        })
        self.host_home = home
        self.host = self.start_host()
        self.make_agent_home(NODE, token=token)
        self.agent = self.start_agent(NODE, env_extra=self.hub_env())
        self.wait_node(NODE, "online", procs=[self.host, self.agent])
        self.download_ok(KNOWN_MODEL, TINY_LLAMA, timeout=60)
        self.plant_canaries()

    def plant_canaries(self):
        """Files a traversal out of the agent's or host's directories would hit first."""
        self.canaries = {}
        for directory in (self.root, self.host_home.path, self.agent_homes[NODE].path,
                          os.path.join(self.root, f"{MARKER}-canary-dir")):
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, f"{MARKER}-canary.txt")
            with open(path, "w") as f:
                f.write(f"canary {self.seed}\n")
            self.canaries[path] = f"canary {self.seed}\n"

    def escape_dirs(self):
        """Where a path traversal or an absolute path from the payloads would land."""
        dirs = {os.path.dirname(self.root), "/tmp", "/dev/shm", "/", REPO_ROOT,
                os.path.dirname(os.path.abspath(__file__)), os.path.expanduser("~"),
                os.path.join(os.path.dirname(self.root), "tmp")}
        return sorted(d for d in dirs if os.path.isdir(d))

    def marker_entries(self):
        found = set()
        for d in self.escape_dirs():
            try:
                for name in os.listdir(d):
                    if MARKER in name and not name.startswith("gswarm-it-"):
                        found.add(os.path.join(d, name))
            except OSError:
                pass
        return found

    # -- running calls --

    def check_processes(self, failures, what, route, signature, skip, suspicious):
        """After a call: did the host or the agent die? Report it, restart it, and skip calls
        of that shape from then on. `suspicious`: the call got no answer (a crash may still be
        on its way: wait a little for the process to go)."""
        if suspicious:
            deadline = time.monotonic() + 3.0
            while self.host.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.host.poll() is not None:
            code = self.host.returncode
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            if failures and failures[-1][2] == what:
                failures.pop()  # its "no answer" is this crash
            failures.append(("host crashed", route, what,
                             f"the host died ({how}); its log ends:\n{self.host.tail(8)}"))
            skip.add(signature)
            self.restarts += 1
            if self.restarts > MAX_HOST_RESTARTS:
                raise TooManyCrashes(f"the host crashed {self.restarts} times")
            self.log(f"hostile: the host died ({how}) after {what[:300]}; restarting it")
            self.host = self.start_host(home=self.host_home)
            self.open_channel()  # the old one's connection died with the host
            # Until the agent is back (it backs off between attempts), calls that need a node
            # would be refused for a reason of the test's making (503: no node is online).
            try:
                self.wait_node(NODE, "online", timeout=RECONNECT_TIMEOUT_S,
                               procs=[self.host, self.agent])
            except AssertionError as e:
                failures.append(("agent not back after a host restart", route, what,
                                 str(e)))
        if self.agent.poll() is not None:
            code = self.agent.returncode
            failures.append(("agent crashed", route, what,
                             f"the agent exited with {code}; its log ends:\n"
                             f"{self.agent.tail(8)}"))
            self.agent_restarts += 1
            if self.agent_restarts > MAX_HOST_RESTARTS:
                raise TooManyCrashes(f"the agent crashed {self.agent_restarts} times")
            self.agent = self.start_agent(NODE, env_extra=self.hub_env())

    def run_rest(self, req, stats, failures):
        port = self.port
        head_only = req.method == "HEAD"
        answer = exchange(port, req.bytes(port), half_close=req.half_close, head_only=head_only)
        stats.rest += 1
        stats.routes[req.route] += 1
        if os.environ.get("GSWARM_HOSTILE_TRACE"):
            self.log(f"trace: #{req.index} {req.kind} {req.route} {len(req.target)}+"
                     f"{len(req.body)} bytes -> {answer!r:.120}")
        why = self.judge_rest(req, answer)
        if why and answer.status == 503 and req.decoded_path().startswith(b"/v1/"):
            err = (self.json_of(answer) or {}).get("error")
            if isinstance(err, dict) and ENGINE_FAILED.search(str(err.get("message", ""))):
                why = None
                stats.engine_failed += 1
        if answer.outcome == "answered":
            stats.rest_classes[f"{answer.status // 100}xx"] += 1
            stats.rest_statuses[answer.status] += 1
        elif answer.outcome == "dropped" and req.allow_drop:
            stats.garbage_dropped += 1
        else:
            stats.rest_classes[answer.outcome] += 1
        if why:
            failures.append((f"REST {why}", req.route, req.describe(port), repr(answer)))
        return answer.outcome in ("dropped", "refused", "timeout")

    def judge_rest(self, req, answer):
        """Why the answer is wrong (a short class of failure), or None."""
        if answer.outcome == "timeout":
            return "no answer within %d s (hang)" % REQUEST_TIMEOUT_S
        if answer.outcome == "refused":
            return "connection refused"
        if answer.outcome == "dropped":
            return None if req.allow_drop else "connection closed without an answer"
        status = answer.status
        if status >= 500:
            return f"HTTP {status}"
        if not (200 <= status < 300 or 400 <= status < 500):
            return f"unexpected HTTP {status} {answer.note}"
        if answer.note:
            return f"malformed answer: {answer.note}"
        path = req.decoded_path()
        public = path in (b"/health", b"/") or path.startswith(b"/dashboard/")
        body = self.json_of(answer)
        err = body.get("error") if isinstance(body, dict) else None
        # Refused while it was read (the token check never saw it; a request line not read
        # whole has no path yet).
        unparsed = status == 431 or (isinstance(err, dict) and str(
            err.get("message", "")).startswith("malformed HTTP request"))
        if req.expect_401 and not public and not unparsed and status != 401:
            return f"HTTP {status} without a valid token (401 expected)"
        if 400 <= status < 500 and req.method != "HEAD":
            if not isinstance(err, dict) or not isinstance(err.get("message"), str):
                return f"HTTP {status} without a JSON error body"
            if path.startswith(b"/v1/") and not unparsed and "type" not in err:
                return f"HTTP {status} under /v1/ without the OpenAI error shape"
            if "status" in err and err.get("code") != status:  # gswarm's shape
                return f"HTTP {status} with error.code {err['code']!r}"
        if 200 <= status < 300 and req.method != "HEAD" and \
                answer.headers.get("content-type", "").startswith("application/json"):
            if self.json_of(answer) is None:
                return f"HTTP {status} whose JSON body does not parse"
        return None

    @staticmethod
    def json_of(answer):
        try:
            return json.loads(answer.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            return None

    def run_grpc(self, channel, call, stats, failures):
        grpc = self.proto.grpc
        path = f"/gswarm.v1.GSwarm/{call.method}"
        stats.grpc += 1
        stats.methods[call.method] += 1
        big_metadata = len(str(call.metadata or "")) >= 8000
        if big_metadata:
            # Headers over the limit make gRPC close the connection: on one of its own, so that
            # the next call does not find its channel's connection closing.
            channel = grpc.insecure_channel(self.grpc_target, options=[
                ("grpc.enable_http_proxy", 0), ("grpc.use_local_subchannel_pool", 1)])
        code = "OK"
        details = ""
        if call.stream:
            rpc = channel.unary_stream(path, request_serializer=lambda m: m,
                                       response_deserializer=lambda b: b)
            try:
                for _ in rpc(call.request_bytes, timeout=STREAM_DEADLINE_S,
                             metadata=call.metadata):
                    pass
            except grpc.RpcError as e:
                code, details = e.code().name, e.details() or ""
        else:
            rpc = channel.unary_unary(path, request_serializer=lambda m: m,
                                      response_deserializer=lambda b: b)
            try:
                rpc(call.request_bytes, timeout=REQUEST_TIMEOUT_S, metadata=call.metadata)
            except grpc.RpcError as e:
                code, details = e.code().name, e.details() or ""
        if big_metadata:
            channel.close()
        stats.grpc_codes[code] += 1
        if os.environ.get("GSWARM_HOSTILE_TRACE"):
            self.log(f"trace: #{call.index} {call.kind} {call.method} {len(call.request_bytes)} "
                     f"bytes, metadata {len(str(call.metadata or ''))} -> {code}")
        allowed = GRPC_ALLOWED | ({"DEADLINE_EXCEEDED"} if call.stream else set())
        if call.kind in UNPARSEABLE_KINDS and code == "UNIMPLEMENTED" and not details:
            # gRPC C++ itself answers a request it cannot parse (proto3 strings must be UTF-8)
            # with UNIMPLEMENTED before any handler runs (grpc/grpc#30454): not GSwarm's choice.
            # A parseable request that gets UNIMPLEMENTED still fails.
            allowed = allowed | {"UNIMPLEMENTED"}
        why = None
        # gRPC's HTTP/2 transport refuses headers over its limit before any handler (and so
        # before the token check); its HPACK accounting can count a connection's earlier headers
        # too, so a small call on a channel that carried large ones may meet it.
        transport_refusal = (code == "RESOURCE_EXHAUSTED"
                             and "metadata size exceeds limit" in details)
        if call.expect_unauth and code != "UNAUTHENTICATED" and not transport_refusal:
            why = f"{code} without a valid token (UNAUTHENTICATED expected)"
        elif code not in allowed:
            why = code + (" (no answer within the deadline: a hang)"
                          if code == "DEADLINE_EXCEEDED" else "")
        if why:
            failures.append((f"gRPC {why}", call.method, call.describe(),
                             f"{code}: {details[:300]!r}"))
        return code in ("UNAVAILABLE", "UNKNOWN", "INTERNAL", "DEADLINE_EXCEEDED")

    def run_phase(self, name, rest_kinds, grpc_share, calls, token=None, bad_auth_share=0.0):
        """`calls` hostile calls from the seed; returns (stats, failures)."""
        rng = random.Random(f"{self.seed}:{name}")
        rest = RestFuzzer(self.proto, self.hub.url,
                          huge_at={int(calls * (k + 1) / (HUGE_BODIES + 1))
                                   for k in range(HUGE_BODIES if token is None else 1)})
        grpcf = GrpcFuzzer(self.proto)
        stats = Stats()
        failures = []
        skip = set()
        streams_left = MAX_STREAM_CALLS if token is None else MAX_STREAM_CALLS // 4
        start = time.monotonic()
        self.log(f"hostile: seed {self.seed}, phase {name}: {calls} calls "
                 f"(GSWARM_HOSTILE_SEED={self.seed} GSWARM_HOSTILE_CALLS={self.calls})")
        self.open_channel()
        try:
            for i in range(calls):
                bad_auth = token is not None and rng.random() < bad_auth_share and \
                    i not in rest.huge_at  # (a huge body is refused before the token check)
                # (the rng draws the same numbers whichever way a call goes)
                if rng.random() < grpc_share and i not in rest.huge_at:
                    stream = streams_left > 0 and rng.random() < 0.02
                    if stream:
                        streams_left -= 1
                        methods = self.proto.streams
                    else:
                        methods = self.proto.unary
                    kind = weighted(rng, GRPC_KINDS)
                    if bad_auth and kind in ("invalid-utf8", "truncated"):
                        kind = "fields"  # the token check needs a request that parses
                    call = grpcf.make(rng, methods, kind, stream=stream)
                    call.index = i
                    if token is not None:
                        if bad_auth:
                            value = pick(rng, BAD_AUTH)
                            call.metadata = None if value is None else [
                                ("authorization", value.decode("latin-1").replace("\x00", ""))]
                            if call.metadata and not (call.metadata[0][1].isascii()
                                                  and call.metadata[0][1].isprintable()):
                                call.metadata = [("authorization", "Bearer wrong")]
                            # (metadata over gRPC's 8 KiB limit is refused before the token
                            # check, with RESOURCE_EXHAUSTED)
                            call.expect_unauth = len(str(call.metadata)) < 8000
                        else:
                            call.metadata = [("authorization", f"Bearer {token}")]
                    sig = call.signature()
                    if (self.only is not None and i not in self.only) or sig in skip:
                        stats.skipped += sig in skip
                        continue
                    suspicious = self.run_grpc(self.channel, call, stats, failures)
                    what, route = call.describe(), call.method
                else:
                    kind = weighted(rng, AUTH_KINDS if bad_auth else rest_kinds)
                    req = rest.make(rng, i, kind)
                    req.index = i
                    if token is not None and req.raw is None:
                        req.headers = [(n, v) for n, v in req.headers
                                       if n.lower() != b"authorization"]
                        if bad_auth:
                            value = pick(rng, BAD_AUTH)
                            if value is not None:
                                req.headers.append((b"Authorization", value))
                            req.expect_401 = True
                        else:
                            req.headers.append((b"Authorization", b"Bearer " + token.encode()))
                    sig = req.signature()
                    if (self.only is not None and i not in self.only) or sig in skip:
                        stats.skipped += sig in skip
                        continue
                    stats.huge += req.kind.startswith("huge")
                    suspicious = self.run_rest(req, stats, failures)
                    what, route = req.describe(self.port), req.route
                try:
                    self.check_processes(failures, what, route, sig, skip, suspicious)
                except TooManyCrashes as e:
                    failures.append((f"phase stopped: {e}", "-", f"after call #{i}", ""))
                    self.log(f"hostile: {e}: stopping after call #{i}")
                    break
                if (i + 1) % 2000 == 0:
                    self.log(f"hostile: {i + 1} calls, {time.monotonic() - start:.0f} s, "
                             f"{len(failures)} failures so far")
        finally:
            self.channel.close()
        stats.seconds = time.monotonic() - start
        return stats, failures

    def open_channel(self):
        if getattr(self, "channel", None) is not None:
            self.channel.close()
        self.channel = grpc_channel(self.grpc_target)
        self.proto.grpc.channel_ready_future(self.channel).result(timeout=READY_TIMEOUT_S)

    def summary(self, name, stats, failures):
        classes = stats.rest_classes
        codes = ", ".join(f"{c} {n}" for c, n in sorted(stats.grpc_codes.items()))
        statuses = ", ".join(f"{s} {n}" for s, n in sorted(stats.rest_statuses.items()))
        distinct = len({f[0] for f in failures})
        return (f"hostile: seed {self.seed}, {stats.rest + stats.grpc} calls "
                f"(REST {stats.rest}, gRPC {stats.grpc}) [{name}]: "
                f"2xx {classes['2xx']}, 4xx {classes['4xx']}, 5xx {classes['5xx']} "
                f"({stats.engine_failed} of them: no engine could start, allowed), "
                f"dropped {classes['dropped']} (+{stats.garbage_dropped} garbage), "
                f"timeouts {classes['timeout']}, refused {classes['refused']}; "
                f"huge bodies {stats.huge}; gRPC: {codes}; skipped after a crash "
                f"{stats.skipped}; host restarts {self.restarts}; failures {len(failures)} "
                f"({distinct} distinct); {stats.seconds:.0f} s\n"
                f"hostile: HTTP statuses: {statuses}")

    def finish(self, name, stats, failures, markers_before):
        """The checks after a phase: processes, health, the node, the files; then the report."""
        self.log(self.summary(name, stats, failures))
        problems = []
        if self.host.poll() is not None:
            problems.append(f"the host exited ({self.host.returncode})")
        if self.agent.poll() is not None:
            problems.append(f"the agent exited ({self.agent.returncode})")
        health = self.rest("GET", "/health", timeout=REQUEST_TIMEOUT_S)
        if health.status != 200:
            problems.append(f"GET /health answered {health!r}")
        try:
            self.wait_node(NODE, "online", procs=[self.host, self.agent],
                           timeout=RECONNECT_TIMEOUT_S if self.restarts else ONLINE_TIMEOUT_S)
        except AssertionError as e:
            problems.append(str(e))
        if self.only is None and stats.rest + stats.grpc >= 2000:
            # Every route and every method got its share (a table that lost one would not).
            missing = sorted({f"{m} {p}" for m, p, _ in ROUTES} - set(stats.routes)) + sorted(
                {m.name for m in self.proto.service.methods} - set(stats.methods))
            if missing:
                problems.append(f"never called: {missing}")
        new_markers = self.marker_entries() - markers_before
        if new_markers:
            problems.append(f"written outside the test's root: {sorted(new_markers)}")
        for path, text in self.canaries.items():
            try:
                with open(path) as f:
                    if f.read() != text:
                        problems.append(f"canary {path} changed")
            except OSError as e:
                problems.append(f"canary {path} is gone: {e}")
        by_class = collections.OrderedDict()
        for why, route, what, answer in failures:
            by_class.setdefault(why, []).append((route, what, answer))
        if by_class or problems:
            lines = [f"{len(failures)} bad answers in {len(by_class)} classes "
                     f"(seed {self.seed}; replay one call: GSWARM_HOSTILE_SEED={self.seed} "
                     f"GSWARM_HOSTILE_CALLS={self.calls} GSWARM_HOSTILE_ONLY=<#>):"]
            for why, cases in by_class.items():
                routes = sorted({route for route, _, _ in cases})
                lines.append(f"- {why}: {len(cases)} time(s), on {len(routes)} route(s): "
                             f"{', '.join(routes[:12])}{' ...' if len(routes) > 12 else ''}")
                # One example per route (the first six routes), then more of the first.
                examples, seen = [], set()
                for route, what, answer in cases:
                    if route not in seen and len(seen) < 6:
                        seen.add(route)
                        examples.append((what, answer))
                for _, what, answer in cases:
                    if len(examples) >= 3:
                        break
                    if (what, answer) not in examples:
                        examples.append((what, answer))
                for what, answer in examples:
                    lines.append(f"    {what}\n      -> {answer}")
            lines += [f"- {p}" for p in problems]
            self.fail("\n".join(lines))


class HostileClientTest(HostileTestCase):

    def test_route_table_is_covered(self):
        """Every route the host's sources declare is in ROUTES (a new route gets fuzzed too)."""
        declared = source_routes()
        if declared is None:
            self.skipTest("the host's sources are not here")
        covered = {(m, route_shape(p)) for m, p, _ in ROUTES}
        self.assertGreaterEqual(len(declared), 35, declared)
        self.assertEqual(sorted(declared - covered), [],
                         "routes the host declares but test_hostile.ROUTES lacks")

    def test_hostile_calls(self):
        markers_before = self.marker_entries()
        if markers_before:
            self.log(f"hostile: note: {sorted(markers_before)} existed before the run")
        self.start_cluster()
        stats, failures = self.run_phase("no token", REST_KINDS, grpc_share=0.35,
                                         calls=self.calls)
        self.finish("no token", stats, failures, markers_before)

    def test_hostile_calls_with_token(self):
        """Against a host with a token: missing, wrong and malformed ones are 401 and
        UNAUTHENTICATED on every route but the public ones; right ones get the usual calls."""
        markers_before = self.marker_entries()
        self.start_cluster(token=TOKEN)
        stats, failures = self.run_phase("token", REST_KINDS, grpc_share=0.3,
                                         calls=max(200, self.calls // 10), token=TOKEN,
                                         bad_auth_share=0.75)
        self.finish("token", stats, failures, markers_before)


if __name__ == "__main__":
    unittest.main()
