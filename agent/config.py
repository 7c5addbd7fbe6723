"""Agent configuration: one frozen dataclass built from the CLI (or by tests and the demo directly).

Budgets default from the device profile so a device is configured by naming its profile;
the few knobs that matter on a shared test machine (threads, benchmark runs, timers) can
be overridden.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import ConfigError
from common.profiles import DeviceProfile, load_profile
from common.topics import TopicError, validate_id


@dataclass(frozen=True)
class AgentConfig:
    """Everything one agent process needs.

    Example:
        >>> cfg = AgentConfig(device_id="pi-1", fleet="demo", profile_id="rpi4",
        ...                   data_dir=Path("/var/lib/edgefleet"), controller_key=Path("ctl.pub"))
        >>> cfg.broker_port
        1883
    """

    device_id: str
    fleet: str
    profile_id: str
    data_dir: Path
    controller_key: Path
    broker_host: str = "127.0.0.1"
    broker_port: int = 1883
    username: str | None = None
    password: str | None = None
    threads: int | None = None
    bench_runs: int = 50
    bench_warmup: int = 5
    bench_timeout_s: float = 600.0
    telemetry_interval_s: float = 30.0
    rerequest_interval_s: float = 3.0
    download_timeout_s: float = 300.0
    chunk_window: int = 64
    keepalive_s: int = 30
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    max_artifact_bytes: int | None = None
    tls_ca: Path | None = None
    """CA certificate (PEM) of the broker's TLS listener; set it to connect with TLS (hostname verified)."""
    fresh_baseline: bool = False
    """Re-measure the active model right before each candidate instead of using its stored baseline:
    costs one more benchmark, but both run under the same load (use on hosts shared by several agents)."""
    serve: bool = True
    """Serve the active model to applications on this device (``agent.serving``)."""
    serve_socket: Path | None = None
    """Unix socket of the serving endpoint; default ``<data_dir>/serve.sock``."""
    serve_port: int | None = None
    """Also serve on this loopback TCP port (0 = any free port); None = Unix socket only."""
    serve_socket_mode: int = 0o660
    """Permissions of the socket file: owner and group (add applications to the agent's group)."""
    max_auth_failures: int = 5
    """Consecutive refused logins (wrong password, revoked account) before the agent exits with code 3
    instead of retrying forever; 0 = retry forever."""
    accept_ungranted: bool = False
    """Accept a desired without the controller's signed grant (schema 1, a controller older than this
    agent): turns off the anti-rollback, expiry and target checks. Only for the upgrade window."""
    profile: DeviceProfile | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        try:
            validate_id(self.device_id, "device id")
            validate_id(self.fleet, "fleet")
        except TopicError as exc:
            raise ConfigError(str(exc)) from exc
        if self.bench_runs < 1 or self.bench_warmup < 0:
            raise ConfigError("bench_runs must be >= 1 and bench_warmup >= 0")
        if self.profile is None:
            object.__setattr__(self, "profile", load_profile(self.profile_id))

    @property
    def device_profile(self) -> DeviceProfile:
        """The loaded profile (never None after construction)."""
        assert self.profile is not None
        return self.profile

    @property
    def effective_threads(self) -> int:
        """Inference threads: explicit setting, else the profile's cores capped by this machine's."""
        if self.threads:
            return self.threads
        return max(1, min(self.device_profile.cores, os.cpu_count() or 1))

    @property
    def artifact_budget_bytes(self) -> int:
        """Largest single file the agent accepts: explicit setting, else the profile's max_artifact_mb."""
        if self.max_artifact_bytes is not None:
            return self.max_artifact_bytes
        return int(self.device_profile.max_artifact_mb * 1024 * 1024)

    @property
    def journal_path(self) -> Path:
        """Where the update journal lives."""
        return self.data_dir / "journal.json"

    @property
    def slots_dir(self) -> Path:
        """Root of the A/B model slots."""
        return self.data_dir / "slots"

    @property
    def engines_dir(self) -> Path:
        """TensorRT engines built on this device, one folder per engine cache key (``agent.trt_engine``)."""
        return self.data_dir / "engines"

    @property
    def serving_socket(self) -> Path:
        """Where applications on the device reach the active model."""
        return self.serve_socket or self.data_dir / "serve.sock"

    @property
    def downloads_dir(self) -> Path:
        """Partial downloads (one folder of chunk files per blob sha256)."""
        return self.data_dir / "downloads"


def read_config_file(path: Path) -> dict[str, object]:
    """AgentConfig keyword arguments from an enrollment bundle's ``agent.toml``.

    Relative paths are resolved against the file's folder, so the bundle can be copied anywhere;
    the password is read from its file here (it never appears in the TOML).

    Raises:
        ConfigError: unreadable file, bad TOML, or a missing required key (named in the message).
    """
    from common.compat import tomllib

    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    base = path.resolve().parent

    def get(section: str, key: str, required: bool = True) -> object:
        value = data.get(section, {}).get(key)
        if value is None and required:
            raise ConfigError(f"{path}: [{section}] {key} is missing")
        return value

    def local(value: object) -> Path | None:
        return None if value is None else (base / str(value)).resolve()

    out: dict[str, object] = {
        "device_id": get("device", "id"),
        "fleet": get("device", "fleet"),
        "profile_id": get("device", "profile"),
        "broker_host": get("broker", "host"),
        "broker_port": int(get("broker", "port")),  # type: ignore[arg-type]
        "username": get("broker", "username", False) or get("device", "id"),
        "controller_key": local(get("controller", "public_key")),
        "data_dir": local(get("paths", "data_dir")),
        "tls_ca": local(get("broker", "tls_ca", False)),
    }
    password_file = local(get("broker", "password_file", False))
    if password_file is not None:
        try:
            out["password"] = password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read the broker password file {password_file}: {exc}") from exc
    serve_socket = get("paths", "serve_socket", False)
    if serve_socket is not None:
        out["serve_socket"] = local(serve_socket)
    for key, value in data.get("agent", {}).items():  # optional tuning: threads, bench_runs, ...
        out[key] = value
    return out
