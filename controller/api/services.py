"""What the routes call: the registry, the job runner, the fleet, plus thin adapters the registry lacks.

Routes stay thin: they parse the request, call one function here or one registry method,
and wrap the result in the envelope. The adapters below fill gaps in the registry's
public API for the REST use cases (paginated model search across versions' format and
profile, deletion of versions and models with the "refused while deployed" rule,
validated ONNX uploads); each says why it lives here rather than in the registry.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import uuid
import zipfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from controller.api.auth import KeyRing
from controller.api.errors import ApiError
from controller.api.upload_checks import check_onnx, check_zip_limits, inspect_npz
from controller.jobs import Job, JobRunner, JobStore, LocalJobRunner
from controller.registry import (
    InvalidInputError,
    ModelRecord,
    NotFoundError,
    Registry,
    VersionRecord,
    validate_name,
)
from controller.settings import Settings

if TYPE_CHECKING:
    from controller.fleet.service import FleetService

log = logging.getLogger(__name__)

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_COPY_BLOCK = 1 << 20


@dataclass
class Services:
    """Everything a request handler may use; one instance per app, built in the lifespan."""

    settings: Settings
    keys: KeyRing
    registry: Registry
    runner: JobRunner
    fleet: FleetService | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def require_fleet(self) -> FleetService:
        """The fleet service, or a 503 saying how to enable it."""
        if self.fleet is None:
            raise ApiError(503, "no MQTT broker configured: set EDGEFLEET_BROKER_HOST (and credentials) to talk to "
                                "devices", code="fleet_disabled")
        return self.fleet

    def close(self) -> None:
        """Stop the runner and fleet, close the stores."""
        self.runner.shutdown()
        announcer = self.extra.pop("ha_discovery", None)
        if announcer is not None:
            announcer.stop()
        engine = self.extra.pop("rollouts", None)  # the rollout engine ticks on the fleet: stop it first
        if engine is not None:
            engine.stop()
        if self.fleet is not None and hasattr(self.fleet, "stop"):
            try:
                self.fleet.stop()
            except Exception:  # noqa: BLE001 - shutting down: log and continue closing the rest
                log.exception("fleet service did not stop cleanly")
        store = getattr(self.runner, "store", None)
        if isinstance(store, JobStore):
            store.close()
        self.registry.close()


def open_services(settings: Settings, *, keys: KeyRing | None = None, kinds: dict | None = None) -> Services:
    """Open the registry and job store under the workspace, start the runner (and the fleet when configured)."""
    from controller.jobs.kinds import default_kinds, plugin_kinds

    settings.compression_workspace.mkdir(parents=True, exist_ok=True)
    keys = keys if keys is not None else KeyRing.from_settings(settings.api_keys, settings.api_keys_file)
    registry = Registry(settings.compression_workspace, actor="controller")
    store = JobStore(settings.jobs_db_path)
    services = Services(settings=settings, keys=keys, registry=registry, runner=None)  # type: ignore[arg-type]
    all_kinds = default_kinds() | plugin_kinds(settings.job_plugins) | (kinds or {})
    child = {"settings": settings.model_dump(mode="json", exclude={"broker_password", "api_keys"}),
             "nice": 0 if settings.job_priority == "normal" else 19, "sched_idle": settings.job_priority == "idle"}
    runner = LocalJobRunner(store, all_kinds, max_workers=settings.max_compression_jobs,
                            workspace=settings.compression_workspace, services=services,
                            isolation=settings.job_isolation, child_config=child)
    services.runner = runner
    services.fleet = start_fleet(settings, registry)
    if services.fleet is not None:  # resume rollouts persisted before a restart without waiting for a request
        from controller.rollout import RolloutEngine

        services.extra["rollouts"] = RolloutEngine(services.fleet).start()
        if settings.ha_discovery:  # Home Assistant discovery for every device, and each new one as it appears
            from controller.dashboards import HomeAssistantAnnouncer

            services.extra["ha_discovery"] = HomeAssistantAnnouncer(
                services.fleet, prefix=settings.ha_discovery_prefix).start()
    runner.start()
    return services


def start_fleet(settings: Settings, registry: Registry) -> FleetService | None:
    """The fleet service when a broker is configured, else None.

    The one place a fleet service is built from :class:`Settings`. Its artifact builder finds golden
    inputs through :class:`controller.version_data.VersionData` (samples uploaded with the model, else
    the zoo), so a user's own ONNX can be deployed, not only zoo models.
    """
    if not settings.fleet_enabled:
        return None
    from common.keys import load_or_create_private_key
    from controller.artifacts import ArtifactBuilder
    from controller.fleet.service import FleetService

    password = settings.broker_password_value()
    key = load_or_create_private_key(settings.compression_workspace / "keys" / "controller.key")
    builder = ArtifactBuilder(registry, signing_key=key)
    fleet = FleetService(registry, host=settings.broker_host or "", port=settings.broker_port,
                         username=settings.broker_username, password=password, fleet=settings.fleet,
                         artifact_builder=builder, tls_ca=settings.broker_tls_ca,
                         grant_ttl=timedelta(hours=settings.grant_ttl_hours))
    fleet.start()
    return fleet


def submit_job(services: Services, kind: str, spec: dict[str, Any], actor: str) -> Job:
    """Queue a job and write its audit line (who asked for what, when) in the registry's audit log."""
    job = services.runner.submit(kind, spec, actor=actor)
    services.registry.audit(action=f"job.submit.{kind}", target=job.id, actor=actor,
                            details={"technique": job.spec.get("technique"), "version_id": job.spec.get("version_id")})
    return job


def cancel_job(services: Services, job_id: str, actor: str) -> Job:
    """Cancel a job and audit it."""
    job = services.runner.cancel(job_id)
    services.registry.audit(action="job.cancel", target=job.id, actor=actor, details={"state": job.state.value})
    return job


# ---------------------------------------------------------------- lookups
def resolve_model(registry: Registry, ref: str) -> ModelRecord:
    """A model by UUID or by name; names with path separators or '..' are refused with 422."""
    if _UUID_RE.match(ref):
        try:
            return registry.get_model(model_id=ref)
        except NotFoundError:
            pass
    validate_name(ref)
    return registry.get_model(name=ref)


def resolve_version(registry: Registry, model: ModelRecord, version_id: str) -> VersionRecord:
    """A version that must belong to ``model`` (404 otherwise, so ids cannot be mixed across models)."""
    version = registry.get_version(version_id=version_id)
    if version.model_id != model.id:
        raise NotFoundError(f"model {model.name!r} has no version {version_id!r}")
    return version


def version_view(registry: Registry, version: VersionRecord) -> dict[str, Any]:
    """A version as served: record + tags pointing at it + later metrics."""
    out = version.as_dict()
    out["tags"] = sorted(t for t, v in registry.tags.list_tags(model_id=version.model_id).items() if v == version.id)
    out["metrics_by_source"] = registry.version_metrics(version_id=version.id)
    return out


def model_view(registry: Registry, model: ModelRecord) -> dict[str, Any]:
    """A model as served: record + tags + version count + latest version id + formats/profiles present."""
    versions = registry.list_versions(model_id=model.id, limit=100_000)
    out = model.as_dict()
    out["tags"] = registry.tags.list_tags(model_id=model.id)
    out["version_count"] = len(versions)
    out["latest_version_id"] = versions[-1].id if versions else None
    out["formats"] = sorted({v.format for v in versions})
    out["profiles"] = sorted({v.profile for v in versions if v.profile})
    return out


def search_models(registry: Registry, *, name: str | None, tag: str | None, format: str | None,  # noqa: A002
                  profile: str | None, page: int, page_size: int) -> tuple[list[dict[str, Any]], int]:
    """Models matching every filter, one page of them, and the total.

    The registry filters by name and tag; format and profile are properties of versions,
    so they are applied here over each model's versions. Fine for thousands of models;
    a server database would push this into one SQL query.
    """
    models = registry.list_models(name_contains=name, tag=tag, limit=1_000_000)
    views = [model_view(registry, m) for m in models]
    if format:
        views = [v for v in views if format in v["formats"]]
    if profile:
        views = [v for v in views if profile in v["profiles"]]
    start = (page - 1) * page_size
    return views[start:start + page_size], len(views)


# ---------------------------------------------------------------- deletion
def delete_versions(registry: Registry, model: ModelRecord, versions: list[VersionRecord], *,
                    actor: str, delete_model: bool = False) -> None:
    """Delete versions (and optionally the model) through the registry (refused while deployed / with children).

    The registry refuses a model delete without versions; an empty model (only possible
    after an interrupted upload) is dropped with :meth:`Registry.delete_empty_model` so the
    row never outlives the failed upload.
    """
    if versions:
        registry.retention.delete_versions(version_ids=[v.id for v in versions], actor=actor, delete_model=delete_model)
        return
    if delete_model:
        registry.retention.delete_empty_model(model_id=model.id, actor=actor)


# ---------------------------------------------------------------- uploads
def receive_upload(src: BinaryIO, workspace: Path, max_bytes: int) -> Path:
    """Copy an upload to a temp file under the workspace, stopping at ``max_bytes`` (413)."""
    tmp_dir = workspace / "uploads"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix=f"upload-{uuid.uuid4().hex[:8]}-", suffix=".part")
    path = Path(name)
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := src.read(_COPY_BLOCK):
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError(413, f"upload exceeds the limit of {max_bytes} bytes (EDGEFLEET_MAX_UPLOAD_MB)")
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if size == 0:
        path.unlink(missing_ok=True)
        raise ApiError(422, "the uploaded file is empty; send an ONNX model", code="invalid_input")
    return path


def validate_profile(profile: str | None) -> str | None:
    """None, or the id of a known device profile (422 naming the known ones)."""
    if profile is None:
        return None
    from common.profiles import ProfileError, load_profile

    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", profile):
        raise InvalidInputError(f"invalid profile id {profile!r}: lowercase letters, digits, '_' and '-' only")
    try:
        return load_profile(profile).id
    except ProfileError as exc:
        raise InvalidInputError(str(exc)) from exc


def store_upload(registry: Registry, *, name: str, tmp: Path, profile: str | None, description: str,
                 actor: str, samples: Path | None = None, eval_samples: Path | None = None,
                 filename: str | None = None, settings: Settings | None = None,
                 ) -> tuple[ModelRecord, VersionRecord, dict[str, Any]]:
    """Validate everything, then create the model (if new) and its version; a failure leaves nothing behind.

    ``samples`` (optional ``.npz`` of real inputs) is stored beside the model and named in
    the version's config: compression jobs calibrate on it and deployments build their
    golden set from it. Both files are checked from headers and sizes (``upload_checks``), within
    the limits of ``settings``, before anything is loaded.
    """
    settings = settings or Settings()
    validate_name(name)
    profile = validate_profile(profile)
    from controller.api.upload_files import check_sample_upload, normalize_model_upload

    if zipfile.is_zipfile(tmp):  # a .zip of .onnx + .data becomes one self-contained file
        check_zip_limits(tmp, settings.max_upload_bytes)
        normalize_model_upload(tmp, filename)
    skeleton = tmp.with_name(tmp.name + ".skeleton.onnx")  # the graph without weights, for the samples' contract
    try:
        info = check_onnx(tmp, max_graph_bytes=settings.max_graph_bytes, keep_skeleton=skeleton)
        config: dict[str, Any] = {"source": "upload"}
        for field_name, path in (("samples", samples), ("eval_samples", eval_samples)):
            if path is not None:  # held-out eval samples: compression jobs measure quality on them, never calibrate
                inspect_npz(path, settings.npz_limits)  # sizes and headers first: nothing inflated past the limits
                config[field_name] = check_sample_upload(path, skeleton, field_name)
    finally:
        skeleton.unlink(missing_ok=True)
    created = False
    try:
        model = registry.get_model(name=name)
    except NotFoundError:
        model = registry.create_model(name=name, description=description, actor=actor)
        created = True
    try:
        if samples is not None:
            config["samples_sha256"] = registry.put_blob(path=samples, actor=actor).sha256
        if eval_samples is not None:
            config["eval_samples_sha256"] = registry.put_blob(path=eval_samples, actor=actor).sha256
        version = registry.add_version(model_id=model.id, path=tmp, technique="upload", config=config,
                                       format="onnx", profile=profile, metrics={"size_bytes": tmp.stat().st_size},
                                       actor=actor)
    except BaseException:
        if created:
            delete_versions(registry, model, [], actor=actor, delete_model=True)
        registry.retention.gc_blobs()
        raise
    return model, version, info


def copy_blob_to(registry: Registry, sha256: str, dest: Path) -> Path:
    """Copy a stored blob to ``dest`` (jobs work on copies, never on the read-only store)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(registry.blob_path(sha256=sha256), dest)
    return dest
