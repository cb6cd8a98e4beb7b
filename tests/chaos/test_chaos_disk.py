"""Chaos (issue 15): a full disk for real, and the DRAM budget under concurrent copies.

Full disk: the test mounts a small size-limited tmpfs (`mount -t tmpfs -o size=48m`; skipped with
the reason when it cannot, e.g. not root) as node-a's model cache. A download starts with room
to spare (the agent's up-front space check passes), then the test fills the filesystem while the
download is running, so that the download no longer fits mid-way. It must fail with an error
that says the disk is full, show nothing (no model directory, no replica, not available), keep
the agent up, and succeed once space is freed. The tmpfs is unmounted in every case.

DRAM budget: ten copies disk -> DRAM started at once into a tier with room for two models
(half of them with evict): while they run, the bytes under the tier's directory (staging
included) and the usage the node reports never exceed the budget; each copy succeeds or fails
saying why; the tier ends whole and agrees with the catalog.

Run: cd tests/chaos && GSWARM_BIN=../../build/cli/gswarm GSWARM_PYTHON_STUBS=../../build/python \
     /usr/bin/python3 -m unittest -v test_chaos_disk
"""

import errno
import json
import os
import time
import unittest

from chaos_harness import (
    BIG_FILE, BIG_MODEL, SEED, TINY_LLAMA, ChaosTestCase, MiB, say, visible_dirs)
from gswarm_harness import (
    GiB, JOB_DONE_STATES, JOB_TIMEOUT_S, tree_bytes, u64, wait_until)

SMALL_DISK_MB = 48  # big-model (32 MiB) fits when the download starts
FILL_AFTER = 4 * MiB  # staged before the test fills the disk
COPIES = 10


class FullDiskTest(ChaosTestCase):

    def setUp(self):
        super().setUp()
        self.cache_dirs = {}

    def model_cache_dir(self, node_id):
        return self.cache_dirs.get(node_id) or super().model_cache_dir(node_id)

    @staticmethod
    def fill(directory):
        """Writes zeros into <directory>/.filler until the filesystem is full; returns the
        bytes written."""
        path = os.path.join(directory, ".filler")
        chunk = b"\0" * MiB
        written = 0
        with open(path, "wb", buffering=0) as f:
            while True:
                try:
                    n = f.write(chunk)
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        break
                    raise
                written += n
                if n < len(chunk):
                    chunk = chunk[:max(1, len(chunk) - n)]
        return written

    def download_into_a_disk_that_fills(self):
        """node-a's model cache on a small tmpfs; a download of big-model that the test makes
        no longer fit mid-way. Returns (host, agent, mount, job) once the job has ended."""
        mnt = self.mount_tmpfs(SMALL_DISK_MB)
        self.cache_dirs["node-a"] = mnt
        self.make_host_home()
        host = self.start_host()
        self.make_tier_agent_home("node-a", 0.1, model_cache_dir=mnt)
        agent = self.start_agent("node-a", env_extra=self.hub_env())
        self.wait_node("node-a", procs=[host, agent])
        size = sum(e["size"] for e in self.repo(BIG_MODEL).files().values())
        st = os.statvfs(mnt)
        self.assertGreater(st.f_bavail * st.f_frsize, size, "the model fits when it starts")

        self.hub.add_fault(rate_limit_bytes_per_s=8 * MiB, path=f"{BIG_MODEL}/{BIG_FILE}")
        r = self.download("big", f"hf://{BIG_MODEL}", wait=False)
        self.assertEqual(r.status, 200, r)
        job_id = r.json["job"]["id"]
        staging = self.staging_dir("node-a", "big")
        wait_until(lambda: tree_bytes(staging) >= FILL_AFTER, JOB_TIMEOUT_S,
                   f"{FILL_AFTER} B of big-model staged", procs=[host, agent],
                   describe=lambda: json.dumps(self.get_job(job_id)))
        filled = self.fill(mnt)
        self.addCleanup(lambda: os.path.exists(os.path.join(mnt, ".filler")) and os.remove(
            os.path.join(mnt, ".filler")))
        job = self.wait_job_end(job_id, procs=[host, agent])
        say(f"{self.id()}: filled {filled} B at {tree_bytes(staging)} B staged; job "
            f"{job.get('state')}: {job.get('message')!r}")
        return host, agent, mnt, job

    def test_download_that_stops_fitting_fails_cleanly(self):
        host, agent, mnt, job = self.download_into_a_disk_that_fills()
        self.assertEqual(job.get("state"), "failed", json.dumps(job))
        message = job.get("message", "")
        self.assertRegex(message, r"(?i)no space left|not enough (disk )?space|disk is full",
                         "the error says the disk is full")
        self.assertIn("big", message, "the error names the model or its files")

        # Nothing visible: no model directory, no replica, not available.
        self.assertEqual(visible_dirs(mnt), [], os.listdir(mnt))
        self.assert_tier_whole(mnt)
        model = self.get_model("big")
        if model is not None:
            self.assertNotIn(model.get("state"), ("available", "loaded"), json.dumps(model))
            self.assertEqual([x for x in model.get("replicas", []) if x.get("state") == "ready"],
                             [], json.dumps(model))
        self.assertTrue(agent.alive(), "the agent survives a full disk")
        self.wait_node("node-a", "online", procs=[host, agent])
        self.assert_tiers_and_catalog_agree(["node-a"], [host, agent])

        # Room again: the same download now succeeds.
        os.remove(os.path.join(mnt, ".filler"))
        self.hub.clear_faults()
        self.download_ok("big", f"hf://{BIG_MODEL}")
        self.assert_same_files(os.path.join(mnt, "big"), self.repo(BIG_MODEL).files())
        self.assertFalse(os.path.exists(self.staging_dir("node-a", "big")))
        self.assert_tiers_and_catalog_agree(["node-a"], [host, agent], deep={"big"})

    # Other failures keep a download's partial files in staging for a resume; a full disk does
    # not (client/downloader.cc): kept, they would keep the disk full for everyone else.
    def test_download_that_stops_fitting_gives_its_space_back(self):
        """The failed download's partial files sit in staging on the full filesystem: they must
        go, or the disk stays full for everyone else."""
        host, agent, mnt, job = self.download_into_a_disk_that_fills()
        self.assertEqual(job.get("state"), "failed", json.dumps(job))
        staging = self.staging_dir("node-a", "big")
        wait_until(lambda: tree_bytes(staging) == 0, 10,
                   "the failed download's staged bytes to be removed from the full disk",
                   procs=[host, agent],
                   describe=lambda: f"{tree_bytes(staging)} B left under {staging}")


class DramBudgetTest(ChaosTestCase):

    def test_budget_never_exceeded_under_ten_concurrent_copies(self):
        size = sum(e["size"] for e in self.repo(TINY_LLAMA).files().values())
        budget = int(2.5 * size)  # room for two models, not three
        budget_gib = budget / GiB
        host, agents = self.start_tier_cluster({"node-a": budget_gib})
        agent = agents["node-a"]
        budget = int(budget_gib * GiB)  # as the agent computes it
        names = [f"m{i}" for i in range(COPIES)]
        started = []
        for name in names:
            r = self.download(name, f"hf://{TINY_LLAMA}", wait=False)
            self.assertEqual(r.status, 200, r)
            started.append(r.json["job"]["id"])
        for job_id in started:
            job = self.wait_job_end(job_id, procs=[host, agent])
            self.assertEqual(job.get("state"), "succeeded", json.dumps(job))

        evict = {name: self.rng.random() < 0.5 for name in names}
        jobs = {}
        for name in names:
            r = self.copy(name, wait=False, evict=evict[name])
            self.assertEqual(r.status, 200, r)
            jobs[name] = r.json["job"]["id"]
        root = self.dram_dir("node-a")
        seen = {"max_bytes": 0, "max_reported": 0, "samples": 0, "asked": 0.0}

        def all_done():
            # Sampled as often as the poll allows; the bounds are checked below.
            seen["samples"] += 1
            seen["max_bytes"] = max(seen["max_bytes"], tree_bytes(root))
            if time.monotonic() - seen["asked"] < 0.05:
                return False
            seen["asked"] = time.monotonic()
            node = self.nodes()["node-a"]
            reported = u64(node.get("memory", {}).get("dram_tier_used_bytes"))
            seen["max_reported"] = max(seen["max_reported"], reported)
            return all(self.get_job(j).get("state") in JOB_DONE_STATES for j in jobs.values())
        wait_until(all_done, 120, "the ten copies to end", interval=0.002, procs=[host, agent],
                   describe=lambda: json.dumps(seen))
        self.assertLessEqual(seen["max_bytes"], budget,
                             f"most bytes seen under the DRAM tier {root} (staging included) "
                             f"against its budget: {json.dumps(seen)}")
        self.assertLessEqual(seen["max_reported"], budget,
                             f"most DRAM use node-a reported: {json.dumps(seen)}")
        outcome = {name: self.get_job(j) for name, j in jobs.items()}
        ok = [n for n, j in outcome.items() if j.get("state") == "succeeded"]
        for name, job in outcome.items():
            if job.get("state") != "succeeded":
                self.assertEqual(job.get("state"), "failed", json.dumps(job))
                self.assertRegex(job.get("message", ""), r"(?i)dram|budget|evict",
                                 f"{name}: a refused copy says why")
        self.assertGreaterEqual(len(ok), 2, f"two fit at once: {json.dumps(outcome)}")
        held = visible_dirs(root)
        self.assertLessEqual(len(held), 2, held)
        self.assertLessEqual(tree_bytes(root), budget)
        self.assert_tiers_and_catalog_agree(["node-a"], [host, agent], deep=set(held))
        say(f"{self.id()}: {COPIES} concurrent copies (evict: "
            f"{sorted(n for n in names if evict[n])}), {len(ok)} succeeded, "
            f"{COPIES - len(ok)} refused; most bytes in the tier {seen['max_bytes']} B, most "
            f"reported {seen['max_reported']} B, budget {budget} B, {seen['samples']} samples "
            f"(seed {SEED})")


if __name__ == "__main__":
    unittest.main()
