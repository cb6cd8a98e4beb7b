#!/usr/bin/python3
"""Generates the repos bench/download/run.sh measures, in the fake Hub's store format.

  /usr/bin/python3 bench/download/make_repo.py --root DIR --big-file-mb 512 \
      --shards 8 --shard-mb 64 --out repos.json

Writes the fake Hub's standard repos into DIR (test-org/big-model: one safetensors file of
--big-file-mb MiB) plus bench-org/sharded-model: config.json, a safetensors index and --shards
safetensors shards of --shard-mb MiB each (bf16, pseudo-random, every MiB different). Both are
reused when DIR already holds them with the same sizes. --out gets, per measured repo, its commit
and every file with its size and sha256 (the list curl fetches and sha256sum checks).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "support"))
import fake_hf_hub as fh  # noqa: E402

SHARDED_MODEL = "bench-org/sharded-model"
_BENCH_VERSION = 1  # bump when the sharded repo's layout changes: caches regenerate
_HIDDEN = 4096


def build_sharded(root: str, shards: int, shard_mb: int) -> fh.RepoInfo:
    gen = {"bench": _BENCH_VERSION, "shards": shards, "shard_mb": shard_mb}
    repo = fh.load_repo(root, SHARDED_MODEL)
    if fh._repo_intact(root, repo, gen):  # pylint: disable=protected-access
        return repo
    rows = max(1, shard_mb) * fh.MiB // (2 * _HIDDEN)  # bf16 [rows, hidden]: shard_mb MiB of data
    names = ["model-%05d-of-%05d.safetensors" % (i + 1, shards) for i in range(shards)]
    files = {}
    weight_map = {}
    total = 0
    for i, name in enumerate(names):
        tensor = "model.layers.%d.mlp.weight" % i
        files[name] = fh.make_safetensors(
            [(tensor, "BF16", [rows, _HIDDEN], "%s:%d" % (SHARDED_MODEL, i))])
        weight_map[tensor] = name
        total += 2 * rows * _HIDDEN
    files["model.safetensors.index.json"] = {"metadata": {"total_size": total},
                                             "weight_map": weight_map}
    files["config.json"] = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": _HIDDEN,
        "intermediate_size": rows, "num_hidden_layers": shards, "num_attention_heads": 32,
        "num_key_value_heads": 32, "vocab_size": 32000, "max_position_embeddings": 4096,
        "torch_dtype": "bfloat16"}
    files[".gitattributes"] = "*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    return fh.write_repo(root, SHARDED_MODEL, [{"files": files, "message": "Add sharded model"}],
                         info={"library_name": "transformers",
                               "tags": ["transformers", "safetensors", "llama"]},
                         generator=gen)


def describe(repo: fh.RepoInfo) -> dict:
    files = [{"path": p, "size": e["size"], "sha256": e["sha256"], "lfs": bool(e["lfs"]),
              "blob": os.path.join(repo.root, "blobs", e["sha256"])}
             for p, e in sorted(repo.files("main").items())]
    return {"repo": repo.id, "commit": repo.main, "files": files,
            "bytes": sum(f["size"] for f in files)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", required=True)
    p.add_argument("--big-file-mb", type=int, default=512)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--shard-mb", type=int, default=64)
    p.add_argument("--out", required=True, help="JSON description of the measured repos")
    args = p.parse_args()
    if args.big_file_mb < 1 or args.shards < 1 or args.shard_mb < 1:
        p.error("sizes and counts must be at least 1")
    t = time.monotonic()
    root = os.path.abspath(args.root)
    standard = fh.build_standard_repos(root, args.big_file_mb)
    sharded = build_sharded(root, args.shards, args.shard_mb)
    out = {
        "single": dict(describe(standard[fh.BIG_MODEL]),
                       label="1 file x %d MiB" % args.big_file_mb),
        "multi": dict(describe(sharded),
                      label="%d shards x %d MiB" % (args.shards, args.shard_mb)),
        # Not measured by default (run.sh --shapes tiny): a few MB, so mostly per-download cost.
        "tiny": dict(describe(standard[fh.TINY_LLAMA]), label="tiny-llama (small files)"),
    }
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, args.out)
    sys.stderr.write("make_repo: repos ready in %.1f s under %s\n" % (time.monotonic() - t, root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
