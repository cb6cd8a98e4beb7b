"""Engines that sleep instead of dying: the router's demotion ladder (an instance evicted for room
goes to sleep, and wakes on its model's next request) and the sleep/wake verbs over REST, gRPC's
CLI and `gswarm ps`, against the fake engine speaking vLLM's sleep API (2 s cold start, 0.2 s
wake). The GPU-memory check after a sleep needs NVML and is covered by the unit tests."""

import json
import unittest

from gswarm_harness import wait_until
from test_router import MODEL_A, MODEL_B, TINY_LLAMA, RouterTestCase, chat_body

EVENT_TIMEOUT_S = 30


class SleepTest(RouterTestCase):

    def instance_of(self, name):
        """The one active instance of `name` (any state but stopped/failed)."""
        active = [i for i in self.serving(name) if i.get("state") not in ("stopped", "failed")]
        self.assertEqual(len(active), 1, self.serving(name))
        return active[0]

    def wait_state(self, name, state):
        wait_until(lambda: any(i.get("state") == state for i in self.serving(name)),
                   EVENT_TIMEOUT_S, f"an instance of {name} {state}", procs=list(self.cluster),
                   describe=lambda: json.dumps(self.serving(name), indent=1))
        return self.instance_of(name)

    def router_events(self, action):
        out = self.assert_cli_ok(self.cli("events", "--kind", "router", "--last", "200",
                                          "--json"))
        events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        return [e for e in events if e.get("action") == action]

    def chat(self, model, text):
        status, body, _ = self.v1("/v1/chat/completions", chat_body(model, text))
        self.assertEqual(status, 200, body)

    def test_an_evicted_instance_sleeps_and_wakes_on_the_next_request(self):
        self.start_router_cluster(models=(MODEL_A, MODEL_B), engine="fake-sleepy",
                                  host_extra={"keep_alive_s": -1, "max_loaded_models": 1})
        self.chat(MODEL_A, "first")
        a = self.instance_of(MODEL_A)
        self.assertEqual(a["state"], "ready")
        self.assertEqual(a.get("max_sleep_level"), 2, a)

        # B needs A's slot: A goes to sleep rather than stopping.
        self.chat(MODEL_B, "second")
        a_asleep = self.wait_state(MODEL_A, "sleeping")
        self.assertEqual(a_asleep["id"], a["id"])
        self.assertEqual(a_asleep["pid"], a["pid"], "the same engine process sleeps")
        self.assertEqual(a_asleep.get("sleep_level"), 1, a_asleep)
        slept = self.router_events("slept")
        self.assertTrue(any(e.get("model_name") == MODEL_A for e in slept), slept)
        ps = self.assert_cli_ok(self.cli("ps"))
        self.assertIn("sleeping (1)", ps.stdout)

        # A's next request wakes the same engine (no new process, no cold start); B sleeps.
        self.chat(MODEL_A, "third")
        a_again = self.instance_of(MODEL_A)
        self.assertEqual(a_again["state"], "ready")
        self.assertEqual((a_again["id"], a_again["pid"]), (a["id"], a["pid"]))
        self.assertIn("woke in", a_again.get("state_reason", ""))
        b_asleep = self.wait_state(MODEL_B, "sleeping")
        woke = self.router_events("woke")
        self.assertTrue(any(e.get("instance_id") == a["id"] for e in woke), woke)
        instances = [i for i in self.serving() if i.get("state") not in ("stopped", "failed")]
        self.assertEqual(len(instances), 2, instances)  # nothing stopped, nothing duplicated

        # By hand: wake B over REST, put it to sleep at level 2 with the CLI, wake it again.
        r = self.rest("POST", f"/instances/{b_asleep['id']}/wake", body={})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json.get("state"), "ready", r.json)
        slept_again = self.cli_json("sleep", b_asleep["id"], "--level", "2")
        self.assertEqual((slept_again.get("state"), slept_again.get("sleep_level")),
                         ("sleeping", 2), slept_again)
        out = self.assert_cli_ok(self.cli("wake", b_asleep["id"]))
        self.assertIn("is ready", out.stdout)
        self.chat(MODEL_B, "after a level-2 wake the weights were reloaded")

    def test_bad_sleep_requests_are_clear_errors(self):
        self.start_router_cluster(models=(MODEL_A,), engine="fake-sleepy")
        self.chat(MODEL_A, "load")
        a = self.instance_of(MODEL_A)
        r = self.rest("POST", "/instances/inst-nope/sleep", body={})
        self.assertEqual(r.status, 404, r)
        r = self.rest("POST", f"/instances/{a['id']}/sleep", body={"level": 3})
        self.assertEqual(r.status, 400, r)
        self.assertIn("level 3", r.json["error"]["message"] if "error" in r.json else r.text)
        r = self.rest("POST", f"/instances/{a['id']}/wake", body={})
        self.assertEqual(r.status, 409, r)  # not sleeping
        bad = self.cli("sleep", a["id"], "--level", "7")
        self.assertNotEqual(bad.returncode, 0)
        self.assertEqual(self.instance_of(MODEL_A)["state"], "ready")

    def test_an_engine_whose_sleep_fails_stays_awake(self):
        # The sleep calls answer 404 (the engine was not started in dev mode): the instance goes
        # back into rotation awake, and serves on.
        self.start_router_cluster(models=(MODEL_A, MODEL_B), engine="fake-insomniac",
                                  host_extra={"keep_alive_s": -1, "max_loaded_models": 1})
        self.chat(MODEL_A, "first")
        a = self.instance_of(MODEL_A)
        r = self.rest("POST", f"/instances/{a['id']}/sleep", body={})
        self.assertEqual(r.status, 409, r)
        self.assertIn("answered HTTP 404", r.text)
        again = self.instance_of(MODEL_A)
        self.assertEqual(again["state"], "ready", again)
        self.assertIn("sleep failed", again.get("state_reason", ""))
        self.chat(MODEL_A, "still serving")

        # Evicted for B, its sleep fails again: the router stops it instead, and B loads.
        self.chat(MODEL_B, "second")
        wait_until(lambda: not [i for i in self.serving(MODEL_A)
                                if i.get("state") not in ("stopped", "failed")],
                   EVENT_TIMEOUT_S, "ra's instance stopped after its failed sleep",
                   procs=list(self.cluster), describe=lambda: json.dumps(self.serving(), indent=1))
        evicted = self.router_events("evicted")
        self.assertTrue(any("sleep failed" in e.get("message", "") for e in evicted), evicted)
        self.assertEqual(self.instance_of(MODEL_B)["state"], "ready")


if __name__ == "__main__":
    unittest.main()
