"""GET /metrics (issue 12): the host's Prometheus exposition after real work — a download, an
autoload through the router, answered, streamed and refused requests, an eviction — passes
`promtool check metrics` (Debian's prometheus package), carries the families and labels an
operator scrapes, and sits behind the token unless host.metrics_public.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_metrics
"""

import os
import re
import shutil
import subprocess
import unittest

from gswarm_harness import http, wait_until
from test_router import MODEL_A, MODEL_B, RouterTestCase, chat_body

PROMTOOL = shutil.which("promtool")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """Samples as (name, {label: value}, float), in order."""
    samples = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if m is None:
            raise AssertionError(f"not a sample line: {line!r}")
        labels = dict(LABEL.findall(m.group(3) or ""))
        samples.append((m.group(1), labels, float(m.group(4))))
    return samples


def value(samples, name, **labels):
    """The sum of `name`'s samples whose labels include `labels`."""
    return sum(v for n, l, v in samples
               if n == name and all(l.get(k) == w for k, w in labels.items()))


class MetricsTest(RouterTestCase):

    def scrape(self, token=None):
        r = http("GET", self.host_url + "/metrics", token=token, timeout=10)
        return r

    def require_promtool(self):
        if PROMTOOL is None:
            if os.environ.get("CI"):
                self.fail("promtool is missing (Debian package prometheus: bash deploy/install-deps.sh)")
            self.skipTest("promtool is missing (Debian package prometheus)")

    def test_exposition_after_real_work_passes_promtool(self):
        self.require_promtool()
        self.start_router_cluster(models=(MODEL_A, MODEL_B),
                                  host_extra={"keep_alive_s": -1, "max_loaded_models": 1})
        # An autoload, answered requests, a stream, a refused one, then a second model that
        # evicts the first (max_loaded_models 1).
        for _ in range(3):
            status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "count me"))
            self.assertEqual(status, 200, body)
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "s", stream=True))
        self.assertEqual(status, 200, body)
        status, body, _ = self.v1("/v1/chat/completions", chat_body("no-such-model"))
        self.assertEqual(status, 404, body)
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_B, "evict a"))
        self.assertEqual(status, 200, body)

        r = self.scrape()
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.headers.get("Content-Type", "").startswith("text/plain; version=0.0.4"),
                        r.headers)
        check = subprocess.run([PROMTOOL, "check", "metrics"], input=r.text, text=True,
                               capture_output=True, timeout=30)
        self.assertEqual(check.returncode, 0,
                         f"promtool check metrics:\n{check.stdout}{check.stderr}")
        self.assertEqual(check.stdout.strip(), "", check.stdout)

        s = parse(r.text)
        self.assertEqual(value(s, "gswarm_router_requests_total", model=MODEL_A, code="200"), 4)
        self.assertEqual(value(s, "gswarm_router_requests_total", code="404"), 1)
        self.assertEqual(value(s, "gswarm_router_request_duration_seconds_count", model=MODEL_A),
                         4)
        self.assertGreaterEqual(
            value(s, "gswarm_router_time_to_first_byte_seconds_count", model=MODEL_A), 1)
        # Histogram buckets are cumulative and end at +Inf = count.
        inf = value(s, "gswarm_router_request_duration_seconds_bucket", model=MODEL_A, le="+Inf")
        self.assertEqual(inf, 4)
        # Two loads (A on demand, then B) from the tier their weights came from.
        self.assertEqual(value(s, "gswarm_model_load_duration_seconds_count"), 2)
        self.assertEqual(value(s, "gswarm_evictions_total", reason="max_loaded_models"), 1)
        # Jobs: the two downloads and the serves ended; bytes came from the hub.
        self.assertEqual(value(s, "gswarm_jobs_finished_total", kind="download",
                               state="succeeded"), 2)
        self.assertGreater(value(s, "gswarm_transfer_bytes_total", kind="download", source="hub"),
                           0)
        self.assertEqual(value(s, "gswarm_node_up", node="node-a"), 1)
        self.assertGreater(value(s, "gswarm_tier_budget_bytes", node="node-a", tier="disk"), 0)
        self.assertLess(value(s, "gswarm_node_heartbeat_age_seconds", node="node-a"), 30)
        self.assertEqual(value(s, "gswarm_instances", model=MODEL_B, state="ready"), 1)
        self.assertEqual(value(s, "gswarm_models"), 2)
        self.assertEqual(value(s, "gswarm_router_queue_depth"), 0)

    def test_metrics_need_the_token_unless_public(self):
        home = self.new_home("host")
        token = "metrics-secret-token"
        home.write_config({"host": self.host_section(home, token=token),
                           "client": self.client_section(home, "node-local", token=token)})
        self.host_home = home
        host = self.start_host()
        self.assertEqual(self.scrape().status, 401)
        self.assertEqual(self.scrape(token="wrong").status, 401)
        self.assertEqual(self.scrape(token=token).status, 200)
        host.stop()

        home.write_config({"host": self.host_section(home, token=token, metrics_public=True),
                           "client": self.client_section(home, "node-local", token=token)})
        self.start_host()
        self.assertEqual(self.scrape().status, 200)
        # Only /metrics: the rest still needs it.
        self.assertEqual(http("GET", self.host_url + "/nodes").status, 401)


class TopAndLogsTest(RouterTestCase):

    def test_top_once_and_the_engine_log_over_rest(self):
        self.start_router_cluster()
        instance = self.serve_cli(MODEL_A)
        snapshot = self.cli_json("top", "--once")
        self.assertIn("node-a", [n["node_id"] for n in snapshot["nodes"]["nodes"]], snapshot)
        self.assertIn(instance["id"], [i["id"] for i in snapshot["instances"]["instances"]],
                      snapshot)
        kinds = {j["kind"] for j in snapshot["jobs"]["jobs"]}
        self.assertTrue({"download", "serve"} <= kinds, kinds)
        # The engine's last lines over REST (what the dashboard's panel shows).
        r = http("GET", f"{self.host_url}/instances/{instance['id']}/logs?tail=5")
        self.assertEqual(r.status, 200, r)
        self.assertIn("listening on", r.text)
        self.assertLessEqual(len(r.text.strip().splitlines()), 5, r.text)
        self.assertEqual(http("GET", f"{self.host_url}/instances/{instance['id']}/logs?tail=0")
                         .status, 400)
        self.assertEqual(http("GET", f"{self.host_url}/instances/nope/logs").status, 404)
        view = self.cli("top", "--once")
        self.assert_cli_ok(view)
        for text in ("node-a", MODEL_A, instance["id"], "ready", "download"):
            self.assertIn(text, view.stdout)


if __name__ == "__main__":
    unittest.main()
