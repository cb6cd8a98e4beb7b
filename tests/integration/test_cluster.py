"""A host and its agents as separate `gswarm` processes on loopback: nodes come and go, the host
restarts, the CLI reports what it sees, configs are checked.

Run: GSWARM_BIN=build/cli/gswarm /usr/bin/python3 -m unittest -v test_cluster
"""

import json
import os
import re
import signal
import unittest

from gswarm_harness import (
    OFFLINE_TIMEOUT_S, ONLINE_TIMEOUT_S, RECONNECT_TIMEOUT_S, GSwarmTestCase, free_port, u64,
    wait_until)

SEMVER = re.compile(r"\b\d+\.\d+\.\d+\b")


class ClusterTestCase(GSwarmTestCase):

    def start_cluster(self, node_ids=("node-a", "node-b")):
        """A host and one agent per node id, all online."""
        self.make_host_home()
        host = self.start_host()
        agents = {nid: self.start_agent(nid) for nid in node_ids}
        for nid, agent in agents.items():
            self.wait_node(nid, "online", procs=[host, agent])
        return host, agents

    def assert_memory_reported(self, node):
        memory = node.get("memory") or {}
        for field in ("dram_total_bytes", "dram_available_bytes", "disk_total_bytes"):
            self.assertGreater(u64(memory.get(field)), 0,
                               f"node {node.get('node_id')}: memory.{field} should be > 0: "
                               f"{json.dumps(node)}")
        self.assertGreater(u64(node.get("dram_total_bytes")), 0, json.dumps(node))
        self.assertLessEqual(u64(memory.get("dram_available_bytes")),
                             u64(memory.get("dram_total_bytes")), json.dumps(node))


class TwoAgentClusterTest(ClusterTestCase):

    def test_two_agents_online_with_memory(self):
        host, agents = self.start_cluster()
        nodes = self.nodes()
        self.assertEqual(sorted(nodes), ["node-a", "node-b"], nodes)
        for nid in ("node-a", "node-b"):
            self.assertEqual(nodes[nid]["state"], "online", nodes[nid])
            self.assert_memory_reported(nodes[nid])
            self.assertGreater(nodes[nid].get("cpu_cores", 0), 0, nodes[nid])
            self.assertTrue(nodes[nid].get("hostname"), nodes[nid])
        health = self.health()
        self.assertEqual(health.get("status"), "ok", health)
        self.assertEqual(health.get("nodes_online"), 2, health)
        self.assertEqual(health.get("nodes_total"), 2, health)
        self.assertFalse(health.get("auth_required", False), health)
        memory = health.get("memory") or {}
        # Cluster sums over two online nodes on the same machine: at least one node's worth.
        node_dram = u64(nodes["node-a"]["memory"]["dram_total_bytes"])
        self.assertGreaterEqual(u64(memory.get("dram_total_bytes")), node_dram, health)
        self.assertGreater(u64(memory.get("disk_total_bytes")), 0, health)

    def test_nodes_cli_json(self):
        self.start_cluster()
        out = self.cli_json("nodes")
        nodes = {n["node_id"]: n for n in out.get("nodes", [])}
        self.assertEqual(sorted(nodes), ["node-a", "node-b"], out)
        for node in nodes.values():
            self.assertEqual(node.get("state"), "online", node)
            self.assert_memory_reported(node)

    def test_rest_json_follows_protobuf_mapping(self):
        self.start_cluster(("node-a",))
        node = self.nodes()["node-a"]
        # uint64 fields are JSON strings of digits, uint32 fields numbers, names snake_case.
        for value, field in ((node.get("dram_total_bytes"), "dram_total_bytes"),
                             (node["memory"].get("dram_total_bytes"), "memory.dram_total_bytes"),
                             (node["memory"].get("disk_total_bytes"), "memory.disk_total_bytes")):
            self.assertIsInstance(value, str, f"{field} should be a JSON string: {node}")
            self.assertRegex(value, r"^\d+$", field)
        self.assertIsInstance(node.get("cpu_cores"), int, node)
        self.assertNotIn("nodeId", node)
        health = self.health()
        self.assertIsInstance(health.get("uptime_s"), (int, float), health)
        self.assertIsInstance(health.get("nodes_online"), int, health)

    def test_cli_nodes_human_output(self):
        self.start_cluster()
        nodes = self.assert_cli_ok(self.cli("nodes"))
        self.assertFalse(nodes.stdout.lstrip().startswith("{"), "human output is not JSON")
        for nid in ("node-a", "node-b"):
            line = next((x for x in nodes.stdout.splitlines() if nid in x), None)
            self.assertIsNotNone(line, f"{nid} missing from:\n{nodes.stdout}")
            self.assertIn("online", line)

    def test_cli_health_human_output(self):
        self.start_cluster()
        health = self.assert_cli_ok(self.cli("health"))
        self.assertFalse(health.stdout.lstrip().startswith("{"), "human output is not JSON")
        self.assertIn("ok", health.stdout)
        self.assertRegex(health.stdout, r"\b2 online / 2 total\b")
        self.assertRegex(health.stdout, r"dram\s+\d")

    def test_cli_memory(self):
        self.start_cluster(("node-a",))
        human = self.assert_cli_ok(self.cli("memory"))
        self.assertIn("node-a", human.stdout)
        self.assertIn("online", human.stdout)
        out = self.cli_json("memory")
        nodes = {n["node_id"]: n for n in out.get("nodes", [])}
        self.assertIn("node-a", nodes, out)
        memory = nodes["node-a"]["memory"]
        self.assertGreater(int(memory["dram_total_bytes"]), 0, memory)
        self.assertGreater(int(memory["disk_total_bytes"]), 0, memory)
        self.assertGreater(int(memory["dram_tier_budget_bytes"]), 0, memory)


class NodeLivenessTest(ClusterTestCase):

    def test_killed_agent_goes_offline_and_comes_back(self):
        host, agents = self.start_cluster()
        agents["node-b"].kill()  # SIGKILL: no goodbye
        node = self.wait_node("node-b", "offline", timeout=OFFLINE_TIMEOUT_S, procs=[host])
        self.assertTrue(node.get("state_reason"), f"offline node should say why: {node}")
        self.assertEqual(self.nodes()["node-a"]["state"], "online")
        health = self.health()
        self.assertEqual(health.get("nodes_online"), 1, health)
        self.assertEqual(health.get("nodes_total"), 2, health)

        # The same node (same HOME, same config) comes back.
        restarted = self.start_agent("node-b")
        self.wait_node("node-b", "online", procs=[host, restarted])
        self.assertEqual(len(self.node_list()), 2, self.node_list())
        self.assertEqual(self.health().get("nodes_online"), 2)

    def test_stopped_agent_goes_offline_by_heartbeat_timeout(self):
        host, agents = self.start_cluster()
        agent = agents["node-a"]
        agent.send_signal(signal.SIGSTOP)  # the TCP connection stays open, heartbeats stop
        try:
            node = self.wait_node("node-a", "offline", timeout=OFFLINE_TIMEOUT_S, procs=[host])
            self.assertTrue(node.get("state_reason"), f"offline node should say why: {node}")
            self.assertEqual(self.nodes()["node-b"]["state"], "online")
        finally:
            agent.send_signal(signal.SIGCONT)
        self.wait_node("node-a", "online", timeout=ONLINE_TIMEOUT_S, procs=[host, agent])
        self.assertEqual(self.health().get("nodes_online"), 2)

    def test_agent_sigterm_exits_zero_and_node_goes_offline(self):
        host, agents = self.start_cluster()
        self.assertEqual(agents["node-a"].stop(signal.SIGTERM), 0, "agent exit code on SIGTERM")
        self.wait_node("node-a", "offline", timeout=OFFLINE_TIMEOUT_S, procs=[host])
        self.assertEqual(self.nodes()["node-b"]["state"], "online")

    def test_duplicate_node_id_replaces_first_session(self):
        host, agents = self.start_cluster(("node-a",))
        first = self.nodes()["node-a"]
        # A second agent: its file says another id, the --node-id flag wins.
        home = self.make_agent_home("not-this-id", name="agent-node-a-dup")
        dup_port = self.read_data_port(home)
        dup = self.start_agent(home=home, args=["--node-id", "node-a"])

        def replaced(node):
            # The entry now describes the second agent: its data port, else a new session.
            if first.get("data_port"):
                return node.get("data_port") == dup_port
            return bool(first.get("session_id")) and node.get("session_id") != first["session_id"]
        self.wait_node("node-a", "online", procs=[host, dup], where=replaced)
        nodes = self.node_list()
        self.assertEqual([n["node_id"] for n in nodes], ["node-a"],
                         f"one entry for node-a, and the flag overrides the file: {nodes}")
        self.assertEqual(nodes[0]["state"], "online", nodes)
        self.assertEqual(self.health().get("nodes_online"), 1)

    @staticmethod
    def read_data_port(home):
        with open(home.config_path) as f:
            return int(re.search(r"data_port: (\d+)", f.read()).group(1))


class HostLifecycleTest(ClusterTestCase):

    def test_host_restart_on_same_ports_agents_reconnect(self):
        host, agents = self.start_cluster()
        self.assertEqual(host.stop(signal.SIGTERM), 0, "host exit code on SIGTERM")
        for agent in agents.values():
            self.assertIsNone(agent.poll(), f"{agent.name} must survive the host going away")
        host2 = self.start_host()  # same HOME, same config, same ports
        for nid, agent in agents.items():
            self.wait_node(nid, "online", timeout=RECONNECT_TIMEOUT_S, procs=[host2, agent])
        self.assertEqual(self.health().get("nodes_online"), 2)

    def test_agent_started_before_host(self):
        self.make_host_home()
        agent = self.start_agent("node-a")
        # The agent is up and trying (it logs its attempts) while nothing listens.
        wait_until(lambda: os.path.getsize(agent.log_path) > 0, 10,
                   "the agent to log its first attempt to reach the host", procs=[agent])
        host = self.start_host()
        self.wait_node("node-a", "online", timeout=RECONNECT_TIMEOUT_S, procs=[host, agent])

    def test_sigint_host_exits_zero(self):
        host, _ = self.start_cluster(("node-a",))
        self.assertEqual(host.stop(signal.SIGINT), 0, "host exit code on SIGINT")

    def test_start_runs_host_and_local_agent(self):
        home = self.make_host_home(client_node_id="node-a")
        start = self.spawn("start", ["start", *self._log_level_args()], home)
        self.wait_ready(start)
        self.wait_node("node-a", "online", procs=[start])
        health = wait_until(lambda: (h := self.health()).get("nodes_online") == 1 and h,
                            ONLINE_TIMEOUT_S, "/health to count one node online",
                            procs=[start])
        self.assertEqual(health.get("nodes_total"), 1, health)
        self.assert_memory_reported(self.nodes()["node-a"])
        self.assertEqual(start.stop(signal.SIGTERM), 0, "`gswarm start` exit code on SIGTERM")


class ClusterDefaultsTest(ClusterTestCase):
    """host.storage_devices is the cluster's default tier layout: an agent whose config leaves
    its DRAM budget unset follows it; one that sets client.dram_cache_size keeps its own."""

    def test_dram_budget_follows_the_cluster_default_unless_the_node_sets_its_own(self):
        GiB = 1 << 30
        self.make_host_home(host_extra={"storage_devices": {"dram": {"max_size_gb": 1}}})
        host = self.start_host()
        follows = self.start_agent("node-a")  # its client section has no dram_cache_size
        own_home = self.make_agent_home("node-b", dram_cache_size=2)
        keeps = self.start_agent(home=own_home)
        for nid, agent in (("node-a", follows), ("node-b", keeps)):
            self.wait_node(nid, "online", procs=[host, agent])

        def budgets():
            return {nid: u64((node.get("memory") or {}).get("dram_tier_budget_bytes"))
                    for nid, node in self.nodes().items()}
        wait_until(lambda: budgets() == {"node-a": 1 * GiB, "node-b": 2 * GiB},
                   ONLINE_TIMEOUT_S, "node-a's DRAM budget at the cluster's 1 GiB and node-b's "
                   "at its own 2 GiB", procs=[host, follows, keeps],
                   describe=lambda: f"budgets {budgets()}")
        # The node that keeps its own says so, naming both figures.
        wait_until(lambda: "cluster default is 1.0 GiB" in keeps.log(), 10,
                   "node-b's log to name the cluster default it overrides", procs=[keeps])


class BadInputTest(ClusterTestCase):

    def test_bodies_and_queries_that_are_not_utf8_are_400_with_json(self):
        """A body or query that is not valid UTF-8 is the client's error (it used to be a 500:
        echoing the bad bytes in the error made the JSON encoder throw)."""
        self.make_host_home()
        self.start_host()
        bad = b'{"model_name": "\xff\xfe", "model": "\xff"}'
        for method, path in (("POST", "/discover"), ("POST", "/stop_serve"),
                             ("POST", "/download"), ("POST", "/copy"), ("POST", "/serve"),
                             ("POST", "/models"), ("POST", "/api/models"),
                             ("POST", "/models/validate"), ("POST", "/v1/chat/completions"),
                             ("POST", "/v1/models/switch"), ("GET", "/nodes?online_only=%FF"),
                             ("GET", "/events?kind=%FF")):
            with self.subTest(path=path):
                r = self.rest(method, path, body=bad if method == "POST" else None)
                self.assertEqual(r.status, 400, r)
                self.assertIsInstance(r.json, dict, r)
                self.assertIn("error", r.json, r)


class CliTest(ClusterTestCase):

    def test_version(self):
        home = self.new_home("empty")  # needs no host and no config
        result = self.assert_cli_ok(self.cli("version", home=home))
        match = SEMVER.search(result.stdout)
        self.assertIsNotNone(match, f"no version in {result.stdout!r}")
        self.make_host_home()
        self.start_host()
        self.assertEqual(self.health().get("version"), match.group(0),
                         "CLI and host should report the same version")

    def test_config_json(self):
        self.make_host_home()
        self.start_host()
        out = self.cli_json("config")
        self.assertEqual(out["config"]["host"]["port"], self.port, out)
        self.assertEqual(out["config"]["host"]["grpc_port"], self.grpc_port, out)
        self.assertTrue(out.get("path"), out)
        rest = self.rest("GET", "/config")
        self.assertEqual(rest.status, 200, rest)
        self.assertEqual(rest.json["config"]["host"]["port"], self.port, rest)

    def test_cli_host_flag_and_env(self):
        self.start_cluster(("node-a",))
        home = self.new_home("elsewhere")  # no config: the address must come from the flag/env
        by_flag = self.cli_json("--host", self.grpc_target, "nodes", home=home)
        self.assertEqual([n["node_id"] for n in by_flag["nodes"]], ["node-a"], by_flag)
        by_env = self.cli_json("nodes", home=home, env_extra={"GSWARM_HOST": self.grpc_target})
        self.assertEqual([n["node_id"] for n in by_env["nodes"]], ["node-a"], by_env)

    def test_cli_unreachable_host_fails_with_one_line(self):
        home = self.new_home("nohost")
        target = f"127.0.0.1:{free_port()}"  # nothing listens there
        result = self.cli("--host", target, "nodes", home=home)
        self.assertNotEqual(result.returncode, 0, result)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, f"one line on stderr, got: {result.stderr!r}")
        self.assertIn(target, lines[0], "the error should name the address it tried")


class ConfigFileTest(ClusterTestCase):

    def bad_config_case(self, text, line, key):
        home = self.new_home(f"bad-{key.replace('.', '-')}")
        path = home.write_config(text=text, path=os.path.join(home.path, "bad.conf"))
        result = self.cli("host", "--config", path, home=home, timeout=15)
        self.assertNotEqual(result.returncode, 0, f"host should refuse {text!r}: {result}")
        err = result.stderr + result.stdout
        self.assertIn(path, err, "the message should name the file")
        self.assertRegex(err, rf"(:{line}\b|line {line}\b)", "the message should name the line")
        self.assertIn(key, err, "the message should name the key")

    def test_bad_config_rejected_with_location(self):
        port = free_port()
        with self.subTest("port out of range"):
            self.bad_config_case(
                "# GSwarm test config\nhost:\n  host: 127.0.0.1\n  port: 70000\n"
                f"  grpc_port: {port}\n", 4, "host.port")
        with self.subTest("flow style, as in the brief"):
            self.bad_config_case("host: {port: 70000}\n", 1, "host.port")
        with self.subTest("wrong type"):
            self.bad_config_case(
                f"host:\n  port: {port}\n  grpc_port: not-a-number\n", 3, "host.grpc_port")

    def test_unknown_key_only_warns(self):
        home = self.new_home("host")
        self.host_home = home
        host = self.host_section(home)
        host["frobnicate_level"] = 3
        home.write_config({"host": host})
        proc = self.start_host()  # must still come up
        wait_until(lambda: "frobnicate_level" in proc.log(), 5,
                   "a warning naming the unknown key in the host's log", procs=[proc])
        warning = next(line for line in proc.log().splitlines() if "frobnicate_level" in line)
        with open(home.config_path) as f:
            line = 1 + next(i for i, text in enumerate(f) if "frobnicate_level" in text)
        self.assertIn(home.config_path, warning, "the warning should name the file")
        self.assertRegex(warning, rf"(:{line}\b|line {line}\b)",
                         "the warning should name the line")

    def test_explicit_config_path(self):
        home = self.new_home("host")
        self.host_home = home
        path = home.write_config({"host": self.host_section(home)},
                                 path=os.path.join(home.path, "elsewhere.yaml"))
        self.start_host(args=["--config", path])
        self.assertEqual(self.rest("GET", "/config").json.get("path"), path)


if __name__ == "__main__":
    unittest.main()
