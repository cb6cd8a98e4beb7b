"""The model catalog: registering (seed 004), discovering models already on a node (GSwarm's
model cache and a Hugging Face cache), validating files in place, deleting.

Models are downloaded from the fake Hugging Face hub in tests/support (see test_downloads for
the downloads themselves).

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_models
"""

import hashlib
import json
import math
import os
import re
import shutil
import unittest

from gswarm_harness import HubTestCase, error_message, u64, wait_until

MiB = 1024 * 1024
TINY_LLAMA = "test-org/tiny-llama"
GATED_MODEL = "test-org/gated-model"
SHARD2 = "model-00002-of-00002.safetensors"


def flip_byte(path, offset):
    """XOR one byte of `path` in place, keeping its size."""
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


class DiscoveryTest(HubTestCase):

    ORG, NAME = "acme", "tiny-thing"
    COMMIT = hashlib.sha1(b"acme/tiny-thing").hexdigest()

    def make_hf_cache(self, hub_dir):
        """A Hugging Face cache entry laid out as huggingface_hub writes it: blobs/ holds the
        bytes, snapshots/<commit>/ links to them, refs/main names the commit. The files are the
        fake hub's gated-model (1 layer, vocab 1000, hidden 64). Returns the snapshot dir."""
        repo = self.repo(GATED_MODEL)
        base = os.path.join(hub_dir, f"models--{self.ORG}--{self.NAME}")
        snapshot = os.path.join(base, "snapshots", self.COMMIT)
        os.makedirs(os.path.join(base, "blobs"))
        os.makedirs(os.path.join(base, "refs"))
        os.makedirs(snapshot)
        for path in ("config.json", "model.safetensors"):
            entry = repo.files()[path]
            blob_name = entry["sha256"] if entry["lfs"] else entry["blob_id"]
            shutil.copyfile(repo.file_path(path), os.path.join(base, "blobs", blob_name))
            os.symlink(os.path.join("..", "..", "blobs", blob_name), os.path.join(snapshot, path))
        with open(os.path.join(base, "refs", "main"), "w") as f:
            f.write(self.COMMIT)
        return snapshot

    def discover(self, body=None):
        r = self.rest("POST", "/discover", body=body or {}, timeout=30)
        self.assertEqual(r.status, 200, r)
        return r.json

    def start_with_hf_cache(self, auto_discover, build_cache_first=False, via="config"):
        """A host (host.auto_discover_models: the host decides what it registers) and an agent
        pointed at a Hugging Face cache, `via` client.huggingface_cache_dir in the agent's own
        config file, host.huggingface_cache_dir in it (the one file of `gswarm start`), or
        HF_HUB_CACHE in its environment; returns the cache's hub/ directory and the agent."""
        self.make_host_home(host_extra={"auto_discover_models": auto_discover})
        host = self.start_host()
        hf_home = os.path.join(self.root, "hf")
        hub_dir = os.path.join(hf_home, "hub")
        os.makedirs(hub_dir)
        if build_cache_first:
            self.make_hf_cache(hub_dir)
        env = self.hub_env()
        client, sections = {}, {}
        if via == "config":
            client["huggingface_cache_dir"] = hf_home
        elif via == "host-section":
            sections["host"] = {"huggingface_cache_dir": hf_home}
        else:
            env["HF_HUB_CACHE"] = hub_dir
        self.make_agent_home("node-a", sections=sections, **client)
        agent = self.start_agent("node-a", env_extra=env)
        self.wait_node("node-a", procs=[host, agent])
        return hub_dir, agent

    def test_discover_hf_cache_in_place(self):
        hub_dir, _ = self.start_with_hf_cache(auto_discover=False)
        self.assertNotIn(self.NAME, self.model_names())
        snapshot = self.make_hf_cache(hub_dir)

        out = self.discover()
        self.assertIn(self.NAME, out.get("added", []), out)
        model = self.get_model(self.NAME)
        self.assertIsNotNone(model, f"GET /models/{self.NAME} after discover")
        self.assertEqual(model.get("state"), "available", json.dumps(model))
        replicas = model.get("replicas", [])
        self.assertEqual(len(replicas), 1, json.dumps(model))
        rep = replicas[0]
        self.assertEqual((rep.get("node_id"), rep.get("tier")), ("node-a", "disk"), rep)
        self.assertTrue(rep.get("in_place"), f"registered where it was found: {rep}")
        self.assertTrue(os.path.realpath(rep.get("path", "")).startswith(
            os.path.realpath(snapshot)), f"path inside the snapshot {snapshot}: {rep}")
        self.assertEqual(rep.get("commit"), self.COMMIT, rep)
        meta = model.get("metadata") or {}
        self.assertEqual(meta.get("format"), "safetensors", meta)
        self.assertEqual(meta.get("architecture"), "LlamaForCausalLM", meta)
        self.assertEqual(meta.get("num_layers"), 1, meta)
        self.assertEqual(u64(meta.get("vocab_size")), 1000, meta)
        self.assertEqual(u64(meta.get("hidden_size")), 64, meta)
        self.assertGreater(u64(meta.get("parameter_count")), 0, meta)
        self.assertIn(f"{self.ORG}/{self.NAME}", model.get("source_url", ""),
                      json.dumps(model))
        self.assertFalse(os.path.exists(self.model_dir("node-a", self.NAME)),
                         "registered in place, not copied into the model cache")

        again = self.discover()
        self.assertEqual(again.get("added", []), [], f"a second discover adds nothing: {again}")
        self.assertEqual(again.get("removed", []), [], again)
        self.assertEqual(self.model_names().count(self.NAME), 1)

        # Deleting an in-place model forgets it but never touches the Hugging Face cache.
        r = self.rest("DELETE", f"/api/models/{self.NAME}")
        self.assertEqual(r.status, 200, r)
        wait_until(lambda: self.NAME not in self.model_names(), 10,
                   f"{self.NAME} to leave the catalog")
        self.assertTrue(os.path.isfile(os.path.join(snapshot, "model.safetensors")),
                        "the HF cache's files stay")
        self.assertIn(self.NAME, self.discover().get("added", []), "found again")

        shutil.rmtree(snapshot)
        gone = self.discover()
        self.assertIn(self.NAME, gone.get("removed", []), gone)
        self.assertNotIn(self.NAME, self.model_names())
        self.assertIsNone(self.get_model(self.NAME))

    def test_auto_discover_at_start(self):
        self.start_with_hf_cache(auto_discover=True, build_cache_first=True, via="env")
        model = wait_until(lambda: self.get_model(self.NAME), 10,
                           "the agent to register its HF cache on connect")
        self.assertTrue(all(r.get("in_place") for r in model.get("replicas", [])), model)
        self.assertEqual(model.get("state"), "available", json.dumps(model))

    def test_the_host_decides_whether_a_connecting_agent_registers_its_cache(self):
        # The agent's cache is found through the host section of its own file (gswarm start's
        # one file); host.auto_discover_models false in the host's config keeps it unregistered
        # until a discover asks for it.
        _, agent = self.start_with_hf_cache(auto_discover=False, build_cache_first=True,
                                            via="host-section")
        self.wait_node("node-a", procs=[agent])
        self.assertIsNone(self.get_model(self.NAME))
        self.assertIn(self.NAME, self.discover().get("added", []))
        # Once registered, it stays registered across the agent's reconnects.
        agent.stop()
        self.wait_node("node-a", "offline")
        agent = self.start_agent("node-a", env_extra=self.hub_env())
        self.wait_node("node-a", procs=[agent])
        self.assertIsNotNone(self.get_model(self.NAME))

    def test_folder_copied_into_model_cache(self):
        self.start_hub_cluster()
        cache = self.model_cache_dir("node-a")
        handmade = os.path.join(cache, "handmade")
        os.makedirs(handmade)
        repo = self.repo(TINY_LLAMA)
        for path in repo.files("v1.0"):
            shutil.copyfile(repo.file_path(path, "v1.0"), os.path.join(handmade, path))
        # Not a model: no weights, no config.
        os.makedirs(os.path.join(cache, "notes"))
        with open(os.path.join(cache, "notes", "todo.txt"), "w") as f:
            f.write("not a model\n")

        human = self.assert_cli_ok(self.cli("discover"))
        self.assertFalse(human.stdout.lstrip().startswith("{"), "human output is not JSON")
        self.assertTrue(re.search(r"\bhandmade\b", human.stdout)
                        or re.search(r"\b1 new\b", human.stdout),
                        f"`gswarm discover` should say what it found:\n{human.stdout}")
        model = self.get_model("handmade")
        self.assertIsNotNone(model, "a folder copied into model_cache_dir is registered")
        self.assertEqual(model.get("state"), "available", json.dumps(model))
        rep = model["replicas"][0]
        self.assertEqual(os.path.realpath(rep["path"]), os.path.realpath(handmade), rep)
        meta = model.get("metadata") or {}
        self.assertEqual(meta.get("num_layers"), 2, meta)
        self.assertEqual(meta.get("format"), "safetensors", meta)
        self.assertNotIn("notes", self.model_names())

        again = self.cli_json("discover")
        self.assertEqual(again.get("added", []), [], again)
        names = [m.get("name") for m in again.get("models", [])]
        self.assertIn("handmade", names, again)

        shutil.rmtree(handmade)
        gone = self.cli_json("discover")
        self.assertIn("handmade", gone.get("removed", []), gone)
        self.assertNotIn("handmade", self.model_names())


class ValidateAndDeleteTest(HubTestCase):

    def test_validate_finds_corrupted_file(self):
        self.start_hub_cluster()
        self.download_ok("v", "hf://test-org/tiny-llama")
        n_files = len(self.repo(TINY_LLAMA).files())
        r = self.rest("POST", "/models/validate", body={"model_name": "v"}, timeout=30)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json.get("valid"), r)
        self.assertEqual(r.json.get("files_checked"), n_files, r)
        self.assertFalse(r.json.get("problems"), r)
        ok = self.assert_cli_ok(self.cli("validate", "v"))
        self.assertIn("v", ok.stdout)

        model_dir = self.model_dir("node-a", "v")
        size = os.path.getsize(os.path.join(model_dir, SHARD2))
        flip_byte(os.path.join(model_dir, SHARD2), size // 2)
        with open(os.path.join(model_dir, "tokenizer.json"), "r+b") as f:
            f.truncate(100)

        for method, path, body in (("POST", "/models/validate", {"model_name": "v"}),
                                   ("GET", "/models/v/validate", None)):
            with self.subTest(f"{method} {path}"):
                r = self.rest(method, path, body=body, timeout=30)
                self.assertEqual(r.status, 200, r)
                self.assertFalse(r.json.get("valid"), r)
                problems = r.json.get("problems", [])
                text = json.dumps(problems)
                self.assertIn(SHARD2, text, "the flipped byte is found")
                self.assertIn("tokenizer.json", text, "the truncated file is found")
                self.assertNotIn("config.json", text, "intact files are not reported")
                self.assertTrue(all(p.get("node_id") == "node-a" for p in problems), problems)

        bad = self.cli("validate", "v")
        self.assertEqual(bad.returncode, 1, bad)
        self.assertIn(SHARD2, bad.stdout + bad.stderr)

        missing = self.rest("POST", "/models/validate", body={"model_name": "nothing-here"})
        self.assertEqual(missing.status, 404, missing)

    def test_validate_full_rechecks_sha256(self):
        """`validate` checks sizes and the recorded XXH3-128; `--full` (REST "full") re-computes
        SHA-256. A manifest whose SHA-256 for one file was damaged after the download shows it:
        the bytes still match their XXH3-128, so only the full check reports that file."""
        self.start_hub_cluster()
        self.download_ok("vf", "hf://test-org/tiny-llama")
        model_dir = self.model_dir("node-a", "vf")
        manifest_path = os.path.join(model_dir, ".gswarm", "manifest.json")
        with open(manifest_path) as f:
            manifest = json.load(f)
        shard = next(f for f in manifest["files"] if f["path"] == SHARD2)
        self.assertRegex(shard.get("xxh3_128", ""), r"^[0-9a-f]{32}$", "recorded at download")
        shard["sha256"] = "b" * 64
        with open(manifest_path, "w") as f:
            json.dump(manifest, f)

        fast = self.assert_cli_ok(self.cli("validate", "vf"))
        self.assertIn("XXH3-128", fast.stdout)
        full = self.cli("validate", "vf", "--full")
        self.assertEqual(full.returncode, 1, full)
        self.assertIn(SHARD2, full.stdout)
        self.assertIn("expected " + "b" * 64, full.stdout)

        for method, path, body in (("POST", "/models/validate", {"model_name": "vf", "full": True}),
                                   ("GET", "/models/vf/validate?full=true", None)):
            with self.subTest(f"{method} {path}"):
                r = self.rest(method, path, body=body, timeout=30)
                self.assertEqual(r.status, 200, r)
                self.assertFalse(r.json.get("valid"), r)
                self.assertEqual([p.get("path") for p in r.json.get("problems", [])], [SHARD2], r)
        r = self.rest("GET", "/models/vf/validate", timeout=30)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.json.get("valid"), r)

    def test_delete_removes_files_and_entry(self):
        self.start_hub_cluster()
        self.download_ok("d", "hf://test-org/tiny-gguf")
        model_dir = self.model_dir("node-a", "d")
        self.assertTrue(os.path.isdir(model_dir))
        r = self.rest("DELETE", "/api/models/d", timeout=30)
        self.assertEqual(r.status, 200, r)
        wait_until(lambda: not os.path.exists(model_dir), 10, f"{model_dir} to be removed")
        self.assertIsNone(self.get_model("d", "/api/models"))
        self.assertNotIn("d", self.model_names())
        self.assertNotIn("d", self.model_names("/api/models"))
        again = self.rest("DELETE", "/api/models/d")
        self.assertEqual(again.status, 404, again)
        self.assertIn("d", error_message(again))

    def test_rm_cli(self):
        self.start_hub_cluster()
        self.download_ok("r", "hf://test-org/tiny-gguf")
        self.download_ok("keep", "hf://test-org/tiny-gguf")
        self.assert_cli_ok(self.cli("rm", "r"))
        wait_until(lambda: not os.path.exists(self.model_dir("node-a", "r")), 10,
                   "r's files to be removed")
        self.assertTrue(os.path.isdir(self.model_dir("node-a", "keep")), "other models stay")
        self.assertEqual(self.model_names(), ["keep"])
        ls = self.assert_cli_ok(self.cli("ls"))
        self.assertFalse([x for x in ls.stdout.splitlines() if re.match(r"\s*r\s", x)], ls.stdout)
        show = self.cli("show", "r")
        self.assertNotEqual(show.returncode, 0, show)
        again = self.cli("rm", "r")
        self.assertNotEqual(again.returncode, 0, again)
        self.assertIn("r", again.stderr)


class RegisterTest(HubTestCase):

    SEED_004 = {"model_name": "qwen-3b", "hf_path": "Qwen/Qwen2.5-3B-Instruct",
                "trust_remote_code": False, "cache_location": "primary", "estimated_size_mb": 6000}

    @staticmethod
    def room_bytes(path, high_watermark=0.9):
        """What a download may take at `path`: the free bytes less what the location's high
        watermark keeps free (client.disk_locations; 90% by default)."""
        while not os.path.exists(path):
            path = os.path.dirname(path)
        st = os.statvfs(path)
        headroom = math.ceil((1 - high_watermark) * st.f_blocks * st.f_frsize)
        return max(0, st.f_bavail * st.f_frsize - headroom)

    def test_register_checks_space(self):
        self.start_hub_cluster()
        r = self.rest("POST", "/api/models", body=self.SEED_004)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["model"]["name"], "qwen-3b", r)
        space = r.json.get("space_check") or {}
        self.assertTrue(space.get("cache_path"), f"space_check.cache_path: {space}")
        free = u64(space.get("free_bytes"))
        required = u64(space.get("required_bytes"))
        self.assertIn(required, (6000 * MiB, 6000 * 1000 * 1000), space)
        room = self.room_bytes(space["cache_path"])
        self.assertLess(abs(free - room), max(room // 10, 1 << 30),
                        f"free_bytes {free} vs the room below 90% full {room} of "
                        f"{space['cache_path']}")
        self.assertEqual(space.get("sufficient"), free >= required, space)
        model = self.get_model("qwen-3b", "/api/models")
        self.assertIsNotNone(model, "registered models are listed")
        self.assertIn("Qwen/Qwen2.5-3B-Instruct", model.get("source_url", ""), model)
        self.assertIn("qwen-3b", self.model_names())

        # The original GSwarm's POST /models takes the same body.
        r = self.rest("POST", "/models", body={**self.SEED_004, "model_name": "qwen-3b-b"})
        self.assertEqual(r.status, 200, r)
        self.assertIn("qwen-3b-b", self.model_names("/api/models"))

    def test_register_too_big_is_insufficient(self):
        self.start_hub_cluster()
        r = self.rest("POST", "/api/models",
                      body={**self.SEED_004, "model_name": "huge", "estimated_size_mb": 1e12})
        self.assertEqual(r.status, 200, r)
        space = r.json.get("space_check") or {}
        self.assertFalse(space.get("sufficient"), space)
        self.assertTrue(space.get("cache_path"), space)
        self.assertTrue(space.get("message"), f"says how much is missing: {space}")

    def test_register_bad_input(self):
        self.start_hub_cluster()
        r = self.rest("POST", "/api/models", body={**self.SEED_004, "cache_location": "no/where"})
        self.assertEqual(r.status, 400, r)
        self.assertIn("cache_location", error_message(r))
        # Found by UBSan: a size whose bytes do not fit 64 bits.
        r = self.rest("POST", "/api/models", body={**self.SEED_004, "estimated_size_mb": 1e300})
        self.assertEqual(r.status, 400, r)
        self.assertIn("estimated_size_mb", error_message(r))
        r = self.rest("POST", "/api/models", body={**self.SEED_004, "model_name": "../x"})
        self.assertEqual(r.status, 400, r)
        self.assertRegex(error_message(r), r"(?i)name")
        self.assertEqual(self.model_names(), [], "nothing registered")


if __name__ == "__main__":
    unittest.main()
