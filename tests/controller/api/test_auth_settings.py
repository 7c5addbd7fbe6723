"""Key parsing and settings validation (unit level: no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from controller.api.auth import KeyConfigError, KeyRing, Role, generate_key, hash_key
from controller.settings import Settings, is_loopback


def test_keyring_from_env_and_file(tmp_path: Path) -> None:
    rw, rw_entry = generate_key("ci")
    ro, ro_entry = generate_key("dash", Role.READ_ONLY)
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# comment\n\n{ro_entry}\n")
    ring = KeyRing.from_settings(rw_entry, keys_file)
    assert len(ring) == 2
    assert ring.lookup(rw).can_write and ring.lookup(rw).name == "ci"
    assert not ring.lookup(ro).can_write
    assert ring.lookup("efk_wrong") is None
    assert hash_key(rw) in rw_entry and rw not in rw_entry  # only the hash is configured
    assert len(KeyRing.from_settings(f"x:rw:sha256:{hash_key('t')}", None)) == 1


@pytest.mark.parametrize("entry", ["ci:admin:" + "0" * 64, "ci:rw:short", "no-colons", "ci:rw:" + "G" * 64])
def test_bad_key_entries_name_the_entry(entry: str) -> None:
    with pytest.raises(KeyConfigError, match="not name:role:sha256hex"):
        KeyRing([entry])


def test_key_file_missing_and_bad_names(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="cannot read"):
        KeyRing.from_settings("", tmp_path / "nope")
    with pytest.raises(KeyConfigError, match="key name"):
        generate_key("has space")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MAX_COMPRESSION_JOBS", "5")
    monkeypatch.setenv("COMPRESSION_WORKSPACE", str(tmp_path))
    monkeypatch.setenv("DEFAULT_QUANTIZATION_BITS", "4")
    monkeypatch.setenv("ENABLE_DYNAMIC_QUANTIZATION", "true")
    monkeypatch.setenv("EDGEFLEET_BROKER_HOST", "127.0.0.1")
    monkeypatch.setenv("EDGEFLEET_BROKER_PASSWORD", "s3cret")
    s = Settings()
    assert s.max_compression_jobs == 5 and s.default_quantization_bits == 4 and s.enable_dynamic_quantization
    assert s.jobs_db_path == tmp_path / "jobs.sqlite" and s.fleet_enabled
    assert "s3cret" not in repr(s)
    monkeypatch.setenv("MAX_COMPRESSION_JOBS", "0")
    with pytest.raises(ValidationError, match="MAX_COMPRESSION_JOBS"):
        Settings()
    monkeypatch.setenv("MAX_COMPRESSION_JOBS", "1")
    monkeypatch.setenv("DEFAULT_QUANTIZATION_BITS", "3")
    with pytest.raises(ValidationError, match="DEFAULT_QUANTIZATION_BITS"):
        Settings()


def test_default_quantization_technique_follows_settings() -> None:
    from controller.jobs.kinds import default_technique

    available = ["fp16", "int4-weight", "int8-dynamic", "int8-static", "prune-unstructured", "svd"]
    assert default_technique("quantize", available, Settings(default_quantization_bits=8)) == "int8-static"
    assert default_technique("quantize", available, Settings(default_quantization_bits=4)) == "int4-weight"
    assert default_technique("quantize", available, Settings(default_quantization_bits=16)) == "fp16"
    dyn = Settings(default_quantization_bits=8, enable_dynamic_quantization=True)
    assert default_technique("quantize", available, dyn) == "int8-dynamic"
    assert default_technique("prune", available) == "prune-unstructured"
    assert default_technique("decompose", available) == "svd"


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                       ("0.0.0.0", False), ("10.1.2.3", False), ("example.org", False)])
def test_is_loopback(host: str, loop: bool) -> None:
    assert is_loopback(host) is loop
