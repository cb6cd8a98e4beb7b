"""The data path: where a model's disk copy goes, how much room a download may take, where its
bytes came from, and the fast digest that guards copies.

- Disk locations (client.disk_locations): a model registered with cache_location "secondary"
  (seed 004's body) is downloaded into that location's directory, not the model cache; its
  replica says location "secondary" (a default download says "primary", a "custom" one with its
  cache_path says "custom"); `gswarm ls` shows node-a/disk:secondary and `gswarm show` a LOCATION
  column; after an agent restart the scan of every location still reports it there (and finds a
  model put there by hand). An unknown location name is accepted at registration, and the
  download then fails saying there is no such disk location.
- Reservations: a slow download of big-model (32 MiB) into a 48 MiB tmpfs (high watermark 0.9)
  holds its bytes; a second download of the same size into that location is refused at once
  ("not enough disk space ... promised to other downloads and copies") and writes nothing there;
  the first still succeeds, its reservation is released (the node reports 0 reserved), the
  second is refused by the plain figures (free below the watermark, checked against statvfs),
  and fits once the first is removed. Mounting needs root; the test is skipped, saying why,
  when it cannot mount.
- Where bytes came from: a download from the Hub reports bytes_from_hub; the same commit
  downloaded on a second node comes from the first node's data port (bytes_from_peers, nothing
  from the Hub); GET /metrics has gswarm_download_bytes_total{source="hub"|"peer"} with those
  figures.
- Fast digest: every file of a downloaded model's manifest has an XXH3-128 digest next to its
  sha256. A byte flipped in the middle of a weight file on disk (same size, same mtime) makes a
  copy disk -> DRAM fail naming the file and xxh3_128, leaving nothing in the DRAM tier, and a
  copy to another node fail with "expected xxh3_128", leaving nothing visible there.

Run: cd tests/integration && GSWARM_BIN=../../build/cli/gswarm \
     GSWARM_PYTHON_STUBS=../../build/python /usr/bin/python3 -m unittest -v test_data_path
"""

import json
import math
import os
import re
import shutil
import signal
import unittest

from gswarm_harness import (
    JOB_DONE_STATES, JOB_TIMEOUT_S, RECONNECT_TIMEOUT_S, TierTestCase, error_message,
    format_bytes, read_manifest, tree_bytes, u64, wait_until)

MiB = 1024 * 1024
TINY_LLAMA = "test-org/tiny-llama"
BIG_MODEL = "test-org/big-model"
BIG_FILE = "model.safetensors"
SHARD1 = "model-00001-of-00002.safetensors"
BIG_FILE_MB = 32  # big-model's weights: fits a 48 MiB disk once, not twice
SMALL_DISK_MB = 48
WATERMARK = 0.9
SLOW_HUB_BYTES_PER_S = 8 * MiB  # big-model takes about 4 s: the window for the second download
XXH3_HEX = re.compile(r"^[0-9a-f]{32}$")
METRIC = re.compile(r'^gswarm_download_bytes_total\{source="([^"]*)"\} (\S+)$', re.MULTILINE)


def job_u64(job, name):
    """A uint64 field of a job in either JSON spelling (bytes_from_hub or bytesFromHub)."""
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    return u64(job.get(name, job.get(camel)))


def flip_middle_byte(path):
    """XORs the byte in the middle of `path` with 0xFF in place: same size, same mtime (bit rot,
    not an edit). Returns the offset."""
    st = os.stat(path)
    offset = st.st_size // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    return offset


class DataPathTestCase(TierTestCase):
    """A TierTestCase whose fake hub's big-model is BIG_FILE_MB MiB, with helpers for disk
    locations."""

    hub_big_file_mb = BIG_FILE_MB

    def register(self, name, repo, **extra):
        """POST /api/models (seed 004's body); fails unless HTTP 200."""
        body = {"model_name": name, "hf_path": repo, "trust_remote_code": False, **extra}
        r = self.rest("POST", "/api/models", token=self.api_token(), body=body)
        self.assertEqual(r.status, 200, f"registering {name} with {extra}: {r!r}")
        return r.json

    def failed_job(self, r, name, kind):
        """The answer `r` of a download or copy (with wait) that must fail: HTTP 409 saying why,
        and the newest `kind` job of `name` failed. Returns that job."""
        self.assertEqual(r.status, 409, f"a failed {kind} with wait answers 409: {r!r}")
        self.assertTrue(error_message(r), f"the error says why: {r!r}")
        jobs = [j for j in self.list_jobs()
                if j.get("model_name") == name and j.get("kind") == kind]
        self.assertTrue(jobs, f"GET /jobs has no {kind} job for {name}: {self.list_jobs()}")
        job = max(jobs, key=lambda j: j.get("created_at", ""))
        self.assertEqual(job.get("state"), "failed", json.dumps(job))
        return job

    def failed_download(self, name, source, **kw):
        return self.failed_job(self.download(name, source, **kw), name, "download")

    def disk_replicas(self, name):
        """GET /models/{name}'s ready disk replicas as {node_id: replica}."""
        model = self.get_model(name)
        self.assertIsNotNone(model, f"{name} should be in the catalog")
        return {r.get("node_id"): r for r in model.get("replicas", [])
                if r.get("tier") == "disk" and r.get("state") == "ready"}

    def assert_replica_at(self, name, location, directory, node="node-a"):
        rep = self.disk_replicas(name).get(node)
        self.assertIsNotNone(rep, f"{name} has no ready disk replica on {node}: "
                                  f"{json.dumps(self.get_model(name))}")
        self.assertEqual(rep.get("location"), location, json.dumps(rep))
        self.assertEqual(os.path.realpath(rep.get("path", "")),
                         os.path.realpath(os.path.join(directory, name)), json.dumps(rep))
        return rep

    def node_location(self, node_id, location):
        """The node's reported figures of one disk location (GET /nodes memory.disk_locations);
        None when it reports none by that name."""
        mem = self.nodes()[node_id].get("memory", {})
        return next((d for d in mem.get("disk_locations", []) if d.get("name") == location), None)


class DiskLocationsTest(DataPathTestCase):

    def start_with_secondary(self):
        self.secondary = os.path.join(self.root, "secondary-disk")
        os.makedirs(self.secondary)
        self.make_host_home()
        host = self.start_host()
        self.make_tier_agent_home("node-a", 0.05, disk_locations={
            "secondary": {"path": self.secondary, "high_watermark": WATERMARK}})
        agent = self.start_agent("node-a", env_extra=self.hub_env())
        self.wait_node("node-a", procs=[host, agent])
        return host, agent

    def test_secondary_and_custom_locations_survive_a_restart(self):
        host, agent = self.start_with_secondary()
        expected = self.repo(TINY_LLAMA).files()
        custom = os.path.join(self.root, "custom-disk")

        self.register("m", TINY_LLAMA, cache_location="secondary")
        job = self.download_ok("m", f"hf://{TINY_LLAMA}")
        self.assert_same_files(os.path.join(self.secondary, "m"), expected)
        self.assertFalse(os.path.exists(self.model_dir("node-a", "m")),
                         "a model registered for secondary is not in the model cache")
        self.assertFalse(os.path.exists(os.path.join(self.secondary, ".gswarm-staging", "m")),
                         "staging is cleared after success")
        self.assert_replica_at("m", "secondary", self.secondary)
        self.assertEqual((job.get("replica") or {}).get("location"), "secondary", json.dumps(job))
        # The manifest carries the fast digest next to sha256.
        for f in read_manifest(os.path.join(self.secondary, "m")).get("files", []):
            self.assertRegex(f.get("xxh3_128", ""), XXH3_HEX, f"xxh3_128 of {f}")
            self.assertTrue(f.get("sha256"), f)

        self.download_ok("p", f"hf://{TINY_LLAMA}")  # not registered: the model cache
        self.assert_replica_at("p", "primary", self.model_cache_dir("node-a"))
        self.assertFalse(os.path.exists(os.path.join(self.secondary, "p")))

        self.register("c", TINY_LLAMA, cache_location="custom", cache_path=custom)
        self.download_ok("c", f"hf://{TINY_LLAMA}")
        self.assert_same_files(os.path.join(custom, "c"), expected)
        self.assert_replica_at("c", "custom", custom)

        # The CLI: ls says which location holds a copy (nothing for the primary one).
        ls = self.assert_cli_ok(self.cli("ls")).stdout
        rows = {x.split()[0]: x for x in ls.splitlines() if x.strip()}
        self.assertIn("node-a/disk:secondary", rows.get("m", ""), ls)
        self.assertIn("node-a/disk:custom", rows.get("c", ""), ls)
        self.assertRegex(rows.get("p", ""), r"node-a/disk(?!:)", ls)
        show = self.assert_cli_ok(self.cli("show", "m")).stdout
        header = next((x for x in show.splitlines() if re.match(r"\s*NODE\s", x)), "")
        self.assertRegex(header, r"\bLOCATION\b", show)
        row = next((x for x in show.splitlines() if re.match(r"\s*node-a\s+disk\s", x)), "")
        self.assertRegex(row, r"\bsecondary\b", show)

        # Restart: the scan covers every location. A copy put in secondary by hand (with its
        # manifest renamed) is found there too.
        self.assertEqual(agent.stop(signal.SIGTERM), 0)
        by_hand = os.path.join(self.secondary, "m2")
        shutil.copytree(os.path.join(self.secondary, "m"), by_hand)
        manifest = read_manifest(by_hand)
        manifest["name"] = "m2"
        with open(os.path.join(by_hand, ".gswarm", "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
        agent = self.start_agent("node-a", env_extra=self.hub_env())
        self.wait_node("node-a", timeout=RECONNECT_TIMEOUT_S, procs=[host, agent])
        wait_until(lambda: "m2" in self.model_names(), 10,
                   "node-a's rescan to report m2 from the secondary location",
                   procs=[host, agent], describe=self.model_names)
        self.assert_replica_at("m2", "secondary", self.secondary)
        self.assert_replica_at("m", "secondary", self.secondary)
        self.assert_replica_at("c", "custom", custom)
        self.assert_replica_at("p", "primary", self.model_cache_dir("node-a"))

    def test_unknown_location_fails_at_download(self):
        self.start_with_secondary()
        # A valid name that no node configures: accepted when registered ...
        self.register("t", TINY_LLAMA, cache_location="tertiary")
        # ... and refused by the node that is asked to write there.
        job = self.failed_download("t", f"hf://{TINY_LLAMA}")
        self.assertIn('no disk location "tertiary"', job.get("message", ""), json.dumps(job))
        self.assertEqual(self.disk_replicas("t"), {})
        for d in (self.secondary, self.model_cache_dir("node-a")):
            self.assertFalse(os.path.exists(os.path.join(d, "t")), d)


class ReservationTest(DataPathTestCase):

    def big2_left_nothing(self, mnt):
        staging = os.path.join(mnt, ".gswarm-staging")
        self.assertFalse(os.path.exists(os.path.join(mnt, "big2")), os.listdir(mnt))
        left = sorted(e for e in (os.listdir(staging) if os.path.isdir(staging) else [])
                      if e.startswith("big2"))
        self.assertEqual(left, [], f"big2 left staging entries in {staging}")
        self.assertEqual(self.disk_replicas("big2"), {})

    def test_a_download_that_does_not_fit_beside_a_running_one_is_refused(self):
        mnt = self.mount_tmpfs(SMALL_DISK_MB)
        self.make_host_home()
        host = self.start_host()
        self.make_tier_agent_home("node-a", 0.05, disk_locations={
            "secondary": {"path": mnt, "high_watermark": WATERMARK}})
        agent = self.start_agent("node-a", env_extra=self.hub_env())
        procs = [host, agent]
        self.wait_node("node-a", procs=procs)
        size = sum(e["size"] for e in self.repo(BIG_MODEL).files().values())
        st = os.statvfs(mnt)
        total = st.f_blocks * st.f_frsize
        self.assertLess(size, st.f_bavail * st.f_frsize - (1 - WATERMARK) * total,
                        "one big-model fits below the watermark")
        self.assertGreater(2 * size, st.f_bavail * st.f_frsize - (1 - WATERMARK) * total,
                           "two do not")

        self.register("big", BIG_MODEL, cache_location="secondary")
        self.register("big2", BIG_MODEL, cache_location="secondary")
        self.hub.add_fault(rate_limit_bytes_per_s=SLOW_HUB_BYTES_PER_S,
                           path=f"{BIG_MODEL}/{BIG_FILE}")
        r = self.download("big", f"hf://{BIG_MODEL}", wait=False)
        self.assertEqual(r.status, 200, r)
        big_job = r.json["job"]["id"]
        staging = os.path.join(mnt, ".gswarm-staging", "big")
        wait_until(lambda: tree_bytes(staging) >= MiB, JOB_TIMEOUT_S,
                   "big's first MiB staged in the secondary location", procs=procs,
                   describe=lambda: json.dumps(self.get_job(big_job)))
        # The reservation shows in the node's figures for the location.
        self.wait_node("node-a", procs=procs, where=lambda n: any(
            d.get("name") == "secondary" and u64(d.get("reserved_bytes")) > 0
            for d in n.get("memory", {}).get("disk_locations", [])))

        # big2 does not fit beside what big has promised: refused before writing a byte.
        job = self.failed_download("big2", f"hf://{BIG_MODEL}", timeout=JOB_TIMEOUT_S)
        big_state = self.get_job(big_job).get("state")
        self.assertNotIn(big_state, JOB_DONE_STATES,
                         "big should still be downloading when big2 is refused (the hub is "
                         f"slowed to {SLOW_HUB_BYTES_PER_S} B/s); it is {big_state}")
        message = job.get("message", "")
        self.assertIn("not enough disk space", message, json.dumps(job))
        self.assertIn("big2", message)
        self.assertIn("location secondary", message)
        self.assertIn(mnt, message)
        self.assertIn(f"needs {format_bytes(size)}", message)
        self.assertRegex(message, r"free below its 90% high watermark \([\d.]+ \w+ of it promised "
                                  r"to other downloads and copies\)")
        self.big2_left_nothing(mnt)

        # The first download is unharmed, and gives its reservation back when done.
        self.hub.clear_faults()
        done = self.wait_job(big_job, procs=procs)
        self.assertEqual(done.get("state"), "succeeded", json.dumps(done))
        self.assert_same_files(os.path.join(mnt, "big"), self.repo(BIG_MODEL).files())
        self.assert_replica_at("big", "secondary", mnt)
        self.wait_node("node-a", procs=procs, where=lambda n: any(
            d.get("name") == "secondary" and u64(d.get("reserved_bytes")) == 0
            for d in n.get("memory", {}).get("disk_locations", [])))

        # Nothing promised now, but big's bytes are on the disk: still no room, by the figures.
        st = os.statvfs(mnt)
        usable = st.f_bavail * st.f_frsize - math.ceil(
            (1 - WATERMARK) * st.f_blocks * st.f_frsize)
        job = self.failed_download("big2", f"hf://{BIG_MODEL}", timeout=JOB_TIMEOUT_S)
        message = job.get("message", "")
        self.assertIn(f"needs {format_bytes(size)}, {format_bytes(usable)} free below its 90% "
                      "high watermark;", message, json.dumps(job))
        self.assertNotIn("promised", message)
        self.big2_left_nothing(mnt)

        # Once big is removed, big2 fits.
        self.assert_cli_ok(self.cli("rm", "big", timeout=JOB_TIMEOUT_S))
        wait_until(lambda: not os.path.exists(os.path.join(mnt, "big")), 10,
                   "big's files to be removed from the secondary location", procs=procs)
        self.download_ok("big2", f"hf://{BIG_MODEL}")
        self.assert_same_files(os.path.join(mnt, "big2"), self.repo(BIG_MODEL).files())
        self.assert_replica_at("big2", "secondary", mnt)


class ByteSourcesTest(DataPathTestCase):

    def download_bytes_metric(self):
        r = self.rest("GET", "/metrics", token=self.api_token())
        self.assertEqual(r.status, 200, r)
        return {src: float(v) for src, v in METRIC.findall(r.text)}

    def test_hub_and_peer_bytes_in_jobs_and_metrics(self):
        self.start_tier_cluster({"node-a": 0.05, "node-b": 0.05})
        size = sum(e["size"] for e in self.repo(TINY_LLAMA).files().values())
        sha = self.hub.commit(TINY_LLAMA, "main")
        source = f"hf://{TINY_LLAMA}@{sha}"

        a = self.get_job(self.download_ok("tl", source, node="node-a")["id"])
        self.assertGreaterEqual(job_u64(a, "bytes_from_hub"), size, json.dumps(a))
        self.assertEqual(job_u64(a, "bytes_from_peers"), 0, json.dumps(a))

        self.hub.reset_stats()
        b = self.get_job(self.download_ok("tl", source, node="node-b")["id"])
        self.assertEqual(b.get("node_id"), "node-b", json.dumps(b))
        stats = self.hub.stats()
        self.assertEqual(stats["requests_total"], 0,
                         f"node-b's copy of a held commit comes from node-a: {stats['log'][-5:]}")
        self.assertGreaterEqual(job_u64(b, "bytes_from_peers"), size, json.dumps(b))
        self.assertEqual(job_u64(b, "bytes_from_hub"), 0, json.dumps(b))
        self.assert_same_files(self.model_dir("node-b", "tl"), self.repo(TINY_LLAMA).files())

        want = {"hub": float(job_u64(a, "bytes_from_hub")),
                "peer": float(job_u64(b, "bytes_from_peers"))}
        got = wait_until(lambda: (lambda m: m if m == want else None)(
            self.download_bytes_metric()), 10,
            f"gswarm_download_bytes_total to be {want}", describe=self.download_bytes_metric)
        self.assertGreaterEqual(got["hub"], size)


class FastDigestTest(DataPathTestCase):

    def test_disk_to_dram_copy_detects_a_flipped_byte(self):
        self.start_tier_cluster()
        self.download_ok("good", f"hf://{TINY_LLAMA}")
        self.download_ok("bad", f"hf://{TINY_LLAMA}")
        bad_dir = self.model_dir("node-a", "bad")
        entry = {f["path"]: f for f in read_manifest(bad_dir).get("files", [])}.get(SHARD1)
        self.assertIsNotNone(entry, f"{SHARD1} in bad's manifest")
        self.assertRegex(entry.get("xxh3_128", ""), XXH3_HEX, entry)

        self.copy_ok("good")  # an intact copy passes the check
        self.assertEqual(self.dram_names("node-a"), ["good"])
        r = self.rest("DELETE", "/memory/dram/good", token=self.api_token())
        self.assertEqual(r.status, 200, r)
        wait_until(lambda: self.dram_names("node-a") == [] and tree_bytes(
            self.dram_dir("node-a")) == 0, 10, "good evicted from DRAM",
            procs=list(self.procs))

        flip_middle_byte(os.path.join(bad_dir, SHARD1))
        job = self.failed_job(self.copy("bad"), "bad", "copy")
        message = job.get("message", "")
        self.assertIn(SHARD1, message, json.dumps(job))
        self.assertIn("xxh3_128", message, json.dumps(job))
        wait_until(lambda: tree_bytes(self.dram_dir("node-a")) == 0, 10,
                   "nothing of the failed copy left under the DRAM tier", procs=list(self.procs),
                   describe=lambda: self.dram_entries("node-a"))
        self.assertEqual(self.dram_names("node-a"), [])
        self.assertEqual(self.replica_tiers("bad"), {("node-a", "disk")})

    def test_cross_node_copy_detects_a_flipped_byte(self):
        self.start_tier_cluster({"node-a": 0.05, "node-b": 0.05})
        self.download_ok("tl", f"hf://{TINY_LLAMA}", node="node-a")
        flip_middle_byte(os.path.join(self.model_dir("node-a", "tl"), SHARD1))
        job = self.failed_job(
            self.copy("tl", "disk", "disk", source_node="node-a", target_node="node-b"),
            "tl", "copy")
        message = job.get("message", "")
        self.assertIn(SHARD1, message, json.dumps(job))
        self.assertIn("expected xxh3_128", message, json.dumps(job))
        self.assertFalse(os.path.exists(self.model_dir("node-b", "tl")),
                         os.listdir(self.model_cache_dir("node-b")))
        self.assertEqual(self.replica_tiers("tl"), {("node-a", "disk")},
                         json.dumps(self.get_model("tl")))


if __name__ == "__main__":
    unittest.main()
