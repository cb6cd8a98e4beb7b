"""Downloads from a fake Hugging Face hub onto an agent's disk: what lands, what a user sees,
what goes wrong and how it recovers (a cut connection, a flipped byte, a killed agent, a
restarted host), and the jobs that track it all.

The hub is tests/support/fake_hf_hub.py, run in this process (one per test class); agents find
it through HF_ENDPOINT.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_downloads
"""

import glob
import json
import os
import re
import signal
import threading
import unittest

from gswarm_harness import (
    JOB_TIMEOUT_S, RECONNECT_TIMEOUT_S, STOP_TIMEOUT_S, HubTestCase, error_message, grpc_channel,
    import_stubs, model_files, sha256_file, u64, wait_until)

MiB = 1024 * 1024
TINY_LLAMA = "test-org/tiny-llama"
BIG_MODEL = "test-org/big-model"
GATED_MODEL = "test-org/gated-model"
BIG_FILE = "model.safetensors"
SHARD1 = "model-00001-of-00002.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"


class DownloadTestCase(HubTestCase):
    """Helpers to compare what landed on an agent's disk with what the fake hub serves."""

    def assert_files_match_repo(self, model_dir, repo_id, revision="main"):
        expected = self.repo(repo_id).files(revision)
        on_disk = model_files(model_dir)
        self.assertEqual(sorted(on_disk), sorted(expected),
                         f"files in {model_dir} should be exactly {repo_id}@{revision}'s")
        for path, entry in expected.items():
            self.assertEqual(os.path.getsize(on_disk[path]), entry["size"], f"size of {path}")
            self.assertEqual(sha256_file(on_disk[path]), entry["sha256"], f"sha256 of {path}")

    def manifest(self, model_dir):
        with open(os.path.join(model_dir, ".gswarm", "manifest.json")) as f:
            return json.load(f)

    def assert_not_visible(self, node_id, name):
        """No model directory on the node, and the catalog does not call it available."""
        model_dir = self.model_dir(node_id, name)
        self.assertFalse(os.path.exists(model_dir),
                         f"{model_dir} must not exist: {os.listdir(os.path.dirname(model_dir))}")
        model = self.get_model(name)
        if model is not None:
            self.assertNotEqual(model.get("state"), "available", json.dumps(model))
            ready = [r for r in model.get("replicas", []) if r.get("state") == "ready"]
            self.assertEqual(ready, [], f"no ready replica expected: {json.dumps(model)}")

    def job_of(self, name, kind="download"):
        """The newest job of `kind` for model `name` in GET /jobs."""
        jobs = [j for j in self.list_jobs()
                if j.get("model_name") == name and j.get("kind") == kind]
        self.assertTrue(jobs, f"GET /jobs has no {kind} job for {name}: {self.list_jobs()}")
        return max(jobs, key=lambda j: j.get("created_at", ""))

    def failed_download(self, name, source, node=None, **kw):
        """A download that must fail: checks HTTP 409, then returns (error message, job)."""
        r = self.download(name, source, node=node, **kw)
        self.assertEqual(r.status, 409, f"a failed download with wait answers 409: {r!r}")
        message = error_message(r)
        self.assertTrue(message, f"the error should say why: {r!r}")
        job = self.job_of(name)
        self.assertEqual(job.get("state"), "failed", json.dumps(job))
        self.assertTrue(job.get("message"), f"a failed job says why: {json.dumps(job)}")
        return message, job

    def part_files(self, node_id, name):
        return glob.glob(os.path.join(self.staging_dir(node_id, name), "**", "*.part"),
                         recursive=True)


class DownloadTest(DownloadTestCase):

    def test_rest_download_as_in_seed_example(self):
        self.start_hub_cluster()
        # Seed 000's curl body, plus "wait" to answer when done.
        r = self.rest("POST", "/download", body={
            "model_name": "llama2-7b", "source_url": "hf://test-org/tiny-llama",
            "target_device": "disk", "wait": True}, timeout=JOB_TIMEOUT_S)
        self.assertEqual(r.status, 200, r)
        job = r.json["job"]
        self.assertEqual(job.get("state"), "succeeded", json.dumps(job))
        self.assertEqual(job.get("kind"), "download", job)
        self.assertEqual(job.get("node_id"), "node-a", job)
        files = self.repo(TINY_LLAMA).files("main")
        total = sum(e["size"] for e in files.values())
        self.assertEqual(u64(job.get("bytes_total")), total, job)
        self.assertEqual(u64(job.get("bytes_done")), total, job)

        model_dir = self.model_dir("node-a", "llama2-7b")
        self.assert_files_match_repo(model_dir, TINY_LLAMA)
        main_sha = self.hub.commit(TINY_LLAMA, "main")
        self.assertEqual(self.manifest(model_dir).get("commit"), main_sha)
        self.assertFalse(os.path.exists(self.staging_dir("node-a", "llama2-7b")),
                         "the staging directory should be gone once the model is in place")

        for path in ("/models", "/api/models"):
            with self.subTest(path=path):
                model = self.get_model("llama2-7b", path)
                self.assertIsNotNone(model, f"GET {path}/llama2-7b")
                self.assertEqual(model.get("state"), "available", json.dumps(model))
                self.assertEqual(model.get("commit"), main_sha, json.dumps(model))
                meta = model.get("metadata") or {}
                self.assertEqual(meta.get("format"), "safetensors", meta)
                self.assertEqual(meta.get("architecture"), "LlamaForCausalLM", meta)
                self.assertEqual(meta.get("num_layers"), 4, meta)
                self.assertEqual(u64(meta.get("vocab_size")), 32000, meta)
                self.assertEqual(meta.get("dtype"), "bfloat16", meta)
                self.assertEqual(u64(meta.get("hidden_size")), 256, meta)
                self.assertEqual(u64(meta.get("context_length")), 2048, meta)
                self.assertGreater(u64(meta.get("parameter_count")), 0, meta)
                replicas = model.get("replicas", [])
                self.assertEqual(len(replicas), 1, json.dumps(model))
                rep = replicas[0]
                self.assertEqual((rep.get("node_id"), rep.get("tier"), rep.get("state")),
                                 ("node-a", "disk", "ready"), rep)
                self.assertEqual(os.path.realpath(rep.get("path", "")),
                                 os.path.realpath(model_dir), rep)
                self.assertEqual(rep.get("commit"), main_sha, rep)
                self.assertFalse(rep.get("in_place", False), rep)
                self.assertEqual(u64(rep.get("size_bytes")), total, rep)
        # GetModel lists the files with their hashes.
        listed = {f["path"]: f for f in self.get_model("llama2-7b").get("files", [])}
        self.assertEqual(sorted(listed), sorted(files))
        self.assertEqual(listed[SHARD1].get("sha256"), files[SHARD1]["sha256"])
        self.assertEqual(u64(listed[SHARD1].get("size_bytes")), files[SHARD1]["size"])

    def test_cli_download_ls_show_jobs(self):
        self.start_hub_cluster()
        result = self.cli("download", "hf://test-org/tiny-llama", "--name", "x",
                          timeout=JOB_TIMEOUT_S)
        self.assert_cli_ok(result)
        # Exit 0 means verified and in place: already true when the CLI returns.
        self.assert_files_match_repo(self.model_dir("node-a", "x"), TINY_LLAMA)
        self.assertEqual(self.get_model("x").get("state"), "available")

        ls = self.assert_cli_ok(self.cli("ls"))
        self.assertFalse(ls.stdout.lstrip().startswith("{"), "human output is not JSON")
        line = next((x for x in ls.stdout.splitlines() if re.match(r"\s*x\s", x)), None)
        self.assertIsNotNone(line, f"model x missing from `gswarm ls`:\n{ls.stdout}")
        self.assertIn("available", line)
        self.assertIn("node-a", line)
        listed = self.cli_json("ls")
        self.assertEqual([m["name"] for m in listed.get("models", [])], ["x"], listed)

        main_sha = self.hub.commit(TINY_LLAMA, "main")
        show = self.assert_cli_ok(self.cli("show", "x"))
        self.assertFalse(show.stdout.lstrip().startswith("{"), "human output is not JSON")
        for needle in ("LlamaForCausalLM", "safetensors", "bfloat16", main_sha[:10], "node-a",
                       SHARD1, SHARD2, "config.json", self.model_dir("node-a", "x")):
            self.assertIn(needle, show.stdout, f"`gswarm show x` should mention {needle!r}")
        shown = self.cli_json("show", "x")
        self.assertEqual(shown.get("name"), "x", shown)
        self.assertEqual(shown.get("metadata", {}).get("num_layers"), 4, shown)
        self.assertEqual(len(shown.get("files", [])), len(self.repo(TINY_LLAMA).files()), shown)

        missing = self.cli("show", "no-such-model")
        self.assertNotEqual(missing.returncode, 0, missing)
        self.assertIn("no-such-model", missing.stderr)

        jobs = self.assert_cli_ok(self.cli("jobs"))
        line = next((x for x in jobs.stdout.splitlines() if re.search(r"\bx\b", x)), None)
        self.assertIsNotNone(line, f"the download of x missing from `gswarm jobs`:\n{jobs.stdout}")
        self.assertIn("download", line)
        self.assertIn("succeeded", line)
        listed = self.cli_json("jobs")
        job = next(j for j in listed.get("jobs", []) if j.get("model_name") == "x")
        self.assertEqual(job.get("state"), "succeeded", job)
        self.assertIn(job["id"], jobs.stdout, "`gswarm jobs` shows the ids `gswarm cancel` takes")

    def test_revision_pin(self):
        self.start_hub_cluster()
        old_sha = self.hub.commit(TINY_LLAMA, "v1.0")
        self.assertNotEqual(old_sha, self.hub.commit(TINY_LLAMA, "main"))
        for name, source, revision in (("tl-at", "hf://test-org/tiny-llama@v1.0", None),
                                       ("tl-field", "hf://test-org/tiny-llama", "v1.0")):
            with self.subTest(source=source, revision=revision):
                job = self.download_ok(name, source, revision=revision)
                model_dir = self.model_dir("node-a", name)
                self.assert_files_match_repo(model_dir, TINY_LLAMA, "v1.0")
                self.assertEqual(self.manifest(model_dir).get("commit"), old_sha)
                self.assertEqual((job.get("replica") or {}).get("commit"), old_sha, job)
                model = self.get_model(name)
                self.assertEqual(model.get("commit"), old_sha, json.dumps(model))
                self.assertEqual([r.get("commit") for r in model.get("replicas", [])], [old_sha])
                self.assertEqual(model.get("metadata", {}).get("num_layers"), 2, model)
        # A full commit sha pins too.
        job = self.download_ok("tl-sha", f"hf://test-org/tiny-llama@{old_sha}")
        self.assertEqual((job.get("replica") or {}).get("commit"), old_sha, job)

    def test_gated_repo_needs_token(self):
        self.make_host_home()
        host = self.start_host()
        self.make_agent_home("node-open")
        self.make_agent_home("node-auth")
        open_agent = self.start_agent("node-open", env_extra=self.hub_env())
        auth_agent = self.start_agent("node-auth", env_extra=self.hub_env(
            token=self.fh.DEFAULT_TOKEN))
        for nid, agent in (("node-open", open_agent), ("node-auth", auth_agent)):
            self.wait_node(nid, procs=[host, agent])

        message, job = self.failed_download("gated", "hf://test-org/gated-model", node="node-open")
        self.assertIn("HF_TOKEN", message)
        self.assertIn("HF_TOKEN", job.get("message", ""))
        self.assertEqual(job.get("node_id"), "node-open", job)
        self.assert_not_visible("node-open", "gated")

        job = self.download_ok("gated", "hf://test-org/gated-model", node="node-auth")
        self.assertEqual(job.get("node_id"), "node-auth", job)
        self.assert_files_match_repo(self.model_dir("node-auth", "gated"), GATED_MODEL)
        self.assertEqual(self.get_model("gated").get("state"), "available")

    def test_unknown_repo_and_revision(self):
        self.start_hub_cluster()
        with self.subTest("unknown repo"):
            message, job = self.failed_download("nope", "hf://test-org/no-such-repo")
            for text in (message, job["message"]):
                self.assertIn("test-org/no-such-repo", text)
                self.assertRegex(text, r"(?i)not found|does not exist")
            self.assert_not_visible("node-a", "nope")
        with self.subTest("unknown revision"):
            message, job = self.failed_download("nope-rev", "hf://test-org/tiny-llama@no-such-rev")
            for text in (message, job["message"]):
                self.assertIn("no-such-rev", text)
                self.assertRegex(text, r"(?i)revision")
                self.assertRegex(text, r"(?i)not found|does not exist")
            self.assert_not_visible("node-a", "nope-rev")
        with self.subTest("CLI"):
            result = self.cli("download", "hf://test-org/no-such-repo", "--name", "nope-cli",
                              timeout=JOB_TIMEOUT_S)
            self.assertNotEqual(result.returncode, 0, result)
            self.assertIn("test-org/no-such-repo", result.stderr)
            self.assert_not_visible("node-a", "nope-cli")

    def test_grpc_wait_answers_when_the_job_ends(self):
        """gRPC Download with wait: the answer comes from a watch on the job (no thread waits),
        the ended job when it succeeded, ABORTED saying why when it failed."""
        self.start_hub_cluster()
        grpc, api_pb2, api_pb2_grpc = import_stubs()
        with grpc_channel(self.grpc_target) as channel:
            stub = api_pb2_grpc.GSwarmStub(channel)
            done = stub.Download(api_pb2.DownloadRequest(
                model_name="waited", source_url="hf://test-org/tiny-llama", wait=True),
                timeout=JOB_TIMEOUT_S)
            self.assertEqual(done.job.state, "succeeded", done)
            self.assertEqual(done.job.model_name, "waited", done)
            self.assertTrue(os.path.isdir(self.model_dir("node-a", "waited")))
            with self.assertRaises(grpc.RpcError) as ctx:
                stub.Download(api_pb2.DownloadRequest(
                    model_name="nope-grpc", source_url="hf://test-org/no-such-repo", wait=True),
                    timeout=JOB_TIMEOUT_S)
            self.assertEqual(ctx.exception.code(), grpc.StatusCode.ABORTED, ctx.exception)
            self.assertIn("test-org/no-such-repo", ctx.exception.details())
            # Without wait: the job at once, still running or just ended.
            started = stub.Download(api_pb2.DownloadRequest(
                model_name="waited", source_url="hf://test-org/tiny-llama"), timeout=10)
            self.assertTrue(started.job.id, started)

    def test_offline_mode_with_nothing_cached(self):
        self.make_host_home()
        host = self.start_host()
        agent = self.start_agent("node-a", env_extra=self.hub_env(HF_HUB_OFFLINE="1"))
        self.wait_node("node-a", procs=[host, agent])
        message, job = self.failed_download("offline", "hf://test-org/tiny-llama")
        for text in (message, job["message"]):
            self.assertIn("HF_HUB_OFFLINE", text)
        self.assertEqual(self.hub.stats()["requests_total"], 0, "offline means offline")
        self.assert_not_visible("node-a", "offline")

    def test_import_local_folder(self):
        self.start_hub_cluster()
        src = os.path.join(self.root, "llama-src")
        os.makedirs(src)
        repo = self.repo(TINY_LLAMA)
        for path in repo.files("v1.0"):
            with open(os.path.join(src, path), "wb") as f:
                f.write(repo.file_bytes(path, "v1.0"))
        job = self.download_ok("imported", f"file://{src}")
        model_dir = self.model_dir("node-a", "imported")
        self.assert_files_match_repo(model_dir, TINY_LLAMA, "v1.0")
        self.assertTrue(os.path.isdir(src) and len(os.listdir(src)) == len(repo.files("v1.0")),
                        "an import copies; the source folder stays as it was")
        model = self.get_model("imported")
        self.assertEqual(model.get("state"), "available", json.dumps(model))
        self.assertEqual(model.get("metadata", {}).get("num_layers"), 2, json.dumps(model))
        self.assertEqual(u64(job.get("bytes_done")),
                         sum(e["size"] for e in repo.files("v1.0").values()), job)
        self.assertEqual(self.hub.stats()["requests_total"], 0, "a local import needs no hub")
        relative = self.download("rel", "file://relative/dir", wait=False)
        self.assertEqual(relative.status, 400, relative)

    def test_bad_scheme_and_name_refused_at_once(self):
        self.start_hub_cluster()
        cases = (
            ("ftp-model", "ftp://example.com/model.bin", r"(?i)ftp|scheme"),
            ("../x", "hf://test-org/tiny-llama", r"(?i)name"),
            ("a/b", "hf://test-org/tiny-llama", r"(?i)name"),
            (".hidden", "hf://test-org/tiny-llama", r"(?i)name"),
        )
        for name, source, pattern in cases:
            with self.subTest(name=name, source=source):
                # Without "wait": a valid request would answer 200 with a pending job.
                r = self.download(name, source, wait=False)
                self.assertEqual(r.status, 400, r)
                self.assertRegex(error_message(r), pattern)
                self.assertNotIn(name, [j.get("model_name") for j in self.list_jobs()],
                                 "a refused request starts no job")
        self.assertFalse(os.path.exists(os.path.join(self.agent_homes["node-a"].path, "x")),
                         "../x must not land beside the model cache")
        self.assertEqual(self.model_names(), [], "nothing registered")
        for name, source, pattern in (("ftp-cli", "ftp://example.com/model.bin", r"(?i)ftp|scheme"),
                                      ("../x", "hf://test-org/tiny-llama", r"(?i)name")):
            with self.subTest(cli=source, name=name):
                result = self.cli("download", source, "--name", name)
                self.assertNotEqual(result.returncode, 0, result)
                self.assertRegex(result.stderr, pattern)
        self.assertEqual(self.hub.stats()["requests_total"], 0, "the hub was never asked")

    def test_flipped_byte_is_caught(self):
        self.start_hub_cluster()
        size = self.repo(TINY_LLAMA).files()[SHARD2]["size"]
        self.hub.add_fault(flip_byte_at=size // 2, path=f"{TINY_LLAMA}/{SHARD2}")  # every time
        message, job = self.failed_download("flipped", "hf://test-org/tiny-llama")
        self.assertGreaterEqual(self.hub.stats()["faults_fired"].get("flip_byte_at", 0), 1)
        for text in (message, job["message"]):
            self.assertIn(SHARD2, text, "the error names the file")
            self.assertRegex(text, r"(?i)sha256|checksum|corrupt")
        self.assert_not_visible("node-a", "flipped")

    def test_cut_connection_is_resumed(self):
        self.start_hub_cluster()
        entry = self.repo(BIG_MODEL).files()[BIG_FILE]
        self.assertGreaterEqual(entry["size"], 100 * MiB, "the issue asks for a >= 100 MB file")
        cut = 30 * MiB
        self.hub.add_fault(cut_after_bytes=cut, times=1, path=f"{BIG_MODEL}/{BIG_FILE}")
        self.download_ok("big", "hf://test-org/big-model")
        stats = self.hub.stats()
        self.assertEqual(stats["faults_fired"].get("cut_after_bytes"), 1, stats["faults_fired"])
        key = f"{BIG_MODEL}/{BIG_FILE}"
        resumed = [r for r in stats["ranges"] if r["file"] == key and r["status"] == 206
                   and int(re.match(r"bytes=(\d*)", r["range"]).group(1) or 0) > 0]
        self.assertTrue(resumed, f"a Range request should continue the file: {stats['ranges']}")
        # Resumed, not started over: the bytes before the cut went over the wire once.
        self.assertLess(stats["bytes_per_file"][key], entry["size"] + 8 * MiB,
                        stats["bytes_per_file"])
        self.assert_files_match_repo(self.model_dir("node-a", "big"), BIG_MODEL)


class DownloadRecoveryTest(DownloadTestCase):
    """Crashes and restarts in the middle of a download."""

    def slow_big_download(self, name, rate=20 * MiB, on_disk=8 * MiB):
        """Starts a rate-limited download of big-model; returns its job id once `on_disk` bytes
        of the big file are in its .part."""
        self.hub.add_fault(rate_limit_bytes_per_s=rate, path=f"{BIG_MODEL}/{BIG_FILE}")
        r = self.download(name, "hf://test-org/big-model", wait=False)
        self.assertEqual(r.status, 200, r)
        job_id = r.json["job"]["id"]

        def started():
            job = self.get_job(job_id)
            self.assertNotIn(job.get("state"), ("succeeded", "failed", "cancelled"), job)
            parts = self.part_files("node-a", name)
            return (u64(job.get("bytes_done")) > 0 and parts
                    and max(os.path.getsize(p) for p in parts) >= on_disk)
        wait_until(started, JOB_TIMEOUT_S, f"{name}: bytes_done > 0 and {on_disk} B in a .part",
                   procs=self.procs, describe=lambda: json.dumps(self.get_job(job_id)))
        return job_id

    def test_agent_killed_mid_file_resumes(self):
        host, agents = self.start_hub_cluster()
        size = self.repo(BIG_MODEL).files()[BIG_FILE]["size"]
        # Past half the file, so that fetching it again from zero would break the bound below.
        job_id = self.slow_big_download("big", rate=30 * MiB, on_disk=60 * MiB)
        agents["node-a"].kill()  # SIGKILL: no chance to tidy up
        self.hub.clear_faults()
        part = os.path.join(self.staging_dir("node-a", "big"), BIG_FILE + ".part")
        self.assertTrue(os.path.exists(part),
                        f"expected {part}: {self.part_files('node-a', 'big')}")
        have = os.path.getsize(part)
        self.assertLess(have, size, "killed before the file was complete")
        missing = size - have
        self.assert_not_visible("node-a", "big")
        self.hub.reset_stats()

        agent = self.start_agent("node-a", env_extra=self.hub_env())  # same HOME, same node id
        job = self.wait_job(job_id, timeout=RECONNECT_TIMEOUT_S + JOB_TIMEOUT_S,
                            procs=[host, agent])
        self.assertEqual(job.get("state"), "succeeded", json.dumps(job))
        self.assert_files_match_repo(self.model_dir("node-a", "big"), BIG_MODEL)
        stats = self.hub.stats()
        served = stats["bytes_per_file"].get(f"{BIG_MODEL}/{BIG_FILE}", 0)
        self.assertTrue([r for r in stats["ranges"] if r["status"] == 206
                         and r["file"] == f"{BIG_MODEL}/{BIG_FILE}"],
                        f"the restarted agent continues with a Range: {stats['ranges']}")
        self.assertLess(served, 2 * missing,
                        f"after the restart the hub served {served} bytes of the big file; "
                        f"{missing} were missing ({have} of {size} on disk at the kill)")
        self.assertEqual(self.get_model("big").get("state"), "available")
        self.assertFalse(self.part_files("node-a", "big"), "no .part left behind")

    def test_host_restart_keeps_catalog(self):
        host, agents = self.start_hub_cluster()
        job = self.download_ok("kept", "hf://test-org/tiny-llama")
        self.assertEqual(host.stop(signal.SIGTERM), 0, "host exit code on SIGTERM")
        host2 = self.start_host()
        self.assertIn("kept", self.model_names(), "the catalog comes back from host.db")
        self.wait_node("node-a", timeout=RECONNECT_TIMEOUT_S, procs=[host2, agents["node-a"]])
        model = wait_until(lambda: (m := self.get_model("kept")) and m.get("state") == "available"
                           and m, 10, "kept to be available again", procs=[host2])
        self.assertEqual(model.get("commit"), self.hub.commit(TINY_LLAMA), json.dumps(model))
        self.assertEqual(model.get("metadata", {}).get("num_layers"), 4, json.dumps(model))
        self.assertEqual([r.get("node_id") for r in model.get("replicas", [])], ["node-a"])
        self.assertEqual(self.get_job(job["id"]).get("state"), "succeeded",
                         "jobs are kept across a restart too")

    def test_host_restart_mid_download(self):
        host, agents = self.start_hub_cluster()
        job_id = self.slow_big_download("big", rate=25 * MiB)
        self.assertEqual(host.stop(signal.SIGTERM), 0, "host exit code on SIGTERM")
        self.hub.clear_faults()
        host2 = self.start_host()
        job = self.wait_job(job_id, timeout=RECONNECT_TIMEOUT_S + JOB_TIMEOUT_S,
                            procs=[host2, agents["node-a"]])
        self.assertEqual(job.get("state"), "succeeded", json.dumps(job))
        self.assert_files_match_repo(self.model_dir("node-a", "big"), BIG_MODEL)
        model = wait_until(lambda: (m := self.get_model("big")) and m.get("state") == "available"
                           and m, 10, "big to be available", procs=[host2])
        self.assertEqual(model.get("commit"), self.hub.commit(BIG_MODEL), json.dumps(model))


    def stop_while_requests_wait(self, proc):
        """SIGTERM `proc` (host or start) while a REST and a gRPC Download with wait: true hang
        on a slow download: it exits 0 promptly and both callers hear UNAVAILABLE."""
        self.hub.add_fault(rate_limit_bytes_per_s=1 * MiB, path=f"{BIG_MODEL}/{BIG_FILE}")
        # Two models from one repo: two jobs, one waited on over REST, one over gRPC.
        grpc, api_pb2, api_pb2_grpc = import_stubs()
        answers = {}

        def rest():
            answers["rest"] = self.download("big", "hf://test-org/big-model", wait=True,
                                            timeout=120)

        def rpc():
            with grpc_channel(self.grpc_target) as channel:
                try:
                    api_pb2_grpc.GSwarmStub(channel).Download(api_pb2.DownloadRequest(
                        model_name="big-rpc", source_url="hf://test-org/big-model",
                        target_device="disk", wait=True), timeout=120)
                    answers["grpc"] = "OK"
                except grpc.RpcError as e:
                    answers["grpc"] = e.code()

        callers = [threading.Thread(target=f, daemon=True) for f in (rest, rpc)]
        for t in callers:
            t.start()
        wait_until(lambda: all(any(os.path.getsize(p) > MiB for p in self.part_files("node-a", n))
                               for n in ("big", "big-rpc")),
                   JOB_TIMEOUT_S, "1 MiB of big-model in each job's .part", procs=[proc])
        self.assertEqual(proc.stop(signal.SIGTERM, timeout=STOP_TIMEOUT_S), 0,
                         "exit code on SIGTERM with requests waiting on a job")
        for t in callers:
            t.join(10)
        self.assertEqual(answers.get("rest") and answers["rest"].status, 503, answers)
        self.assertEqual(answers.get("grpc"), grpc.StatusCode.UNAVAILABLE, answers)

    def test_host_stops_while_requests_wait(self):
        host, _ = self.start_hub_cluster()
        self.stop_while_requests_wait(host)

    def test_start_stops_while_requests_wait(self):
        home = self.make_host_home(client_node_id="node-a")
        self.agent_homes["node-a"] = home  # the local agent keeps its models in the host's HOME
        start = self.spawn("start", ["start", *self._log_level_args()], home,
                           env_extra=self.hub_env())
        self.wait_ready(start)
        self.wait_node("node-a", "online", procs=[start])
        self.stop_while_requests_wait(start)


class JobsTest(DownloadTestCase):

    def test_jobs_newest_first(self):
        self.start_hub_cluster()
        first = self.download_ok("gguf-1", "hf://test-org/tiny-gguf")
        second = self.download_ok("gguf-2", "hf://test-org/tiny-gguf")
        ids = [j["id"] for j in self.list_jobs()]
        self.assertIn(first["id"], ids)
        self.assertIn(second["id"], ids)
        self.assertLess(ids.index(second["id"]), ids.index(first["id"]), "newest first")
        got = self.get_job(first["id"])
        self.assertEqual((got.get("model_name"), got.get("state")), ("gguf-1", "succeeded"))
        missing = self.rest("GET", "/jobs/job-does-not-exist")
        self.assertEqual(missing.status, 404, missing)
        # GGUF metadata comes from the file's header.
        meta = self.get_model("gguf-1").get("metadata", {})
        self.assertEqual(meta.get("format"), "gguf", meta)
        self.assertEqual(meta.get("num_layers"), 4, meta)
        self.assertEqual(u64(meta.get("context_length")), 2048, meta)

    def test_cancel_slow_download(self):
        self.start_hub_cluster()
        self.hub.add_fault(rate_limit_bytes_per_s=4 * MiB, path=f"{BIG_MODEL}/{BIG_FILE}")
        for name, how in (("slow-rest", "rest"), ("slow-cli", "cli")):
            with self.subTest(how=how):
                r = self.download(name, "hf://test-org/big-model", wait=False)
                self.assertEqual(r.status, 200, r)
                job_id = r.json["job"]["id"]
                self.wait_job(job_id, states=("running",), procs=self.procs,
                              where=lambda j: u64(j.get("bytes_done")) > 0)
                if how == "rest":
                    c = self.rest("DELETE", f"/jobs/{job_id}")
                    self.assertEqual(c.status, 200, c)
                else:
                    self.assert_cli_ok(self.cli("cancel", job_id))
                job = self.wait_job(job_id, timeout=15, procs=self.procs)
                self.assertEqual(job.get("state"), "cancelled", json.dumps(job))
                self.assert_not_visible("node-a", name)
        jobs = self.assert_cli_ok(self.cli("jobs"))
        line = next((x for x in jobs.stdout.splitlines() if "slow-rest" in x), "")
        self.assertIn("cancelled", line, jobs.stdout)
        # The agent keeps working: a later download still succeeds.
        self.hub.clear_faults()
        self.download_ok("after", "hf://test-org/tiny-gguf")


if __name__ == "__main__":
    unittest.main()
