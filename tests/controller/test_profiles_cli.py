"""``edgefleet profiles`` and ``edgefleet profile-host`` end to end through the real parser."""

from __future__ import annotations

import json

from common.profiles import load_profile_file, profiles_dir
from controller.cli import main
from controller.hardware import normalise_features, profile_host, profile_to_toml, read_cpu_flags


def test_profiles_list(capsys):
    assert main(["profiles", "list"]) == 0
    out = capsys.readouterr().out
    for pid in ("rpi4", "rpi5", "jetson-orin-nano", "visionfive2", "android-arm64", "iphone", "x86-edge"):
        assert pid in out
    assert main(["profiles", "list", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) >= 7


def test_profiles_show_and_unknown(capsys):
    assert main(["profiles", "show", "rpi4"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["recipe"]["params"]["reduce_range"] is True
    assert data["tolerance"]["min_cosine"] == 0.99
    assert main(["profiles", "show", "nokia-3310"]) == 1
    assert "known profiles" in capsys.readouterr().err


def test_profiles_validate_good_and_bad(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text((profiles_dir() / "rpi5.toml").read_text())
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace("cores = 4", "cores = -2"))
    assert main(["profiles", "validate", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    assert main(["profiles", "validate", str(good), str(bad)]) == 1
    err = capsys.readouterr().err
    assert "INVALID" in err and "cores:" in err and "bad.toml" in err


def test_profile_host_writes_a_valid_profile_and_recommends(tmp_path, capsys):
    out = tmp_path / "host.toml"
    assert main(["profile-host", "--id", "ci-host", "--write", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    profile = load_profile_file(out)  # the written file validates
    assert profile.id == "ci-host" and profile.cores >= 1 and profile.ram_mb >= 64
    assert "onnxruntime" in profile.runtimes and "CPUExecutionProvider" in profile.execution_providers
    if profile.arch == "x86_64":
        assert data["closest"] == "x86-edge"


def test_cpuinfo_parsing_x86_arm_riscv():
    x86 = "model name\t: Xeon\nflags\t\t: fpu sse4_2 avx2 avx512f avx512_vnni\n"
    model, flags = read_cpu_flags(x86)
    assert model == "Xeon" and "vnni" in normalise_features(flags)
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 asimddp\nCPU part\t: 0xd0b\n"
    feats = normalise_features(read_cpu_flags(arm)[1])
    assert {"asimd", "asimddp", "dotprod", "neon", "crc32"} <= set(feats)
    rv = "isa\t\t: rv64imafdc_zicsr_zifencei\nuarch\t\t: sifive,u74-mc\n"
    model, flags = read_cpu_flags(rv)
    assert model == "sifive,u74-mc" and normalise_features(flags) == ["rv64gc"]


def test_recommendation_for_a_pi5_like_host():
    from common.profiles import list_profiles
    from controller.hardware import rank_profiles

    report = profile_host()
    pi5ish = report.profile.model_copy(
        update={
            "arch": "aarch64",
            "isa_features": ["neon", "asimd", "asimddp", "dotprod", "crc32"],
            "ram_mb": 8192,
            "runtimes": ["onnxruntime", "tflite"],
        }
    )
    ranking = rank_profiles(pi5ish, list_profiles())
    assert ranking[0][0] == "rpi5"
    assert dict(ranking)["x86-edge"] == 0.0
    assert "[recipe]" in profile_to_toml(pi5ish)
