"""Host settings (caches, converter venv) come from ``Settings``, with the variables the docs name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.settings import Settings


def test_cache_dir_follows_edgefleet_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from controller.zoo import cache_dir

    monkeypatch.setenv("EDGEFLEET_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    monkeypatch.delenv("EDGEFLEET_CACHE")
    assert Settings().cache_dir == Path.home() / ".cache" / "edgefleet"


def test_convert_python_setting_is_used_by_the_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from controller.demo import tflite

    python = tmp_path / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    monkeypatch.setenv("EDGEFLEET_CONVERT_PYTHON", str(python))
    assert tflite.convert_python() == python


def test_a_bad_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALIBRATION_SAMPLES", "0")
    with pytest.raises(ValidationError, match="CALIBRATION_SAMPLES"):
        Settings()
