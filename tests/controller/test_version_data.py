"""Where a version's data comes from, through its lineage: uploaded samples, the zoo, a stored golden set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.keys import load_or_create_private_key
from controller.artifacts import ArtifactBuilder, ArtifactBuildError
from controller.registry import Registry
from controller.version_data import VersionData, load_samples
from tests.tiny_models import tiny_linear_onnx


@pytest.fixture
def reg(tmp_path: Path):
    registry = Registry(tmp_path / "ws")
    yield registry
    registry.close()


def _upload_with_samples(reg: Registry, tmp: Path, n: int = 40):
    """An uploaded model whose root carries a samples .npz, and a child version derived from it."""
    samples = tmp / "samples.npz"
    x = np.random.default_rng(0).standard_normal((n, 8)).astype(np.float32)
    np.savez(samples, x=x)
    model = reg.create_model(name="user-model")
    sha = reg.put_blob(path=samples).sha256
    root = reg.add_version(model_id=model.id, path=tiny_linear_onnx(tmp / "fp32.onnx"),
                           config={"source": "upload", "samples": n, "samples_sha256": sha})
    child = reg.add_version(model_id=model.id, path=tiny_linear_onnx(tmp / "child.onnx", seed=2), parent_id=root.id)
    return model, root, child, x


def test_uploaded_samples_are_found_from_any_version_of_the_lineage(reg: Registry, tmp_path: Path) -> None:
    model, root, child, x = _upload_with_samples(reg, tmp_path)
    data = VersionData(reg)
    assert data.root(child).id == root.id
    assert data.zoo_name(child) is None and data.quality_metric(child) == "cosine"
    assert data.samples_path(child) == data.samples_path(root) is not None
    stacked = data.check_inputs(child)
    assert stacked is not None and stacked["x"].shape == (32, 8) and np.array_equal(stacked["x"], x[:32])
    src = tmp_path / "copy.onnx"
    assert data.compression_input(child, src) == (src, data.samples_path(root))
    golden = data.golden_inputs(model, child, root)
    assert golden is not None and len(golden.inputs) == 16 and golden.inputs[0]["x"].shape == (1, 8)
    assert golden.quality_metric == "cosine"
    assert golden.reference_onnx == reg.blob_path(sha256=root.sha256)


def test_a_model_without_samples_or_zoo_has_no_golden_inputs(reg: Registry, tmp_path: Path) -> None:
    model = reg.create_model(name="plain")
    version = reg.add_version(model_id=model.id, path=tiny_linear_onnx(tmp_path / "m.onnx"))
    data = VersionData(reg)
    assert data.samples_path(version) is None and data.check_inputs(version) is None
    assert data.golden_inputs(model, version, data.root(version)) is None
    builder = ArtifactBuilder(reg, signing_key=load_or_create_private_key(tmp_path / "k" / "controller.key"))
    with pytest.raises(ArtifactBuildError, match="not a zoo model"):
        builder.artifact_for(version_id=version.id, profile="rpi4")


def test_zoo_lineage_is_named_by_the_import_record_only(reg: Registry, tmp_path: Path) -> None:
    model = reg.create_model(name="mobilenetv2")  # a zoo *name* without an import record is not a zoo lineage
    onnx = tiny_linear_onnx(tmp_path / "m.onnx")
    plain = reg.add_version(model_id=model.id, path=onnx)
    imported = reg.add_version(model_id=model.id, path=tiny_linear_onnx(tmp_path / "z.onnx", seed=1),
                               config={"source": "zoo", "zoo": "mnist-cnn"})
    child = reg.add_version(model_id=model.id, path=tiny_linear_onnx(tmp_path / "c.onnx", seed=2),
                            parent_id=imported.id)
    data = VersionData(reg)
    assert data.zoo_name(plain) is None
    assert data.zoo_name(imported) == data.zoo_name(child) == "mnist-cnn"


def test_default_builder_uses_uploaded_samples_and_reuses_the_lineage_golden(reg: Registry, tmp_path: Path) -> None:
    _, root, child, _ = _upload_with_samples(reg, tmp_path)
    builder = ArtifactBuilder(reg, signing_key=load_or_create_private_key(tmp_path / "k" / "controller.key"))
    first = builder.artifact_for(version_id=root.id, profile="rpi4")
    second = builder.artifact_for(version_id=child.id, profile="x86-edge")
    golden = [next(f["sha256"] for f in a.manifest["files"] if f["role"] == "golden") for a in (first, second)]
    assert golden[0] == golden[1] and first.manifest["quality_metric"] == "cosine"
    assert VersionData(reg).stored_golden(child) == (golden[0], "cosine")


def test_load_samples_splits_on_the_batch_axis(tmp_path: Path) -> None:
    path = tmp_path / "s.npz"
    np.savez(path, a=np.arange(6, dtype=np.float32).reshape(3, 2), b=np.ones((3, 1), np.float32))
    samples = load_samples(path)
    assert len(samples) == 3 and samples[2]["a"].tolist() == [[4.0, 5.0]] and samples[0]["b"].shape == (1, 1)
