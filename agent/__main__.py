"""``python -m agent``: the agent on a device that has only the ``agent`` extra installed."""

from __future__ import annotations

import argparse
import logging
import sys

from agent.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the agent."""
    parser = argparse.ArgumentParser(prog="python -m agent", description="edgefleet on-device agent")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
