"""Driving GSwarm from Python: the example program in tests/python, the generated stubs called
directly, and the standard gRPC health and reflection services.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_python_client
"""

import os
import subprocess
import sys
import unittest

from gswarm_harness import (
    REPO_ROOT, GSwarmTestCase, grpc_channel, import_stubs, mentions_token, stubs_dir, u64)

EXAMPLE = os.path.join(REPO_ROOT, "tests", "python", "gswarm_client_example.py")
TOKEN = "py-secret-5e8d2c41"
SERVING = 1  # grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING


def decode_varint_field(data, field_number):
    """The value of varint field `field_number` in a serialized message (0 when absent)."""
    i, value = 0, 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            v, i = _varint(data, i)
            if number == field_number:
                value = v
        elif wire_type == 2:
            length, i = _varint(data, i)
            i += length
        elif wire_type == 1:
            i += 8
        elif wire_type == 5:
            i += 4
        else:
            raise ValueError(f"unexpected wire type {wire_type} in {data!r}")
    return value


def _varint(data, i):
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


class PythonClientTest(GSwarmTestCase):

    def start_cluster(self, token=""):
        self.make_host_home(token=token)
        host = self.start_host()
        agent_home = self.make_agent_home("node-py", token=token)
        agent = self.start_agent(home=agent_home)
        self.wait_node("node-py", "online", procs=[host, agent])
        return host

    def run_example(self, *args, env_extra=None):
        env = {"GSWARM_PYTHON_STUBS": stubs_dir()}
        env.update(env_extra or {})
        home = self.new_home("example")
        try:
            return subprocess.run([sys.executable, EXAMPLE, *args], env=home.env(env),
                                  capture_output=True, text=True, timeout=30,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            self.fail(f"the example did not finish: stdout={e.stdout!r} stderr={e.stderr!r}")

    def test_example_prints_health_and_nodes(self):
        self.start_cluster()
        result = self.run_example("--host", self.grpc_target)
        self.assertEqual(result.returncode, 0, result)
        self.assertIn("ok", result.stdout)
        self.assertIn("1/1 online", result.stdout)
        node_lines = [line for line in result.stdout.splitlines() if "node-py" in line]
        self.assertEqual(len(node_lines), 1, result.stdout)
        self.assertIn("online", node_lines[0])
        # The address may come from the environment instead.
        by_env = self.run_example(env_extra={"GSWARM_HOST": self.grpc_target})
        self.assertEqual(by_env.returncode, 0, by_env)
        self.assertIn("node-py", by_env.stdout)

    def test_example_with_token(self):
        self.start_cluster(token=TOKEN)
        ok = self.run_example("--host", self.grpc_target, "--token", TOKEN)
        self.assertEqual(ok.returncode, 0, ok)
        self.assertIn("node-py", ok.stdout)
        refused = self.run_example("--host", self.grpc_target)
        self.assertNotEqual(refused.returncode, 0, refused)
        self.assertIn("UNAUTHENTICATED", refused.stderr)
        self.assertTrue(mentions_token(refused.stderr), refused)

    def test_stubs_health_and_list_nodes(self):
        self.start_cluster()
        grpc, api_pb2, api_pb2_grpc = import_stubs()
        with grpc_channel(self.grpc_target) as channel:
            stub = api_pb2_grpc.GSwarmStub(channel)
            health = stub.Health(api_pb2.HealthRequest(), timeout=5)
            self.assertEqual(health.status, "ok")
            self.assertEqual(health.nodes_online, 1)
            self.assertEqual(health.nodes_total, 1)
            self.assertFalse(health.auth_required)
            self.assertRegex(health.version, r"^\d+\.\d+\.\d+")
            nodes = stub.ListNodes(api_pb2.ListNodesRequest(), timeout=5)
            self.assertEqual([n.node_id for n in nodes.nodes], ["node-py"])
            node = nodes.nodes[0]
            self.assertEqual(node.state, "online")
            self.assertGreater(node.memory.dram_total_bytes, 0)
            self.assertGreater(node.memory.disk_total_bytes, 0)
            online = stub.ListNodes(api_pb2.ListNodesRequest(online_only=True), timeout=5)
            self.assertEqual([n.node_id for n in online.nodes], ["node-py"])
        # The stubs and REST agree.
        rest = self.nodes()["node-py"]
        self.assertEqual(u64(rest["memory"]["dram_total_bytes"]), node.memory.dram_total_bytes)

    def test_grpc_health_service_serving(self):
        self.start_cluster()
        import_stubs()
        try:
            from grpc_health.v1 import health_pb2, health_pb2_grpc
        except ImportError:
            health_pb2 = None
        with grpc_channel(self.grpc_target) as channel:
            if health_pb2 is not None:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=5)
                self.assertEqual(reply.status, health_pb2.HealthCheckResponse.SERVING)
            else:
                # No grpc_health package (Debian): call the method with hand-encoded bytes. An
                # empty HealthCheckRequest is b""; SERVING is field 1 = 1, i.e. b"\x08\x01".
                check = channel.unary_unary("/grpc.health.v1.Health/Check")
                reply = check(b"", timeout=5)
                self.assertEqual(decode_varint_field(reply, 1), SERVING, f"reply {reply!r}")

    def test_server_reflection_lists_services(self):
        self.start_cluster()
        grpc, _, _ = import_stubs()
        # ServerReflectionRequest{list_services: ""}: field 7, length-delimited, empty.
        request = b"\x3a\x00"
        replies = None
        with grpc_channel(self.grpc_target) as channel:
            for version in ("v1alpha", "v1"):
                method = f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
                try:
                    replies = b"".join(channel.stream_stream(method)(iter([request]), timeout=5))
                    break
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNIMPLEMENTED:
                        raise
        self.assertIsNotNone(replies, "server reflection is not enabled")
        for service in (b"gswarm.v1.GSwarm", b"gswarm.v1.AgentLink", b"grpc.health.v1.Health"):
            self.assertIn(service, replies)


if __name__ == "__main__":
    unittest.main()
