"""Bearer-token auth on the host's REST and gRPC APIs, for agents and for the CLI.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_auth
"""

import os
import re
import stat
import unittest

from gswarm_harness import (
    ONLINE_TIMEOUT_S, GSwarmTestCase, error_message, grpc_channel, import_stubs, mentions_token,
    wait_until)

TOKEN = "it-secret-7c1f0e9a2b4d"
WRONG = "it-wrong-token-0000"
REJECTED = re.compile(r"token.*(reject|invalid|wrong|denied|refused|unauthenticated|not accepted)"
                      r"|(reject|invalid|wrong|denied|refused|unauthenticated).*token",
                      re.IGNORECASE)


class ConfiguredTokenTest(GSwarmTestCase):

    def setUp(self):
        super().setUp()
        self.make_host_home(token=TOKEN)
        self.host = self.start_host()

    def assert_unauthenticated(self, response, what):
        self.assertEqual(response.status, 401, f"{what}: {response!r}")
        self.assertIsInstance(response.json, dict, f"{what}: error body should be JSON")
        err = response.json.get("error", {})
        self.assertEqual(err.get("code"), 401, f"{what}: {response!r}")
        self.assertEqual(err.get("status"), "UNAUTHENTICATED", f"{what}: {response!r}")
        self.assertTrue(mentions_token(error_message(response)),
                        f"{what}: the message should say the token is missing or wrong: "
                        f"{response!r}")

    def test_rest_requires_token(self):
        self.assert_unauthenticated(self.rest("GET", "/nodes"), "GET /nodes without a token")
        self.assert_unauthenticated(self.rest("GET", "/nodes", token=WRONG),
                                    "GET /nodes with a wrong token")
        self.assert_unauthenticated(self.rest("GET", "/config"), "GET /config without a token")
        ok = self.rest("GET", "/nodes", token=TOKEN)
        self.assertEqual(ok.status, 200, ok)
        self.assertIn("nodes", ok.json, ok)
        health = self.rest("GET", "/health")
        self.assertEqual(health.status, 200, f"/health never needs a token: {health!r}")
        self.assertTrue(health.json.get("auth_required"), health)

    def test_config_masks_token(self):
        r = self.rest("GET", "/config", token=TOKEN)
        self.assertEqual(r.status, 200, r)
        self.assertNotIn(TOKEN, r.text, "the token must never be echoed back")
        self.assertEqual(r.json["config"]["host"]["auth_token"], "***", r)
        cli = self.assert_cli_ok(self.cli("config", "--json"))
        self.assertNotIn(TOKEN, cli.stdout)

    def test_grpc_requires_token(self):
        grpc, api_pb2, api_pb2_grpc = import_stubs()
        with grpc_channel(self.grpc_target) as channel:
            stub = api_pb2_grpc.GSwarmStub(channel)
            for label, metadata in (("no token", None),
                                    ("wrong token", [("authorization", f"Bearer {WRONG}")])):
                with self.subTest(label):
                    with self.assertRaises(grpc.RpcError) as ctx:
                        stub.ListNodes(api_pb2.ListNodesRequest(), metadata=metadata, timeout=5)
                    self.assertEqual(ctx.exception.code(), grpc.StatusCode.UNAUTHENTICATED,
                                     ctx.exception)
                    self.assertTrue(mentions_token(ctx.exception.details()),
                                    f"details should mention the token: "
                                    f"{ctx.exception.details()!r}")
            reply = stub.ListNodes(api_pb2.ListNodesRequest(),
                                   metadata=[("authorization", f"Bearer {TOKEN}")], timeout=5)
            self.assertEqual(list(reply.nodes), [])

    def test_every_rpc_requires_token(self):
        """Walks every method of both services as the descriptors list them, so that an RPC
        added without the check fails here: no token and a wrong one are UNAUTHENTICATED."""
        grpc, api_pb2, _ = import_stubs()
        from gswarm.v1 import agent_pb2  # noqa: E402 (generated at build time)
        services = [api_pb2.DESCRIPTOR.services_by_name["GSwarm"],
                    agent_pb2.DESCRIPTOR.services_by_name["AgentLink"]]
        walked = []
        with grpc_channel(self.grpc_target) as channel:
            for service in services:
                for method in service.methods:
                    path = f"/{service.full_name}/{method.name}"
                    shape = {(False, False): channel.unary_unary,
                             (False, True): channel.unary_stream,
                             (True, False): channel.stream_unary,
                             (True, True): channel.stream_stream}[
                                 (method.client_streaming, method.server_streaming)]
                    call = shape(path, request_serializer=lambda m: m,
                                 response_deserializer=lambda b: b)
                    for label, metadata in (("no token", None),
                                            ("wrong token",
                                             [("authorization", f"Bearer {WRONG}")])):
                        with self.subTest(method=path, token=label):
                            request = b""  # every request message parses from no bytes
                            arg = iter([request]) if method.client_streaming else request
                            with self.assertRaises(grpc.RpcError) as ctx:
                                answer = call(arg, metadata=metadata, timeout=5)
                                if method.server_streaming:
                                    list(answer)
                            self.assertEqual(ctx.exception.code(),
                                             grpc.StatusCode.UNAUTHENTICATED,
                                             f"{path} with {label}: {ctx.exception}")
                    walked.append(path)
        # Both services were really walked (a descriptor lookup that found nothing would pass).
        self.assertIn("/gswarm.v1.GSwarm/WatchEvents", walked)
        self.assertIn("/gswarm.v1.AgentLink/Connect", walked)
        self.assertGreaterEqual(len(walked), 26, walked)

    def test_agent_with_wrong_token_is_refused(self):
        bad = self.start_agent(home=self.make_agent_home("node-bad", token=WRONG))
        # The right token given as a flag (the agent's file has none).
        good = self.start_agent(home=self.make_agent_home("node-good"), args=["--token", TOKEN])
        seen_online = []

        def good_online_and_bad_rejected():
            nodes = self.nodes(token=TOKEN)
            if nodes.get("node-bad", {}).get("state") == "online":
                seen_online.append(nodes["node-bad"])
            return (nodes.get("node-good", {}).get("state") == "online"
                    and REJECTED.search(bad.log()))
        wait_until(good_online_and_bad_rejected, ONLINE_TIMEOUT_S,
                   "node-good online and node-bad's log saying its token was rejected",
                   procs=[self.host, good], describe=lambda: f"nodes: {self.describe_nodes()}; "
                   f"node-bad log: {bad.tail(5)!r}")
        self.assertEqual(seen_online, [], "an agent with a wrong token must never be online")
        self.assertNotEqual(self.nodes(token=TOKEN).get("node-bad", {}).get("state"), "online")

    def test_cli_token(self):
        home = self.new_home("cli")  # no config, no token file
        wrong = self.cli("--host", self.grpc_target, "--token", WRONG, "nodes", home=home)
        self.assertNotEqual(wrong.returncode, 0, wrong)
        self.assertTrue(mentions_token(wrong.stderr), f"stderr should mention the token: {wrong}")
        missing = self.cli("--host", self.grpc_target, "nodes", home=home)
        self.assertNotEqual(missing.returncode, 0, missing)
        self.assertTrue(mentions_token(missing.stderr), missing)
        right = self.cli("--host", self.grpc_target, "--token", TOKEN, "nodes", "--json",
                         home=home)
        self.assert_cli_ok(right)
        # The host's own HOME has the token in its config: no flags needed there.
        self.assert_cli_ok(self.cli("nodes"))


class GeneratedTokenTest(GSwarmTestCase):
    """host.host 0.0.0.0 and no token configured: the host makes one up (unless --insecure)."""

    def test_token_generated_when_listening_beyond_loopback(self):
        # The agent shares the host's HOME (and its config, whose client section has no token).
        home = self.make_host_home(token="", bind="0.0.0.0", client_node_id="node-a")
        host = self.start_host()
        self.assertTrue(os.path.isfile(home.token_path),
                        f"{home.token_path} should have been generated")
        mode = stat.S_IMODE(os.stat(home.token_path).st_mode)
        self.assertEqual(mode, 0o600, f"token file mode is {oct(mode)}")
        with open(home.token_path) as f:
            token = f.read().strip()
        self.assertGreaterEqual(len(token), 16, "a generated token should be long")

        r = self.rest("GET", "/nodes")
        self.assertEqual(r.status, 401, r)
        self.assertTrue(mentions_token(error_message(r)), r)
        self.assertEqual(self.rest("GET", "/nodes", token=token).status, 200)
        self.assertTrue(self.health().get("auth_required"))

        self.assert_cli_ok(self.cli("nodes"))  # same HOME: reads the token file, no flags

        agent = self.start_agent(home=home, name="agent-node-a")
        self.token = token
        self.wait_node("node-a", "online", procs=[host, agent])

        # A restart keeps the same token: clients holding it keep working.
        host.stop()
        self.start_host()
        with open(home.token_path) as f:
            self.assertEqual(f.read().strip(), token)
        self.wait_node("node-a", "online", procs=[agent])

    def test_insecure_turns_auth_off(self):
        self.make_host_home(token="", bind="0.0.0.0")
        self.start_host(args=["--insecure"])
        r = self.rest("GET", "/nodes")
        self.assertEqual(r.status, 200, r)
        self.assertFalse(self.health().get("auth_required", False))
        home = self.new_home("cli")
        self.assert_cli_ok(self.cli("--host", self.grpc_target, "nodes", home=home))


if __name__ == "__main__":
    unittest.main()
