"""Tests for fake_docker.py: the ``docker`` CLI subset that GSwarm's agent uses, run for real
through the installed shim on PATH, with fake engines as the containers.

Run: cd tests/support && /usr/bin/python3 -m unittest -v test_fake_docker
Standard library only. Every test gets a clean state directory. tearDown kills whatever
containers and run processes are left (fake_docker.cleanup).
"""

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fake_docker as fd  # noqa: E402
import fake_engine as fe  # noqa: E402

ROOT = None
BIN = None
STATE = None
MODEL = None
SHIM = None
ENV = None


def setUpModule():
    global ROOT, BIN, STATE, MODEL, SHIM, ENV
    ROOT = tempfile.mkdtemp(prefix="fake_docker_test_")
    BIN = os.path.join(ROOT, "bin")
    STATE = os.path.join(ROOT, "state")
    MODEL = fe.write_tiny_model(os.path.join(ROOT, "tiny"))
    SHIM = fd.install(BIN)
    ENV = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
               FAKE_DOCKER_STATE=STATE)
    for k in ("COMPOSE_FILE", "COMPOSE_PROJECT_NAME"):
        ENV.pop(k, None)


def tearDownModule():
    if STATE is not None and os.path.isdir(STATE):
        fd.cleanup(STATE)
    if ROOT is not None:
        shutil.rmtree(ROOT, ignore_errors=True)


def wait_for(pred, timeout=20.0, poll=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(poll)


def alive(pid):
    """Whether pid is a live process (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def docker(*args, env=None, timeout=30):
    """Run the shim as a test would: ``docker`` looked up on PATH."""
    return subprocess.run(["docker", *args], env=env or ENV, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def http(port, path, method="GET", body=None):
    """(status, JSON body) from 127.0.0.1:port, or (0, None) when nothing answers."""
    try:
        status, obj, _ = fe.http_json("http://127.0.0.1:%d" % port, method, path, body,
                                      timeout=5)
        return status, obj
    except OSError:
        return 0, None


def state_file(name):
    return os.path.join(STATE, name + ".json")


def read_state(name):
    with open(state_file(name)) as f:
        return json.load(f)


class Proc:
    """An attached ``docker ...`` process (run, compose up) whose output is collected."""

    def __init__(self, *args, env=None):
        self.args = args
        self.proc = subprocess.Popen(["docker", *args], env=env or ENV, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.out, self.err = [], []
        self._threads = [threading.Thread(target=self._read, args=(s, ls), daemon=True)
                         for s, ls in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    def _read(self, stream, lines):
        for raw in iter(stream.readline, b""):
            lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        return "\n".join(["[stdout]"] + self.out + ["[stderr]"] + self.err)

    def wait(self, timeout=20.0):
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("docker %s still running after %.1fs\n%s"
                                 % (" ".join(self.args), timeout, self.output())) from None
        for t in self._threads:
            t.join(timeout=5)
        return rc

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for t in self._threads:
            t.join(timeout=5)


class FakeDockerTest(unittest.TestCase):

    def setUp(self):
        if os.path.isdir(STATE):
            fd.cleanup(STATE)

    def tearDown(self):
        fd.cleanup(STATE)

    def attached(self, *args, env=None):
        p = Proc(*args, env=env)
        self.addCleanup(p.close)
        return p

    def wait_ready(self, port, proc=None, path="/health", timeout=20.0):
        def ready():
            if proc is not None and proc.proc.poll() is not None:
                raise AssertionError("docker exited with %s before ready\n%s"
                                     % (proc.proc.returncode, proc.output()))
            return http(port, path)[0] == 200
        wait_for(ready, timeout, what="%s on port %d" % (path, port))

    def ok(self, *args, env=None):
        r = docker(*args, env=env)
        self.assertEqual(r.returncode, 0, "docker %s: %s%s" % (" ".join(args), r.stdout, r.stderr))
        return r.stdout

    def running(self, name):
        return self.ok("inspect", "-f", "{{.State.Running}}", name).strip()


class TestCli(FakeDockerTest):
    """The shim, version/info and the errors of commands with no container to act on."""

    def test_install_shim_and_version(self):
        self.assertTrue(stat.S_IMODE(os.stat(SHIM).st_mode) == 0o755)
        self.assertEqual(shutil.which("docker", path=ENV["PATH"]), SHIM)
        self.assertIn("fake", self.ok("version"))
        self.assertEqual(self.ok("version", "--format", "{{.Server.Version}}").strip(), fd.VERSION)
        self.assertIn("Server Version: %s" % fd.VERSION, self.ok("info"))
        self.assertIn("Docker version", self.ok("--version"))
        self.assertIn("Docker Compose version", self.ok("compose", "version"))
        self.assertIn("Image is up to date", self.ok("pull", "nvcr.io/nim/x:1"))
        # install(state=...) bakes a default state directory into the shim.
        other = os.path.join(ROOT, "state-baked")
        fd.install(os.path.join(ROOT, "bin2"), state=other)
        env = dict(ENV, PATH=os.path.join(ROOT, "bin2") + os.pathsep + ENV["PATH"])
        env.pop("FAKE_DOCKER_STATE")
        self.assertEqual(self.ok("info", "--format", "{{.DockerRootDir}}", env=env).strip(), other)

    def test_unsupported_commands_exit_1(self):
        for args in (["build", "."], ["exec", "x", "ls"], ["compose", "logs"]):
            with self.subTest(args):
                r = docker(*args)
                self.assertEqual(r.returncode, 1)
                self.assertIn("fake docker: unsupported command", r.stderr)

    def test_unknown_container(self):
        for args in (["stop", "nope"], ["kill", "nope"], ["rm", "nope"], ["logs", "nope"]):
            with self.subTest(args):
                r = docker(*args)
                self.assertEqual(r.returncode, 1)
                self.assertEqual(r.stderr.strip(), "Error response from daemon: No such container: "
                                                   "nope")
        r = docker("inspect", "nope")
        self.assertEqual((r.returncode, r.stdout.strip(), r.stderr.strip()),
                         (1, "[]", "Error: No such object: nope"))
        r = docker("inspect", "-f", "{{.State.Running}}", "nope")
        self.assertEqual(r.returncode, 1)
        r = docker("rm", "-f", "nope")   # as docker does: force ignores a missing container
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""))
        self.assertEqual(self.ok("ps", "-a", "--format", "{{.Names}}"), "")

    def test_run_usage_errors_are_125(self):
        r = docker("run", "--rm", "--name", "noport", "img")
        self.assertEqual(r.returncode, 125)
        self.assertIn("no -p", r.stderr)
        r = docker("run", "--bogus", "img")
        self.assertEqual(r.returncode, 125)
        self.assertIn("unknown flag: --bogus", r.stderr)
        r = docker("run", "--rm", "-p", "1:2")
        self.assertEqual(r.returncode, 125)
        self.assertIn("requires at least 1 argument", r.stderr)
        r = docker("run", "--name", "bad/name", "-p", "%d:8000" % free_port(), "img")
        self.assertEqual(r.returncode, 125)
        self.assertIn("Invalid container name", r.stderr)
        with socket.socket() as s:   # a host port someone else listens on
            s.bind(("127.0.0.1", 0))
            s.listen(1)
            r = docker("run", "--rm", "--name", "busy", "-p", "%d:8000" % s.getsockname()[1],
                       "img")
        self.assertEqual(r.returncode, 125)
        self.assertIn("address already in use", r.stderr)
        self.assertFalse(os.path.exists(state_file("busy")))


class TestRun(FakeDockerTest):
    """docker run attached and detached, stop, kill, rm, ps, inspect and logs."""

    def test_foreground_run_health_ps_inspect_stop(self):
        port = free_port()
        run = self.attached("run", "--rm", "--name", "nim-llama", "-p", "%d:8000" % port,
                            "-v", "%s:/opt/models/llama:ro" % MODEL, "-e",
                            "NIM_SERVED_MODEL_NAME=meta/llama", "--gpus", "all", "--shm-size",
                            "16g", "--ipc", "host", "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.1",
                            "--startup-delay", "0.5")
        # The state is there (running, the engine's pid) before the engine is ready.
        st = wait_for(lambda: os.path.exists(state_file("nim-llama")) and read_state("nim-llama"),
                      what="the state file")
        self.assertEqual((st["status"], st["host_port"], st["container_port"], st["pgid"]),
                         ("running", port, 8000, st["pid"]))
        self.assertEqual(st["env"], {"NIM_SERVED_MODEL_NAME": "meta/llama"})
        self.assertEqual(st["image"], "nvcr.io/nim/meta/llama-3.1-8b-instruct:1.1")
        self.wait_ready(port, run, "/v1/health/ready")
        self.assertEqual(http(port, "/health"), (200, {"status": "ok"}))
        self.assertEqual([m["id"] for m in http(port, "/v1/models")[1]["data"]], ["meta/llama"])
        stats = http(port, "/_fake/stats")[1]
        self.assertEqual(stats["pid"], st["pid"])
        self.assertEqual(stats["model"]["path"], MODEL)     # the -v source
        self.assertIn("nim-llama", self.ok("ps", "--format", "{{.Names}}").split())
        self.assertEqual(self.ok("ps", "--filter", "name=^nim-llama$", "--format",
                                 "{{.Names}} {{.State}}").strip(), "nim-llama running")
        self.assertIn("127.0.0.1:%d->8000/tcp" % port, self.ok("ps"))
        self.assertEqual(self.running("nim-llama"), "true")
        info = json.loads(self.ok("inspect", "nim-llama"))
        self.assertEqual((info[0]["Name"], info[0]["State"]["Running"], info[0]["State"]["Pid"]),
                         ("/nim-llama", True, st["pid"]))
        self.assertIn("NVIDIA_VISIBLE_DEVICES=all", info[0]["Config"]["Env"])
        # docker stop: SIGTERM, which the fake engine honours: run exits 0 (the engine's status).
        self.assertEqual(self.ok("stop", "nim-llama").strip(), "nim-llama")
        self.assertEqual(run.wait(), 0)
        self.assertFalse(alive(st["pid"]))
        self.assertFalse(os.path.exists(state_file("nim-llama")))   # --rm
        self.assertFalse(os.path.exists(os.path.join(STATE, "nim-llama.log")))
        self.assertEqual(self.ok("ps", "-a", "--format", "{{.Names}}"), "")
        # The container's output was run's output, unprefixed.
        self.assertIn("fake_engine: ready: serving meta/llama at http://127.0.0.1:%d" % port,
                      run.out)
        self.assertIn("fake_engine: shutting down", run.out)
        # A stopped container's name is free again; stopping it twice is an error.
        r = docker("stop", "nim-llama")
        self.assertEqual(r.returncode, 1)

    def test_default_model_name_env_and_gpus(self):
        # No mount: a tiny model from the state directory. The served name is the image's last
        # path component, without the tag. The caller's environment does not reach the
        # container; -e, --env and --gpus do.
        port = free_port()
        env = dict(ENV, CALLER_SECRET="s3cret", FROM_CALLER="yes")
        out = self.ok("run", "-d", "--name", "plain", "-p", "127.0.0.1:%d:8000" % port, "-e",
                      "FROM_CALLER", "--env", "A=1", "--gpus", '"device=1,2"',
                      "registry.example.com/org/my-engine:2.1", env=env).strip()
        self.assertRegex(out, r"^[0-9a-f]{64}$")
        self.wait_ready(port)
        self.assertEqual([m["id"] for m in http(port, "/v1/models")[1]["data"]], ["my-engine"])
        pid = int(self.ok("inspect", "-f", "{{.State.Pid}}", "plain"))
        with open("/proc/%d/environ" % pid, "rb") as f:
            cenv = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if e)
        self.assertNotIn(b"CALLER_SECRET", cenv)
        self.assertEqual((cenv[b"FROM_CALLER"], cenv[b"A"], cenv[b"NVIDIA_VISIBLE_DEVICES"]),
                         (b"yes", b"1", b"1,2"))
        self.assertEqual(self.ok("inspect", "-f", "{{.Id}}", "plain").strip(), out)
        self.assertEqual(self.ok("rm", "-f", "plain").strip(), "plain")
        wait_for(lambda: not alive(pid), what="the engine to die")

    def test_name_conflict_is_125(self):
        port = free_port()
        self.ok("run", "-d", "--name", "dup", "-p", "%d:8000" % port, "img")
        r = docker("run", "--rm", "--name", "dup", "-p", "%d:8000" % free_port(), "img")
        self.assertEqual(r.returncode, 125)
        self.assertIn('docker: Error response from daemon: Conflict. The container name "/dup" is '
                      'already in use', r.stderr)
        # Another container on the same host port: as docker, "port is already allocated".
        r = docker("run", "--rm", "--name", "dup2", "-p", "%d:8000" % port, "img")
        self.assertEqual(r.returncode, 125)
        self.assertIn("port is already allocated", r.stderr)
        # As in docker, an exited container (no --rm) keeps its name until it is removed.
        self.ok("stop", "dup")
        self.assertEqual(docker("run", "--name", "dup", "-p", "%d:8000" % port, "img").returncode,
                         125)
        self.ok("rm", "dup")
        self.ok("run", "-d", "--name", "dup", "-p", "%d:8000" % port, "img")
        self.wait_ready(port)

    def test_detach_stop_keeps_exited_state_until_rm(self):
        port = free_port()
        self.ok("run", "-d", "--name", "det", "-p", "%d:8000" % port, "img", "--startup-delay",
                "0.2")
        pid = read_state("det")["pid"]
        self.wait_ready(port)
        self.assertEqual(self.ok("ps", "--format", "{{.Names}}").split(), ["det"])
        self.assertEqual(self.ok("stop", "-t", "5", "det").strip(), "det")
        self.assertFalse(alive(pid))
        self.assertEqual(http(port, "/health")[0], 0)
        self.assertEqual(self.running("det"), "false")
        self.assertEqual(self.ok("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}",
                                 "det").strip(), "exited 0")
        self.assertEqual(self.ok("ps", "--format", "{{.Names}}"), "")
        self.assertIn("Exited (0)", self.ok("ps", "-a"))
        self.assertEqual(self.ok("stop", "det").strip(), "det")   # already stopped: fine
        r = docker("kill", "det")
        self.assertEqual(r.returncode, 1)
        self.assertIn("is not running", r.stderr)
        self.assertEqual(self.ok("rm", "det").strip(), "det")
        self.assertFalse(os.path.exists(state_file("det")))

    def test_logs_and_follow(self):
        port = free_port()
        self.ok("run", "-d", "--name", "logged", "-p", "%d:8000" % port, "img")
        self.wait_ready(port)
        http(port, "/v1/models")
        logs = self.ok("logs", "logged")
        self.assertIn("fake_engine: listening on http://127.0.0.1:%d" % port, logs)
        self.assertIn('"GET /v1/models HTTP/1.1" 200', logs)
        self.assertEqual(len(self.ok("logs", "--tail", "1", "logged").splitlines()), 1)
        follow = self.attached("logs", "-f", "logged")
        wait_for(lambda: any("listening on" in line for line in follow.out), what="logs -f output")
        self.assertIsNone(follow.proc.poll())
        self.ok("stop", "logged")
        self.assertEqual(follow.wait(), 0)        # -f ends with the container
        self.assertIn("fake_engine: stopped", follow.out)
        # An attached run writes the same output to its stdout and to the log.
        port = free_port()
        run = self.attached("run", "--name", "tee", "-p", "%d:8000" % port, "img")
        self.wait_ready(port, run)
        self.ok("stop", "tee")
        self.assertEqual(run.wait(), 0)
        self.assertEqual(self.ok("logs", "tee").splitlines(), run.out)

    def test_stop_timeout_sigkills_the_group(self):
        # An engine that ignores SIGTERM: stop waits -t seconds, then SIGKILLs the container's
        # process group (its worker too); run exits 128+9.
        port = free_port()
        run = self.attached("run", "--rm", "--name", "stubborn", "-p", "%d:8000" % port, "img",
                            "--ignore-sigterm", "--workers", "1")
        self.wait_ready(port, run)
        worker = http(port, "/_fake/stats")[1]["children"][0]
        t0 = time.monotonic()
        self.assertEqual(self.ok("stop", "-t", "1", "stubborn").strip(), "stubborn")
        self.assertGreaterEqual(time.monotonic() - t0, 1.0)
        self.assertEqual(run.wait(), 137)
        wait_for(lambda: not alive(worker), what="the worker to die")
        self.assertIn("fake_engine: ignoring SIGTERM (--ignore-sigterm)", run.out)
        self.assertFalse(os.path.exists(state_file("stubborn")))

    def test_kill_and_rm_force(self):
        port = free_port()
        self.ok("run", "-d", "--name", "victim", "-p", "%d:8000" % port, "img", "--workers", "1")
        self.wait_ready(port)
        worker = http(port, "/_fake/stats")[1]["children"][0]
        self.assertEqual(self.ok("kill", "victim").strip(), "victim")
        self.assertEqual(self.ok("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}",
                                 "victim").strip(), "false 137")
        wait_for(lambda: not alive(worker), what="the worker to die")
        # rm -f of an attached run: SIGKILL, run exits 137, the state is gone.
        port = free_port()
        run = self.attached("run", "--name", "forced", "-p", "%d:8000" % port, "img")
        self.wait_ready(port, run)
        r = docker("rm", "forced")
        self.assertEqual(r.returncode, 1)
        self.assertIn("container is running", r.stderr)
        self.assertEqual(self.ok("rm", "-f", "forced").strip(), "forced")
        self.assertEqual(run.wait(), 137)
        self.assertFalse(os.path.exists(state_file("forced")))

    def test_signals_to_run_are_forwarded(self):
        # SIGTERM (or SIGINT) to an attached run goes to the engine: it exits 0, run exits 0,
        # and nothing is left behind.
        for sig in (signal.SIGTERM, signal.SIGINT):
            with self.subTest(signal=sig.name):
                name = "sig-" + sig.name.lower()
                port = free_port()
                run = self.attached("run", "--rm", "--name", name, "-p", "%d:8000" % port, "img",
                                    "--workers", "1")
                self.wait_ready(port, run)
                pid = read_state(name)["pid"]
                worker = http(port, "/_fake/stats")[1]["children"][0]
                run.proc.send_signal(sig)
                self.assertEqual(run.wait(), 0)
                self.assertFalse(alive(pid), "engine %d survived" % pid)
                self.assertFalse(alive(worker), "worker %d survived" % worker)
                self.assertFalse(os.path.exists(state_file(name)))
                self.assertIn("fake_engine: shutting down", run.out)

    def test_sigkill_to_run_leaves_the_container(self):
        # As with docker: the container is not the CLI's child, so killing `docker run` leaves
        # it serving; `docker stop` ends it and, with --rm, removes it.
        port = free_port()
        run = self.attached("run", "--rm", "--name", "orphan", "-p", "%d:8000" % port, "img")
        self.wait_ready(port, run)
        pid = read_state("orphan")["pid"]
        run.proc.kill()
        self.assertEqual(run.wait(), -signal.SIGKILL)
        self.assertEqual(http(port, "/health")[0], 200)
        self.assertEqual(self.running("orphan"), "true")
        self.assertEqual(self.ok("stop", "orphan").strip(), "orphan")
        self.assertFalse(alive(pid))
        self.assertFalse(os.path.exists(state_file("orphan")))

    def test_engine_exit_code_passes_through(self):
        port = free_port()
        run = self.attached("run", "--name", "crasher", "-p", "%d:8000" % port, "img",
                            "--crash-after", "0.3", "--exit-code", "3")
        self.assertEqual(run.wait(), 3)
        self.assertIn("crashing", "\n".join(run.err))   # the engine's stderr is run's stderr
        self.assertEqual(self.ok("inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}",
                                 "crasher").strip(), "false 3")
        # A model the engine rejects: it exits 1 before it listens.
        empty = os.path.join(ROOT, "empty-model")
        os.makedirs(empty, exist_ok=True)
        run = self.attached("run", "--rm", "--name", "nomodel", "-p", "%d:8000" % free_port(),
                            "-v", "%s:/models" % empty, "img")
        self.assertEqual(run.wait(), 1)
        self.assertIn(empty, "\n".join(run.err))


class TestCompose(FakeDockerTest):
    """docker compose up/stop/down with a JSON compose file and ${VAR} interpolation."""

    def write_compose(self, dirname):
        d = os.path.join(ROOT, dirname)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "compose.json")
        with open(path, "w") as f:
            json.dump({"services": {"engine": {
                "image": "nvcr.io/nim/meta/llama:1.0",
                "ports": ["${GSWARM_PORT}:8000"],
                "environment": {"NIM_SERVED_MODEL_NAME": "${MODEL_NAME:-compose-default}",
                                "PRICE": "$$5"},
                "volumes": ["${GSWARM_MODEL_PATH}:/models:ro"],
                "command": ["--startup-delay", "0.2", "--model", "/models"]}}}, f)
        return path

    def test_up_stop_down(self):
        path = self.write_compose("myproj")
        port = free_port()
        env = dict(ENV, GSWARM_PORT=str(port), GSWARM_MODEL_PATH=MODEL)
        up = self.attached("compose", "-f", path, "up", "engine", env=env)
        self.wait_ready(port, up)
        self.assertEqual(self.ok("ps", "--format", "{{.Names}}").split(), ["myproj-engine-1"])
        self.assertEqual([m["id"] for m in http(port, "/v1/models")[1]["data"]],
                         ["compose-default"])
        st = read_state("myproj-engine-1")
        self.assertEqual((st["env"]["PRICE"], st["mounts"][0][:2], st["auto_remove"]),
                         ("$5", [MODEL, "/models"], True))
        self.assertEqual(st["labels"]["com.docker.compose.project"], "myproj")
        self.assertEqual(self.ok("compose", "-f", path, "stop", "engine", env=env), "")
        self.assertEqual(up.wait(), 0)
        self.assertFalse(alive(st["pid"]))
        self.assertFalse(os.path.exists(state_file("myproj-engine-1")))
        self.assertIn("fake_engine: ready: serving compose-default at http://127.0.0.1:%d" % port,
                      up.out)
        # COMPOSE_FILE and COMPOSE_PROJECT_NAME, detached, then down.
        port = free_port()
        env = dict(ENV, GSWARM_PORT=str(port), GSWARM_MODEL_PATH=MODEL, COMPOSE_FILE=path,
                   COMPOSE_PROJECT_NAME="Other", MODEL_NAME="from-env")
        self.ok("compose", "up", "-d", "engine", env=env)
        self.wait_ready(port)
        self.assertEqual([m["id"] for m in http(port, "/v1/models")[1]["data"]], ["from-env"])
        self.assertEqual(self.ok("ps", "--format", "{{.Names}}").split(), ["other-engine-1"])
        pid = read_state("other-engine-1")["pid"]
        self.ok("compose", "down", env=env)
        self.assertFalse(alive(pid))
        self.assertEqual(self.ok("ps", "-a", "--format", "{{.Names}}"), "")

    def test_interpolation_errors(self):
        d = os.path.join(ROOT, "strict")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "compose.json")
        with open(path, "w") as f:
            json.dump({"services": {"s": {"ports": ["${NEEDED_PORT:?set NEEDED_PORT}:8000"]}}}, f)
        r = docker("compose", "-f", path, "up", "s")
        self.assertEqual(r.returncode, 1)
        self.assertIn("required variable NEEDED_PORT is missing a value: set NEEDED_PORT", r.stderr)
        with open(path, "w") as f:
            f.write("services:\n  s: {}\n")
        r = docker("compose", "-f", path, "up", "s")
        self.assertEqual(r.returncode, 1)
        self.assertIn("compose files must be JSON", r.stderr)
        self.assertEqual(fd.interpolate("${A}-${B:-b}-${C-c}-${A:+alt}-$$A-$A",
                                        {"A": "a", "C": ""}), "a-b--alt-$A-a")


if __name__ == "__main__":
    unittest.main()
