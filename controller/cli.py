"""The ``edgefleet`` command: one entry point, subcommands registered by the modules that own them.

Each listed module exposes ``register(subparsers)`` and keeps heavy imports
(torch, onnx, fastapi) inside its handlers, so ``edgefleet --help`` and
``edgefleet agent`` start fast and the agent works on a device without torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# Module paths whose ``register(subparsers)`` adds subcommands; a module whose
# dependencies are not installed (e.g. controller modules on an agent-only
# device) is skipped, so the agent subcommand always works.
COMMAND_MODULES = (
    "agent.cli",
    "controller.demo.cli",
    "controller.compression.cli",
    "controller.optimize.cli",
    "controller.conversion.cli",
    "controller.profiles_cli",
    "controller.api.cli",
    "controller.fleet.cli",
    "controller.report.cli",
    "controller.dashboards.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Parser with every subcommand whose module imports on this machine."""
    parser = argparse.ArgumentParser(prog="edgefleet", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (exc.name == name or name.startswith(exc.name + ".")):
                continue  # not written yet / not part of this install
            logging.getLogger(__name__).debug("skipping %s: %s", name, exc)
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
