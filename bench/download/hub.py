#!/usr/bin/python3
"""tests/support/fake_hf_hub.py as a program (same flags), with TCP_NODELAY on every connection.

The fake Hub writes a response's headers and its body in separate send()s. Without TCP_NODELAY,
Nagle's algorithm holds the second write until the client acknowledges the first, and the client
delays that ACK (40 ms on Linux): every small response and every 302 of a kept-alive connection
then takes about 40 ms. That is the fake Hub's latency, not anybody's throughput, so the benchmark
turns it off; run.sh with HUB_NODELAY=0 runs the Hub as it is.
"""

import os
import socket
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                "tests", "support"))
import fake_hf_hub as fh  # noqa: E402

_setup = fh._Handler.setup  # pylint: disable=protected-access


def _setup_nodelay(self):
    _setup(self)
    self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


fh._Handler.setup = _setup_nodelay  # pylint: disable=protected-access

if __name__ == "__main__":
    sys.exit(fh.main())
