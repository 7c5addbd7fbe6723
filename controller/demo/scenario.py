"""The demo's story, step by step: FP32 baseline → INT8 (committed) → degraded (rolled back).

The demo process is the operator: it starts the broker, the controller (its fleet
service and registry, in this process) and one agent *process* per device profile,
then drives three deployments and checks what every device decided on its own.
Each deployment is *one* deployment to every device, carrying per profile the artifact
that profile runs (ONNX INT8 with or without ``reduce_range``, or TFLite for Android):
``FleetService.deploy(..., per_profile=...)``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.profiles import load_profile
from controller.broker import BrokerHandle, Credentials, start_broker
from controller.demo.processes import Child, python_module, stop_all
from controller.demo.tflite import tflite_profiles

DEFAULT_PROFILES = ("rpi4", "jetson-orin-nano", "visionfive2", "android-arm64", "rpi5")
EMULATED_PROFILES = ("rpi5",)
"""Profiles whose agent the demo runs as a real aarch64 process under qemu-user (``controller.demo.aarch64``)."""


@dataclass
class DemoOptions:
    """What the demo runs on; defaults are the embedded ones ``make demo`` uses."""

    workdir: Path = Path("build/demo")
    model: str = "minilm"
    profiles: tuple[str, ...] = DEFAULT_PROFILES
    broker: str = "auto"
    fleet: str = "demo"
    golden_samples: int = 24
    calibration_samples: int = 64
    bench_runs: int = 30
    stage_timeout: float = 600.0
    keep_console: bool = False
    """After the story, keep broker, agents and console up until Ctrl-C."""
    emulated: tuple[str, ...] = EMULATED_PROFILES
    """Of ``profiles``, those run as aarch64 processes under qemu (skipped with a notice where this host
    cannot): real ARM kernels, so real quality; emulated latency, so few timed runs."""
    emulated_bench_runs: int = 2
    emulated_stages: tuple[str, ...] = ("int8", "degraded")
    """Stages the emulated devices take part in. Not FP32 by default: qemu emulates floating point in
    software, so one FP32 MiniLM inference took 31-43 s emulated (INT8: ~5 s) and the 16-sample golden set
    alone would add ~9 min; an emulated device joins at INT8 (first model: absolute quality floor) and
    judges the degraded build against it."""


@dataclass
class StageResult:
    """One deployment of the story and what each device decided."""

    name: str
    version_id: str
    technique: str
    expect: str
    per_profile: dict[str, str] = field(default_factory=dict)
    deployment_id: str = ""
    deployments: dict[str, str] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class DemoRun:
    """Everything the demo started, so it can stop it all."""

    options: DemoOptions
    broker: BrokerHandle | None = None
    fleet_service: Any = None
    registry: Any = None
    builder: Any = None
    agents: dict[str, Child] = field(default_factory=dict)
    stages: list[StageResult] = field(default_factory=list)
    log: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    """profile id → why the demo runs no device of it (e.g. no TFLite converter here)."""
    tflite: Any = None
    """The TFLite builds (:class:`controller.demo.tflite.TfliteSet`) when a TFLite profile takes part."""
    console: Any = None
    """The API + web console served over this run's registry and fleet (:mod:`controller.console.embed`)."""
    emulation: Any = None
    """The arm64 tree (:class:`controller.demo.aarch64.Aarch64Env`) when an emulated profile takes part."""

    def emulated_cpu(self, profile: str) -> str | None:
        """The qemu CPU model a profile's agent runs on, or None when it runs natively."""
        if self.emulation is None or profile not in self.options.emulated:
            return None
        from controller.demo.aarch64 import qemu_cpu_for

        return qemu_cpu_for(load_profile(profile))

    def device_profiles(self) -> dict[str, str]:
        """device id → profile id, for the profiles that take part (not skipped)."""
        return {f"{p}-01": p for p in self.options.profiles if p not in self.skipped}


def prepare_workdir(workdir: Path) -> None:
    """Start from a clean demo directory so every run tells the same story."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)


def start_infrastructure(run: DemoRun) -> None:
    """Broker with one login per device, registry, signing key, fleet service."""
    from common.keys import load_or_create_private_key
    from controller.artifacts import ArtifactBuilder
    from controller.fleet import FleetService
    from controller.registry import Registry

    opts = run.options
    creds = Credentials()
    for device in run.device_profiles():
        creds.add(device)
    run.broker = start_broker(opts.workdir / "broker", creds, prefer=opts.broker)
    run.registry = Registry(opts.workdir / "controller")
    key = load_or_create_private_key(opts.workdir / "controller" / "keys" / "controller.key")
    run.builder = ArtifactBuilder(run.registry, signing_key=key)
    run.fleet_service = FleetService(
        run.registry,
        host=run.broker.host,
        port=run.broker.port,
        password=creds.users["controller"],
        fleet=opts.fleet,
        actor="demo",
        artifact_builder=run.builder,
    ).start()


def start_agents(run: DemoRun) -> None:
    """One OS process per device, each with its own profile, data dir, login and pinned key."""
    opts = run.options
    assert run.broker is not None
    pub = opts.workdir / "controller" / "keys" / "controller.pub"
    for device, profile in run.device_profiles().items():
        ddir = opts.workdir / "devices" / device
        ddir.mkdir(parents=True, exist_ok=True)
        pw_file = ddir / "mqtt.password"
        pw_file.write_text(run.broker.credentials.users[device])
        pw_file.chmod(0o600)
        args = [
            "--device-id", device,
            "--fleet", opts.fleet,
            "--profile", profile,
            "--broker", f"{run.broker.host}:{run.broker.port}",
            "--password-file", str(pw_file),
            "--data-dir", str(ddir / "data"),
            "--controller-key", str(pub),
            "--threads", "1",
            "--telemetry-interval", "5",
        ]
        cpu = run.emulated_cpu(profile)
        if cpu is not None:
            # emulated timings are not gated, so neither many timed runs nor a fresh baseline buy anything
            argv = run.emulation.agent_argv(*args, "--bench-runs", str(opts.emulated_bench_runs), "--bench-warmup", "0")
            child = Child(device, argv, ddir / "agent.log", env=run.emulation.environ(cpu=cpu))
        else:
            # re-measure the active model right before each candidate: agents share 2 cores here
            argv = python_module("agent", *args, "--bench-runs", str(opts.bench_runs), "--fresh-baseline")
            child = Child(device, argv, ddir / "agent.log")
        run.agents[device] = child.start()
    if not run.fleet_service.wait_for_devices(list(run.agents), timeout=90):
        dead = {d: c.tail() for d, c in run.agents.items() if not c.alive}
        raise RuntimeError(f"agents did not come online within 90 s; exited: {dead}")


def deploy_stage(
    run: DemoRun, stage: StageResult, on_progress: Callable[[dict[str, dict[str, Any]]], None] | None = None
) -> StageResult:
    """Deploy one stage to every device in one deployment (an artifact per profile); wait for their decisions."""
    t0 = time.monotonic()
    devices = [d for d, p in run.device_profiles().items()
               if stage.name in run.options.emulated_stages or run.emulated_cpu(p) is None]
    per_profile = {p: v for p, v in stage.per_profile.items() if p not in run.skipped}
    dep = run.fleet_service.deploy(stage.version_id or None, devices, per_profile=per_profile, actor="demo")
    stage.deployment_id = dep.id
    stage.deployments = dict.fromkeys(devices, dep.id)
    deadline = t0 + run.options.stage_timeout
    while True:
        states = stage_progress(run, stage)
        if on_progress is not None:
            on_progress(states)
        if all(s["terminal"] for s in states.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    summary = run.fleet_service.wait_for(dep.id, timeout=0)
    artifacts = {d.device_id: d.artifact_id for d in summary.deployment.devices}
    for device, info in summary.as_dict()["devices"].items():
        manifest = run.registry.artifacts.get_artifact(artifact_id=artifacts[device]).manifest
        info |= {"timed_out": summary.timed_out, "deployment_id": dep.id, "format": manifest["format"],
                 "technique": manifest["technique"], "version_id": manifest["version"]}
        stage.devices[device] = info
    stage.seconds = round(time.monotonic() - t0, 2)
    return stage


def stage_progress(run: DemoRun, stage: StageResult) -> dict[str, dict[str, Any]]:
    """Per device: deployment state and the last update state the agent reported."""
    out: dict[str, dict[str, Any]] = {}
    for device, dep_id in stage.deployments.items():
        dep = run.registry.deployments.get_deployment(deployment_id=dep_id)
        rec = next(d for d in dep.devices if d.device_id == device)
        out[device] = {"state": rec.state.value, "job": rec.last_job_state, "terminal": rec.state.terminal}
    return out


def active_versions(run: DemoRun) -> dict[str, Any]:
    """What each device reports it runs now (from its retained state)."""
    out: dict[str, Any] = {}
    for device in run.device_profiles():
        rec = run.registry.devices.get_device(device_id=device)
        out[device] = {
            "online": rec.online,
            "active": rec.active,
            "previous": rec.previous,
            "profile": rec.profile,
        }
    return out


def shutdown(run: DemoRun) -> None:
    """Stop agents, fleet service and broker; nothing is left running."""
    for child in run.agents.values():
        child.stop()
    if run.fleet_service is not None:
        run.fleet_service.stop()
    if run.broker is not None:
        run.broker.stop()
    stop_all()
    if run.registry is not None and hasattr(run.registry, "close"):
        run.registry.close()


def delivered_format(profile: str) -> str | None:
    """The artifact format the demo ships to a profile: TFLite where its recipe says so, else ONNX."""
    try:
        return "tflite" if tflite_profiles((profile,)) else "onnx"
    except ValueError:  # unknown profile: the demo already reports it
        return None


def _emulation_note(run: DemoRun, profile: str) -> str | None:
    cpu = run.emulated_cpu(profile)
    return None if cpu is None else f"qemu-user aarch64 ({cpu})"


def _profile_cards(ids: tuple[str, ...]) -> dict[str, Any]:
    cards: dict[str, Any] = {}
    for pid in ids:
        try:
            cards[pid] = load_profile(pid).model_dump(include={"id", "name", "arch", "cpu"})
        except ValueError as exc:
            cards[pid] = {"error": str(exc)}
    return cards


def write_summary(run: DemoRun, path: Path, *, ok: bool, problems: list[str], extra: dict[str, Any]) -> None:
    """``summary.json``: devices, profiles, every decision with figures and reason, final versions."""
    data = {
        "ok": ok,
        "problems": problems,
        "model": run.options.model,
        "broker": run.broker.kind if run.broker else None,
        "devices": {d: {"profile": p, "format": delivered_format(p), "emulated": _emulation_note(run, p)}
                    for d, p in run.device_profiles().items()},
        "skipped_profiles": run.skipped,
        "profiles": _profile_cards(run.options.profiles),
        "stages": [
            {
                "name": s.name,
                "version_id": s.version_id,
                "per_profile_versions": s.per_profile,
                "technique": s.technique,
                "expected_decision": s.expect,
                "seconds": s.seconds,
                "devices": s.devices,
            }
            for s in run.stages
        ],
        **extra,
    }
    path.write_text(json.dumps(data, indent=2, default=str))
