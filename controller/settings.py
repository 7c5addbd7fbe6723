"""One settings object for the controller, read from the environment (pydantic-settings).

The story names the compression variables without a prefix (``MAX_COMPRESSION_JOBS``,
``COMPRESSION_WORKSPACE``, ...); everything edgefleet adds on top (broker, auth, HTTP)
carries an ``EDGEFLEET_`` prefix so it cannot clash with another tool's environment.
A value that does not validate stops the controller at start-up with the variable's
name, instead of failing later inside a job.

Example:
    >>> import os
    >>> os.environ["MAX_COMPRESSION_JOBS"] = "3"
    >>> Settings().max_compression_jobs
    3
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from controller.api.upload_checks import NpzLimits

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def _env(name: str) -> AliasChoices:
    """Accept exactly one environment variable name for a field (case-insensitive)."""
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Every controller setting. Construct with keyword arguments in tests, from the environment in production."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, case_sensitive=False)

    # ---- the story's compression variables
    model_compression_enabled: bool = Field(True, validation_alias=_env("MODEL_COMPRESSION_ENABLED"))
    compression_workspace: Path = Field(
        Path.home() / ".edgefleet" / "workspace", validation_alias=_env("COMPRESSION_WORKSPACE"))
    max_compression_jobs: int = Field(2, ge=1, le=64, validation_alias=_env("MAX_COMPRESSION_JOBS"))
    default_quantization_bits: int = Field(8, validation_alias=_env("DEFAULT_QUANTIZATION_BITS"),
                                           description="4, 8 or 16")
    enable_dynamic_quantization: bool = Field(False, validation_alias=_env("ENABLE_DYNAMIC_QUANTIZATION"))
    calibration_samples: int = Field(128, ge=1, le=100_000, validation_alias=_env("CALIBRATION_SAMPLES"))
    target_hardware: str = Field("cpu", min_length=1, validation_alias=_env("TARGET_HARDWARE"))
    enable_gpu_acceleration: bool = Field(False, validation_alias=_env("ENABLE_GPU_ACCELERATION"))
    edge_device_profile: str = Field("x86-edge", min_length=1, validation_alias=_env("EDGE_DEVICE_PROFILE"))

    # ---- broker / fleet (the fleet service is off when no broker host is set)
    broker_host: str | None = Field(None, validation_alias=_env("EDGEFLEET_BROKER_HOST"))
    broker_port: int = Field(1883, ge=1, le=65535, validation_alias=_env("EDGEFLEET_BROKER_PORT"))
    broker_username: str = Field("controller", validation_alias=_env("EDGEFLEET_BROKER_USERNAME"))
    broker_password: SecretStr | None = Field(None, validation_alias=_env("EDGEFLEET_BROKER_PASSWORD"))
    broker_tls_ca: Path | None = Field(
        None, validation_alias=_env("EDGEFLEET_BROKER_TLS_CA"),
        description="CA certificate (PEM) of the broker's TLS listener: the controller connects with TLS")
    grant_ttl_hours: float = Field(
        168.0, gt=0, le=24 * 366, validation_alias=_env("EDGEFLEET_GRANT_TTL_HOURS"),
        description="validity of the signed grant each desired state carries (agents refuse expired ones)")
    fleet: str = Field("default", pattern=r"^[A-Za-z0-9_-]{1,64}$", validation_alias=_env("EDGEFLEET_FLEET"))
    broker_dir: Path | None = Field(
        None, validation_alias=_env("EDGEFLEET_BROKER_DIR"),
        description="`edgefleet broker`'s folder (accounts, CA, controller.password); default WORKSPACE/broker")
    broker_tls_port: int | None = Field(
        None, ge=1, le=65535, validation_alias=_env("EDGEFLEET_BROKER_TLS_PORT"),
        description="the broker's TLS listener: enrolled devices connect there and pin the controller's CA")
    broker_public_host: str | None = Field(
        None, validation_alias=_env("EDGEFLEET_BROKER_PUBLIC_HOST"),
        description="host name/IP devices use to reach the broker (default EDGEFLEET_BROKER_HOST)")

    # ---- HTTP + auth
    api_host: str = Field("127.0.0.1", validation_alias=_env("EDGEFLEET_API_HOST"))
    api_port: int = Field(8080, ge=0, le=65535, validation_alias=_env("EDGEFLEET_API_PORT"))
    api_keys: str = Field(
        "", validation_alias=_env("EDGEFLEET_API_KEYS"),
        description="comma-separated hashed keys name:role:sha256hex (role rw|ro); see `edgefleet controller keygen`")
    api_keys_file: Path | None = Field(None, validation_alias=_env("EDGEFLEET_API_KEYS_FILE"))
    open_reads: bool = Field(
        False, validation_alias=_env("EDGEFLEET_OPEN_READS"),
        description="let anyone read (audit log, model downloads, devices, /metrics) without a key; the "
                    "controller warns at start. Off by default: reads need a key once keys are configured")
    job_isolation: Literal["process", "thread"] = Field(
        "process", validation_alias=_env("EDGEFLEET_JOB_ISOLATION"),
        description="run each job in its own niced process (default) or in a worker thread")
    job_priority: Literal["idle", "low", "normal"] = Field(
        "idle", validation_alias=_env("EDGEFLEET_JOB_PRIORITY"),
        description="CPU priority of job processes: idle (Linux SCHED_IDLE + nice 19; the API always goes first), "
                    "low (nice 19), normal")
    job_plugins: str = Field(
        "", validation_alias=_env("EDGEFLEET_JOB_PLUGINS"),
        description="comma-separated modules exposing JOB_KINDS (extra job kinds, e.g. a custom technique)")
    max_upload_mb: float = Field(512.0, gt=0, validation_alias=_env("EDGEFLEET_MAX_UPLOAD_MB"))
    samples_max_mb: float = Field(
        256.0, gt=0, validation_alias=_env("EDGEFLEET_SAMPLES_MAX_MB"),
        description="largest decompressed size of an uploaded samples .npz (read from its zip headers)")
    samples_max_arrays: int = Field(64, ge=1, le=100_000, validation_alias=_env("EDGEFLEET_SAMPLES_MAX_ARRAYS"))
    max_graph_mb: float = Field(
        256.0, gt=0, validation_alias=_env("EDGEFLEET_MAX_GRAPH_MB"),
        description="largest ONNX graph structure (everything but initializer weights) an upload may carry")

    # ---- this host: caches and measurement
    cache_dir: Path = Field(Path.home() / ".cache" / "edgefleet", validation_alias=_env("EDGEFLEET_CACHE"),
                            description="zoo exports, datasets and demo builds (reused across runs)")
    host_profile: str | None = Field(
        None, validation_alias=_env("EDGEFLEET_HOST_PROFILE"),
        description="profile whose ORT tuning the controller's own measurements use (default: the shipped "
                    "profile closest to this host)")
    convert_python: Path | None = Field(
        None, validation_alias=_env("EDGEFLEET_CONVERT_PYTHON"),
        description="interpreter of the converter venv (default: .venv-convert/bin/python)")

    # ---- dashboards
    ha_discovery: bool = Field(
        False, validation_alias=_env("EDGEFLEET_HA_DISCOVERY"),
        description="publish retained Home Assistant MQTT discovery configs for every device (and each new one)")
    ha_discovery_prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_/-]{1,64}$",
                                     validation_alias=_env("EDGEFLEET_HA_DISCOVERY_PREFIX"))

    @field_validator("default_quantization_bits")
    @classmethod
    def _bits(cls, value: int) -> int:
        # an int field + check rather than Literal[4, 8, 16]: Literal does not accept the env string "4"
        if value not in (4, 8, 16):
            raise ValueError(f"must be 4, 8 or 16, not {value}")
        return value

    @field_validator("compression_workspace", "cache_dir")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def db_path(self) -> Path:
        """The registry's SQLite file (shared with the registry package)."""
        return self.compression_workspace / "registry.sqlite"

    @property
    def jobs_db_path(self) -> Path:
        """The job store's own SQLite file: progress writes never contend with registry writes."""
        return self.compression_workspace / "jobs.sqlite"

    @property
    def max_upload_bytes(self) -> int:
        """Upload size limit in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def broker_folder(self) -> Path:
        """Where ``edgefleet broker`` keeps its configuration, accounts and CA."""
        return (self.broker_dir or self.compression_workspace / "broker").expanduser()

    def broker_password_value(self) -> str:
        """The controller's broker password: the setting, else the one ``edgefleet broker`` wrote."""
        if self.broker_password is not None:
            return self.broker_password.get_secret_value()
        path = self.broker_folder / "controller.password"
        return path.read_text().strip() if path.exists() else ""

    @property
    def npz_limits(self) -> NpzLimits:
        """Bounds a samples ``.npz`` is checked against before anything in it is decompressed."""
        from controller.api.upload_checks import NpzLimits

        return NpzLimits(max_bytes=int(self.samples_max_mb * 1024 * 1024), max_arrays=self.samples_max_arrays)

    @property
    def max_graph_bytes(self) -> int:
        """Largest ONNX structure (without weights) an upload may carry, in bytes."""
        return int(self.max_graph_mb * 1024 * 1024)

    @property
    def fleet_enabled(self) -> bool:
        """True when a broker is configured, so the controller talks to devices."""
        return bool(self.broker_host)


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def get_settings() -> Settings:
    """Settings from the current environment (read fresh each call; the app keeps its own instance)."""
    return Settings()
