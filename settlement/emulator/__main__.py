"""``python -m settlement.emulator [--port 12111]``: the emulator without Django.

Prints ``stripe emulator on http://127.0.0.1:PORT`` once it answers (``--port 0`` picks a
free port, which that line then names); access logs go to stderr. Stops cleanly on Ctrl-C
or SIGTERM. Exit status 2 for a bad port argument, 1 if the port cannot be bound.
"""

from __future__ import annotations

import argparse
import sys

from .server import (
    DEFAULT_PORT,
    READY_LINE,
    EmulatorStartError,
    configure_logging,
    parse_port,
    serve,
)


def _announce(url: str) -> None:
    print(READY_LINE.format(url=url), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m settlement.emulator",
        description="Local Stripe emulator (localstripe + Connect extensions) on 127.0.0.1.",
    )
    parser.add_argument(
        "--port",
        default=str(DEFAULT_PORT),
        help=f"TCP port on 127.0.0.1 (default {DEFAULT_PORT}; 0 picks a free one)",
    )
    args = parser.parse_args(argv)
    try:
        port = parse_port(args.port)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    configure_logging()
    try:
        serve(port=port, on_ready=_announce)
    except EmulatorStartError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
