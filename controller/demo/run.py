"""Drive the demo with a live display and decide whether it succeeded.

Success means what the product promises: every device ends on the committed INT8
build of its format (ONNX or TFLite), after refusing the degraded one on its own
measurement. Anything else (a device without a working model, a wrong decision, a
timeout, a failed TFLite build) makes the demo exit non-zero with the reason in
``summary.json``. A TFLite profile is skipped, with a clear notice and without failing
the demo, only when this machine has no TFLite converter (no ``.venv-convert``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from common.profiles import load_profile
from controller.demo.scenario import (
    DemoOptions,
    DemoRun,
    StageResult,
    active_versions,
    delivered_format,
    deploy_stage,
    prepare_workdir,
    shutdown,
    start_agents,
    start_infrastructure,
    write_summary,
)

EXPECTED = {"commit": "committed", "rollback": "rolled_back"}


def _fmt(value: Any, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def bench_row(info: dict[str, Any]) -> dict[str, Any]:
    """Flatten a device's stage result into the figures the table and summary show."""
    bench = info.get("bench") or {}
    cand = bench.get("candidate_metrics") or {}
    base = bench.get("baseline_metrics") or {}
    return {
        "state": info.get("state"),
        "reason": info.get("reason") or "",
        "detail": info.get("detail") or "",
        "p50_ms": cand.get("latency_p50_ms"),
        "p95_ms": cand.get("latency_p95_ms"),
        "mem_mb": cand.get("peak_rss_delta_mb"),
        "quality": cand.get("quality"),
        "metric": cand.get("quality_metric"),
        "baseline_p95_ms": base.get("latency_p95_ms"),
        "baseline_quality": base.get("quality"),
        "reasons": bench.get("reasons", []),
        "emulated": cand.get("emulated"),
    }


def _ratio(new: Any, old: Any) -> str:
    if not new or not old:
        return ""
    return f" ×{new / old:.2f}"


def results_table(run: DemoRun) -> Table:
    """Per device and stage: decision and the on-device figures behind it (ratios vs the active model)."""
    table = Table(title="On-device decisions (ratios vs the model the device ran before)")
    for col in ("stage", "device", "format", "decision", "p50 ms", "p95 ms", "mem MB", "quality", "reason"):
        table.add_column(col, no_wrap=col in ("stage", "device", "format", "decision"))
    for stage in run.stages:
        for device, info in stage.devices.items():
            row = bench_row(info)
            bench = info.get("bench") or {}
            base = bench.get("baseline_metrics") or {}
            emu = " emulated*" if row["emulated"] else ""  # timings of qemu, not of the device: no ratios
            table.add_row(
                stage.name,
                device + (" (qemu)" if row["emulated"] else ""),
                f"{info.get('format', '?')} {info.get('technique', '')}".strip(),
                str(row["state"]),
                _fmt(row["p50_ms"], ".1f") + emu,
                _fmt(row["p95_ms"], ".1f") + (emu or _ratio(row["p95_ms"], base.get("latency_p95_ms"))),
                _fmt(row["mem_mb"]) + (emu or _ratio(row["mem_mb"], base.get("peak_rss_delta_mb"))),
                _fmt(row["quality"], ".4f"),
                row["reason"] or "ok",
            )
    return table


def check_outcome(run: DemoRun, final: dict[str, Any]) -> list[str]:
    """Every stage's decisions as expected, and every device on the committed INT8 build."""
    problems: list[str] = []
    for stage in run.stages:
        for device, info in stage.devices.items():
            if info.get("state") != EXPECTED[stage.expect]:
                problems.append(
                    f"{stage.name}: {device} ended {info.get('state')!r} (expected {EXPECTED[stage.expect]!r}); "
                    f"reason {info.get('reason')!r} {info.get('detail', '')}"
                )
    int8_stage = next((s for s in run.stages if s.name == "int8"), None)
    for device, state in final.items():
        active = state.get("active") or {}
        if not active:
            problems.append(f"{device} has no active model")
            continue
        if int8_stage is not None:
            wanted = int8_stage.per_profile.get(state["profile"])
            if active.get("version") != wanted:
                problems.append(f"{device} runs version {active.get('version')}, expected INT8 {wanted}")
    return problems


def tflite_line(report: dict[str, Any]) -> str:
    """One line of the TFLite builds' own figures (size, cosine to FP32 measured at build time)."""
    parts = [f"{name} {b['precision']} {b['size_bytes'] / 2**20:.1f} MB cos {b['vs_fp32']['cosine']:.4f}"
             for name, b in report["builds"].items()]
    return "TFLite builds (vs FP32 ONNX on the golden set): " + ", ".join(parts)


def validate_options(options: DemoOptions) -> None:
    """Fail in a second, before anything starts, on a profile or model that does not exist."""
    from controller.zoo import ZOO_NAMES

    if options.model not in ZOO_NAMES:
        raise ValueError(f"unknown demo model {options.model!r}; choose one of {', '.join(ZOO_NAMES)}")
    if not options.profiles:
        raise ValueError("the demo needs at least one device profile")
    for profile in options.profiles:
        card = load_profile(profile)
        if profile in options.emulated and card.arch != "aarch64":
            raise ValueError(f"only aarch64 profiles can run emulated; {profile} is {card.arch}")


def run_demo(options: DemoOptions, console: Console | None = None) -> int:
    """Run the whole story; returns the process exit code (0 only if every device ends healthy)."""
    console = console or Console(width=None if sys.stdout.isatty() else 150)
    run = DemoRun(options)
    t_start = time.monotonic()
    problems: list[str] = []
    story_problems: list[str] = []
    extra: dict[str, Any] = {}
    prepare_workdir(options.workdir)
    try:
        validate_options(options)
        story_problems, extra = _story(run, console)
    except (ValueError, OSError) as exc:
        problems = [f"demo failed: {exc}"]
    except Exception as exc:  # noqa: BLE001 - reported in summary.json and as exit code
        problems = [f"demo failed: {type(exc).__name__}: {exc}"]
        console.print_exception(max_frames=5)
    finally:
        try:
            extra["final"] = active_versions(run) if run.registry is not None else {}
        except Exception as exc:  # noqa: BLE001
            problems.append(f"could not read final device state: {exc}")
        _hold_console(run, console)
        shutdown(run)
    if not problems and "final" in extra:
        problems = story_problems + check_outcome(run, extra["final"])
    extra["seconds_total"] = round(time.monotonic() - t_start, 1)
    ok = not problems
    summary_path = options.workdir / "summary.json"
    write_summary(run, summary_path, ok=ok, problems=problems, extra=extra)
    if run.stages:
        console.print(results_table(run))
    for line in problems:
        console.print(f"[red]✗ {line}[/red]")
    for profile, reason in run.skipped.items():
        console.print(f"[yellow]! no {profile} device in this run: {reason}[/yellow]")
    for device, profile in run.device_profiles().items():
        if run.emulated_cpu(profile):
            console.print(f"* {device}: a real aarch64 agent under qemu-user ({run.emulated_cpu(profile)}): its "
                          "latency and memory are the emulator's (not comparable, not gated); its quality comes "
                          "from onnxruntime's ARM kernels")
    formats = " and ".join(sorted({str(delivered_format(p)) for p in run.device_profiles().values()}))
    verdict = f"[green]✓ every device runs its committed INT8 build ({formats}); the degraded builds were rolled back"
    console.print(verdict if ok else "[red]✗ demo failed")
    console.print(f"summary: {summary_path}  ({extra['seconds_total']} s)")
    if extra.get("reports"):
        console.print(f"reports: {options.workdir / 'reports' / 'index.html'} (one per stage, offline HTML)")
    return 0 if ok else 1


def prepare_tflite(run: DemoRun, say: Callable[[str], None]) -> list[str]:
    """Find or build the TFLite set for the demo's TFLite profiles, before any agent starts.

    No converter here: the profiles are skipped with a notice (the ONNX story still runs).
    A build that fails: skipped too, and the failure returned as a problem (non-zero exit).
    """
    from controller.demo.tflite import TfliteBuildError, ensure_tflite_set, tflite_profiles, unavailable_reason

    opts = run.options
    wanted = tflite_profiles(opts.profiles)
    if not wanted:
        return []
    reason = unavailable_reason(opts.model, wanted[0])
    if reason is not None:
        run.skipped.update(dict.fromkeys(wanted, reason))
        say(f"[yellow]TFLite devices ({', '.join(wanted)}) skipped: {reason}[/yellow]")
        return []
    say(f"TFLite builds of {opts.model} for {', '.join(wanted)} (convert venv; cached after the first run)")
    try:
        run.tflite = ensure_tflite_set(opts.model, wanted[0], log_path=opts.workdir / "tflite-build.log")
    except TfliteBuildError as exc:
        run.skipped.update(dict.fromkeys(wanted, "TFLite build failed"))
        return [f"TFLite build failed, {', '.join(wanted)} skipped: {exc}"]
    say(tflite_line(run.tflite.report))
    return []


def prepare_emulation(run: DemoRun, say: Callable[[str], None]) -> None:
    """Find or build the arm64 tree for the emulated profiles, before any agent starts.

    Where this host cannot emulate aarch64 (no qemu-user-static, no arm64 lists and not root) or
    the tree cannot be fetched, those devices are skipped with the reason: the demo still runs.
    """
    from controller.demo.aarch64 import EmulationUnavailableError, ensure_aarch64_env

    wanted = [p for p in run.options.profiles if p in run.options.emulated]
    if not wanted:
        return
    try:
        run.emulation = ensure_aarch64_env(say=say)
    except EmulationUnavailableError as exc:
        run.skipped.update(dict.fromkeys(wanted, f"no aarch64 emulation here: {exc}"))
        say(f"[yellow]emulated aarch64 devices ({', '.join(wanted)}) skipped: {exc}[/yellow]")
        return
    say(f"aarch64 agents ({', '.join(wanted)}): Debian arm64 python3.11 under {run.emulation.qemu}")


def _story(run: DemoRun, console: Console) -> tuple[list[str], dict[str, Any]]:
    from controller.demo.build import build_versions
    from controller.demo.tflite import tflite_profiles

    opts = run.options

    def say(msg: str) -> None:
        console.log(msg)

    with console.status("starting broker, controller and agents") as status:
        status.update("TFLite builds")
        problems = prepare_tflite(run, say)
        status.update("arm64 tree for the emulated devices")
        prepare_emulation(run, say)
        status.update("starting broker, controller and agents")
        start_infrastructure(run)
        say(f"broker: {run.broker.kind} on {run.broker.host}:{run.broker.port}")  # type: ignore[union-attr]
        run.console = _start_console(run, say)
        start_agents(run)
        say(f"agents online: {', '.join(f'{d} ({p})' for d, p in run.device_profiles().items())}")
        status.update("building model versions")
        active = tuple(run.device_profiles().values())
        tfl_profiles = tflite_profiles(active)
        versions = build_versions(
            run.registry, model=opts.model, profiles=tuple(p for p in active if p not in tfl_profiles),
            out_dir=opts.workdir / "models", calibration_samples=opts.calibration_samples, say=say,
            tflite=run.tflite, tflite_profiles=tfl_profiles,
        )
        def techniques(by_profile: dict[str, Any], *default: Any) -> str:
            return ", ".join(sorted({v.technique for v in (*by_profile.values(), *default)}))

        stages = [
            StageResult("fp32", versions["fp32"].id, techniques(versions["fp32_per_profile"], versions["fp32"]),
                        "commit", per_profile={p: v.id for p, v in versions["fp32_per_profile"].items()}),
            StageResult("int8", "", techniques(versions["int8"]), "commit",
                        per_profile={p: v.id for p, v in versions["int8"].items()}),
            StageResult("degraded", "", techniques(versions["degraded"]), "rollback",
                        per_profile={p: v.id for p, v in versions["degraded"].items()}),
        ]
        for stage in stages:
            status.update(f"deploying {stage.name}")
            left_out = [d for d, p in run.device_profiles().items()
                        if run.emulated_cpu(p) and stage.name not in opts.emulated_stages]
            say(f"deploying {stage.name} ({stage.technique}) to {len(run.agents) - len(left_out)} devices in one "
                "deployment" + (f" ({', '.join(left_out)} emulated: joins at "
                                f"{', '.join(opts.emulated_stages)})" if left_out else ""))

            def show(states: dict[str, dict[str, Any]], name: str = stage.name) -> None:
                status.update(f"{name}: " + "  ".join(f"{d}={s['job'] or s['state']}" for d, s in states.items()))

            run.stages.append(deploy_stage(run, stage, on_progress=show))
            decided = ", ".join(f"{d}: {i.get('state')}" for d, i in stage.devices.items())
            say(f"{stage.name} done in {stage.seconds:.1f} s — {decided}")
    extra: dict[str, Any] = {"compression": versions["compress_metrics"]}
    extra["reports"] = _write_reports(run, versions, say)
    if run.tflite is not None:
        extra["tflite_build"] = {k: run.tflite.report[k] for k in ("profile", "degradation", "tool_versions",
                                                                   "builds")}
    return problems, extra


def _start_console(run: DemoRun, say: Callable[[str], None]) -> Any:
    """Serve the API and web console over the demo's registry and fleet; a failure only costs the console."""
    try:
        from controller.console.embed import serve_embedded

        embedded = serve_embedded(run.registry, run.fleet_service, run.options.workdir / "controller",
                                  fleet_name=run.options.fleet)
    except Exception as exc:  # noqa: BLE001 - the story does not need the console
        say(f"[yellow]console not started: {exc}[/yellow]")
        return None
    say(f"[bold]console: {embedded.url}/console/[/bold] (watch the rollout live; API docs at {embedded.url}/docs)")
    return embedded


def _write_reports(run: DemoRun, versions: dict[str, Any], say: Callable[[str], None]) -> dict[str, str]:
    """One HTML report per stage (its deployment) and per compressed version, under ``<workdir>/reports``."""
    from controller.report.bundle import write_reports

    deployments = {s.name: s.deployment_id for s in run.stages if s.deployment_id}
    by_version: dict[str, str] = {}  # several profiles share a build: one report per version
    for kind in ("int8", "degraded"):
        for profile, v in sorted(versions.get(kind, {}).items()):
            by_version.setdefault(v.id, f"{kind}-{profile}")
    written = write_reports(run.registry, run.options.workdir / "reports", deployments=deployments,
                            versions={name: vid for vid, name in by_version.items()})
    say(f"reports written: {', '.join(written)}")
    return {name: str(path) for name, path in written.items()}


def _hold_console(run: DemoRun, console: Console) -> None:
    """With ``--keep-console``, leave everything running until Ctrl-C; then stop the console either way."""
    if run.console is None:
        return
    if run.options.keep_console:
        console.print(f"console still at {run.console.url}/console/ — Ctrl-C to stop")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    run.console.stop()
    run.console = None
