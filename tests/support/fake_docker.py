#!/usr/bin/python3
"""A fake ``docker`` CLI for tests: "containers" are fake_engine.py processes, so tests can run
container engines (NIM, vLLM's image, ...) on a machine with no Docker daemon.

Standard library only. Put it on PATH as ``docker`` with ``install(bin_dir)``, which writes a
shim that execs ``/usr/bin/python3 <this file> "$@"``.

Whatever the image, a container runs the fake engine:

* It listens on the host side of the first ``-p [HOST_IP:]HOST_PORT:CONTAINER_PORT``. The host
  IP defaults to 127.0.0.1; ``0.0.0.0`` stays ``0.0.0.0``. A ``-p`` is required unless
  ``--network host`` is given.
* Its model is the source of the first ``-v SRC:DST[:ro]`` mount. Without a mount it gets a
  tiny model in the state directory.
* Its served model name comes from ``-e NIM_SERVED_MODEL_NAME`` or ``-e SERVED_MODEL_NAME``.
  Otherwise it is the image's last path component without the tag.
* Arguments after IMAGE go to the fake engine, for example ``--startup-delay 1``. An argument
  naming a mount's DST path is rewritten to its SRC path. ``--model``/``--served-model-name``
  there override the defaults; the host and port are always the published ones.
* Its environment is the container's: PATH, HOSTNAME, the ``-e``/``--env-file`` variables and
  ``NVIDIA_VISIBLE_DEVICES`` from ``--gpus``. The caller's environment is not passed on.

Commands: run, stop, kill, rm, ps, inspect, logs, pull (a no-op), version, info, the
``container`` forms of these, and compose (up, stop, down, version) with a JSON compose file.
Anything else exits 1 with ``fake docker: unsupported command ...``.

Processes, as with the real thing:

* ``docker run`` stays attached: it tees the engine's stdout and stderr to its own and to
  ``<state>/<name>.log``. It forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to
  the engine (sig-proxy). It exits with the engine's status, or 128+N if the engine died of
  signal N.
* The engine runs in its own session, because a container is not the CLI's child. SIGKILL to
  ``docker run`` (or to its process group) leaves the container running until ``docker stop``,
  ``kill`` or ``rm -f``.
* When the engine (the container's PID 1) exits, the rest of its process group is killed, as a
  PID namespace is torn down.
* ``run -d`` forks a detached monitor that does the same with the output going only to the log,
  then prints a 64-hex id.

State: ``$FAKE_DOCKER_STATE`` (default ``$TMPDIR/fake-docker-<uid>``) holds ``<name>.json`` (see
``container_state``) and ``<name>.log`` per container. ``.lock`` serialises changes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["install", "main", "state_dir", "containers", "cleanup", "container_state",
           "DEFAULT_STOP_TIMEOUT", "VERSION"]

HERE = os.path.dirname(os.path.abspath(__file__))
ENGINE = os.path.join(HERE, "fake_engine.py")
PYTHON = "/usr/bin/python3"
VERSION = "27.0.0-fake"
API_VERSION = "1.46"
COMPOSE_VERSION = "v2.29.0-fake"
DEFAULT_STOP_TIMEOUT = 10
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                     signal.SIGUSR1, signal.SIGUSR2)
ZERO_TIME = "0001-01-01T00:00:00Z"


class DockerError(Exception):
    """A command failure: ``code`` is the exit status and ``str()`` the stderr text."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def _no_such(name: str) -> DockerError:
    return DockerError(1, "Error response from daemon: No such container: %s" % name)


# ---------------------------------------------------------------------------------------------
# Installing the shim
# ---------------------------------------------------------------------------------------------

def install(bin_dir: str, python: str = PYTHON, state: Optional[str] = None) -> str:
    """Write an executable ``docker`` shim (mode 0755) into ``bin_dir`` and return its path.

    Put ``bin_dir`` first on PATH. The shim runs ``python`` on this file. With ``state``, the
    shim uses that state directory unless ``FAKE_DOCKER_STATE`` is set in its environment.
    """
    os.makedirs(bin_dir, exist_ok=True)
    path = os.path.join(bin_dir, "docker")
    lines = ["#!/bin/sh", "# fake docker: written by tests/support/fake_docker.py install()"]
    if state is not None:
        lines.append("FAKE_DOCKER_STATE=${FAKE_DOCKER_STATE:-%s}" % shlex.quote(state))
        lines.append("export FAKE_DOCKER_STATE")
    lines.append('exec %s %s "$@"' % (shlex.quote(python), shlex.quote(os.path.abspath(__file__))))
    tmp = path + ".tmp.%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------
# State
# ---------------------------------------------------------------------------------------------

def state_dir(create: bool = True) -> str:
    """``$FAKE_DOCKER_STATE``, or ``$TMPDIR/fake-docker-<uid>``."""
    d = os.environ.get("FAKE_DOCKER_STATE") or os.path.join(
        tempfile.gettempdir(), "fake-docker-%d" % os.getuid())
    if create:
        os.makedirs(d, exist_ok=True)
    return d


def _json_path(d: str, name: str) -> str:
    return os.path.join(d, name + ".json")


def _log_path(d: str, name: str) -> str:
    return os.path.join(d, name + ".log")


@contextlib.contextmanager
def _locked(d: str):
    fd = os.open(os.path.join(d, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(d: str, name: str) -> Optional[Dict[str, Any]]:
    try:
        with open(_json_path(d, name)) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return None
    return st if isinstance(st, dict) else None


def _write(d: str, st: Dict[str, Any]) -> None:
    path = _json_path(d, st["name"])
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(st, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _remove(d: str, name: str) -> None:
    for p in (_json_path(d, name), _log_path(d, name)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def _names(d: str) -> List[str]:
    try:
        entries = os.listdir(d)
    except FileNotFoundError:
        return []
    return sorted(e[:-5] for e in entries if e.endswith(".json") and not e.startswith("."))


def _proc_start(pid: Optional[int]) -> Optional[str]:
    """The start time of a live process (None when gone or a zombie), to tell pids apart."""
    if not pid:
        return None
    try:
        with open("/proc/%d/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if len(rest) < 20 or rest[0] in ("Z", "X"):
        return None
    return rest[19]


def _alive(pid: Optional[int], start: Optional[str]) -> bool:
    t = _proc_start(pid)
    return t is not None and (start is None or t == start)


def _engine_alive(st: Dict[str, Any]) -> bool:
    return _alive(st.get("pid"), st.get("pid_start"))


def _run_alive(st: Dict[str, Any]) -> bool:
    return _alive(st.get("run_pid"), st.get("run_pid_start"))


def _killpg(pgid: Optional[int], sig: int = signal.SIGKILL) -> None:
    if pgid and pgid > 1:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def _now() -> float:
    return time.time()


def _iso(t: Optional[float]) -> str:
    if not t:
        return ZERO_TIME
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%09dZ" % int((t % 1) * 1e9)


def _settle(d: str, st: Dict[str, Any], exit_code: Optional[int] = None,
            wait: float = 10.0) -> Optional[Dict[str, Any]]:
    """Once the engine of ``st`` is dead: wait for its run process to record the exit (the
    state then says exited, or is gone with --rm). If there is no run process left, record it
    here. Returns the state now (None if it was removed)."""
    deadline = time.monotonic() + wait
    while True:
        cur = _read(d, st["name"])
        if cur is None or cur.get("id") != st["id"] or cur.get("status") != "running":
            return cur if cur is not None and cur.get("id") == st["id"] else None
        if not _run_alive(cur) or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    _killpg(st.get("pgid"))  # no run process did the namespace teardown
    with _locked(d):
        cur = _read(d, st["name"])
        if cur is None or cur.get("id") != st["id"]:
            return None
        if cur.get("status") != "running":
            return cur
        if cur.get("auto_remove"):
            _remove(d, st["name"])
            return None
        cur.update(status="exited", finished_at=_now(),
                   exit_code=exit_code if exit_code is not None else cur.get("exit_code", 255))
        if cur["exit_code"] is None:
            cur["exit_code"] = 255
        _write(d, cur)
        return cur


def container_state(name: str, d: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The state of container ``name``, reconciled with its processes, or None.

    Keys: name, id, pid and pgid (the engine's; it leads its own process group), pid_start,
    run_pid and run_pid_start (the ``docker run`` process or -d monitor), image, host_ip,
    host_port, container_port, env (the -e variables), status ("running" or "exited"),
    exit_code, auto_remove (--rm), detached, argv (the engine's), args (after IMAGE), mounts,
    labels, gpus, network, created, started_at, finished_at, stop_timeout, stop_signal.
    """
    d = d or state_dir()
    st = _read(d, name)
    if st is None or st.get("status") != "running" or _engine_alive(st):
        return st
    return _settle(d, st, wait=5.0)


def containers(d: Optional[str] = None, all: bool = True) -> List[Dict[str, Any]]:
    """Every container's reconciled state (only running ones with ``all=False``)."""
    d = d or state_dir()
    out = []
    for n in _names(d):
        st = container_state(n, d)
        if st is not None and (all or st.get("status") == "running"):
            out.append(st)
    return out


def cleanup(d: Optional[str] = None) -> List[str]:
    """Kill every container's engine (its whole process group) and run process, and remove
    every state and log file: a test's tearDown. Returns the names found."""
    d = d or state_dir()
    found = _names(d)
    for n in found:
        st = _read(d, n)
        if st is None:
            continue
        if _engine_alive(st):
            _killpg(st.get("pgid"))
            with contextlib.suppress(ProcessLookupError):
                os.kill(st["pid"], signal.SIGKILL)
        if _run_alive(st):
            with contextlib.suppress(ProcessLookupError):
                os.kill(st["run_pid"], signal.SIGKILL)
    with _locked(d):
        for n in found:
            _remove(d, n)
    return found


def _is_running(st: Optional[Dict[str, Any]]) -> bool:
    return bool(st) and st.get("status") == "running" and _engine_alive(st)


def _wait_dead(st: Dict[str, Any], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _engine_alive(st):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


# ---------------------------------------------------------------------------------------------
# Option parsing (docker's flag rules: --x=v, --x v, -x v, -xv, -abc clusters, -- ends options)
# ---------------------------------------------------------------------------------------------

def _parse(argv: List[str], cmd: str, values: Dict[str, str], flags: Dict[str, str],
           interspersed: bool = True) -> Tuple[List[Tuple[str, str]], List[str]]:
    """(options as (canonical name, value), positionals). ``values`` and ``flags`` map every
    spelling to its canonical name. Without ``interspersed`` the first positional ends the
    options (``docker run ... IMAGE ARGS``)."""
    opts: List[Tuple[str, str]] = []
    pos: List[str] = []
    see = "\nSee 'docker %s --help'." % cmd
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            pos.extend(argv[i:])
            break
        if a.startswith("--"):
            name, eq, v = a.partition("=")
            if name in values:
                if not eq:
                    if i >= len(argv):
                        raise DockerError(125, "flag needs an argument: %s%s" % (name, see))
                    v = argv[i]
                    i += 1
                opts.append((values[name], v))
            elif name in flags:
                opts.append((flags[name], v if eq else "true"))
            else:
                raise DockerError(125, "unknown flag: %s%s" % (name, see))
        elif a.startswith("-") and len(a) > 1:
            j = 1
            while j < len(a):
                s = "-" + a[j]
                if s in flags:
                    opts.append((flags[s], "true"))
                    j += 1
                elif s in values:
                    v = a[j + 1:]
                    if v.startswith("="):
                        v = v[1:]
                    if not v:
                        if i >= len(argv):
                            raise DockerError(125, "flag needs an argument: '%s' in %s%s"
                                              % (a[j], s, see))
                        v = argv[i]
                        i += 1
                    opts.append((values[s], v))
                    break
                else:
                    raise DockerError(125, "unknown shorthand flag: '%s' in %s%s" % (a[j], a, see))
        else:
            pos.append(a)
            if not interspersed:
                pos.extend(argv[i:])
                break
    return opts, pos


def _spellings(*groups: str) -> Dict[str, str]:
    """``_spellings("--publish -p", ...)``: each spelling -> the first (canonical) one."""
    out = {}
    for g in groups:
        names = g.split()
        for n in names:
            out[n] = names[0]
    return out


def _last(opts: List[Tuple[str, str]], name: str, default: Any = None) -> Any:
    v = default
    for k, val in opts:
        if k == name:
            v = val
    return v


def _all(opts: List[Tuple[str, str]], name: str) -> List[str]:
    return [v for k, v in opts if k == name]


def _truthy(v: Optional[str]) -> bool:
    return v is not None and v.lower() not in ("false", "0", "no")


def _int(v: str, flag: str, code: int = 125) -> int:
    try:
        return int(v)
    except ValueError:
        raise DockerError(code, 'invalid argument "%s" for "%s" flag: strconv.ParseInt: parsing '
                                '"%s": invalid syntax' % (v, flag, v)) from None


# ---------------------------------------------------------------------------------------------
# docker run
# ---------------------------------------------------------------------------------------------

RUN_VALUES = _spellings(
    "--name", "--publish -p", "--env -e", "--env-file", "--volume -v", "--mount", "--gpus",
    "--shm-size", "--ipc", "--network --net", "--runtime", "--user -u", "--workdir -w",
    "--entrypoint", "--label -l", "--label-file", "--ulimit", "--memory -m", "--memory-swap",
    "--cpus", "--cpuset-cpus", "--device", "--restart", "--pull", "--platform",
    "--hostname -h", "--log-driver", "--log-opt", "--cap-add", "--cap-drop", "--security-opt",
    "--stop-signal", "--stop-timeout", "--add-host", "--cidfile", "--pid", "--uts",
    "--group-add", "--tmpfs", "--sysctl", "--dns", "--health-cmd", "--health-interval",
    "--health-timeout", "--health-retries", "--health-start-period", "--attach -a",
    "--expose", "--userns", "--cgroupns", "--oom-score-adj", "--pids-limit")
RUN_FLAGS = _spellings(
    "--rm", "--detach -d", "--interactive -i", "--tty -t", "--init", "--privileged",
    "--publish-all -P", "--read-only", "--no-healthcheck", "--quiet -q", "--sig-proxy",
    "--oom-kill-disable")


class RunSpec:
    """What ``docker run`` (or a compose service) asks for."""

    def __init__(self) -> None:
        self.name = ""
        self.image = ""
        self.args: List[str] = []
        self.env: Dict[str, str] = {}
        self.ports: List[Tuple[str, Optional[int], int]] = []   # (host ip, host port, container)
        self.mounts: List[Tuple[str, str, str]] = []            # (src, dst, mode)
        self.labels: Dict[str, str] = {}
        self.rm = False
        self.detach = False
        self.sig_proxy = True
        self.gpus: Optional[str] = None
        self.network: Optional[str] = None
        self.stop_timeout: Optional[int] = None
        self.stop_signal: Optional[str] = None
        self.options: Dict[str, Any] = {}                       # the rest, for inspect
        self.cmd = "run"


def _parse_port(spec: str) -> Tuple[str, Optional[int], int]:
    """``[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]`` -> (ip, host port or None, port)."""
    s = spec.split("/", 1)[0]
    ip = ""
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or s[end + 1:end + 2] != ":":
            raise DockerError(125, "docker: invalid publish spec %r." % spec)
        ip, s = s[1:end], s[end + 2:]
    parts = s.split(":")
    if not ip and len(parts) == 3:
        ip, parts = parts[0], parts[1:]
    elif ip and len(parts) != 2 and len(parts) != 1:
        raise DockerError(125, "docker: invalid publish spec %r." % spec)
    if len(parts) > 2 or not parts[-1]:
        raise DockerError(125, "docker: invalid publish spec %r." % spec)
    try:
        cport = int(parts[-1])
        hport = int(parts[0]) if len(parts) == 2 and parts[0] else None
    except ValueError:
        raise DockerError(125, "docker: invalid publish spec %r: the fake takes no port ranges."
                          % spec) from None
    for p in (cport, hport):
        if p is not None and not 0 < p < 65536:
            raise DockerError(125, "docker: invalid publish spec %r: port out of range." % spec)
    return ip or "127.0.0.1", hport, cport


def _named_volume(name: str) -> str:
    d = os.path.join(state_dir(), "volumes", name)
    os.makedirs(d, exist_ok=True)
    return d


def _parse_volume(spec: str, base: Optional[str] = None) -> Optional[Tuple[str, str, str]]:
    """``SRC:DST[:MODE]`` -> (absolute host path, DST, mode); None for an anonymous volume.
    A SRC that is no path is a named volume (a directory under the state directory); compose
    (``base``) also takes ./relative paths."""
    parts = spec.split(":")
    if len(parts) == 1:
        return None
    if len(parts) > 3 or not parts[0] or not parts[1]:
        raise DockerError(125, "docker: invalid spec: %s." % spec)
    src, dst = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if src.startswith("~"):
        src = os.path.expanduser(src)
    if base is not None and (src.startswith("./") or src.startswith("../") or src in (".", "..")):
        src = os.path.normpath(os.path.join(base, src))
    if src.startswith("/"):
        if not os.path.exists(src):
            os.makedirs(src, exist_ok=True)   # as docker does for a missing bind source
    elif re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", src):
        src = _named_volume(src)
    else:
        raise DockerError(125, 'docker: Error response from daemon: create %s: "%s" includes '
                               'invalid characters for a local volume name, only '
                               '"[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass '
                               'a host directory, use absolute path.' % (src, src))
    return src, dst, mode


def _parse_mount(spec: str) -> Optional[Tuple[str, str, str]]:
    kv = {}
    for part in spec.split(","):
        k, eq, v = part.partition("=")
        kv[k.strip()] = v if eq else "true"
    src = kv.get("source") or kv.get("src")
    dst = kv.get("target") or kv.get("destination") or kv.get("dst")
    if not dst:
        raise DockerError(125, "invalid argument \"%s\" for \"--mount\" flag: target is required"
                          % spec)
    if not src:
        return None
    ro = _truthy(kv.get("readonly") or kv.get("ro"))
    return _parse_volume("%s:%s:%s" % (src, dst, "ro" if ro else "rw"))


def _read_env_file(path: str, env: Dict[str, str]) -> None:
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DockerError(125, "docker: open %s: %s." % (path, e.strerror)) from None
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            _add_env(env, line)


def _add_env(env: Dict[str, str], item: str) -> None:
    k, eq, v = item.partition("=")
    if not k:
        raise DockerError(125, "docker: invalid environment variable: %s" % item)
    if eq:
        env[k] = v
    elif k in os.environ:           # -e KEY: the caller's value, or nothing
        env[k] = os.environ[k]


def parse_run(argv: List[str], cmd: str = "run") -> RunSpec:
    opts, pos = _parse(argv, cmd, RUN_VALUES, RUN_FLAGS, interspersed=False)
    if not pos:
        raise DockerError(125, "docker: '%s' requires at least 1 argument.\nSee 'docker %s "
                               "--help'." % (cmd, cmd))
    spec = RunSpec()
    spec.image, spec.args = pos[0], pos[1:]
    for k, v in opts:
        if k == "--name":
            spec.name = v[1:] if v.startswith("/") else v
        elif k == "--publish":
            spec.ports.append(_parse_port(v))
        elif k == "--env":
            _add_env(spec.env, v)
        elif k == "--env-file":
            _read_env_file(v, spec.env)
        elif k == "--volume":
            m = _parse_volume(v)
            if m:
                spec.mounts.append(m)
        elif k == "--mount":
            m = _parse_mount(v)
            if m:
                spec.mounts.append(m)
        elif k == "--label":
            lk, _, lv = v.partition("=")
            spec.labels[lk] = lv
        elif k == "--rm":
            spec.rm = _truthy(v)
        elif k == "--detach":
            spec.detach = _truthy(v)
        elif k == "--sig-proxy":
            spec.sig_proxy = _truthy(v)
        elif k == "--gpus":
            spec.gpus = v
        elif k == "--network":
            spec.network = v
        elif k == "--stop-timeout":
            spec.stop_timeout = _int(v, "--stop-timeout")
        elif k == "--stop-signal":
            spec.stop_signal = v
        else:
            spec.options.setdefault(k.lstrip("-"), []).append(v)
    return spec


def _nvidia_devices(gpus: str) -> str:
    g = gpus.strip().strip("'\"")
    if g == "all":
        return "all"
    for part in g.split(","):
        if part.startswith("device="):
            return g.split("device=", 1)[1].strip("'\"")
    if g.isdigit():
        return ",".join(str(i) for i in range(int(g)))
    return g


def _tiny_model(d: str) -> str:
    """A tiny valid model in the state directory, for containers given no mount."""
    target = os.path.join(d, "tiny-model")
    if os.path.isfile(os.path.join(target, "model.safetensors")):
        return target
    sys.path.insert(0, HERE)
    import fake_engine  # noqa: E402  (only here: it is slow to import)
    tmp = tempfile.mkdtemp(prefix=".tiny-model.", dir=d)
    fake_engine.write_tiny_model(tmp)
    try:
        os.rename(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)   # another run made it first
    return target


def _served_name(spec: RunSpec) -> str:
    for k in ("NIM_SERVED_MODEL_NAME", "SERVED_MODEL_NAME"):
        if spec.env.get(k):
            return spec.env[k]
    last = spec.image.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[0] or spec.image


def _translate(args: List[str], mounts: List[Tuple[str, str, str]]) -> List[str]:
    """Container paths (a mount's DST, or under it) -> host paths, also in ``--flag=PATH``."""
    def one(a: str) -> str:
        for src, dst, _ in mounts:
            dst = dst.rstrip("/") or "/"
            if a == dst:
                return src
            if a.startswith(dst + "/"):
                return os.path.join(src, a[len(dst) + 1:])
        return a
    out = []
    for a in args:
        if a.startswith("--") and "=" in a:
            k, _, v = a.partition("=")
            out.append(k + "=" + one(v))
        else:
            out.append(one(a))
    return out


def _arg_value(args: List[str], flag: str) -> Optional[str]:
    v = None
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            v = args[i + 1]
        elif a.startswith(flag + "="):
            v = a[len(flag) + 1:]
    return v


def _free_port(ip: str) -> int:
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(fam) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _port_taken(ip: str, port: int) -> bool:
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(fam) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the engine binds
        try:
            s.bind((ip, port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def _see(cmd: str) -> str:
    return "\nSee 'docker %s --help'." % cmd


def _prepare(d: str, spec: RunSpec) -> Dict[str, Any]:
    """Validate ``spec`` and build the state record (without pids) and the engine's argv."""
    if not spec.name:
        spec.name = "fake_%s" % secrets.token_hex(4)
    if not NAME_RE.match(spec.name):
        raise DockerError(125, "docker: Error response from daemon: Invalid container name (%s), "
                               "only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed.%s"
                          % (spec.name, _see(spec.cmd)))
    cid = secrets.token_hex(32)
    args = _translate(spec.args, spec.mounts)
    model = spec.mounts[0][0] if spec.mounts else _tiny_model(d)
    head = [sys.executable or PYTHON, ENGINE, "--model", model,
            "--served-model-name", _served_name(spec)]
    if spec.network == "host":
        # No port mapping: the engine listens where its arguments say (NIM: NIM_SERVER_PORT).
        ip = "127.0.0.1"
        port = _arg_value(args, "--port") or spec.env.get("NIM_SERVER_PORT") or "8000"
        hport = cport = _int(port, "--port")
        if spec.ports:
            sys.stderr.write("WARNING: Published ports are discarded when using host network "
                             "mode\n")
        argv = head + ["--host", ip, "--port", str(hport)] + args
    else:
        if not spec.ports:
            raise DockerError(125, "docker: fake docker: no -p [HOST_IP:]HOST_PORT:"
                                   "CONTAINER_PORT given: the fake engine listens on the "
                                   "published host port.%s" % _see(spec.cmd))
        ip, hport, cport = spec.ports[0]
        if hport is None:
            hport = _free_port(ip)
            spec.ports[0] = (ip, hport, cport)
        argv = head + args + ["--host", ip, "--port", str(hport)]
    env = {"PATH": CONTAINER_PATH, "HOSTNAME": cid[:12]}
    if spec.gpus:
        env["NVIDIA_VISIBLE_DEVICES"] = _nvidia_devices(spec.gpus)
    env.update(spec.env)
    return {
        "name": spec.name, "id": cid, "pid": None, "pgid": None, "pid_start": None,
        "run_pid": os.getpid(), "run_pid_start": _proc_start(os.getpid()),
        "image": spec.image, "host_ip": ip, "host_port": hport, "container_port": cport,
        "ports": [list(p) for p in spec.ports], "env": spec.env, "container_env": env,
        "status": "created", "exit_code": None, "auto_remove": spec.rm, "detached": spec.detach,
        "argv": argv, "args": spec.args, "mounts": [list(m) for m in spec.mounts],
        "labels": spec.labels, "gpus": spec.gpus, "network": spec.network,
        "stop_timeout": spec.stop_timeout, "stop_signal": spec.stop_signal,
        "options": spec.options, "created": _now(), "started_at": None, "finished_at": None,
    }


def _start(d: str, spec: RunSpec, detached: bool) -> Tuple[subprocess.Popen, Dict[str, Any]]:
    """Check for conflicts and start the engine; the state says running when this returns."""
    st = _prepare(d, spec)
    name = st["name"]
    container_state(name, d)          # settles a dead --rm container first
    with _locked(d):
        old = _read(d, name)
        if old is not None:
            raise DockerError(125, 'docker: Error response from daemon: Conflict. The container '
                                   'name "/%s" is already in use by container "%s". You have to '
                                   'remove (or rename) that container to be able to reuse that '
                                   'name.%s' % (name, old.get("id", ""), _see(spec.cmd)))
        ip, port = st["host_ip"], st["host_port"]
        for other in _names(d):
            o = _read(d, other)
            if o and o.get("host_port") == port and _is_running(o) and (
                    ip == o.get("host_ip") or "0.0.0.0" in (ip, o.get("host_ip"))):
                raise DockerError(125, "docker: Error response from daemon: driver failed "
                                       "programming external connectivity on endpoint %s (%s): "
                                       "Bind for %s:%d failed: port is already allocated.%s"
                                  % (name, st["id"], ip, port, _see(spec.cmd)))
        if _port_taken(ip, port):
            raise DockerError(125, "docker: Error response from daemon: driver failed programming "
                                   "external connectivity on endpoint %s (%s): Error starting "
                                   "userland proxy: listen tcp %s:%d: bind: address already in "
                                   "use.%s" % (name, st["id"], ip, port, _see(spec.cmd)))
        log_fd = os.open(_log_path(d, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND
                         | os.O_CLOEXEC, 0o644)
        try:
            out = log_fd if detached else subprocess.PIPE
            try:
                proc = subprocess.Popen(st["argv"], stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=out, env=st["container_env"], cwd="/",
                                        start_new_session=True)
            except OSError as e:
                _remove(d, name)
                raise DockerError(127, "docker: Error response from daemon: failed to create "
                                       "task for container: exec: %s" % e) from None
        finally:
            if detached:
                os.close(log_fd)
        st.update(pid=proc.pid, pgid=proc.pid, pid_start=_proc_start(proc.pid),
                  status="running", started_at=_now())
        _write(d, st)
    if not detached:
        st["_log_fd"] = log_fd
    return proc, st


def _tee(src, fds: List[Optional[int]]) -> None:
    """Copy a pipe to each fd; a failing fd (the terminal gone) is dropped, the others go on."""
    fd = src.fileno()
    while True:
        try:
            data = os.read(fd, 65536)
        except InterruptedError:
            continue
        except OSError:
            break
        if not data:
            break
        for i, out in enumerate(fds):
            if out is None:
                continue
            try:
                view = memoryview(data)
                while view:
                    n = os.write(out, view)
                    view = view[n:]
            except OSError:
                fds[i] = None
    with contextlib.suppress(OSError):
        src.close()


class _SigProxy:
    """Forwards signals to the engine once it is started (and those that came before)."""

    def __init__(self, enabled: bool):
        self.pid: Optional[int] = None
        self.pending: List[int] = []
        self.enabled = enabled
        for s in FORWARDED_SIGNALS:   # --sig-proxy=false: a signal ends run, not the container
            signal.signal(s, self._on if enabled else signal.SIG_DFL)

    def _on(self, signum, _frame) -> None:
        if self.pid is None:
            self.pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def attach(self, pid: int) -> None:
        self.pid = pid
        pending, self.pending = self.pending, []
        for s in pending:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, s)

    def detach(self) -> None:
        self.pid = None


def _supervise(d: str, spec: RunSpec, report: Optional[int] = None) -> int:
    """Run one container to its end: start the engine, forward signals, tee its output (unless
    detached: ``report`` is the pipe to tell the ``run -d`` parent the id or the error), tear
    the group down when it exits, and record the exit. Returns run's exit status."""
    proxy = _SigProxy(spec.sig_proxy)
    detached = report is not None
    try:
        proc, st = _start(d, spec, detached)
    except DockerError as e:
        if report is not None:
            os.write(report, json.dumps({"code": e.code, "error": str(e)}).encode())
            os.close(report)
        else:
            sys.stderr.write(str(e) + "\n")
        return e.code
    proxy.attach(proc.pid)
    if report is not None:
        os.write(report, json.dumps({"id": st["id"]}).encode())
        os.close(report)
    threads = []
    log_fd = st.pop("_log_fd", None)
    if not detached:
        for pipe, term in ((proc.stdout, 1), (proc.stderr, 2)):
            t = threading.Thread(target=_tee, args=(pipe, [log_fd, term]), daemon=True)
            t.start()
            threads.append(t)
    while True:   # wait without reaping, so the pid (and group id) stay ours for the teardown
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            break
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    proxy.detach()
    _killpg(proc.pid)   # the container's other processes end with its PID 1
    rc = proc.wait()
    for t in threads:
        t.join(timeout=5)
    if log_fd is not None:
        os.close(log_fd)
    code = rc if rc >= 0 else 128 - rc
    with _locked(d):
        cur = _read(d, st["name"])
        if cur is not None and cur.get("id") == st["id"]:
            if cur.get("auto_remove"):
                _remove(d, st["name"])
            else:
                cur.update(status="exited", exit_code=code, finished_at=_now())
                _write(d, cur)
    return code


def _run_detached(d: str, spec: RunSpec) -> int:
    """``run -d``: fork a monitor in its own session that supervises the container; print the
    id once the engine is started."""
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:   # the monitor
        rc = 125
        try:
            os.close(r)
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            rc = _supervise(d, spec, report=w)
        finally:
            os._exit(rc)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    try:
        msg = json.loads(b"".join(chunks).decode())
    except ValueError:
        msg = {"code": 125, "error": "docker: fake docker: the container monitor failed"}
    if "error" in msg:
        sys.stderr.write(msg["error"] + "\n")
        return msg["code"]
    sys.stdout.write(msg["id"] + "\n")
    return 0


def run_container(spec: RunSpec) -> int:
    d = state_dir()
    if spec.detach:
        return _run_detached(d, spec)
    return _supervise(d, spec)


def cmd_run(argv: List[str]) -> int:
    return run_container(parse_run(argv))


# ---------------------------------------------------------------------------------------------
# stop, kill, rm
# ---------------------------------------------------------------------------------------------

def _signal_number(v: str) -> int:
    s = v.upper()
    if s.isdigit():
        return int(s)
    if not s.startswith("SIG"):
        s = "SIG" + s
    try:
        return int(getattr(signal, s))
    except AttributeError:
        raise DockerError(1, "Error response from daemon: Invalid signal: %s" % v) from None


def stop_container(name: str, timeout: Optional[int] = None, sig: Optional[str] = None,
                   d: Optional[str] = None) -> None:
    """``docker stop``: the stop signal (SIGTERM), then SIGKILL to the group after ``timeout``
    seconds (the container's --stop-timeout, else 10). Waits until the exit is recorded."""
    d = d or state_dir()
    st = container_state(name, d)
    if st is None:
        raise _no_such(name)
    if not _is_running(st):
        return
    if timeout is None:
        timeout = st.get("stop_timeout")
    if timeout is None:
        timeout = DEFAULT_STOP_TIMEOUT
    signum = _signal_number(sig or st.get("stop_signal") or "SIGTERM")
    with contextlib.suppress(ProcessLookupError):
        os.kill(st["pid"], signum)
    killed = False
    if not _wait_dead(st, timeout if timeout >= 0 else float("inf")):   # -1: no time limit
        killed = True
        _killpg(st["pgid"])
        _wait_dead(st, 10)
    _settle(d, st, exit_code=137 if killed else 0)


def kill_container(name: str, sig: str = "KILL", d: Optional[str] = None) -> None:
    d = d or state_dir()
    st = container_state(name, d)
    if st is None:
        raise _no_such(name)
    if not _is_running(st):
        raise DockerError(1, "Error response from daemon: cannot kill container: %s: container "
                             "%s is not running" % (name, st["id"]))
    signum = _signal_number(sig)
    if signum == signal.SIGKILL:
        _killpg(st["pgid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(st["pid"], signum)
    if signum == signal.SIGKILL:
        _wait_dead(st, 10)
        _settle(d, st, exit_code=137)


def remove_container(name: str, force: bool = False, d: Optional[str] = None) -> bool:
    """``docker rm [-f]``; False when there was no such container (only with ``force``)."""
    d = d or state_dir()
    st = container_state(name, d)
    if st is None:
        if force:
            return False
        raise _no_such(name)
    if _is_running(st):
        if not force:
            raise DockerError(1, 'Error response from daemon: cannot remove container "/%s": '
                                 'container is running: stop the container before removing or '
                                 'force remove' % name)
        _killpg(st["pgid"])
        with contextlib.suppress(ProcessLookupError):
            os.kill(st["pid"], signal.SIGKILL)
        _wait_dead(st, 10)
    with _locked(d):
        cur = _read(d, name)
        if cur is not None and cur.get("id") == st["id"]:
            _remove(d, name)
    return True


def _each(names: List[str], cmd: str, fn) -> int:
    if not names:
        raise DockerError(1, '"docker %s" requires at least 1 argument.%s' % (cmd, _see(cmd)))
    rc = 0
    for n in names:
        try:
            if fn(n) is not False:
                sys.stdout.write(n + "\n")
                sys.stdout.flush()
        except DockerError as e:
            sys.stderr.write(str(e) + "\n")
            rc = e.code
    return rc


def cmd_stop(argv: List[str]) -> int:
    opts, names = _parse(argv, "stop", _spellings("--time -t --timeout", "--signal -s"), {})
    t = _last(opts, "--time")
    timeout = _int(t, "--time") if t is not None else None
    sig = _last(opts, "--signal")
    return _each(names, "stop", lambda n: stop_container(n, timeout, sig))


def cmd_kill(argv: List[str]) -> int:
    opts, names = _parse(argv, "kill", _spellings("--signal -s"), {})
    sig = _last(opts, "--signal", "KILL")
    return _each(names, "kill", lambda n: kill_container(n, sig))


def cmd_rm(argv: List[str]) -> int:
    opts, names = _parse(argv, "rm", {}, _spellings("--force -f", "--volumes -v", "--link -l"))
    force = _truthy(_last(opts, "--force"))
    return _each(names, "rm", lambda n: remove_container(n, force))


# ---------------------------------------------------------------------------------------------
# ps, inspect, logs: views and a small Go-template subset ({{.A.B}}, {{json .X}}, table)
# ---------------------------------------------------------------------------------------------

def _ago(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return "%d seconds" % s
    if s < 120:
        return "About a minute"
    if s < 3600:
        return "%d minutes" % (s // 60)
    if s < 7200:
        return "About an hour"
    return "%d hours" % (s // 3600)


def _ports_text(st: Dict[str, Any]) -> str:
    if st.get("network") == "host":
        return ""
    return ", ".join("%s:%s->%s/tcp" % (ip, hp, cp) for ip, hp, cp in st.get("ports") or [])


def _ps_view(st: Dict[str, Any], no_trunc: bool = False) -> Dict[str, Any]:
    running = st.get("status") == "running"
    now = _now()
    if running:
        status = "Up " + _ago(now - (st.get("started_at") or now))
    else:
        status = "Exited (%s) %s ago" % (st.get("exit_code"),
                                        _ago(now - (st.get("finished_at") or now)))
    cmd = " ".join(shlex.quote(a) for a in st.get("args") or [])
    cmd = '"fake_engine.py%s"' % (" " + cmd if cmd else "")
    if not no_trunc and len(cmd) > 22:
        cmd = cmd[:19] + '…"'
    return {"ID": st["id"] if no_trunc else st["id"][:12], "Image": st.get("image", ""),
            "Command": cmd, "CreatedAt": time.strftime("%Y-%m-%d %H:%M:%S +0000 UTC",
                                                        time.gmtime(st.get("created") or now)),
            "RunningFor": _ago(now - (st.get("created") or now)) + " ago",
            "Ports": _ports_text(st), "State": "running" if running else "exited",
            "Status": status, "Names": st["name"], "Size": "0B",
            "Labels": ",".join("%s=%s" % kv for kv in sorted((st.get("labels") or {}).items())),
            "Mounts": ",".join(m[0] for m in st.get("mounts") or []),
            "Networks": st.get("network") or "bridge", "LocalVolumes": "0"}


def _inspect_view(st: Dict[str, Any]) -> Dict[str, Any]:
    running = st.get("status") == "running"
    argv = st.get("argv") or [""]
    bindings = {}
    for ip, hp, cp in st.get("ports") or []:
        bindings.setdefault("%d/tcp" % cp, []).append({"HostIp": ip, "HostPort": str(hp)})
    return {
        "Id": st["id"], "Created": _iso(st.get("created")), "Path": argv[0], "Args": argv[1:],
        "Name": "/" + st["name"],
        "State": {"Status": "running" if running else "exited", "Running": running,
                  "Paused": False, "Restarting": False, "OOMKilled": False, "Dead": False,
                  "Pid": st.get("pid") if running else 0,
                  "ExitCode": 0 if running else st.get("exit_code"), "Error": "",
                  "StartedAt": _iso(st.get("started_at")),
                  "FinishedAt": _iso(st.get("finished_at"))},
        "Image": "sha256:" + "0" * 64, "LogPath": _log_path(state_dir(), st["name"]),
        "Config": {"Hostname": st["id"][:12], "Image": st.get("image", ""),
                   "Env": ["%s=%s" % kv for kv in (st.get("container_env") or {}).items()],
                   "Cmd": st.get("args") or [], "Labels": st.get("labels") or {},
                   "StopSignal": st.get("stop_signal") or "SIGTERM",
                   "StopTimeout": st.get("stop_timeout")},
        "HostConfig": {"AutoRemove": bool(st.get("auto_remove")), "PortBindings": bindings,
                       "Binds": ["%s:%s:%s" % tuple(m) for m in st.get("mounts") or []],
                       "NetworkMode": st.get("network") or "bridge", "Gpus": st.get("gpus")},
        "Mounts": [{"Type": "bind", "Source": s, "Destination": t, "Mode": m, "RW": m != "ro"}
                   for s, t, m in st.get("mounts") or []],
        "NetworkSettings": {"Ports": bindings},
    }


_MISSING = object()


def _lookup(obj: Any, expr: str) -> Any:
    expr = expr.strip()
    if expr in (".", ""):
        return obj
    if not expr.startswith("."):
        raise DockerError(1, 'template: :1: function "%s" not defined' % expr.split()[0])
    cur = obj
    for part in expr[1:].split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return _MISSING
    return cur


def _go_text(v: Any) -> str:
    if v is _MISSING:
        return "<no value>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "<nil>"
    if isinstance(v, dict):
        return "map[%s]" % " ".join("%s:%s" % (k, _go_text(x)) for k, x in sorted(v.items()))
    if isinstance(v, list):
        return "[%s]" % " ".join(_go_text(x) for x in v)
    return str(v)


def render(fmt: str, obj: Any) -> str:
    """A Go-template subset: ``{{.A.B}}``, ``{{json .A}}``, ``{{json .}}``, ``\\t``/``\\n``."""
    fmt = fmt.replace("\\t", "\t").replace("\\n", "\n")

    def sub(m):
        expr = m.group(1).strip()
        if expr.startswith("json ") or expr == "json":
            v = _lookup(obj, expr[4:])
            return json.dumps(None if v is _MISSING else v, separators=(",", ":"))
        return _go_text(_lookup(obj, expr))

    return re.sub(r"\{\{-?\s*(.*?)\s*-?\}\}", sub, fmt)


_PS_HEADERS = {"ID": "CONTAINER ID", "Names": "NAMES", "Image": "IMAGE", "Command": "COMMAND",
               "CreatedAt": "CREATED AT", "RunningFor": "CREATED", "Ports": "PORTS",
               "State": "STATE", "Status": "STATUS", "Labels": "LABELS", "Mounts": "MOUNTS",
               "Networks": "NETWORKS", "Size": "SIZE"}


def _match_filters(st: Dict[str, Any], filters: List[str]) -> bool:
    by_key: Dict[str, List[str]] = {}
    for f in filters:
        k, _, v = f.partition("=")
        by_key.setdefault(k, []).append(v)
    view = _ps_view(st, True)
    for k, vals in by_key.items():
        if k == "name":
            ok = any(re.search(v, st["name"]) for v in vals)
        elif k == "id":
            ok = any(st["id"].startswith(v) for v in vals)
        elif k == "status":
            ok = view["State"] in vals
        elif k == "label":
            labels = st.get("labels") or {}
            ok = any((lk in labels) if not eq else labels.get(lk) == lv
                     for lk, eq, lv in (v.partition("=") for v in vals))
        elif k == "ancestor":
            ok = st.get("image") in vals
        else:
            raise DockerError(1, "Error response from daemon: invalid filter '%s'" % k)
        if not ok:
            return False
    return True


def cmd_ps(argv: List[str]) -> int:
    opts, pos = _parse(argv, "ps", _spellings("--filter -f", "--format", "--last -n"),
                       _spellings("--all -a", "--quiet -q", "--no-trunc", "--size -s",
                                  "--latest -l"))
    if pos:
        raise DockerError(1, '"docker ps" accepts no arguments.%s' % _see("ps"))
    show_all = _truthy(_last(opts, "--all"))
    filters = _all(opts, "--filter")
    if any(f.split("=", 1)[0] == "status" for f in filters):
        show_all = True
    no_trunc = _truthy(_last(opts, "--no-trunc"))
    rows = [s for s in containers(all=show_all) if _match_filters(s, filters)]
    rows.sort(key=lambda s: s.get("created") or 0, reverse=True)
    views = [_ps_view(s, no_trunc) for s in rows]
    fmt = _last(opts, "--format")
    out = sys.stdout
    if _truthy(_last(opts, "--quiet")):
        for v in views:
            out.write(v["ID"] + "\n")
    elif fmt and fmt != "table":
        if fmt.startswith("table "):
            fmt = fmt[6:]
            out.write(re.sub(r"\{\{\s*\.(\w+)\s*\}\}",
                             lambda m: _PS_HEADERS.get(m.group(1), m.group(1).upper()),
                             fmt.replace("\\t", "\t")) + "\n")
        for v in views:
            out.write(render(fmt, v) + "\n")
    else:
        cols = ["ID", "Image", "Command", "RunningFor", "Status", "Ports", "Names"]
        table = [[_PS_HEADERS[c] for c in cols]] + [[v[c] for c in cols] for v in views]
        widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
        for r in table:
            out.write("   ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")
    return 0


def cmd_inspect(argv: List[str], cmd: str = "inspect") -> int:
    opts, names = _parse(argv, cmd, _spellings("--format -f", "--type"),
                         _spellings("--size -s"))
    if not names:
        raise DockerError(1, '"docker %s" requires at least 1 argument.%s' % (cmd, _see(cmd)))
    kind = _last(opts, "--type")
    if kind not in (None, "container"):
        raise DockerError(1, "fake docker: unsupported command: inspect --type %s" % kind)
    fmt = _last(opts, "--format")
    found, missing = [], []
    for n in names:
        st = container_state(n)
        (found if st is not None else missing).append(_inspect_view(st) if st else n)
    if fmt:
        for v in found:
            sys.stdout.write(render(fmt, v) + "\n")
    else:
        sys.stdout.write(json.dumps(found, indent=4) + "\n")
    sys.stdout.flush()
    for n in missing:
        what = "container" if cmd == "container inspect" else "object"
        sys.stderr.write("Error: No such %s: %s\n" % (what, n))
    return 1 if missing else 0


def cmd_logs(argv: List[str]) -> int:
    opts, names = _parse(argv, "logs", _spellings("--tail -n", "--since", "--until"),
                         _spellings("--follow -f", "--timestamps -t", "--details"))
    if len(names) != 1:
        raise DockerError(1, '"docker logs" requires exactly 1 argument.%s' % _see("logs"))
    name = names[0]
    d = state_dir()
    st = container_state(name, d)
    if st is None:
        raise _no_such(name)
    follow = _truthy(_last(opts, "--follow"))
    tail = _last(opts, "--tail", "all")
    out = sys.stdout.buffer
    try:
        f = open(_log_path(d, name), "rb")
    except FileNotFoundError:
        return 0
    with f:
        data = f.read()
        if tail != "all":
            n = _int(tail, "--tail", 1)
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        out.write(data)
        out.flush()
        while follow:
            data = f.read()
            if data:
                out.write(data)
                out.flush()
                continue
            cur = _read(d, name)
            if cur is None or cur.get("id") != st["id"] or cur.get("status") != "running":
                out.write(f.read())
                break
            if not _engine_alive(cur):
                container_state(name, d)   # waits for its run process to record the exit
                continue
            time.sleep(0.05)
    out.flush()
    return 0


# ---------------------------------------------------------------------------------------------
# compose (JSON files: {"services": {NAME: {image, command, environment, ports, volumes, ...}}})
# ---------------------------------------------------------------------------------------------

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}"
                     r"|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value: Any, env: Dict[str, str], where: str = "") -> Any:
    """Compose's variable rules on every string in ``value``: ``$$``, ``$VAR``, ``${VAR}``,
    ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``,
    ``${VAR:+alt}`` and ``${VAR+alt}``. An unset variable becomes "" with a warning."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, where) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, where) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m):
        if m.group(0) == "$$":
            return "$"
        var = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        val = env.get(var)
        if op is None:
            if val is None:
                sys.stderr.write('WARN[0000] The "%s" variable is not set. Defaulting to a '
                                 'blank string.\n' % var)
                return ""
            return val
        unset = val is None or (op.startswith(":") and val == "")
        kind = op[-1]
        if kind == "-":
            return interpolate(arg, env, where) if unset else val
        if kind == "+":
            return "" if unset else interpolate(arg, env, where)
        if unset:   # "?"
            raise DockerError(1, "error while interpolating %s: required variable %s is missing "
                                 "a value: %s" % (where or "compose file", var, arg))
        return val

    return _VAR_RE.sub(sub, value)


def _dotenv(path: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        k, _, v = line.partition("=")
        k = k.strip()
        if k.startswith("export "):
            k = k[7:].strip()
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        out[k] = v
    return out


class Project:
    """A loaded compose project: name, directory, files and interpolated services."""

    def __init__(self, files: List[str], name: Optional[str], directory: Optional[str],
                 env_file: Optional[str], need_file: bool = True):
        if not files:
            env_files = os.environ.get("COMPOSE_FILE")
            sep = os.environ.get("COMPOSE_PATH_SEPARATOR", os.pathsep)
            files = [f for f in env_files.split(sep) if f] if env_files else ["compose.json"]
        self.files = [os.path.abspath(f) for f in files]
        self.directory = os.path.abspath(directory) if directory else os.path.dirname(
            self.files[0])
        env = _dotenv(env_file or os.path.join(self.directory, ".env"))
        env.update(os.environ)
        self.env = env
        services: Dict[str, Dict[str, Any]] = {}
        top_name = None
        for f in self.files:
            try:
                with open(f) as fh:
                    doc = json.load(fh)
            except FileNotFoundError:
                if not need_file and (name or os.environ.get("COMPOSE_PROJECT_NAME")):
                    continue   # stop/down by project name alone
                raise DockerError(1, "open %s: no such file or directory" % f) from None
            except ValueError as e:
                raise DockerError(1, "fake docker: %s: compose files must be JSON (the fake is "
                                     "stdlib-only): %s" % (f, e)) from None
            if not isinstance(doc, dict) or not isinstance(doc.get("services", {}), dict):
                raise DockerError(1, "fake docker: %s: want {\"services\": {...}}" % f)
            doc = interpolate(doc, env, f)
            top_name = doc.get("name") or top_name
            for sname, svc in (doc.get("services") or {}).items():
                if not isinstance(svc, dict):
                    raise DockerError(1, "fake docker: %s: service %s must be an object"
                                      % (f, sname))
                services.setdefault(sname, {}).update(svc)
        self.services = services
        raw = name or os.environ.get("COMPOSE_PROJECT_NAME") or top_name or os.path.basename(
            self.directory)
        self.name = re.sub(r"[^a-z0-9_-]", "", raw.lower()) or "default"

    def container_name(self, service: str) -> str:
        return self.services.get(service, {}).get("container_name") or "%s-%s-1" % (
            self.name, service)

    def spec(self, service: str, detach: bool) -> RunSpec:
        if service not in self.services:
            raise DockerError(1, "no such service: %s" % service)
        svc = self.services[service]
        spec = RunSpec()
        spec.cmd = "compose up"
        spec.name = self.container_name(service)
        spec.image = svc.get("image") or "%s-%s" % (self.name, service)
        cmd = svc.get("command") or []
        spec.args = shlex.split(cmd) if isinstance(cmd, str) else [str(a) for a in cmd]
        env_files = svc.get("env_file") or []
        for ef in [env_files] if isinstance(env_files, str) else env_files:
            ef = ef.get("path") if isinstance(ef, dict) else ef
            _read_env_file(os.path.join(self.directory, ef), spec.env)
        envs = svc.get("environment") or {}
        if isinstance(envs, dict):
            for k, v in envs.items():
                if v is None:
                    _add_env(spec.env, k)
                else:
                    spec.env[k] = _go_text(v) if isinstance(v, bool) else str(v)
        else:
            for item in envs:
                _add_env(spec.env, str(item))
        for p in svc.get("ports") or []:
            if isinstance(p, dict):
                ip = p.get("host_ip") or "127.0.0.1"
                pub = p.get("published")
                spec.ports.append((ip, int(pub) if pub not in (None, "") else None,
                                   int(p["target"])))
            else:
                spec.ports.append(_parse_port(str(p)))
        for v in svc.get("volumes") or []:
            if isinstance(v, dict):
                src, dst = v.get("source"), v.get("target")
                v = "%s:%s:%s" % (src, dst, "ro" if v.get("read_only") else "rw") if src else ""
            m = _parse_volume(str(v), base=self.directory) if v else None
            if m:
                spec.mounts.append(m)
        if svc.get("network_mode") == "host":
            spec.network = "host"
        grace = svc.get("stop_grace_period")
        if grace is not None:
            spec.stop_timeout = _duration(str(grace))
        if svc.get("stop_signal"):
            spec.stop_signal = str(svc["stop_signal"])
        labels = svc.get("labels") or {}
        if isinstance(labels, list):
            labels = dict(str(x).partition("=")[::2] for x in labels)
        spec.labels = {str(k): str(v) for k, v in labels.items()}
        spec.labels.update({"com.docker.compose.project": self.name,
                            "com.docker.compose.service": service,
                            "com.docker.compose.container-number": "1",
                            "com.docker.compose.project.config_files": ",".join(self.files),
                            "com.docker.compose.project.working_dir": self.directory})
        spec.rm = True
        spec.detach = detach
        return spec

    def containers(self) -> List[str]:
        return [s["name"] for s in containers()
                if (s.get("labels") or {}).get("com.docker.compose.project") == self.name]


def _duration(v: str) -> int:
    """Compose durations: ``10``, ``10s``, ``1m30s``, ``1.5s`` -> whole seconds (rounded up)."""
    if re.fullmatch(r"\d+", v):
        return int(v)
    total = 0.0
    for num, unit in re.findall(r"([\d.]+)(ms|us|h|m|s)", v):
        total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6}[unit]
    return int(-(-total // 1))


COMPOSE_VALUES = _spellings("--file -f", "--project-name -p", "--project-directory",
                            "--env-file", "--profile", "--ansi", "--progress", "--parallel")
COMPOSE_FLAGS = _spellings("--compatibility", "--dry-run", "--verbose")


def cmd_compose(argv: List[str]) -> int:
    # Global options come before the subcommand.
    i, gl = 0, []
    while i < len(argv) and argv[i].startswith("-"):
        a = argv[i]
        name = a.split("=", 1)[0]
        if name in COMPOSE_VALUES and "=" not in a and not (len(name) == 2 and len(a) > 2):
            gl += argv[i:i + 2]
            i += 2
        else:
            gl.append(a)
            i += 1
    opts, _ = _parse(gl, "compose", COMPOSE_VALUES, COMPOSE_FLAGS)
    if i >= len(argv):
        raise DockerError(1, "fake docker: unsupported command: compose (no subcommand)")
    sub, rest = argv[i], argv[i + 1:]
    if sub == "version":
        sys.stdout.write("Docker Compose version %s\n" % COMPOSE_VERSION)
        return 0
    if sub not in ("up", "stop", "down"):
        raise DockerError(1, "fake docker: unsupported command: compose %s" % sub)
    proj = Project(_all(opts, "--file"), _last(opts, "--project-name"),
                   _last(opts, "--project-directory"), _last(opts, "--env-file"),
                   need_file=sub == "up")
    if sub == "up":
        return _compose_up(proj, rest)
    if sub == "stop":
        o, services = _parse(rest, "compose stop", _spellings("--timeout -t"), {})
        t = _last(o, "--timeout")
        names = [proj.container_name(s) for s in services] if services else proj.containers()
        for n in names:
            if container_state(n) is not None:
                stop_container(n, _int(t, "--timeout") if t is not None else None)
                sys.stderr.write(" Container %s  Stopped\n" % n)
        return 0
    o, extra = _parse(rest, "compose down", _spellings("--timeout -t", "--rmi"),
                      _spellings("--volumes -v", "--remove-orphans"))
    if extra:
        raise DockerError(1, "fake docker: compose down takes no services")
    t = _last(o, "--timeout")
    for n in proj.containers():
        with contextlib.suppress(DockerError):
            stop_container(n, _int(t, "--timeout") if t is not None else None)
        remove_container(n, force=True)
        sys.stderr.write(" Container %s  Removed\n" % n)
    return 0


def _compose_up(proj: Project, argv: List[str]) -> int:
    opts, services = _parse(argv, "compose up",
                            _spellings("--timeout -t", "--pull", "--exit-code-from", "--scale",
                                       "--wait-timeout"),
                            _spellings("--detach -d", "--build", "--no-build", "--force-recreate",
                                       "--no-recreate", "--remove-orphans", "--no-deps",
                                       "--quiet-pull", "--wait", "--abort-on-container-exit",
                                       "--no-start", "--always-recreate-deps", "--no-color",
                                       "--no-log-prefix", "--renew-anon-volumes -V"))
    detach = _truthy(_last(opts, "--detach")) or _truthy(_last(opts, "--wait"))
    services = services or sorted(proj.services)
    for s in services:
        if s not in proj.services:
            raise DockerError(1, "no such service: %s" % s)
    if not detach and len(services) != 1:
        raise DockerError(1, "fake docker: compose up in the foreground runs one service; name "
                             "it, or use -d")
    rc = 0
    for s in services:
        name = proj.container_name(s)
        st = container_state(name)
        if _is_running(st):
            if not detach:
                raise DockerError(1, "fake docker: compose up: container %s is already running"
                                  % name)
            sys.stderr.write(" Container %s  Running\n" % name)
            continue
        if st is not None:
            remove_container(name, force=True)    # compose recreates a stopped container
        spec = proj.spec(s, detach)
        if detach:
            sys.stderr.write(" Container %s  Started\n" % name)
            sys.stderr.flush()
        else:
            sys.stderr.write("Attaching to %s\n" % name)
            sys.stderr.flush()
        r = run_container(spec)
        rc = rc or r
    return rc


# ---------------------------------------------------------------------------------------------
# version, info, pull; dispatch
# ---------------------------------------------------------------------------------------------

def cmd_version(argv: List[str]) -> int:
    opts, _ = _parse(argv, "version", _spellings("--format -f"), {})
    info = {"Client": {"Version": VERSION, "ApiVersion": API_VERSION, "Os": "linux",
                       "Arch": "amd64", "GitCommit": "fake", "Platform": {"Name": "fake docker"}},
            "Server": {"Version": VERSION, "ApiVersion": API_VERSION, "MinAPIVersion": "1.24",
                       "Os": "linux", "Arch": "amd64", "GitCommit": "fake",
                       "Platform": {"Name": "Fake Docker Engine (tests/support/fake_docker.py)"},
                       "Components": [{"Name": "Engine", "Version": VERSION}]}}
    fmt = _last(opts, "--format")
    if fmt:
        sys.stdout.write(render(fmt, info) + "\n")
        return 0
    sys.stdout.write("Client:\n Version:           %s\n API version:       %s\n OS/Arch:           "
                     "linux/amd64\n\nServer: %s\n Engine:\n  Version:          %s\n  API version:  "
                     "    %s (minimum version 1.24)\n" % (VERSION, API_VERSION,
                                                         info["Server"]["Platform"]["Name"],
                                                         VERSION, API_VERSION))
    return 0


def cmd_info(argv: List[str]) -> int:
    opts, _ = _parse(argv, "info", _spellings("--format -f"), {})
    d = state_dir()
    all_c = containers(d)
    running = sum(1 for s in all_c if s.get("status") == "running")
    info = {"ID": "fake", "Containers": len(all_c), "ContainersRunning": running,
            "ContainersPaused": 0, "ContainersStopped": len(all_c) - running, "Images": 0,
            "Driver": "fake", "DockerRootDir": d, "ServerVersion": VERSION, "OSType": "linux",
            "Architecture": "x86_64", "Name": socket.gethostname(),
            "Runtimes": {"runc": {"path": "runc"}, "nvidia": {"path": "nvidia-container-runtime"}},
            "DefaultRuntime": "runc"}
    fmt = _last(opts, "--format")
    if fmt:
        sys.stdout.write(render(fmt, info) + "\n")
        return 0
    sys.stdout.write("Client:\n Version:    %s\n Context:    default\n\nServer:\n Containers: %d\n"
                     "  Running: %d\n  Paused: 0\n  Stopped: %d\n Images: 0\n Server Version: "
                     "%s\n Storage Driver: fake\n Runtimes: nvidia runc\n Default Runtime: runc\n"
                     " Docker Root Dir: %s\n" % (VERSION, len(all_c), running,
                                                 len(all_c) - running, VERSION, d))
    return 0


def cmd_pull(argv: List[str]) -> int:
    _, pos = _parse(argv, "pull", _spellings("--platform"),
                    _spellings("--quiet -q", "--all-tags -a", "--disable-content-trust"))
    if len(pos) != 1:
        raise DockerError(1, '"docker pull" requires exactly 1 argument.%s' % _see("pull"))
    image = pos[0] if ":" in pos[0].rsplit("/", 1)[-1] or "@" in pos[0] else pos[0] + ":latest"
    sys.stdout.write("%s: Pulling from fake\nDigest: sha256:%s\nStatus: Image is up to date for "
                     "%s\n%s\n" % (image.split(":")[0], "0" * 64, image, image))
    return 0


COMMANDS = {"run": cmd_run, "stop": cmd_stop, "kill": cmd_kill, "rm": cmd_rm, "ps": cmd_ps,
            "inspect": cmd_inspect, "logs": cmd_logs, "compose": cmd_compose,
            "version": cmd_version, "info": cmd_info, "pull": cmd_pull}
CONTAINER_SUB = {"run": "run", "stop": "stop", "kill": "kill", "rm": "rm", "ls": "ps",
                 "list": "ps", "ps": "ps", "inspect": "inspect", "logs": "logs"}
GLOBAL_VALUES = {"--context", "-c", "--host", "-H", "--log-level", "-l", "--config"}
GLOBAL_FLAGS = {"--debug", "-D", "--tls", "--tlsverify"}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        while argv and argv[0].startswith("-"):
            a = argv.pop(0)
            if a in ("--version", "-v"):
                sys.stdout.write("Docker version %s, build fake\n" % VERSION)
                return 0
            if a in GLOBAL_VALUES and argv:
                argv.pop(0)
            elif a.split("=", 1)[0] not in GLOBAL_VALUES and a not in GLOBAL_FLAGS:
                raise DockerError(125, "unknown flag: %s\nSee 'docker --help'." % a)
        if not argv:
            sys.stdout.write("Usage:  docker [OPTIONS] COMMAND (fake docker: %s)\n"
                             % ", ".join(sorted(COMMANDS)))
            return 0
        cmd, rest = argv[0], argv[1:]
        if cmd == "container" and rest and rest[0] in CONTAINER_SUB:
            cmd, rest = CONTAINER_SUB[rest[0]], rest[1:]
            if cmd == "inspect":
                return cmd_inspect(rest, "container inspect")
        fn = COMMANDS.get(cmd)
        if fn is None:
            raise DockerError(1, "fake docker: unsupported command: %s"
                              % " ".join(shlex.quote(a) for a in argv[:2]))
        return fn(rest)
    except DockerError as e:
        sys.stdout.flush()
        sys.stderr.write(str(e) + "\n")
        return e.code
    except BrokenPipeError:
        return 141


if __name__ == "__main__":
    _rc = main()
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    # Skip interpreter teardown: tee threads may still hold a pipe.
    os._exit(_rc)
