"""Tests for fake_hf_hub.py: the fake Hub must speak the Hub protocol and its faults must work.

Run: cd tests/support && /usr/bin/python3 -m unittest -v test_fake_hf_hub
Standard library only (urllib / http.client).
"""

import hashlib
import http.client
import inspect
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fake_hf_hub as fh  # noqa: E402

BIG_MB = 12
TOKEN = "hf_test_token"
HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# No proxies: a proxy from the environment must not intercept 127.0.0.1.
_FOLLOW = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_NOREDIR = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect)

ROOT = None
HUB = None
REPOS = None


def setUpModule():
    global ROOT, HUB, REPOS
    ROOT = tempfile.mkdtemp(prefix="fake_hf_hub_test_")
    REPOS = fh.build_standard_repos(ROOT, big_file_mb=BIG_MB)
    HUB = fh.FakeHub(ROOT, token=TOKEN).start()


def tearDownModule():
    if HUB is not None:
        HUB.stop()
    if ROOT is not None:
        shutil.rmtree(ROOT, ignore_errors=True)


def fetch(path_or_url, method="GET", headers=None, follow=True, data=None, token=None):
    """(status, headers, body) for a request; HTTP errors are returned, not raised."""
    url = path_or_url if path_or_url.startswith("http") else HUB.url + path_or_url
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = "Bearer " + token
    if data is not None and not isinstance(data, bytes):
        data = json.dumps(data).encode()
        headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, method=method, headers=headers, data=data)
    try:
        with (_FOLLOW if follow else _NOREDIR).open(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def fetch_json(path, **kw):
    status, headers, body = fetch(path, **kw)
    return status, headers, json.loads(body) if body else None


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def git_sha1(b):
    return hashlib.sha1(b"blob %d\0" % len(b) + b).hexdigest()


def listing(repo, rev="main", blobs=True, token=None):
    q = "?blobs=true" if blobs else ""
    status, _, info = fetch_json("/api/models/%s/revision/%s%s" % (repo, urllib.parse.quote(rev, safe=""), q),
                                 token=token)
    assert status == 200, (status, info)
    return info


def cdn_location(repo, path, rev="main", token=None):
    status, headers, _ = fetch("/%s/resolve/%s/%s" % (repo, rev, path), follow=False, token=token)
    assert status == 302, status
    return headers["Location"]


class Base(unittest.TestCase):
    def setUp(self):
        HUB.reset()


class TestRepos(Base):
    def test_default_big_file_is_at_least_100_mb(self):
        self.assertGreaterEqual(inspect.signature(fh.build_standard_repos).parameters["big_file_mb"].default, 100)
        self.assertGreaterEqual(inspect.signature(fh.FakeHub).parameters["big_file_mb"].default, 100)

    def test_python_api_commits(self):
        r = REPOS[fh.TINY_LLAMA]
        self.assertEqual(set(REPOS), set(fh.STANDARD_REPOS))
        for rev in ("main", "v1.0", "refs/pr/1"):
            self.assertRegex(r.sha(rev), HEX40)
            self.assertEqual(HUB.commit(fh.TINY_LLAMA, rev), r.sha(rev))
        self.assertNotEqual(r.sha("main"), r.sha("v1.0"))
        self.assertEqual(r.history[:2], [r.sha("v1.0"), r.sha("main")])
        self.assertEqual(r.sha(r.sha("v1.0")), r.sha("v1.0"))
        with self.assertRaises(KeyError):
            r.sha("nope")

    def test_build_is_cached_and_deterministic(self):
        manifest = os.path.join(ROOT, "repos", "test-org", "tiny-llama.json")
        before = os.stat(manifest).st_mtime_ns
        t = time.monotonic()
        again = fh.build_standard_repos(ROOT, big_file_mb=BIG_MB)
        self.assertLess(time.monotonic() - t, 2.0)
        self.assertEqual(os.stat(manifest).st_mtime_ns, before)
        for rid in fh.STANDARD_REPOS:
            self.assertEqual(again[rid].history, REPOS[rid].history)
        # A fresh root generates byte-identical repos (same commits), and a different big size
        # changes only big-model.
        other = tempfile.mkdtemp(prefix="fake_hf_hub_test2_")
        try:
            fresh = fh.build_standard_repos(other, big_file_mb=BIG_MB - 1)
            for rid in (fh.TINY_LLAMA, fh.TINY_GGUF, fh.GATED_MODEL):
                self.assertEqual(fresh[rid].history, REPOS[rid].history)
            self.assertNotEqual(fresh[fh.BIG_MODEL].history, REPOS[fh.BIG_MODEL].history)
            self.assertEqual(fresh[fh.BIG_MODEL].files()["model.safetensors"]["size"] // (1 << 20), BIG_MB - 1)
        finally:
            shutil.rmtree(other, ignore_errors=True)

    def test_add_repo_custom(self):
        info = HUB.add_repo("test-org/custom", [{"files": {"a.txt": "hello\n", "sub/w.bin": b"\1" * 100}}])
        status, headers, body = fetch("/test-org/custom/resolve/main/a.txt")
        self.assertEqual((status, body), (200, b"hello\n"))
        self.assertEqual(headers["ETag"], '"%s"' % git_sha1(b"hello\n"))
        self.assertEqual(headers["X-Repo-Commit"], info.sha("main"))
        status, _, body = fetch("/test-org/custom/resolve/main/sub/w.bin")
        self.assertEqual((status, body), (200, b"\1" * 100))
        status, headers, _ = fetch("/test-org/custom/resolve/main/sub/w.bin", method="HEAD", follow=False)
        self.assertEqual(status, 302)


class TestApi(Base):
    def test_revision_listing_shape(self):
        info = listing(fh.TINY_LLAMA)
        for key in ("id", "modelId", "sha", "private", "gated", "lastModified", "siblings"):
            self.assertIn(key, info)
        self.assertEqual(info["id"], fh.TINY_LLAMA)
        self.assertEqual(info["modelId"], fh.TINY_LLAMA)
        self.assertEqual(info["sha"], REPOS[fh.TINY_LLAMA].sha("main"))
        self.assertRegex(info["sha"], HEX40)
        self.assertIs(info["private"], False)
        self.assertIs(info["gated"], False)
        self.assertRegex(info["lastModified"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        names = {s["rfilename"] for s in info["siblings"]}
        self.assertTrue({"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                         "special_tokens_map.json", "model-00001-of-00002.safetensors",
                         "model-00002-of-00002.safetensors", "model.safetensors.index.json"} <= names)
        for s in info["siblings"]:
            self.assertIsInstance(s["size"], int)
            self.assertRegex(s["blobId"], HEX40)
            if s["rfilename"].endswith(".safetensors"):
                lfs = s["lfs"]
                self.assertRegex(lfs["sha256"], HEX64)
                self.assertEqual(lfs["size"], s["size"])
                pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (
                    lfs["sha256"].encode(), lfs["size"])
                self.assertEqual(lfs["pointerSize"], len(pointer))
                self.assertEqual(s["blobId"], git_sha1(pointer))
            else:
                self.assertNotIn("lfs", s)
                _, _, body = fetch("/%s/resolve/main/%s" % (fh.TINY_LLAMA, s["rfilename"]))
                self.assertEqual(s["blobId"], git_sha1(body))
                self.assertEqual(s["size"], len(body))
        self.assertEqual(info["safetensors"]["total"], info["safetensors"]["parameters"]["BF16"])
        self.assertEqual(info["config"]["model_type"], "llama")

    def test_listing_without_blobs_and_without_revision(self):
        info = listing(fh.TINY_LLAMA, blobs=False)
        for s in info["siblings"]:
            self.assertEqual(set(s), {"rfilename"})
        status, _, plain = fetch_json("/api/models/%s" % fh.TINY_LLAMA)
        self.assertEqual(status, 200)
        self.assertEqual(plain["sha"], info["sha"])

    def test_branch_tag_sha_and_ref_resolution(self):
        r = REPOS[fh.TINY_LLAMA]
        main, old = listing(fh.TINY_LLAMA, "main"), listing(fh.TINY_LLAMA, "v1.0")
        self.assertEqual(old["sha"], r.sha("v1.0"))
        self.assertEqual(listing(fh.TINY_LLAMA, r.sha("v1.0"))["sha"], r.sha("v1.0"))
        self.assertEqual(listing(fh.TINY_LLAMA, "refs/pr/1")["sha"], r.sha("refs/pr/1"))  # refs%2Fpr%2F1
        status, _, raw = fetch_json("/api/models/%s/revision/refs/pr/1" % fh.TINY_LLAMA)
        self.assertEqual((status, raw["sha"]), (200, r.sha("refs/pr/1")))
        cfg = {}
        for rev in ("main", "v1.0", r.sha("v1.0")):
            status, headers, body = fetch("/%s/resolve/%s/config.json" % (fh.TINY_LLAMA, rev))
            self.assertEqual(status, 200)
            self.assertEqual(headers["X-Repo-Commit"], r.sha(rev))
            cfg[rev] = json.loads(body)
        self.assertEqual(cfg["main"]["num_hidden_layers"], 4)
        self.assertEqual(cfg["v1.0"]["num_hidden_layers"], 2)
        self.assertEqual(cfg[r.sha("v1.0")], cfg["v1.0"])
        lfs = lambda info: {s["rfilename"]: s["lfs"]["sha256"] for s in info["siblings"] if "lfs" in s}  # noqa
        self.assertEqual(lfs(main)["model-00001-of-00002.safetensors"], lfs(old)["model-00001-of-00002.safetensors"])
        self.assertNotEqual(lfs(main)["model-00002-of-00002.safetensors"], lfs(old)["model-00002-of-00002.safetensors"])
        status, _, body = fetch("/%s/resolve/refs%%2Fpr%%2F1/README.md" % fh.TINY_LLAMA)
        self.assertEqual(status, 200)
        self.assertIn(b"tiny-llama", body)

    def test_tree_and_refs(self):
        status, _, tree = fetch_json("/api/models/%s/tree/main" % fh.TINY_LLAMA)
        self.assertEqual(status, 200)
        by_path = {e["path"]: e for e in tree}
        self.assertEqual(by_path["model-00002-of-00002.safetensors"]["lfs"]["oid"],
                         REPOS[fh.TINY_LLAMA].files()["model-00002-of-00002.safetensors"]["sha256"])
        status, _, refs = fetch_json("/api/models/%s/refs" % fh.TINY_LLAMA)
        self.assertEqual(refs["tags"][0]["name"], "v1.0")
        self.assertEqual(refs["branches"][0]["targetCommit"], REPOS[fh.TINY_LLAMA].sha("main"))


class TestResolve(Base):
    def test_small_file_direct(self):
        r = REPOS[fh.TINY_LLAMA]
        for method in ("GET", "HEAD"):
            status, headers, body = fetch("/%s/resolve/main/tokenizer.json" % fh.TINY_LLAMA, method=method,
                                          follow=False)
            self.assertEqual(status, 200)
            self.assertEqual(headers["X-Repo-Commit"], r.sha("main"))
            self.assertEqual(headers["ETag"], '"%s"' % r.files()["tokenizer.json"]["blob_id"])
            self.assertEqual(int(headers["Content-Length"]), r.files()["tokenizer.json"]["size"])
            self.assertNotIn("X-Linked-Etag", headers)
            if method == "GET":
                self.assertEqual(headers["ETag"], '"%s"' % git_sha1(body))
            else:
                self.assertEqual(body, b"")

    def test_lfs_redirect_headers_and_content(self):
        r = REPOS[fh.TINY_LLAMA]
        name = "model-00002-of-00002.safetensors"
        entry = r.files()[name]
        for method in ("HEAD", "GET"):
            status, headers, _ = fetch("/%s/resolve/main/%s" % (fh.TINY_LLAMA, name), method=method, follow=False)
            self.assertEqual(status, 302)
            self.assertTrue(headers["Location"].startswith(HUB.url + "/cdn-lfs/"), headers["Location"])
            self.assertEqual(headers["X-Linked-Etag"], '"%s"' % entry["sha256"])
            self.assertEqual(int(headers["X-Linked-Size"]), entry["size"])
            self.assertEqual(headers["X-Repo-Commit"], r.sha("main"))
            self.assertEqual(headers["ETag"], '"%s"' % entry["blob_id"])
        status, headers, body = fetch(headers["Location"], method="HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(int(headers["Content-Length"]), entry["size"])
        self.assertEqual(headers["Accept-Ranges"], "bytes")
        self.assertIn('filename="%s";' % name, headers["Content-Disposition"])
        # Following the redirect yields the bytes whose sha256 the listing announces.
        info = listing(fh.TINY_LLAMA)
        for s in info["siblings"]:
            if "lfs" in s:
                status, headers, body = fetch("/%s/resolve/%s/%s" % (fh.TINY_LLAMA, info["sha"], s["rfilename"]))
                self.assertEqual(status, 200)
                self.assertEqual(len(body), s["lfs"]["size"])
                self.assertEqual(sha256(body), s["lfs"]["sha256"])
                self.assertEqual(headers["ETag"], '"%s"' % s["lfs"]["sha256"])

    def test_ranges(self):
        entry = REPOS[fh.BIG_MODEL].files()["model.safetensors"]
        size = entry["size"]
        whole = REPOS[fh.BIG_MODEL].file_bytes("model.safetensors")
        loc = cdn_location(fh.BIG_MODEL, "model.safetensors")
        cases = {"bytes=0-99": (0, 100), "bytes=%d-" % (size - 1000): (size - 1000, size),
                 "bytes=5000000-5000009": (5000000, 5000010), "bytes=-10": (size - 10, size),
                 "bytes=%d-%d" % (size - 5, size + 100): (size - 5, size)}
        for rng, (a, b) in cases.items():
            status, headers, body = fetch(loc, headers={"Range": rng})
            self.assertEqual(status, 206, rng)
            self.assertEqual(headers["Content-Range"], "bytes %d-%d/%d" % (a, b - 1, size))
            self.assertEqual(int(headers["Content-Length"]), b - a)
            self.assertEqual(body, whole[a:b])
        for rng in ("bytes=%d-" % size, "bytes=%d-%d" % (size + 10, size + 20)):
            status, headers, _ = fetch(loc, headers={"Range": rng})
            self.assertEqual(status, 416, rng)
            self.assertEqual(headers["Content-Range"], "bytes */%d" % size)
        # Through the resolve URL (redirect followed with the Range header kept).
        status, _, body = fetch("/%s/resolve/main/model.safetensors" % fh.BIG_MODEL, headers={"Range": "bytes=8-15"})
        self.assertEqual((status, body), (206, whole[8:16]))
        # Small (non-LFS) files honour Range too; a stale If-Range gets the whole file.
        status, headers, body = fetch("/%s/resolve/main/config.json" % fh.TINY_LLAMA, headers={"Range": "bytes=1-4"})
        self.assertEqual(status, 206)
        self.assertEqual(body, REPOS[fh.TINY_LLAMA].file_bytes("config.json")[1:5])
        status, _, body = fetch("/%s/resolve/main/config.json" % fh.TINY_LLAMA,
                                headers={"Range": "bytes=1-4", "If-Range": '"0000"'})
        self.assertEqual((status, len(body)), (200, REPOS[fh.TINY_LLAMA].files()["config.json"]["size"]))

    def test_keep_alive(self):
        conn = http.client.HTTPConnection("127.0.0.1", HUB.port, timeout=10)
        try:
            conn.request("GET", "/api/models/%s/revision/main" % fh.TINY_LLAMA)
            r = conn.getresponse()
            r.read()
            sock = conn.sock
            for path in ("/%s/resolve/main/config.json" % fh.TINY_LLAMA,
                         "/%s/resolve/main/nope.json" % fh.TINY_LLAMA,
                         "/%s/resolve/main/model.safetensors" % fh.BIG_MODEL):
                conn.request("HEAD" if path.endswith("safetensors") else "GET", path)
                r = conn.getresponse()
                r.read()
                self.assertIsNotNone(r.getheader("Content-Length"))
                self.assertIs(conn.sock, sock, "connection was not kept alive")
        finally:
            conn.close()


class TestFileFormats(Base):
    def _check_safetensors(self, data, dtype_size=2):
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + n])
        self.assertEqual(header["__metadata__"], {"format": "pt"})
        tensors = {k: v for k, v in header.items() if k != "__metadata__"}
        spans = sorted(tuple(v["data_offsets"]) for v in tensors.values())
        self.assertEqual(spans[0][0], 0)
        for (a, b), (c, _) in zip(spans, spans[1:]):
            self.assertEqual(b, c)  # contiguous, no holes
        self.assertEqual(spans[-1][1], len(data) - 8 - n)  # fits the file exactly
        for v in tensors.values():
            self.assertEqual(v["dtype"], "BF16")
            self.assertEqual(v["data_offsets"][1] - v["data_offsets"][0], dtype_size * math.prod(v["shape"]))
        return tensors

    def test_safetensors_shards_match_config_and_index(self):
        cfg = json.loads(fetch("/%s/resolve/main/config.json" % fh.TINY_LLAMA)[2])
        index = json.loads(fetch("/%s/resolve/main/model.safetensors.index.json" % fh.TINY_LLAMA)[2])
        self.assertEqual(cfg["architectures"], ["LlamaForCausalLM"])
        self.assertEqual((cfg["vocab_size"], cfg["hidden_size"], cfg["num_attention_heads"],
                          cfg["intermediate_size"], cfg["max_position_embeddings"], cfg["torch_dtype"]),
                         (32000, 256, 4, 512, 2048, "bfloat16"))
        all_tensors = {}
        for shard in sorted(set(index["weight_map"].values())):
            status, _, data = fetch("/%s/resolve/main/%s" % (fh.TINY_LLAMA, shard))
            self.assertEqual(status, 200)
            for name, t in self._check_safetensors(data).items():
                self.assertEqual(index["weight_map"][name], shard)
                all_tensors[name] = t
        self.assertEqual(set(all_tensors), set(index["weight_map"]))
        self.assertEqual(index["metadata"]["total_size"],
                         sum(2 * math.prod(t["shape"]) for t in all_tensors.values()))
        self.assertEqual(all_tensors["model.embed_tokens.weight"]["shape"], [32000, 256])
        layers = {int(n.split(".")[2]) for n in all_tensors if n.startswith("model.layers.")}
        self.assertEqual(layers, set(range(cfg["num_hidden_layers"])))
        h, i, v, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
        expected = v * h + L * (4 * h * h + 3 * h * i + 2 * h) + h  # tied embeddings
        self.assertEqual(sum(math.prod(t["shape"]) for t in all_tensors.values()), expected)
        self.assertEqual(listing(fh.TINY_LLAMA)["safetensors"]["total"], expected)

    def test_big_model(self):
        info = listing(fh.BIG_MODEL)
        st = [s for s in info["siblings"] if s["rfilename"] == "model.safetensors"][0]
        self.assertGreaterEqual(st["size"], BIG_MB << 20)
        status, _, data = fetch("/%s/resolve/main/model.safetensors" % fh.BIG_MODEL)
        self.assertEqual(status, 200)
        self.assertEqual(sha256(data), st["lfs"]["sha256"])
        self._check_safetensors(data)
        # Every MiB of the data differs from every other.
        blocks = {data[k:k + (1 << 20)] for k in range(0, len(data) - (1 << 20), 1 << 20)}
        self.assertEqual(len(blocks), len(range(0, len(data) - (1 << 20), 1 << 20)))

    def test_gguf_header(self):
        info = listing(fh.TINY_GGUF)
        self.assertEqual({s["rfilename"] for s in info["siblings"]} >= {"tiny.Q8_0.gguf", "README.md"}, True)
        status, _, data = fetch("/%s/resolve/main/tiny.Q8_0.gguf" % fh.TINY_GGUF)
        self.assertEqual(status, 200)
        self.assertEqual(data[:4], b"GGUF")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
        self.assertEqual(version, 3)
        pos = 24
        scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
                  11: "<q", 12: "<d"}

        def take(fmt):
            nonlocal pos
            v = struct.unpack_from(fmt, data, pos)[0]
            pos += struct.calcsize(fmt)
            return v

        def string():
            nonlocal pos
            n = take("<Q")
            pos += n
            return data[pos - n:pos].decode()

        def value(t):
            if t == 8:
                return string()
            if t == 9:
                et, n = take("<I"), take("<Q")
                return [value(et) for _ in range(n)]
            return take(scalar[t])

        meta = {}
        for _ in range(n_kv):
            k = string()
            meta[k] = value(take("<I"))
        self.assertEqual(meta["general.architecture"], "llama")
        self.assertIn("general.name", meta)
        self.assertEqual(meta["llama.context_length"], 2048)
        self.assertEqual(meta["llama.block_count"], 4)
        self.assertEqual(meta["llama.embedding_length"], 256)
        self.assertIn("general.file_type", meta)
        self.assertEqual(len(meta["tokenizer.ggml.tokens"]), 100)
        align = meta.get("general.alignment", 32)
        end = 0
        names = []
        for _ in range(n_tensors):
            name = string()
            names.append(name)
            nd = take("<I")
            dims = [take("<Q") for _ in range(nd)]
            gtype, off = take("<I"), take("<Q")
            self.assertEqual(off % align, 0, name)
            nbytes = {0: 4 * math.prod(dims), 8: math.prod(dims) // 32 * 34}[gtype]
            end = max(end, off + nbytes)
        data_start = pos + (-pos % align)
        self.assertLessEqual(data_start + end, len(data))
        self.assertEqual({int(n.split(".")[1]) for n in names if n.startswith("blk.")},
                         set(range(meta["llama.block_count"])))
        self.assertIn("token_embd.weight", names)


class TestAuthAndErrors(Base):
    def test_unknown_repo(self):
        for path in ("/api/models/test-org/nope/revision/main", "/test-org/nope/resolve/main/config.json"):
            status, headers, body = fetch_json(path)
            self.assertEqual(status, 401, path)
            self.assertEqual(headers["X-Error-Code"], "RepoNotFound")
            self.assertIn("error", body)
            status, headers, body = fetch_json(path, token=TOKEN)
            self.assertEqual(status, 404, path)
            self.assertEqual(headers["X-Error-Code"], "RepoNotFound")

    def test_unknown_revision_and_entry(self):
        for path in ("/api/models/%s/revision/v9.9" % fh.TINY_LLAMA,
                     "/%s/resolve/v9.9/config.json" % fh.TINY_LLAMA,
                     "/%s/resolve/%s/config.json" % (fh.TINY_LLAMA, "0" * 40)):
            status, headers, body = fetch_json(path)
            self.assertEqual((status, headers["X-Error-Code"]), (404, "RevisionNotFound"), path)
            self.assertIn("error", body)
        status, headers, body = fetch_json("/%s/resolve/main/nope.bin" % fh.TINY_LLAMA)
        self.assertEqual((status, headers["X-Error-Code"]), (404, "EntryNotFound"))
        self.assertIn("error", body)
        status, headers, _ = fetch("/%s/resolve/main/nope.bin" % fh.TINY_LLAMA, method="HEAD")
        self.assertEqual((status, headers["X-Error-Code"]), (404, "EntryNotFound"))

    def test_gated(self):
        path = "/%s/resolve/main/model.safetensors" % fh.GATED_MODEL
        entry = REPOS[fh.GATED_MODEL].files()["model.safetensors"]
        status, headers, body = fetch_json(path, follow=False)
        self.assertEqual((status, headers["X-Error-Code"]), (401, "GatedRepo"))
        self.assertIn("error", body)
        status, headers, _ = fetch_json("/%s/resolve/main/config.json" % fh.GATED_MODEL, token="hf_wrong")
        self.assertEqual((status, headers["X-Error-Code"]), (403, "GatedRepo"))
        status, headers, _ = fetch(path, follow=False, token="hf_wrong")
        self.assertEqual(status, 403)
        status, _, body = fetch("/%s/resolve/main/config.json" % fh.GATED_MODEL, token=TOKEN)
        self.assertEqual(status, 200)
        self.assertEqual(json.loads(body)["model_type"], "llama")
        # Listing is public, as on the Hub; it says the repo is gated.
        info = listing(fh.GATED_MODEL)
        self.assertEqual(info["gated"], "manual")
        # The signed CDN URL works without the header; a tampered or unsigned one does not.
        loc = cdn_location(fh.GATED_MODEL, "model.safetensors", token=TOKEN)
        status, _, body = fetch(loc)
        self.assertEqual((status, sha256(body)), (200, entry["sha256"]))
        bad = re.sub(r"Signature=([0-9a-f])", lambda m: "Signature=" + ("1" if m.group(1) != "1" else "2"), loc)
        self.assertEqual(fetch(bad)[0], 403)
        unsigned = loc.split("?")[0]
        self.assertEqual(fetch(unsigned)[0], 403)
        self.assertEqual(fetch(unsigned, token=TOKEN)[0], 200)
        # Following the redirect with the token (urllib keeps the header) works end to end.
        status, _, body = fetch(path, token=TOKEN)
        self.assertEqual((status, sha256(body)), (200, entry["sha256"]))


class TestFaults(Base):
    name = "model.safetensors"

    def whole(self):
        return REPOS[fh.BIG_MODEL].file_bytes(self.name)

    def test_cut_after_bytes_then_resume(self):
        whole = self.whole()
        HUB.add_fault(cut_after_bytes=1000, times=1, path="big-model/model.safetensors")
        loc = cdn_location(fh.BIG_MODEL, self.name)
        req = urllib.request.Request(loc)
        with _FOLLOW.open(req, timeout=30) as resp:
            self.assertEqual(int(resp.headers["Content-Length"]), len(whole))
            with self.assertRaises(http.client.IncompleteRead) as cm:
                resp.read()
        self.assertEqual(cm.exception.partial, whole[:1000])
        # Resume from where it stopped: only the missing part is sent.
        status, _, rest = fetch(loc, headers={"Range": "bytes=1000-"})
        self.assertEqual(status, 206)
        self.assertEqual(whole[:1000] + rest, whole)
        st = HUB.stats()
        key = "%s/%s" % (fh.BIG_MODEL, self.name)
        self.assertEqual(st["bytes_per_file"][key], len(whole))
        self.assertLess(st["bytes_per_file"][key] - 1000, 2 * (len(whole) - 1000))
        self.assertEqual(st["faults_fired"]["cut_after_bytes"], 1)
        self.assertIn("bytes=1000-", [r["range"] for r in st["ranges"]])
        # times=1: the next full download is clean.
        self.assertEqual(sha256(fetch(loc)[2]), sha256(whole))

    def test_cut_every_time_and_on_small_files(self):
        HUB.add_fault({"cut_after_bytes": 10, "path": "config.json"})  # no times: every time
        for _ in range(2):
            with _FOLLOW.open("%s/%s/resolve/main/config.json" % (HUB.url, fh.TINY_LLAMA), timeout=10) as resp:
                with self.assertRaises(http.client.IncompleteRead):
                    resp.read()
        HUB.clear_faults()
        self.assertEqual(fetch("/%s/resolve/main/config.json" % fh.TINY_LLAMA)[0], 200)

    def test_flip_byte(self):
        whole = self.whole()
        k = 5_000_000
        HUB.add_fault(flip_byte_at=k, times=1, path=self.name)
        status, _, body = fetch("/%s/resolve/main/%s" % (fh.BIG_MODEL, self.name))
        self.assertEqual(status, 200)
        self.assertEqual(len(body), len(whole))
        self.assertEqual(body[k], whole[k] ^ 0xFF)
        self.assertEqual(body[:k] + body[k + 1:], whole[:k] + whole[k + 1:])
        self.assertNotEqual(sha256(body), sha256(whole))
        self.assertEqual(sha256(fetch("/%s/resolve/main/%s" % (fh.BIG_MODEL, self.name))[2]), sha256(whole))
        # The offset is a file offset: a range that covers it is corrupted at the right place,
        # a range that does not cover it is clean and does not use up the fault.
        HUB.add_fault(flip_byte_at=k, times=1, path=self.name)
        loc = cdn_location(fh.BIG_MODEL, self.name)
        self.assertEqual(fetch(loc, headers={"Range": "bytes=0-99"})[2], whole[:100])
        body = fetch(loc, headers={"Range": "bytes=%d-%d" % (k - 2, k + 2)})[2]
        self.assertEqual(body, whole[k - 2:k] + bytes([whole[k] ^ 0xFF]) + whole[k + 1:k + 3])
        self.assertEqual(HUB.stats()["faults_fired"]["flip_byte_at"], 2)

    def test_slow(self):
        loc = cdn_location(fh.BIG_MODEL, self.name)
        rng = {"Range": "bytes=0-%d" % ((1 << 20) - 1)}
        t = time.monotonic()
        fetch(loc, headers=rng)
        fast = time.monotonic() - t
        HUB.add_fault(rate_limit_bytes_per_s=4 << 20, times=1)
        t = time.monotonic()
        status, _, body = fetch(loc, headers=rng)
        self.assertEqual((status, len(body)), (206, 1 << 20))
        self.assertGreaterEqual(time.monotonic() - t, 0.2)
        HUB.add_fault(delay_ms_per_mb=300, times=1, path=self.name)
        t = time.monotonic()
        body = fetch(loc, headers=rng)[2]
        self.assertGreaterEqual(time.monotonic() - t, 0.28)
        self.assertEqual(body, self.whole()[:1 << 20])
        self.assertLess(fast, 1.0)

    def test_fail_status_over_http_then_recover(self):
        status, _, out = fetch_json("/_fake/faults", method="POST",
                                    data={"fail_status": 503, "times": 2, "path": "tiny-llama", "retry_after": 1})
        self.assertEqual(status, 200)
        self.assertEqual(len(out["added"]), 1)
        path = "/api/models/%s/revision/main" % fh.TINY_LLAMA
        for _ in range(2):
            status, headers, _ = fetch(path)
            self.assertEqual((status, headers["Retry-After"]), (503, "1"))
        self.assertEqual(fetch(path)[0], 200)
        self.assertEqual(fetch("/%s/resolve/main/config.json" % fh.TINY_LLAMA)[0], 200)
        # Scoped by kind: only CDN requests fail.
        fetch("/_fake/faults", method="POST", data=[{"fail_status": 500, "kinds": ["cdn"], "times": 1}])
        self.assertEqual(fetch("/%s/resolve/main/%s" % (fh.BIG_MODEL, self.name), method="HEAD", follow=False)[0], 302)
        self.assertEqual(fetch("/%s/resolve/main/%s" % (fh.BIG_MODEL, self.name))[0], 500)
        self.assertEqual(HUB.stats()["faults_fired"]["fail_status"], 3)

    def test_bad_fault_spec_is_rejected(self):
        self.assertEqual(fetch("/_fake/faults", method="POST", data={"explode": 1})[0], 400)
        with self.assertRaises(ValueError):
            HUB.add_fault(cut_after_bytes=-1)

    def test_reset_over_http(self):
        fetch("/_fake/faults", method="POST", data={"fail_status": 500})
        self.assertEqual(fetch("/api/models/%s" % fh.TINY_LLAMA)[0], 500)
        self.assertEqual(len(fetch_json("/_fake/faults")[2]["faults"]), 1)
        self.assertEqual(fetch("/_fake/reset", method="POST", data=b"")[0], 200)
        self.assertEqual(fetch_json("/_fake/faults")[2]["faults"], [])
        self.assertEqual(fetch_json("/_fake/stats")[2]["requests_total"], 0)
        self.assertEqual(fetch("/api/models/%s" % fh.TINY_LLAMA)[0], 200)
        HUB.add_fault(fail_status=500, path="/api/")
        fetch("/_fake/faults", method="DELETE")
        self.assertEqual(fetch("/api/models/%s" % fh.TINY_LLAMA)[0], 200)


class TestStats(Base):
    def test_counts_requests_bytes_and_ranges(self):
        st = fetch_json("/_fake/stats")[2]
        self.assertEqual(st["requests_total"], 0)  # control requests are not counted
        name = "model-00002-of-00002.safetensors"
        size = REPOS[fh.TINY_LLAMA].files()[name]["size"]
        listing(fh.TINY_LLAMA)
        fetch("/%s/resolve/main/%s" % (fh.TINY_LLAMA, name))
        fetch("/%s/resolve/main/%s" % (fh.TINY_LLAMA, name), headers={"Range": "bytes=0-99"})
        fetch("/%s/resolve/main/config.json" % fh.TINY_LLAMA, method="HEAD")
        st = HUB.stats()
        self.assertEqual(st["requests"], {"api": 1, "resolve": 3, "cdn": 2})
        self.assertEqual(st["requests_total"], 6)
        self.assertEqual(st["requests_by_method"], {"GET": 5, "HEAD": 1})
        self.assertEqual(st["bytes_per_file"]["%s/%s" % (fh.TINY_LLAMA, name)], size + 100)
        self.assertEqual(st["file_bytes_sent"], size + 100)
        self.assertGreater(st["bytes_sent"], st["file_bytes_sent"])
        self.assertIn({"file": "%s/%s" % (fh.TINY_LLAMA, name), "kind": "cdn", "range": "bytes=0-99",
                       "method": "GET", "status": 206}, st["ranges"])
        self.assertEqual(st["requests_per_file"]["%s/config.json" % fh.TINY_LLAMA], 1)
        self.assertEqual(fetch("/_fake/stats/reset", method="POST", data=b"")[0], 200)
        self.assertEqual(HUB.stats()["bytes_sent"], 0)

    def test_repos_endpoint(self):
        status, _, repos = fetch_json("/_fake/repos")
        self.assertEqual(status, 200)
        self.assertEqual(repos[fh.TINY_LLAMA]["tags"]["v1.0"], REPOS[fh.TINY_LLAMA].sha("v1.0"))
        self.assertEqual(HUB.stats()["requests_total"], 0)


class TestProgram(unittest.TestCase):
    def test_cli_ready_and_sigterm(self):
        ready = os.path.join(ROOT, "ready.url")
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_hf_hub.py"), "--root", ROOT,
                                 "--port", "0", "--big-file-mb", str(BIG_MB), "--ready-file", ready],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline().strip()
            m = re.match(r"^READY (http://127\.0\.0\.1:\d+)$", line)
            self.assertIsNotNone(m, line + proc.stderr.read() if not line else line)
            url = m.group(1)
            with open(ready) as f:
                self.assertEqual(f.read().strip(), url)
            status, _, body = fetch(url + "/api/models/%s/revision/v1.0" % fh.TINY_LLAMA)
            self.assertEqual(status, 200)
            self.assertEqual(json.loads(body)["sha"], REPOS[fh.TINY_LLAMA].sha("v1.0"))
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=10), 0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()


if __name__ == "__main__":
    unittest.main()
