"""Fleet benchmark: 1,000 simulated agents with telemetry, and canary + waves / regression rollback on 100.

Everything on loopback: one mosquitto (password file + ACL, a login per device), the
controller (registry + FleetService + RolloutEngine) in this process, and the simulated
agents in a *separate* process (FleetSimulator: real MQTT clients, own credentials, real
chunk transfer and per-chunk sha256 checks, simulated benchmark judged by the agent's gate),
so the controller does not share its interpreter with the fleet.

Scenarios:
1. ``telemetry_1000``: 1,000 agents, 1 telemetry msg/s each for ``--seconds``; meanwhile one
   all-at-once deployment to all 1,000 so QoS1 job/bench reports flow: reports sent by the
   agents vs reports stored by the controller (must be equal), telemetry intake lag.
2. ``canary_waves_100``: ~5 MB artifact, canary 5 + 3 waves to 100 agents → ``rollout_seconds``.
3. ``regressed_canary_100``: a regressed ~5 MB artifact: stopped at the canary, fleet back on the
   old version → ``rollback_seconds`` measured from the first canary bench report.
4. ``fleet_gate_rollback_100``: canaries *commit* a slower build (loose device gate), the fleet
   gate refuses it and the canaries reinstate the previous model (the fleet-rollback path).

Usage: ``.venv/bin/python benchmarks/fleet.py [--agents 1000] [--seconds 30]``
→ ``benchmarks/results/fleet.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common.keys import generate_keypair, load_public_key  # noqa: E402
from common.manifest import Manifest, Thresholds, blob_ref, sign_manifest  # noqa: E402
from controller.broker import Credentials, start_mosquitto  # noqa: E402
from controller.fleet import FleetService  # noqa: E402
from controller.registry import Registry  # noqa: E402
from controller.rollout import FleetGate, RolloutEngine, RolloutPlan  # noqa: E402
from fleetsim.waiting import wait_until  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
PROFILE = "x86-edge"


def _sim_main(conn: Any, host: str, port: int, fleet: str, creds: dict[str, str], pub: str, tm: float) -> None:
    """Child process: host every simulated agent; answer 'stats' and 'stop' over the pipe."""
    from fleetsim.simulator import FleetSimulator

    logging.basicConfig(level=logging.WARNING)
    sim = FleetSimulator(host, port, fleet=fleet, public_key=load_public_key(Path(pub)), bench_s=0.2,
                         telemetry_interval_s=tm)
    for dev, pw in creds.items():
        sim.add(dev, pw, profile=PROFILE)
    t0 = time.monotonic()
    sim.start()
    ok = sim.wait_connected(120)
    conn.send({"connected": ok, "connect_s": time.monotonic() - t0})
    while True:
        cmd = conn.recv()
        if cmd == "stop":
            sim.stop()
        conn.send({"stats": dict(sim.stats), "versions": dict(sim.active_versions())})
        if cmd == "stop":
            return


class Env:
    """Broker + registry + controller here, simulator in a child process."""

    def __init__(self, workdir: Path, agents: int, telemetry_s: float) -> None:
        self.workdir = workdir
        self.fleet = f"bench{os.getpid()}"
        self.devices = [f"sim-{i:04d}" for i in range(agents)]
        self.key = generate_keypair(workdir / "ctl.key", workdir / "ctl.pub")
        creds = Credentials()
        for d in self.devices:
            creds.add(d)
        self.broker = start_mosquitto(workdir / "broker", creds)
        self.registry = Registry(workdir / "ws")
        self.service = FleetService(self.registry, host=self.broker.host, port=self.broker.port,
                                    password=creds.users["controller"], fleet=self.fleet).start()
        self.engine = RolloutEngine(self.service, tick_s=0.1).start()
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_sim_main, args=(child, self.broker.host, self.broker.port, self.fleet,
                                                        {d: creds.users[d] for d in self.devices},
                                                        str(workdir / "ctl.pub"), telemetry_s), daemon=True)
        self.proc.start()
        hello = self.conn.recv()
        if not hello["connected"]:
            raise RuntimeError("simulated agents did not connect")
        self.connect_s = hello["connect_s"]
        self.service.wait_for_devices(self.devices, timeout=120)

    def sim(self, cmd: str = "stats") -> dict[str, Any]:
        self.conn.send(cmd)
        return self.conn.recv()

    def artifact(self, size: int, technique: str, thresholds: Thresholds | None = None) -> Any:
        reg = self.registry
        model = reg.ensure_model(name="benchmodel")
        v = reg.add_version(model_id=model.id, data=os.urandom(size), technique=technique)
        golden = reg.put_blob(data=os.urandom(64 << 10))
        files = [blob_ref("model", reg.blob_path(sha256=v.sha256), 128 << 10, filename="model.onnx"),
                 blob_ref("golden", Path(golden.path), 128 << 10, filename="golden.npz")]
        m = Manifest(model_id=model.id, version=v.id, profile=PROFILE, format="onnx", technique=technique,
                     quality_metric="cosine", files=files, thresholds=thresholds or Thresholds())
        return reg.artifacts.add_artifact(manifest=sign_manifest(m, self.key))

    def stored_reports(self) -> int:
        one = self.registry.db.one
        return one("SELECT COUNT(*) AS n FROM job_reports")["n"] + one("SELECT COUNT(*) AS n FROM bench_reports")["n"]

    def active_versions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.registry.devices.list_devices():
            v = (d.active or {}).get("version", "-")
            out[v] = out.get(v, 0) + 1
        return out

    def close(self) -> dict[str, Any]:
        final = self.sim("stop")
        self.proc.join(30)
        self.engine.stop()
        self.service.stop()
        self.registry.close()
        self.broker.stop()
        return final


def telemetry_scenario(workdir: Path, agents: int, seconds: float) -> dict[str, Any]:
    env = Env(workdir, agents, telemetry_s=1.0)
    try:
        art = env.artifact(64 << 10, "fp32")
        time.sleep(3.0)  # every agent's telemetry timer running
        env.service.telemetry.lag_s.clear()
        t_steady = time.monotonic()
        time.sleep(seconds)
        steady = env.service.telemetry_lag()
        steady_rate = len(env.service.telemetry.lag_s) / (time.monotonic() - t_steady)
        env.service.telemetry.lag_s.clear()
        t0 = time.monotonic()
        r = env.engine.create(artifact_id=art.id, device_ids=env.devices,
                              plan=RolloutPlan(strategy="all_at_once", device_timeout_s=600))
        r = env.engine.wait(r.id, timeout=240)
        deploy_s = time.monotonic() - t0
        lag = env.service.telemetry_lag()
        time.sleep(2.0)  # let the last QoS1 reports land
        svc = env.service.stats
        stored_tm = env.service.telemetry.stored
        stored = env.stored_reports()
        final = env.close()
    except BaseException:
        env.close()
        raise
    st = final["stats"]
    return {
        "agents": agents,
        "seconds": seconds,
        "connect_s": round(env.connect_s, 2),
        "deployment_state": r.state,
        "deployment_outcomes": r.outcomes(),
        "deployment_seconds": round(deploy_s, 2),
        "reports_sent": st.get("reports_sent", 0),
        "reports_received": env_reports(svc),
        "reports_stored": stored,
        "telemetry_sent": st.get("telemetry_sent", 0),
        "telemetry_received": svc.get("rx_tm", 0),
        "telemetry_stored": stored_tm,
        "telemetry_stored_per_s_steady": round(steady_rate, 1),
        "telemetry_lag_s_steady": {k: round(v, 3) for k, v in steady.items()},
        "telemetry_lag_s": {k: round(v, 3) for k, v in lag.items()},
        "controller_stats": svc,
    }


def env_reports(svc: dict[str, int]) -> int:
    return svc.get("rx_job", 0) + svc.get("rx_bench", 0)


def rollout_scenarios(workdir: Path, agents: int, size: int) -> dict[str, Any]:
    env = Env(workdir, agents, telemetry_s=0.0)
    out: dict[str, Any] = {"agents": agents, "artifact_mb": round(size / 2**20, 2)}
    try:
        base = env.artifact(64 << 10, "fp32")
        r = env.engine.wait(env.engine.create(artifact_id=base.id, device_ids=env.devices,
                                              plan=RolloutPlan(strategy="all_at_once")).id, 120)
        assert r.state == "succeeded", r.outcomes()
        # canary + 3 waves of ~5 MB
        new = env.artifact(size, "int8")
        t0 = time.monotonic()
        r = env.engine.create(artifact_id=new.id, device_ids=env.devices, plan=RolloutPlan(canary_count=5, waves=3))
        r = env.engine.wait(r.id, 300)
        out["canary_waves"] = {"state": r.state, "seconds": round(time.monotonic() - t0, 2),
                               "waves": [len(r.in_wave(w)) for w in range(r.waves)], "outcomes": r.outcomes(),
                               "fleet": env.active_versions() == {new.version_id: agents}}
        out["regressed_canary"] = _regressed(env, env.artifact(size, "regressed"), new.version_id, agents)
        out["fleet_gate_rollback"] = _regressed(
            env, env.artifact(size, "slow", Thresholds(max_latency_ratio=10.0)), new.version_id, agents)
        time.sleep(1.0)
        svc = env.service.stats
        out["controller_stats"] = {k: v for k, v in svc.items()}
        out["reports_received"] = env_reports(svc)
        out["reports_stored"] = env.stored_reports()
    finally:
        final = env.close()
    out["reports_sent"] = final["stats"].get("reports_sent", 0)
    out["simulator_stats"] = final["stats"]
    return out


def _regressed(env: Env, art: Any, old_version: str, agents: int) -> dict[str, Any]:
    t0 = time.monotonic()
    plan = RolloutPlan(canary_count=5, waves=3, gate=FleetGate(max_latency_ratio=1.25))
    r = env.engine.create(artifact_id=art.id, device_ids=env.devices, plan=plan)
    r = env.engine.wait(r.id, 120, until=("rolled_back", "succeeded", "failed", "paused"))
    try:
        back = wait_until(lambda: env.active_versions() == {old_version: agents}, 30, "the rollback", 0.05)
    except AssertionError:
        back = False
    t_back = time.monotonic()
    canary_dep = r.in_wave(0)[0].deployment_id
    reports = env.registry.db.all("SELECT received_at FROM bench_reports WHERE deployment_id = ? ORDER BY received_at",
                                (canary_dep,))
    first = datetime.fromisoformat(reports[0]["received_at"]).timestamp() if reports else None
    events = env.engine.events(r.id)
    rolled = next((e for e in events if e["kind"] == "rolled_back"), None)
    decided = next((e for e in events if e["kind"] == "rollback"), None)
    wall_now = time.time() - (time.monotonic() - t_back)
    return {
        "state": r.state,
        "outcomes": r.outcomes(),
        "fleet_on_old_version": back,
        "decision": decided["reason"] if decided else None,
        "decision_after_first_canary_report_s": round(datetime.fromisoformat(decided["ts"]).timestamp() - first, 3)
        if decided and first else None,
        "rolled_back_after_first_canary_report_s": round(datetime.fromisoformat(rolled["ts"]).timestamp() - first, 3)
        if rolled and first else None,
        "fleet_old_version_after_first_canary_report_s": round(wall_now - first, 3) if first else None,
        "total_s": round(time.monotonic() - t0, 2),
    }


def _md(res: dict[str, Any]) -> str:
    t, r = res["telemetry_1000"], res["rollouts_100"]
    lines = [
        "# Fleet benchmark", "",
        f"{res['machine']}; mosquitto + controller + simulator process on loopback; {res['date']}.", "",
        "| figure | value | target |", "| --- | --- | --- |",
        f"| agents connected (telemetry run) | {t['agents']} in {t['connect_s']} s | 1,000 |",
        f"| telemetry sent / received (QoS0, whole run) | {t['telemetry_sent']} / "
        f"{t['telemetry_received']} | ~1 msg/s/agent |",
        f"| telemetry stored per second, steady state ({t['seconds']:.0f} s) | "
        f"{t['telemetry_stored_per_s_steady']} | 1,000 |",
        f"| telemetry lag device→stored p50 / p99 / max, steady | {t['telemetry_lag_s_steady'].get('p50')} / "
        f"{t['telemetry_lag_s_steady'].get('p99')} / {t['telemetry_lag_s_steady'].get('max')} s | bounded |",
        f"| same, during the 1,000-agent deployment | {t['telemetry_lag_s'].get('p50')} / "
        f"{t['telemetry_lag_s'].get('p99')} / {t['telemetry_lag_s'].get('max')} s | bounded |",
        f"| QoS1 reports sent / received / stored (1,000-agent deployment) | {t['reports_sent']} / "
        f"{t['reports_received']} / {t['reports_stored']} | equal |",
        f"| 1,000-agent all-at-once deployment | {t['deployment_state']} in {t['deployment_seconds']} s | |",
        f"| canary 5 + 3 waves, {r['artifact_mb']} MB, {r['agents']} agents | {r['canary_waves']['state']} in "
        f"{r['canary_waves']['seconds']} s (waves {r['canary_waves']['waves']}) | < 60 s |",
        f"| regressed canary: rollout rolled back after first canary report | "
        f"{r['regressed_canary']['rolled_back_after_first_canary_report_s']} s, fleet on old version: "
        f"{r['regressed_canary']['fleet_on_old_version']} | < 5 s |",
        f"| fleet-gate rollback (canaries had committed): back after first canary report | "
        f"{r['fleet_gate_rollback']['rolled_back_after_first_canary_report_s']} s | < 5 s |",
        f"| QoS1 reports sent / received / stored (rollout runs) | {r['reports_sent']} / {r['reports_received']} / "
        f"{r['reports_stored']} | equal |",
        "",
        "Simulated agents: real MQTT clients with their own logins, real chunk transfer with per-chunk sha256 "
        "checks and signature checks; the on-device benchmark is simulated (0.2 s, figures by technique) and "
        "judged by the agent's real gate.",
        "",
        "Notes:",
        "- The rollback rows are measured from the first canary BenchReport stored by the controller to the "
        "rollout's `rolled_back` event (every device sent back has reported); the fleet check reads the "
        "active version each device reported.",
        "- Telemetry lag rises during the 1,000-device deployment: the controller's one MQTT network thread "
        "also records ~7,000 job/bench reports, 2,000 state messages and the chunk (re-)requests; it is "
        "back to the steady row once the deployment ends. QoS0 telemetry sent − received = samples in "
        "flight when the simulator stopped, or dropped (QoS0 allows it); QoS1 reports are counted exactly.",
        "- The machine is shared with other engineers' jobs (load average at start in fleet.json).",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rollout-agents", type=int, default=100)
    ap.add_argument("--artifact-mb", type=float, default=5.0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    res: dict[str, Any] = {"machine": machine, "date": datetime.now().isoformat(timespec="seconds"),
                           "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        res["telemetry_1000"] = telemetry_scenario(Path(tmp) / "t", args.agents, args.seconds)
        res["rollouts_100"] = rollout_scenarios(Path(tmp) / "r", args.rollout_agents, int(args.artifact_mb * 2**20))
    t, r = res["telemetry_1000"], res["rollouts_100"]
    res |= {
        "agents": t["agents"],
        "reports_sent": t["reports_sent"] + r["reports_sent"],
        "reports_received": t["reports_received"] + r["reports_received"],
        "rollout_seconds": r["canary_waves"]["seconds"],
        "rollback_seconds": r["regressed_canary"]["rolled_back_after_first_canary_report_s"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (RESULTS / "fleet.md").write_text(_md(res))
    print(_md(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
