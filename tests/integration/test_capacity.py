"""Memory budgets off the GPU and `gswarm plan` (issue 13, piece 3), and seed 004's
POST /api/orchestrate/load (a registered model downloaded, then loaded: one job).

The agent here has no GPU: every instance runs on the CPU and reserves model size x the engine's
memory_factor against client.cpu_memory_budget. The fake engine's factor is set high (5) so that
an instance's footprint (about 110 MB for the 21 MiB test model) is well above the Python
process's resident set (about 25 MB): the accounting is then exactly the footprint, and two
instances fit in the 0.25 GiB budget while a third does not.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_capacity
"""

import json
import unittest

from gswarm_harness import JOB_TIMEOUT_S, wait_until
from test_router import LOAD_TIMEOUT_S, MODEL_A, MODEL_B, RouterTestCase, chat_body, post_json
from test_serving import ENGINES

MODEL_C = "rc"
BUDGET_GIB = 0.25
FACTOR = 5
RAM_ENGINES = {name: dict(spec, memory_factor=FACTOR) for name, spec in ENGINES.items()}


class CapacityTestCase(RouterTestCase):

    def start_budget_cluster(self, models):
        self.start_router_cluster(models=models, engines=RAM_ENGINES,
                                  agent_extra={"cpu_memory_budget": BUDGET_GIB})

    def plan(self, model):
        result = self.cli("--json", "plan", model, "--node", "node-a")
        self.assert_cli_ok(result)
        capacity = json.loads(result.stdout)
        devices = capacity.get("devices", [])
        self.assertEqual([d["device"] for d in devices], ["cpu"], capacity)
        return capacity, devices[0]

    def instance_of(self, model):
        ready = self.ready_instances(model)
        self.assertEqual(len(ready), 1, self.serving(model))
        return ready[0]


class CpuBudgetTest(CapacityTestCase):

    def test_plan_matches_what_the_router_then_does(self):
        self.start_budget_cluster((MODEL_A, MODEL_B, MODEL_C))
        capacity, cpu = self.plan(MODEL_A)
        needed = int(cpu["needed_bytes"])
        budget = int(cpu["budget_bytes"])
        self.assertEqual(budget, int(BUDGET_GIB * (1 << 30)), cpu)
        self.assertEqual(needed, int(int(capacity["model_bytes"]) * FACTOR), capacity)
        self.assertTrue(cpu["holds_model"], cpu)
        self.assertEqual(cpu.get("fits_now"), 2, cpu)
        self.assertEqual(cpu.get("fits_empty"), 2, cpu)
        self.assertEqual(cpu.get("evict", []), [], cpu)
        # The same over REST.
        r = self.rest("GET", f"/capacity?model={MODEL_A}&node=node-a")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["devices"][0]["fits_now"], 2, r.json)

        # Two loads through the router fill the budget.
        for model in (MODEL_A, MODEL_B):
            status, body, _ = self.v1("/v1/chat/completions", chat_body(model, "fill"))
            self.assertEqual(status, 200, body)
        first = self.instance_of(MODEL_A)
        second = self.instance_of(MODEL_B)
        # The agent measures each CPU engine's resident memory (its process group's RSS).
        wait_until(lambda: all(int(i.get("ram_bytes", 0)) > 0 for i in
                               (self.instance_of(MODEL_A), self.instance_of(MODEL_B))),
                   JOB_TIMEOUT_S, "CPU instances report their RSS")
        _, cpu = self.plan(MODEL_C)
        self.assertEqual(cpu.get("fits_now", 0), 0, cpu)
        self.assertEqual(cpu.get("fits_empty"), 2, cpu)
        self.assertEqual(sorted(cpu["instances"]), sorted([first["id"], second["id"]]), cpu)
        # The least recently used (ra) would leave, and that is enough.
        self.assertEqual(cpu["evict"], [first["id"]], cpu)
        self.assertTrue(cpu["evict_enough"], cpu)
        table = self.cli("plan", MODEL_C)
        self.assert_cli_ok(table)
        self.assertIn(first["id"], table.stdout)
        self.assertIn("FIT NOW", table.stdout)

        # The router does just that: rc loads, ra's instance leaves, rb stays.
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_C, "third"))
        self.assertEqual(status, 200, body)
        wait_until(lambda: not self.ready_instances(MODEL_A), LOAD_TIMEOUT_S,
                   "ra's instance evicted for rc")
        self.assertEqual(self.instance_of(MODEL_B)["id"], second["id"])
        self.instance_of(MODEL_C)

        # An operator's serve does not evict: it is refused against the RAM budget.
        result = self.cli("serve", MODEL_A, "--gpu", "cpu")
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertIn("of RAM on node node-a", result.stderr)
        self.assertIn("client.cpu_memory_budget", result.stderr)

    def test_bad_capacity_requests(self):
        self.start_budget_cluster(())
        r = self.rest("GET", "/capacity")
        self.assertEqual(r.status, 400, r)
        r = self.rest("GET", "/capacity?model=no-such-model")
        self.assertEqual(r.status, 404, r)
        result = self.cli("plan", "no-such-model")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("no-such-model", result.stderr)


class OrchestrateLoadTest(CapacityTestCase):
    """Seed 004: register with hf_path, then POST /api/orchestrate/load {"model_name"}."""

    def test_registered_model_is_downloaded_then_loaded_in_one_job(self):
        self.start_budget_cluster(())
        r = self.rest("POST", "/api/models", body={
            "model_name": "qwen-3b", "hf_path": "test-org/tiny-llama", "trust_remote_code": False,
            "cache_location": "primary", "estimated_size_mb": 10})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.ready_instances("qwen-3b"), [])

        status, body, _ = post_json(self.host_url, "/api/orchestrate/load",
                                    {"model_name": "qwen-3b"}, timeout=10)
        self.assertEqual(status, 200, body)
        job = body["job"]
        self.assertEqual(job["kind"], "load", job)
        done = self.wait_job(job["id"])
        self.assertEqual(done["state"], "succeeded", done)
        self.assertGreater(int(done.get("bytes_done", 0)), 0, done)  # the download's figures
        self.assertEqual(done["instance"]["state"], "ready", done)
        instance = self.instance_of("qwen-3b")
        self.assertEqual(instance["id"], done["instance"]["id"])
        model = self.rest("GET", "/api/models/qwen-3b").json
        self.assertIn("disk", [r["tier"] for r in model.get("replicas", [])], model)

        # Loaded once more: nothing to download, an ordinary serve.
        status, body, _ = post_json(self.host_url, "/api/orchestrate/load",
                                    {"model_name": "qwen-3b", "wait": True},
                                    timeout=LOAD_TIMEOUT_S)
        self.assertEqual(status, 200, body)
        self.assertEqual(body["job"]["kind"], "serve", body)
        self.assertEqual(body["job"]["state"], "succeeded", body)

    def test_bad_orchestrate_loads_are_refused(self):
        self.start_budget_cluster(())
        status, body, _ = post_json(self.host_url, "/api/orchestrate/load", {}, timeout=10)
        self.assertEqual(status, 400, body)
        status, body, _ = post_json(self.host_url, "/api/orchestrate/load",
                                    {"model_name": "never-registered"}, timeout=10)
        self.assertEqual(status, 404, body)

    def test_a_load_that_cannot_be_served_after_its_download_fails_saying_why(self):
        self.start_budget_cluster(())
        self.rest("POST", "/api/models", body={"model_name": "too-big",
                                               "hf_path": "test-org/tiny-llama"})
        # Asked for a GPU this node does not have: the download lands, the serve cannot start.
        status, body, _ = post_json(self.host_url, "/api/orchestrate/load",
                                    {"model_name": "too-big", "gpu_device": "gpu3"}, timeout=10)
        self.assertEqual(status, 200, body)
        done = self.wait_job(body["job"]["id"])
        self.assertEqual(done["state"], "failed", done)
        self.assertIn("downloaded, but the model cannot be served", done["message"])
        self.assertIn("gpu3", done["message"])
        model = self.rest("GET", "/api/models/too-big").json
        self.assertIn("disk", [r["tier"] for r in model.get("replicas", [])], model)


if __name__ == "__main__":
    unittest.main()
