"""py-snoop: a hostile Python rule.

componentize-py (without `--stub-wasi`) imports all of WASI, sockets
included. This fixture tries every way out CPython offers: files, the
environment, arguments, TCP to a listener the test opens (its port comes in
the rule config), UDP, and name lookup. Each attempt is logged. It returns
no intents when it got nothing, and a rule error starting with `LEAK`
otherwise.
"""

import json
import os
import socket
import sys
from typing import List, Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import log
from wit_world.imports.types import Alert, OrderIntent, Portfolio, RuleError_Internal


def attempt(what, f, leaks):
    try:
        got = f()
    except BaseException as e:  # noqa: BLE001 - every failure is the expected outcome
        log.write(log.Level.INFO, f"{what}: refused ({type(e).__name__}: {e})")
        return
    if got:
        leaks.append(f"{what}: {got!r}"[:200])
    log.write(log.Level.INFO, f"{what}: got {got!r}"[:200])


def read_file(path):
    with open(path, "rb") as f:
        return f.read(64)


def tcp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(0.2)
    s.connect(("127.0.0.1", port))
    return "connected"


def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return s.sendto(b"leak", ("127.0.0.1", port))


class WitWorld(wit_world.WitWorld):
    def evaluate(self, alert: Alert, config: str, portfolio: Optional[Portfolio]) -> List[OrderIntent]:
        port = int(json.loads(config or "{}").get("port", 9))
        leaks = []
        attempt("read /etc/passwd", lambda: read_file("/etc/passwd"), leaks)
        attempt("list /", lambda: os.listdir("/"), leaks)
        attempt("list .", lambda: os.listdir("."), leaks)
        attempt("write /tmp/algobanana-py-snoop", lambda: open("/tmp/algobanana-py-snoop", "w").write("x"), leaks)
        attempt("environ", lambda: dict(os.environ), leaks)
        attempt("argv", lambda: [a for a in sys.argv if a], leaks)
        attempt("tcp", lambda: tcp(port), leaks)
        attempt("udp", lambda: udp(port), leaks)
        attempt("getaddrinfo", lambda: socket.getaddrinfo("localhost", port), leaks)
        if leaks:
            raise Err(RuleError_Internal("LEAK " + "; ".join(leaks)))
        return []
