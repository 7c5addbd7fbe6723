"""Unit tests: chunk store, windowed downloader, regression gate, benchmark, journal, slots, backoff."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from agent.backoff import Backoff
from agent.bench import BenchSpec, run_benchmark
from agent.compare import decide
from agent.download import BlobDownload, ChunkOutcome, Downloader
from agent.errors import ArtifactVerificationError, BenchmarkError
from agent.journal import Journal, JournalData
from agent.slots import SlotStore
from common.errors import ReasonCode
from common.manifest import Thresholds, read_chunk
from common.messages import BenchMetrics

from .artifacts import linear_model, make_artifact


def _chunks(artifact, role):
    ref = artifact.manifest.blob(role)
    return ref, [read_chunk(artifact.paths[role], i, ref.chunk_size) for i in range(ref.chunk_count)]


@pytest.fixture
def art(tmp_path, keypair, reference):
    return make_artifact(tmp_path / "src", reference.good_model(), reference, keypair[0], version="v1")


def test_chunks_out_of_order_duplicate_corrupt_truncated(tmp_path, art):
    ref, chunks = _chunks(art, "model")
    blob = BlobDownload(tmp_path, ref)
    assert blob.accept(3, chunks[3][:-1]) is ChunkOutcome.CORRUPT
    assert blob.accept(3, b"x" + chunks[3][1:]) is ChunkOutcome.CORRUPT
    assert blob.accept(len(chunks), chunks[0]) is ChunkOutcome.UNKNOWN
    for i in reversed(range(len(chunks))):
        assert blob.accept(i, chunks[i]) is ChunkOutcome.STORED
    assert blob.accept(0, chunks[0]) is ChunkOutcome.DUPLICATE
    assert blob.complete()
    assert blob.assemble().read_bytes() == art.paths["model"].read_bytes()


def test_chunk_store_survives_restart_and_drops_torn_chunks(tmp_path, art):
    ref, chunks = _chunks(art, "model")
    blob = BlobDownload(tmp_path, ref)
    for i in (0, 1, 2):
        blob.accept(i, chunks[i])
    (blob.dir / "1.chunk").write_bytes(b"torn")  # power cut mid-write
    again = BlobDownload(tmp_path, ref)
    assert again.have == {0, 2} and again.missing()[:2] == [1, 3]


def test_assemble_mismatch_discards(tmp_path, art):
    ref, chunks = _chunks(art, "model")
    blob = BlobDownload(tmp_path, ref.model_copy(update={"sha256": "cd" * 32}))
    for i, data in enumerate(chunks):
        blob.accept(i, data)
    with pytest.raises(ArtifactVerificationError) as err:
        blob.assemble()
    assert err.value.reason is ReasonCode.HASH_MISMATCH and not blob.dir.exists()


def test_downloader_windows_and_rerequests(tmp_path, art):
    now = [0.0]
    sent: list[tuple[str, list[int]]] = []
    dl = Downloader(tmp_path, art.manifest, lambda sha, idx: sent.append((sha, idx)), window=4, clock=lambda: now[0])
    ref, chunks = _chunks(art, "model")
    dl.start()
    first = [idx for sha, idx in sent if sha == ref.sha256]
    assert first == [[0, 1, 2, 3]]
    sent.clear()
    dl.on_chunk(ref.sha256, 0, chunks[0])
    assert sent == []  # 3 of 4 still outstanding: no new request yet
    dl.on_chunk(ref.sha256, 1, chunks[1])
    assert sent == [(ref.sha256, [4, 5])]
    sent.clear()
    dl.on_chunk(ref.sha256, 2, b"bad")
    assert sent == [(ref.sha256, [2])]  # a corrupt chunk is asked for again at once
    sent.clear()
    now[0] = 10.0
    dl.tick(3.0)
    assert (ref.sha256, [2, 3, 4, 5]) in sent
    assert dl.stalled_for() == 10.0


def _metrics(**kw) -> BenchMetrics:
    base = dict(latency_p50_ms=1.0, latency_p95_ms=2.0, load_ms=5.0, peak_rss_delta_mb=10.0, quality=0.999,
                quality_metric="cosine", runs=10)
    return BenchMetrics(**{**base, **kw})


@pytest.mark.parametrize(
    "candidate, code",
    [
        (_metrics(), ReasonCode.OK),
        (_metrics(latency_p95_ms=2.0 * 1.25 + 0.5 + 0.01), ReasonCode.REGRESSION_LATENCY),
        (_metrics(latency_p95_ms=2.0 * 1.25 + 0.5), ReasonCode.OK),
        (_metrics(peak_rss_delta_mb=10 * 1.3 + 16 + 1), ReasonCode.REGRESSION_MEMORY),
        (_metrics(quality=0.97), ReasonCode.REGRESSION_QUALITY),
    ],
)
def test_regression_gate(candidate, code):
    verdict = decide(candidate, _metrics(), Thresholds())
    assert verdict.reason is code and verdict.commit is (code is ReasonCode.OK)
    assert any(char.isdigit() for char in " ".join(verdict.reasons))


def test_gate_quality_drop_relative_to_baseline_and_first_model():
    verdict = decide(_metrics(quality=0.985), _metrics(quality=1.0), Thresholds(min_quality=0.9, max_quality_drop=0.01))
    assert verdict.reason is ReasonCode.REGRESSION_QUALITY and "baseline 1.0000" in verdict.reasons[0]
    assert decide(_metrics(latency_p95_ms=999), None, Thresholds()).commit


def _spec(art, metric="cosine", **kw) -> BenchSpec:
    return BenchSpec(art.paths["model"], art.paths["golden"], "onnx", metric, threads=1, runs=5, warmup=1, **kw)


@pytest.mark.parametrize("metric", ["cosine", "top1"])
def test_benchmark_good_and_degraded(metric, tmp_path, keypair, reference, art):
    good = run_benchmark(_spec(art, metric))
    assert good.quality > 0.9999 and good.runs == 5 and good.latency_p95_ms >= good.latency_p50_ms > 0
    assert good.load_ms > 0 and good.peak_rss_delta_mb >= 0 and good.runtime == "onnxruntime"
    bad_art = make_artifact(tmp_path, reference.degraded_model(), reference, keypair[0], version="bad")
    bad = run_benchmark(_spec(bad_art, metric))
    assert bad.quality < 0.7


def test_benchmark_reports_load_failure_and_bad_golden(tmp_path, art):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(BenchmarkError) as err:
        run_benchmark(BenchSpec(broken, art.paths["golden"], "onnx", "cosine", runs=2, warmup=0))
    assert err.value.reason is ReasonCode.LOAD_FAILED
    golden = tmp_path / "g.npz"
    np.savez(golden, **{"input:a": np.zeros((2, 64), np.float32), "input:b": np.zeros((2, 64), np.float32),
                        "output:y": np.zeros((2, 32), np.float32)})
    with pytest.raises(BenchmarkError) as err:
        run_benchmark(BenchSpec(art.paths["model"], golden, "onnx", "cosine", runs=2, warmup=0))
    assert err.value.reason is ReasonCode.BENCHMARK_FAILED and "lacks inputs" in err.value.detail


def test_benchmark_unbatched_graph(tmp_path, reference):
    """A graph without a batch axis gets one sample at a time."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load_from_string(linear_model(reference.weight, reference.bias))
    model.graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64]))
    path = tmp_path / "fixed.onnx"
    path.write_bytes(model.SerializeToString())
    golden = reference.write_golden(tmp_path / "g.npz")
    assert run_benchmark(BenchSpec(path, golden, "onnx", "cosine", runs=2, warmup=0)).quality > 0.9999


def test_journal_atomic_and_quarantines_garbage(tmp_path):
    journal = Journal(tmp_path / "journal.json")
    assert journal.load().state == "idle"
    data = JournalData(state="benchmark", deployment_id="d1", job_seq=7)
    journal.save(data)
    assert journal.load() == data
    assert not list(tmp_path.glob(".*tmp"))
    (tmp_path / "journal.json").write_text("{truncated")
    assert journal.load().state == "idle" and (tmp_path / "journal.corrupt").exists()
    journal.save(JournalData(version=99))
    assert json.loads((tmp_path / "journal.json").read_text())["version"] == 99
    assert journal.load().state == "idle"


def test_slots_install_verify_activate(tmp_path, art, reference, keypair):
    store = SlotStore(tmp_path / "slots")
    assert store.current() is None and store.inactive().name == "a"
    slot = store.inactive()
    slot.install(art.manifest, art.paths)
    assert slot.verify().version == "v1" and store.current() is None
    store.activate("a")
    assert store.current().name == "a" and store.inactive().name == "b" and store.previous() is None
    (slot.path / "model.onnx").write_bytes(b"flipped bits")
    with pytest.raises(ArtifactVerificationError):
        slot.verify()
    wrong = {"model": art.paths["golden"], "golden": art.paths["golden"]}
    with pytest.raises(ArtifactVerificationError):
        store.inactive().install(art.manifest, wrong)
    assert store.inactive().manifest() is None


def test_backoff_is_capped_and_jittered():
    b = Backoff(0.5, 4.0, rng=random.Random(0))
    delays = [b.next() for _ in range(10)]
    assert all(0.25 <= d <= 4.0 for d in delays) and max(delays[5:]) > 2.0
    assert len(set(delays)) == len(delays)
    b.reset()
    assert b.next() <= 0.5


def test_peak_memory_counts_the_model_not_the_agent(tmp_path):
    """ru_maxrss would carry the agent's high-water mark into the child (fork+exec); VmHWM does not."""
    rng = np.random.default_rng(1)
    weight = rng.standard_normal((1024, 2048)).astype(np.float32)  # 8 MiB of weights
    model = tmp_path / "big.onnx"
    model.write_bytes(linear_model(weight, np.zeros(2048, np.float32)))
    x = rng.standard_normal((2, 1024)).astype(np.float32)
    golden = tmp_path / "g.npz"
    np.savez(golden, **{"input:x": x, "output:y": x @ weight})
    ballast = np.ones(64 * 2**20 // 8)  # the parent is bigger than the model; must not hide it
    m = run_benchmark(BenchSpec(model, golden, "onnx", "cosine", runs=2, warmup=0))
    assert ballast.sum() > 0
    assert 8 <= m.peak_rss_delta_mb < 200, m


def test_benchmark_applies_the_profile_ort_tuning(art, monkeypatch):
    """The child opens ONNX sessions with the profile's [onnxruntime] tuning; a bad optimizer name fails loudly."""
    import agent.runtimes as runtimes
    from agent.bench import measure
    from common.profiles import OrtTuning

    seen = []
    real = runtimes.OrtTuning.apply
    monkeypatch.setattr(runtimes.OrtTuning, "apply", lambda self, opts: seen.append(self) or real(self, opts))
    monkeypatch.setattr(runtimes, "_ORT_TUNING", OrtTuning())
    tuning = {"session_config": {"session.set_denormal_as_zero": "1"}, "disabled_optimizers": ["SkipLayerNormFusion"]}
    assert measure(_spec(art, ort_tuning=tuning)).quality > 0.9999
    assert seen and seen[-1].disabled_optimizers == ["SkipLayerNormFusion"]
    assert _spec(art, ort_tuning=tuning).to_json() and BenchSpec.from_json(_spec(art, ort_tuning=tuning).to_json()
                                                                       ).ort_tuning == tuning
