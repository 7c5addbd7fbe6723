"""The demo's TFLite artifacts, from the main venv: find them in the cache or build them in the convert venv.

The TFLite converter only installs in ``.venv-convert`` (its pins clash with the main
venv, see the Makefile), so the demo runs :mod:`controller.demo.tflite_build` there as a
tracked child process and reads back its ``tflite.json``. The result is cached like the
zoo's ONNX export: under ``$EDGEFLEET_CACHE/demo-tflite/<model>-<profile>-<key>/``, where
the key hashes the code that builds it and the converter pins, so a second demo run reuses
it in a second and a code change rebuilds it.

Without the convert venv (``edgefleet demo`` run directly, before ``make demo`` ever
built it) and without a cached set, :func:`unavailable_reason` says why, and the demo
runs its ONNX devices only.

Example:
    >>> tset = ensure_tflite_set("minilm", "android-arm64", log_path=Path("tflite.log"))  # doctest: +SKIP
    >>> tset.path("int8"), tset.report["builds"]["int8"]["vs_fp32"]["cosine"]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.profiles import load_profile
from controller.demo.processes import Child
from controller.demo.tflite_build import BUILDS, REPORT

REPO_ROOT = Path(__file__).resolve().parents[2]
CONVERT_PYTHON_ENV = "EDGEFLEET_CONVERT_PYTHON"


class TfliteBuildError(RuntimeError):
    """The TFLite build in the convert venv failed or timed out; the message ends with its log tail."""


@dataclass(frozen=True)
class TfliteSet:
    """The three TFLite builds of one model (``fp32``, ``int8``, ``degraded``) and their build report."""

    directory: Path
    report: dict[str, Any]

    def path(self, name: str) -> Path:
        """File of one build (``fp32``, ``int8`` or ``degraded``)."""
        return self.directory / self.report["builds"][name]["file"]


def tflite_profiles(profiles: tuple[str, ...]) -> tuple[str, ...]:
    """The demo profiles whose recipe ships TFLite (``android-arm64``): they get the TFLite builds."""
    return tuple(p for p in profiles if load_profile(p).recipe.format == "tflite")


def convert_python() -> Path | None:
    """The convert venv's interpreter (``$EDGEFLEET_CONVERT_PYTHON`` or ``.venv-convert/bin/python``), if present."""
    from controller.settings import Settings

    path = Settings().convert_python or REPO_ROOT / ".venv-convert" / "bin" / "python"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _convert_pins() -> str:
    """The convert extra's pins: a converter upgrade must rebuild the cached set."""
    try:
        data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return ""
    return ",".join(data.get("project", {}).get("optional-dependencies", {}).get("convert", []))


def cache_path(model: str, profile: str) -> Path:
    """Where the set for (model, profile) is cached; the key changes with the code and pins that build it."""
    from controller.zoo.cache import cache_dir, code_key

    demo = Path(__file__).resolve().parent
    conversion = demo.parent / "conversion"
    files = (demo / "tflite_build.py", conversion / "to_tflite.py", conversion / "api.py", conversion / "check.py",
             demo.parent / "zoo" / "base.py", demo.parent / "zoo" / "export.py")
    zoo_file = demo.parent / "zoo" / f"{model.replace('-', '_')}.py"
    key = code_key(model, profile, _convert_pins(), files=files + ((zoo_file,) if zoo_file.exists() else ()))
    return cache_dir() / "demo-tflite" / f"{model}-{profile}-{key}"


def cached_set(model: str, profile: str) -> TfliteSet | None:
    """The cached set if a complete one exists (``tflite.json`` is written last)."""
    directory = cache_path(model, profile)
    try:
        report = json.loads((directory / REPORT).read_text())
    except (OSError, ValueError):
        return None
    tset = TfliteSet(directory, report)
    if all(name in report.get("builds", {}) and tset.path(name).is_file() for name, _ in BUILDS):
        return tset
    return None


def unavailable_reason(model: str, profile: str) -> str | None:
    """Why the TFLite set can be neither found nor built here (None when it can)."""
    if cached_set(model, profile) is not None or convert_python() is not None:
        return None
    return (f"no TFLite converter: {REPO_ROOT / '.venv-convert'} is missing (set {CONVERT_PYTHON_ENV} or run "
            "`make demo`, which builds it)")


def ensure_tflite_set(model: str, profile: str, *, log_path: Path, timeout: float = 1800.0) -> TfliteSet:
    """The cached set, else build it now in the convert venv (about 2 minutes for MiniLM on 2 cores).

    Raises:
        TfliteBuildError: no convert venv, or the build failed or timed out (with its log tail).
    """
    found = cached_set(model, profile)
    if found is not None:
        return found
    python = convert_python()
    if python is None:
        raise TfliteBuildError(unavailable_reason(model, profile) or "no convert venv")
    dest = cache_path(model, profile)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=dest.name + ".", suffix=".tmp"))
    argv = [str(python), "-m", "controller.demo.tflite_build", "--model", model, "--profile", profile,
            "--out", str(tmp)]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    child = Child("tflite-build", argv, log_path, env=env).start()
    try:
        assert child.proc is not None
        try:
            code = child.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            child.stop()
            raise TfliteBuildError(f"TFLite build timed out after {timeout:.0f} s:\n{child.tail()}") from exc
        if code != 0 or not (tmp / REPORT).is_file():
            raise TfliteBuildError(f"TFLite build failed (exit {code}); log {log_path}:\n{child.tail()}")
        try:
            tmp.rename(dest)  # atomic: a concurrent run that finished first wins, ours is dropped
        except OSError:
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    found = cached_set(model, profile)
    if found is None:
        raise TfliteBuildError(f"TFLite build wrote no complete set to {dest}")
    return found
