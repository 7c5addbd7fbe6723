from __future__ import annotations

import pytest

from common.profiles import ProfileError, list_profiles, load_profile, load_profile_file

REQUIRED = {"rpi4", "rpi5", "jetson-orin-nano", "visionfive2", "android-arm64", "iphone", "x86-edge"}


def test_all_shipped_profiles_validate():
    ids = {p.id for p in list_profiles()}
    assert REQUIRED <= ids


def test_int8_dot_product_flag_drives_reduce_range():
    assert not load_profile("rpi4").has_int8_dot
    assert load_profile("rpi5").has_int8_dot
    assert load_profile("rpi4").recipe.params["reduce_range"] is True


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ProfileError, match="known profiles: .*rpi4"):
        load_profile("nokia-3310")


def test_bad_profile_names_the_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('id = "x"\nname = "x"\narch = "sparc"\ncpu = "?"\ncores = 1\nram_mb = 128\n'
                   'storage_mb = 64\nruntimes = ["onnxruntime"]\nformats = ["onnx"]\n'
                   '[slo]\nlatency_p95_ms = 1\nmemory_mb = 1\n[recipe]\ntechnique = "fp32"\nformat = "onnx"\n')
    with pytest.raises(ProfileError, match="arch"):
        load_profile_file(bad)
    bad.write_text("this is = = not toml")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile_file(bad)
    with pytest.raises(ProfileError, match="does not exist"):
        load_profile_file(tmp_path / "missing.toml")


def test_profiles_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEFLEET_PROFILES_DIR", str(tmp_path))
    assert list_profiles() == []
