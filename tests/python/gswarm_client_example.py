#!/usr/bin/python3
"""How to drive GSwarm from Python: connect to the host's gRPC API, ask for its health and its
nodes, print them.

    /usr/bin/python3 gswarm_client_example.py --host 127.0.0.1:8101 [--token TOKEN]

Needs grpcio and protobuf (Debian: python3-grpcio python3-protobuf) and the stubs generated from
proto/gswarm/v1/*.proto, which the build writes to build/python (point GSWARM_PYTHON_STUBS there,
or generate your own with `python3 -m grpc_tools.protoc -Iproto --python_out=OUT
--grpc_python_out=OUT proto/gswarm/v1/*.proto`).

The host address comes from --host, else $GSWARM_HOST, else 127.0.0.1:8101. The token comes from
--token, else $GSWARM_TOKEN, else ~/.cache/gswarm/token (the file a host listening beyond
loopback generates), else none.
"""

import argparse
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_STUB_DIRS = [os.environ.get("GSWARM_PYTHON_STUBS", ""),
              os.path.join(_HERE, "..", "..", "build", "python")]


def _import_stubs():
    for d in _STUB_DIRS:
        if d and os.path.isdir(os.path.join(d, "gswarm")):
            if d not in sys.path:
                sys.path.insert(0, d)
            break
    try:
        import grpc
        from gswarm.v1 import api_pb2, api_pb2_grpc
    except ImportError as e:
        sys.exit(f"error: {e}; install python3-grpcio and python3-protobuf and set "
                 "GSWARM_PYTHON_STUBS to the directory holding gswarm/v1/api_pb2.py")
    return grpc, api_pb2, api_pb2_grpc


def _default_token():
    if os.environ.get("GSWARM_TOKEN"):
        return os.environ["GSWARM_TOKEN"]
    path = os.path.join(os.path.expanduser("~"), ".cache", "gswarm", "token")
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _gib(value):
    return f"{value / 2**30:.1f} GiB"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("GSWARM_HOST", "127.0.0.1:8101"),
                        help="the host's gRPC address, host:port (env GSWARM_HOST)")
    parser.add_argument("--token", default=None,
                        help="bearer token (env GSWARM_TOKEN, then ~/.cache/gswarm/token)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per call")
    args = parser.parse_args(argv)
    token = args.token or _default_token()

    grpc, api_pb2, api_pb2_grpc = _import_stubs()
    # Every call carries the token as `authorization: Bearer <token>` metadata.
    metadata = [("authorization", f"Bearer {token}")] if token else None

    # The host is on the local network: do not send its traffic through an HTTP proxy.
    with grpc.insecure_channel(args.host, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = api_pb2_grpc.GSwarmStub(channel)
        try:
            health = stub.Health(api_pb2.HealthRequest(), metadata=metadata,
                                 timeout=args.timeout)
            nodes = stub.ListNodes(api_pb2.ListNodesRequest(), metadata=metadata,
                                   timeout=args.timeout)
        except grpc.RpcError as e:
            print(f"error: {args.host}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1

    print(f"host {args.host}: {health.status}, version {health.version}, "
          f"up {health.uptime_s:.0f} s, nodes {health.nodes_online}/{health.nodes_total} online, "
          f"auth {'required' if health.auth_required else 'off'}")
    print(f"{'NODE':<20} {'STATE':<8} {'CPUS':>4} {'DRAM TOTAL':>11} {'DRAM FREE':>11} "
          f"{'DISK FREE':>11} {'GPUS':>4}")
    for node in nodes.nodes:
        m = node.memory
        print(f"{node.node_id:<20} {node.state:<8} {node.cpu_cores:>4} "
              f"{_gib(m.dram_total_bytes):>11} {_gib(m.dram_available_bytes):>11} "
              f"{_gib(m.disk_free_bytes):>11} {len(node.gpus):>4}")
    if not nodes.nodes:
        print("(no nodes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
