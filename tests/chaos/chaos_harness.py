"""Shared pieces of the chaos suites (issue 15): the seed and the knobs, and the invariants every
chaos round checks once the killed process is back.

The suites reuse the integration harness (tests/integration/gswarm_harness.py) and the serving
helpers of tests/integration/test_serving.py: real `gswarm` processes on free loopback ports,
each in its own temporary HOME, the fake Hugging Face hub and the fake OpenAI engine of
tests/support.

Knobs (environment):
  GSWARM_CHAOS_SEED        the seed (default: the current time); printed at the start of every
                           test, and each test draws from its own Random(f"{seed}:{test name}"),
                           so one test can be replayed alone with the seed it printed
  GSWARM_CHAOS_ROUNDS      agent kills per scenario (download, tier copy, cross-node copy,
                           serve); default DEFAULT_ROUNDS (the issue's figure is 20)
  GSWARM_CHAOS_HOST_KILLS  host kills under router traffic; default DEFAULT_HOST_KILLS (the
                           issue's figure is 10)

Random moments are conditions, not sleeps: a round draws a point of the operation (a fraction of
the bytes staged, or a phase of an engine's start) and kills as soon as the operation reaches it.
"""

import json
import os
import random
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_INTEGRATION = os.path.join(_HERE, "..", "integration")
if _INTEGRATION not in sys.path:
    sys.path.insert(0, _INTEGRATION)

from gswarm_harness import (  # noqa: E402
    JOB_DONE_STATES, RECONNECT_TIMEOUT_S, model_files, read_manifest, sha256_file, tree_bytes,
    wait_until)
from test_serving import ENGINES, ServingTestCase, engine_command  # noqa: E402

DEFAULT_ROUNDS = 8
DEFAULT_HOST_KILLS = 4


def _int_env(name, default):
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        n = int(value)
    except ValueError:
        raise RuntimeError(f"{name}={value!r} is not a whole number") from None
    if n < 1:
        raise RuntimeError(f"{name}={value!r}: at least 1")
    return n


SEED = _int_env("GSWARM_CHAOS_SEED", int(time.time()))
ROUNDS = _int_env("GSWARM_CHAOS_ROUNDS", DEFAULT_ROUNDS)
HOST_KILLS = _int_env("GSWARM_CHAOS_HOST_KILLS", DEFAULT_HOST_KILLS)

MiB = 1024 * 1024
BIG_MODEL = "test-org/big-model"
BIG_FILE = "model.safetensors"
TINY_LLAMA = "test-org/tiny-llama"
# Size of big-model's one weights file in these suites: big enough that a kill lands inside a
# copy now and then, small enough for many rounds.
CHAOS_BIG_FILE_MB = 32
# Instance states in which an engine process is expected to exist.
LIVE_INSTANCE_STATES = ("starting", "ready", "sleeping", "draining", "stopping")
# A copy of the cluster's state settles (an agent's inventory reconciled) within this.
SETTLE_TIMEOUT_S = 20.0
# Engines of the chaos suites: test_serving's, plus one that takes a while to become ready so
# that a kill can land in every phase of its start.
CHAOS_ENGINES = dict(ENGINES)
CHAOS_ENGINES["fake-slow"] = {"command": engine_command("--startup-delay", "1.0"),
                              "ready_timeout_s": 20, "health_path": "/health"}

print(f"[chaos] seed {SEED} (GSWARM_CHAOS_SEED), {ROUNDS} rounds per agent scenario "
      f"(GSWARM_CHAOS_ROUNDS), {HOST_KILLS} host kills (GSWARM_CHAOS_HOST_KILLS)",
      file=sys.stderr, flush=True)


def say(text):
    print(f"[chaos] {text}", file=sys.stderr, flush=True)


def visible_dirs(root):
    """Directories directly under a tier root whose names are not hidden: what a scan of the tier
    takes for models."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    return sorted(n for n in names
                  if not n.startswith(".") and os.path.isdir(os.path.join(root, n)))


class ChaosTestCase(ServingTestCase):
    """A ServingTestCase (fake hub, DRAM tiers, fake engines) with the seed, the round loop's
    bookkeeping and the invariants of the issue."""

    hub_big_file_mb = CHAOS_BIG_FILE_MB

    def setUp(self):
        super().setUp()
        self.rng = random.Random(f"{SEED}:{self._testMethodName}")
        self.t_start = time.monotonic()
        self.landed = {}
        say(f"{self.id()}: seed {SEED} (replay: GSWARM_CHAOS_SEED={SEED} python3 -m unittest "
            f"{self.id()})")

    # ---- processes ------------------------------------------------------------------------

    def live(self):
        """The harness's processes that are still running (a dead one would end every wait)."""
        return [p for p in self.procs if p.alive()]

    def kill_agent(self, node_id):
        """kill -9 of the node's running agent(s); returns how many were killed."""
        home = self.agent_homes[node_id]
        # An agent's label is its HOME's name (a restart adds "#2", "#3", ...).
        victims = [p for p in self.procs if p.alive() and p.args[1:2] == ["client"]
                   and p.name.split("#")[0] == home.name]
        for p in victims:
            p.kill()
        return len(victims)

    def restart_agent(self, node_id, host):
        agent = self.start_agent(node_id, env_extra=self.hub_env())
        self.wait_node(node_id, "online", timeout=RECONNECT_TIMEOUT_S, procs=[host, agent])
        return agent

    def landed_at(self, where):
        self.landed[where] = self.landed.get(where, 0) + 1

    def summary(self, what, rounds):
        spent = time.monotonic() - self.t_start
        where = ", ".join(f"{k} {v}" for k, v in sorted(self.landed.items()))
        say(f"{self.id()}: {rounds} {what} in {spent:.1f} s (seed {SEED}); kills landed: {where}")

    # ---- jobs -----------------------------------------------------------------------------

    def wait_job_end(self, job_id, procs, timeout=120.0):
        return self.wait_job(job_id, states=JOB_DONE_STATES, timeout=timeout, procs=procs)

    def assert_failed_cleanly(self, job):
        """A job that did not succeed: it says why."""
        self.assertIn(job.get("state"), ("failed", "cancelled"), json.dumps(job))
        self.assertTrue(job.get("message"), f"a failed job says why: {json.dumps(job)}")

    # ---- invariants -----------------------------------------------------------------------

    def tier_roots(self, nodes):
        """{(node, tier): root directory} of the given nodes' disk and DRAM tiers."""
        out = {}
        for nid in nodes:
            out[(nid, "disk")] = self.model_cache_dir(nid)
            out[(nid, "dram")] = self.dram_dir(nid)
        return out

    def assert_tier_whole(self, root, deep=()):
        """Every model directory a scan of `root` would list is whole: it has a manifest, holds
        exactly the manifest's files at their sizes (and SHA-256 for the names in `deep`), and
        no partial file (.part) or download state sits in it."""
        for name in visible_dirs(root):
            model_dir = os.path.join(root, name)
            try:
                manifest = read_manifest(model_dir)
            except (OSError, ValueError) as e:
                self.fail(f"{model_dir} is visible as a model but has no readable manifest ({e}); "
                          f"files: {sorted(model_files(model_dir))}")
            expected = {f["path"]: f for f in manifest.get("files", [])}
            got = model_files(model_dir)
            self.assertEqual(sorted(got), sorted(expected),
                             f"{model_dir}: files on the tier against its manifest")
            for path, entry in expected.items():
                self.assertEqual(os.path.getsize(got[path]), int(entry.get("size", 0)),
                                 f"{model_dir}/{path}: a half-written file visible as a model")
                if name in deep and entry.get("sha256"):
                    self.assertEqual(sha256_file(got[path]), entry["sha256"],
                                     f"{model_dir}/{path}: content against its manifest")
            for dirpath, _, names in os.walk(model_dir):
                for n in names:
                    self.assertFalse(n.endswith(".part") or n == "staging.json",
                                     f"download leftovers in a visible model: "
                                     f"{os.path.join(dirpath, n)}")

    def catalog_replicas(self):
        """{(node, tier, model): path} of every ready replica in GET /models."""
        r = self.rest("GET", "/models", token=self.api_token())
        if r.status != 200 or not isinstance(r.json, dict):
            raise AssertionError(f"GET /models answered {r!r}")
        out = {}
        for model in r.json.get("models", []):
            for rep in model.get("replicas", []):
                if rep.get("state") == "ready":
                    out[(rep.get("node_id"), rep.get("tier"), model["name"])] = rep.get("path", "")
        return out

    def assert_catalog_models_sane(self):
        """A model the catalog calls available or loaded has a ready replica."""
        r = self.rest("GET", "/models", token=self.api_token())
        self.assertEqual(r.status, 200, r)
        for model in r.json.get("models", []):
            ready = [x for x in model.get("replicas", []) if x.get("state") == "ready"]
            if model.get("state") in ("available", "loaded") or model.get("available"):
                self.assertTrue(ready, f"{model['name']} is {model.get('state')} with no ready "
                                       f"replica: {json.dumps(model)}")

    def assert_tiers_and_catalog_agree(self, nodes, procs, deep=()):
        """Nothing half-written in any tier of `nodes`, and (once the agents' inventories are in)
        the catalog's ready replicas are exactly the models the tiers hold, at their paths."""
        roots = self.tier_roots(nodes)
        for root in roots.values():
            self.assert_tier_whole(root, deep)

        def on_tiers():
            return {(nid, tier, name): os.path.join(root, name)
                    for (nid, tier), root in roots.items() for name in visible_dirs(root)}

        def agree():
            listed = {k: v for k, v in self.catalog_replicas().items() if k[0] in nodes}
            held = on_tiers()
            return set(listed) == set(held) and all(
                os.path.realpath(listed[k]) == os.path.realpath(held[k]) for k in held)
        wait_until(agree, SETTLE_TIMEOUT_S, "the catalog's ready replicas to match the tiers",
                   procs=procs, describe=lambda: f"catalog {sorted(self.catalog_replicas())}, "
                                                 f"tiers {sorted(on_tiers())}")
        self.assert_catalog_models_sane()

    def live_instances(self):
        return [i for i in self.serving() if i.get("state") in LIVE_INSTANCE_STATES]

    def assert_engines_owned(self, procs, timeout=SETTLE_TIMEOUT_S):
        """Every fake engine process of this test belongs to exactly one live instance in
        GET /serving (same pid), and every live instance has its process: no orphan, no
        duplicate. Returns the live instances."""
        last = {}

        def owned():
            insts = self.live_instances()
            ids = [i["id"] for i in insts]
            listed = sorted(int(i.get("pid", 0)) for i in insts)
            running = sorted(self.engine_pids())
            last.update(insts=[(i["id"], i.get("state"), i.get("pid")) for i in insts],
                        running=running)
            if len(ids) == len(set(ids)) and listed == running:
                return {"instances": insts}
            return None
        got = wait_until(owned, timeout, "engine processes and live instances to match one to one",
                         procs=procs, describe=lambda: json.dumps(last))
        return got["instances"]

    def assert_no_engine_left(self, procs):
        wait_until(lambda: not self.engine_pids(), 15, "no fake engine process left",
                   procs=procs, describe=lambda: repr(self.engine_pids()))

    # ---- kill points ----------------------------------------------------------------------

    def kill_when_staged(self, node_id, staging_root, total, fraction, job_id, done_dir,
                         procs):
        """Kills node_id's agent as soon as `fraction` x `total` bytes are under `staging_root`,
        or the job ended, or `done_dir` (the model in place) exists; returns where it landed:
        "before" (nothing staged yet), "mid" (bytes staged) or "after" (in place or ended)."""
        want = int(fraction * total)
        state = {"asked": 0.0}

        def reached():
            staged = tree_bytes(staging_root)
            state["staged"] = staged
            if os.path.isdir(done_dir):
                return "after"
            if staged >= want and staged > 0:
                return "mid"
            if want == 0:
                return "before"
            if time.monotonic() - state["asked"] > 0.05:  # the job over HTTP now and then
                state["asked"] = time.monotonic()
                job = self.get_job(job_id)
                state["job"] = job.get("state")
                if job.get("state") in JOB_DONE_STATES:
                    return "after"
            return None
        where = wait_until(reached, 120, f"{fraction:.0%} of {total} bytes under {staging_root}",
                           interval=0.002, procs=procs, describe=lambda: json.dumps(state))
        self.kill_agent(node_id)
        self.landed_at(where)
        return where, state.get("staged", 0)
