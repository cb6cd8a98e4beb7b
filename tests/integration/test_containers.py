"""Engines in containers, end to end: the `nim` preset (NVIDIA NIM through `docker run`) and the
`compose` preset (a Docker Compose service named like the model), run by an agent whose PATH
starts with tests/support/fake_docker.py's `docker` (its containers are the fake engine; no
Docker daemon needed). A serve starts the container, its log is the instance's, the router reaches
it, and a stop removes it by name."""

import json
import os
import subprocess
import sys
import unittest

from gswarm_harness import SUPPORT_DIR, wait_until
from test_serving import MODEL, ServingTestCase

sys.path.insert(0, SUPPORT_DIR)
import fake_docker  # noqa: E402


class ContainerEngineTest(ServingTestCase):

    def setUp(self):
        super().setUp()
        self.bin_dir = os.path.join(self.root, "bin")
        self.docker_state = os.path.join(self.root, "docker-state")
        fake_docker.install(self.bin_dir, state=self.docker_state)
        self.addCleanup(lambda: os.path.isdir(self.docker_state)
                        and fake_docker.cleanup(self.docker_state))

    def start_container_cluster(self):
        compose = os.path.join(self.root, "stack", "compose.json")
        os.makedirs(os.path.dirname(compose))
        with open(compose, "w") as f:
            json.dump({"services": {MODEL: {
                "image": "nvcr.io/nim/openai/gpt-oss-20b:latest",
                "ports": ["${GSWARM_HOST}:${GSWARM_PORT}:8000"],
                "volumes": ["${GSWARM_MODEL_PATH}:/opt/models/model:ro"],
                "environment": {"NIM_SERVED_MODEL_NAME": "${GSWARM_MODEL_NAME}"}}}}, f)
        self.make_host_home()
        host = self.start_host()
        home = self.make_agent_home("node-a")
        self.write_tier_config(home, "node-a", dram_gib=0.1, default_engine="nim")
        env = self.hub_env()
        env.update({"PATH": f"{self.bin_dir}:{os.environ['PATH']}",
                    "FAKE_DOCKER_STATE": self.docker_state, "COMPOSE_FILE": compose})
        agent = self.start_agent("node-a", env_extra=env)
        self.wait_node("node-a", "online", procs=[host, agent])
        self.download_ok(MODEL, "hf://test-org/tiny-llama")
        self.cluster = (host, agent)

    def running_containers(self):
        out = subprocess.run([os.path.join(self.bin_dir, "docker"), "ps", "--format",
                              "{{.Names}}"], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "FAKE_DOCKER_STATE": self.docker_state})
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout.split()

    def check_engine(self, engine, container_of):
        instance = self.serve_ok(MODEL, engine=engine)
        name = container_of(instance)
        self.assertEqual(self.running_containers(), [name])
        # The container answers on the port GSwarm chose, also through the router; its log is
        # the instance's.
        self.assertTrue(self.chat(instance["endpoint"], MODEL))
        r = self.rest("POST", "/v1/chat/completions", token=self.api_token(), timeout=30, body={
            "model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        self.assertEqual(r.status, 200, r)
        log = self.engine_log(instance["id"])
        self.assertIn("docker run" if engine == "nim" else "docker compose up", log)
        self.assertIn("POST /v1/chat/completions", log)
        self.assert_cli_ok(self.cli("stop", instance["id"]))
        wait_until(lambda: self.running_containers() == [], 30,
                   f"container {name} gone after the stop", procs=list(self.cluster),
                   describe=lambda: self.engine_log(instance["id"]))

    def test_nim_runs_in_a_container_named_after_the_instance(self):
        self.start_container_cluster()
        self.check_engine("nim", lambda instance: f"gswarm-{instance['id']}")

    def test_compose_runs_the_models_service(self):
        self.start_container_cluster()
        self.check_engine("compose", lambda instance: f"stack-{MODEL}-1")


if __name__ == "__main__":
    unittest.main()
