"""Tiers across nodes: two agents on loopback, each with its own HOME, model cache, DRAM tier
and data port. Copies node to node, downloads that come from a peer instead of the Hub,
reconciliation of a node's inventory after changes made by hand, and `gswarm memory`.

The fake Hugging Face hub's counters (tests/support) tell whether a byte came from the Hub.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_tiers_nodes
"""

import json
import os
import re
import shutil
import signal
import unittest

from gswarm_harness import (
    GiB, RECONNECT_TIMEOUT_S, JOB_TIMEOUT_S, TierTestCase, format_bytes, read_manifest,
    tree_bytes, u64, wait_until)

TINY_LLAMA = "test-org/tiny-llama"
SHARD1 = "model-00001-of-00002.safetensors"
TWO_NODES = {"node-a": 0.05, "node-b": 0.03}


class CrossNodeTest(TierTestCase):

    def test_copy_node_to_node(self):
        self.start_tier_cluster(TWO_NODES)
        self.download_ok("tl", "hf://test-org/tiny-llama", node="node-a")
        expected = self.repo(TINY_LLAMA).files()
        self.hub.reset_stats()

        r = self.rest("POST", "/copy", body={
            "model_name": "tl", "source_node": "node-a", "target_node": "node-b",
            "source_device": "disk", "target_device": "disk", "keep_source": True,
            "wait": True}, timeout=JOB_TIMEOUT_S)
        self.assertEqual(r.status, 200, r)
        job = r.json["job"]
        self.assertEqual((job.get("kind"), job.get("state"), job.get("node_id")),
                         ("copy", "succeeded", "node-b"), json.dumps(job))
        b_disk = self.model_dir("node-b", "tl")
        self.assert_same_files(b_disk, expected)
        self.assertEqual(read_manifest(b_disk).get("commit"), self.hub.commit(TINY_LLAMA))
        self.assert_same_files(self.model_dir("node-a", "tl"), expected)  # a copy, not a move

        # The CLI: default --from disk --to dram, across nodes.
        self.assert_cli_ok(self.cli("copy", "tl", "--from-node", "node-a", "--to-node", "node-b",
                                    timeout=JOB_TIMEOUT_S))
        self.assert_same_files(self.dram_model_dir("node-b", "tl"), expected)
        self.assertEqual(self.visible_dram_models("node-a"), [])

        stats = self.hub.stats()
        self.assertEqual(stats["requests_total"], 0,
                         f"node to node, nothing from the Hub: {stats['log'][-5:]}")
        self.assertEqual(self.replica_tiers("tl"),
                         {("node-a", "disk"), ("node-b", "disk"), ("node-b", "dram")},
                         json.dumps(self.get_model("tl")))
        self.assertEqual(self.dram_names("node-b"), ["tl"])

    def peer_download(self):
        """Node A downloads tiny-llama at main's full commit sha, node B then downloads the same
        source; returns (hub stats of B's download, B's job)."""
        sha = self.hub.commit(TINY_LLAMA, "main")
        source = f"hf://test-org/tiny-llama@{sha}"
        self.download_ok("tl", source, node="node-a")
        self.assertGreater(self.hub.stats()["requests_total"], 0, "A's download is from the Hub")
        self.hub.reset_stats()
        job = self.download_ok("tl", source, node="node-b")
        self.assertEqual(job.get("node_id"), "node-b", job)
        b_disk = self.model_dir("node-b", "tl")
        self.assert_same_files(b_disk, self.repo(TINY_LLAMA).files())
        self.assertEqual(read_manifest(b_disk).get("commit"), sha)
        self.assertEqual(self.replica_tiers("tl"), {("node-a", "disk"), ("node-b", "disk")},
                         json.dumps(self.get_model("tl")))
        return self.hub.stats(), job

    def test_download_of_a_held_commit_comes_from_the_peer(self):
        self.start_tier_cluster(TWO_NODES)
        stats, _ = self.peer_download()
        self.assertEqual(stats["requests_total"], 0,
                         f"node B's download should not reach the Hub: {stats['log'][-10:]}")

    def test_prefer_peers_off_downloads_from_the_hub(self):
        self.start_tier_cluster(TWO_NODES, host_extra={"prefer_peers": False})
        stats, _ = self.peer_download()
        self.assertGreater(stats["requests_total"], 0, "prefer_peers: false goes to the Hub")
        self.assertGreater(stats["bytes_per_file"].get(f"{TINY_LLAMA}/{SHARD1}", 0), 0,
                           stats["bytes_per_file"])


class ReconcileTest(TierTestCase):

    def test_changes_by_hand_show_after_restart(self):
        host, agents = self.start_tier_cluster(TWO_NODES,
                                                agent_host={"cleanup_on_shutdown": False})
        for name in ("keep", "gone", "shared"):
            self.download_ok(name, "hf://test-org/tiny-llama", node="node-a")
        self.copy_ok("shared", source_node="node-a", target_node="node-b",
                     source_device="disk", target_device="disk")
        self.copy_ok("keep", node="node-a")  # and a DRAM copy
        self.assertEqual(self.replica_tiers("keep"), {("node-a", "disk"), ("node-a", "dram")})

        self.assertEqual(agents["node-a"].stop(signal.SIGTERM), 0)
        # By hand while the agent is down: remove two model directories and a DRAM copy, and
        # copy one model in under a new name (with its manifest, renamed to match).
        shutil.rmtree(self.model_dir("node-a", "gone"))
        shutil.rmtree(self.model_dir("node-a", "shared"))
        shutil.rmtree(self.dram_model_dir("node-a", "keep"))
        added = self.model_dir("node-a", "added")
        shutil.copytree(self.model_dir("node-a", "keep"), added)
        manifest_path = os.path.join(added, ".gswarm", "manifest.json")
        manifest = read_manifest(added)
        manifest["name"] = "added"
        with open(manifest_path, "w") as f:
            json.dump(manifest, f, indent=2)

        agent = self.start_agent("node-a", env_extra=self.hub_env())
        self.wait_node("node-a", timeout=RECONNECT_TIMEOUT_S, procs=[host, agent])

        def reconciled():
            names = self.model_names()
            return "added" in names and "gone" not in names and names
        wait_until(reconciled, 10, "node-a's inventory to replace the host's view",
                   procs=[host, agent], describe=self.model_names)
        self.assertEqual(self.model_names(), ["added", "keep", "shared"])
        self.assertIsNone(self.get_model("gone"), "no copy left anywhere: out of the catalog")

        model = self.get_model("added")
        self.assertEqual(model.get("state"), "available", json.dumps(model))
        (rep,) = model.get("replicas", [])
        self.assertEqual((rep.get("node_id"), rep.get("tier"), rep.get("state")),
                         ("node-a", "disk", "ready"), rep)
        self.assertEqual(os.path.realpath(rep.get("path", "")), os.path.realpath(added), rep)
        self.assertEqual(rep.get("commit"), self.hub.commit(TINY_LLAMA), rep)
        size = sum(e["size"] for e in self.repo(TINY_LLAMA).files().values())
        self.assertEqual(u64(rep.get("size_bytes")), size, rep)

        self.assertEqual(self.replica_tiers("keep"), {("node-a", "disk")},
                         "the DRAM copy removed by hand is gone")
        self.assertEqual(self.dram_names(), [])
        self.assertEqual(self.replica_tiers("shared"), {("node-b", "disk")},
                         "still on node-b, no longer on node-a")
        self.assertEqual(self.get_model("shared").get("state"), "available")


class MemoryCliTest(TierTestCase):

    def test_gswarm_memory(self):
        host, agents = self.start_tier_cluster(TWO_NODES)
        self.download_ok("tl", "hf://test-org/tiny-llama", node="node-a")
        self.copy_ok("tl", node="node-a")
        used = {nid: tree_bytes(self.dram_dir(nid)) for nid in TWO_NODES}
        budget = {nid: int(gib * GiB) for nid, gib in TWO_NODES.items()}
        self.assertGreater(used["node-a"], 0)
        self.wait_node("node-a", procs=list(self.procs), where=lambda n: u64(
            n.get("memory", {}).get("dram_tier_used_bytes")) == used["node-a"])

        out = self.assert_cli_ok(self.cli("memory")).stdout
        self.assertFalse(out.lstrip().startswith("{"), "human output is not JSON")
        self.assertRegex(out, r"(?i)dram tier")
        for nid in TWO_NODES:
            with self.subTest(node=nid):
                line = next((x for x in out.splitlines() if re.match(rf"\s*{nid}\s", x)), None)
                self.assertIsNotNone(line, f"{nid} missing from `gswarm memory`:\n{out}")
                self.assertIn(f"{format_bytes(used[nid])} / {format_bytes(budget[nid])}", line,
                              f"{nid}'s DRAM tier used / budget:\n{out}")

        shown = self.cli_json("memory")
        nodes = {n.get("node_id"): n for n in shown.get("nodes", [])}
        self.assertEqual(sorted(nodes), sorted(TWO_NODES), shown)
        for nid in TWO_NODES:
            mem = nodes[nid].get("memory", {})
            self.assertEqual(u64(mem.get("dram_tier_budget_bytes")), budget[nid], mem)
            self.assertEqual(u64(mem.get("dram_tier_used_bytes")), used[nid], mem)
        self.assertEqual([(d.get("node_id"), d.get("model_name")) for d in shown.get("dram", [])],
                         [("node-a", "tl")], shown)
        self.assertEqual(shown.get("dram_models"), ["tl"], shown)


if __name__ == "__main__":
    unittest.main()
