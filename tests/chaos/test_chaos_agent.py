"""Chaos (issue 15): kill -9 of an agent at random moments of a download, a tier copy, a
cross-node copy and a serve, GSWARM_CHAOS_ROUNDS times each (seeded; the seed is printed).

After every kill, while the agent is down, no tier shows a half-written model. After its restart:
the interrupted job ends (the host sends its command again), and if it failed it says why and a
retry succeeds; the tiers hold only whole models (their manifest's files at their sizes, the
operated model checked by SHA-256) and the catalog's ready replicas are exactly what the tiers
hold; engines are adopted, not started twice; every fake engine process belongs to one live
instance in GET /serving, and none is left once the instances are stopped.

Run: cd tests/chaos && GSWARM_BIN=../../build/cli/gswarm GSWARM_PYTHON_STUBS=../../build/python \
     /usr/bin/python3 -m unittest -v test_chaos_agent
"""

import contextlib
import json
import os
import unittest

from chaos_harness import (
    BIG_FILE, BIG_MODEL, CHAOS_ENGINES, MiB, ROUNDS, SEED, ChaosTestCase, say, visible_dirs)
from gswarm_harness import JOB_DONE_STATES, free_port, tree_bytes, wait_until
from test_serving import MODEL, cmdline

# The download scenario's pace: big-model's 32 MiB file in about two seconds, so that a kill at a
# random fraction of it lands mid-file most of the time.
DOWNLOAD_RATE = 16 * MiB
# Serve phases a kill can land in, in the order a start goes through them.
SERVE_PHASES = ("sent", "spawned", "recorded", "listening", "ready")


class AgentKillTest(ChaosTestCase):

    @contextlib.contextmanager
    def round(self, n, what):
        """Names the round (and how to replay it) in any failure inside it."""
        try:
            yield
        except AssertionError as e:
            raise AssertionError(f"round {n}/{ROUNDS} of {self._testMethodName} (seed {SEED}; "
                                 f"{what()}): {e}") from None

    def big_size(self):
        return sum(e["size"] for e in self.repo(BIG_MODEL).files().values())

    def assert_not_visible_on(self, node_id, name, tier="disk"):
        root = self.model_cache_dir(node_id) if tier == "disk" else self.dram_dir(node_id)
        self.assertNotIn(name, visible_dirs(root), f"{name} must not be in {node_id}'s {tier}")
        self.assertNotIn((node_id, tier), self.replica_tiers(name),
                         f"no ready {tier} replica of {name} on {node_id}")

    # ---- download --------------------------------------------------------------------------

    def test_kill_during_download(self):
        host, agents = self.start_tier_cluster({"node-a": 0.1})
        agent = agents["node-a"]
        size = self.big_size()
        self.hub.add_fault(rate_limit_bytes_per_s=DOWNLOAD_RATE, path=f"{BIG_MODEL}/{BIG_FILE}")
        for i in range(1, ROUNDS + 1):
            name = f"dl-{i}"
            fraction = self.rng.uniform(0.0, 1.1)
            note = {"kill": f"at {fraction:.0%} of the download"}
            with self.round(i, lambda: json.dumps(note)):
                r = self.download(name, f"hf://{BIG_MODEL}", wait=False)
                self.assertEqual(r.status, 200, r)
                job_id = r.json["job"]["id"]
                where, staged = self.kill_when_staged(
                    "node-a", self.staging_dir("node-a", name), size, fraction, job_id,
                    self.model_dir("node-a", name), procs=[host, agent])
                note.update(landed=where, staged=staged)
                # Down: whatever is visible is whole.
                self.assert_tier_whole(self.model_cache_dir("node-a"), deep={name})
                if name not in visible_dirs(self.model_cache_dir("node-a")):
                    self.assertNotIn(("node-a", "disk"), self.replica_tiers(name))

                agent = self.restart_agent("node-a", host)
                job = self.wait_job_end(job_id, procs=[host, agent])
                note["job"] = job.get("state")
                if job.get("state") != "succeeded":
                    self.assert_failed_cleanly(job)
                    self.assert_not_visible_on("node-a", name)
                    self.download_ok(name, f"hf://{BIG_MODEL}")
                self.assertEqual(self.get_model(name).get("state"), "available")
                self.assert_same_files(self.model_dir("node-a", name),
                                       self.repo(BIG_MODEL).files())
                self.assertFalse(os.path.exists(self.staging_dir("node-a", name)),
                                 "a finished download leaves no staging")
                self.assert_tiers_and_catalog_agree(["node-a"], [host, agent], deep={name})
                say(f"download round {i}: kill at {fraction:.0%} landed {where} ({staged} B "
                    f"staged); job {job.get('state')}")
        self.summary("download kills", ROUNDS)

    # ---- tier copy (one node) --------------------------------------------------------------

    def test_kill_during_tier_copy(self):
        host, agents = self.start_tier_cluster({"node-a": 0.1})
        agent = agents["node-a"]
        self.download_ok("big", f"hf://{BIG_MODEL}")
        expected = self.repo(BIG_MODEL).files()
        size = self.big_size()
        on_disk = True  # where the model is: disk (and maybe DRAM), or DRAM only after a move
        for i in range(1, ROUNDS + 1):
            if on_disk:
                source, target = "disk", "dram"
                keep = self.rng.random() < 0.5
            else:
                source, target, keep = "dram", "disk", False
            fraction = self.rng.uniform(0.0, 1.1)
            kind = "copy" if keep else "move"
            note = {"op": f"{kind} {source} -> {target}", "kill": f"at {fraction:.0%}"}
            with self.round(i, lambda: json.dumps(note)):
                if target == "dram":
                    staging = os.path.join(self.dram_dir("node-a"), ".staging")
                    done = self.dram_model_dir("node-a", "big")
                else:
                    staging = self.staging_dir("node-a", "big") + ".copy"
                    done = self.model_dir("node-a", "big")
                r = self.copy("big", source, target, wait=False, keep_source=keep)
                self.assertEqual(r.status, 200, r)
                job_id = r.json["job"]["id"]
                where, staged = self.kill_when_staged("node-a", staging, size, fraction, job_id,
                                                      done, procs=[host, agent])
                note.update(landed=where, staged=staged)
                for root in self.tier_roots(["node-a"]).values():
                    self.assert_tier_whole(root, deep={"big"})
                held = [t for t, root in self.tier_roots(["node-a"]).items()
                        if "big" in visible_dirs(root)]
                self.assertTrue(held, "a kill during a copy or move never loses the model: "
                                      f"{self.dram_entries('node-a')}")

                agent = self.restart_agent("node-a", host)
                job = self.wait_job_end(job_id, procs=[host, agent])
                note["job"] = job.get("state")
                if job.get("state") != "succeeded":
                    self.assert_failed_cleanly(job)
                    self.copy_ok("big", source, target, keep_source=keep)
                model_dir = done
                self.assert_same_files(model_dir, expected)
                if not keep:
                    gone = (self.model_dir if source == "disk" else self.dram_model_dir)(
                        "node-a", "big")
                    self.assertFalse(os.path.exists(gone), f"a move removes its source {gone}")
                wait_until(lambda: tree_bytes(os.path.join(self.dram_dir("node-a"), ".staging"))
                           == 0, 10, "no copy left in the DRAM tier's staging",
                           procs=[host, agent])
                self.assert_tiers_and_catalog_agree(["node-a"], [host, agent], deep={"big"})
                # Back to the disk only, for the next round.
                if target == "dram" and keep:
                    r = self.rest("DELETE", "/memory/dram/big", token=self.api_token())
                    self.assertEqual(r.status, 200, r)
                on_disk = target == "disk" or keep
                self.assertEqual(self.replica_tiers("big"),
                                 {("node-a", "disk")} if on_disk else {("node-a", "dram")},
                                 json.dumps(self.get_model("big")))
                say(f"tier round {i}: {kind} {source}->{target}, kill at {fraction:.0%} landed "
                    f"{where} ({staged} B staged); job {job.get('state')}")
        self.summary("tier-copy kills", ROUNDS)

    # ---- cross-node copy -------------------------------------------------------------------

    def test_kill_during_cross_node_copy(self):
        host, agents = self.start_tier_cluster({"node-a": 0.1, "node-b": 0.1})
        self.download_ok("big", f"hf://{BIG_MODEL}", node="node-a")
        expected = self.repo(BIG_MODEL).files()
        size = self.big_size()
        nodes = ["node-a", "node-b"]
        for i in range(1, ROUNDS + 1):
            target = self.rng.choice(["disk", "dram"])
            victim = self.rng.choice(["node-b", "node-b", "node-a"])  # the receiver, mostly
            fraction = self.rng.uniform(0.0, 1.1)
            note = {"op": f"node-a disk -> node-b {target}", "killed": victim,
                    "kill": f"at {fraction:.0%}"}
            with self.round(i, lambda: json.dumps(note)):
                if target == "dram":
                    staging = os.path.join(self.dram_dir("node-b"), ".staging")
                    done = self.dram_model_dir("node-b", "big")
                else:
                    staging = self.staging_dir("node-b", "big")
                    done = self.model_dir("node-b", "big")
                r = self.rest("POST", "/copy", token=self.api_token(), body={
                    "model_name": "big", "source_node": "node-a", "target_node": "node-b",
                    "source_device": "disk", "target_device": target, "keep_source": True})
                self.assertEqual(r.status, 200, r)
                job_id = r.json["job"]["id"]
                where, staged = self.kill_when_staged(victim, staging, size, fraction, job_id,
                                                      done, procs=self.live())
                note.update(landed=where, staged=staged)
                for root in self.tier_roots(nodes).values():
                    self.assert_tier_whole(root, deep={"big"})

                agents[victim] = self.restart_agent(victim, host)
                procs = [host, *agents.values()]
                job = self.wait_job_end(job_id, procs=procs)
                note["job"] = job.get("state")
                if job.get("state") != "succeeded":
                    self.assert_failed_cleanly(job)
                    self.assert_not_visible_on("node-b", "big", target)
                    self.copy_ok("big", "disk", target, source_node="node-a",
                                 target_node="node-b")
                self.assert_same_files(done, expected)
                self.assert_same_files(self.model_dir("node-a", "big"), expected)
                self.assert_tiers_and_catalog_agree(nodes, procs, deep={"big"})
                self.assertEqual(self.replica_tiers("big"), {("node-a", "disk"), ("node-b", target)},
                                 json.dumps(self.get_model("big")))
                # node-b lets go of it for the next round.
                r = self.rest("DELETE", "/api/models/big", token=self.api_token(),
                              body={"node": "node-b"}, timeout=60)
                self.assertEqual(r.status, 200, r)
                wait_until(lambda: self.replica_tiers("big") == {("node-a", "disk")}, 20,
                           "node-b's copy of big to go", procs=procs,
                           describe=lambda: self.replica_tiers("big"))
                self.assertEqual(visible_dirs(self.model_cache_dir("node-b")), [])
                self.assertEqual(visible_dirs(self.dram_dir("node-b")), [])
                say(f"cross-node round {i}: to node-b {target}, killed {victim} at {fraction:.0%}"
                    f", landed {where} ({staged} B staged); job {job.get('state')}")
        self.summary("cross-node copy kills", ROUNDS)

    # ---- serve -----------------------------------------------------------------------------

    def wait_serve_phase(self, phase, port, instance_id, job_id, procs):
        """Waits until the serve reached `phase` (see SERVE_PHASES) or its job ended."""
        state = {"asked": 0.0}

        def engine_on_port():
            return [p for p in self.engine_pids() if f"--port {port}" in cmdline(p)]

        def reached():
            if phase == "spawned" and engine_on_port():
                return True
            if phase == "recorded" and self.record(instance_id) is not None:
                return True
            if phase == "listening" and "listening on" in self.engine_log(instance_id):
                return True
            job = self.get_job(job_id)
            state["job"] = job.get("state")
            return job.get("state") in JOB_DONE_STATES
        if phase != "sent":
            wait_until(reached, 60, f"the serve of {instance_id} to reach '{phase}'",
                       interval=0.002, procs=procs, describe=lambda: json.dumps(state))
        return engine_on_port()

    def test_kill_during_serve(self):
        host, agent = self.start_serving_cluster(engines=CHAOS_ENGINES)
        for i in range(1, ROUNDS + 1):
            phase = self.rng.choice(SERVE_PHASES)
            iid = f"chaos-{i}"
            port = free_port()
            note = {"instance": iid, "kill": f"at phase {phase}"}
            with self.round(i, lambda: json.dumps(note)):
                r = self.serve(MODEL, wait=False, engine="fake-slow", port=port, instance_id=iid,
                               source_device="disk")
                self.assertEqual(r.status, 200, r)
                job_id = r.json["job"]["id"]
                pids_at_kill = self.wait_serve_phase(phase, port, iid, job_id, [host, agent])
                self.kill_agent("node-a")
                self.landed_at(phase)
                note["engines_at_kill"] = pids_at_kill

                agent = self.restart_agent("node-a", host)
                job = self.wait_job_end(job_id, procs=[host, agent])
                note["job"] = f"{job.get('state')}: {job.get('message', '')}"
                if job.get("state") == "succeeded":
                    inst = job.get("instance") or {}
                    self.assertEqual((inst.get("id"), inst.get("state")), (iid, "ready"),
                                     json.dumps(job))
                else:
                    self.assert_failed_cleanly(job)
                    # Failed means failed: no engine of it runs on behind the job's back.
                    wait_until(lambda: not [x for x in self.live_instances()
                                            if x["id"] == iid], 20,
                               f"no live instance {iid} after its serve failed",
                               procs=[host, agent], describe=lambda: json.dumps(self.serving()))
                    iid = f"chaos-{i}-retry"
                    self.serve_ok(MODEL, engine="fake-slow", instance_id=iid,
                                  source_device="disk")
                insts = self.assert_engines_owned([host, agent])
                self.assertEqual([x["id"] for x in insts], [iid],
                                 f"one live instance, the serve's: {json.dumps(insts)}")
                pid = int(insts[0]["pid"])
                if phase in ("recorded", "listening", "ready") and iid == f"chaos-{i}":
                    self.assertEqual([pid], pids_at_kill,
                                     "the engine that ran at the kill is adopted, not restarted")
                    self.assertEqual(int(insts[0].get("restarts", 0)), 0, insts[0])
                self.assertEqual(self.chat(insts[0]["endpoint"], MODEL), "hello swarm hello swarm")
                self.assert_tiers_and_catalog_agree(["node-a"], [host, agent])

                r = self.stop_serve(instance_id=iid)
                self.assertEqual(r.status, 200, r)
                self.assert_group_gone(pid)
                self.assert_no_engine_left([host, agent])
                say(f"serve round {i}: kill at {phase} (engines then: {pids_at_kill}); job "
                    f"{job.get('state')} {job.get('message', '')!r}")
        self.assertEqual(self.live_instances(), [])
        self.assert_no_engine_left([host, agent])
        self.summary("serve kills", ROUNDS)


if __name__ == "__main__":
    unittest.main()
