"""The dashboard at / (issue 12), in headless Chromium: a host and one agent (the fake Hugging Face
hub, the fake engine) behind a token, and tests/browser/dashboard_test.mjs (playwright-core driving
Debian's /usr/bin/chromium) clicking through the page as a person would: the token prompt, a
downloaded model's red dot, Load (amber, then green) and Unload (red again), a download started
from the form showing its progress and then its chip, the active-model switch, the page
reconnecting by itself after the host is killed and restarted, and no requests while idle.

The page's screenshot is kept as an artifact: $GSWARM_ARTIFACTS_DIR/dashboard.png, or
<build dir>/test-artifacts/dashboard.png.

Needs /usr/bin/chromium and tests/browser/node_modules (deploy/install-deps.sh installs both). When
either is missing the test is skipped, saying so, unless CI is set: then it fails.

Run: GSWARM_BIN=build/cli/gswarm GSWARM_PYTHON_STUBS=build/python \
     /usr/bin/python3 -m unittest -v test_dashboard
(GSWARM_DASHBOARD_DIR=<repo>/host/dashboard serves the page from disk instead of the binary.)
"""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

from gswarm_harness import REPO_ROOT, gswarm_bin
from test_serving import PYTHON, FAKE_ENGINE, MODEL, TINY_LLAMA, ServingTestCase

BROWSER_DIR = os.path.join(REPO_ROOT, "tests", "browser")
SCRIPT = os.path.join(BROWSER_DIR, "dashboard_test.mjs")
CHROMIUM = os.environ.get("GSWARM_CHROMIUM", "/usr/bin/chromium")
TOKEN = "dashboard-test-token"
NEW_MODEL = "big"
BIG_MODEL = "hf://test-org/big-model"
MiB = 1 << 20
# big-model's weights (hub_big_file_mb) at this rate take about 4 s: long enough for the page to
# show the download's progress more than once.
DOWNLOAD_RATE = 2 * MiB
# One wait inside the browser script, and the whole script (browser start, every step, the host
# restart).
STEP_TIMEOUT_MS = 30000
BROWSER_TIMEOUT_S = 180.0
# A second of start-up before the fake engine answers /health: the page shows amber meanwhile.
ENGINES = {
    "fake": {"command": " ".join([PYTHON, FAKE_ENGINE, "--model {model_path}",
                                  "--served-model-name {model_name}", "--host {host}",
                                  "--port {port}", "--startup-delay 1"]),
             "ready_timeout_s": 15, "health_path": "/health"},
}
EXPECTED_STEPS = [
    "token prompt",
    "token from ?token= then out of the URL",
    "downloaded model listed with a red dot",
    "panel: Available (Not Loaded), on node-a disk",
    "Load turns the dot green (amber while loading)",
    "Unload turns the dot red again",
    "download form: progress, then the new chip",
    "text from the host is escaped",
    "active model switch",
    "reconnects after a host restart",
    "no polling while idle",
    "screenshot",
]


def in_ci():
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def browser_tools():
    """(node, missing): the node binary and what the browser test lacks ([] when nothing)."""
    node = shutil.which("node")
    missing = []
    if node is None:
        missing.append("node (Debian's nodejs package)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (Debian's chromium package)")
    if not os.path.isfile(os.path.join(BROWSER_DIR, "node_modules", "playwright-core",
                                       "package.json")):
        missing.append(f"{BROWSER_DIR}/node_modules (npm ci in tests/browser)")
    return node, missing


def artifacts_dir():
    """$GSWARM_ARTIFACTS_DIR, else test-artifacts/ in the build directory of the binary under
    test (<build>/cli/gswarm)."""
    explicit = os.environ.get("GSWARM_ARTIFACTS_DIR")
    if explicit:
        return explicit
    build = os.path.dirname(os.path.dirname(os.path.abspath(gswarm_bin())))
    return os.path.join(build, "test-artifacts")


class DashboardTest(ServingTestCase):

    hub_big_file_mb = 8

    def setUp(self):
        node, missing = browser_tools()
        if missing:
            message = ("the dashboard's browser test needs " + ", ".join(missing) +
                       ": run deploy/install-deps.sh")
            if in_ci():
                self.fail(message + " (CI is set, so this is a failure, not a skip)")
            self.skipTest(message)
        self.node = node
        super().setUp()

    def host_env(self):
        """The page from disk while it is being edited (host/dashboard.h), when asked for."""
        folder = os.environ.get("GSWARM_DASHBOARD_DIR")
        return {"GSWARM_DASHBOARD_DIR": folder} if folder else None

    def start_host_process(self, name="host"):
        host = self.spawn(name, ["host", *self._log_level_args()], self.host_home,
                          env_extra=self.host_env())
        self.wait_ready(host)
        return host

    def start_dashboard_cluster(self):
        """A host with a token (bound to loopback) and node-a: the fake engine (with a second of
        start-up), a DRAM tier, the fake hub; `tl` downloaded and not loaded."""
        self.make_host_home(token=TOKEN)
        host = self.start_host_process()
        home = self.make_agent_home("node-a", token=TOKEN)
        self.write_tier_config(home, "node-a", dram_gib=0.1, token=TOKEN,
                               host={"cleanup_on_shutdown": True},
                               default_engine="fake", engines=ENGINES)
        agent = self.start_agent("node-a", env_extra=self.hub_env())
        self.wait_node("node-a", "online", procs=[host, agent])
        self.download_ok(MODEL, TINY_LLAMA)
        return host, agent

    def run_browser(self, screenshot, on_restart):
        """Runs the browser script to its end; returns (exit status, its JSON lines, stderr).
        `on_restart()` runs when the script asks for the host to be restarted."""
        args = [self.node, SCRIPT, "--url", self.host_url, "--token", TOKEN,
                "--screenshot", screenshot, "--chromium", CHROMIUM, "--model", MODEL,
                "--download-source", BIG_MODEL, "--download-name", NEW_MODEL,
                "--timeout-ms", str(STEP_TIMEOUT_MS)]
        proc = subprocess.Popen(args, cwd=BROWSER_DIR, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)

        lines = queue.Queue()  # stdout's lines, then None at its end
        stderr = []

        def read_stdout():
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)
        readers = [threading.Thread(target=read_stdout, daemon=True),
                   threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True)]
        for thread in readers:
            thread.start()

        def kill():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # node and its Chromium
                except ProcessLookupError:
                    pass
            proc.wait(10)
            for thread in readers:
                thread.join(5)  # the pipes are at their end: node and its Chromium are gone
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    pipe.close()
                except OSError:
                    pass
        self.addCleanup(kill)

        deadline = time.monotonic() + BROWSER_TIMEOUT_S
        messages = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                kill()
                self.fail(f"the browser test did not finish within {BROWSER_TIMEOUT_S:.0f} s; "
                          f"so far: {json.dumps(messages, indent=1)}\nstderr: {''.join(stderr)}")
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                break
            sys.stderr.write(f"  browser: {line}")
            try:
                message = json.loads(line)
            except ValueError:
                continue
            messages.append(message)
            if message.get("await") == "restart-host":
                on_restart()
                proc.stdin.write("go\n")
                proc.stdin.flush()
        proc.wait(30)
        return proc.returncode, messages, "".join(stderr)

    def test_dashboard_in_headless_chromium(self):
        host, agent = self.start_dashboard_cluster()
        self.hub.add_fault(rate_limit_bytes_per_s=DOWNLOAD_RATE, path="test-org/big-model")
        out_dir = artifacts_dir()
        os.makedirs(out_dir, exist_ok=True)
        screenshot = os.path.join(out_dir, "dashboard.png")
        if os.path.exists(screenshot):
            os.remove(screenshot)
        restarts = []

        def restart_host():
            nonlocal host
            t0 = time.monotonic()
            host.kill()  # kill -9: the page's stream breaks without an end
            host = self.start_host_process(name="host-2")
            self.wait_node("node-a", "online", procs=[host, agent])
            restarts.append(time.monotonic() - t0)

        t0 = time.monotonic()
        status, messages, stderr = self.run_browser(screenshot, restart_host)
        elapsed = time.monotonic() - t0
        final = messages[-1] if messages else {}
        self.assertEqual((status, final.get("result")), (0, "pass"),
                         f"the browser test failed: {json.dumps(final, indent=1)}\n"
                         f"stderr: {stderr[-3000:]}")
        self.assertEqual(final.get("steps"), EXPECTED_STEPS, final)
        self.assertEqual(len(restarts), 1, "the host was restarted once, midway")

        with open(screenshot, "rb") as f:
            self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", f"{screenshot} is not a PNG")
        print(f"\ndashboard screenshot: {screenshot}", file=sys.stderr)
        print(f"browser test: {elapsed:.1f} s; timings {json.dumps(final.get('timings'))}",
              file=sys.stderr)

        # What the page did, as the API sees it: tl loaded (after the restart), big downloaded,
        # tl the active model.
        ready = [i for i in self.serving(MODEL) if i.get("state") == "ready"]
        self.assertEqual(len(ready), 1, self.serving(MODEL))
        big = self.get_model(NEW_MODEL, path="/api/models")
        self.assertIsNotNone(big, "the model downloaded from the form is in the catalog")
        self.assertEqual(big.get("state"), "available", big)
        r = self.rest("GET", "/v1/models", token=TOKEN)
        self.assertEqual([m["id"] for m in r.json["data"] if m.get("is_active")], [MODEL], r)


if __name__ == "__main__":
    unittest.main()
