"""The demo's six ports, and the check that they are free: standard library only.

`scripts/demo.sh` runs this file with the system's Python before the set-up (which takes a minute
or two on a fresh checkout), so a port in use is said at once:

    python3 examples/demo/ports.py [--port-base N] [--dir DIR]

Exit status 0 when the ports are free, 2 with one line naming the busy ones otherwise (the
demo's own arguments are accepted and the others ignored). The demo checks again when it starts.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass

EXIT_USAGE = 2


class DemoError(Exception):
    """A demo that cannot start: one line, exit status 2."""


@dataclass(frozen=True)
class Ports:
    temporal: int = 7233
    ui: int = 8233
    op: int = 3000
    callback: int = 8443
    payment_api: int = 8700
    codec: int = 8081

    @classmethod
    def from_base(cls, base: int) -> Ports:
        """Six consecutive ports from `base`; DemoError (one line, exit 2) when they do not fit."""
        if not 1024 <= base <= 65535 - 5:
            raise DemoError(f"--port-base {base}: choose a port from 1024 to {65535 - 5} (the demo uses six in a row)")
        return cls(base, base + 1, base + 2, base + 3, base + 4, base + 5)


def port_free(port: int) -> bool:
    """Whether a server could listen on 127.0.0.1:`port` now."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_ports(ports: Ports) -> None:
    """DemoError naming every port in use, with the way out."""
    busy = [f"{name} {port}" for name, port in vars(ports).items() if not port_free(port)]
    if busy:
        raise DemoError(f"ports in use ({', '.join(busy)}): stop what uses them or pass --port-base")


def main(argv: Sequence[str] | None = None) -> int:
    """The check as `scripts/demo.sh` runs it, with the demo's command line."""
    parser = argparse.ArgumentParser(prog="temporal-ciba-examples demo", add_help=False)
    parser.add_argument("--port-base", type=int)
    args, _ = parser.parse_known_args(argv)
    try:
        check_ports(Ports.from_base(args.port_base) if args.port_base is not None else Ports())
    except DemoError as exc:
        print(f"temporal-ciba-examples demo: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
