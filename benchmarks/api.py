"""REST API latency under load: is the event loop free while compressions run?

Two scenarios against a real controller process (``edgefleet controller`` under uvicorn on
127.0.0.1), with the httpx client on the same machine (so it competes for the same cores):

1. ``job_status_10_running``: MAX_COMPRESSION_JOBS=10 and 10 real INT8 static quantization
   jobs running at once (an MLP of 4x1024 layers calibrated on uploaded samples, then
   evaluated); p95 of ``GET /compression/jobs/{id}``. Target < 20 ms.
2. ``reads_while_max_jobs_run``: MAX_COMPRESSION_JOBS at its default (2) with 2 such jobs
   running; p95 over a mix of reads (jobs list, models list, a model's versions, profiles,
   one job). Target < 100 ms.

A third row, ``baseline_job_status_idle``, polls a finished job with nothing running: the
machine is shared, so the difference between it and the loaded rows is what the jobs cost.
Jobs are resubmitted as they finish so the running count stays at the target for the whole
measurement; the observed number of running jobs is sampled and reported.

Usage: ``.venv/bin/python benchmarks/api.py [--requests 400]`` → ``benchmarks/results/api.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.controller.api.conftest import make_controller  # noqa: E402 - the same real-controller harness

RESULTS = REPO / "benchmarks" / "results"


def mlp_onnx(path: Path, width: int = 1024, layers: int = 4) -> Path:
    """An FP32 MLP big enough that quantizing and evaluating it keeps a core busy for seconds."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "input"
    for i in range(layers):
        inits.append(numpy_helper.from_array((rng.standard_normal((width, width)) / 32).astype(np.float32), f"w{i}"))
        inits.append(numpy_helper.from_array(rng.standard_normal(width).astype(np.float32) / 10, f"b{i}"))
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"])]
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["output"]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                           ["batch", width])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered))) - 1))]


class Load:
    """Keeps ``n`` compression jobs running by resubmitting finished ones."""

    def __init__(self, api: httpx.Client, version_id: str, n: int) -> None:
        self.api, self.version_id, self.n = api, version_id, n
        self.jobs: list[str] = []
        self.finished = 0
        self.failed: list[str] = []

    def submit(self) -> str:
        r = self.api.post("/compression/quantize", json={
            "version_id": self.version_id, "technique": "int8-static",
            "config": {"calibration_samples": 64, "per_channel": True}})
        r.raise_for_status()
        return r.json()["data"]["id"]

    def top_up(self) -> int:
        """Resubmit finished jobs; returns how many are running now."""
        running = 0
        for i, job_id in enumerate(list(self.jobs)):
            job = self.api.get(f"/compression/jobs/{job_id}").json()["data"]
            if job["state"] in ("succeeded", "failed", "cancelled"):
                self.finished += 1
                if job["state"] != "succeeded":
                    self.failed.append(job.get("error") or job["state"])
                self.jobs[i] = self.submit()
            elif job["state"] == "running":
                running += 1
        while len(self.jobs) < self.n:
            self.jobs.append(self.submit())
        return running

    def wait_running(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while self.n and self.top_up() < self.n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not get {self.n} jobs running")
            time.sleep(0.2)

    def stop(self) -> None:
        for job_id in self.jobs:
            self.api.post(f"/compression/jobs/{job_id}/cancel")


def measure(api: httpx.Client, load: Load, paths: list[str], requests: int) -> dict:
    """Time ``requests`` GETs cycling over ``paths`` while keeping the load topped up."""
    latencies, running_seen = [], []
    for i in range(requests):
        path = paths[i % len(paths)]
        t0 = time.perf_counter()
        r = api.get(path)
        latencies.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
        if i % 25 == 0 and load.n:
            running_seen.append(load.top_up())
        time.sleep(0.01)
    return {"requests": len(latencies), "p50_ms": round(statistics.median(latencies), 2),
            "p95_ms": round(pct(latencies, 95), 2), "p99_ms": round(pct(latencies, 99), 2),
            "max_ms": round(max(latencies), 2), "mean_ms": round(statistics.fmean(latencies), 2),
            "jobs_running_min": min(running_seen) if load.n else 0,
            "jobs_running_mean": round(statistics.fmean(running_seen), 2) if load.n else 0,
            "jobs_finished_during": load.finished, "jobs_failed": load.failed[:3]}


def scenario(tmp: Path, name: str, max_jobs: int, running: int, requests: int, paths_for,
             env: dict[str, str]) -> dict:
    (tmp / name).mkdir(parents=True, exist_ok=True)
    ctl = make_controller(tmp / name, MAX_COMPRESSION_JOBS=str(max_jobs), EDGEFLEET_JOB_PLUGINS="",
                          EDGEFLEET_MAX_UPLOAD_MB="64", **env).start()
    try:
        with ctl.client(timeout=60) as api:
            model = mlp_onnx(tmp / f"{name}.onnx")
            samples = tmp / f"{name}.npz"
            np.savez(samples, input=np.random.default_rng(1).standard_normal((64, 1024)).astype(np.float32))
            r = api.post("/compression/models", data={"name": "bench-mlp"},
                         files={"file": ("m.onnx", model.read_bytes()), "samples": ("s.npz", samples.read_bytes())})
            r.raise_for_status()
            version_id = r.json()["data"]["version"]["id"]
            load = Load(api, version_id, running)
            t0 = time.monotonic()
            load.wait_running()
            paths = paths_for(api, load, version_id)
            for p in paths:  # warm-up
                api.get(p)
            t1 = time.monotonic()
            out = measure(api, load, paths, requests)
            out["measure_s"] = round(time.monotonic() - t1, 1)
            out["duration_s"] = round(time.monotonic() - t0, 1)
            # evidence the jobs advance while the API is measured (they run at idle priority)
            progress = [api.get(f"/compression/jobs/{j}").json()["data"]["progress"] for j in load.jobs]
            out["jobs_progress_pct_at_end"] = [round(p, 1) for p in progress]
            load.stop()
            return out
    finally:
        ctl.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--console", action="store_true",
                        help="only the console scenarios (1,000 devices, 10,000 versions; live state latency), merged "
                             "into the existing results")
    parser.add_argument("--console-requests", type=int, default=20, help="rounds over every console page")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgefleet-bench-api-"))
    if args.console:
        return console_main(tmp, args.console_requests)

    def job_paths(api: httpx.Client, load: Load, version_id: str) -> list[str]:
        if not load.jobs:  # idle baseline: poll a finished job
            job_id = load.submit()
            while api.get(f"/compression/jobs/{job_id}").json()["data"]["state"] in ("queued", "running"):
                time.sleep(0.2)
            return [f"/compression/jobs/{job_id}"]
        return [f"/compression/jobs/{j}" for j in load.jobs]

    def read_paths(api: httpx.Client, load: Load, version_id: str) -> list[str]:
        return ["/compression/jobs?page_size=20", "/compression/models", "/compression/models/bench-mlp/versions",
                "/profiles", f"/compression/jobs/{load.jobs[0]}",
                f"/compression/models/bench-mlp/versions/{version_id}"]

    results = {
        "machine": {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
                    "python": platform.python_version(),
                    "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        "workload": "int8-static on a 4x1024 MLP (16 MB FP32), 64 calibration samples, evaluation on; client on the "
                    "same machine",
        "scenarios": {},
    }
    low = {"EDGEFLEET_JOB_PRIORITY": "low"}
    spec = [("baseline_job_status_idle", 10, 0, job_paths, 20.0, {}),
            ("job_status_10_running", 10, 10, job_paths, 20.0, {}),
            ("job_status_10_running_nice19_only", 10, 10, job_paths, 20.0, low),
            ("reads_while_max_jobs_run", 2, 2, read_paths, 100.0, {}),
            ("reads_while_max_jobs_run_nice19_only", 2, 2, read_paths, 100.0, low)]
    for name, max_jobs, running, paths_for, target, env in spec:
        print(f"running {name} ...", flush=True)
        load_before = os.getloadavg()[0]
        res = scenario(tmp, name, max_jobs, running, args.requests, paths_for, env)
        res["job_priority"] = env.get("EDGEFLEET_JOB_PRIORITY", "idle")
        res["loadavg_1m_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        res["target_p95_ms"] = target
        res["pass"] = res["p95_ms"] < target
        results["scenarios"][name] = res
        print(json.dumps(res, indent=2), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "api.json").write_text(json.dumps(results, indent=2) + "\n")
    prior = json.loads((RESULTS / "api.json").read_text()) if (RESULTS / "api.json").exists() else {}
    if "console" in prior:  # keep the console scenarios measured by --console
        results["console"] = prior["console"]
        (RESULTS / "api.json").write_text(json.dumps(results, indent=2) + "\n")
    write_md(results)
    return 0 if all(r["pass"] for r in results["scenarios"].values()) else 1


def console_main(tmp: Path, requests: int) -> int:
    """Run the console scenarios and merge them into api.json / api.md."""
    import console_load

    results = json.loads((RESULTS / "api.json").read_text()) if (RESULTS / "api.json").exists() else {
        "machine": {}, "workload": "", "scenarios": {}}
    print("running console scenarios (populating 1,000 devices and 10,000 versions) ...", flush=True)
    console = console_load.run(tmp, make_controller, requests=requests)
    console["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    results["console"] = console
    print(json.dumps(console, indent=2), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "api.json").write_text(json.dumps(results, indent=2) + "\n")
    write_md(results)
    return 0 if all(v["pass"] for k, v in console.items() if isinstance(v, dict) and "pass" in v) else 1


def write_md(results: dict) -> None:
    """api.md from api.json: the compression-load table, then the console section when measured."""
    lines = ["# REST API latency under compression load", "",
             f"Machine: {results['machine']['cpus']} CPUs, Python {results['machine']['python']}, "
             f"{results['machine']['date_utc']}. Workload: {results['workload']}.", "",
             "| scenario | job priority | jobs running | job progress at end (%) | requests | p50 ms | p95 ms | p99 ms "
             "| max ms | target p95 | pass |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results["scenarios"].items():
        prog = r["jobs_progress_pct_at_end"]
        prog_txt = f"{min(prog)}-{max(prog)}" if prog else "-"
        lines.append(f"| {name} | {r['job_priority']} | {r['jobs_running_min']} | {prog_txt} | {r['requests']} | "
                     f"{r['p50_ms']} | "
                     f"{r['p95_ms']} | {r['p99_ms']} | {r['max_ms']} | < {r['target_p95_ms']} | "
                     f"{'yes' if r['pass'] else 'NO'} |")
    lines += ["", "Load average (1 min) before/after each scenario: " + ", ".join(
        f"{n}: {r['loadavg_1m_before_after']}" for n, r in results["scenarios"].items()) + ".",
              "Job processes run in their own processes (EDGEFLEET_JOB_ISOLATION=process); priority `idle` = "
              "SCHED_IDLE + nice 19 (default), `low` = nice 19 only. The machine is shared with other engineers' "
              "workloads: compare the loaded rows with the idle baseline measured in the same run, and read the "
              "job progress column: at `idle` priority jobs only get CPU nobody else wants, so on a busy shared "
              "machine they advance slowly (the API is protected, the jobs pay).", "",
              "Reproduce: `.venv/bin/python benchmarks/api.py` (writes this file and api.json)."]
    console = results.get("console")
    if console:
        pages, live = console["console_pages_large_registry"], console["live_device_state"]
        lines += ["", "## Console (issue 15)", "",
                  f"Measured {console['machine'].get('date_utc', '')} on {console['machine'].get('cpus')} CPUs "
                  f"(shared machine, load average {pages['loadavg_1m_before_after']} before/after), a real "
                  f"`edgefleet controller` process with its fleet service on a real mosquitto, "
                  f"{pages['devices']} devices (30 telemetry samples each, drawn as sparklines) and "
                  f"{pages['versions']} versions in the registry (filled in {pages['populate_s']} s).", "",
                  "| scenario | requests / trials | p50 | p95 | max | target | pass |",
                  "| --- | --- | --- | --- | --- | --- | --- |",
                  f"| console pages (every fragment + shells) | {pages['requests']} | {pages['p50_ms']} ms | "
                  f"{pages['p95_ms']} ms | {pages['max_ms']} ms | p95 < 300 ms | {'yes' if pages['pass'] else 'NO'} |",
                  f"| live device state: agent publishes → console shows it | {live['trials']} | {live['p50_s']} s | "
                  f"{live['p95_s']} s | {live['max_s']} s | < 2 s | {'yes' if live['pass'] else 'NO'} |", "",
                  "Per page (p50 / p95 ms): " + "; ".join(
                      f"`{p}` {v['p50_ms']} / {v['p95_ms']}" for p, v in pages["pages"].items()) + ".", "",
                  f"Live state: the SSE `devices` event reached the client after {live['event_p50_s']} s (p50); the "
                  "rest is the fragment request. The feed checks the stores every 0.25 s. Measured with an httpx "
                  "SSE client doing what the page does (wait for the event, fetch the fragment), not a browser; "
                  "the browser test asserts the same path end to end with generous bounds.", "",
                  "Reproduce: `.venv/bin/python benchmarks/api.py --console`."]
    (RESULTS / "api.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
