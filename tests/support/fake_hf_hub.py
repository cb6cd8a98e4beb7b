#!/usr/bin/python3
"""A fake Hugging Face Hub that speaks the Hub's real HTTP protocol, for tests and benchmarks.

Standard library only. Point a downloader at it with ``HF_ENDPOINT=<hub.url>``.

Protocol served (shapes follow huggingface.co and what ``huggingface_hub`` expects):

* ``GET /api/models/{repo}`` and ``GET /api/models/{repo}/revision/{rev}[?blobs=true]``: model info
  (``id``, ``modelId``, ``sha``, ``private``, ``gated``, ``lastModified``, ``siblings`` ...).
  ``{rev}`` is a branch, a tag, a full 40-hex commit or a ref such as ``refs%2Fpr%2F1``.
* ``GET /api/models/{repo}/tree/{rev}[/{path}][?recursive=true]`` and ``GET /api/models/{repo}/refs``.
* ``GET|HEAD /{repo}/resolve/{rev}/{path}``: small git files are answered ``200`` with
  ``ETag: "<git blob sha1>"`` and ``X-Repo-Commit``; LFS files (by extension, or >= 10 MiB) are
  answered ``302`` to an absolute, signed CDN URL on this same server (``/cdn-lfs/repos/...``)
  with ``X-Linked-Etag: "<sha256>"``, ``X-Linked-Size``, ``X-Repo-Commit`` and ``ETag``.
* The CDN path serves the bytes with single-range ``Range`` support (206 / 416).
* Errors carry ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo),
  ``X-Error-Message`` and a JSON ``{"error": ...}`` body.
* Test controls (not counted in the stats): ``GET /_fake/stats``, ``POST /_fake/stats/reset``,
  ``GET|POST|DELETE /_fake/faults``, ``POST /_fake/reset``, ``GET /_fake/repos``,
  ``GET /_fake/health``.

Library use::

    repos = build_standard_repos(root_dir, big_file_mb=100)   # cached; returns {repo_id: RepoInfo}
    hub = FakeHub(root_dir, token="hf_test_token").start()
    hub.url; hub.commit(TINY_LLAMA, "v1.0"); hub.add_fault(cut_after_bytes=1000, times=1)
    hub.stats(); hub.reset(); hub.stop()

Program use::

    /usr/bin/python3 fake_hf_hub.py --root DIR [--port 0] [--big-file-mb 100] [--ready-file PATH]

prints ``READY http://127.0.0.1:<port>`` once listening and exits cleanly on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import hmac
import json
import math
import mimetypes
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

from threaded_server import QuietServer, ThreadedServer, TrackedHandler

__all__ = [
    "FakeHub", "RepoInfo", "build_standard_repos", "write_repo", "git_blob_sha1", "lfs_pointer",
    "is_lfs_file", "read_safetensors_header", "read_gguf", "TINY_LLAMA", "TINY_GGUF", "BIG_MODEL",
    "GATED_MODEL", "STANDARD_REPOS", "DEFAULT_TOKEN", "FAULT_ACTIONS",
]

TINY_LLAMA = "test-org/tiny-llama"
TINY_GGUF = "test-org/tiny-gguf"
BIG_MODEL = "test-org/big-model"
GATED_MODEL = "test-org/gated-model"
STANDARD_REPOS = (TINY_LLAMA, TINY_GGUF, BIG_MODEL, GATED_MODEL)
DEFAULT_TOKEN = "hf_test_token"

MiB = 1 << 20
LFS_THRESHOLD = 10 * MiB
LFS_EXTENSIONS = frozenset({
    ".safetensors", ".gguf", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".onnx", ".msgpack", ".npz",
    ".npy", ".pkl", ".pickle", ".tflite", ".ot", ".model", ".parquet", ".arrow", ".tar", ".zip",
    ".gz", ".xz", ".zst", ".7z", ".joblib", ".mlmodel", ".pb", ".wasm",
})

_MANIFEST_FORMAT = 1
_STANDARD_VERSION = 1  # bump when the standard repos' content changes: caches regenerate
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
_HEX40 = re.compile(r"^[0-9a-f]{40}$")


# ---------------------------------------------------------------------------------------------
# Content helpers
# ---------------------------------------------------------------------------------------------

def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: sha1(b"blob <len>\\0" + content)."""
    h = hashlib.sha1(b"blob %d\0" % len(data))
    h.update(data)
    return h.hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file git stores in place of an LFS file."""
    return b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (
        sha256.encode(), size)


def is_lfs_file(path: str, size: int) -> bool:
    """Whether the fake stores ``path`` through LFS: binary model extensions, or >= 10 MiB."""
    return os.path.splitext(path)[1].lower() in LFS_EXTENSIONS or size >= LFS_THRESHOLD


def _prng_chunks(seed: str, nbytes: int, chunk: int = MiB) -> Iterator[bytes]:
    """Deterministic pseudo-random bytes; every MiB block is derived from (seed, block index)."""
    seed_b = seed.encode()
    for i in range((nbytes + chunk - 1) // chunk):
        n = min(chunk, nbytes - i * chunk)
        yield hashlib.shake_256(seed_b + b"/%d" % i).digest(n)


# Map the high byte of a little-endian bf16 to a small, finite magnitude (~0.004..0.03), keeping
# the sign: no NaN/Inf in the generated weights.
_BF16_HIGH = bytes(((b & 0x80) | 0x3C | (b & 0x01)) for b in range(256))


def _bf16_chunks(seed: str, nbytes: int) -> Iterator[bytes]:
    for raw in _prng_chunks(seed, nbytes):
        buf = bytearray(raw)
        buf[1::2] = raw[1::2].translate(_BF16_HIGH)
        yield bytes(buf)


_ST_DTYPE_SIZE = {"BF16": 2, "F16": 2, "F32": 4, "F64": 8, "I8": 1, "U8": 1, "I16": 2, "I32": 4,
                  "I64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


class _Generated:
    """A file whose content is produced by a chunk generator (so big files never sit in memory)."""

    def __init__(self, make_chunks: Callable[[], Iterable[bytes]]):
        self.make_chunks = make_chunks


def make_safetensors(tensors: List[Tuple[str, str, List[int], str]],
                     metadata: Optional[Dict[str, str]] = None) -> _Generated:
    """A real safetensors file: u64 LE header length, JSON header (space padded to 8), data.

    ``tensors``: (name, dtype, shape, seed). Data offsets are contiguous, in the given order.
    """
    header: Dict[str, Any] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    plan = []
    for name, dtype, shape, seed in tensors:
        n = _ST_DTYPE_SIZE[dtype] * math.prod(shape)
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        plan.append((dtype, seed, n))
        offset += n
    hbytes = json.dumps(header, separators=(",", ":")).encode()
    hbytes += b" " * (-len(hbytes) % 8)

    def chunks() -> Iterator[bytes]:
        yield struct.pack("<Q", len(hbytes)) + hbytes
        for dtype, seed, n in plan:
            if dtype == "BF16":
                yield from _bf16_chunks(seed, n)
            else:
                yield from _prng_chunks(seed, n)

    return _Generated(chunks)


def read_safetensors_header(path: str) -> Tuple[int, Dict[str, Any]]:
    """(header length, parsed JSON header) of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return n, json.loads(f.read(n))


# ---- GGUF ------------------------------------------------------------------------------------

GGUF_UINT8, GGUF_INT8, GGUF_UINT16, GGUF_INT16, GGUF_UINT32, GGUF_INT32 = 0, 1, 2, 3, 4, 5
GGUF_FLOAT32, GGUF_BOOL, GGUF_STRING, GGUF_ARRAY, GGUF_UINT64, GGUF_INT64, GGUF_FLOAT64 = (
    6, 7, 8, 9, 10, 11, 12)
_GGUF_SCALAR = {GGUF_UINT8: "<B", GGUF_INT8: "<b", GGUF_UINT16: "<H", GGUF_INT16: "<h",
                GGUF_UINT32: "<I", GGUF_INT32: "<i", GGUF_FLOAT32: "<f", GGUF_BOOL: "<?",
                GGUF_UINT64: "<Q", GGUF_INT64: "<q", GGUF_FLOAT64: "<d"}
GGML_TYPE_F32, GGML_TYPE_F16, GGML_TYPE_Q8_0 = 0, 1, 8
_GGML_BLOCK = {GGML_TYPE_F32: (1, 4), GGML_TYPE_F16: (1, 2), GGML_TYPE_Q8_0: (32, 34)}
LLAMA_FTYPE_MOSTLY_Q8_0 = 7


def _gguf_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def _gguf_value(vtype: int, value: Any) -> bytes:
    if vtype == GGUF_STRING:
        return _gguf_str(value)
    if vtype == GGUF_ARRAY:
        etype, items = value
        return struct.pack("<IQ", etype, len(items)) + b"".join(_gguf_value(etype, v) for v in items)
    return struct.pack(_GGUF_SCALAR[vtype], value)


def make_gguf(kvs: List[Tuple[str, int, Any]], tensors: List[Tuple[str, List[int], int, str]],
              alignment: int = 32) -> bytes:
    """A real GGUF v3 file. ``tensors``: (name, dims (ne0 first), ggml type, seed)."""
    out = [b"GGUF", struct.pack("<IQQ", 3, len(tensors), len(kvs))]
    for key, vtype, value in kvs:
        out.append(_gguf_str(key) + struct.pack("<I", vtype) + _gguf_value(vtype, value))
    datas = []
    offset = 0
    for name, dims, gtype, seed in tensors:
        n_el = math.prod(dims)
        block, bsize = _GGML_BLOCK[gtype]
        if gtype == GGML_TYPE_Q8_0:
            raw = b"".join(_prng_chunks(seed, n_el))
            scale = struct.pack("<e", 0.01)
            data = b"".join(scale + raw[i:i + 32] for i in range(0, n_el, 32))
        elif gtype == GGML_TYPE_F32:
            data = struct.pack("<%df" % n_el, *([1.0] * n_el))
        else:
            data = b"".join(_prng_chunks(seed, n_el * bsize))
        assert len(data) == n_el // block * bsize
        out.append(_gguf_str(name) + struct.pack("<I", len(dims))
                   + struct.pack("<%dQ" % len(dims), *dims) + struct.pack("<IQ", gtype, offset))
        pad = -len(data) % alignment
        datas.append(data + b"\0" * pad)
        offset += len(data) + pad
    head = b"".join(out)
    head += b"\0" * (-len(head) % alignment)
    return head + b"".join(datas)


def read_gguf(path: str) -> Dict[str, Any]:
    """Parse a GGUF file's header: version, metadata dict, tensor infos, data offset."""
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        v = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def string() -> str:
        nonlocal pos
        n = take("<Q")
        s = buf[pos:pos + n].decode()
        pos += n
        return s

    def value(vtype: int) -> Any:
        if vtype == GGUF_STRING:
            return string()
        if vtype == GGUF_ARRAY:
            etype, n = take("<I"), take("<Q")
            return [value(etype) for _ in range(n)]
        return take(_GGUF_SCALAR[vtype])

    if buf[:4] != b"GGUF":
        raise ValueError("not a GGUF file")
    pos = 4
    version, n_tensors, n_kv = take("<I"), take("<Q"), take("<Q")
    meta: Dict[str, Any] = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("<I"))
    tensors = []
    for _ in range(n_tensors):
        name = string()
        nd = take("<I")
        dims = [take("<Q") for _ in range(nd)]
        gtype, off = take("<I"), take("<Q")
        tensors.append({"name": name, "dims": dims, "type": gtype, "offset": off})
    align = int(meta.get("general.alignment", 32))
    data_offset = pos + (-pos % align)
    return {"version": version, "tensor_count": n_tensors, "metadata": meta, "tensors": tensors,
            "data_offset": data_offset, "file_size": len(buf)}


# ---------------------------------------------------------------------------------------------
# Repository store: <root>/blobs/<sha256> (content addressed) + <root>/repos/<org>/<name>.json
# ---------------------------------------------------------------------------------------------

FileContent = Union[bytes, str, dict, list, os.PathLike, _Generated, Callable[[], Iterable[bytes]]]


def _chunks_of(content: FileContent) -> Iterator[bytes]:
    if isinstance(content, _Generated):
        yield from content.make_chunks()
    elif isinstance(content, bytes):
        yield content
    elif isinstance(content, str):
        yield content.encode()
    elif isinstance(content, (dict, list)):
        yield (json.dumps(content, indent=2) + "\n").encode()
    elif isinstance(content, os.PathLike):
        with open(content, "rb") as f:
            while True:
                b = f.read(MiB)
                if not b:
                    break
                yield b
    elif callable(content):
        yield from content()
    else:
        raise TypeError("unsupported file content: %r" % type(content))


def _store_blob(root: str, path: str, content: FileContent) -> Dict[str, Any]:
    blobs = os.path.join(root, "blobs")
    os.makedirs(blobs, exist_ok=True)
    tmp = os.path.join(blobs, ".tmp-%d-%d-%s" % (os.getpid(), threading.get_ident(),
                                                 os.urandom(4).hex()))
    h = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as f:
            for chunk in _chunks_of(content):
                h.update(chunk)
                f.write(chunk)
                size += len(chunk)
        sha256 = h.hexdigest()
        final = os.path.join(blobs, sha256)
        if os.path.exists(final) and os.path.getsize(final) == size:
            os.unlink(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    entry: Dict[str, Any] = {"sha256": sha256, "size": size, "lfs": is_lfs_file(path, size)}
    if entry["lfs"]:
        pointer = lfs_pointer(sha256, size)
        entry["blob_id"] = git_blob_sha1(pointer)
        entry["pointer_size"] = len(pointer)
    else:
        with open(final, "rb") as f:
            entry["blob_id"] = git_blob_sha1(f.read())
    return entry


def _manifest_path(root: str, repo_id: str) -> str:
    if not _REPO_ID_RE.match(repo_id) or ".." in repo_id:
        raise ValueError("bad repo id: %r" % repo_id)
    return os.path.join(root, "repos", *repo_id.split("/")) + ".json"


def _write_json_atomic(path: str, obj: Any) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = "%s.tmp-%d-%d" % (path, os.getpid(), threading.get_ident())
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def _commit_derived_info(root: str, files: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Fields the Hub computes per revision: config, safetensors parameters, gguf summary."""
    out: Dict[str, Any] = {}
    blob = lambda e: os.path.join(root, "blobs", e["sha256"])  # noqa: E731
    if "config.json" in files:
        with contextlib.suppress(Exception):
            with open(blob(files["config.json"])) as f:
                cfg = json.load(f)
            out["config"] = {k: cfg[k] for k in ("architectures", "model_type") if k in cfg}
    params: Dict[str, int] = {}
    for path, e in sorted(files.items()):
        if path.endswith(".safetensors"):
            with contextlib.suppress(Exception):
                _, hdr = read_safetensors_header(blob(e))
                for name, t in hdr.items():
                    if name != "__metadata__":
                        params[t["dtype"]] = params.get(t["dtype"], 0) + math.prod(t["shape"])
    if params:
        out["safetensors"] = {"parameters": params, "total": sum(params.values())}
    for path, e in sorted(files.items()):
        if path.endswith(".gguf"):
            with contextlib.suppress(Exception):
                g = read_gguf(blob(e))
                arch = g["metadata"].get("general.architecture")
                out["gguf"] = {"total": sum(math.prod(t["dims"]) for t in g["tensors"]),
                               "architecture": arch,
                               "context_length": g["metadata"].get("%s.context_length" % arch)}
            break
    return out


def write_repo(root_dir: str, repo_id: str, commits: List[Dict[str, Any]], *,
               gated: Union[bool, str] = False, private: bool = False,
               info: Optional[Dict[str, Any]] = None,
               generator: Optional[Dict[str, Any]] = None) -> "RepoInfo":
    """Write a repo (replacing any previous one of that id) into ``root_dir``.

    ``commits`` oldest first; each is a dict with ``files`` (full snapshot: path -> bytes, str,
    dict/list (JSON), path-like, or a callable returning byte chunks), optional ``message``,
    ``branch`` (default "main"; None for a commit only reachable through ``refs``), ``tags``,
    ``refs`` (e.g. ["refs/pr/1"]) and ``date`` (unix time). ``gated``: False, "auto" or "manual"
    (True means "manual"). ``info``: extra model-info fields (library_name, tags, ...).
    """
    if gated is True:
        gated = "manual"
    manifest: Dict[str, Any] = {
        "format": _MANIFEST_FORMAT, "id": repo_id, "gated": gated, "private": bool(private),
        "info": dict(info or {}), "generator": generator, "commits": {}, "history": [],
        "branches": {}, "tags": {}, "refs": {},
    }
    base_date = 1704067200.0  # 2024-01-01T00:00:00Z
    prev: Optional[str] = None
    for i, c in enumerate(commits):
        branch = c.get("branch", "main")
        parent = manifest["branches"].get(branch) if branch else manifest["branches"].get("main")
        if parent is None:
            parent = prev
        files = {p: _store_blob(root_dir, p, content) for p, content in sorted(c["files"].items())}
        date = float(c.get("date", base_date + 86400 * i))
        message = c.get("message", "commit %d" % (i + 1))
        sha = hashlib.sha1(json.dumps({
            "repo": repo_id, "parent": parent, "message": message, "date": date,
            "files": {p: e["sha256"] for p, e in files.items()}}, sort_keys=True).encode()).hexdigest()
        manifest["commits"][sha] = {
            "parent": parent, "message": message, "date": _iso(date), "files": files,
            "derived": _commit_derived_info(root_dir, files)}
        manifest["history"].append(sha)
        if branch:
            manifest["branches"][branch] = sha
        for t in c.get("tags", ()):
            manifest["tags"][t] = sha
        for r in c.get("refs", ()):
            manifest["refs"][r] = sha
        prev = sha
    _write_json_atomic(_manifest_path(root_dir, repo_id), manifest)
    return RepoInfo(root_dir, manifest)


class RepoInfo:
    """One repo as stored: commits, refs, files. ``sha(rev)`` resolves any revision."""

    def __init__(self, root_dir: str, manifest: Dict[str, Any]):
        self.root = root_dir
        self.manifest = manifest
        self.id: str = manifest["id"]
        self.gated: Union[bool, str] = manifest.get("gated") or False
        self.private: bool = bool(manifest.get("private"))
        self.branches: Dict[str, str] = dict(manifest["branches"])
        self.tags: Dict[str, str] = dict(manifest["tags"])
        self.refs: Dict[str, str] = dict(manifest.get("refs", {}))
        self.history: List[str] = list(manifest["history"])  # every commit, oldest first
        self.commits: Dict[str, Dict[str, Any]] = manifest["commits"]
        self.blob_shas = {e["sha256"] for c in self.commits.values() for e in c["files"].values()}

    def __repr__(self) -> str:
        return "RepoInfo(%s, main=%s)" % (self.id, self.branches.get("main"))

    @property
    def main(self) -> str:
        return self.branches["main"]

    def resolve(self, revision: str) -> Optional[str]:
        """Commit sha for a branch, tag, ref (refs/heads/x, refs/tags/x, refs/pr/N) or full sha."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if revision in self.refs:
            return self.refs[revision]
        if revision.startswith("refs/heads/") and revision[11:] in self.branches:
            return self.branches[revision[11:]]
        if revision.startswith("refs/tags/") and revision[10:] in self.tags:
            return self.tags[revision[10:]]
        if _HEX40.match(revision) and revision in self.commits:
            return revision
        return None

    def sha(self, revision: str = "main") -> str:
        sha = self.resolve(revision)
        if sha is None:
            raise KeyError("%s: no revision %r" % (self.id, revision))
        return sha

    def files(self, revision: str = "main") -> Dict[str, Dict[str, Any]]:
        """path -> {"sha256", "size", "lfs", "blob_id"[, "pointer_size"]} at that revision."""
        return self.commits[self.sha(revision)]["files"]

    def file_path(self, path: str, revision: str = "main") -> str:
        """Local path of the bytes the hub serves for ``path`` at ``revision``."""
        return os.path.join(self.root, "blobs", self.files(revision)[path]["sha256"])

    def file_bytes(self, path: str, revision: str = "main") -> bytes:
        with open(self.file_path(path, revision), "rb") as f:
            return f.read()

    def summary(self) -> Dict[str, Any]:
        return {"id": self.id, "gated": self.gated, "private": self.private,
                "branches": self.branches, "tags": self.tags, "refs": self.refs,
                "commits": self.history,
                "files": {rev: sorted(self.files(rev)) for rev in self.branches}}


def load_repo(root_dir: str, repo_id: str) -> Optional[RepoInfo]:
    try:
        with open(_manifest_path(root_dir, repo_id)) as f:
            return RepoInfo(root_dir, json.load(f))
    except (OSError, ValueError):
        return None


def load_all_repos(root_dir: str) -> Dict[str, RepoInfo]:
    out: Dict[str, RepoInfo] = {}
    base = os.path.join(root_dir, "repos")
    for dirpath, _, names in os.walk(base):
        for n in names:
            if n.endswith(".json"):
                rel = os.path.relpath(os.path.join(dirpath, n[:-5]), base).replace(os.sep, "/")
                r = load_repo(root_dir, rel)
                if r is not None:
                    out[r.id] = r
    return out


# ---------------------------------------------------------------------------------------------
# The standard repos
# ---------------------------------------------------------------------------------------------

_GITATTRIBUTES = "".join("*%s filter=lfs diff=lfs merge=lfs -text\n" % e for e in (
    ".7z", ".arrow", ".bin", ".ckpt", ".gguf", ".gz", ".h5", ".model", ".msgpack", ".npy", ".npz",
    ".onnx", ".ot", ".parquet", ".pb", ".pickle", ".pkl", ".pt", ".pth", ".safetensors",
    ".tar", ".tflite", ".xz", ".zip", ".zst"))


def _llama_config(n_layers: int, vocab: int = 32000, hidden: int = 256, inter: int = 512,
                  heads: int = 4, ctx: int = 2048) -> Dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": hidden, "num_hidden_layers": n_layers, "num_attention_heads": heads,
        "num_key_value_heads": heads, "intermediate_size": inter,
        "max_position_embeddings": ctx, "torch_dtype": "bfloat16", "hidden_act": "silu",
        "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.40.0",
    }


def _llama_layer_tensors(repo: str, i: int, hidden: int, inter: int) -> List[Tuple]:
    p = "model.layers.%d." % i
    spec = [("self_attn.q_proj.weight", [hidden, hidden]), ("self_attn.k_proj.weight", [hidden, hidden]),
            ("self_attn.v_proj.weight", [hidden, hidden]), ("self_attn.o_proj.weight", [hidden, hidden]),
            ("mlp.gate_proj.weight", [inter, hidden]), ("mlp.up_proj.weight", [inter, hidden]),
            ("mlp.down_proj.weight", [hidden, inter]), ("input_layernorm.weight", [hidden]),
            ("post_attention_layernorm.weight", [hidden])]
    return [(p + n, "BF16", s, "%s:%s" % (repo, p + n)) for n, s in spec]


def _tiny_llama_snapshot(n_layers: int, readme: Optional[str] = None) -> Dict[str, FileContent]:
    repo, hidden, inter, vocab = TINY_LLAMA, 256, 512, 32000
    embed = ("model.embed_tokens.weight", "BF16", [vocab, hidden], "%s:embed" % repo)
    norm = ("model.norm.weight", "BF16", [hidden], "%s:norm" % repo)
    # Shard 1 holds the embedding and layers 0-1 in every commit (byte-identical across commits);
    # shard 2 holds the remaining layers and the final norm.
    shard1 = [embed] + [t for i in range(min(2, n_layers)) for t in _llama_layer_tensors(repo, i, hidden, inter)]
    shard2 = [t for i in range(2, n_layers) for t in _llama_layer_tensors(repo, i, hidden, inter)] + [norm]
    names = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    weight_map = {t[0]: names[0] for t in shard1}
    weight_map.update({t[0]: names[1] for t in shard2})
    total = sum(_ST_DTYPE_SIZE[t[1]] * math.prod(t[2]) for t in shard1 + shard2)
    vocab_list = ["<unk>", "<s>", "</s>"] + ["tok%d" % i for i in range(3, vocab)]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": i, "content": t, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}
                         for i, t in enumerate(vocab_list[:3])],
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {t: i for i, t in enumerate(vocab_list)},
                  "unk_token": "<unk>"},
    }
    files: Dict[str, FileContent] = {
        ".gitattributes": _GITATTRIBUTES,
        "config.json": _llama_config(n_layers, vocab, hidden, inter),
        "generation_config.json": {"_from_model_config": True, "bos_token_id": 1,
                                   "eos_token_id": 2, "transformers_version": "4.40.0"},
        "tokenizer.json": json.dumps(tokenizer, separators=(",", ":")),
        "tokenizer_config.json": {
            "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
            "unk_token": "<unk>", "model_max_length": 2048, "clean_up_tokenization_spaces": False,
            "tokenizer_class": "PreTrainedTokenizerFast",
            "chat_template": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"},
        "special_tokens_map.json": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
        names[0]: make_safetensors(shard1),
        names[1]: make_safetensors(shard2),
        "model.safetensors.index.json": {"metadata": {"total_size": total}, "weight_map": weight_map},
    }
    if readme is not None:
        files["README.md"] = readme
    return files


def _build_tiny_llama(root: str, gen: Dict[str, Any]) -> RepoInfo:
    readme = ("---\nlicense: apache-2.0\nlibrary_name: transformers\npipeline_tag: text-generation\n"
              "---\n# tiny-llama\n\nA tiny random Llama for tests.\n")
    return write_repo(root, TINY_LLAMA, [
        {"files": _tiny_llama_snapshot(2), "message": "Initial commit (2 layers)", "tags": ["v1.0"]},
        {"files": _tiny_llama_snapshot(4), "message": "Grow to 4 layers"},
        {"files": _tiny_llama_snapshot(4, readme), "message": "Add model card", "branch": None,
         "refs": ["refs/pr/1"]},
    ], info={"library_name": "transformers", "pipeline_tag": "text-generation",
             "tags": ["transformers", "safetensors", "llama", "text-generation"]}, generator=gen)


def _build_tiny_gguf(root: str, gen: Dict[str, Any]) -> RepoInfo:
    n_vocab, hidden, inter, n_layers = 100, 256, 512, 4
    tokens = ["<unk>", "<s>", "</s>"] + ["tok%d" % i for i in range(3, n_vocab)]
    kvs = [
        ("general.architecture", GGUF_STRING, "llama"),
        ("general.name", GGUF_STRING, "tiny-gguf"),
        ("general.file_type", GGUF_UINT32, LLAMA_FTYPE_MOSTLY_Q8_0),
        ("general.quantization_version", GGUF_UINT32, 2),
        ("general.alignment", GGUF_UINT32, 32),
        ("llama.context_length", GGUF_UINT32, 2048),
        ("llama.embedding_length", GGUF_UINT32, hidden),
        ("llama.block_count", GGUF_UINT32, n_layers),
        ("llama.feed_forward_length", GGUF_UINT32, inter),
        ("llama.attention.head_count", GGUF_UINT32, 4),
        ("llama.attention.head_count_kv", GGUF_UINT32, 4),
        ("llama.attention.layer_norm_rms_epsilon", GGUF_FLOAT32, 1e-5),
        ("llama.rope.dimension_count", GGUF_UINT32, hidden // 4),
        ("llama.vocab_size", GGUF_UINT32, n_vocab),
        ("tokenizer.ggml.model", GGUF_STRING, "llama"),
        ("tokenizer.ggml.tokens", GGUF_ARRAY, (GGUF_STRING, tokens)),
        ("tokenizer.ggml.scores", GGUF_ARRAY, (GGUF_FLOAT32, [0.0] * n_vocab)),
        ("tokenizer.ggml.token_type", GGUF_ARRAY, (GGUF_INT32, [2, 3, 3] + [1] * (n_vocab - 3))),
        ("tokenizer.ggml.bos_token_id", GGUF_UINT32, 1),
        ("tokenizer.ggml.eos_token_id", GGUF_UINT32, 2),
    ]
    s = "%s:" % TINY_GGUF
    tensors = [("token_embd.weight", [hidden, n_vocab], GGML_TYPE_Q8_0, s + "embd")]
    for i in range(n_layers):
        b = "blk.%d." % i
        tensors += [(b + "attn_norm.weight", [hidden], GGML_TYPE_F32, s + b + "an"),
                    (b + "attn_q.weight", [hidden, hidden], GGML_TYPE_Q8_0, s + b + "q"),
                    (b + "attn_k.weight", [hidden, hidden], GGML_TYPE_Q8_0, s + b + "k"),
                    (b + "attn_v.weight", [hidden, hidden], GGML_TYPE_Q8_0, s + b + "v"),
                    (b + "attn_output.weight", [hidden, hidden], GGML_TYPE_Q8_0, s + b + "o"),
                    (b + "ffn_norm.weight", [hidden], GGML_TYPE_F32, s + b + "fn"),
                    (b + "ffn_gate.weight", [hidden, inter], GGML_TYPE_Q8_0, s + b + "g"),
                    (b + "ffn_up.weight", [hidden, inter], GGML_TYPE_Q8_0, s + b + "u"),
                    (b + "ffn_down.weight", [inter, hidden], GGML_TYPE_Q8_0, s + b + "d")]
    tensors.append(("output_norm.weight", [hidden], GGML_TYPE_F32, s + "on"))
    readme = ("---\nlicense: apache-2.0\nlibrary_name: gguf\ntags:\n- gguf\n---\n"
              "# tiny-gguf\n\nA tiny random Llama in GGUF (Q8_0) for tests.\n")
    return write_repo(root, TINY_GGUF, [{"files": {
        ".gitattributes": _GITATTRIBUTES, "README.md": readme,
        "tiny.Q8_0.gguf": make_gguf(kvs, tensors)}, "message": "Add tiny GGUF"}],
        info={"library_name": "gguf", "pipeline_tag": "text-generation",
              "tags": ["gguf", "llama", "text-generation"]}, generator=gen)


def _build_big_model(root: str, gen: Dict[str, Any], big_file_mb: int) -> RepoInfo:
    hidden = 4096
    rows = max(1, big_file_mb) * MiB // (2 * hidden)  # bf16 rows: exactly big_file_mb MiB of data
    cfg = _llama_config(0, vocab=rows, hidden=hidden, inter=4 * hidden, heads=32)
    st = make_safetensors([("model.embed_tokens.weight", "BF16", [rows, hidden], "%s:embed" % BIG_MODEL),
                           ("model.norm.weight", "BF16", [hidden], "%s:norm" % BIG_MODEL)])
    return write_repo(root, BIG_MODEL, [{"files": {
        ".gitattributes": _GITATTRIBUTES, "config.json": cfg, "model.safetensors": st},
        "message": "Add big model"}],
        info={"library_name": "transformers", "tags": ["transformers", "safetensors", "llama"]},
        generator=gen)


def _build_gated_model(root: str, gen: Dict[str, Any]) -> RepoInfo:
    cfg = _llama_config(1, vocab=1000, hidden=64, inter=128, heads=2, ctx=512)
    tensors = [("model.embed_tokens.weight", "BF16", [1000, 64], "%s:embed" % GATED_MODEL)]
    tensors += _llama_layer_tensors(GATED_MODEL, 0, 64, 128)
    tensors.append(("model.norm.weight", "BF16", [64], "%s:norm" % GATED_MODEL))
    readme = ("---\nlicense: other\nextra_gated_prompt: You agree to use this model for tests only.\n"
              "---\n# gated-model\n")
    return write_repo(root, GATED_MODEL, [{"files": {
        ".gitattributes": _GITATTRIBUTES, "README.md": readme, "config.json": cfg,
        "model.safetensors": make_safetensors(tensors)}, "message": "Add gated model"}],
        gated="manual", info={"library_name": "transformers", "tags": ["transformers", "llama"]},
        generator=gen)


def _repo_intact(root: str, repo: Optional[RepoInfo], gen: Dict[str, Any]) -> bool:
    if repo is None or repo.manifest.get("generator") != gen:
        return False
    for c in repo.commits.values():
        for e in c["files"].values():
            p = os.path.join(root, "blobs", e["sha256"])
            try:
                if os.path.getsize(p) != e["size"]:
                    return False
            except OSError:
                return False
    return True


def build_standard_repos(root_dir: str, big_file_mb: int = 100) -> Dict[str, RepoInfo]:
    """Generate (or reuse, when already there and intact) the standard repos under ``root_dir``.

    Returns {repo_id: RepoInfo}: ``repos[TINY_LLAMA].sha("main")``, ``.sha("v1.0")``,
    ``.sha("refs/pr/1")``, ``.history`` (all commits, oldest first).
    """
    root_dir = os.path.abspath(root_dir)
    os.makedirs(root_dir, exist_ok=True)
    builders = {
        TINY_LLAMA: lambda g: _build_tiny_llama(root_dir, g),
        TINY_GGUF: lambda g: _build_tiny_gguf(root_dir, g),
        BIG_MODEL: lambda g: _build_big_model(root_dir, g, big_file_mb),
        GATED_MODEL: lambda g: _build_gated_model(root_dir, g),
    }
    out: Dict[str, RepoInfo] = {}
    with open(os.path.join(root_dir, ".build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for repo_id, build in builders.items():
            gen = {"standard": _STANDARD_VERSION}
            if repo_id == BIG_MODEL:
                gen["big_file_mb"] = big_file_mb
            repo = load_repo(root_dir, repo_id)
            out[repo_id] = repo if _repo_intact(root_dir, repo, gen) else build(gen)
    return out


# ---------------------------------------------------------------------------------------------
# Faults and stats
# ---------------------------------------------------------------------------------------------

FAULT_ACTIONS = ("cut_after_bytes", "flip_byte_at", "delay_ms_per_mb", "rate_limit_bytes_per_s",
                 "fail_status", "delay_ms")
_FAULT_SCOPE = ("path", "times", "kinds", "method", "retry_after")
_BODY_FAULTS = ("cut_after_bytes", "flip_byte_at", "delay_ms_per_mb", "rate_limit_bytes_per_s")


class _Fault:
    _ids = 0

    def __init__(self, action: str, value: int, path: Optional[str], times: Optional[int],
                 kinds: Optional[List[str]], method: Optional[str], retry_after: Optional[int]):
        _Fault._ids += 1
        self.id = _Fault._ids
        self.action, self.value, self.path = action, value, path
        self.remaining = times
        self.times = times
        self.kinds = set(kinds) if kinds else None
        self.method = method.upper() if method else None
        self.retry_after = retry_after
        self.fired = 0

    def matches(self, method: str, kind: str, keys: Tuple[str, ...]) -> bool:
        if self.remaining is not None and self.remaining <= 0:
            return False
        if self.kinds is not None and kind not in self.kinds:
            return False
        if self.method is not None and self.method != method:
            return False
        return self.path is None or any(self.path in k for k in keys if k)

    def describe(self) -> Dict[str, Any]:
        return {"id": self.id, self.action: self.value, "path": self.path, "times": self.times,
                "remaining": self.remaining, "fired": self.fired,
                "kinds": sorted(self.kinds) if self.kinds else None, "method": self.method}


def _parse_faults(spec: Any) -> List[Dict[str, Any]]:
    """Normalise a fault spec (object, list, or {"faults": [...]}) into one dict per action."""
    if isinstance(spec, dict) and "faults" in spec:
        spec = spec["faults"]
    items = spec if isinstance(spec, list) else [spec]
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("a fault is a JSON object")
        unknown = set(item) - set(FAULT_ACTIONS) - set(_FAULT_SCOPE)
        if unknown:
            raise ValueError("unknown fault keys: %s" % sorted(unknown))
        actions = [a for a in FAULT_ACTIONS if item.get(a) is not None]
        if not actions:
            raise ValueError("a fault needs one of %s" % (FAULT_ACTIONS,))
        scope = {k: item.get(k) for k in _FAULT_SCOPE}
        if isinstance(scope["kinds"], str):
            scope["kinds"] = [scope["kinds"]]
        for a in actions:
            v = item[a]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise ValueError("%s must be a non-negative number" % a)
            if scope["times"] is not None and (not isinstance(scope["times"], int) or scope["times"] < 0):
                raise ValueError("times must be a non-negative integer or null")
            out.append(dict(scope, action=a, value=v))
    return out


class _Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", contextlib.nullcontext()):
            self.requests_total = 0
            self.requests: Dict[str, int] = {}
            self.requests_by_method: Dict[str, int] = {}
            self.status_counts: Dict[str, int] = {}
            self.bytes_sent = 0
            self.file_bytes_sent = 0
            self.bytes_per_file: Dict[str, int] = {}
            self.requests_per_file: Dict[str, int] = {}
            self.ranges: List[Dict[str, Any]] = []
            self.faults_fired: Dict[str, int] = {}
            self.log: List[Dict[str, Any]] = []

    def snapshot(self) -> Dict[str, Any]:
        with self.lock:
            return json.loads(json.dumps({
                "requests_total": self.requests_total, "requests": self.requests,
                "requests_by_method": self.requests_by_method, "status_counts": self.status_counts,
                "bytes_sent": self.bytes_sent, "file_bytes_sent": self.file_bytes_sent,
                "bytes_per_file": self.bytes_per_file, "requests_per_file": self.requests_per_file,
                "ranges": self.ranges, "faults_fired": self.faults_fired, "log": self.log}))


# ---------------------------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------------------------

class _HubError(Exception):
    def __init__(self, status: int, code: Optional[str], message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


_Server = QuietServer


class _Handler(TrackedHandler):
    server_version = "FakeHFHub/1.0"
    hub: "FakeHub"  # set on the per-hub subclass

    def log_message(self, fmt, *args):
        if self.hub.verbose:
            sys.stderr.write("fake_hf_hub: %s - %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self.hub._dispatch(self, "GET")

    def do_HEAD(self):
        self.hub._dispatch(self, "HEAD")

    def do_POST(self):
        self.hub._dispatch(self, "POST")

    def do_DELETE(self):
        self.hub._dispatch(self, "DELETE")

    def do_PUT(self):
        self.hub._dispatch(self, "PUT")


class _Ctx:
    """Per-request bookkeeping."""

    def __init__(self, method: str, path: str, kind: str):
        self.method, self.path, self.kind = method, path, kind
        self.status = 0
        self.body_bytes = 0
        self.file_key: Optional[str] = None
        self.range: Optional[str] = None


_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_UNSATISFIABLE = "unsatisfiable"


def _parse_range(header: str, size: int):
    """(start, end_exclusive), _UNSATISFIABLE, or None (ignore the header: serve 200)."""
    m = _RANGE_RE.match(header)
    if not m or (not m.group(1) and not m.group(2)):
        return None  # multi-range or malformed: ignoring Range is allowed (RFC 9110 14.2)
    if m.group(1):
        start = int(m.group(1))
        if m.group(2) and int(m.group(2)) < start:
            return None
        if start >= size:
            return _UNSATISFIABLE
        end = min(int(m.group(2)) + 1, size) if m.group(2) else size
        return start, end
    suffix = int(m.group(2))
    if suffix == 0 or size == 0:
        return _UNSATISFIABLE
    return max(0, size - suffix), size


class FakeHub(ThreadedServer):
    """The fake Hub server. ``FakeHub(root_dir, token=...).start()``; ``.url``; ``.stop()``.

    ``token``: the one token that opens gated/private repos. ``gate_api``: also refuse the
    model-info API of gated repos without access (the real Hub lists gated repos' files publicly
    and gates only the file downloads; that is the default here). ``build``: run
    ``build_standard_repos(root_dir, big_file_mb)`` first. ``cdn_url_ttl_s``: lifetime of signed
    CDN URLs.
    """

    _thread_name = "fake-hf-hub"
    _poll_interval = 0.1

    def __init__(self, root_dir: str, token: str = DEFAULT_TOKEN, *, host: str = "127.0.0.1",
                 port: int = 0, build: bool = False, big_file_mb: int = 100,
                 gate_api: bool = False, cdn_url_ttl_s: int = 3600, verbose: bool = False):
        self.root = os.path.abspath(root_dir)
        self.token = token
        self.host, self._port_req = host, port
        self.gate_api = gate_api
        self.cdn_url_ttl_s = cdn_url_ttl_s
        self.verbose = verbose
        self._secret = os.urandom(32)
        self._lock = threading.Lock()
        self._faults: List[_Fault] = []
        self._stats = _Stats()
        self._conns: set = set()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        if build:
            build_standard_repos(self.root, big_file_mb)
        self._repos: Dict[str, RepoInfo] = load_all_repos(self.root)

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "FakeHub":
        handler = type("_BoundHandler", (_Handler,), {"hub": self, "owner": self})
        self._start_server(_Server((self.host, self._port_req), handler))
        return self

    # ---- repos -------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read every manifest under root (after writing repos while running)."""
        repos = load_all_repos(self.root)
        with self._lock:
            self._repos = repos

    def add_repo(self, repo_id: str, commits: List[Dict[str, Any]], **kw) -> RepoInfo:
        """``write_repo`` into this hub's root and serve it."""
        info = write_repo(self.root, repo_id, commits, **kw)
        with self._lock:
            self._repos[repo_id] = info
        return info

    def repo(self, repo_id: str) -> RepoInfo:
        r = self._get_repo(repo_id)
        if r is None:
            raise KeyError(repo_id)
        return r

    def repos(self) -> Dict[str, RepoInfo]:
        with self._lock:
            return dict(self._repos)

    def commit(self, repo_id: str, revision: str = "main") -> str:
        """Full commit sha of ``revision`` (branch, tag, ref or sha) in ``repo_id``."""
        return self.repo(repo_id).sha(revision)

    def _get_repo(self, repo_id: str) -> Optional[RepoInfo]:
        with self._lock:
            r = self._repos.get(repo_id)
        if r is None and _REPO_ID_RE.match(repo_id) and ".." not in repo_id:
            r = load_repo(self.root, repo_id)  # written after start: pick it up
            if r is not None:
                with self._lock:
                    self._repos[repo_id] = r
        return r

    # ---- faults and stats ----------------------------------------------------------------------

    def add_fault(self, spec: Any = None, **kw) -> List[int]:
        """Add fault rules; returns their ids. ``add_fault(cut_after_bytes=1000, times=1,
        path="model.safetensors")`` or ``add_fault({...})`` / ``add_fault([{...}, ...])``.

        Actions: cut_after_bytes=N (close the connection after N body bytes of a file response
        longer than N), flip_byte_at=K (XOR 0xFF the byte at file offset K when the response
        covers it), delay_ms_per_mb=D, rate_limit_bytes_per_s=R (slow file bodies), fail_status=S
        (answer S with a JSON error; optional retry_after seconds), delay_ms=D (latency before
        any answer). Scope: path (substring of the decoded request path or of
        "org/repo/filename"), kinds (["api","resolve","cdn","other"]), method ("GET"/"HEAD").
        times=N fires N times then stops; omitted/None = every time until cleared.
        """
        if spec is None:
            spec = kw
        elif kw:
            raise TypeError("pass a spec or keywords, not both")
        parsed = _parse_faults(spec)
        with self._lock:
            new = [_Fault(p["action"], p["value"], p["path"], p["times"], p["kinds"],
                          p["method"], p["retry_after"]) for p in parsed]
            self._faults.extend(new)
        return [f.id for f in new]

    set_fault = add_fault

    def faults(self) -> List[Dict[str, Any]]:
        with self._lock:
            return [f.describe() for f in self._faults]

    def clear_faults(self) -> None:
        with self._lock:
            self._faults = []

    def stats(self) -> Dict[str, Any]:
        """Counters since the last reset (control requests under /_fake/ are not counted)."""
        return self._stats.snapshot()

    def reset_stats(self) -> None:
        self._stats.reset()

    def reset(self) -> None:
        """Clear faults and stats."""
        self.clear_faults()
        self.reset_stats()

    def _take_faults(self, action: str, ctx: _Ctx, keys: Tuple[str, ...],
                     pred: Callable[[_Fault], bool] = lambda f: True,
                     first_only: bool = False) -> List[_Fault]:
        taken = []
        with self._lock:
            for f in self._faults:
                if f.action == action and f.matches(ctx.method, ctx.kind, keys) and pred(f):
                    if f.remaining is not None:
                        f.remaining -= 1
                    f.fired += 1
                    taken.append(f)
                    if first_only:
                        break
        if taken:
            with self._stats.lock:
                self._stats.faults_fired[action] = self._stats.faults_fired.get(action, 0) + len(taken)
        return taken

    # ---- request handling ----------------------------------------------------------------------

    def _dispatch(self, h: _Handler, method: str) -> None:
        split = urllib.parse.urlsplit(h.path)
        raw_path = split.path
        segs = raw_path.split("/")[1:]
        if segs and segs[0] == "_fake":
            try:
                self._control(h, method, segs[1:], split.query)
            except ValueError as e:
                self._send_json(h, None, 400, {"error": str(e)})
            return
        if segs and segs[0] == "api":
            kind = "api"
        elif segs and segs[0] == "cdn-lfs":
            kind = "cdn"
        elif "resolve" in segs[1:3]:
            kind = "resolve"
        else:
            kind = "other"
        decoded = urllib.parse.unquote(raw_path)
        ctx = _Ctx(method, decoded, kind)
        ctx.range = h.headers.get("Range")
        st = self._stats
        with st.lock:
            st.requests_total += 1
            st.requests[kind] = st.requests.get(kind, 0) + 1
            st.requests_by_method[method] = st.requests_by_method.get(method, 0) + 1
        # Drain a request body so keep-alive stays in sync.
        n = int(h.headers.get("Content-Length") or 0)
        if n:
            h.rfile.read(n)
        try:
            keys = (decoded,)
            for f in self._take_faults("delay_ms", ctx, keys):
                time.sleep(f.value / 1000.0)
            if method not in ("GET", "HEAD"):
                raise _HubError(405, None, "Method not allowed")
            if kind == "api":
                self._api(h, ctx, segs[1:], split.query)
            elif kind == "resolve":
                self._resolve(h, ctx, segs)
            elif kind == "cdn":
                self._cdn(h, ctx, segs[1:], split.query)
            else:
                self._fail_status_fault(ctx, keys)
                raise _HubError(404, None, "Not Found")
        except _HubError as e:
            self._send_error(h, ctx, e)
        except (ConnectionError, TimeoutError):
            h.close_connection = True
        except Exception as e:  # a bug here: answer 500 rather than drop the connection
            import traceback
            traceback.print_exc()
            h.close_connection = True
            if ctx.status == 0:
                with contextlib.suppress(Exception):
                    self._send_json(h, ctx, 500, {"error": "fake hub internal error: %r" % e})
        finally:
            with st.lock:
                sc = str(ctx.status)
                st.status_counts[sc] = st.status_counts.get(sc, 0) + 1
                if ctx.range is not None:
                    st.ranges.append({"file": ctx.file_key, "kind": kind, "range": ctx.range,
                                      "method": method, "status": ctx.status})
                st.log.append({"method": method, "path": decoded, "kind": kind,
                               "status": ctx.status, "range": ctx.range,
                               "file": ctx.file_key, "bytes": ctx.body_bytes})
                if len(st.log) > 2000:
                    del st.log[:len(st.log) - 2000]

    def _fail_status_fault(self, ctx: _Ctx, keys: Tuple[str, ...]) -> None:
        taken = self._take_faults("fail_status", ctx, keys, first_only=True)
        if taken:
            f = taken[0]
            err = _HubError(int(f.value), None, "Injected failure (fake hub fault %d)" % f.id)
            err.retry_after = f.retry_after  # type: ignore[attr-defined]
            raise err

    # ---- responses -----------------------------------------------------------------------------

    def _count_body(self, ctx: _Ctx, n: int, file_body: bool) -> None:
        ctx.body_bytes += n
        st = self._stats
        with st.lock:
            st.bytes_sent += n
            if file_body and ctx.file_key:
                st.file_bytes_sent += n
                st.bytes_per_file[ctx.file_key] = st.bytes_per_file.get(ctx.file_key, 0) + n

    def _send_head(self, h: _Handler, ctx: Optional[_Ctx], status: int,
                   headers: List[Tuple[str, str]], length: int) -> None:
        if ctx is not None:
            ctx.status = status
        h.send_response(status)
        for k, v in headers:
            h.send_header(k, v)
        h.send_header("Content-Length", str(length))
        h.end_headers()

    def _send_bytes(self, h: _Handler, ctx: Optional[_Ctx], status: int,
                    headers: List[Tuple[str, str]], body: bytes) -> None:
        self._send_head(h, ctx, status, headers, len(body))
        if h.command != "HEAD" and body:
            h.wfile.write(body)
            if ctx is not None:
                self._count_body(ctx, len(body), False)

    def _send_json(self, h: _Handler, ctx: Optional[_Ctx], status: int, obj: Any,
                   headers: Optional[List[Tuple[str, str]]] = None) -> None:
        body = json.dumps(obj).encode()
        self._send_bytes(h, ctx, status, [("Content-Type", "application/json; charset=utf-8")]
                         + list(headers or []), body)

    def _send_error(self, h: _Handler, ctx: _Ctx, e: _HubError) -> None:
        safe = re.sub(r"[\x00-\x1f\x7f]", " ", e.message).encode("ascii", "replace").decode()
        headers = [("X-Error-Message", safe)]
        if e.code:
            headers.insert(0, ("X-Error-Code", e.code))
        ra = getattr(e, "retry_after", None)
        if ra is not None:
            headers.append(("Retry-After", str(int(ra))))
        self._send_json(h, ctx, e.status, {"error": e.message}, headers)

    # ---- repo lookup and access ------------------------------------------------------------------

    def _bearer(self, h: _Handler) -> Optional[str]:
        auth = h.headers.get("Authorization") or ""
        if auth[:7].lower() == "bearer ":
            return auth[7:].strip() or None
        return None

    def _find_repo(self, segs: List[str], marker: Optional[str]) -> Tuple[str, Optional[RepoInfo], List[str]]:
        """Split segments into (repo id, repo, rest). ``marker``: segment that follows the id."""
        cands = []
        if len(segs) >= 2:
            cands.append(2)
        if segs:
            cands.append(1)
        for n in cands:
            if marker is not None and (len(segs) <= n or segs[n] != marker):
                continue
            rid = "/".join(urllib.parse.unquote(s) for s in segs[:n])
            r = self._get_repo(rid)
            if r is not None:
                return rid, r, segs[n:]
        n = 2 if len(segs) >= 2 and (marker is None or segs[1] != marker) else 1
        return "/".join(urllib.parse.unquote(s) for s in segs[:n]), None, segs[n:]

    def _check_access(self, h: _Handler, rid: str, repo: Optional[RepoInfo], content: bool) -> None:
        token = self._bearer(h)
        if repo is None or (repo.private and token != self.token):
            raise _HubError(401 if token is None else 404, "RepoNotFound", "Repository not found")
        if repo.gated and content and token != self.token:
            if token is None:
                raise _HubError(401, "GatedRepo",
                                "Access to model %s is restricted. You must have access to it and "
                                "be authenticated to access it. Please log in." % rid)
            raise _HubError(403, "GatedRepo",
                            "Access to model %s is restricted and you are not in the authorized "
                            "list. Visit %s/%s to ask for access." % (rid, self._base(h), rid))

    def _revision(self, repo: RepoInfo, raw_segs: List[str], max_parts: int = 4) -> Tuple[str, List[str]]:
        """Resolve the revision at the start of ``raw_segs`` (encoded or raw slashes)."""
        if not raw_segs or raw_segs[0] == "":
            raise _HubError(404, "RevisionNotFound", "Invalid rev id: ")
        for n in range(1, min(max_parts, len(raw_segs)) + 1):
            rev = urllib.parse.unquote("/".join(raw_segs[:n]))
            sha = repo.resolve(rev)
            if sha is not None:
                return sha, raw_segs[n:]
        raise _HubError(404, "RevisionNotFound",
                        "Invalid rev id: %s" % urllib.parse.unquote(raw_segs[0]))

    def _base(self, h: _Handler) -> str:
        host = h.headers.get("Host") or "%s:%d" % (self.host, self.port)
        return "http://" + host

    # ---- /api ----------------------------------------------------------------------------------

    def _api(self, h: _Handler, ctx: _Ctx, segs: List[str], query: str) -> None:
        if not segs or segs[0] != "models":
            self._fail_status_fault(ctx, (ctx.path,))
            raise _HubError(404, None, "Not Found")
        segs = [s for s in segs[1:]]
        while segs and segs[-1] == "" and len(segs) > 2:
            segs.pop()
        # The repo id is 1 or 2 segments, followed by nothing, "revision", "tree" or "refs".
        rid, repo, rest = None, None, []
        for n in (2, 1):
            if len(segs) >= n:
                cand = "/".join(urllib.parse.unquote(s) for s in segs[:n])
                r = self._get_repo(cand)
                if r is not None:
                    rid, repo, rest = cand, r, segs[n:]
                    break
        if repo is None:
            rid = "/".join(urllib.parse.unquote(s) for s in segs[:2])
            rest = segs[2:]
        keys = (ctx.path, rid)
        self._fail_status_fault(ctx, keys)
        self._check_access(h, rid, repo, content=self.gate_api)
        q = urllib.parse.parse_qs(query)
        truthy = lambda k: (q.get(k, ["false"])[-1].lower() in ("1", "true", "yes"))  # noqa: E731
        if not rest or rest == [""]:
            self._send_json(h, ctx, 200, self._model_info(repo, repo.main, truthy("blobs")))
        elif rest[0] == "revision":
            sha, extra = self._revision(repo, rest[1:], max_parts=len(rest) - 1)
            if extra and extra != [""]:
                raise _HubError(404, "RevisionNotFound",
                                "Invalid rev id: %s" % urllib.parse.unquote("/".join(rest[1:])))
            self._send_json(h, ctx, 200, self._model_info(repo, sha, truthy("blobs")),
                            [("X-Repo-Commit", sha)])
        elif rest[0] == "tree":
            sha, sub = self._revision(repo, rest[1:])
            prefix = urllib.parse.unquote("/".join(sub)).strip("/")
            self._send_json(h, ctx, 200, self._tree(repo, sha, prefix, truthy("recursive")),
                            [("X-Repo-Commit", sha)])
        elif rest == ["refs"]:
            self._send_json(h, ctx, 200, self._refs(repo, truthy("include_prs")))
        else:
            raise _HubError(404, None, "Not Found")

    def _model_info(self, repo: RepoInfo, sha: str, blobs: bool) -> Dict[str, Any]:
        commit = repo.commits[sha]
        siblings = []
        for path, e in sorted(commit["files"].items()):
            s: Dict[str, Any] = {"rfilename": path}
            if blobs:
                s["blobId"] = e["blob_id"]
                s["size"] = e["size"]
                if e["lfs"]:
                    s["lfs"] = {"sha256": e["sha256"], "size": e["size"],
                                "pointerSize": e["pointer_size"]}
            siblings.append(s)
        first = repo.commits[repo.history[0]]
        info: Dict[str, Any] = {
            "_id": hashlib.sha1(repo.id.encode()).hexdigest()[:24],
            "id": repo.id, "modelId": repo.id, "author": repo.id.split("/")[0] if "/" in repo.id else None,
            "sha": sha, "lastModified": commit["date"], "createdAt": first["date"],
            "private": repo.private, "disabled": False, "gated": repo.gated,
            "downloads": 0, "likes": 0, "tags": [], "siblings": siblings, "spaces": [],
            "usedStorage": sum(e["size"] for e in commit["files"].values()),
        }
        info.update(repo.manifest.get("info") or {})
        info.update(commit.get("derived") or {})
        return info

    def _tree(self, repo: RepoInfo, sha: str, prefix: str, recursive: bool) -> List[Dict[str, Any]]:
        files = repo.commits[sha]["files"]
        pre = prefix + "/" if prefix else ""
        if prefix and not any(p.startswith(pre) for p in files):
            raise _HubError(404, "EntryNotFound", "%s does not exist on \"%s\"" % (prefix, sha))
        out, dirs = [], set()
        for path, e in sorted(files.items()):
            if not path.startswith(pre):
                continue
            rest = path[len(pre):]
            if "/" in rest and not recursive:
                dirs.add(pre + rest.split("/")[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    dirs.add(pre + "/".join(parts[:i]))
            item: Dict[str, Any] = {"type": "file", "oid": e["blob_id"], "size": e["size"], "path": path}
            if e["lfs"]:
                item["lfs"] = {"oid": e["sha256"], "size": e["size"], "pointerSize": e["pointer_size"]}
            out.append(item)
        for d in sorted(dirs):
            out.append({"type": "directory", "oid": hashlib.sha1(("%s:%s" % (sha, d)).encode()).hexdigest(),
                        "size": 0, "path": d})
        return sorted(out, key=lambda x: x["path"])

    def _refs(self, repo: RepoInfo, prs: bool) -> Dict[str, Any]:
        out: Dict[str, Any] = {
            "branches": [{"name": b, "ref": "refs/heads/" + b, "targetCommit": s}
                         for b, s in sorted(repo.branches.items())],
            "converts": [],
            "tags": [{"name": t, "ref": "refs/tags/" + t, "targetCommit": s}
                     for t, s in sorted(repo.tags.items())],
        }
        if prs:
            out["pullRequests"] = [{"name": r, "ref": r, "targetCommit": s}
                                   for r, s in sorted(repo.refs.items()) if r.startswith("refs/pr/")]
        return out

    # ---- /{repo}/resolve/{rev}/{path} -------------------------------------------------------------

    def _resolve(self, h: _Handler, ctx: _Ctx, segs: List[str]) -> None:
        rid, repo, rest = self._find_repo(segs, "resolve")
        rest = rest[1:]  # drop "resolve"
        path_guess = urllib.parse.unquote("/".join(rest[1:]))
        ctx.file_key = "%s/%s" % (rid, path_guess)
        keys = (ctx.path, ctx.file_key)
        self._fail_status_fault(ctx, keys)
        self._check_access(h, rid, repo, content=True)
        sha, path_segs = self._revision(repo, rest)
        path = urllib.parse.unquote("/".join(path_segs))
        ctx.file_key = "%s/%s" % (rid, path)
        entry = repo.commits[sha]["files"].get(path)
        if entry is None:
            raise _HubError(404, "EntryNotFound", "Entry not found")
        with self._stats.lock:
            st = self._stats
            st.requests_per_file[ctx.file_key] = st.requests_per_file.get(ctx.file_key, 0) + 1
        common = [("X-Repo-Commit", sha), ("Accept-Ranges", "bytes"),
                  ("Access-Control-Expose-Headers",
                   "X-Repo-Commit,X-Linked-Etag,X-Linked-Size,X-Error-Code,X-Error-Message,ETag,"
                   "Content-Range,Accept-Ranges,Location")]
        if entry["lfs"]:
            location = self._cdn_url(h, repo, entry["sha256"], path)
            body = ("Found. Redirecting to %s" % location).encode()
            self._send_bytes(h, ctx, 302, [
                ("Content-Type", "text/plain; charset=utf-8"), ("Location", location),
                ("ETag", '"%s"' % entry["blob_id"]),
                ("X-Linked-Etag", '"%s"' % entry["sha256"]),
                ("X-Linked-Size", str(entry["size"])),
            ] + common, body)
            return
        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype == "application/json":
            ctype += "; charset=utf-8"
        self._serve_file(h, ctx, os.path.join(self.root, "blobs", entry["sha256"]), entry["size"],
                         '"%s"' % entry["blob_id"], [("Content-Type", ctype)] + common, keys)

    # ---- CDN -----------------------------------------------------------------------------------

    def _sign(self, path: str, expires: str, disposition: str) -> str:
        msg = ("%s\n%s\n%s" % (path, expires, disposition)).encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def _cdn_url(self, h: _Handler, repo: RepoInfo, sha256: str, filename: str) -> str:
        path = "/cdn-lfs/repos/%s/%s" % (urllib.parse.quote(repo.id), sha256)
        base = os.path.basename(filename)
        disposition = "attachment; filename*=UTF-8''%s; filename=\"%s\";" % (
            urllib.parse.quote(base), base.replace('"', ""))
        expires = str(int(time.time()) + self.cdn_url_ttl_s)
        query = urllib.parse.urlencode([
            ("response-content-disposition", disposition), ("x-file", filename),
            ("Expires", expires),
            ("Signature", self._sign("/cdn-lfs/repos/%s/%s\n%s" % (repo.id, sha256, filename),
                                     expires, disposition)),
        ], quote_via=urllib.parse.quote)
        return "%s%s?%s" % (self._base(h), path, query)

    def _cdn(self, h: _Handler, ctx: _Ctx, segs: List[str], query: str) -> None:
        # /cdn-lfs/repos/{repo id}/{sha256}
        q = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        sha256 = urllib.parse.unquote(segs[-1]) if segs else ""
        rid = urllib.parse.unquote("/".join(segs[1:-1])) if len(segs) >= 3 else ""
        filename = q.get("x-file", sha256)
        ctx.file_key = "%s/%s" % (rid, filename)
        keys = (ctx.path, ctx.file_key)
        self._fail_status_fault(ctx, keys)
        repo = self._get_repo(rid) if segs and segs[0] == "repos" and rid else None
        if repo is None or sha256 not in repo.blob_shas:
            self._send_bytes(h, ctx, 404, [("Content-Type", "application/xml")],
                             b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey"
                             b"</Code><Message>The specified key does not exist.</Message></Error>")
            return
        raw_path = "/cdn-lfs/" + "/".join(segs)
        signed_ok = False
        if "Signature" in q:
            want = self._sign(urllib.parse.unquote(raw_path) + "\n" + filename, q.get("Expires", ""),
                              q.get("response-content-disposition", ""))
            try:
                fresh = int(q.get("Expires", "0")) >= time.time()
            except ValueError:
                fresh = False
            signed_ok = hmac.compare_digest(want, q["Signature"]) and fresh
            if not signed_ok:
                self._access_denied(h, ctx)
                return
        if not signed_ok and (repo.gated or repo.private) and self._bearer(h) != self.token:
            self._access_denied(h, ctx)
            return
        with self._stats.lock:
            st = self._stats
            st.requests_per_file[ctx.file_key] = st.requests_per_file.get(ctx.file_key, 0) + 1
        size = os.path.getsize(os.path.join(self.root, "blobs", sha256))
        headers = [("Content-Type", "application/octet-stream"),
                   ("Accept-Ranges", "bytes"), ("Cache-Control", "public, max-age=604800, immutable"),
                   ("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"), ("X-Cache", "Hit from cloudfront")]
        if q.get("response-content-disposition"):
            headers.append(("Content-Disposition", q["response-content-disposition"]))
        self._serve_file(h, ctx, os.path.join(self.root, "blobs", sha256), size,
                         '"%s"' % sha256, headers, keys)

    def _access_denied(self, h: _Handler, ctx: _Ctx) -> None:
        self._send_bytes(h, ctx, 403, [("Content-Type", "application/xml")],
                         b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>AccessDenied"
                         b"</Code><Message>Access denied</Message></Error>")

    # ---- file bodies ---------------------------------------------------------------------------

    def _serve_file(self, h: _Handler, ctx: _Ctx, blob: str, size: int, etag: str,
                    headers: List[Tuple[str, str]], keys: Tuple[str, ...]) -> None:
        start, end, status = 0, size, 200
        rng = h.headers.get("Range")
        if_range = h.headers.get("If-Range")
        if rng and (if_range is None or if_range.strip() == etag):
            r = _parse_range(rng, size)
            if r == _UNSATISFIABLE:
                self._send_bytes(h, ctx, 416, [("Content-Range", "bytes */%d" % size),
                                               ("Content-Type", "text/plain; charset=utf-8"),
                                               ("ETag", etag)], b"")
                return
            if r is not None:
                start, end = r
                status = 206
        headers = headers + [("ETag", etag)]
        if status == 206:
            headers.append(("Content-Range", "bytes %d-%d/%d" % (start, end - 1, size)))
        length = end - start
        if h.command == "HEAD":
            self._send_head(h, ctx, status, headers, length)
            return
        cut = self._take_faults("cut_after_bytes", ctx, keys, lambda f: f.value < length, True)
        flips = self._take_faults("flip_byte_at", ctx, keys, lambda f: start <= f.value < end)
        delays = self._take_faults("delay_ms_per_mb", ctx, keys)
        rates = self._take_faults("rate_limit_bytes_per_s", ctx, keys)
        self._send_head(h, ctx, status, headers, length)
        limit = start + int(cut[0].value) if cut else end
        with open(blob, "rb") as f:
            if not (flips or delays or rates):
                self._sendfile(h, ctx, f, start, limit)
            else:
                self._send_slow(h, ctx, f, start, limit, [int(x.value) for x in flips],
                                sum(x.value for x in delays), min((x.value for x in rates), default=0))
        if cut:
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(socket.SHUT_RDWR)

    def _sendfile(self, h: _Handler, ctx: _Ctx, f, start: int, end: int) -> None:
        sock_fd, file_fd = h.connection.fileno(), f.fileno()
        pos = start
        try:
            while pos < end:
                n = os.sendfile(sock_fd, file_fd, pos, min(end - pos, 8 * MiB))
                if n == 0:
                    raise ConnectionResetError("sendfile returned 0")
                pos += n
                self._count_body(ctx, n, True)
        except (AttributeError, OSError) as e:
            if isinstance(e, (ConnectionError, TimeoutError)) or pos > start:
                raise
            self._send_slow(h, ctx, f, start, end, [], 0, 0)  # no sendfile here: plain writes

    def _send_slow(self, h: _Handler, ctx: _Ctx, f, start: int, end: int, flips: List[int],
                   delay_ms_per_mb: float, rate: float) -> None:
        chunk = MiB
        if rate > 0:
            chunk = int(max(4096, min(MiB, rate / 20)))
        t0 = time.monotonic()
        pos, sent = start, 0
        while pos < end:
            data = os.pread(f.fileno(), min(chunk, end - pos), pos)
            if not data:
                break
            hits = [k for k in flips if pos <= k < pos + len(data)]
            if hits:
                buf = bytearray(data)
                for k in hits:
                    buf[k - pos] ^= 0xFF
                data = bytes(buf)
            # Pace before writing, so the client sees the delay before the bytes arrive.
            if delay_ms_per_mb:
                time.sleep(delay_ms_per_mb / 1000.0 * len(data) / MiB)
            if rate > 0:
                ahead = t0 + (sent + len(data)) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            h.wfile.write(data)
            pos += len(data)
            sent += len(data)
            self._count_body(ctx, len(data), True)

    # ---- /_fake control endpoints ------------------------------------------------------------------

    def _control(self, h: _Handler, method: str, segs: List[str], query: str) -> None:
        n = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(n) if n else b""
        body: Any = None
        if raw.strip():
            try:
                body = json.loads(raw)
            except ValueError:
                raise ValueError("body is not JSON")
        route = "/".join(s for s in segs if s)
        if route == "health":
            self._send_json(h, None, 200, {"ok": True, "url": self._base(h)})
        elif route == "stats" and method in ("GET", "HEAD"):
            self._send_json(h, None, 200, self.stats())
        elif route == "stats/reset" and method == "POST":
            self.reset_stats()
            self._send_json(h, None, 200, {"ok": True})
        elif route == "faults" and method in ("GET", "HEAD"):
            self._send_json(h, None, 200, {"faults": self.faults()})
        elif route == "faults" and method in ("POST", "PUT"):
            if body is None:
                raise ValueError("POST a JSON fault object or list")
            if method == "PUT":
                self.clear_faults()
            ids = self.add_fault(body)
            self._send_json(h, None, 200, {"added": ids, "faults": self.faults()})
        elif (route == "faults" and method == "DELETE") or (route == "faults/clear" and method == "POST"):
            self.clear_faults()
            self._send_json(h, None, 200, {"ok": True})
        elif route == "reset" and method == "POST":
            what = body if isinstance(body, dict) else {}
            if what.get("faults", True):
                self.clear_faults()
            if what.get("stats", True):
                self.reset_stats()
            self._send_json(h, None, 200, {"ok": True})
        elif route == "repos" and method in ("GET", "HEAD"):
            self.reload()
            self._send_json(h, None, 200, {rid: r.summary() for rid, r in sorted(self.repos().items())})
        else:
            self._send_json(h, None, 404, {"error": "unknown control endpoint /_fake/%s" % route})


# ---------------------------------------------------------------------------------------------
# Program
# ---------------------------------------------------------------------------------------------

def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description="Fake Hugging Face Hub for tests.")
    p.add_argument("--root", required=True, help="directory holding (or to hold) the repos")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--big-file-mb", type=int, default=100,
                   help="size of test-org/big-model's model.safetensors in MiB (default 100)")
    p.add_argument("--ready-file", help="write the URL here once listening")
    p.add_argument("--token", default=DEFAULT_TOKEN, help="token that opens gated repos")
    p.add_argument("--no-build", action="store_true", help="serve ROOT as is")
    p.add_argument("--gate-api", action="store_true", help="gate the model-info API too")
    p.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = p.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if not args.no_build:
        t = time.monotonic()
        build_standard_repos(args.root, args.big_file_mb)
        if args.verbose:
            sys.stderr.write("fake_hf_hub: repos ready in %.1fs\n" % (time.monotonic() - t))
    hub = FakeHub(args.root, token=args.token, host=args.host, port=args.port,
                  gate_api=args.gate_api, verbose=args.verbose).start()
    try:
        if args.ready_file:
            tmp = args.ready_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(hub.url + "\n")
            os.replace(tmp, args.ready_file)
        with contextlib.suppress(BrokenPipeError):
            print("READY %s" % hub.url, flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        hub.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
