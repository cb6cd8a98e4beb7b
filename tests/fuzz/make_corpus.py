#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpora into tests/fuzz/corpus/<target>/ (committed; run again
only to change them). Seeds are small real inputs: files the fake hub serves, a Hub listing,
the default config, OpenAI bodies, engine answers, names and engine templates.

Run: python3 tests/fuzz/make_corpus.py
"""

import json
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "support"))
import fake_hf_hub as hub  # noqa: E402


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


def generated(content):
    return b"".join(content.make_chunks()) if isinstance(content, hub._Generated) else content


def main():
    kvs = [("general.architecture", hub.GGUF_STRING, "llama"),
           ("general.name", hub.GGUF_STRING, "tiny"),
           ("llama.context_length", hub.GGUF_UINT32, 2048),
           ("llama.block_count", hub.GGUF_UINT32, 1),
           ("llama.embedding_length", hub.GGUF_UINT32, 32)]
    tensors = [("token_embd.weight", [32, 16], hub.GGML_TYPE_F32, "e"),
               ("output_norm.weight", [32], hub.GGML_TYPE_F32, "n")]
    write("gguf", "tiny.gguf", hub.make_gguf(kvs, tensors))
    write("gguf", "no_tensors.gguf", hub.make_gguf(kvs[:1], []))
    st = generated(hub.make_safetensors([("w", "F16", [4, 4], "w"), ("b", "F32", [4], "b")]))
    write("safetensors", "two_tensors.safetensors", st)
    write("safetensors", "header_only", st[:8 + struct.unpack("<Q", st[:8])[0]])

    write("model_metadata", "llama_config.json", json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 2048,
        "num_hidden_layers": 22, "vocab_size": 32000, "max_position_embeddings": 2048,
        "torch_dtype": "bfloat16"}))
    write("model_metadata", "index.json", json.dumps({
        "metadata": {"total_size": 100}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                                         "b": "model-00002-of-00002.safetensors"}}))

    gswarm = os.environ.get("GSWARM_BIN", os.path.join(HERE, "..", "..", "build", "cli", "gswarm"))
    try:
        # `gswarm config` in an empty HOME: the effective config is the defaults.
        with tempfile.TemporaryDirectory() as home:
            default = subprocess.run([gswarm, "config"], capture_output=True, text=True,
                                     timeout=20, env={"HOME": home, "PATH": "/usr/bin:/bin"}).stdout
    except OSError:
        default = ""
    write("config", "default.yaml", default or "host:\n  port: 8100\nclient:\n  node_id: a\n")
    write("config", "engines.yaml", (
        "client:\n  default_engine: mine\n  cpu_memory_budget: 5\n  engines:\n    mine:\n"
        "      command: [\"srv\", \"--model\", \"{model_path}\", \"--port\", \"{port}\"]\n"
        "      memory_factor: 1.1\n      sleep: [\"POST /sleep?level={sleep_level}\"]\n"
        "      wake: [\"POST /wake_up\"]\n      env: {A: \"{model_name}\"}\n"))

    write("request_body", "chat.json", json.dumps({
        "model": "llama", "stream": True, "keep_alive": "5m",
        "messages": [{"role": "user", "content": "hi \u00e9 \\\" there"}], "max_tokens": 4}))
    write("request_body", "completion.json", '{"prompt":"x","model":null,"n":[1,{"a":2}]}')

    write("upstream_http", "chunked", (
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        "1a\r\ndata: {\"choices\":[1]}\n\n\r\n0\r\n\r\n"))
    write("upstream_http", "length", (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 11\r\nConnection: close\r\n\r\n"
        "not ready\r\n"))

    write("hub_listing", "listing.json", json.dumps({
        "id": "org/m", "sha": "a" * 40, "gated": False, "siblings": [
            {"rfilename": "config.json", "size": 12, "blobId": "b" * 40},
            {"rfilename": "model.safetensors", "blobId": "c" * 40, "size": 100,
             "lfs": {"sha256": "D" * 64, "size": 100, "pointerSize": 130}}]}))
    write("hub_listing", "gated.json", '{"sha":"x","gated":"manual","siblings":[]}')

    for i, text in enumerate(["llama-3-8b", "hf://meta-llama/Llama-3-8B\nmain",
                              "https://example.com/m.gguf", "file:///models/x\n",
                              "org/repo@" + "a" * 40, "sub/dir/../file.bin"]):
        write("names", "seed%d" % i, text)

    for i, text in enumerate([
            "vllm serve {model_path} --served-model-name {model_name} --port {port}",
            "docker run --rm --name gswarm-{instance_id} -p {host}:{port}:8000 img\n-rf",
            "srv \"--cfg={{\\\"a\\\": {port}}}\" --gpu {gpu}\n--x=y",
            "POST /sleep?level={sleep_level}\nname with spaces"]):
        write("engine_template", "seed%d" % i, text)

    for i, (kind, body) in enumerate([
            (0, {"model_name": "qwen-3b", "hf_path": "Qwen/Qwen2.5-3B-Instruct",
                 "cache_location": "primary", "estimated_size_mb": 6000}),
            (1, {"model_name": "m", "source_url": "hf://org/m", "wait": True}),
            (2, {"model_name": "m", "source_device": "disk", "target_device": "dram"}),
            (3, {"model_name": "m", "gpu_device": "cpu", "extra_args": ["--ctx-size", "4096"]}),
            (5, {"model_name": "m", "download": True}),
            (7, {"model": "m", "node": "a"})]):
        write("rest_json", "seed%d" % i, bytes([kind]) + json.dumps(body).encode())


if __name__ == "__main__":
    main()
