"""Striped downloads: a pinned commit that other online nodes already hold is fetched from all of
them at once.

Three nodes (node-a, node-b, node-c) hold big-model at its pinned commit; node-d then downloads
the same commit. The host sends node-d the first holder's data-port URL plus the others
(PeersHolding orders them by node id, so node-a is the first); node-d fetches the small files
whole from node-a and the big weights file (BIG_FILE_MB MiB, over the 64 MiB stripe threshold)
as 16 MiB ranges over node-a, node-b and node-c, one connection each, with the fake Hub behind
them for ranges no peer is left to serve.

- Three peers: the download succeeds, the files are the Hub's, every byte came from peers
  (bytes_from_peers, nothing from the Hub: the fake hub sees no request), node-d's log says it
  striped over the first peer "and 2 more", and GET /metrics has
  gswarm_download_bytes_total{source="peer"|"hub"} with the jobs' figures.
- A peer dies mid-transfer: node-c is frozen (SIGSTOP) before node-d's download starts, so its
  connection takes one range and hangs; once node-d's `.stripes.done` record shows every other
  range done (by node-a and node-b), node-c is killed (kill -9). Its range's connection is cut,
  node-a or node-b fetches the range, and the download succeeds with the Hub's bytes, none of
  them from the Hub. node-c's connection may try once more, be refused and have node-c dropped,
  or find nothing left to fetch, so the "dropping" line is not asserted here. (A frozen peer on
  its own would only be cut by the 60 s stall detector, HubOptions.low_speed_time, which no
  setting shortens: hence freeze, then kill.)
- Every peer dies mid-transfer: node-b and node-c are frozen, and once node-a has fetched every
  range it can, all three are killed: every peer is dropped and the Hub serves exactly the
  ranges that were left (bytes_from_hub), the rest counting as bytes_from_peers.

Frozen source agents heartbeat every FROZEN_HEARTBEAT_S, so the host still counts them online
(and as holders) when node-d's download is planned.

Run: cd tests/integration && GSWARM_BIN=../../build/cli/gswarm \
     GSWARM_PYTHON_STUBS=../../build/python /usr/bin/python3 -m unittest -v test_striped_download
"""

import json
import re
import signal
import unittest

from gswarm_harness import (
    BIG_FILE_MB, JOB_TIMEOUT_S, TierTestCase, free_port, u64, wait_until)

MiB = 1024 * 1024
BIG_MODEL = "test-org/big-model"
BIG_FILE = "model.safetensors"
NAME = "big"
SOURCES = ("node-a", "node-b", "node-c")
TARGET = "node-d"
# DownloadRequest's defaults: files from this size on are striped, in ranges of this size.
STRIPE_MIN_BYTES = 64 * MiB
STRIPE_CHUNK_BYTES = 16 * MiB
# A frozen agent misses three heartbeats before the host calls it offline: 15 s at this interval.
FROZEN_HEARTBEAT_S = 5.0
METRIC = re.compile(r'^gswarm_download_bytes_total\{source="([^"]*)"\} (\S+)$', re.MULTILINE)


def job_u64(job, name):
    """A uint64 field of a job in either JSON spelling (bytes_from_hub or bytesFromHub)."""
    camel = re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)
    return u64(job.get(name, job.get(camel)))


class StripedDownloadTest(TierTestCase):
    """Four nodes on loopback: three holders of big-model's pinned commit and node-d."""

    hub_big_file_mb = BIG_FILE_MB  # 100 MiB: seven ranges, the last one short

    def setUp(self):
        super().setUp()
        self.data_urls = {}

    def start_cluster(self, frozen=()):
        """Host, node-a..node-d (the nodes in `frozen` heartbeat slowly), big-model's pinned commit
        on node-a, node-b and node-c. Returns (source URL, host, {node: agent}, [their jobs])."""
        self.assertGreaterEqual(self.hub_big_file_mb * MiB, STRIPE_MIN_BYTES)
        self.make_host_home()
        host = self.start_host()
        agents = {}
        for nid in (*SOURCES, TARGET):
            port = free_port()
            self.data_urls[nid] = f"http://127.0.0.1:{port}"
            extra = {"heartbeat_interval_s": FROZEN_HEARTBEAT_S} if nid in frozen else {}
            self.make_agent_home(nid, data_port=port, **extra)
            agents[nid] = self.start_agent(nid, env_extra=self.hub_env())
        for nid, agent in agents.items():
            self.wait_node(nid, "online", procs=[host, agent])

        source = f"hf://{BIG_MODEL}@{self.hub.commit(BIG_MODEL, 'main')}"
        jobs = [self.download_ok(NAME, source, node="node-a", timeout=JOB_TIMEOUT_S)]
        # node-b and node-c at once (from node-a's data port, as the host sees fit).
        started = []
        for nid in ("node-b", "node-c"):
            r = self.download(NAME, source, node=nid, wait=False)
            self.assertEqual(r.status, 200, r)
            started.append(r.json["job"]["id"])
        for job_id in started:
            jobs.append(self.wait_job(job_id, procs=[host, *agents.values()]))
        jobs = [self.get_job(job["id"]) for job in jobs]
        for job in jobs:
            self.assertEqual(job.get("state"), "succeeded", json.dumps(job))
        self.assertEqual(self.holders(), set(SOURCES))
        return source, host, agents, jobs

    def holders(self):
        model = self.get_model(NAME) or {}
        return {r.get("node_id") for r in model.get("replicas", [])
                if r.get("tier") == "disk" and r.get("state") == "ready"}

    def big_size(self):
        return self.repo(BIG_MODEL).files()[BIG_FILE]["size"]

    def total_size(self):
        return sum(e["size"] for e in self.repo(BIG_MODEL).files().values())

    def chunk_lengths(self):
        size = self.big_size()
        return [min(STRIPE_CHUNK_BYTES, size - off) for off in range(0, size, STRIPE_CHUNK_BYTES)]

    def stripes_record(self):
        """node-d's record of the big file's finished ranges ('0' to do, '1' done); None while it
        has none."""
        path = f"{self.staging_dir(TARGET, NAME)}/{BIG_FILE}.stripes.done"
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def start_target_download(self, source):
        self.hub.reset_stats()
        r = self.download(NAME, source, node=TARGET, wait=False)
        self.assertEqual(r.status, 200, r)
        return r.json["job"]["id"]

    def wait_ranges_left(self, job_id, left, procs):
        """Waits until node-d's record shows exactly `left` ranges still to do; returns the record.
        Fails at once if the job ends first."""
        def check():
            job = self.get_job(job_id)
            if job.get("state") in ("succeeded", "failed", "cancelled"):
                return ("ended", job)
            record = self.stripes_record()
            return ("record", record) if record is not None and record.count("0") == left else None

        def state():
            return f"record {self.stripes_record()!r}, job {json.dumps(self.get_job(job_id))}"
        kind, value = wait_until(check, JOB_TIMEOUT_S, f"{left} ranges left in node-d's record",
                                 procs=procs, describe=state)
        if kind == "ended":
            self.fail(f"node-d's job ended before {left} ranges were left: {json.dumps(value)}")
        return value

    def assert_target_copy(self, job):
        self.assertEqual(job.get("state"), "succeeded", json.dumps(job))
        self.assertEqual(job.get("node_id"), TARGET, json.dumps(job))
        self.assert_same_files(self.model_dir(TARGET, NAME), self.repo(BIG_MODEL).files())
        self.assertIn(TARGET, self.holders())

    def target_log(self, agents):
        return agents[TARGET].log()

    def assert_striped_over_three(self, log):
        a = re.escape(self.data_urls["node-a"])
        self.assertRegex(log, rf"download {NAME} from peer {a} and 2 more",
                         "node-d stripes over node-a and 2 more peers")
        self.assertNotIn("trying the source", log,
                         "the download from peers must not fail over to a whole Hub download")

    def assert_dropped(self, log, nid):
        url = re.escape(self.data_urls[nid])
        # "model.safetensors: dropping a source: peer URL: why; ..." (or "dropping peer URL (why)")
        self.assertRegex(log, rf"{re.escape(BIG_FILE)}: dropping (?:a source: )?peer {url}\b",
                         f"node-d's log says it dropped {nid}")

    def download_bytes_metric(self):
        r = self.rest("GET", "/metrics", token=self.api_token())
        self.assertEqual(r.status, 200, r)
        return {src: float(v) for src, v in METRIC.findall(r.text)}

    # ---- the tests --------------------------------------------------------------------------

    def test_held_commit_is_striped_over_three_peers(self):
        source, host, agents, jobs = self.start_cluster()
        procs = [host, *agents.values()]
        job_id = self.start_target_download(source)
        job = self.get_job(self.wait_job(job_id, procs=procs)["id"])
        self.assert_target_copy(job)

        stats = self.hub.stats()
        self.assertEqual(stats["requests_total"], 0,
                         f"node-d's copy of a held commit comes from peers: {stats['log'][-5:]}")
        self.assertGreaterEqual(job_u64(job, "bytes_from_peers"), self.big_size(), json.dumps(job))
        self.assertEqual(job_u64(job, "bytes_from_hub"), 0, json.dumps(job))
        self.assert_striped_over_three(self.target_log(agents))
        self.assertNotRegex(self.target_log(agents), r": dropping ", "no peer was dropped")
        self.assertRegex(host.log(), rf"download {NAME}: commit [0-9a-f]{{40}} comes from 3 peers")

        jobs.append(job)
        want = {"hub": float(sum(job_u64(j, "bytes_from_hub") for j in jobs)),
                "peer": float(sum(job_u64(j, "bytes_from_peers") for j in jobs))}
        self.assertGreaterEqual(want["hub"], self.total_size(), "node-a's copy came from the Hub")
        wait_until(lambda: self.download_bytes_metric() == want, 10,
                   f"gswarm_download_bytes_total to be {want}",
                   describe=self.download_bytes_metric)

    def test_peer_killed_mid_transfer(self):
        source, host, agents, _ = self.start_cluster(frozen=("node-c",))
        agents["node-c"].send_signal(signal.SIGSTOP)
        job_id = self.start_target_download(source)
        # node-c's connection holds one range and hangs; node-a and node-b fetch all the others.
        record = self.wait_ranges_left(job_id, 1, [host, agents["node-a"], agents["node-b"],
                                                   agents[TARGET]])
        self.assertEqual(len(record), len(self.chunk_lengths()), record)
        agents["node-c"].kill()

        job = self.get_job(self.wait_job(job_id, procs=[host, agents[TARGET]])["id"])
        self.assert_target_copy(job)
        # node-c's range was cut by the kill and fetched again by node-a or node-b. node-c is
        # dropped only if its connection is refused once more before the others finish; that
        # "dropping peer" line is not always there.
        self.assert_striped_over_three(self.target_log(agents))
        self.assertEqual(job_u64(job, "bytes_from_hub"), 0,
                         f"node-a and node-b were left for node-c's range: {json.dumps(job)}")
        self.assertGreaterEqual(job_u64(job, "bytes_from_peers"), self.big_size(), json.dumps(job))
        stats = self.hub.stats()
        self.assertEqual(stats["requests_total"], 0, stats["log"][-5:])

    def test_every_peer_killed_mid_transfer_the_hub_finishes(self):
        source, host, agents, _ = self.start_cluster(frozen=("node-b", "node-c"))
        for nid in ("node-b", "node-c"):
            agents[nid].send_signal(signal.SIGSTOP)
        job_id = self.start_target_download(source)
        # node-b's and node-c's connections hold a range each; node-a fetches all the others.
        record = self.wait_ranges_left(job_id, 2, [host, agents["node-a"], agents[TARGET]])
        left = sum(n for n, done in zip(self.chunk_lengths(), record) if done == "0")
        for nid in SOURCES:
            agents[nid].kill()

        job = self.get_job(self.wait_job(job_id, procs=[host, agents[TARGET]])["id"])
        self.assert_target_copy(job)
        log = self.target_log(agents)
        self.assert_striped_over_three(log)
        for nid in SOURCES:
            self.assert_dropped(log, nid)
        self.assertEqual(job_u64(job, "bytes_from_hub"), left,
                         f"the Hub serves the {record.count('0')} ranges left {record!r}: "
                         f"{json.dumps(job)}")
        self.assertEqual(job_u64(job, "bytes_from_peers"), self.total_size() - left,
                         json.dumps(job))
        stats = self.hub.stats()
        self.assertEqual(stats["bytes_per_file"].get(f"{BIG_MODEL}/{BIG_FILE}", 0), left,
                         stats["bytes_per_file"])


if __name__ == "__main__":
    unittest.main()
