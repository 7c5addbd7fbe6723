"""Each technique config declares its REST family; nothing is guessed from the technique's name."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from controller.compression import CompressionConfig, TechniqueFamily, techniques, techniques_of
from controller.jobs.kinds import build_config


def test_every_registered_technique_declares_a_family() -> None:
    assert all(isinstance(cls.family, TechniqueFamily) for cls in techniques().values())
    assert {"int8-static", "int8-dynamic", "int4-weight", "fp16", "mixed", "qat"} <= set(techniques_of("quantize"))
    assert set(techniques_of(TechniqueFamily.PRUNE)) >= {"prune-structured", "prune-unstructured"}
    assert set(techniques_of("decompose")) >= {"svd", "tucker"} and techniques_of("distill") == ["distill"]


def test_a_config_without_family_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="must declare its family"):
        @dataclasses.dataclass(frozen=True)
        class _Nameless(CompressionConfig):
            technique: ClassVar[str] = "test-no-family"
    assert "test-no-family" not in techniques()


def test_family_mismatch_names_the_family_members() -> None:
    from controller.jobs.models import InvalidJobSpecError

    with pytest.raises(InvalidJobSpecError, match="'svd' is not a prune technique; prune techniques: prune-structured"):
        build_config("prune", "svd", {})
    assert build_config("decompose", "svd", {}).technique == "svd"


def test_calibration_samples_default_comes_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from controller.compression import Int8StaticConfig

    monkeypatch.setenv("CALIBRATION_SAMPLES", "37")
    assert Int8StaticConfig().calibration_samples == 37  # read when the config is made, not at import
    monkeypatch.delenv("CALIBRATION_SAMPLES")
    assert Int8StaticConfig().calibration_samples == 128
