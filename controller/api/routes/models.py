"""Models and versions: search, upload (ONNX multipart) or import from the zoo, lineage, download, tags, rollback."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import FileResponse

from controller.api.deps import Reader, ServicesDep, Writer
from controller.api.envelope import ERROR_RESPONSES, Envelope, Page, ok
from controller.api.errors import ApiError
from controller.api.schemas import RollbackRequest, TagRequest, ZooImportRequest
from controller.api.services import (
    delete_versions,
    model_view,
    receive_upload,
    resolve_model,
    resolve_version,
    search_models,
    store_upload,
    submit_job,
    version_view,
)
from controller.jobs import Job
from controller.registry import validate_name

router = APIRouter(prefix="/compression/models", tags=["models"], responses=ERROR_RESPONSES)
ModelRef = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                               description="model name or id (no path separators)")]
VersionId = Annotated[str, Path(min_length=1, max_length=64)]
TagName = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Obj = dict[str, Any]


@router.get("", response_model=Envelope[Page[Obj]], summary="Search models")
def list_models(services: ServicesDep, _: Reader,
                name: Annotated[str | None, Query(max_length=128, description="substring of the name")] = None,
                tag: Annotated[str | None, Query(max_length=64)] = None,
                format: Annotated[str | None, Query(max_length=32)] = None,  # noqa: A002
                profile: Annotated[str | None, Query(max_length=64)] = None,
                page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
                page_size: Annotated[int, Query(ge=1, le=500)] = 50) -> dict:
    """Models sorted by name with their tags, formats and profiles; filters combine with AND."""
    items, total = search_models(services.registry, name=name, tag=tag, format=format, profile=profile,
                                 page=page, page_size=page_size)
    return ok({"items": items, "total": total, "page": page, "page_size": page_size})


SAMPLES_DOC = ("optional calibration data: .npz whose keys are the input names, samples on axis 0; a sample whose "
               "rank equals the input's rank is fed as is (recurrent states, scalars), else a batch axis of 1 is "
               "added. Compression jobs calibrate on it; deployments build their golden set from it")
EVAL_DOC = ("optional held-out data in the same layout as 'samples' (never used to calibrate): compression jobs "
            "measure quality on it; without it the report flags quality measured on the calibration data")


@router.post("", status_code=201, response_model=Envelope[Obj], summary="Upload an ONNX model (multipart)")
def upload_model(request: Request, services: ServicesDep, who: Writer,
                 file: Annotated[UploadFile, File(description="the .onnx file, or a .zip of the .onnx and its external "
                                                  "weight files (e.g. model.onnx.data)")],
                 name: Annotated[str, Form(min_length=1, max_length=128)],
                 profile: Annotated[str | None, Form(max_length=64)] = None,
                 description: Annotated[str, Form(max_length=2000)] = "",
                 samples: Annotated[UploadFile | None, File(description=SAMPLES_DOC)] = None,
                 eval_samples: Annotated[UploadFile | None, File(description=EVAL_DOC)] = None) -> dict:
    """Store the file as a new version (a new model if the name is new) after ``onnx.checker`` passes.

    Too large → 413; not ONNX or failing the checker → 422; in every failure nothing is stored.
    """
    limit = services.settings.max_upload_bytes
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit + 64 * 1024:
        raise ApiError(413, f"upload of {length} bytes exceeds the limit of {limit} bytes (EDGEFLEET_MAX_UPLOAD_MB)")
    validate_name(name)
    ws = services.settings.compression_workspace
    tmp = receive_upload(file.file, ws, limit)
    sample_tmp = eval_tmp = None
    try:
        if samples is not None and samples.filename:
            sample_tmp = receive_upload(samples.file, ws, limit)
        if eval_samples is not None and eval_samples.filename:
            eval_tmp = receive_upload(eval_samples.file, ws, limit)
        model, version, info = store_upload(services.registry, name=name, tmp=tmp, profile=profile or None,
                                            description=description, actor=who.name, samples=sample_tmp,
                                            eval_samples=eval_tmp, filename=file.filename,
                                            settings=services.settings)
    finally:
        for path in (tmp, sample_tmp, eval_tmp):
            if path is not None:
                path.unlink(missing_ok=True)
    info.pop("input_shapes", None)
    return ok({"model": model_view(services.registry, model), "version": version_view(services.registry, version),
               "onnx": info}, f"stored {name} version {version.id}")


@router.post("/import", status_code=202, response_model=Envelope[Job], summary="Import a model from the zoo")
def import_zoo(body: ZooImportRequest, services: ServicesDep, who: Writer) -> dict:
    """Export the zoo model to ONNX in a job (it can take seconds) and store it as a version."""
    validate_name(body.name)
    job = submit_job(services, "zoo_import", body.model_dump(), who.name)
    return ok(job, f"import of zoo model {body.zoo!r} queued as job {job.id}")


@router.get("/{model}", response_model=Envelope[Obj], summary="One model")
def get_model(model: ModelRef, services: ServicesDep, _: Reader) -> dict:
    """The model with its tags, version count and latest version."""
    return ok(model_view(services.registry, resolve_model(services.registry, model)))


@router.delete("/{model}", response_model=Envelope[Obj], summary="Delete a model and all its versions")
def delete_model(model: ModelRef, services: ServicesDep, who: Writer) -> dict:
    """Refused (409) while any of its versions is deployed."""
    reg = services.registry
    record = resolve_model(reg, model)
    versions = reg.list_versions(model_id=record.id, limit=1_000_000)
    delete_versions(reg, record, versions, actor=who.name, delete_model=True)
    return ok({"id": record.id, "name": record.name, "deleted_versions": [v.id for v in versions]},
              f"deleted model {record.name}")


@router.get("/{model}/versions", response_model=Envelope[Page[Obj]], summary="Versions with lineage")
def list_versions(model: ModelRef, services: ServicesDep, _: Reader,
                  format: Annotated[str | None, Query(max_length=32)] = None,  # noqa: A002
                  profile: Annotated[str | None, Query(max_length=64)] = None,
                  page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
                  page_size: Annotated[int, Query(ge=1, le=500)] = 50) -> dict:
    """Oldest first: parent id, technique, technique config, metrics, tags of every version."""
    reg = services.registry
    record = resolve_model(reg, model)
    everything = reg.list_versions(model_id=record.id, format=format, profile=profile, limit=1_000_000)
    start = (page - 1) * page_size
    items = [version_view(reg, v) for v in everything[start:start + page_size]]
    return ok({"items": items, "total": len(everything), "page": page, "page_size": page_size})


@router.get("/{model}/versions/{version_id}", response_model=Envelope[Obj], summary="One version + lineage")
def get_version(model: ModelRef, version_id: VersionId, services: ServicesDep, _: Reader) -> dict:
    """The version, its lineage chain (root first) and its direct children."""
    reg = services.registry
    version = resolve_version(reg, resolve_model(reg, model), version_id)
    out = version_view(reg, version)
    out["lineage"] = [{"id": v.id, "technique": v.technique, "config": v.config, "metrics": v.metrics,
                       "parent_id": v.parent_id} for v in reg.lineage(version_id=version.id)]
    out["children"] = [c.id for c in reg.children(version_id=version.id)]
    return ok(out)


@router.get("/{model}/versions/{version_id}/download", summary="Download a version's file",
            response_class=FileResponse, responses={200: {"content": {"application/octet-stream": {}}}})
def download_version(model: ModelRef, version_id: VersionId, services: ServicesDep, _: Reader) -> FileResponse:
    """The stored blob; its sha256 is in the ``X-Content-SHA256`` header."""
    reg = services.registry
    record = resolve_model(reg, model)
    version = resolve_version(reg, record, version_id)
    ext = {"onnx": "onnx", "tflite": "tflite", "coreml": "mlpackage.zip"}.get(version.format, "bin")
    return FileResponse(reg.blob_path(sha256=version.sha256), media_type="application/octet-stream",
                        filename=f"{record.name}-{version.id[:8]}.{ext}", headers={"X-Content-SHA256": version.sha256})


@router.delete("/{model}/versions/{version_id}", response_model=Envelope[Obj], summary="Delete a version")
def delete_version(model: ModelRef, version_id: VersionId, services: ServicesDep, who: Writer) -> dict:
    """Refused (409) while deployed or while other versions derive from it."""
    reg = services.registry
    record = resolve_model(reg, model)
    version = resolve_version(reg, record, version_id)
    delete_versions(reg, record, [version], actor=who.name)
    return ok({"id": version.id}, f"deleted version {version.id}")


@router.get("/{model}/tags", response_model=Envelope[dict[str, str]], summary="Tags of a model")
def list_tags(model: ModelRef, services: ServicesDep, _: Reader) -> dict:
    """Tag name → version id."""
    reg = services.registry
    return ok(reg.tags.list_tags(model_id=resolve_model(reg, model).id))


@router.put("/{model}/tags/{tag}", response_model=Envelope[Obj], summary="Point a tag at a version")
def set_tag(model: ModelRef, tag: TagName, body: TagRequest, services: ServicesDep, who: Writer) -> dict:
    """``production``, ``candidate`` or any custom tag; send ``expected_version_id`` to detect concurrent updates."""
    reg = services.registry
    record = resolve_model(reg, model)
    resolve_version(reg, record, body.version_id)
    kwargs: dict[str, Any] = {}
    if "expected_version_id" in body.model_fields_set:
        kwargs["expected_version_id"] = body.expected_version_id
    version = reg.tags.set_tag(model_id=record.id, tag=tag, version_id=body.version_id, actor=who.name, **kwargs)
    return ok({"tag": tag, "version_id": version.id}, f"{tag} → {version.id}")


@router.delete("/{model}/tags/{tag}", response_model=Envelope[Obj], summary="Remove a tag")
def delete_tag(model: ModelRef, tag: TagName, services: ServicesDep, who: Writer) -> dict:
    """Audited."""
    reg = services.registry
    record = resolve_model(reg, model)
    reg.tags.delete_tag(model_id=record.id, tag=tag, actor=who.name)
    return ok({"tag": tag}, f"removed tag {tag}")


@router.post("/{model}/rollback", response_model=Envelope[Obj], summary="Roll a tag back (audited)")
def rollback(model: ModelRef, body: RollbackRequest, services: ServicesDep, who: Writer) -> dict:
    """Move ``production`` (or another tag) to an earlier holder or an ancestor; anything else is a 422."""
    reg = services.registry
    record = resolve_model(reg, model)
    before = reg.tags.get_tag(model_id=record.id, tag=body.tag)
    version = reg.tags.rollback_tag(model_id=record.id, tag=body.tag, to_version_id=body.to_version_id,
                               actor=who.name, reason=body.reason)
    return ok({"tag": body.tag, "from": before.id, "to": version.id}, f"{body.tag} rolled back to {version.id}")
