#!/usr/bin/python3
"""A fake OpenAI-compatible inference engine, started as a real process the way GSwarm's agent
starts vLLM, llama-server or SGLang. It is meant for tests and benchmarks.

Standard library only.

On start it reads the model it is given: a directory with ``config.json`` and ``*.safetensors``
or ``*.gguf`` weights, or a single weights file. It parses every safetensors header and GGUF
header, and checks tensor offsets against the file sizes. A missing, empty or corrupt model makes
it exit 1 before it listens, with an error naming the file.

Protocol served:

* ``GET /health``: ``200 {"status":"ok"}`` once ready, ``503 {"status":"loading"}`` before.
  ``GET /v1/health/ready`` (NVIDIA NIM's readiness path) answers the same.
* ``GET /v1/models`` and ``GET /v1/models/{id}``.
* ``POST /v1/chat/completions`` and ``POST /v1/completions`` use OpenAI shapes. The text echoes the
  prompt's words, ``max_tokens`` of them (default 16). With ``"stream": true`` the reply is
  Server-Sent Events: one ``data: {chunk}`` per token, paced at ``--tokens-per-second``, then
  ``data: [DONE]``. HTTP/1.1 gets chunked transfer; HTTP/1.0 gets connection close.
* ``POST /v1/embeddings``: a fixed 16-float vector per input.
* Errors use OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``. An unknown model
  gets ``404`` with code ``model_not_found``, and every ``/v1/*`` call before ready gets ``503``.
* Test controls: ``GET /_fake/stats``, ``POST /_fake/stats/reset``, ``POST /_fake/health``
  (``{"ready": true|false|null}``), ``POST /_fake/hold`` (``{"hold": true|false}``: streams wait
  after their first event until released) and ``POST /_fake/crash`` (``{"exit_code": N}``,
  program only).
* Sleep, as the real engines do it, with simulated GPU memory (``--simulated-gpu-mib N``):
  vLLM's ``POST /sleep?level=1|2``, ``POST /wake_up[?tags=weights&tags=kv_cache]``,
  ``GET /is_sleeping`` and ``POST /collective_rpc`` (``{"method": "reload_weights"}``), served
  with ``--enable-sleep-mode`` and ``VLLM_SERVER_DEV_MODE=1``; SGLang's
  ``POST /release_memory_occupation``, ``/resume_memory_occupation``, ``/pause_generation`` and
  ``/continue_generation``, served with ``--enable-memory-saver``. ``GET /_fake/memory`` gives
  ``{"gpu_bytes", "sleeping", "sleep_level", "weights_loaded"}``.

Program use (flags loosely follow vLLM's; llama-server's and SGLang's spellings are aliases)::

    /usr/bin/python3 fake_engine.py --model DIR --served-model-name NAME --host 127.0.0.1 \\
        --port PORT [--startup-delay S] [--never-ready] [--crash-after S] [--exit-code N] \\
        [--gpu-memory-utilization F] [--max-num-seqs N] [--tokens-per-second R] \\
        [--enable-sleep-mode] [--enable-memory-saver] [--simulated-gpu-mib N] [--sleep-leak] \\
        [--sleep-delay S] [--wake-delay S] ...

It prints ``listening on http://HOST:PORT`` once it is bound and ``ready`` once healthy. It exits
0 on SIGTERM/SIGINT, also when it is signalled as a whole process group.

Library use::

    path = write_tiny_model(tmp_dir)                       # config.json + model.safetensors
    model = load_model(path)                               # ModelInfo, or raises ModelError
    with FakeEngine(path, "tiny") as eng:                  # in-process, 127.0.0.1:0
        http_json(eng.url, "POST", "/v1/completions", {"prompt": "hi", "max_tokens": 3})
    with EngineProcess(path, "tiny", "--startup-delay", "1") as p:   # a real child process
        p.wait_ready(10); sse(p.url, "/v1/chat/completions", {...}); p.terminate()
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import http.server
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from threaded_server import QuietServer, ThreadedServer, TrackedHandler

__all__ = [
    "FakeEngine", "EngineProcess", "ModelError", "ModelInfo", "load_model", "write_tiny_model",
    "make_safetensors_bytes", "make_gguf_bytes", "http_json", "sse", "main", "DEFAULT_MAX_TOKENS",
    "EMBEDDING_DIM",
]

PROG = "fake_engine"
DEFAULT_MAX_TOKENS = 16
EMBEDDING_DIM = 16
MAX_BODY = 16 << 20
SAFETENSORS_MAX_HEADER = 100 << 20  # the safetensors library's own limit

# Simulated GPU memory (--simulated-gpu-mib N): what each part holds of the awake footprint. The
# CUDA context stays through every sleep; the weights and the KV cache are what sleep frees, and
# the tags of a partial wake (vLLM's ``tags``, SGLang's) bring them back one at a time.
MIB = 1 << 20
CONTEXT_PERCENT = 2
WEIGHTS_PERCENT = 30                  # the KV cache holds the rest
SLEEP_TAGS = ("weights", "kv_cache")
SGLANG_TAGS = SLEEP_TAGS + ("cuda_graph",)  # SGLang's tags; CUDA graphs count as context here

_ST_DTYPE_SIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I16": 2,
                  "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8,
                  "F64": 8}

# GGUF value types and ggml tensor types (block elements, block bytes) for size checks.
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
                11: "<q", 12: "<d"}
_GGML_BLOCK = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
               8: (32, 34), 9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144),
               13: (256, 176), 14: (256, 210), 15: (256, 292), 24: (1, 1), 25: (1, 2), 26: (1, 4),
               27: (1, 8), 28: (1, 8), 30: (1, 2)}


# ---------------------------------------------------------------------------------------------
# Model loading
# ---------------------------------------------------------------------------------------------

class ModelError(Exception):
    """The model is missing or corrupt. The message names the offending file."""


class ModelInfo:
    """What load_model found: the path, config, weight files, tensor count and byte totals."""

    def __init__(self, path: str):
        self.path = path
        self.config: Optional[Dict[str, Any]] = None
        self.format = ""                  # "safetensors" or "gguf"
        self.files: List[Dict[str, Any]] = []
        self.tensors = 0
        self.tensor_bytes = 0
        self.file_bytes = 0
        self.load_seconds = 0.0
        self.bytes_read = 0               # with read_weights=True

    @property
    def max_position_embeddings(self) -> Optional[int]:
        v = (self.config or {}).get("max_position_embeddings")
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None

    def summary(self) -> Dict[str, Any]:
        cfg = self.config or {}
        return {"path": self.path, "format": self.format, "files": self.files,
                "tensors": self.tensors, "tensor_bytes": self.tensor_bytes,
                "file_bytes": self.file_bytes, "bytes_read": self.bytes_read,
                "load_seconds": round(self.load_seconds, 6), "has_config": self.config is not None,
                "architectures": cfg.get("architectures"), "model_type": cfg.get("model_type")}


def _check_safetensors(path: str) -> Dict[str, Any]:
    """Parse and check a safetensors file's header; {"file", "format", "tensors", ...}."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise ModelError("%s: corrupt safetensors file: %d bytes, shorter than the 8-byte "
                                 "header length" % (path, size))
            (n,) = struct.unpack("<Q", raw)
            if n == 0 or n > SAFETENSORS_MAX_HEADER or n > size - 8:
                raise ModelError("%s: corrupt safetensors header: header length %d does not fit "
                                 "a %d-byte file" % (path, n, size))
            hbytes = f.read(n)
    except OSError as e:
        raise ModelError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    try:
        header = json.loads(hbytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ModelError("%s: corrupt safetensors header: not valid JSON (%s)" % (path, e)) from None
    if not isinstance(header, dict):
        raise ModelError("%s: corrupt safetensors header: not a JSON object" % path)
    data_len = size - 8 - n
    names, nbytes = [], 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(t, dict) and isinstance(t.get("dtype"), str)
              and isinstance(t.get("shape"), list)
              and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in t["shape"])
              and isinstance(t.get("data_offsets"), list) and len(t["data_offsets"]) == 2
              and all(isinstance(o, int) and not isinstance(o, bool) for o in t["data_offsets"]))
        if not ok:
            raise ModelError("%s: corrupt safetensors header: bad entry for tensor %r" % (path, name))
        begin, end = t["data_offsets"]
        if not 0 <= begin <= end <= data_len:
            raise ModelError("%s: corrupt safetensors file: tensor %r data [%d, %d) lies outside "
                             "the %d data bytes (truncated?)" % (path, name, begin, end, data_len))
        unit = _ST_DTYPE_SIZE.get(t["dtype"])
        if unit is not None and end - begin != unit * math.prod(t["shape"]):
            raise ModelError("%s: corrupt safetensors header: tensor %r has %d bytes for %s %s"
                             % (path, name, end - begin, t["dtype"], t["shape"]))
        names.append(name)
        nbytes += end - begin
    return {"file": os.path.basename(path), "format": "safetensors", "size": size,
            "tensors": len(names), "tensor_bytes": nbytes, "names": names}


class _Reader:
    """Bounded sequential reads from a file, raising ModelError on a short read."""

    def __init__(self, f, path: str, size: int):
        self.f, self.path, self.size, self.pos = f, path, size, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.size:
            raise ModelError("%s: corrupt GGUF header: field at offset %d runs past the end of the "
                             "%d-byte file" % (self.path, self.pos, self.size))
        b = self.f.read(n)
        if len(b) != n:
            raise ModelError("%s: short read at offset %d" % (self.path, self.pos))
        self.pos += n
        return b

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        b = self.take(self.unpack("<Q"))
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError("%s: corrupt GGUF header: string at offset %d is not UTF-8"
                             % (self.path, self.pos - len(b))) from None


def _gguf_value(r: _Reader, vtype: int, depth: int = 0) -> Any:
    if vtype == _GGUF_STRING:
        return r.string()
    if vtype == _GGUF_ARRAY and depth < 4:
        etype, count = r.unpack("<I"), r.unpack("<Q")
        if count > r.size:
            raise ModelError("%s: corrupt GGUF header: array of %d items" % (r.path, count))
        return [_gguf_value(r, etype, depth + 1) for _ in range(count)]
    fmt = _GGUF_SCALAR.get(vtype)
    if fmt is None:
        raise ModelError("%s: corrupt GGUF header: unknown value type %d at offset %d"
                         % (r.path, vtype, r.pos))
    return r.unpack(fmt)


def _check_gguf(path: str) -> Dict[str, Any]:
    """Parse and check a GGUF (v2/v3) file's header; {"file", "format", "tensors", ...}."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            r = _Reader(f, path, size)
            if size < 24 or r.take(4) != b"GGUF":
                raise ModelError("%s: corrupt GGUF file: bad magic (expected 'GGUF')" % path)
            version = r.unpack("<I")
            if version not in (2, 3):
                raise ModelError("%s: corrupt GGUF header: unsupported version %d" % (path, version))
            n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
            if n_tensors > size or n_kv > size:
                raise ModelError("%s: corrupt GGUF header: %d tensors, %d keys in a %d-byte file"
                                 % (path, n_tensors, n_kv, size))
            meta: Dict[str, Any] = {}
            for _ in range(n_kv):
                key = r.string()
                meta[key] = _gguf_value(r, r.unpack("<I"))
            infos = []
            for _ in range(n_tensors):
                name = r.string()
                nd = r.unpack("<I")
                if nd > 8:
                    raise ModelError("%s: corrupt GGUF header: tensor %r has %d dims" % (path, name, nd))
                dims = [r.unpack("<Q") for _ in range(nd)]
                infos.append((name, dims, r.unpack("<I"), r.unpack("<Q")))
    except OSError as e:
        raise ModelError("%s: cannot read: %s" % (path, e.strerror or e)) from None
    align = meta.get("general.alignment", 32)
    if not isinstance(align, int) or align <= 0:
        raise ModelError("%s: corrupt GGUF header: general.alignment %r" % (path, align))
    data_offset = r.pos + (-r.pos % align)
    nbytes = 0
    for name, dims, gtype, off in infos:
        block = _GGML_BLOCK.get(gtype)
        n = (math.prod(dims) // block[0] * block[1]) if block else 0
        if data_offset + off + n > size:
            raise ModelError("%s: corrupt GGUF file: tensor %r data at %d+%d lies past the end of "
                             "the %d-byte file (truncated?)" % (path, name, data_offset + off, n, size))
        nbytes += n
    return {"file": os.path.basename(path), "format": "gguf", "size": size, "version": version,
            "tensors": len(infos), "tensor_bytes": nbytes,
            "architecture": meta.get("general.architecture")}


def load_model(path: str, *, read_weights: bool = False,
               log: Optional[Callable[[str], None]] = None) -> ModelInfo:
    """Read and check a model directory (or one weights file), like an engine loading it.

    A directory needs at least one ``*.safetensors`` or ``*.gguf`` file at its top level.
    Safetensors weights also need a ``config.json`` holding a JSON object; a GGUF-only directory
    may leave it out, like llama.cpp. When ``model.safetensors.index.json`` is present, every shard
    it names must exist and hold its tensors. ``read_weights`` also reads every weight byte (a real
    engine's load time). Raises ModelError, whose message names the file.
    """
    t0 = time.monotonic()
    log = log or (lambda _m: None)
    info = ModelInfo(os.path.abspath(path))
    if not os.path.exists(path):
        raise ModelError("model path %s does not exist" % path)
    if os.path.isdir(path):
        try:
            entries = sorted(os.listdir(path))
        except OSError as e:
            raise ModelError("cannot list model directory %s: %s" % (path, e.strerror or e)) from None
        if not entries:
            raise ModelError("model directory %s is empty" % path)
        weights = [os.path.join(path, e) for e in entries
                   if e.endswith((".safetensors", ".gguf"))]
        if not weights:
            raise ModelError("no weights (*.safetensors or *.gguf) in model directory %s" % path)
        config = os.path.join(path, "config.json")
    elif path.endswith((".safetensors", ".gguf")):
        weights, config = [path], os.path.join(os.path.dirname(path) or ".", "config.json")
    else:
        raise ModelError("%s is neither a model directory nor a .safetensors/.gguf file" % path)

    for w in weights:
        if not os.path.isfile(w):
            raise ModelError("%s: missing or not a regular file (broken link?)" % w)
    kinds = {"gguf" if w.endswith(".gguf") else "safetensors" for w in weights}
    info.format = "safetensors" if "safetensors" in kinds else "gguf"
    if os.path.lexists(config):
        try:
            with open(config, "rb") as f:
                info.config = json.loads(f.read().decode("utf-8"))
        except OSError as e:
            raise ModelError("%s: cannot read: %s" % (config, e.strerror or e)) from None
        except (UnicodeDecodeError, ValueError) as e:
            raise ModelError("%s: invalid JSON: %s" % (config, e)) from None
        if not isinstance(info.config, dict):
            raise ModelError("%s: invalid config: not a JSON object" % config)
    elif info.format == "safetensors":
        raise ModelError("%s: missing (a safetensors model needs its config.json)" % config)

    by_file: Dict[str, Dict[str, Any]] = {}
    for w in weights:
        log("loading %s" % w)
        d = _check_safetensors(w) if w.endswith(".safetensors") else _check_gguf(w)
        by_file[d["file"]] = d
        info.tensors += d["tensors"]
        info.tensor_bytes += d["tensor_bytes"]
        info.file_bytes += d["size"]
        info.files.append({k: v for k, v in d.items() if k != "names"})
        if read_weights:
            with open(w, "rb") as f:
                while True:
                    b = f.read(8 << 20)
                    if not b:
                        break
                    info.bytes_read += len(b)

    index = os.path.join(os.path.dirname(weights[0]), "model.safetensors.index.json")
    if os.path.isdir(path) and os.path.lexists(index):
        try:
            with open(index, "rb") as f:
                wmap = json.loads(f.read().decode("utf-8"))["weight_map"]
            assert isinstance(wmap, dict)
        except (OSError, ValueError, KeyError, TypeError, AssertionError, UnicodeDecodeError) as e:
            raise ModelError("%s: invalid safetensors index: %r" % (index, e)) from None
        for tensor, shard in sorted(wmap.items()):
            if shard not in by_file:
                raise ModelError("%s: missing shard (named in %s for %s)"
                                 % (os.path.join(path, str(shard)), os.path.basename(index), tensor))
            if tensor not in by_file[shard].get("names", ()):
                raise ModelError("%s: tensor %s, named in %s, is not in the file"
                                 % (os.path.join(path, shard), tensor, os.path.basename(index)))
    info.load_seconds = time.monotonic() - t0
    return info


# ---- writing tiny models (for tests) --------------------------------------------------------

def make_safetensors_bytes(tensors: Sequence[Tuple[str, str, Sequence[int]]],
                           metadata: Optional[Dict[str, str]] = None) -> bytes:
    """A valid safetensors file. ``tensors``: (name, dtype, shape); the data is deterministic."""
    header: Dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    data = []
    off = 0
    for name, dtype, shape in tensors:
        n = _ST_DTYPE_SIZE[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + n]}
        data.append(hashlib.shake_256(name.encode()).digest(n) if n else b"")
        off += n
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(data)


def make_gguf_bytes(architecture: str = "llama", n_tensors: int = 2, alignment: int = 32) -> bytes:
    """A valid little GGUF v3 file: a few metadata keys and ``n_tensors`` F32 [8, 4] tensors."""
    def s(v: str) -> bytes:
        b = v.encode()
        return struct.pack("<Q", len(b)) + b

    kvs = [s("general.architecture") + struct.pack("<I", _GGUF_STRING) + s(architecture),
           s("general.alignment") + struct.pack("<II", 4, alignment),
           s("tokenizer.ggml.tokens") + struct.pack("<IIQ", _GGUF_ARRAY, _GGUF_STRING, 3)
           + s("<unk>") + s("<s>") + s("</s>")]
    tensor_bytes = 8 * 4 * 4
    infos = [s("t%d.weight" % i) + struct.pack("<I2QIQ", 2, 8, 4, 0, i * tensor_bytes)
             for i in range(n_tensors)]
    head = b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(kvs)) + b"".join(kvs) + b"".join(infos)
    head += b"\0" * (-len(head) % alignment)
    return head + struct.pack("<%df" % (8 * 4 * n_tensors), *([0.5] * (8 * 4 * n_tensors)))


def write_tiny_model(directory: str, fmt: str = "safetensors",
                     config: Optional[Dict[str, Any]] = None) -> str:
    """Write a tiny valid model into ``directory`` (created); returns the directory.

    ``fmt``: "safetensors" (config.json + model.safetensors) or "gguf" (config.json + tiny.gguf).
    """
    os.makedirs(directory, exist_ok=True)
    cfg = config if config is not None else {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
        "num_hidden_layers": 1, "vocab_size": 16, "max_position_embeddings": 2048}
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    if fmt == "safetensors":
        blob = make_safetensors_bytes([("model.embed_tokens.weight", "BF16", [16, 8]),
                                       ("model.layers.0.mlp.up_proj.weight", "F32", [8, 8]),
                                       ("model.norm.weight", "F16", [8])])
        name = "model.safetensors"
    elif fmt == "gguf":
        blob, name = make_gguf_bytes(), "tiny.gguf"
    else:
        raise ValueError("fmt must be 'safetensors' or 'gguf'")
    with open(os.path.join(directory, name), "wb") as f:
        f.write(blob)
    return directory


# ---------------------------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------------------------

class _ApiError(Exception):
    def __init__(self, status: int, message: str, etype: str = "invalid_request_error",
                 code: Optional[str] = None, param: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.etype, self.code, self.param = status, message, etype, code, param

    def body(self) -> Dict[str, Any]:
        return {"error": {"message": self.message, "type": self.etype, "param": self.param,
                          "code": self.code}}


_Server = QuietServer


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(TrackedHandler):
    server_version = "FakeEngine/1.0"
    timeout = 600  # idle keep-alive connections
    engine: "FakeEngine"  # set on the per-engine subclass
    counted = False

    def log_request(self, code="-", size="-"):
        code = getattr(code, "value", code)
        if self.counted:
            self.engine._count_status(code if isinstance(code, int) else 0)
        if self.engine.log_requests:
            self.engine.log('%s:%d - "%s" %s' % (self.client_address[0], self.client_address[1],
                                                 self.requestline, code))

    def log_message(self, fmt, *args):
        if self.engine.log_requests:
            self.engine.log("%s - %s" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.engine._dispatch(self, "GET")

    def do_HEAD(self):
        self.engine._dispatch(self, "HEAD")

    def do_POST(self):
        self.engine._dispatch(self, "POST")

    def do_PUT(self):
        self.engine._dispatch(self, "PUT")

    def do_DELETE(self):
        self.engine._dispatch(self, "DELETE")


_VLLM_SLEEP_PATHS = ("/sleep", "/wake_up", "/is_sleeping")
_SGLANG_PATHS = ("/release_memory_occupation", "/resume_memory_occupation", "/pause_generation",
                 "/continue_generation")


def _env_flag(name: str) -> bool:
    """An integer environment flag read as vLLM reads its own: set and not 0."""
    try:
        return int(os.environ.get(name, "0") or "0") != 0
    except ValueError:
        return False


def _words(text: str) -> List[str]:
    return text.split()


def _content_text(content: Any) -> str:
    """A chat message's content: a string or a list of parts ({"type": "text", "text": ...})."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict)
                        and isinstance(p.get("text", ""), str))
    return ""


def _echo_tokens(prompt: str, n: int) -> List[str]:
    """The generated text as tokens: the prompt's words, cycled, n of them ("fake" if none)."""
    words = _words(prompt) or ["fake"]
    return [(words[i % len(words)] if i == 0 else " " + words[i % len(words)]) for i in range(n)]


class FakeEngine(ThreadedServer):
    """The fake engine's HTTP server, in-process. ``FakeEngine(path, "name").start()``; ``.url``.

    ``model``: an already loaded ModelInfo. Without one, ``path`` is loaded (ModelError on a bad
    model). ``started_at``: a time.monotonic() value that ``startup_delay`` counts from (default:
    now). ``crash_hook(exit_code)``: what ``POST /_fake/crash`` does. Without a hook the endpoint
    answers 501, because crashing would kill the caller.

    Sleep: ``enable_sleep_mode`` serves vLLM's /sleep, /wake_up and /is_sleeping when
    ``vllm_dev_mode`` is on too (None: read ``VLLM_SERVER_DEV_MODE`` as vLLM does); dev mode alone
    serves /collective_rpc. ``memory_saver`` serves SGLang's memory endpoints. ``simulated_gpu_mib``
    is the awake footprint (0: not simulated); ``sleep_leak`` makes a sleep free nothing;
    ``sleep_delay`` and ``wake_delay`` are how long a sleep and a wake take to answer.
    """

    _thread_name = "fake-engine"
    _poll_interval = 0.05

    def __init__(self, path: str, served_model_name: Any = None, host: str = "127.0.0.1",
                 port: int = 0, *, model: Optional[ModelInfo] = None, startup_delay: float = 0.0,
                 never_ready: bool = False, tokens_per_second: float = 200.0,
                 max_num_seqs: int = 256, max_model_len: Optional[int] = None,
                 gpu_memory_utilization: float = 0.9, log_requests: bool = False,
                 out: Any = None, started_at: Optional[float] = None,
                 crash_hook: Optional[Callable[[int], None]] = None,
                 enable_sleep_mode: bool = False, vllm_dev_mode: Optional[bool] = None,
                 memory_saver: bool = False, simulated_gpu_mib: int = 0,
                 sleep_leak: bool = False, sleep_delay: float = 0.05, wake_delay: float = 0.2):
        self.model = model if model is not None else load_model(path)
        names = served_model_name if isinstance(served_model_name, (list, tuple)) else (
            [served_model_name] if served_model_name else [path])
        self.served_model_names: List[str] = [str(n) for n in names]
        self.host, self._port_req = host, port
        self.startup_delay, self.never_ready = float(startup_delay), bool(never_ready)
        self.tokens_per_second = float(tokens_per_second)
        self.max_num_seqs = max(1, int(max_num_seqs))
        self.max_model_len = int(max_model_len or self.model.max_position_embeddings or 4096)
        self.gpu_memory_utilization = float(gpu_memory_utilization)
        self.log_requests = log_requests
        self.out = out
        self.started_at = time.monotonic() if started_at is None else started_at
        self.crash_hook = crash_hook
        self.enable_sleep_mode = bool(enable_sleep_mode)
        self.vllm_dev_mode = _env_flag("VLLM_SERVER_DEV_MODE") if vllm_dev_mode is None \
            else bool(vllm_dev_mode)
        self.memory_saver = bool(memory_saver)
        self.simulated_gpu_mib = max(0, int(simulated_gpu_mib))
        self.sleep_leak = bool(sleep_leak)
        self.sleep_delay, self.wake_delay = float(sleep_delay), float(wake_delay)
        self.created = int(time.time())
        self.children: List[int] = []      # worker pids (program mode), shown in the stats
        self._health_override: Optional[bool] = None
        # Open while set; streams that start while it is clear wait after their first event.
        self._gate = threading.Event()
        self._gate.set()
        self._held = 0  # streams waiting at the gate now (a gauge: stats resets keep it)
        self._slots = threading.BoundedSemaphore(self.max_num_seqs)
        self._lock = threading.Lock()
        # Sleep state. One sleep or wake at a time (_sleep_lock, taken before _lock); the fields
        # are read and written under _lock.
        self._sleep_lock = threading.Lock()
        self._asleep: set = set()               # tags asleep (vLLM's sleeping_tags)
        self._resident: set = set(SLEEP_TAGS)   # tags holding GPU memory
        self._sleep_level = 0                   # 0 awake; 1 or 2 (SGLang's release counts as 1)
        self._sleep_via = ""                    # "sleep" (vLLM) or "release" (SGLang)
        self._weights_loaded = True             # False from a level-2 sleep to reload_weights
        self._unpaused = threading.Event()      # clear between pause_ and continue_generation
        self._unpaused.set()
        self._closed = threading.Event()
        self._conns: set = set()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._reset_stats_locked()

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "FakeEngine":
        handler = type("_BoundHandler", (_Handler,), {"engine": self, "owner": self})
        cls = _Server6 if ":" in self.host else _Server
        self._start_server(cls((self.host, self._port_req), handler))
        return self

    def stop(self) -> None:
        self._closed.set()  # paced streams and delays end at once
        self._gate.set()    # and so do held ones
        self._unpaused.set()  # and requests waiting out a pause
        super().stop()

    @property
    def ready(self) -> bool:
        if self._health_override is not None:
            return self._health_override
        return not self.never_ready and time.monotonic() - self.started_at >= self.startup_delay

    def set_health(self, ready: Optional[bool]) -> None:
        """Force /health (True/False); None returns to the startup-delay rule."""
        self._health_override = ready

    def hold_streams(self, hold: bool) -> None:
        """True: streams send their headers and first event (the role delta of a chat stream),
        then wait until released; the number waiting is ``held`` in the stats, so a test can
        check that many streams are open at once. False releases them, and later streams
        run straight through."""
        if hold:
            self._gate.clear()
        else:
            self._gate.set()

    def log(self, msg: str) -> None:
        out = self.out if self.out is not None else sys.stdout
        with contextlib.suppress(OSError, ValueError):
            out.write("%s: %s\n" % (PROG, msg))
            out.flush()

    # ---- sleep (vLLM sleep mode, SGLang memory saver) and simulated GPU memory ----------------

    def _gpu_bytes_locked(self) -> int:
        total = self.simulated_gpu_mib * MIB
        weights = total * WEIGHTS_PERCENT // 100
        context = total * CONTEXT_PERCENT // 100
        parts = {"weights": weights, "kv_cache": total - weights - context}
        return context + sum(parts[t] for t in self._resident)

    def memory(self) -> Dict[str, Any]:
        """What ``GET /_fake/memory`` answers: the simulated GPU footprint and the sleep state."""
        with self._lock:
            return {"gpu_bytes": self._gpu_bytes_locked(), "sleeping": bool(self._asleep),
                    "sleep_level": self._sleep_level, "weights_loaded": self._weights_loaded}

    def _gpu_change(self, before: int, after: int) -> str:
        if not self.simulated_gpu_mib:
            return "gpu memory not simulated"
        return "gpu %d MiB -> %d MiB" % (before // MIB, after // MIB)

    def _delay(self, seconds: float) -> None:
        if seconds > 0 and self._closed.wait(seconds):
            raise ConnectionAbortedError("engine stopping")

    def _put_to_sleep(self, what: str, tags: Sequence[str], level: int, via: str) -> None:
        """Send ``tags`` to sleep after ``sleep_delay``: their memory is freed (unless
        ``sleep_leak``), and a level-2 sleep discards the weights. REQUIRES: _sleep_lock held."""
        self._delay(self.sleep_delay)
        with self._lock:
            before = self._gpu_bytes_locked()
            self._asleep.update(tags)
            if not self.sleep_leak:
                self._resident.difference_update(tags)
            if level == 2 and "weights" in tags:
                self._weights_loaded = False
            if self._asleep and not self._sleep_level:
                self._sleep_level, self._sleep_via = level, via
            after = self._gpu_bytes_locked()
        self.log("%s: %s%s" % (what, self._gpu_change(before, after),
                               " (--sleep-leak: memory not freed)" if self.sleep_leak and tags
                               else ""))

    def _wake(self, what: str, tags: Sequence[str]) -> None:
        """Wake ``tags`` after ``wake_delay``: their memory comes back. REQUIRES: _sleep_lock
        held."""
        t0 = time.monotonic()
        self._delay(self.wake_delay)
        with self._lock:
            before = self._gpu_bytes_locked()
            self._asleep.difference_update(tags)
            self._resident.update(tags)
            if not self._asleep:
                self._sleep_level, self._sleep_via = 0, ""
            after = self._gpu_bytes_locked()
            empty = "weights" in tags and not self._weights_loaded
        self.log("%s: %s in %.3fs%s" % (
            what, self._gpu_change(before, after), time.monotonic() - t0,
            "; the weights are empty until collective_rpc reload_weights" if empty else ""))

    def sleep(self, level: int = 1) -> None:
        """vLLM's ``POST /sleep?level=``: level 1 offloads the weights to CPU and drops the KV
        cache, level 2 discards both. Asleep already: nothing changes (vLLM only warns)."""
        if level not in (1, 2):
            raise ValueError("sleep level must be 1 or 2, got %r" % (level,))
        with self._sleep_lock:
            with self._lock:
                asleep_at = self._sleep_level if self._asleep else 0
            if asleep_at:
                self.log("sleep level=%d: already asleep (level %d), nothing to do"
                         % (level, asleep_at))
                return
            self._put_to_sleep("sleep level=%d" % level, SLEEP_TAGS, level, "sleep")

    def wake_up(self, tags: Optional[Sequence[str]] = None) -> None:
        """vLLM's ``POST /wake_up[?tags=...]``; no tags wakes everything. As in vLLM, waking an
        engine that is awake, or a tag that is not asleep, changes nothing."""
        with self._sleep_lock:
            with self._lock:
                asleep = set(self._asleep)
            want = list(dict.fromkeys(tags)) if tags else [t for t in SLEEP_TAGS if t in asleep]
            if not asleep or not set(want) <= asleep:
                self.log("wake_up tags=%s: %s, nothing to do" % (
                    ",".join(want) or "-", "not sleeping" if not asleep else
                    "asleep are only %s" % ",".join(sorted(asleep))))
                return
            self._wake("wake_up tags=%s" % ",".join(want), want)

    def reload_weights(self) -> str:
        """vLLM's ``collective_rpc("reload_weights")``: read the model again from its path (as
        vLLM does from disk). Raises RuntimeError while the weights are asleep, or ModelError."""
        with self._sleep_lock:
            with self._lock:
                if "weights" in self._asleep:
                    raise RuntimeError("cannot reload the weights while they are asleep: "
                                       "POST /wake_up first")
            info = load_model(self.model.path, read_weights=self.model.bytes_read > 0)
            with self._lock:
                self._weights_loaded = True
        msg = "reloaded %d tensors from %s in %.3fs" % (info.tensors, info.path, info.load_seconds)
        self.log("collective_rpc reload_weights: " + msg)
        return msg

    def release_memory(self, tags: Optional[Sequence[str]] = None) -> None:
        """SGLang's ``POST /release_memory_occupation``; no tags releases everything. Weights are
        kept on CPU (as a level-1 sleep), so a resume needs no reload."""
        want = [t for t in SLEEP_TAGS if not tags or t in tags]
        with self._sleep_lock:
            self._put_to_sleep("release_memory_occupation tags=%s" % (",".join(want) or "-"),
                               want, 1, "release")

    def resume_memory(self, tags: Optional[Sequence[str]] = None) -> None:
        """SGLang's ``POST /resume_memory_occupation``; no tags resumes everything released."""
        with self._sleep_lock:
            with self._lock:
                want = [t for t in SLEEP_TAGS if t in self._asleep and (not tags or t in tags)]
            if not want:
                self.log("resume_memory_occupation: nothing released, nothing to do")
                return
            self._wake("resume_memory_occupation tags=%s" % ",".join(want), want)

    def pause_generation(self, pause: bool) -> None:
        """SGLang's ``/pause_generation`` (True) and ``/continue_generation`` (False): while
        paused, new generation requests wait; those already running go on."""
        if pause:
            self._unpaused.clear()
        else:
            self._unpaused.set()
        self.log("pause_generation" if pause else "continue_generation")

    def _check_awake(self) -> None:
        """Before a generation: wait out a pause, then refuse while asleep or without weights."""
        if not self._unpaused.is_set():
            self._unpaused.wait()
            if self._closed.is_set():
                raise ConnectionAbortedError("engine stopping")
        with self._lock:
            asleep, via, level = bool(self._asleep), self._sleep_via, self._sleep_level
            loaded = self._weights_loaded
        if asleep and via == "release":
            raise _ApiError(503, "the engine is sleeping: its GPU memory is released (POST "
                                 "/resume_memory_occupation first)",
                            etype="service_unavailable", code=503)
        if asleep:
            raise _ApiError(503, "the engine is sleeping (sleep level %d): POST /wake_up first"
                            % level, etype="service_unavailable", code=503)
        if not loaded:
            raise _ApiError(500, "the model weights are not loaded (woken from sleep level 2): "
                                 "POST /collective_rpc {\"method\": \"reload_weights\"} first",
                            etype="internal_server_error", code=500)

    # ---- stats -------------------------------------------------------------------------------

    def _reset_stats_locked(self) -> None:
        self._requests = 0
        self._by_path: Dict[str, int] = {}
        self._status: Dict[str, int] = {}
        self._in_flight = 0
        self._max_in_flight = 0
        self._running = 0
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._streams = 0
        self._streams_completed = 0
        self._disconnects = 0
        self._last_request_keys: List[str] = []

    def reset_stats(self) -> None:
        with self._lock:
            in_flight, running = self._in_flight, self._running
            self._reset_stats_locked()
            self._in_flight, self._running = in_flight, running

    def _count_status(self, status: int) -> None:
        with self._lock:
            self._status[str(status)] = self._status.get(str(status), 0) + 1

    def stats(self) -> Dict[str, Any]:
        with self._lock:
            s = {"requests": self._requests, "by_path": dict(self._by_path),
                 "status_counts": dict(self._status), "in_flight": self._in_flight,
                 "max_in_flight": self._max_in_flight, "running": self._running,
                 "waiting": self._in_flight - self._running,
                 "prompt_tokens": self._prompt_tokens,
                 "completion_tokens": self._completion_tokens, "streams": self._streams,
                 "streams_completed": self._streams_completed, "disconnects": self._disconnects,
                 "held": self._held, "hold": not self._gate.is_set(),
                 "last_request_keys": list(self._last_request_keys)}
        s.update({"pid": os.getpid(), "pgid": os.getpgid(0), "ppid": os.getppid(),
                  "ready": self.ready, "uptime_s": round(time.monotonic() - self.started_at, 3),
                  "served_model_names": self.served_model_names,
                  "settings": {"startup_delay": self.startup_delay, "never_ready": self.never_ready,
                               "tokens_per_second": self.tokens_per_second,
                               "max_num_seqs": self.max_num_seqs,
                               "max_model_len": self.max_model_len,
                               "gpu_memory_utilization": self.gpu_memory_utilization,
                               "enable_sleep_mode": self.enable_sleep_mode,
                               "vllm_dev_mode": self.vllm_dev_mode,
                               "enable_memory_saver": self.memory_saver,
                               "simulated_gpu_mib": self.simulated_gpu_mib,
                               "sleep_leak": self.sleep_leak, "sleep_delay": self.sleep_delay,
                               "wake_delay": self.wake_delay},
                  "memory": self.memory(), "paused": not self._unpaused.is_set(),
                  "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                  "env": {k: v for k, v in os.environ.items() if k.startswith("FAKE_ENGINE_")},
                  "children": list(self.children), "model": self.model.summary()})
        return s

    # ---- responses ---------------------------------------------------------------------------

    @staticmethod
    def _send_json(h: _Handler, status: int, obj: Any, head: bool = False) -> None:
        body = (json.dumps(obj) + "\n").encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head:
            h.wfile.write(body)

    @staticmethod
    def _send_empty(h: _Handler, status: int) -> None:
        h.send_response(status)
        h.send_header("Content-Length", "0")
        h.end_headers()

    @staticmethod
    def _read_body(h: _Handler) -> bytes:
        if "chunked" in h.headers.get("Transfer-Encoding", "").lower():
            parts, total = [], 0
            while True:
                line = h.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    h.close_connection = True
                    raise _ApiError(413, "request body too large")
                parts.append(h.rfile.read(size))
                h.rfile.readline(1024)
        try:
            n = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            h.close_connection = True
            raise _ApiError(400, "bad Content-Length") from None
        if n > MAX_BODY:
            h.close_connection = True
            raise _ApiError(413, "request body too large")
        return h.rfile.read(n) if n > 0 else b""

    def _dispatch(self, h: _Handler, method: str) -> None:
        path = urllib.parse.urlsplit(h.path).path
        h.counted = False
        try:
            raw = self._read_body(h) if method in ("POST", "PUT") else b""
        except _ApiError as e:
            self._send_json(h, e.status, e.body())
            return
        except (ValueError, OSError):
            h.close_connection = True
            return
        if path.startswith("/_fake/"):
            self._control(h, method, path[len("/_fake/"):], raw)
            return
        h.counted = True
        with self._lock:
            self._requests += 1
            self._by_path[path] = self._by_path.get(path, 0) + 1
        try:
            self._route(h, method, path, raw)
        except _ApiError as e:
            self._send_json(h, e.status, e.body(), head=method == "HEAD")

    def _route(self, h: _Handler, method: str, path: str, raw: bytes) -> None:
        get = method in ("GET", "HEAD")
        if path in ("/health", "/v1/health/ready"):  # the second: NIM's readiness path
            if not get:
                raise _ApiError(405, "method %s not allowed on %s" % (method, path))
            if self.ready:
                self._send_json(h, 200, {"status": "ok"}, head=method == "HEAD")
            else:
                self._send_json(h, 503, {"status": "loading"}, head=method == "HEAD")
            return
        if self._sleep_route(h, method, path, raw):
            return
        routes = {"/v1/models": "models", "/v1/chat/completions": "chat",
                  "/v1/completions": "completion", "/v1/embeddings": "embeddings"}
        kind = routes.get(path)
        if kind is None and path.startswith("/v1/models/"):
            kind = "model"
        if kind is None:
            raise _ApiError(404, "not found: %s" % path, code="not_found")
        if (kind in ("models", "model")) != get:
            raise _ApiError(405, "method %s not allowed on %s" % (method, path))
        if not self.ready:
            raise _ApiError(503, "the model is still loading", etype="service_unavailable",
                            code="model_loading")
        if kind == "models":
            self._send_json(h, 200, {"object": "list", "data": [self._model_card(n) for n in
                                                                self.served_model_names]},
                            head=method == "HEAD")
            return
        if kind == "model":
            name = urllib.parse.unquote(path[len("/v1/models/"):])
            self._check_model(name)
            self._send_json(h, 200, self._model_card(name), head=method == "HEAD")
            return
        try:
            req = json.loads(raw.decode("utf-8")) if raw else None
        except (UnicodeDecodeError, ValueError) as e:
            raise _ApiError(400, "request body is not valid JSON: %s" % e) from None
        if not isinstance(req, dict):
            raise _ApiError(400, "request body must be a JSON object")
        model = req.get("model")
        if model is not None:
            if not isinstance(model, str):
                raise _ApiError(400, "'model' must be a string", param="model")
            self._check_model(model)
        name = model or self.served_model_names[0]
        self._check_awake()
        if kind == "embeddings":
            self._embeddings(h, req, name)
        else:
            self._generate(h, kind, req, name)

    def _sleep_route(self, h: _Handler, method: str, path: str, raw: bytes) -> bool:
        """vLLM's and SGLang's sleep endpoints, where the flags serve them; False otherwise (the
        caller answers 404, as the real engines do without the flags)."""
        served = ((self.enable_sleep_mode and self.vllm_dev_mode and path in _VLLM_SLEEP_PATHS)
                  or (self.vllm_dev_mode and path == "/collective_rpc")
                  or (self.memory_saver and path in _SGLANG_PATHS))
        if not served:
            return False
        want = "GET" if path == "/is_sleeping" else "POST"
        if method != want and not (want == "GET" and method == "HEAD"):
            raise _ApiError(405, "method %s not allowed on %s" % (method, path))
        if not self.ready:
            raise _ApiError(503, "the model is still loading", etype="service_unavailable",
                            code="model_loading")
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query, keep_blank_values=True)
        if path == "/is_sleeping":
            self._send_json(h, 200, {"is_sleeping": self.memory()["sleeping"]},
                            head=method == "HEAD")
        elif path == "/sleep":
            level = (query.get("level") or ["1"])[-1]
            if level not in ("1", "2"):
                raise _ApiError(400, "sleep level must be 1 or 2, got %r" % level,
                                etype="BadRequestError", param="level", code=400)
            self.sleep(int(level))
            self._send_empty(h, 200)
        elif path == "/wake_up":
            self.wake_up(query.get("tags"))
            self._send_empty(h, 200)
        elif path == "/collective_rpc":
            rpc = self._json_object(raw).get("method")
            if rpc != "reload_weights":
                raise _ApiError(400, "collective_rpc: the fake engine runs only method "
                                     "'reload_weights', not %r" % (rpc,),
                                etype="BadRequestError", param="method", code=400)
            try:
                self.reload_weights()
            except (RuntimeError, ModelError) as e:
                raise _ApiError(500, "collective_rpc reload_weights: %s" % e,
                                etype="internal_server_error", code=500) from None
            self._send_json(h, 200, {"results": [None]})
        elif path in ("/release_memory_occupation", "/resume_memory_occupation"):
            tags = self._json_object(raw).get("tags")
            if tags is not None and not (isinstance(tags, list)
                                         and all(t in SGLANG_TAGS for t in tags)):
                raise _ApiError(400, "'tags' must be null or a list of %s, got %s"
                                % (", ".join(SGLANG_TAGS), json.dumps(tags)), param="tags")
            if path == "/release_memory_occupation":
                self.release_memory(tags)
            else:
                self.resume_memory(tags)
            self._send_json(h, 200, None)  # SGLang's handler returns None: a JSON null
        else:
            pause = path == "/pause_generation"
            self.pause_generation(pause)
            self._send_json(h, 200, {"status": "ok", "message": "Generation %s." % (
                "paused" if pause else "continued")})
        return True

    @staticmethod
    def _json_object(raw: bytes) -> Dict[str, Any]:
        """A request body that must be a JSON object; an empty one is {}."""
        try:
            obj = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, ValueError) as e:
            raise _ApiError(400, "request body is not valid JSON: %s" % e) from None
        if not isinstance(obj, dict):
            raise _ApiError(400, "request body must be a JSON object")
        return obj

    def _model_card(self, name: str) -> Dict[str, Any]:
        return {"id": name, "object": "model", "created": self.created, "owned_by": "fake-engine",
                "root": self.model.path, "parent": None, "max_model_len": self.max_model_len}

    def _check_model(self, name: str) -> None:
        if name not in self.served_model_names:
            raise _ApiError(404, "The model `%s` does not exist." % name, code="model_not_found",
                            param="model")

    # ---- generation --------------------------------------------------------------------------

    def _prompts(self, kind: str, req: Dict[str, Any]) -> Tuple[List[str], int]:
        """(echo source per choice, prompt token count)."""
        if kind == "chat":
            msgs = req.get("messages")
            if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) for m in msgs):
                raise _ApiError(400, "'messages' must be a non-empty list of message objects",
                                param="messages")
            texts = [_content_text(m.get("content")) for m in msgs]
            users = [t for m, t in zip(msgs, texts) if m.get("role") == "user"]
            return [users[-1] if users else " ".join(texts)], sum(len(_words(t)) for t in texts)
        p = req.get("prompt")
        if isinstance(p, str):
            prompts = [p]
        elif isinstance(p, list) and p and all(isinstance(x, str) for x in p):
            prompts = list(p)
        elif isinstance(p, list) and p and all(isinstance(x, int) for x in p):
            prompts = [" ".join("tok%d" % x for x in p)]
        elif isinstance(p, list) and p and all(isinstance(x, list) and all(isinstance(y, int) for y in x)
                                               for x in p):
            prompts = [" ".join("tok%d" % y for y in x) for x in p]
        else:
            raise _ApiError(400, "'prompt' must be a string, a list of strings or token ids",
                            param="prompt")
        return prompts, sum(len(_words(x)) for x in prompts)

    def _generate(self, h: _Handler, kind: str, req: Dict[str, Any], model: str) -> None:
        prompts, prompt_tokens = self._prompts(kind, req)
        key = "max_completion_tokens" if kind == "chat" and "max_completion_tokens" in req else "max_tokens"
        n_tok = req.get(key)
        if n_tok is None:
            n_tok = DEFAULT_MAX_TOKENS
        if not isinstance(n_tok, int) or isinstance(n_tok, bool) or n_tok < 1:
            raise _ApiError(400, "'%s' must be a positive integer" % key, param=key)
        if prompt_tokens + n_tok > self.max_model_len:
            raise _ApiError(400, "This model's maximum context length is %d tokens; you asked for "
                                 "%d (%d prompt + %d completion)" % (
                                     self.max_model_len, prompt_tokens + n_tok, prompt_tokens, n_tok),
                            param=key)
        if req.get("n", 1) != 1:
            raise _ApiError(400, "the fake engine supports only n=1", param="n")
        stream = req.get("stream", False)
        if not isinstance(stream, bool):
            raise _ApiError(400, "'stream' must be a boolean", param="stream")
        opts = req.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        tokens = [_echo_tokens(p, n_tok) for p in prompts]
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": n_tok * len(prompts),
                 "total_tokens": prompt_tokens + n_tok * len(prompts)}
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())

        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            self._prompt_tokens += prompt_tokens
            self._last_request_keys = sorted(req.keys())
            if stream:
                self._streams += 1
        try:
            with self._slot():
                if stream:
                    self._stream(h, kind, rid, created, model, tokens, usage, include_usage)
                else:
                    self._finish_at(time.monotonic(), n_tok)
                    choices = []
                    for i, toks in enumerate(tokens):
                        text = "".join(toks)
                        c: Dict[str, Any] = {"index": i, "logprobs": None, "finish_reason": "length"}
                        if kind == "chat":
                            c["message"] = {"role": "assistant", "content": text}
                        else:
                            c["text"] = text
                        choices.append(c)
                    with self._lock:
                        self._completion_tokens += usage["completion_tokens"]
                    self._send_json(h, 200, {
                        "id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
                        "created": created, "model": model, "choices": choices, "usage": usage})
        finally:
            with self._lock:
                self._in_flight -= 1

    @contextlib.contextmanager
    def _slot(self):
        self._slots.acquire()
        with self._lock:
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
            self._slots.release()

    def _finish_at(self, t0: float, i: int) -> None:
        """Wait until token i (1-based) is due, t0 + i / tokens_per_second."""
        if self.tokens_per_second > 0:
            delay = t0 + i / self.tokens_per_second - time.monotonic()
            if delay > 0 and self._closed.wait(delay):
                raise ConnectionAbortedError("engine stopping")

    def _stream(self, h: _Handler, kind: str, rid: str, created: int, model: str,
                tokens: List[List[str]], usage: Dict[str, int], include_usage: bool) -> None:
        chunked = h.request_version != "HTTP/1.0"
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream; charset=utf-8")
        h.send_header("Cache-Control", "no-cache")
        h.send_header("X-Accel-Buffering", "no")
        if chunked:
            h.send_header("Transfer-Encoding", "chunked")
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def emit(data: str) -> None:
            b = ("data: %s\n\n" % data).encode()
            h.wfile.write(b"%x\r\n%s\r\n" % (len(b), b) if chunked else b)

        def chunk(i: int, piece: Optional[str], finish: Optional[str], role: bool = False) -> str:
            c: Dict[str, Any] = {"index": i, "logprobs": None, "finish_reason": finish}
            if kind == "chat":
                c["delta"] = ({"role": "assistant", "content": ""} if role else
                              ({"content": piece} if piece is not None else {}))
            else:
                c["text"] = piece or ""
            d: Dict[str, Any] = {"id": rid, "object": obj, "created": created, "model": model,
                                 "choices": [c]}
            if include_usage:
                d["usage"] = None
            return json.dumps(d)

        sent = 0
        try:
            if kind == "chat":
                for i in range(len(tokens)):
                    emit(chunk(i, None, None, role=True))
            self._wait_gate()
            t0 = time.monotonic()
            n = len(tokens[0])
            for k in range(n):
                self._finish_at(t0, k + 1)
                for i, toks in enumerate(tokens):
                    emit(chunk(i, toks[k], None))
                    sent += 1
            for i in range(len(tokens)):
                emit(chunk(i, None if kind == "chat" else "", "length"))
            if include_usage:
                emit(json.dumps({"id": rid, "object": obj, "created": created, "model": model,
                                 "choices": [], "usage": usage}))
            emit("[DONE]")
            if chunked:
                h.wfile.write(b"0\r\n\r\n")
            with self._lock:
                self._streams_completed += 1
        except (ConnectionError, OSError):
            h.close_connection = True
            with self._lock:
                self._disconnects += 1
        finally:
            with self._lock:
                self._completion_tokens += sent

    def _wait_gate(self) -> None:
        """While streams are held (hold_streams), wait until they are released."""
        if self._gate.is_set():
            return
        with self._lock:
            self._held += 1
        try:
            self._gate.wait()  # no polling: a thousand held streams must cost nothing
        finally:
            with self._lock:
                self._held -= 1
        if self._closed.is_set():
            raise ConnectionAbortedError("engine stopping")

    def _embeddings(self, h: _Handler, req: Dict[str, Any], model: str) -> None:
        inp = req.get("input")
        if isinstance(inp, str):
            items = [inp]
        elif isinstance(inp, list) and inp and all(isinstance(x, str) for x in inp):
            items = list(inp)
        elif isinstance(inp, list) and inp and all(isinstance(x, int) for x in inp):
            items = [" ".join("tok%d" % x for x in inp)]
        else:
            raise _ApiError(400, "'input' must be a string or a list of strings", param="input")
        data = []
        for i, text in enumerate(items):
            d = hashlib.sha256(text.encode()).digest()
            vec = [(b - 127.5) / 127.5 for b in d[:EMBEDDING_DIM]]
            norm = math.sqrt(sum(v * v for v in vec)) or 1.0
            data.append({"object": "embedding", "index": i,
                         "embedding": [round(v / norm, 6) for v in vec]})
        n = sum(len(_words(t)) for t in items)
        with self._lock:
            self._prompt_tokens += n
        self._send_json(h, 200, {"object": "list", "data": data, "model": model,
                                 "usage": {"prompt_tokens": n, "total_tokens": n}})

    # ---- test controls -----------------------------------------------------------------------

    def _control(self, h: _Handler, method: str, route: str, raw: bytes) -> None:
        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (UnicodeDecodeError, ValueError):
            body = None
        if not isinstance(body, dict):
            self._send_json(h, 400, {"error": "POST a JSON object"})
        elif route == "stats" and method in ("GET", "HEAD"):
            self._send_json(h, 200, self.stats(), head=method == "HEAD")
        elif route == "memory" and method in ("GET", "HEAD"):
            self._send_json(h, 200, self.memory(), head=method == "HEAD")
        elif route == "stats/reset" and method == "POST":
            self.reset_stats()
            self._send_json(h, 200, {"ok": True})
        elif route == "health" and method == "POST":
            ready = body.get("ready")
            if ready is not None and not isinstance(ready, bool):
                self._send_json(h, 400, {"error": "'ready' must be true, false or null"})
                return
            self.set_health(ready)
            self._send_json(h, 200, {"ok": True, "ready": self.ready})
        elif route == "hold" and method == "POST":
            hold = body.get("hold")
            if not isinstance(hold, bool):
                self._send_json(h, 400, {"error": "'hold' must be true or false"})
                return
            self.hold_streams(hold)
            with self._lock:
                held = self._held
            self._send_json(h, 200, {"ok": True, "hold": hold, "held": held})
        elif route == "crash" and method == "POST":
            code = body.get("exit_code", 1)
            if self.crash_hook is None or not isinstance(code, int):
                self._send_json(h, 501 if self.crash_hook is None else 400,
                                {"error": "crash needs the program and an integer exit_code"})
                return
            self._send_json(h, 200, {"ok": True, "exit_code": code})
            self.crash_hook(code)
        else:
            self._send_json(h, 404, {"error": "unknown control endpoint /_fake/%s" % route})


# ---------------------------------------------------------------------------------------------
# Client helpers (no proxies: http.client talks to the address directly)
# ---------------------------------------------------------------------------------------------

def _conn(base_url: str, timeout: float) -> http.client.HTTPConnection:
    u = urllib.parse.urlsplit(base_url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)


def http_json(base_url: str, method: str, path: str, body: Any = None,
              timeout: float = 10.0) -> Tuple[int, Any, http.client.HTTPMessage]:
    """(status, parsed JSON body or None, headers) for one request; errors are returned."""
    c = _conn(base_url, timeout)
    try:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        c.request(method, path, body=data, headers=hdrs)
        r = c.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return r.status, parsed, r.headers
    finally:
        c.close()


def sse(base_url: str, path: str, body: Dict[str, Any], timeout: float = 10.0
        ) -> Tuple[int, List[Tuple[float, Any]], http.client.HTTPMessage]:
    """POST a streaming request and read its events: (status, [(arrival time, data)], headers).

    ``data`` is the parsed JSON of each ``data:`` line, or the string ``"[DONE]"``. A non-200
    answer gives [(t, parsed error body)]. Raises ValueError on a line that is not SSE.
    """
    c = _conn(base_url, timeout)
    try:
        c.request("POST", path, body=json.dumps(dict(body, stream=True)).encode(),
                  headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        r = c.getresponse()
        if r.status != 200:
            raw = r.read()
            return r.status, [(time.monotonic(), json.loads(raw) if raw else None)], r.headers
        events: List[Tuple[float, Any]] = []
        while True:
            line = r.readline()
            if not line:
                break
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            if not line.startswith(b"data: "):
                raise ValueError("not an SSE data line: %r" % line)
            data = line[len(b"data: "):].decode()
            events.append((time.monotonic(), data if data == "[DONE]" else json.loads(data)))
        return r.status, events, r.headers
    finally:
        c.close()


# ---------------------------------------------------------------------------------------------
# The engine as a child process (what the agent does), for tests
# ---------------------------------------------------------------------------------------------

class EngineProcess:
    """Runs ``fake_engine.py`` as a child process in its own session (process group).

    ``EngineProcess(model, name, *extra_args, port=0)``: the port is read back from the
    ``listening on`` line. Output is collected in ``stdout_lines`` and ``stderr_lines``.
    ``close()`` (or leaving the ``with`` block) kills the whole group and reaps it.
    """

    def __init__(self, model: str, served_model_name: str = "fake-model", *extra_args: str,
                 port: int = 0, host: str = "127.0.0.1", python: Optional[str] = None,
                 env: Optional[Dict[str, str]] = None, new_session: bool = True):
        self.argv = [python or sys.executable, os.path.abspath(__file__), "--model", model,
                     "--served-model-name", served_model_name, "--host", host,
                     "--port", str(port), *extra_args]
        self.started = time.monotonic()
        self.stdout_lines: List[str] = []
        self.stderr_lines: List[str] = []
        self._cv = threading.Condition()
        self.url: Optional[str] = None
        self.new_session = new_session
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, start_new_session=new_session)
        self._readers = [threading.Thread(target=self._read, args=(s, ls), daemon=True)
                         for s, ls in ((self.proc.stdout, self.stdout_lines),
                                       (self.proc.stderr, self.stderr_lines))]
        for t in self._readers:
            t.start()

    def _read(self, stream, lines: List[str]) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._cv:
                lines.append(line)
                if self.url is None and " listening on http://" in line:
                    self.url = line.split(" listening on ", 1)[1].split()[0]
                self._cv.notify_all()
        stream.close()
        with self._cv:
            self._cv.notify_all()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        with self._cv:
            return "\n".join(["[stdout]"] + self.stdout_lines + ["[stderr]"] + self.stderr_lines)

    def wait_listening(self, timeout: float = 10.0) -> str:
        """The base URL once the engine listens; RuntimeError if it exits or the time runs out."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self.url is None:
                left = deadline - time.monotonic()
                if self.proc.poll() is not None and not any(t.is_alive() for t in self._readers):
                    raise RuntimeError("engine exited with %s before listening\n%s"
                                       % (self.proc.returncode, self.output()))
                if left <= 0:
                    raise RuntimeError("engine not listening after %.1fs\n%s" % (timeout, self.output()))
                self._cv.wait(min(left, 0.1))
            return self.url

    def health(self, timeout: float = 2.0) -> int:
        """The /health status code, or 0 when the connection fails."""
        try:
            return http_json(self.wait_listening(), "GET", "/health", timeout=timeout)[0]
        except (OSError, http.client.HTTPException):
            return 0

    def wait_ready(self, timeout: float = 10.0, poll: float = 0.02) -> str:
        """The base URL once /health answers 200; RuntimeError if it exits or times out."""
        deadline = time.monotonic() + timeout
        url = self.wait_listening(timeout)
        while True:
            if self.health() == 200:
                return url
            if self.proc.poll() is not None:
                raise RuntimeError("engine exited with %s before ready\n%s"
                                   % (self.proc.returncode, self.output()))
            if time.monotonic() >= deadline:
                raise RuntimeError("engine not ready after %.1fs\n%s" % (timeout, self.output()))
            time.sleep(poll)

    def wait_exit(self, timeout: float = 10.0) -> int:
        """The exit status (negative: killed by that signal); TimeoutExpired if still running."""
        rc = self.proc.wait(timeout)
        for t in self._readers:
            t.join(timeout=5)
        return rc

    def signal(self, sig: int, group: bool = False) -> None:
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM, then wait for the exit status (SIGKILL to the group after ``timeout``)."""
        self.signal(signal.SIGTERM)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self.close()
            raise

    def close(self) -> None:
        """Kill the process (its whole group when it has its own session) and reap it."""
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL, group=self.new_session)
        elif self.new_session:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # leftover workers of a crashed engine
        self.proc.wait()
        for t in self._readers:
            t.join(timeout=5)

    def __enter__(self) -> "EngineProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Program
# ---------------------------------------------------------------------------------------------

# A worker child: sleeps until signalled (or a 10-minute safety cap), optionally ignoring SIGTERM.
_WORKER = ("import signal, sys, time\n"
           "if sys.argv[1] == '1': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
           "end = time.monotonic() + 600\n"
           "while time.monotonic() < end: time.sleep(1)\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fake_engine.py", description="Fake OpenAI-compatible inference engine for tests.",
        epilog="Unknown options are ignored with a warning, as an engine stand-in should.",
        allow_abbrev=False)
    p.add_argument("positional", nargs="*", help="MODEL, or 'serve MODEL' (vLLM style)")
    p.add_argument("--model", "-m", "--model-path", dest="model",
                   help="model directory or weights file")
    p.add_argument("--served-model-name", "--alias", dest="served_model_name", nargs="+",
                   help="name(s) the API answers to (default: the model path)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--startup-delay", type=float, default=0.0, metavar="S",
                   help="listen at once, but /health answers 503 for S seconds after start")
    p.add_argument("--never-ready", action="store_true", help="/health always answers 503")
    p.add_argument("--crash-after", type=float, metavar="S",
                   help="exit abruptly (os._exit) S seconds after start")
    p.add_argument("--exit-code", type=int, default=1, help="status for --crash-after (default 1)")
    p.add_argument("--gpu-memory-utilization", "--mem-fraction-static", type=float, default=0.9,
                   dest="gpu_memory_utilization")
    p.add_argument("--max-num-seqs", "--parallel", "-np", type=int, default=256,
                   dest="max_num_seqs", help="concurrent generations; more requests wait")
    p.add_argument("--max-model-len", "--ctx-size", "-c", type=int, dest="max_model_len",
                   help="context length (default: config max_position_embeddings, else 4096)")
    p.add_argument("--tokens-per-second", type=float, default=200.0, metavar="R",
                   help="generation pace per request; 0 = no delay (default 200)")
    p.add_argument("--load-weights", action="store_true",
                   help="read every weight byte at start, as a real engine does")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="start N worker child processes in this process group")
    p.add_argument("--ignore-sigterm", action="store_true",
                   help="ignore SIGTERM (engine and workers); only SIGKILL/SIGINT stop it")
    p.add_argument("--shutdown-delay", type=float, default=0.0, metavar="S",
                   help="take S seconds to exit after SIGTERM/SIGINT")
    p.add_argument("--disable-log-requests", action="store_true", help="no access log lines")
    p.add_argument("--enable-sleep-mode", action="store_true",
                   help="vLLM: serve /sleep, /wake_up and /is_sleeping "
                        "(with VLLM_SERVER_DEV_MODE=1)")
    p.add_argument("--enable-memory-saver", action="store_true",
                   help="SGLang: serve /release_memory_occupation, /resume_memory_occupation, "
                        "/pause_generation and /continue_generation")
    p.add_argument("--simulated-gpu-mib", type=int, default=0, metavar="N",
                   help="awake GPU footprint in MiB, shown by GET /_fake/memory; a sleep frees "
                        "all but %d%%%% (default 0: not simulated)" % CONTEXT_PERCENT)
    p.add_argument("--sleep-leak", action="store_true",
                   help="a sleep answers 200 but frees no memory (an engine regression)")
    p.add_argument("--sleep-delay", type=float, default=0.05, metavar="S",
                   help="a sleep or release takes S seconds to answer (default 0.05)")
    p.add_argument("--wake-delay", type=float, default=0.2, metavar="S",
                   help="a wake or resume takes S seconds to answer (default 0.2)")
    return p


def _err(msg: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write("%s: error: %s\n" % (PROG, msg))
        sys.stderr.flush()


def main(argv: Optional[List[str]] = None) -> int:
    started = time.monotonic()
    args, unknown = _parser().parse_known_args(argv)
    pos = list(args.positional)
    if pos[:1] == ["serve"]:
        pos = pos[1:]
    if args.model is None and pos:
        args.model, pos = pos[0], pos[1:]
    unknown += pos
    if args.model is None:
        _err("no model given (--model DIR)")
        return 2

    def log(msg: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.write("%s: %s\n" % (PROG, msg))
            sys.stdout.flush()

    if unknown:
        log("warning: ignoring unknown arguments: %s" % " ".join(unknown))
    for flag, v in (("--simulated-gpu-mib", args.simulated_gpu_mib),
                    ("--sleep-delay", args.sleep_delay), ("--wake-delay", args.wake_delay)):
        if v < 0:
            _err("%s must not be negative, got %g" % (flag, v))
            return 2
    dev_mode = _env_flag("VLLM_SERVER_DEV_MODE")
    if args.enable_sleep_mode and not dev_mode:
        log("warning: --enable-sleep-mode without VLLM_SERVER_DEV_MODE=1: /sleep, /wake_up and "
            "/is_sleeping are not served (as in vLLM)")

    stop = threading.Event()

    def on_signal(signum, _frame):
        if signum == signal.SIGTERM and args.ignore_sigterm:
            log("ignoring SIGTERM (--ignore-sigterm)")
            return
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def crash(code: int, why: str) -> None:
        _err("crashing: %s (exit code %d)" % (why, code))
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        os._exit(code)

    if args.crash_after is not None:
        def crash_later():
            if not stop.wait(max(0.0, started + args.crash_after - time.monotonic())):
                crash(args.exit_code, "--crash-after %g" % args.crash_after)
        threading.Thread(target=crash_later, name="crash-after", daemon=True).start()

    log("pid %d, process group %d, CUDA_VISIBLE_DEVICES=%s" % (
        os.getpid(), os.getpgid(0), os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>")))
    log("loading model from %s" % args.model)
    try:
        model = load_model(args.model, read_weights=args.load_weights, log=log)
    except ModelError as e:
        _err(str(e))
        return 1
    log("loaded %d weight file(s) (%s), %d tensors, %d bytes in %.3fs" % (
        len(model.files), model.format, model.tensors, model.tensor_bytes, model.load_seconds))
    # Workers start before the engine listens (as vLLM's do while it loads), so a ready engine
    # always has them.
    workers: List[subprocess.Popen] = []
    engine: Optional[FakeEngine] = None
    try:
        for _ in range(max(0, args.workers)):
            workers.append(subprocess.Popen(
                [sys.executable, "-c", _WORKER, "1" if args.ignore_sigterm else "0"],
                stdin=subprocess.DEVNULL))
        if workers:
            log("started %d worker(s): %s" % (len(workers), " ".join(str(w.pid) for w in workers)))
        try:
            engine = FakeEngine(args.model, args.served_model_name, args.host, args.port,
                                model=model, startup_delay=args.startup_delay,
                                never_ready=args.never_ready,
                                tokens_per_second=args.tokens_per_second,
                                max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len,
                                gpu_memory_utilization=args.gpu_memory_utilization,
                                log_requests=not args.disable_log_requests, started_at=started,
                                crash_hook=lambda code: crash(code, "POST /_fake/crash"),
                                enable_sleep_mode=args.enable_sleep_mode, vllm_dev_mode=dev_mode,
                                memory_saver=args.enable_memory_saver,
                                simulated_gpu_mib=args.simulated_gpu_mib,
                                sleep_leak=args.sleep_leak, sleep_delay=args.sleep_delay,
                                wake_delay=args.wake_delay)
            engine.children = [w.pid for w in workers]
            engine.start()
        except (OSError, OverflowError) as e:
            _err("cannot listen on %s:%d: %s" % (args.host, args.port, e))
            return 1
        log("listening on %s (served model name: %s)" % (engine.url,
                                                          ", ".join(engine.served_model_names)))
        announced = False
        while not stop.wait(0.05 if not announced else 0.5):
            if not announced and engine.ready:
                announced = True
                log("ready: serving %s at %s" % (engine.served_model_names[0], engine.url))
        log("shutting down")
        if args.shutdown_delay > 0:
            deadline = time.monotonic() + args.shutdown_delay
            while time.monotonic() < deadline:
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
    finally:
        if engine is not None:
            engine.stop()
        for w in workers:
            with contextlib.suppress(OSError):
                w.kill()
            w.wait()
    log("stopped")
    return 0


if __name__ == "__main__":
    _rc = main()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    # Skip interpreter teardown: daemon handler threads may still hold stdout or a socket.
    os._exit(_rc)
