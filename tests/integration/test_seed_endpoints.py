"""Seed 001's router endpoints: POST /v1/models/load loads a model into the router's pool (also
with autoload off) and answers once an instance is ready; DELETE /v1/models/{name} unloads it.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_seed_endpoints
"""

import unittest

from gswarm_harness import http
from test_router import MODEL_A, RouterTestCase, chat_body


class SeedRouterEndpointsTest(RouterTestCase):

    def test_load_then_unload_through_v1(self):
        self.start_router_cluster(host_extra={"autoload": False})
        # With autoload off a request names a model with no instance: 503, no load.
        status, body, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A))
        self.assertEqual(status, 503, body)
        self.assertEqual(self.ready_instances(MODEL_A), [])

        status, body, _ = self.v1("/v1/models/load", {"model": MODEL_A})
        self.assertEqual(status, 200, body)
        self.assertTrue(body["success"], body)
        ready = self.ready_instances(MODEL_A)
        self.assertEqual([i["id"] for i in ready], [body["instance_id"]], ready)
        # Loading again finds the instance: no second one.
        status, again, _ = self.v1("/v1/models/load", {"model": MODEL_A})
        self.assertEqual(status, 200, again)
        self.assertEqual(again["instance_id"], body["instance_id"])
        status, answer, _ = self.v1("/v1/chat/completions", chat_body(MODEL_A, "loaded"))
        self.assertEqual(status, 200, answer)

        r = http("DELETE", f"{self.host_url}/v1/models/{MODEL_A}", timeout=30)
        self.assertEqual(r.status, 200, r)
        self.assertEqual([i["id"] for i in r.json["stopped"]], [body["instance_id"]], r)
        self.assertEqual(self.ready_instances(MODEL_A), [])

    def test_bad_loads_are_refused(self):
        self.start_router_cluster(models=())
        status, body, _ = self.v1("/v1/models/load", {"model": "no-such-model"})
        self.assertEqual(status, 404, body)
        self.assertEqual(body["error"]["code"], "model_not_found", body)
        status, body, _ = self.v1("/v1/models/load", {"name": "x"})
        self.assertEqual(status, 400, body)
        self.assertIn("\"model\"", body["error"]["message"])


if __name__ == "__main__":
    unittest.main()
