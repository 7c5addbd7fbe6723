"""``edgefleet optimize``: search a device's best build, write the front, the report and the recommendation.

    edgefleet optimize --model mnist-cnn --profile rpi4 --quality-floor 0.98 --trials 12 --out build/opt
    edgefleet optimize --model user.onnx --profile rpi5 --calibration calib.npz --eval heldout.npz \\
        --quality-floor 0.99 --metric cosine --time-budget 1800 --strategy tpe --out build/opt-user

Writes ``DIR/pareto.json`` (every measured point: path, version_id, config, quality, latency /
size / memory ratios, pareto, recommended, measured_on), ``DIR/search.json`` (space, failures,
closest point when nothing is feasible), ``DIR/report.html`` (offline page with the front) and
``DIR/recommended.onnx``. The study lives in ``DIR/study.db``: running the same command again
resumes it; ``--storage URL --study NAME`` lets several workers share one study.
Imports stay inside the handler so ``edgefleet --help`` starts fast.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    """Add the ``optimize`` subcommand."""
    p = sub.add_parser("optimize", help="search compressions for a device profile: Pareto front + recommended build",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="zoo name (mnist-cnn, mobilenetv2, minilm) or an .onnx path")
    p.add_argument("--profile", required=True, help="device profile id or .toml path")
    p.add_argument("--calibration", help=".npz of real inputs (keys = input names); needed for ONNX files")
    p.add_argument("--eval", dest="eval_data", help="held-out .npz (same keys, optional 'labels')")
    p.add_argument("--quality-floor", type=float, required=True, help="minimum quality (FP32 = 1.0), e.g. 0.98")
    p.add_argument("--metric", help="quality metric: cosine, top1, accuracy (default: the model's)")
    p.add_argument("--trials", type=int, help="trial budget (all workers together; default 20)")
    p.add_argument("--time-budget", type=float, help="wall-clock budget in seconds for this run")
    p.add_argument("--strategy", default="nsga2", choices=("nsga2", "tpe", "random", "rl"))
    p.add_argument("--objectives", default="quality,latency,size,memory", help="comma-separated")
    p.add_argument("--dimensions", default="arch,precision", help="what to search: arch (sub-networks), precision")
    p.add_argument("--archs", help="comma-separated arch choices to allow (e.g. none,width:0.5)")
    p.add_argument("--precisions", help="comma-separated precisions to allow (fp32,int8,int8-dynamic,int4,fp16)")
    p.add_argument("--finetune-epochs", type=int, default=3, help="fine-tune / distillation epochs per sub-network")
    p.add_argument("--latency-scale", type=float, default=1.0,
                   help="host→device factor for the host p95 before the [slo] check (default 1)")
    p.add_argument("--no-slo", action="store_true", help="ignore the profile's [slo] and max_artifact_mb")
    p.add_argument("--no-memory", action="store_true", help="do not measure peak memory (faster)")
    p.add_argument("--storage", help="optuna storage URL (default sqlite:///DIR/study.db)")
    p.add_argument("--study", help="study name (default <model>-<profile>-<strategy>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-registry", action="store_true", help="do not record the front in the registry")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def _csv(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _save_calibration(result_dir: Path, samples: list[dict[str, Any]]) -> None:
    import numpy as np

    if samples:
        np.savez(result_dir / "calibration.npz", **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})


def run(args: argparse.Namespace) -> int:
    """Run the search and write its files; exit 0 with a recommendation, 3 when nothing is feasible."""
    from controller.optimize import Budget, BuildOptions, Constraints, OptimizeError, optimize
    from controller.optimize.report import write_report
    from controller.optimize.result import copy_model

    out = Path(args.out)
    objectives = _csv(args.objectives) or []
    if args.no_memory:
        objectives = [o for o in objectives if o != "memory"]

    def show(done: int, total: int | None, message: str) -> None:
        print(f"[{done}/{total or '?'}] {message}", file=sys.stderr, flush=True)

    try:
        budget = Budget(trials=args.trials if args.trials or args.time_budget else 20, time_s=args.time_budget)
        result = optimize(
            args.model, args.profile, objectives,
            Constraints(quality_floor=args.quality_floor, use_slo=not args.no_slo, latency_scale=args.latency_scale),
            args.strategy, budget, out=out, metric=args.metric, calibration=args.calibration,
            eval_data=args.eval_data, storage=args.storage, study_name=args.study, seed=args.seed,
            dimensions=_csv(args.dimensions) or (), archs=_csv(args.archs), precisions=_csv(args.precisions),
            options=BuildOptions(finetune_epochs=args.finetune_epochs, measure_memory=not args.no_memory),
            progress=show)
        if not args.no_registry:
            _record(result, out, args)
    except OptimizeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    _save_calibration(out, _calibration_of(args, out))
    result.write(out)
    write_report(result, out, command=" ".join(shlex.quote(a) for a in ["edgefleet", "optimize", *sys.argv[2:]]))
    if result.recommended:
        copy_model(result, out, result.recommended, out / "recommended.onnx")
    print(result.message)
    for p in sorted(result.front, key=lambda p: p["latency_ratio"]):
        flag = "*" if p["recommended"] else " "
        print(f"{flag} trial {p['trial']:>3}  {p['label']:<40} quality {p['quality']:.4f}  latency "
              f"{p['latency_ratio']:.2f}x  size {p['size_ratio']:.3f}x  memory "
              f"{p['memory_ratio'] if p['memory_ratio'] is None else round(p['memory_ratio'], 2)}x")
    print(f"wrote {out / 'pareto.json'}, {out / 'report.html'}")
    return 0 if result.recommended else 3


def _calibration_of(args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    """The calibration samples the search used (saved for the reproduce commands)."""
    from controller.compression.source import resolve_model
    from controller.optimize.data import search_data

    source = resolve_model(args.model, out)
    return search_data(source, args.calibration, None).calibration


def _record(result: Any, out: Path, args: argparse.Namespace) -> None:
    from controller.compression.source import resolve_model
    from controller.optimize.lineage import record_front
    from controller.registry import Registry
    from controller.settings import Settings

    source = resolve_model(args.model, out)
    zoo = source.zoo.name if source.zoo is not None else None
    with Registry(Settings().compression_workspace) as registry:
        record_front(result, out, registry, fp32=Path(source.onnx_path), model_name=source.name, zoo=zoo)
