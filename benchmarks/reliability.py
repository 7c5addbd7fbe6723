"""Reliability under faults and hostile input (issue #13) → ``benchmarks/results/reliability.{json,md}``.

Two parts, both against real processes:

1. **Faults**: runs the fault campaign (``tests/faults``: real mosquitto, ``edgefleet controller``,
   ``python -m agent`` processes) ``--runs`` times, each test appending its outcome; per fault:
   runs, devices, job reports sent by agents / stored by the controller, devices left without a
   working model, time from the fault to every device done.
2. **Hostile input**: an ``edgefleet controller`` process (with a broker) gets the reported attacks —
   a 1 MB samples ``.npz`` inflating to 1 GiB, a 216-byte ``.npz`` claiming a (1e11, 16) array, a
   valid 200 MB ONNX, 2,000 hostile MQTT payloads published with a device's own login (among them
   400 KB of nesting and ``seq`` = 2^63), and the two schemathesis runs. Per input: cases, 5xx,
   peak controller RSS (``VmHWM`` of the process). ``--code DIR`` runs the controller from another
   checkout (e.g. the tree before the fixes) for a before/after row.

Usage: ``.venv/bin/python benchmarks/reliability.py [--runs 2] [--slow] [--code /path/to/old/tree]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.controller.api.conftest import make_controller, tiny_onnx  # noqa: E402 - the real-controller harness

RESULTS = REPO / "benchmarks" / "results"


# ---------------------------------------------------------------------------------------------- faults
def run_faults(runs: int, slow: bool, out: Path) -> list[dict]:
    out.unlink(missing_ok=True)
    env = dict(os.environ, EDGEFLEET_RELIABILITY_OUT=str(out), PYTHONPATH=str(REPO))
    marker = [] if slow else ["-m", "not slow"]
    for i in range(runs):
        print(f"fault campaign run {i + 1}/{runs}", flush=True)
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/faults", *marker],
                       cwd=REPO, env=env, check=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    by_fault: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_fault[row["fault"]].append(row)
    table = []
    for fault, items in by_fault.items():
        recover = [r["recover_s"] for r in items]
        table.append({
            "fault": fault, "runs": len(items), "devices": items[0]["devices"],
            "reports_sent": sum(r["reports_sent"] for r in items),
            "reports_received": sum(r["reports_received"] for r in items),
            "devices_without_working_model": sum(r["devices_without_working_model"] for r in items),
            "recover_s_median": round(statistics.median(recover), 1), "recover_s_max": round(max(recover), 1),
        })
    return table


# ---------------------------------------------------------------------------------------------- hostile
def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_hwm(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def hostile(code: Path, tmp: Path, mosquitto_dir: Path) -> list[dict]:
    from controller.broker import Credentials, start_mosquitto
    from tests.controller.api.test_hostile_uploads import big_onnx, bomb_npz, lying_npz

    creds = Credentials()
    broker = start_mosquitto(mosquitto_dir, creds)
    import tests.controller.api.conftest as harness

    ctl = make_controller(tmp, EDGEFLEET_BROKER_HOST=broker.host, EDGEFLEET_BROKER_PORT=str(broker.port),
                          EDGEFLEET_BROKER_PASSWORD=creds.users["controller"], EDGEFLEET_FLEET="hostile",
                          EDGEFLEET_MAX_UPLOAD_MB="512", PYTHONPATH=str(code))
    harness.REPO = code  # the controller process runs from that checkout (``python -m`` puts its cwd first)
    try:
        ctl.start(timeout=60)
    finally:
        harness.REPO = REPO
    rows: list[dict] = []
    try:
        pid = ctl.proc.pid
        model = tiny_onnx(tmp / "m.onnx")

        def upload(name: str, onnx_path: Path, samples: bytes | None) -> int:
            files = {"file": ("m.onnx", onnx_path.open("rb"))}
            if samples is not None:
                files["samples"] = ("s.npz", samples)
            with ctl.client("admin", timeout=600) as api:
                return api.post("/compression/models", data={"name": name}, files=files).status_code

        def row(name: str, cases: int, statuses: list[int], note: str = "") -> None:
            rows.append({"input": name, "cases": cases, "status": sorted(set(statuses)),
                         "5xx": sum(1 for s in statuses if s >= 500), "peak_rss_mb": round(vm_hwm_mb(pid), 0),
                         "alive": ctl.proc.poll() is None, "note": note})
            print(rows[-1], flush=True)
            if ctl.proc.poll() is None:
                reset_hwm(pid)

        reset_hwm(pid)
        row("idle controller", 0, [])
        bomb = bomb_npz(tmp / "bomb.npz", "input", (1 << 24, 16))  # 1 GiB of float32 zeros
        row("samples .npz 1 MB -> 1 GiB", 1, [upload("bomb", model, bomb.read_bytes())],
            f"{bomb.stat().st_size / 2**20:.1f} MB on the wire")
        liar = lying_npz(tmp / "liar.npz", (10**11, 16))
        row("samples .npz claiming (1e11, 16)", 1, [upload("liar", model, liar.read_bytes())],
            f"{liar.stat().st_size} bytes")
        big = big_onnx(tmp / "big.onnx", 200)
        row("valid 200 MB ONNX upload", 1, [upload("big", big, None)], f"{big.stat().st_size / 2**20:.0f} MB")
        big.unlink()
        sent = mqtt_flood(broker, creds, 2000)
        with ctl.client("admin") as api:
            health = api.get("/health").status_code
        row("hostile MQTT payloads (device login)", sent, [health], "then GET /health")
        for name, stateful in (("schemathesis (whole schema)", False), ("schemathesis stateful, seeded model", True)):
            cases, errors = schemathesis(ctl, tmp, stateful)
            row(name, cases, [500] * errors if errors else [200])
    finally:
        ctl.stop()
        broker.stop()
    return rows


def mqtt_flood(broker, creds, n: int) -> int:  # noqa: ANN001 - broker handle from controller.broker
    """Publish ``n`` hostile payloads on a device's own topics with its own login (what a compromised device can)."""
    import paho.mqtt.client as mqtt
    from hypothesis import HealthCheck, given, settings

    from common import topics
    from tests.payload_strategies import SHA, deep, payloads, valid_examples

    password = broker.add_user("evil-1")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="evil-1")
    client.username_pw_set("evil-1", password)
    client.connect(broker.host, broker.port)
    client.loop_start()
    kinds = {"state": topics.state("hostile", "evil-1"), "caps": topics.caps("hostile", "evil-1"),
             "job": topics.job("hostile", "evil-1", "d-1"), "bench": topics.bench("hostile", "evil-1", "d-1"),
             "tm": topics.telemetry("hostile", "evil-1"), "req": topics.chunk_request("hostile", "evil-1", SHA)}
    count = [0]
    per_kind = max(1, (n - 8) // len(kinds))
    for kind, topic in kinds.items():
        valid = valid_examples("evil-1")[kind]

        def make_sender(topic: str, valid: dict):  # noqa: ANN202 - binds them (hypothesis forbids defaults)
            @settings(max_examples=per_kind, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(payload=payloads(valid))
            def send(payload: bytes) -> None:
                client.publish(topic, payload, qos=1).wait_for_publish(10)
                count[0] += 1
            return send

        make_sender(topic, valid)()
    for topic in kinds.values():
        client.publish(topic, deep(200_000), qos=1).wait_for_publish(10)
        count[0] += 1
    for kind in ("job", "state"):
        payload = json.dumps(valid_examples("evil-1")[kind] | {"seq": 2**63})
        client.publish(kinds[kind], payload, qos=1).wait_for_publish(10)
    count[0] += 2
    time.sleep(3)
    client.loop_stop()
    client.disconnect()
    return count[0]


def schemathesis(ctl, tmp: Path, stateful: bool) -> tuple[int, int]:  # noqa: ANN001
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    if st is None:
        return 0, 0
    args = [st]
    env = dict(os.environ)
    if stateful:
        with ctl.client("admin") as api:
            r = api.post("/compression/models", data={"name": "seed"},
                         files={"file": ("m.onnx", tiny_onnx(tmp / "seed.onnx").read_bytes())})
            version = r.json()["data"]["version"]["id"]
        config = tmp / "schemathesis.toml"
        config.write_text(f'[parameters]\n"path.model" = "seed"\n"path.version_id" = "{version}"\n')
        args += ["--config-file", str(config)]
        env.update(SCHEMATHESIS_HOOKS="tests.controller.api.schemathesis_hooks", EDGEFLEET_FUZZ_VERSION=version,
                   PYTHONPATH=str(REPO))
    args += ["run", ctl.url + "/openapi.json", "--checks", "not_a_server_error", "--max-time", "60", "--seed", "3",
             "--workers", "1", "--generation-database", "none", "--request-timeout", "20", "--no-color",
             "-H", f"Authorization: Bearer {ctl.keys['admin']}"]
    if stateful:
        args += ["--phases", "fuzzing,stateful", "--exclude-method", "DELETE"]
    out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp, timeout=600).stdout
    generated = re.search(r"(\d+) generated", out)
    errors = re.search(r"Server error: (\d+)", out)
    return int(generated.group(1)) if generated else 0, int(errors.group(1)) if errors else 0


# ---------------------------------------------------------------------------------------------- report
def write(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "reliability.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Reliability under faults and hostile input (issue #13)", "",
             f"Run {result['when']} on {result['machine']}; {result['budget']}.", "",
             "## Faults (real mosquitto, `edgefleet controller` and `python -m agent` processes)", "",
             "| fault | runs | devices | reports sent | reports received | devices left without a working model "
             "| time to recover (median / max, s) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["faults"]:
        lines.append(f"| {r['fault']} | {r['runs']} | {r['devices']} | {r['reports_sent']} | {r['reports_received']} "
                     f"| {r['devices_without_working_model']} | {r['recover_s_median']} / {r['recover_s_max']} |")
    for label, rows in result["hostile"].items():
        lines += ["", f"## Hostile input — {label}", "",
                  "| input | cases | status | 5xx | peak controller RSS (MB) | controller alive | note |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for r in rows:
            lines.append(f"| {r['input']} | {r['cases']} | {', '.join(map(str, r['status']))} | {r['5xx']} | "
                         f"{r['peak_rss_mb']:.0f} | {'yes' if r['alive'] else 'NO'} | {r['note']} |")
    lines += ["", "## Notes", "", *[f"- {n}" for n in result["notes"]], ""]
    (RESULTS / "reliability.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2, help="fault campaign repetitions")
    parser.add_argument("--slow", action="store_true", help="include the long campaign (4 devices, x3)")
    parser.add_argument("--code", type=Path, action="append", default=[],
                        help="also run the hostile inputs against the controller of this checkout (before/after)")
    parser.add_argument("--skip-faults", action="store_true")
    args = parser.parse_args()
    result: dict = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), load {os.getloadavg()[0]:.1f}",
                    "budget": f"fault campaign x{args.runs}{' + long campaign' if args.slow else ''}, schemathesis "
                              "60 s per run", "faults": [], "hostile": {}, "notes": [
                        "Reports sent = job reports the agents logged as published; received = rows the controller "
                        "stored for them (idempotent on seq); both counted per deployment the fault hit.",
                        "Time to recover = from the fault being injected to every device of the deployment done.",
                        "Peak RSS = VmHWM of the controller process, reset before each input (so each row is that "
                        "input's own peak); the machine is shared with other sessions.",
                    ]}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_faults:
            result["faults"] = run_faults(args.runs, args.slow, Path(tmp) / "faults.jsonl")
        for code in [REPO, *args.code]:
            label = "this tree" if code == REPO else f"controller from {code}"
            work = Path(tmp) / f"hostile-{len(result['hostile'])}"
            work.mkdir()
            result["hostile"][label] = hostile(code, work, work / "mosquitto")
    write(result)
    print((RESULTS / "reliability.md").read_text())


if __name__ == "__main__":
    main()
