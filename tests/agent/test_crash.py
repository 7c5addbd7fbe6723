"""SIGKILL the agent process mid-download and mid-benchmark; on restart it resumes to a working model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import psutil
import pytest

from fleetsim.waiting import wait_until

from .artifacts import make_artifact

pytestmark = pytest.mark.timeout(180)

COMMITTED = ["download", "verify", "install", "benchmark", "commit", "idle"]


def _journal_state(data_dir: Path) -> str | None:
    try:
        return json.loads((data_dir / "journal.json").read_text())["state"]
    except (OSError, ValueError, KeyError):
        return None


def _bench_children(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "agent.bench_child" in cmd and marker in cmd:
            found.append(proc)
    return found


def test_sigkill_mid_download_resumes_missing_chunks_only(
    controller, agent_process, reference, keypair, tmp_path
):
    dev = "crash-dl"
    data_dir = tmp_path / dev
    art = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1")
    model = art.manifest.blob("model")
    half = model.chunk_count // 2
    controller.withhold = lambda sha, idx: sha == model.sha256 and idx >= half
    proc = agent_process(dev).start()
    controller.deploy(dev, art, "d-crash-dl")
    chunk_dir = data_dir / "downloads" / model.sha256
    wait_until(lambda: len(list(chunk_dir.glob("*.chunk"))) >= half, 30, "first half of the chunks on disk", 0.05)
    assert _journal_state(data_dir) == "download"
    session = controller.states[dev].session_id
    proc.kill()
    # the broker publishes the last-will: offline, same session id (so it cannot overwrite a newer birth)
    controller.wait_for(lambda: not controller.states[dev].online, 10, "last-will")
    assert controller.states[dev].session_id == session

    before = len(controller.requests)
    controller.withhold = lambda sha, idx: False
    proc.start()
    reports = controller.wait_outcome(dev, "d-crash-dl", 60)
    states = [r.state for r in reports]
    assert states == ["download", "download", *COMMITTED[1:]], states
    assert "resumed after restart" in reports[1].detail
    seqs = [r.seq for r in reports]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    after = [req for d, req in controller.requests[before:] if d == dev and req.sha256 == model.sha256]
    assert after and set(after[0].missing) == set(range(half, model.chunk_count)), after[0].missing
    controller.wait_for(lambda: controller.states[dev].active and controller.states[dev].active.version == "v1",
                        10, "v1 active")
    assert proc.terminate() == 0
    assert not controller.states[dev].online  # clean shutdown published offline state


def test_sigkill_mid_benchmark_rebenchmarks_and_commits(controller, agent_process, reference, keypair, tmp_path):
    dev = "crash-bench"
    data_dir = tmp_path / dev
    v1 = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1")
    v2 = make_artifact(tmp_path, reference.slightly_perturbed_model(), reference, keypair[0], version="v2")
    proc = agent_process(dev, extra=["--bench-runs", "20000"]).start()
    controller.deploy(dev, v1, "d-v1")
    assert [r.state for r in controller.wait_outcome(dev, "d-v1", 60)] == COMMITTED

    controller.deploy(dev, v2, "d-v2")
    wait_until(lambda: _journal_state(data_dir) == "benchmark", 30, "benchmark state", 0.005)
    wait_until(lambda: _bench_children(str(data_dir)), 10, "benchmark child running", 0.005)
    proc.kill()
    wait_until(lambda: not _bench_children(str(data_dir)), 10, "benchmark child to die with the agent", 0.05)
    assert _journal_state(data_dir) == "benchmark"

    proc.args[proc.args.index("20000")] = "8"
    proc.start()
    reports = controller.wait_outcome(dev, "d-v2", 60)
    states = [r.state for r in reports]
    # reports the killed process published just before SIGKILL (verify, install, benchmark) may not have left
    # it: the journal is written first, the report published after. The resumed process reports the state again.
    assert states[-3:] == ["benchmark", "commit", "idle"]
    assert states[0] == "download"
    order = ["download", "verify", "install", "benchmark"]
    assert [order.index(s) for s in states[:-2]] == sorted(order.index(s) for s in states[:-2])
    assert reports[-3].detail == "resumed after restart in 'benchmark'"
    assert controller.benches[dev][-1].decision == "commit"
    controller.wait_for(lambda: controller.states[dev].active and controller.states[dev].active.version == "v2",
                        10, "v2 active")
    assert controller.states[dev].previous.version == "v1"


def test_sigterm_mid_benchmark_exits_cleanly_and_resumes(controller, agent_process, reference, keypair, tmp_path):
    dev = "term-bench"
    data_dir = tmp_path / dev
    v1 = make_artifact(tmp_path, reference.good_model(), reference, keypair[0], version="v1")
    proc = agent_process(dev, extra=["--bench-runs", "50000"]).start()
    controller.deploy(dev, v1, "d-term")
    wait_until(lambda: _bench_children(str(data_dir)), 30, "benchmark child running", 0.02)
    started = time.monotonic()
    assert proc.terminate() == 0
    assert time.monotonic() - started < 8
    assert not _bench_children(str(data_dir))
    assert _journal_state(data_dir) == "benchmark"
    controller.wait_for(lambda: not controller.states[dev].online, 5, "offline state on SIGTERM")
    proc.args[proc.args.index("50000")] = "8"
    proc.start()
    assert [r.state for r in controller.wait_outcome(dev, "d-term", 60)][-3:] == ["benchmark", "commit", "idle"]
