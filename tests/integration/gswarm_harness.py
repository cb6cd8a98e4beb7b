"""Shared helpers for GSwarm's integration tests.

Every test starts the real `gswarm` binary as separate processes on free loopback ports, each in
its own temporary HOME with its own config file, and waits on readiness with a deadline (never a
bare sleep, never a fixed port). Every process is killed and reaped when the test ends, pass or
fail; when a test fails, the tail of each process's log is printed to stderr.

Environment:
  GSWARM_BIN           the gswarm binary (default: <repo>/build/cli/gswarm)
  GSWARM_PYTHON_STUBS  directory holding gswarm/v1/*_pb2.py (default: <repo>/build/python)
  GSWARM_TEST_KEEP=1   keep the temporary directories (their paths are printed)
  GSWARM_TEST_LOGS=1   print every process's log tail, even when the test passed
  GSWARM_TEST_LOG_LEVEL=debug   pass --log-level to every server process
  GSWARM_TEST_HUB_ROOT=DIR      keep the fake hub's generated repos in DIR between runs

Standard library only, except the gRPC helpers (Debian's python3-grpcio, imported lazily).
Suites that download models use tests/support/fake_hf_hub.py through HubTestCase (below).
Suites about the DRAM tier and copies use TierTestCase (a HubTestCase whose agents each get a
DRAM tier of their own under /dev/shm).
"""

import atexit
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.request

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Heartbeat interval every agent in these tests uses; a node misses three before it is offline.
HEARTBEAT_S = 0.2
READY_TIMEOUT_S = 15.0
# kill -9, SIGSTOP, SIGTERM of an agent: the host must notice within this.
OFFLINE_TIMEOUT_S = 10.0
ONLINE_TIMEOUT_S = 15.0
# Agents back off up to 30 s between reconnect attempts.
RECONNECT_TIMEOUT_S = 45.0
CLI_TIMEOUT_S = 20.0
# A download from the fake hub on loopback (tens of MB) finishes well within this.
JOB_TIMEOUT_S = 60.0
JOB_DONE_STATES = ("succeeded", "failed", "cancelled")
STOP_TIMEOUT_S = 10.0
POLL_S = 0.05


def gswarm_bin():
    path = os.environ.get("GSWARM_BIN") or os.path.join(REPO_ROOT, "build", "cli", "gswarm")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise RuntimeError(
            f"gswarm binary not found at {path!r}: build it, or set GSWARM_BIN to its path")
    return path


def stubs_dir():
    return os.environ.get("GSWARM_PYTHON_STUBS") or os.path.join(REPO_ROOT, "build", "python")


_handed_out_ports = set()
# Its own generator: tests that seed `random` (the chaos tests) do not make ports repeat.
_port_random = random.Random()


def _first_ephemeral_port():
    """The first port of the range the kernel hands out to outgoing connections."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port():
    """A TCP port that was free on loopback a moment ago (never the same one twice per run).

    Picked at random below the kernel's range for outgoing connections, as gswarm picks engine
    ports: a port from bind(0) comes from that range, and a connection that another test makes
    meanwhile can take it before the process under test binds it."""
    end = _first_ephemeral_port()
    for _ in range(200):
        port = _port_random.randrange(10000, end) if end - 10000 >= 1000 else 0
        if port == 0:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        if port not in _handed_out_ports and _bindable(port):
            _handed_out_ports.add(port)
            return port
    raise RuntimeError("could not find a free TCP port")


def wait_until(predicate, timeout, what, interval=POLL_S, procs=(), describe=None):
    """Polls `predicate` until it returns something truthy, and returns that.

    Exceptions raised by the predicate count as "not yet" (the last one is reported). Raises
    AssertionError naming `what` when `timeout` seconds pass, or at once when one of `procs`
    (Proc objects that must stay up meanwhile) exits. `describe()` adds the current state to the
    message.
    """
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last_error = e
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(
                    f"{p.name} exited with code {p.returncode} while waiting for {what}\n"
                    f"--- last lines of {p.name}'s log ---\n{p.tail()}")
        if time.monotonic() >= deadline:
            msg = f"timed out after {timeout:.1f} s waiting for {what}"
            if last_error is not None:
                msg += f"; last error: {last_error!r}"
            if describe is not None:
                try:
                    msg += f"; state: {describe()}"
                except Exception as e:  # noqa: BLE001
                    msg += f"; state unavailable: {e!r}"
            raise AssertionError(msg)
        time.sleep(interval)


def u64(value):
    """A uint64 from protobuf JSON: a string of digits (or a number); absent means 0."""
    if value is None:
        return 0
    return int(value)


def _yaml_scalar(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return json.dumps([str(v) for v in value])  # a JSON array is a YAML flow sequence
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(str(value))


def render_yaml(doc, indent=0):
    """YAML for a nest of dicts and scalars (there is no yaml module in Debian's base python)."""
    lines = []
    pad = "  " * indent
    for key, value in doc.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.append(render_yaml(value, indent + 1))
        else:
            lines.append(f"{pad}{key}: {_yaml_scalar(value)}")
    return "\n".join(line for line in lines if line)


def child_env(home, extra=None):
    """The inherited environment minus GSWARM_*, Hugging Face settings (HF_*) and proxies, with
    HOME set to `home`: no test reaches the real Hub or reads the user's HF cache by accident."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GSWARM_") and not k.startswith("HF_")
           and k not in ("HUGGING_FACE_HUB_TOKEN", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE")
           and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy",
                                 "no_proxy")}
    env["HOME"] = home
    env.pop("XDG_CACHE_HOME", None)
    env.pop("XDG_CONFIG_HOME", None)
    if extra:
        env.update(extra)
    return env


class Proc:
    """A gswarm process with its stdout and stderr going to one log file."""

    def __init__(self, name, args, env, log_path, cwd):
        self.name = name
        self.args = list(args)
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            self.args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.popen.pid

    @property
    def returncode(self):
        return self.popen.returncode

    def poll(self):
        return self.popen.poll()

    def alive(self):
        return self.popen.poll() is None

    def send_signal(self, sig):
        if self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout=STOP_TIMEOUT_S):
        """Waits for the process to exit; AssertionError (with its log tail) if it does not."""
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} (pid {self.pid}) did not exit within {timeout:.1f} s\n"
                f"--- last lines of {self.name}'s log ---\n{self.tail()}") from None

    def stop(self, sig=signal.SIGTERM, timeout=STOP_TIMEOUT_S):
        """Sends `sig` and returns the exit code; fails the test if the process hangs."""
        self.send_signal(signal.SIGCONT)  # a stopped process would never see SIGTERM
        self.send_signal(sig)
        return self.wait(timeout)

    def kill(self):
        """SIGKILL to the process group, then reap. Safe to call more than once."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pass
        if not self._log.closed:
            self._log.close()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def tail(self, lines=40):
        try:
            text = self.log()
        except OSError as e:
            return f"(log unreadable: {e})"
        return "\n".join(text.splitlines()[-lines:])


class Response:
    def __init__(self, status, text, headers):
        self.status = status
        self.text = text
        self.headers = headers
        try:
            self.json = json.loads(text) if text else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"<HTTP {self.status} {self.text[:300]!r}>"


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http(method, url, token=None, body=None, timeout=5.0):
    """One HTTP request; returns a Response for every HTTP status, raises only on no answer.
    `body`: JSON-encoded, or bytes sent as they are."""
    data = None
    headers = {"Accept": "application/json"}
    if isinstance(body, bytes):  # sent as it is (malformed bodies)
        data = body
        headers["Content-Type"] = "application/json"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _opener.open(req, timeout=timeout) as r:
            return Response(r.status, r.read().decode("utf-8", "replace"), dict(r.headers))
    except urllib.error.HTTPError as e:
        return Response(e.code, e.read().decode("utf-8", "replace"), dict(e.headers or {}))


def import_stubs():
    """(grpc, api_pb2, api_pb2_grpc) with the generated stubs on sys.path."""
    d = stubs_dir()
    if d not in sys.path:
        sys.path.insert(0, d)
    try:
        import grpc  # noqa: PLC0415
        from gswarm.v1 import api_pb2, api_pb2_grpc  # noqa: PLC0415
    except ImportError as e:
        raise RuntimeError(
            f"cannot import grpc or the GSwarm stubs from {d!r} ({e}); run with Debian's "
            "/usr/bin/python3 (python3-grpcio, python3-protobuf) and set GSWARM_PYTHON_STUBS")
    return grpc, api_pb2, api_pb2_grpc


def grpc_channel(target):
    import grpc  # noqa: PLC0415
    return grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])


class Home:
    """A temporary HOME for one process (or for a host and the tools that share its files)."""

    def __init__(self, root, name):
        self.name = name
        self.path = os.path.join(root, name)
        os.makedirs(self.path)
        self.config_path = os.path.join(self.path, ".gswarm.conf")
        self.token_path = os.path.join(self.path, ".cache", "gswarm", "token")

    def write_config(self, doc=None, text=None, path=None):
        path = path or self.config_path
        with open(path, "w") as f:
            f.write(text if text is not None else render_yaml(doc) + "\n")
        return path

    def env(self, extra=None):
        return child_env(self.path, extra)


class GSwarmTestCase(unittest.TestCase):
    """Base class: a temporary root per test, process bookkeeping, REST/CLI helpers.

    A cluster is one host (`self.port`, `self.grpc_port`, config in `self.host_home`) and any
    number of agents, each in its own HOME with its own config.
    """

    maxDiff = None

    def setUp(self):
        super().setUp()
        self.bin = gswarm_bin()
        self.root = tempfile.mkdtemp(prefix=f"gswarm-it-{self._testMethodName[:40]}-")
        self.procs = []
        self._proc_counts = {}
        # Cleanups run last-registered first: processes die, then logs print, then files go.
        self.addCleanup(self._remove_root)
        self.addCleanup(self._dump_logs_on_failure)
        self.addCleanup(self._kill_all)
        self.port = free_port()
        self.grpc_port = free_port()
        self.host_home = None
        self.agent_homes = {}
        self.token = ""

    # ---- bookkeeping ----------------------------------------------------------------------

    def _kill_all(self):
        for p in reversed(self.procs):
            p.kill()

    def mount_tmpfs(self, size_mb, name="small-disk"):
        """A fresh tmpfs of `size_mb` MiB at <root>/<name>, for tests of a disk that fills up;
        skips the test, saying why, when it cannot be mounted (not root). Unmounted at cleanup,
        after every process of the test is dead."""
        mnt = os.path.join(self.root, name)
        os.makedirs(mnt)
        if shutil.which("mount") is None:
            self.skipTest("no `mount` command: this test mounts a small tmpfs")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", mnt],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            self.skipTest(f"cannot mount a {size_mb} MiB tmpfs at {mnt} "
                          f"({(r.stderr or r.stdout).strip()}): this test needs root "
                          "(or CAP_SYS_ADMIN)")
        self.addCleanup(self._unmount, mnt)
        return mnt

    def _unmount(self, mnt):
        self._kill_all()  # nothing may hold a file there
        r = subprocess.run(["umount", mnt], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", mnt], capture_output=True, text=True, timeout=30)

    def _failed(self):
        """Whether this test (or one of its subtests) has failed so far.

        unittest resets its own success flag around each cleanup, so look at the result."""
        result = getattr(getattr(self, "_outcome", None), "result", None)
        if result is None:
            return True
        for test, _ in [*getattr(result, "errors", []), *getattr(result, "failures", [])]:
            if test is self or getattr(test, "test_case", None) is self:
                return True
        return False

    def _dump_logs_on_failure(self):
        if not (self._failed() or os.environ.get("GSWARM_TEST_LOGS")):
            return
        out = [f"\n===== {self.id()}: process logs (temp root {self.root}) ====="]
        for p in self.procs:
            out.append(f"--- {p.name}: {' '.join(p.args)} (exit {p.returncode}) ---")
            out.append(p.tail(60))
        sys.stderr.write("\n".join(out) + "\n")
        sys.stderr.flush()

    def _remove_root(self):
        if os.environ.get("GSWARM_TEST_KEEP"):
            sys.stderr.write(f"kept {self.root}\n")
            return
        shutil.rmtree(self.root, ignore_errors=True)

    def new_home(self, name):
        """A fresh directory under the test's root (`name`, or `name-2`, ... if taken)."""
        unique, n = name, 1
        while os.path.exists(os.path.join(self.root, unique)):
            n += 1
            unique = f"{name}-{n}"
        return Home(self.root, unique)

    def spawn(self, name, args, home, env_extra=None):
        """Starts `gswarm <args>` in `home`; the log goes to <root>/<name>[.N].log."""
        n = self._proc_counts.get(name, 0) + 1
        self._proc_counts[name] = n
        log_name = f"{name}.log" if n == 1 else f"{name}.{n}.log"
        label = name if n == 1 else f"{name}#{n}"
        p = Proc(label, [self.bin, *args], home.env(env_extra), os.path.join(self.root, log_name),
                 cwd=home.path)
        self.procs.append(p)
        return p

    @staticmethod
    def _log_level_args():
        level = os.environ.get("GSWARM_TEST_LOG_LEVEL")
        return ["--log-level", level] if level else []

    # ---- configs ---------------------------------------------------------------------------

    @property
    def host_url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def grpc_target(self):
        return f"127.0.0.1:{self.grpc_port}"

    def host_section(self, home, token=None, bind="127.0.0.1", **extra):
        section = {
            "host": bind,
            "port": self.port,
            "grpc_port": self.grpc_port,
            "model_cache_dir": os.path.join(home.path, "models"),
            "auth_token": self.token if token is None else token,
        }
        section.update(extra)
        return section

    def client_section(self, home, node_id, token="", data_port=None, **extra):
        section = {
            "host_url": self.host_url,
            "host_grpc": self.grpc_target,
            "node_id": node_id,
            "model_cache_dir": os.path.join(home.path, "models"),
            "dram_cache_dir": os.path.join(home.path, "dram"),
            "heartbeat_interval_s": HEARTBEAT_S,
            "data_port": data_port or free_port(),
            "auth_token": token,
        }
        section.update(extra)
        return section

    def make_host_home(self, token="", bind="127.0.0.1", client_node_id="node-local",
                       host_extra=None):
        """The host's HOME; its config also has a client section so the CLI run there (and a
        local agent) finds the host."""
        self.token = token
        home = self.new_home("host")
        home.write_config({
            "host": self.host_section(home, token=token, bind=bind, **(host_extra or {})),
            "client": self.client_section(home, client_node_id, token=token),
        })
        self.host_home = home
        return home

    # ---- processes -------------------------------------------------------------------------

    def start_host(self, args=(), wait=True, home=None, name="host"):
        home = home or self.host_home or self.make_host_home()
        p = self.spawn(name, ["host", *self._log_level_args(), *args], home)
        if wait:
            self.wait_ready(p)
        return p

    def wait_ready(self, proc, timeout=READY_TIMEOUT_S):
        """Polls GET /health until HTTP 200."""
        return wait_until(lambda: self.rest("GET", "/health", timeout=1.0).status == 200,
                          timeout, f"{proc.name} to answer GET {self.host_url}/health with 200",
                          procs=[proc])

    def make_agent_home(self, node_id, token="", name=None, sections=None, **client_extra):
        """An agent's HOME with a config holding its client section; `sections` adds other
        top-level sections (e.g. {"host": {"auto_discover_models": False}})."""
        home = self.new_home(name or f"agent-{node_id}")
        doc = {"client": self.client_section(home, node_id, token=token, **client_extra)}
        doc.update(sections or {})
        home.write_config(doc)
        self.agent_homes.setdefault(node_id, home)
        return home

    def start_agent(self, node_id=None, home=None, args=(), name=None, env_extra=None):
        """`gswarm client` in its own HOME: `home`, else the one made earlier for `node_id` (a
        restart), else a new one. `env_extra` adds environment variables (HF_ENDPOINT, ...)."""
        if home is None:
            home = self.agent_homes.get(node_id) or self.make_agent_home(node_id)
        return self.spawn(name or home.name, ["client", *self._log_level_args(), *args], home,
                          env_extra=env_extra)

    # ---- REST ------------------------------------------------------------------------------

    def rest(self, method, path, token=None, body=None, timeout=5.0):
        return http(method, self.host_url + path, token=token, body=body, timeout=timeout)

    def api_token(self):
        return self.token or None

    def nodes(self, token=None):
        """GET /nodes as {node_id: node}; fails unless HTTP 200."""
        r = self.rest("GET", "/nodes", token=token or self.api_token())
        if r.status != 200 or not isinstance(r.json, dict):
            raise AssertionError(f"GET /nodes answered {r!r}")
        return {n["node_id"]: n for n in r.json.get("nodes", [])}

    def node_list(self, token=None):
        r = self.rest("GET", "/nodes", token=token or self.api_token())
        if r.status != 200 or not isinstance(r.json, dict):
            raise AssertionError(f"GET /nodes answered {r!r}")
        return r.json.get("nodes", [])

    def describe_nodes(self):
        return ", ".join(f"{n.get('node_id')}={n.get('state')}"
                         f"({n.get('state_reason', '')})" for n in self.node_list()) or "no nodes"

    def wait_node(self, node_id, state="online", timeout=ONLINE_TIMEOUT_S, procs=(), where=None):
        """Waits until GET /nodes lists `node_id` in `state` (and `where(node)` holds)."""
        def check():
            node = self.nodes().get(node_id)
            if node and node.get("state") == state and (where is None or where(node)):
                return node
            return None
        return wait_until(check, timeout, f"node {node_id!r} to be {state} in GET /nodes",
                          procs=procs, describe=self.describe_nodes)

    def health(self):
        r = self.rest("GET", "/health")
        self.assertEqual(r.status, 200, r)
        return r.json

    # ---- jobs ------------------------------------------------------------------------------

    def get_job(self, job_id):
        """GET /jobs/{id}; fails unless HTTP 200."""
        r = self.rest("GET", f"/jobs/{job_id}", token=self.api_token())
        if r.status != 200 or not isinstance(r.json, dict):
            raise AssertionError(f"GET /jobs/{job_id} answered {r!r}")
        return r.json.get("job", r.json)

    def list_jobs(self):
        r = self.rest("GET", "/jobs", token=self.api_token())
        if r.status != 200 or not isinstance(r.json, dict):
            raise AssertionError(f"GET /jobs answered {r!r}")
        return r.json.get("jobs", [])

    def wait_job(self, job_id, states=JOB_DONE_STATES, timeout=JOB_TIMEOUT_S, procs=(),
                 where=None):
        """Polls GET /jobs/{id} until its state is one of `states` (and `where(job)` holds);
        returns the job."""
        last = {}

        def check():
            job = self.get_job(job_id)
            last["job"] = job
            return job if job.get("state") in states and (where is None or where(job)) else None
        return wait_until(check, timeout, f"job {job_id} to reach {'/'.join(states)}",
                          procs=procs, interval=0.1,
                          describe=lambda: json.dumps(last.get("job")))

    # ---- CLI -------------------------------------------------------------------------------

    def cli(self, *args, home=None, env_extra=None, timeout=CLI_TIMEOUT_S):
        """Runs `gswarm <args>` to completion (in the host's HOME unless told otherwise)."""
        home = home or self.host_home
        try:
            return subprocess.run([self.bin, *args], env=home.env(env_extra), cwd=home.path,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(
                f"`gswarm {' '.join(args)}` did not finish within {timeout} s; "
                f"stdout={e.stdout!r} stderr={e.stderr!r}") from None

    def assert_cli_ok(self, result):
        self.assertEqual(result.returncode, 0,
                         f"`{' '.join(result.args)}` exited {result.returncode}\n"
                         f"stdout: {result.stdout}\nstderr: {result.stderr}")
        return result

    def cli_json(self, *args, **kw):
        result = self.assert_cli_ok(self.cli(*args, "--json", **kw))
        try:
            return json.loads(result.stdout)
        except ValueError as e:
            self.fail(f"`gswarm {' '.join(args)} --json` printed no JSON ({e}): "
                      f"{result.stdout!r}")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- the fake Hugging Face hub ------------------------------------------------------------------

SUPPORT_DIR = os.path.join(REPO_ROOT, "tests", "support")
# Size of test-org/big-model's model.safetensors: the issue asks for one file of at least 100 MB.
BIG_FILE_MB = 100
_hub_roots = {}


def fake_hf_hub():
    """The tests/support/fake_hf_hub module."""
    if SUPPORT_DIR not in sys.path:
        sys.path.insert(0, SUPPORT_DIR)
    import fake_hf_hub as fh  # noqa: PLC0415
    return fh


def shared_hub_root(big_file_mb=BIG_FILE_MB):
    """A directory with the fake hub's standard repos, generated once per test process (the
    generator caches in it) and removed at exit; GSWARM_TEST_HUB_ROOT names a lasting one."""
    if big_file_mb not in _hub_roots:
        root = os.environ.get("GSWARM_TEST_HUB_ROOT")
        if root:
            root = os.path.join(root, f"big{big_file_mb}")
        else:
            root = tempfile.mkdtemp(prefix="gswarm-it-hub-")
            if not os.environ.get("GSWARM_TEST_KEEP"):
                atexit.register(shutil.rmtree, root, True)
        fake_hf_hub().build_standard_repos(root, big_file_mb=big_file_mb)
        _hub_roots[big_file_mb] = root
    return _hub_roots[big_file_mb]


class HubTestCase(GSwarmTestCase):
    """GSwarmTestCase plus one fake Hugging Face hub per class (`cls.hub`, in-process), its
    faults and counters reset before each test. Agents reach it through `hub_env()`."""

    hub_big_file_mb = BIG_FILE_MB

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fh = fake_hf_hub()
        cls.hub_root = shared_hub_root(cls.hub_big_file_mb)
        cls.hub = cls.fh.FakeHub(cls.hub_root, token=cls.fh.DEFAULT_TOKEN).start()

    @classmethod
    def tearDownClass(cls):
        cls.hub.stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self.hub.reset()

    def hub_env(self, token=None, **extra):
        """Environment for an agent that downloads from the fake hub (HF_TOKEN when given)."""
        env = {"HF_ENDPOINT": self.hub.url}
        if token:
            env["HF_TOKEN"] = token
        env.update(extra)
        return env

    def repo(self, repo_id):
        return self.hub.repo(repo_id)

    def start_hub_cluster(self, node_ids=("node-a",), token=None, agent_sections=None):
        """A host and one agent per node id, each agent pointed at the fake hub (with HF_TOKEN
        `token`); returns (host, {node_id: agent})."""
        if self.host_home is None:
            self.make_host_home()
        host = self.start_host()
        agents = {}
        for nid in node_ids:
            self.make_agent_home(nid, sections=agent_sections)
            agents[nid] = self.start_agent(nid, env_extra=self.hub_env(token))
        for nid, agent in agents.items():
            self.wait_node(nid, "online", procs=[host, agent])
        return host, agents

    # ---- models on an agent's disk ---------------------------------------------------------

    def model_cache_dir(self, node_id):
        return os.path.join(self.agent_homes[node_id].path, "models")

    def model_dir(self, node_id, name):
        return os.path.join(self.model_cache_dir(node_id), name)

    def staging_dir(self, node_id, name):
        return os.path.join(self.model_cache_dir(node_id), ".gswarm-staging", name)

    def download(self, name, source, wait=True, node=None, revision=None, timeout=JOB_TIMEOUT_S,
                 **extra):
        """POST /download; returns the Response (a failed download with wait is HTTP 409)."""
        body = {"model_name": name, "source_url": source, "target_device": "disk", "wait": wait}
        if node:
            body["node"] = node
        if revision:
            body["revision"] = revision
        body.update(extra)
        return self.rest("POST", "/download", token=self.api_token(), body=body, timeout=timeout)

    def download_ok(self, name, source, **kw):
        """A download that must succeed; returns its job."""
        r = self.download(name, source, **kw)
        job = (r.json or {}).get("job") if isinstance(r.json, dict) else None
        if r.status != 200 or not job or job.get("state") != "succeeded":
            raise AssertionError(f"download of {source} as {name!r} should succeed: {r!r}")
        return job

    def get_model(self, name, path="/models"):
        """GET /models/{name} (or /api/models/{name}); None on 404, AssertionError otherwise."""
        r = self.rest("GET", f"{path}/{name}", token=self.api_token())
        if r.status == 404:
            return None
        if r.status != 200 or not isinstance(r.json, dict):
            raise AssertionError(f"GET {path}/{name} answered {r!r}")
        return r.json.get("model", r.json)

    def model_names(self, path="/models"):
        r = self.rest("GET", path, token=self.api_token())
        if r.status != 200 or not isinstance(r.json, dict):
            raise AssertionError(f"GET {path} answered {r!r}")
        return sorted(m["name"] for m in r.json.get("models", []))


# ---- tiers: the DRAM tier, copies between tiers and nodes -------------------------------------

GiB = 1024 ** 3


def model_files(model_dir):
    """{relative path: absolute path} of a model directory's files, GSwarm's own .gswarm/ aside."""
    out = {}
    for dirpath, dirnames, names in os.walk(model_dir):
        dirnames[:] = [d for d in dirnames if d != ".gswarm"]
        for n in names:
            full = os.path.join(dirpath, n)
            out[os.path.relpath(full, model_dir)] = full
    return out


def read_manifest(model_dir):
    """<model_dir>/.gswarm/manifest.json as a dict."""
    with open(os.path.join(model_dir, ".gswarm", "manifest.json")) as f:
        return json.load(f)


def tree_bytes(root):
    """Bytes of every regular file under `root` (0 when it does not exist)."""
    total = 0
    for dirpath, _, names in os.walk(root):
        for n in names:
            try:
                total += os.lstat(os.path.join(dirpath, n)).st_size
            except FileNotFoundError:
                pass
    return total


def format_bytes(n):
    """GSwarm's way of printing a size: "17 B", "3.0 KiB", "21.1 MiB" (client/dram_tier.cc)."""
    if n < 1024:
        return f"{n} B"
    value, unit = n / 1024, 0
    while value >= 1024 and unit < 3:
        value /= 1024
        unit += 1
    return f"{value:.1f} {('KiB', 'MiB', 'GiB', 'TiB')[unit]}"


class TierTestCase(HubTestCase):
    """HubTestCase plus agents with a DRAM tier each: a fresh directory under
    /dev/shm/gswarm-it-<random>/<node> (removed when the test ends, after its processes die),
    and helpers for POST /copy and the memory endpoints."""

    def setUp(self):
        super().setUp()
        self.shm_root = tempfile.mkdtemp(prefix="gswarm-it-", dir="/dev/shm")
        self.addCleanup(self._remove_shm_root)

    def _remove_shm_root(self):
        self._kill_all()  # a live agent could write into its tier after the removal
        if os.environ.get("GSWARM_TEST_KEEP"):
            sys.stderr.write(f"kept {self.shm_root}\n")
            return
        shutil.rmtree(self.shm_root, ignore_errors=True)

    def dram_dir(self, node_id):
        return os.path.join(self.shm_root, node_id)

    def dram_model_dir(self, node_id, name):
        return os.path.join(self.dram_dir(node_id), name)

    def write_tier_config(self, home, node_id, dram_gib=0.05, host=None, **client_extra):
        """(Re)writes an agent's config: its client section with the DRAM tier at
        dram_dir(node_id) and a budget of `dram_gib` GiB, plus `host` as its host: section."""
        doc = {"client": self.client_section(home, node_id, dram_cache_dir=self.dram_dir(node_id),
                                             dram_cache_size=dram_gib, **client_extra)}
        if host:
            doc["host"] = host
        home.write_config(doc)

    def make_tier_agent_home(self, node_id, dram_gib=0.05, host=None, **client_extra):
        home = self.make_agent_home(node_id)
        self.write_tier_config(home, node_id, dram_gib, host, **client_extra)
        return home

    def start_tier_cluster(self, budgets=None, agent_host=None, host_extra=None):
        """A host and one agent per node of `budgets` ({node_id: DRAM GiB}, default node-a with
        0.05), all pointed at the fake hub; `agent_host` is every agent's host: section.
        Returns (host, {node_id: agent})."""
        budgets = budgets or {"node-a": 0.05}
        self.make_host_home(host_extra=host_extra)
        host = self.start_host()
        agents = {}
        for nid, gib in budgets.items():
            self.make_tier_agent_home(nid, gib, host=agent_host)
            agents[nid] = self.start_agent(nid, env_extra=self.hub_env())
        for nid, agent in agents.items():
            self.wait_node(nid, "online", procs=[host, agent])
        return host, agents

    def copy(self, name, source="disk", target="dram", wait=True, timeout=JOB_TIMEOUT_S,
             **extra):
        """POST /copy; returns the Response (a failed copy with wait is HTTP 409)."""
        body = {"model_name": name, "source_device": source, "target_device": target,
                "keep_source": True, "wait": wait}
        body.update(extra)
        return self.rest("POST", "/copy", token=self.api_token(), body=body, timeout=timeout)

    def copy_ok(self, name, source="disk", target="dram", **kw):
        """A copy that must succeed; returns its job."""
        r = self.copy(name, source, target, **kw)
        job = (r.json or {}).get("job") if isinstance(r.json, dict) else None
        if r.status != 200 or not job or job.get("state") != "succeeded":
            raise AssertionError(f"copy of {name} {source} -> {target} {kw} should succeed: {r!r}")
        return job

    def dram_replicas(self):
        """GET /memory/dram's "dram" list."""
        r = self.rest("GET", "/memory/dram", token=self.api_token())
        if r.status != 200 or not isinstance(r.json, dict):
            raise AssertionError(f"GET /memory/dram answered {r!r}")
        return r.json.get("dram", [])

    def dram_names(self, node_id=None):
        return sorted(r.get("model_name") for r in self.dram_replicas()
                      if node_id is None or r.get("node_id") == node_id)

    def dram_entries(self, node_id):
        """What is under a node's DRAM directory (hidden staging included), sorted."""
        d = self.dram_dir(node_id)
        return sorted(os.listdir(d)) if os.path.isdir(d) else []

    def visible_dram_models(self, node_id):
        """Directories under a node's DRAM tier that look like models (names not hidden)."""
        return [e for e in self.dram_entries(node_id) if not e.startswith(".")]

    def replica_tiers(self, name):
        """{(node_id, tier)} of GET /models/{name}'s ready replicas (empty when not listed)."""
        model = self.get_model(name)
        if model is None:
            return set()
        return {(r.get("node_id"), r.get("tier")) for r in model.get("replicas", [])
                if r.get("state") == "ready"}

    def assert_same_files(self, model_dir, expected):
        """`model_dir` holds exactly the files of `expected` ({path: {"size", "sha256"}}), each
        with its size and sha256."""
        got = model_files(model_dir)
        self.assertEqual(sorted(got), sorted(expected), f"files in {model_dir}")
        for path, entry in expected.items():
            self.assertEqual(os.path.getsize(got[path]), entry["size"], f"size of {path}")
            if entry.get("sha256"):
                self.assertEqual(sha256_file(got[path]), entry["sha256"], f"sha256 of {path}")

    def assert_matches_manifest(self, model_dir, manifest_dir=None):
        """Files in `model_dir` are exactly those of the manifest in `manifest_dir` (default:
        the model's own), sizes and sha256 alike. Returns the manifest."""
        manifest = read_manifest(manifest_dir or model_dir)
        expected = {f["path"]: {"size": f["size"], "sha256": f.get("sha256")}
                    for f in manifest.get("files", [])}
        self.assertTrue(expected, f"the manifest of {manifest_dir or model_dir} lists no files")
        self.assert_same_files(model_dir, expected)
        return manifest


def error_message(response):
    """The `error.message` of a REST error body ("" when the body has none)."""
    body = response.json if isinstance(response.json, dict) else {}
    err = body.get("error")
    if isinstance(err, dict):
        return str(err.get("message", ""))
    return ""


def mentions_token(text):
    return re.search(r"token", text or "", re.IGNORECASE) is not None
