"""Profile validation: good files load, each kind of bad file fails naming the field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from common.profiles import (
    DeviceProfile,
    ProfileError,
    list_profiles,
    load_profile,
    load_profile_file,
    profiles_dir,
    select_execution_providers,
)

GOOD = """
id = "my-board"
name = "My board"
arch = "aarch64"
cpu = "Cortex-A55 x4"
isa_features = ["neon", "asimd", "asimddp"]
cores = 4
ram_mb = 2048
storage_mb = 4096
runtimes = ["onnxruntime", "tflite"]
formats = ["onnx", "tflite"]
fast_dtypes = ["int8", "fp32"]

[slo]
latency_p95_ms = 200
memory_mb = 256

[recipe]
technique = "int8-static"
format = "tflite"
params = { full_integer = true }
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "board.toml"
    path.write_text(text)
    return path


def test_user_profile_loads_with_defaults(tmp_path):
    profile = load_profile_file(_write(tmp_path, GOOD))
    assert profile.id == "my-board" and profile.has_int8_dot
    assert profile.tolerance.min_cosine == 0.99  # default tolerance applies
    assert profile.execution_providers == ["CPUExecutionProvider"]


def test_user_profile_by_path_and_from_override_dir(tmp_path, monkeypatch):
    path = _write(tmp_path, GOOD)
    assert load_profile(str(path)).id == "my-board"
    monkeypatch.setenv("EDGEFLEET_PROFILES_DIR", str(tmp_path))
    (tmp_path / "my-board.toml").write_text(GOOD)
    path.unlink()
    assert profiles_dir() == tmp_path
    assert load_profile("my-board").cores == 4


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ('arch = "aarch64"', 'arch = "mips"', "arch"),
        ("cores = 4", "cores = 0", "cores"),
        ("ram_mb = 2048", 'ram_mb = "lots"', "ram_mb"),
        ('formats = ["onnx", "tflite"]', 'formats = ["onnx", "caffe"]', "formats.1"),
        ('fast_dtypes = ["int8", "fp32"]', 'fast_dtypes = ["int3"]', "fast_dtypes.0"),
        ("latency_p95_ms = 200", "latency_p95_ms = -1", "slo.latency_p95_ms"),
        ('format = "tflite"', 'format = "coreml"', "recipe.format"),  # not in formats
        ('id = "my-board"', 'id = "My Board!"', "id"),
        ('cpu = "Cortex-A55 x4"', 'cpu = "x"\nturbo = true', "turbo"),  # unknown field
        ("memory_mb = 256\n", "memory_mb = 256\n[tolerance]\nmin_cosine = 1.5\n", "tolerance.min_cosine"),
    ],
)
def test_bad_profile_error_names_field(tmp_path, old, new, field):
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ProfileError) as info:
        load_profile_file(path)
    msg = str(info.value)
    assert f"{field}:" in msg or f"{field} " in msg, msg
    assert str(path) in msg


def test_missing_required_field_is_named(tmp_path):
    path = _write(tmp_path, GOOD.replace('runtimes = ["onnxruntime", "tflite"]\n', ""))
    with pytest.raises(ProfileError, match=r"runtimes: Field required"):
        load_profile_file(path)


def test_shipped_profiles_cover_the_seven_device_classes():
    profiles = {p.id: p for p in list_profiles()}
    assert not profiles["rpi4"].has_int8_dot and profiles["rpi5"].has_int8_dot
    assert profiles["jetson-orin-nano"].execution_providers[0] == "TensorrtExecutionProvider"
    assert profiles["visionfive2"].arch == "riscv64"
    assert profiles["android-arm64"].recipe.format == "tflite"
    assert profiles["iphone"].recipe.format == "coreml"
    assert "avx512_vnni" in profiles["x86-edge"].isa_features
    for p in profiles.values():  # every recipe format is one the device runs
        assert p.recipe.format in p.formats


def test_shipped_files_round_trip_through_the_model():
    for path in sorted(profiles_dir().glob("*.toml")):
        data = tomllib.loads(path.read_text())
        assert DeviceProfile.model_validate(data).id == path.stem


def test_provider_fallback_keeps_profile_order_and_cpu_floor():
    jetson = load_profile("jetson-orin-nano").execution_providers
    assert select_execution_providers(jetson, ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_execution_providers(jetson, ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert select_execution_providers(
        jetson, ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]
    ) == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


class _FakeOptions:
    def __init__(self) -> None:
        self.entries: dict[str, str] = {}

    def add_session_config_entry(self, key: str, value: str) -> None:
        self.entries[key] = value


def test_ort_tuning_flushes_denormals_everywhere_and_disables_skip_layernorm_on_x86():
    from common.profiles import OrtTuning, load_profile

    x86, pi = load_profile("x86-edge").onnxruntime, load_profile("rpi4").onnxruntime
    opts = _FakeOptions()
    assert x86.apply(opts) == ["SkipLayerNormFusion"]
    assert opts.entries == {"session.set_denormal_as_zero": "1"}
    assert pi.apply(_FakeOptions()) is None  # nothing disabled: ORT wants None, not []
    with pytest.raises(ValueError, match="disabled_optimizer"):
        OrtTuning.model_validate({"disabled_optimizer": ["typo"]})
