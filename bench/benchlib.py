"""Helpers shared by the benchmarks' measure.py scripts (bench/*/measure.py), which import it by
putting their own directory's parent on sys.path. Call set_name() first: log() and run() prefix
their messages with "NAME bench:"."""

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
RUN_TIMEOUT_S = 300  # one run of a tool
_name = "bench"


def set_name(name: str) -> None:
    global _name
    _name = name


def log(msg: str) -> None:
    sys.stderr.write("%s bench: %s\n" % (_name, msg))
    sys.stderr.flush()


# ---- probes -------------------------------------------------------------------------------------

def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all its threads) in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat(5)


def proc_user_sys(pid: int) -> tuple:
    """(utime, stime) of a process in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def machine_busy() -> float:
    """CPU seconds all cores spent not idle (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / TICK


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---- running tools ------------------------------------------------------------------------------

def run(argv, log_path: str, timeout_s: float = RUN_TIMEOUT_S):
    """Runs argv; returns (exit code, wall s, CPU s of it and its children). Bounded by timeout_s:
    a timer kills it then (the wait itself blocks, so measuring costs no CPU)."""
    with open(log_path, "ab") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        killed = threading.Event()
        lock = threading.Lock()
        exited = False

        def kill():
            with lock:
                if not exited:  # not reaped yet: the pid is still ours
                    killed.set()
                    os.kill(proc.pid, signal.SIGKILL)

        timer = threading.Timer(timeout_s, kill)
        timer.start()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
        with lock:
            exited = True
        timer.cancel()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.monotonic() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if killed.is_set():
            log("%s ran past %d s and was killed" % (argv[0], timeout_s))
            return 124, wall, ru.ru_utime + ru.ru_stime
        return proc.returncode, wall, ru.ru_utime + ru.ru_stime


def tail(path: str, n: int = 20) -> str:
    try:
        with open(path, "rb") as f:
            return b"".join(f.read().splitlines(True)[-n:]).decode(errors="replace")
    except OSError:
        return ""


# ---- the report ---------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def git_state() -> str:
    """HEAD of the checkout this script is in, with "+uncommitted" when the tree differs."""
    here = os.path.dirname(os.path.abspath(__file__))
    head = first_line(["git", "-C", here, "rev-parse", "--short", "HEAD"])
    try:
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        dirty = ""
    return head + ("+uncommitted" if dirty else "")


def first_line(argv) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip() \
            .splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def aligned(cols, rows, left: int = 2) -> list:
    """A plain-text table: the header and each row, columns padded to their widest cell, the
    first `left` columns left-aligned and the rest right-aligned."""
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]

    def line(row):
        return "  ".join(v.ljust(w) if i < left else v.rjust(w)
                         for i, (v, w) in enumerate(zip(row, widths)))
    return [line(cols)] + [line(row) for row in rows]


def versions_line(v: dict) -> str:
    """gswarm's version, build and source, and curl's, as the benchmarks print them."""
    return "%s (%s, built %s, source %s); %s" % (
        v["gswarm"], v["build_type"] or "?", v["gswarm_built_utc"], v["source"], v["curl"])


def emit(report: dict, text: str, as_json: bool, indent: int = 2) -> int:
    """The table on stdout, or JSON on stdout and the table on stderr; returns 0."""
    if as_json:
        sys.stderr.write(text)
        json.dump(report, sys.stdout, indent=indent)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(text)
    return 0
