"""``edgefleet demo``: the end-to-end demo on embedded defaults (what ``make demo`` runs)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(args: argparse.Namespace) -> int:
    from controller.demo.run import run_demo
    from controller.demo.scenario import DemoOptions

    opts = DemoOptions(
        workdir=args.workdir,
        model=args.model,
        profiles=tuple(p.strip() for p in args.profiles.split(",") if p.strip()),
        broker=args.broker,
        bench_runs=args.bench_runs,
        stage_timeout=args.stage_timeout,
        keep_console=args.keep_console,
        emulated=tuple(p.strip() for p in args.emulated.split(",") if p.strip()),
        emulated_bench_runs=args.emulated_bench_runs,
    )
    return run_demo(opts)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``demo`` to the ``edgefleet`` command."""
    p = sub.add_parser("demo", help="end-to-end demo: FP32 → INT8 (committed) → degraded (rolled back), "
                                    "ONNX and TFLite devices")
    p.add_argument("--workdir", type=Path, default=Path("build/demo"))
    p.add_argument("--model", default="minilm", choices=["minilm", "mobilenetv2", "mnist-cnn"])
    # scenario.DEFAULT_PROFILES, spelled out so `edgefleet --help` does not import the demo
    p.add_argument("--profiles", default="rpi4,jetson-orin-nano,visionfive2,android-arm64,rpi5",
                   help="one agent per profile; TFLite profiles (android-arm64) need the convert venv")
    # scenario.EMULATED_PROFILES
    p.add_argument("--emulated", default="rpi5",
                   help="profiles whose agent runs as an aarch64 process under qemu-user ('' for none)")
    p.add_argument("--emulated-bench-runs", type=int, default=2, help="timed runs per benchmark on emulated devices")
    p.add_argument("--broker", default="auto", choices=["auto", "mosquitto", "amqtt"])
    p.add_argument("--bench-runs", type=int, default=30)
    p.add_argument("--stage-timeout", type=float, default=600.0, help="seconds per deployment stage")
    p.add_argument("--keep-console", action="store_true",
                   help="after the story, keep the broker, agents and web console running until Ctrl-C")
    p.set_defaults(func=_run)
