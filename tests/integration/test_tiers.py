"""Tiers on one node: copies between disk and DRAM (and the move), the DRAM budget and its
refusals, LRU eviction and pins, evicting by hand, a killed copy, and what survives an agent
restart. Every agent's DRAM tier is its own directory under /dev/shm (see TierTestCase).

Models come from the fake Hugging Face hub in tests/support (see test_downloads). Across nodes:
test_tiers_nodes.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_tiers
"""

import datetime
import json
import os
import re
import signal
import time
import unittest

from gswarm_harness import (
    GiB, JOB_TIMEOUT_S, RECONNECT_TIMEOUT_S, TierTestCase, error_message, format_bytes,
    model_files, read_manifest, tree_bytes, u64, wait_until)

MiB = 1024 * 1024
TINY_LLAMA = "test-org/tiny-llama"
TINY_GGUF = "test-org/tiny-gguf"
BIG_MODEL = "test-org/big-model"


def parse_time(value):
    """An RFC 3339 timestamp from protobuf JSON ("...T...Z", up to nanoseconds) as a datetime."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z$", value or "")
    if not m:
        raise ValueError(f"not an RFC 3339 UTC timestamp: {value!r}")
    frac = (m.group(2) or ".0")[1:7].ljust(6, "0")
    return datetime.datetime.strptime(f"{m.group(1)}.{frac}", "%Y-%m-%dT%H:%M:%S.%f").replace(
        tzinfo=datetime.timezone.utc)


class CopyTest(TierTestCase):

    def test_disk_to_dram_rest_and_cli(self):
        host, agents = self.start_tier_cluster()
        self.download_ok("tl", "hf://test-org/tiny-llama")
        self.download_ok("gg", "hf://test-org/tiny-gguf")
        disk_dir = self.model_dir("node-a", "tl")
        dram_dir = self.dram_model_dir("node-a", "tl")
        size = sum(e["size"] for e in self.repo(TINY_LLAMA).files().values())

        # Seed 000's body, plus "wait" to answer when done.
        r = self.rest("POST", "/copy", body={
            "model_name": "tl", "source_device": "disk", "target_device": "dram",
            "keep_source": True, "wait": True}, timeout=JOB_TIMEOUT_S)
        self.assertEqual(r.status, 200, r)
        job = r.json["job"]
        self.assertEqual((job.get("kind"), job.get("state"), job.get("node_id")),
                         ("copy", "succeeded", "node-a"), json.dumps(job))
        rep = job.get("replica") or {}
        self.assertEqual((rep.get("tier"), rep.get("node_id")), ("dram", "node-a"), job)
        self.assertEqual(os.path.realpath(rep.get("path", "")), os.path.realpath(dram_dir), job)

        # The bytes in RAM are the bytes on disk, checked against the manifest.
        manifest = self.assert_matches_manifest(dram_dir, manifest_dir=disk_dir)
        self.assertEqual(read_manifest(dram_dir).get("commit"), manifest.get("commit"),
                         "the DRAM copy keeps its manifest")
        self.assert_same_files(dram_dir, self.repo(TINY_LLAMA).files())
        self.assertTrue(os.path.isdir(disk_dir) and model_files(disk_dir),
                        "keep_source: the disk copy stays")
        self.assertEqual(self.visible_dram_models("node-a"), ["tl"])

        r = self.rest("GET", "/memory/models")
        self.assertEqual(r.status, 200, r)
        self.assertIn("tl", r.json.get("dram_models", []), r.json)
        self.assertEqual(r.json.get("gpu_models"), [], r.json)
        self.assertEqual(r.json.get("memory_usage", {}).get("dram_models"), 1, r.json)

        listed = [d for d in self.dram_replicas() if d.get("model_name") == "tl"]
        self.assertEqual(len(listed), 1, self.dram_replicas())
        self.assertEqual(listed[0].get("node_id"), "node-a", listed)
        self.assertEqual(u64(listed[0].get("size_bytes")), size, listed)
        self.assertEqual(os.path.realpath(listed[0].get("path", "")),
                         os.path.realpath(dram_dir), listed)
        self.assertFalse(listed[0].get("pinned", False), listed)

        self.assertEqual(self.replica_tiers("tl"), {("node-a", "disk"), ("node-a", "dram")},
                         json.dumps(self.get_model("tl")))

        # Heartbeats carry the tier's use (every byte under it) and its budget.
        budget = int(0.05 * GiB)
        node = self.wait_node(
            "node-a", procs=[host, agents["node-a"]],
            where=lambda n: u64(n.get("memory", {}).get("dram_tier_used_bytes")) >= size)
        mem = node["memory"]
        self.assertEqual(u64(mem.get("dram_tier_budget_bytes")), budget, mem)
        self.assertEqual(u64(mem.get("dram_tier_used_bytes")), tree_bytes(self.dram_dir("node-a")),
                         mem)

        # The CLI: exit 0 means in place and verified.
        result = self.assert_cli_ok(self.cli("copy", "gg", "--from", "disk", "--to", "dram",
                                             timeout=JOB_TIMEOUT_S))
        self.assertIn("gg", result.stdout + result.stderr)
        gg_dram = self.dram_model_dir("node-a", "gg")
        self.assert_same_files(gg_dram, self.repo(TINY_GGUF).files())
        self.assertEqual(self.dram_names("node-a"), ["gg", "tl"])
        self.assertEqual(self.replica_tiers("gg"), {("node-a", "disk"), ("node-a", "dram")})

    def test_dram_listing_has_loaded_and_last_used(self):
        # The issue: GET /memory/dram gives per model node, size, path, loaded at, last used,
        # pinned.
        self.start_tier_cluster()
        self.download_ok("tl", "hf://test-org/tiny-llama")
        before = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
        self.copy_ok("tl", pin=True)
        after = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5)
        (rep,) = self.dram_replicas()
        self.assertTrue(rep.get("pinned"), rep)
        for key in ("loaded_at", "last_used_at"):
            with self.subTest(key=key):
                self.assertIn(key, rep, f"GET /memory/dram should say {key}: {rep}")
                self.assertTrue(before <= parse_time(rep[key]) <= after, rep)

    def test_moves_both_ways(self):
        self.start_tier_cluster()
        self.download_ok("tl", "hf://test-org/tiny-llama")
        disk_dir = self.model_dir("node-a", "tl")
        dram_dir = self.dram_model_dir("node-a", "tl")
        expected = self.repo(TINY_LLAMA).files()

        # disk -> dram, keep_source false: a move.
        self.copy_ok("tl", "disk", "dram", keep_source=False)
        self.assert_same_files(dram_dir, expected)
        self.assertFalse(os.path.exists(disk_dir), f"the disk copy should be gone: {disk_dir}")
        self.assertEqual(self.replica_tiers("tl"), {("node-a", "dram")},
                         json.dumps(self.get_model("tl")))
        self.assertEqual(self.get_model("tl").get("state"), "available")

        # dram -> disk, keep_source false.
        self.copy_ok("tl", "dram", "disk", keep_source=False)
        self.assert_same_files(disk_dir, expected)
        self.assertEqual(read_manifest(disk_dir).get("commit"), self.hub.commit(TINY_LLAMA))
        self.assertFalse(os.path.exists(dram_dir), f"the DRAM copy should be gone: {dram_dir}")
        self.assertEqual(self.visible_dram_models("node-a"), [])
        self.assertEqual(self.dram_names(), [])
        self.assertEqual(self.replica_tiers("tl"), {("node-a", "disk")},
                         json.dumps(self.get_model("tl")))

        # The same with the CLI's --move.
        self.assert_cli_ok(self.cli("copy", "tl", "--from", "disk", "--to", "dram", "--move",
                                    timeout=JOB_TIMEOUT_S))
        self.assert_same_files(dram_dir, expected)
        self.assertFalse(os.path.exists(disk_dir))
        self.assert_cli_ok(self.cli("copy", "tl", "--from", "dram", "--to", "disk", "--move",
                                    timeout=JOB_TIMEOUT_S))
        self.assert_same_files(disk_dir, expected)
        self.assertFalse(os.path.exists(dram_dir))
        self.assertEqual(self.replica_tiers("tl"), {("node-a", "disk")})


class BudgetTest(TierTestCase):

    def assert_nothing_of(self, name, node_id="node-a"):
        """No trace of `name` in the node's DRAM tier: no model directory, no bytes staged, not
        listed."""
        self.assertNotIn(name, self.dram_entries(node_id))
        staging = os.path.join(self.dram_dir(node_id), ".staging")
        self.assertEqual(tree_bytes(staging), 0,
                         f"nothing half copied: {sorted(model_files(staging))}")
        self.assertNotIn(name, self.dram_names())
        self.assertNotIn(("node-a", "dram"), self.replica_tiers(name))

    def test_refused_when_short_of_room(self):
        # 32 MiB: one tiny-llama (21.1 MiB) fits, two do not; big-model (100 MiB) never does.
        budget_gib = 32 / 1024
        self.start_tier_cluster({"node-a": budget_gib})
        self.download_ok("a", "hf://test-org/tiny-llama")
        self.download_ok("b", "hf://test-org/tiny-llama")
        self.copy_ok("a")
        size = sum(e["size"] for e in self.repo(TINY_LLAMA).files().values())
        free = int(budget_gib * GiB) - tree_bytes(self.dram_dir("node-a"))

        r = self.copy("b")
        self.assertEqual(r.status, 409, f"a copy that does not fit answers 409: {r!r}")
        message = error_message(r)
        self.assertIn(format_bytes(size), message, f"says what the model needs: {message!r}")
        self.assertIn(format_bytes(free), message, f"says what is free: {message!r}")
        self.assertRegex(message, r"(?i)evict", "says how to make room")
        self.assert_nothing_of("b")
        self.assertEqual(self.dram_names(), ["a"], "the refusal evicted nothing")

        result = self.cli("copy", "b", "--from", "disk", "--to", "dram", timeout=JOB_TIMEOUT_S)
        self.assertNotEqual(result.returncode, 0, result)
        self.assertIn(format_bytes(size), result.stderr)
        self.assertRegex(result.stderr, r"(?i)evict")
        self.assert_nothing_of("b")

        # Larger than the whole budget: evicting would not help, and the message says so.
        self.download_ok("big", "hf://test-org/big-model")
        big = sum(e["size"] for e in self.repo(BIG_MODEL).files().values())
        r = self.copy("big", evict=True)
        self.assertEqual(r.status, 409, r)
        message = error_message(r)
        self.assertIn(format_bytes(big), message)
        self.assertIn(format_bytes(int(budget_gib * GiB)), message, "names the budget")
        self.assertRegex(message, r"dram_cache_size", "says how to raise the budget")
        self.assert_nothing_of("big")
        self.assertEqual(self.dram_names(), ["a"], "nothing evicted for a copy that cannot fit")

    def test_lru_eviction_and_pins(self):
        # 51.2 MiB: two tiny-llamas (21.1 MiB each) fit, three do not. "older" goes into DRAM
        # before "newer" (and sorts after it, so that name order cannot pass for LRU order).
        self.start_tier_cluster({"node-a": 0.05})
        for name in ("older", "newer", "incoming"):
            self.download_ok(name, "hf://test-org/tiny-llama")
        self.copy_ok("older")
        self.copy_ok("newer")

        with self.subTest("without evict: refused"):
            r = self.copy("incoming")
            self.assertEqual(r.status, 409, r)
            self.assertRegex(error_message(r), r"(?i)evict")
            self.assertEqual(self.dram_names(), ["newer", "older"])
            self.assertEqual(self.visible_dram_models("node-a"), ["newer", "older"])

        with self.subTest("evict: the least recently used goes"):
            self.copy_ok("incoming", evict=True)
            self.assertEqual(self.visible_dram_models("node-a"), ["incoming", "newer"])
            self.assertEqual(self.dram_names(), ["incoming", "newer"])
            self.assert_same_files(self.dram_model_dir("node-a", "incoming"),
                                   self.repo(TINY_LLAMA).files())
            self.assertEqual(self.replica_tiers("older"), {("node-a", "disk")},
                             "older's disk copy stays after its eviction from DRAM")

        with self.subTest("a pinned model is never evicted"):
            for name in ("incoming", "newer"):
                self.assertEqual(self.rest("DELETE", f"/memory/dram/{name}").status, 200)
            self.copy_ok("older", pin=True)  # the least recently used, but pinned
            self.copy_ok("newer")
            pinned = {d["model_name"]: d.get("pinned", False) for d in self.dram_replicas()}
            self.assertEqual(pinned, {"older": True, "newer": False})
            self.copy_ok("incoming", evict=True)
            self.assertEqual(self.visible_dram_models("node-a"), ["incoming", "older"],
                             "newer goes: older is less recently used but pinned")
            self.assertEqual(self.dram_names(), ["incoming", "older"])
            # Again: the pinned one stays, the other one goes.
            self.copy_ok("newer", evict=True)
            self.assertEqual(self.dram_names(), ["newer", "older"])
            self.assertTrue(os.path.exists(os.path.join(
                self.dram_model_dir("node-a", "older"), ".gswarm", "pinned")))

    def test_evict_by_hand(self):
        self.start_tier_cluster()
        self.download_ok("tl", "hf://test-org/tiny-llama")
        dram_dir = self.dram_model_dir("node-a", "tl")

        self.copy_ok("tl")
        r = self.rest("DELETE", "/memory/dram/tl")
        self.assertEqual(r.status, 200, r)
        evicted = r.json.get("evicted", [])
        self.assertEqual([(e.get("node_id"), e.get("model_name")) for e in evicted],
                         [("node-a", "tl")], r.json)
        self.assertFalse(os.path.exists(dram_dir))
        self.assertEqual(self.dram_names(), [])
        self.assertEqual(self.replica_tiers("tl"), {("node-a", "disk")})
        self.assertTrue(model_files(self.model_dir("node-a", "tl")), "the disk copy stays")

        self.copy_ok("tl")
        result = self.assert_cli_ok(self.cli("evict", "tl"))
        self.assertIn("tl", result.stdout + result.stderr)
        self.assertFalse(os.path.exists(dram_dir))
        self.assertEqual(self.dram_names(), [])
        self.assertEqual(self.get_model("tl").get("state"), "available")

        for name in ("tl", "no-such-model"):
            with self.subTest(name=name):
                r = self.rest("DELETE", f"/memory/dram/{name}")
                self.assertEqual(r.status, 404, f"{name} is not in DRAM: {r!r}")
                self.assertIn(name, error_message(r))
                result = self.cli("evict", name)
                self.assertNotEqual(result.returncode, 0, result)
                self.assertIn(name, result.stderr)


class CrashAndRestartTest(TierTestCase):

    def test_kill_mid_copy_then_retry(self):
        host, agents = self.start_tier_cluster({"node-a": 0.25})
        self.download_ok("big", "hf://test-org/big-model")
        expected = self.repo(BIG_MODEL).files()
        root = self.dram_dir("node-a")
        staging = os.path.join(root, ".staging")

        r = self.copy("big", wait=False)
        self.assertEqual(r.status, 200, r)
        killed_job = r.json["job"]["id"]
        # Kill it as soon as bytes show up in staging (or once the copy is over, if it is that
        # fast): the invariant below must hold at any point.
        deadline = time.monotonic() + JOB_TIMEOUT_S
        caught_mid_copy = False
        while time.monotonic() < deadline:
            if tree_bytes(staging) > 0:
                caught_mid_copy = True
                break
            if os.path.isdir(os.path.join(root, "big")):
                break
            time.sleep(0.001)
        agents["node-a"].kill()  # SIGKILL: no chance to tidy up
        if caught_mid_copy:
            self.assertNotIn("big", self.dram_entries("node-a"),
                             "killed mid-copy: nothing in place under the model's name")

        for entry in self.dram_entries("node-a"):
            if entry.startswith("."):
                continue  # staging: hidden, never taken for a model
            self.assertEqual(entry, "big", self.dram_entries("node-a"))
            self.assert_same_files(os.path.join(root, entry), expected)

        agent = self.start_agent("node-a", env_extra=self.hub_env())  # same HOME and tier
        self.wait_node("node-a", timeout=RECONNECT_TIMEOUT_S, procs=[host, agent])
        wait_until(lambda: tree_bytes(staging) == 0, 10,
                   "the restarted agent to clear what the killed copy left in staging",
                   procs=[host, agent], describe=lambda: sorted(model_files(staging)))
        # The killed copy's job does not hang: it ends (sent again, or failed with a reason).
        job = self.wait_job(killed_job, timeout=JOB_TIMEOUT_S, procs=[host, agent])
        self.assertIn(job.get("state"), ("succeeded", "failed"), json.dumps(job))
        # Retry: whatever the killed job became, a copy now works.
        job = self.copy_ok("big")
        self.assertEqual((job.get("replica") or {}).get("tier"), "dram", job)
        self.assert_same_files(os.path.join(root, "big"), expected)
        self.assertEqual(self.visible_dram_models("node-a"), ["big"])
        self.assertEqual(self.dram_names(), ["big"])
        self.assertEqual(self.replica_tiers("big"), {("node-a", "disk"), ("node-a", "dram")})
        if not caught_mid_copy:
            # Everything after the kill was checked, but not the point of the test.
            self.skipTest("the copy was over before any byte showed in staging, so the kill did not "
                          "land mid-copy: 'nothing in place after a mid-copy kill' went unchecked")

    def test_restart_keeps_dram_without_cleanup(self):
        # cleanup_on_shutdown false in the host section of the agent's own file (as under
        # gswarm start, whose one file both read).
        self.check_restart_keeps_dram(agent_host={"cleanup_on_shutdown": False})

    def test_the_hosts_cleanup_on_shutdown_is_the_agents_default(self):
        # Only the host's config says false: the agent takes it on connect.
        self.check_restart_keeps_dram(host_extra={"cleanup_on_shutdown": False})

    def check_restart_keeps_dram(self, **cluster):
        host, agents = self.start_tier_cluster(**cluster)
        self.download_ok("tl", "hf://test-org/tiny-llama")
        self.copy_ok("tl")
        self.assertEqual(agents["node-a"].stop(signal.SIGTERM), 0, "agent exit code on SIGTERM")
        dram_dir = self.dram_model_dir("node-a", "tl")
        self.assert_same_files(dram_dir, self.repo(TINY_LLAMA).files())

        agent = self.start_agent("node-a", env_extra=self.hub_env())
        self.wait_node("node-a", timeout=RECONNECT_TIMEOUT_S, procs=[host, agent])
        listed = wait_until(lambda: [d for d in self.dram_replicas()
                                     if (d.get("node_id"), d.get("model_name")) ==
                                     ("node-a", "tl")],
                            10, "tl in GET /memory/dram after the restart", procs=[host, agent],
                            describe=self.dram_replicas)
        self.assertEqual(os.path.realpath(listed[0].get("path", "")), os.path.realpath(dram_dir))
        size = sum(e["size"] for e in self.repo(TINY_LLAMA).files().values())
        self.assertEqual(u64(listed[0].get("size_bytes")), size,
                         f"the same model's size as before the restart: {listed[0]}")
        self.assertEqual(self.replica_tiers("tl"), {("node-a", "disk"), ("node-a", "dram")})
        self.assert_same_files(dram_dir, self.repo(TINY_LLAMA).files())

    def test_cleanup_on_shutdown_empties_dram(self):
        host, agents = self.start_tier_cluster()  # cleanup_on_shutdown: true by default
        self.download_ok("tl", "hf://test-org/tiny-llama")
        self.copy_ok("tl")
        self.assertEqual(self.visible_dram_models("node-a"), ["tl"])
        self.assertEqual(agents["node-a"].stop(signal.SIGTERM), 0, "agent exit code on SIGTERM")
        self.assertEqual(tree_bytes(self.dram_dir("node-a")), 0,
                         f"the DRAM tier should be empty: {self.dram_entries('node-a')}")
        self.assertEqual(self.visible_dram_models("node-a"), [])

        agent = self.start_agent("node-a", env_extra=self.hub_env())
        self.wait_node("node-a", timeout=RECONNECT_TIMEOUT_S, procs=[host, agent])
        wait_until(lambda: self.dram_names() == [], 10, "GET /memory/dram to be empty",
                   procs=[host, agent], describe=self.dram_replicas)
        self.assertEqual(self.replica_tiers("tl"), {("node-a", "disk")})


if __name__ == "__main__":
    unittest.main()
