"""An aarch64 agent on an x86-64 host: Debian's arm64 Python run by qemu-user, with aarch64 wheels.

Why: the agent's job on a Raspberry Pi is to run ONNX Runtime's *ARM* kernels and judge a build by
what they produce. Without ARM hardware in CI, the closest honest thing is the real aarch64 binaries
(CPython, glibc, onnxruntime's MLAS NEON/dot-product kernels, numpy, cryptography) executed
instruction by instruction by ``qemu-aarch64-static``. The outputs, hence the golden-set quality, are
those of the ARM kernels; the timings are those of an emulator and are marked as such by the agent
(:mod:`agent.emulation`).

What it builds, once, under ``$EDGEFLEET_CACHE/aarch64/<key>/`` (default ``~/.cache/edgefleet``):

* ``sysroot/``: the arm64 ``.deb`` files of ``python3.11`` and the libraries it and the wheels link
  against, fetched with ``apt-get download`` (multiarch lists: ``dpkg --add-architecture arm64``)
  and unpacked with ``dpkg -x``; nothing is installed on the host;
* ``site/``: the agent's dependencies as manylinux aarch64 wheels, ``pip install --target`` with
  ``--platform``; ``onnxruntime`` pinned to :data:`ORT_VERSION` (see there why);
* ``sysroot/usr/bin/python3-qemu``: a shell wrapper that starts the arm64 interpreter under qemu with
  ``argv[0]`` set to itself, so ``sys.executable`` is the wrapper and the agent's benchmark child
  (``sys.executable -m agent.bench_child``) is emulated too (no binfmt_misc needed).

The key is a hash of the package lists, so a changed pin builds a fresh tree; a build goes to a
temporary folder renamed into place, so an interrupted build never looks complete.

Example:
    >>> env = ensure_aarch64_env()                      # doctest: +SKIP
    >>> subprocess.run(env.agent_argv("--help"), env=env.environ(cpu="cortex-a76"))  # doctest: +SKIP
    $ python -m controller.demo.aarch64 build           # what `make test` / `make demo` run
    $ python -m controller.demo.aarch64 check           # import the stack under qemu, print versions
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.profiles import DeviceProfile

REPO = Path(__file__).resolve().parents[2]

ORT_VERSION = "1.26.0"
"""onnxruntime for the *emulated* agent only. Under Debian 12's qemu 7.2, 1.28.0 dies with SIGSEGV
while importing (the design notes report the same for later releases) and 1.27.0 imports; the
emulated agent takes 1.26.0, the release checked to import *and* give the same answers as x86
(``benchmarks/results/aarch64_emulated.md``). A real ARM device installs the ``agent`` extra unpinned."""

WHEELS = (
    f"onnxruntime=={ORT_VERSION}",
    "numpy==2.4.6",
    "psutil==7.2.2",
    "paho-mqtt==2.2.0",
    "cryptography==50.0.2",
    "pydantic==2.14.4",
    "pyyaml==6.0.4",
)
"""The ``agent`` extra, pinned: the cache key must name exactly what is in the site folder."""

PLATFORMS = ("manylinux2014_aarch64", "manylinux_2_17_aarch64", "manylinux_2_27_aarch64", "manylinux_2_28_aarch64")
"""Wheel tags the sysroot's glibc (2.36) runs; pip needs them listed when ``--platform`` is given."""

DEBS = (
    "python3.11", "python3.11-minimal", "libpython3.11-minimal", "libpython3.11-stdlib", "media-types",
    "libc6", "libgcc-s1", "libstdc++6", "gcc-12-base", "zlib1g", "libexpat1", "libssl3", "libffi8",
    "libbz2-1.0", "liblzma5", "libzstd1", "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8",
    "libuuid1", "libcrypt1", "libdb5.3", "libnsl2", "libtirpc3", "libgssapi-krb5-2", "libk5crypto3",
    "libkeyutils1", "libkrb5-3", "libkrb5support0", "libcom-err2", "libmd0", "libselinux1", "libpcre2-8-0",
)
"""arm64 packages of the sysroot: python3.11's run-time closure (Depends only, minus dpkg/perl/tar)
plus libstdc++ for onnxruntime. ``media-types`` is ``Architecture: all``."""

QEMU = "qemu-aarch64-static"
WRAPPER = "usr/bin/python3-qemu"
_STAMP = "aarch64-env.json"


class EmulationUnavailableError(RuntimeError):
    """This host cannot run the aarch64 agent; the message says what to install or run."""


@dataclass(frozen=True)
class Aarch64Env:
    """A built sysroot + site folder and the qemu that runs them."""

    root: Path
    site: Path
    qemu: str

    @property
    def python(self) -> Path:
        """The wrapper that runs the arm64 ``python3.11`` under qemu (also the emulated ``sys.executable``)."""
        return self.root / WRAPPER

    def agent_argv(self, *args: str) -> list[str]:
        """``python -m agent ARGS`` as an aarch64 process."""
        return [str(self.python), "-m", "agent", *args]

    def environ(self, repo: Path = REPO, base: dict[str, str] | None = None, cpu: str | None = None) -> dict[str, str]:
        """Environment for the emulated interpreter: the repo (``agent``, ``common``) then the aarch64 site.

        Host Python variables are dropped: a host ``PYTHONHOME`` or a PYTHONPATH pointing at x86-64
        extension modules would make the arm64 interpreter load the wrong binaries. ``cpu`` (a
        ``qemu-aarch64 -cpu`` model, see :func:`qemu_cpu_for`) goes to ``QEMU_CPU``, which every
        emulated child (the benchmark) inherits.
        """
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if k not in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONEXECUTABLE", "VIRTUAL_ENV")}
        env["PYTHONPATH"] = os.pathsep.join([str(repo), str(self.site)])
        if cpu:
            env["QEMU_CPU"] = cpu
        return env

    def write_wrapper(self) -> None:
        """(Re)write the wrapper for the current qemu path; cheap, so a moved qemu needs no rebuild."""
        text = (
            "#!/bin/sh\n"
            "# Written by controller.demo.aarch64: Debian's arm64 python3.11 under qemu-user. argv[0] is this\n"
            "# file, so sys.executable (and every child the agent starts with it) runs emulated too.\n"
            f'exec "{self.qemu}" -L "{self.root}" -0 "$0" "{self.root}/usr/bin/python3.11" "$@"\n'
        )
        path = self.python
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            path.chmod(0o755)


QEMU_CPUS = ("cortex-a35", "cortex-a53", "cortex-a57", "cortex-a72", "cortex-a76", "neoverse-n1", "a64fx")
"""CPU models ``qemu-aarch64`` 7.2 emulates (``-cpu help``), besides ``max``."""


def qemu_cpu_for(profile: DeviceProfile) -> str:
    """The emulated CPU closest to a profile's: its own core where qemu has it (rpi4 → cortex-a72,
    rpi5 → cortex-a76), else an A76 for profiles with INT8 dot-product and an A72 without.

    Why not qemu's default ``max``: it advertises SVE, BF16 and I8MM, so onnxruntime would take
    kernels the device does not have (and FP32 ran 5-10x slower under emulation, measured on
    mnist-cnn); the profile's core makes the ARM kernels the device's own.

    Example:
        >>> qemu_cpu_for(load_profile("rpi4"))
        'cortex-a72'
    """
    text = profile.cpu.lower()
    for cpu in QEMU_CPUS:
        if cpu in text:
            return cpu
    return "cortex-a76" if profile.has_int8_dot else "cortex-a72"


def cache_root() -> Path:
    """``$EDGEFLEET_CACHE/aarch64`` (the zoo's cache root: one place to wipe)."""
    from controller.zoo.cache import cache_dir

    return cache_dir() / "aarch64"


def env_key() -> str:
    """Hash of what goes into the tree: a changed pin or package list builds a new one."""
    text = json.dumps({"debs": DEBS, "wheels": WHEELS, "platforms": PLATFORMS, "wrapper": WRAPPER})
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def find_qemu() -> str | None:
    """Path of ``qemu-aarch64-static`` (Debian package ``qemu-user-static``), or None."""
    return shutil.which(QEMU) or next((p for p in (f"/usr/bin/{QEMU}",) if Path(p).exists()), None)


def unavailable_reason() -> str | None:
    """Why this host cannot build or run the aarch64 agent, or None when it can (or already has)."""
    if find_qemu() is None:
        return f"{QEMU} not found: apt-get install qemu-user-static (as root; .ci/run does it)"
    if load_env() is not None:
        return None
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        return "building the arm64 sysroot needs Debian's apt-get and dpkg"
    if "arm64" not in _foreign_architectures() and os.geteuid() != 0:
        return "arm64 package lists missing: as root, dpkg --add-architecture arm64 && apt-get update"
    return None


def load_env(cache: Path | None = None) -> Aarch64Env | None:
    """The tree built earlier for the current key, or None (never builds)."""
    qemu = find_qemu()
    folder = (cache or cache_root()) / env_key()
    if qemu is None or not (folder / _STAMP).exists():
        return None
    env = Aarch64Env(root=folder / "sysroot", site=folder / "site", qemu=qemu)
    env.write_wrapper()
    return env


def ensure_aarch64_env(cache: Path | None = None, say: Callable[[str], None] = lambda _m: None) -> Aarch64Env:
    """The aarch64 tree for the current key, built first if needed (about a minute, ~230 MB).

    Raises:
        EmulationUnavailableError: no qemu, no apt/dpkg, or no arm64 lists and not root to add them;
            or a download failed (the message carries the tool's last lines).
    """
    cache = cache or cache_root()
    found = load_env(cache)
    if found is not None:
        return found
    reason = unavailable_reason()
    if reason is not None:
        raise EmulationUnavailableError(reason)
    qemu = find_qemu()
    assert qemu is not None
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / env_key()
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{env_key()}-"))
    t0 = time.monotonic()
    try:
        _build_sysroot(tmp / "sysroot", tmp / "debs", say)
        _install_wheels(tmp / "site", say)
        _precompile(tmp, say)
        shutil.rmtree(tmp / "debs")
        (tmp / _STAMP).write_text(json.dumps({"key": env_key(), "debs": DEBS, "wheels": WHEELS,
                                              "seconds": round(time.monotonic() - t0, 1)}, indent=2))
        try:
            tmp.rename(final)
        except OSError:  # another process finished the same key first: use theirs
            if not (final / _STAMP).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    env = load_env(cache)
    assert env is not None
    say(f"aarch64 tree ready in {time.monotonic() - t0:.0f} s: {final}")
    return env


def _foreign_architectures() -> list[str]:
    try:
        out = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return out.stdout.split()


def _run(argv: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        raise EmulationUnavailableError(f"{what} failed (exit {proc.returncode}): {tail}")


def _apt_download(debs_dir: Path) -> None:
    """Download the arm64 debs; as root, add the arm64 lists first when they are missing."""
    names = [d if d == "media-types" else f"{d}:arm64" for d in DEBS]
    argv = ["apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", *names]
    if "arm64" not in _foreign_architectures():
        _run(["dpkg", "--add-architecture", "arm64"], "dpkg --add-architecture arm64")
        _run(["apt-get", "update", "-qq"], "apt-get update")
    try:
        _run(argv, "apt-get download (arm64)", cwd=debs_dir)
    except EmulationUnavailableError:
        if os.geteuid() != 0:
            raise
        _run(["apt-get", "update", "-qq"], "apt-get update")  # stale lists: versions no longer on the mirror
        _run(argv, "apt-get download (arm64)", cwd=debs_dir)


def _build_sysroot(root: Path, debs_dir: Path, say: Callable[[str], None]) -> None:
    root.mkdir(parents=True)
    debs_dir.mkdir(parents=True)
    say(f"downloading {len(DEBS)} arm64 packages (python3.11, glibc, libstdc++ ...)")
    _apt_download(debs_dir)
    for deb in sorted(debs_dir.glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(root)], f"dpkg -x {deb.name}")
    # Empty dist-packages under the sysroot: qemu -L maps a path to the sysroot only where it exists
    # there, so without these the arm64 interpreter would look into the host's x86-64 dist-packages.
    for rel in ("usr/lib/python3/dist-packages", "usr/local/lib/python3.11/dist-packages"):
        (root / rel).mkdir(parents=True, exist_ok=True)


def _install_wheels(site: Path, say: Callable[[str], None]) -> None:
    say(f"fetching aarch64 wheels: {', '.join(WHEELS)}")
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-warn-conflicts",
          "--no-compile", "--target", str(site), *platforms, "--only-binary=:all:", "--python-version", "3.11",
          "--implementation", "cp", *WHEELS], "pip install (aarch64 wheels)")


def _precompile(tree: Path, say: Callable[[str], None]) -> None:
    """Byte-compile the stdlib and the site folder with the host's 3.11 (bytecode is the same on every
    architecture): the emulated interpreter then starts in seconds instead of compiling under qemu."""
    if sys.version_info[:2] != (3, 11):
        return
    import compileall

    say("byte-compiling the arm64 stdlib and wheels")
    for folder in (tree / "sysroot" / "usr" / "lib" / "python3.11", tree / "site"):
        compileall.compile_dir(folder, quiet=2, workers=0)


CHECK_SNIPPET = (
    "import platform, numpy, onnxruntime, psutil, pydantic, cryptography, paho.mqtt, yaml; "
    "print(platform.machine(), 'onnxruntime', onnxruntime.__version__, 'numpy', numpy.__version__, "
    "'pydantic', pydantic.VERSION)"
)


def main(argv: list[str] | None = None) -> int:
    """``python -m controller.demo.aarch64 {build,check,agent}``."""
    parser = argparse.ArgumentParser(prog="python -m controller.demo.aarch64", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the sysroot + wheel folder (nothing to do when cached)")
    b.add_argument("--if-possible", action="store_true",
                   help="exit 0 with a notice when this host cannot emulate aarch64 (make test / make demo)")
    sub.add_parser("check", help="import the agent's stack under qemu and print its versions")
    a = sub.add_parser("agent", help="run `python -m agent ARGS` as an aarch64 process (CPU from --profile)")
    a.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        env = ensure_aarch64_env(say=lambda m: print(m, flush=True))
    except EmulationUnavailableError as exc:
        print(f"aarch64 agent unavailable: {exc}", file=sys.stderr)
        return 0 if args.cmd == "build" and args.if_possible else 1
    if args.cmd == "build":
        print(f"aarch64 agent: {env.python} (onnxruntime {ORT_VERSION}, site {env.site})")
        return 0
    if args.cmd == "check":
        return subprocess.run([str(env.python), "-c", CHECK_SNIPPET], env=env.environ(cpu="cortex-a76"),
                              check=False).returncode
    extra = args.args[1:] if args.args[:1] == ["--"] else args.args
    profile = extra[extra.index("--profile") + 1] if "--profile" in extra[:-1] else None
    from common.profiles import load_profile

    cpu = qemu_cpu_for(load_profile(profile)) if profile else "cortex-a76"
    os.execve(str(env.python), env.agent_argv(*extra), env.environ(cpu=cpu))
    return 1  # pragma: no cover - execve does not return


if __name__ == "__main__":
    sys.exit(main())
