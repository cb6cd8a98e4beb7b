"""TLS on the host's gRPC and HTTP ports (host.tls), for agents, the CLI and REST clients.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_tls
"""

import json
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request

from gswarm_harness import OFFLINE_TIMEOUT_S, GSwarmTestCase, wait_until


def make_self_signed_cert(directory):
    """A certificate for 127.0.0.1 and localhost, and its key, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise AssertionError("openssl is not installed: run deploy/install-deps.sh")
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


class TlsTest(GSwarmTestCase):

    def setUp(self):
        super().setUp()
        self.cert, self.key = make_self_signed_cert(self.root)
        tls = {"cert_file": self.cert, "key_file": self.key}
        self.host_home = self.new_home("host")
        client = self.client_section(self.host_home, "node-local")
        client["host_url"] = f"https://127.0.0.1:{self.port}"
        self.host_home.write_config({
            "host": self.host_section(self.host_home, tls=tls),
            "client": client,
        })

    def https(self, path, cafile=None):
        context = ssl.create_default_context(cafile=cafile or self.cert)
        with urllib.request.urlopen(f"https://127.0.0.1:{self.port}{path}", context=context,
                                    timeout=5) as r:
            return r.status, json.loads(r.read())

    def wait_ready_https(self, proc):
        return wait_until(lambda: self.https("/health")[0] == 200, 15,
                          "the host to answer GET /health over HTTPS", procs=[proc])

    def nodes_https(self):
        return {n["node_id"]: n for n in self.https("/nodes")[1].get("nodes", [])}

    def agent_home(self, node_id, trust_cert):
        home = self.new_home(f"agent-{node_id}")
        client = self.client_section(home, node_id)
        client["host_url"] = f"https://127.0.0.1:{self.port}"
        doc = {"client": client}
        if trust_cert:
            doc["host"] = {"tls": {"ca_file": self.cert}}
        home.write_config(doc)
        return home

    def test_rest_is_https_only(self):
        host = self.start_host(wait=False)
        self.wait_ready_https(host)
        status, health = self.https("/health")
        self.assertEqual(status, 200)
        self.assertEqual(health["status"], "ok")
        with self.assertRaises((urllib.error.URLError, ConnectionError, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5).read()
        # A client that does not trust the host's certificate refuses it.
        with self.assertRaises(urllib.error.URLError):
            urllib.request.urlopen(f"https://127.0.0.1:{self.port}/health",
                                   context=ssl.create_default_context(), timeout=5)

    def test_agent_that_trusts_the_cert_comes_online_over_tls(self):
        host = self.start_host(wait=False)
        self.wait_ready_https(host)
        self.start_agent(home=self.agent_home("tls-agent", trust_cert=True))
        node = wait_until(lambda: self.nodes_https().get("tls-agent", {}).get("state") == "online",
                          15, "the TLS agent to be online", procs=[host])
        self.assertTrue(node)

    def test_agent_that_does_not_trust_the_cert_stays_out(self):
        host = self.start_host(wait=False)
        self.wait_ready_https(host)
        agent = self.start_agent(home=self.agent_home("untrusting", trust_cert=False))
        wait_until(lambda: "link to host" in agent.log(), OFFLINE_TIMEOUT_S,
                   "the untrusting agent to report its failed link", procs=[agent])
        self.assertNotIn("untrusting", self.nodes_https())

    def test_local_cli_trusts_its_own_host(self):
        host = self.start_host(wait=False)
        self.wait_ready_https(host)
        out = self.cli_json("health")
        self.assertEqual(out["status"], "ok", out)

    def test_unreadable_certificate_is_a_clear_error(self):
        doc_home = self.new_home("bad-host")
        doc_home.write_config({"host": self.host_section(
            doc_home, tls={"cert_file": "/no/such/cert.pem", "key_file": self.key})})
        host = self.start_host(wait=False, home=doc_home, name="bad-host")
        code = host.wait()
        self.assertNotEqual(code, 0)
        self.assertIn("/no/such/cert.pem", host.log())
