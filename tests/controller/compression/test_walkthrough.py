"""docs/compression.md's "your own model" walk-through, run block by block exactly as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _blocks() -> list[tuple[str, str]]:
    text = (ROOT / "docs" / "compression.md").read_text()
    section = text[text.index("<!-- walkthrough:start -->"):text.index("<!-- walkthrough:end -->")]
    return re.findall(r"```(python|sh)\n(.*?)```", section, flags=re.S)


@pytest.mark.slow
def test_walkthrough_commands_run_as_documented(tmp_path):
    blocks = _blocks()
    assert [lang for lang, _ in blocks] == ["python", "python", "sh", "sh", "sh"]
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    outputs = []
    for lang, code in blocks:
        argv = [sys.executable, "-c", code] if lang == "python" else ["bash", "-ec", code]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900, check=False)
        assert proc.returncode == 0, f"{lang} block failed:\n{code}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        outputs.append(proc.stdout)
    report = json.loads((tmp_path / "out" / "my_model.int8.json").read_text())
    assert report["metrics"]["eval"]["held_out"] is True and report["metrics"]["eval"]["metric"] == "top1_agreement"
    assert report["report"]["speed_guard"]["delivered"] in ("int8-static", "fp16", "int4-weight", "fp32")
    assert "'held_out': True" in outputs[3]
    build_out = outputs[4]
    assert "summary" in build_out and "rpi5" in build_out and "--eval" in build_out and "next:" in build_out
    assert "SYNTHETIC" not in build_out
