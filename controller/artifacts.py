"""Build a deployable artifact: model blob + golden set + signed manifest, all stored in the registry.

The golden set is what lets an agent judge quality on the device without labels:
real inputs and the FP32 reference model's outputs on them, so every candidate
(INT8, pruned, ...) is compared with the same reference, not with itself. It is
written as an ``.npz`` without pickle (keys ``input:<graph input>`` and
``output:<graph output>``, first axis = samples) because a device must never
unpickle data that came over the network.

Example:
    >>> manifest, files = build_artifact(                                  # doctest: +SKIP
    ...     reg, int8_version.id, profile="rpi4", golden_inputs=[{"input": x}],
    ...     reference_onnx=fp32_path, quality_metric="cosine", signing_key=key)
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from common.manifest import DEFAULT_CHUNK_SIZE, Manifest, Thresholds, blob_ref, sign_manifest
from common.tensorrt_recipe import TensorrtRecipe
from controller.registry import ArtifactRecord, InvalidInputError, ModelRecord, Registry, VersionRecord
from controller.version_data import VersionData

if TYPE_CHECKING:
    import numpy as np
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

MANIFEST_FORMATS = ("onnx", "tflite")


class ArtifactBuildError(InvalidInputError):
    """The inputs to an artifact build do not fit together (names, shapes, formats, profiles)."""


def _batch_axis(dim: Any) -> bool:
    """A graph dimension that is symbolic (or 1) is treated as the batch axis samples concatenate on."""
    return not isinstance(dim, int) or dim == 1


def _collect(per_sample: list[np.ndarray], shape: Sequence[Any] | None) -> np.ndarray:
    import numpy as np

    if shape and len(shape) == per_sample[0].ndim and _batch_axis(shape[0]):
        try:
            return np.concatenate(per_sample, axis=0)
        except ValueError as exc:
            raise ArtifactBuildError(
                f"golden samples have different shapes {[a.shape for a in per_sample]}; pad them to one shape"
            ) from exc
    return np.stack(per_sample, axis=0)


def golden_set_bytes(
    reference_onnx: Path, golden_inputs: list[dict[str, np.ndarray]]
) -> tuple[bytes, dict[str, tuple[int, ...]]]:
    """Run the FP32 reference on every golden input and pack inputs + outputs as npz bytes.

    Returns the bytes and the shape of every stored array (for logs and metrics).
    """
    import numpy as np
    import onnxruntime as ort

    if not golden_inputs:
        raise ArtifactBuildError("golden_inputs is empty: give at least one real input sample")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(reference_onnx), opts, providers=["CPUExecutionProvider"])
    graph_inputs = {i.name: i for i in session.get_inputs()}
    graph_outputs = session.get_outputs()
    inputs: dict[str, list[np.ndarray]] = {name: [] for name in graph_inputs}
    outputs: dict[str, list[np.ndarray]] = {o.name: [] for o in graph_outputs}
    for i, sample in enumerate(golden_inputs):
        if set(sample) != set(graph_inputs):
            raise ArtifactBuildError(
                f"golden sample {i} has inputs {sorted(sample)}, the reference model expects {sorted(graph_inputs)}"
            )
        feeds = {name: np.ascontiguousarray(arr) for name, arr in sample.items()}
        try:
            result = session.run(None, feeds)
        except Exception as exc:  # onnxruntime raises its own hierarchy
            raise ArtifactBuildError(f"reference model failed on golden sample {i}: {exc}") from exc
        for name, arr in feeds.items():
            inputs[name].append(arr)
        for meta, arr in zip(graph_outputs, result, strict=True):
            outputs[meta.name].append(np.asarray(arr))
    arrays: dict[str, np.ndarray] = {}
    for name, samples in inputs.items():
        arrays[f"input:{name}"] = _collect(samples, graph_inputs[name].shape)
    for meta in graph_outputs:
        arrays[f"output:{meta.name}"] = _collect(outputs[meta.name], meta.shape)
    buf = io.BytesIO()
    np.savez(buf, allow_pickle=False, **arrays)
    return buf.getvalue(), {k: tuple(v.shape) for k, v in arrays.items()}


def _resolve_version(
    registry: Registry,
    source: str | Path,
    *,
    model_name: str | None,
    technique: str,
    parent_id: str | None,
    fmt: str,
    actor: str | None,
) -> VersionRecord:
    if isinstance(source, Path):
        if not model_name:
            raise ArtifactBuildError("building from a file needs model_name= to register it under")
        model = registry.ensure_model(name=model_name, actor=actor)
        return registry.add_version(
            model_id=model.id, path=source, technique=technique, format=fmt, parent_id=parent_id, actor=actor
        )
    return registry.get_version(version_id=source)


def _artifact_recipe(
    version: VersionRecord, given: TensorrtRecipe | dict[str, Any] | None, model_filename: str
) -> TensorrtRecipe | None:
    """The TensorRT build recipe the artifact carries: the one given, else the one ``edgefleet build``
    recorded in the version's config (``config["tensorrt_recipe"]``), checked against the model blob."""
    raw = given if given is not None else version.config.get("tensorrt_recipe")
    if raw is None:
        return None
    if version.format != "onnx":
        raise ArtifactBuildError(f"version {version.id} is {version.format!r}: a TensorRT recipe needs an ONNX model")
    try:
        recipe = raw if isinstance(raw, TensorrtRecipe) else TensorrtRecipe.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "recipe"
        raise ArtifactBuildError(
            f"TensorRT recipe of version {version.id} is invalid: {where}: {first['msg']}"
        ) from exc
    if recipe.onnx_sha256 != version.sha256:
        raise ArtifactBuildError(
            f"TensorRT recipe was written for ONNX {recipe.onnx_sha256[:12]}…, version {version.id} is "
            f"{version.sha256[:12]}…; rebuild the recipe from this model (edgefleet convert --target tensorrt)"
        )
    return recipe.for_model_file(model_filename)


def build_artifact(
    registry: Registry,
    source: str | Path,
    *,
    profile: str,
    golden_inputs: list[dict[str, np.ndarray]] | None = None,
    reference_onnx: Path | None = None,
    quality_metric: Literal["cosine", "top1"],
    signing_key: Ed25519PrivateKey,
    golden_sha256: str | None = None,
    thresholds: Thresholds | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    model_name: str | None = None,
    technique: str = "fp32",
    parent_id: str | None = None,
    format: str = "onnx",  # noqa: A002 - the domain word
    actor: str | None = None,
    tensorrt_recipe: TensorrtRecipe | dict[str, Any] | None = None,
) -> tuple[Manifest, dict[str, Path]]:
    """Build, sign and store an artifact for one device profile.

    Args:
        registry: where the model version, golden blob and artifact are stored.
        source: a version id already in the registry, or a model file to register first
            (then ``model_name`` is required and ``technique``/``parent_id``/``format`` describe it).
        profile: device profile id the artifact is built for; agents refuse other profiles.
        golden_inputs: real input samples, one dict (graph input name -> array, with batch axis) each.
        reference_onnx: FP32 reference model whose outputs become the golden outputs.
        quality_metric: how agents score agreement: ``"cosine"`` or ``"top1"``.
        signing_key: controller Ed25519 key (``common.keys.load_or_create_private_key``).
        golden_sha256: reuse a stored golden set (e.g. the one built for another profile of the
            same lineage) instead of ``golden_inputs`` + ``reference_onnx``.
        thresholds: regression gate the agent applies; defaults to ``Thresholds()``.
        chunk_size: MQTT chunk size for both files (<= 256 KiB).
        tensorrt_recipe: TensorRT build recipe to sign into the manifest (ONNX only); by default the
            one ``edgefleet build`` recorded in the version's config, if any (Jetson builds). Its
            ``onnx_sha256`` must be the version's model.

    Returns:
        The signed manifest and the stored files by role (``"model"``, ``"golden"``), read-only.
    """
    # The golden set first: a bad sample must fail before anything is registered.
    if golden_sha256 is None:
        if golden_inputs is None or reference_onnx is None:
            raise ArtifactBuildError(
                "give golden_inputs= and reference_onnx=, or golden_sha256= of a stored golden set"
            )
        golden: bytes | None = golden_set_bytes(Path(reference_onnx), golden_inputs)[0]
    else:
        registry.get_blob(sha256=golden_sha256)
        golden = None
    version = _resolve_version(
        registry,
        source,
        model_name=model_name,
        technique=technique,
        parent_id=parent_id,
        fmt=format,
        actor=actor,
    )
    if version.format not in MANIFEST_FORMATS:
        raise ArtifactBuildError(f"version {version.id} is {version.format!r}; deployable formats: {MANIFEST_FORMATS}")
    if version.profile and version.profile != profile:
        raise ArtifactBuildError(f"version {version.id} was built for profile {version.profile!r}, not {profile!r}")
    model = registry.get_model(model_id=version.model_id)
    if golden is not None:
        golden_path = Path(registry.put_blob(data=golden, actor=actor).path)
    else:
        golden_path = registry.blob_path(sha256=golden_sha256)  # type: ignore[arg-type]
    model_path = registry.blob_path(sha256=version.sha256)
    recipe = _artifact_recipe(version, tensorrt_recipe, f"model.{version.format}")
    files = [
        blob_ref("model", model_path, chunk_size, filename=f"model.{version.format}"),
        blob_ref("golden", golden_path, chunk_size, filename="golden.npz"),
    ]
    manifest = Manifest(
        model_id=model.id,
        model_name=model.name,
        version=version.id,
        parent_version=version.parent_id,
        profile=profile,
        format=version.format,  # type: ignore[arg-type]
        technique=version.technique,
        quality_metric=quality_metric,
        files=files,
        thresholds=thresholds or Thresholds(),
        tensorrt_recipe=recipe,
    )
    signed = sign_manifest(manifest, signing_key)
    registry.artifacts.add_artifact(manifest=signed, actor=actor)
    return signed, {"model": model_path, "golden": golden_path}


def export_artifact(registry: Registry, manifest: Manifest, dest: Path) -> dict[str, Path]:
    """Copy an artifact's files (named as in the manifest) plus ``manifest.json`` into ``dest``.

    For offline installs and debugging; the MQTT path never needs it. A TensorRT recipe is also
    written as ``<model>.trt.json`` beside the model, so its trtexec line runs as written there.
    """
    dest.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    for ref in manifest.files:
        out[ref.role] = registry.blobs.copy_out(ref.sha256, dest / ref.filename)
    if manifest.tensorrt_recipe is not None:
        recipe_path = dest / (manifest.tensorrt_recipe.onnx.rsplit(".", 1)[0] + ".trt.json")
        recipe_path.write_text(manifest.tensorrt_recipe.model_dump_json(indent=2))
        out["trt-recipe"] = recipe_path
    with tempfile.NamedTemporaryFile("w", dir=dest, delete=False, suffix=".tmp") as fh:
        fh.write(manifest.model_dump_json(indent=2))
    Path(fh.name).replace(dest / "manifest.json")
    out["manifest"] = dest / "manifest.json"
    return out


GoldenSource = Callable[[ModelRecord, VersionRecord, VersionRecord], tuple[list[dict[str, Any]], Path, str]]
"""(model, version, lineage root) -> (golden inputs, reference ONNX, quality metric)."""


class ArtifactBuilder:
    """Finds or builds the artifact of a version for a profile: what deploying by version id needs.

    The golden set belongs to the lineage, not to a version: every version derived from the
    same FP32 root is judged against the same reference outputs. So a golden set already
    stored for the lineage is reused, and only the first build asks ``golden_source``.
    Where a version's data comes from is decided by :class:`controller.version_data.VersionData`.

    Args:
        registry: where versions, blobs and artifacts live.
        signing_key: the controller's Ed25519 key.
        golden_source: where golden inputs come from the first time (default: the samples uploaded
            with the lineage root, else the model zoo; see :meth:`VersionData.golden_inputs`).
        chunk_size: MQTT chunk size of the artifacts it builds.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        signing_key: Ed25519PrivateKey,
        golden_source: GoldenSource | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        self.registry = registry
        self.signing_key = signing_key
        self.data = VersionData(registry)
        self.golden_source = golden_source or self._lineage_golden_inputs
        self.chunk_size = chunk_size

    def _lineage_golden_inputs(self, model: ModelRecord, version: VersionRecord,
                               root: VersionRecord) -> tuple[list[dict[str, Any]], Path, str]:
        found = self.data.golden_inputs(model, version, root)
        if found is None:
            from controller.zoo import ZOO_NAMES

            raise ArtifactBuildError(
                f"no golden inputs known for model {model.name!r}: it is not a zoo model ({', '.join(ZOO_NAMES)}), "
                "no samples were uploaded with it and no artifact of its lineage exists yet; upload it with samples "
                "or build one with controller.artifacts.build_artifact"
            )
        return found.inputs, found.reference_onnx, found.quality_metric

    def artifact_for(
        self, *, version_id: str, profile: str, thresholds: Thresholds | None = None, actor: str | None = None
    ) -> ArtifactRecord:
        """The newest artifact of the version for the profile with these thresholds, built if missing."""
        wanted = (thresholds or Thresholds()).model_dump()
        for art in self.registry.artifacts.list_artifacts(version_id=version_id, profile=profile):
            if thresholds is None or art.manifest.get("thresholds") == wanted:
                return art
        version = self.registry.get_version(version_id=version_id)
        model = self.registry.get_model(model_id=version.model_id)
        root = self.data.root(version)
        reuse = self.data.stored_golden(version)
        kwargs: dict[str, Any]
        if reuse is not None:
            kwargs = {"golden_sha256": reuse[0], "quality_metric": reuse[1]}
        else:
            inputs, reference, metric = self.golden_source(model, version, root)
            kwargs = {"golden_inputs": inputs, "reference_onnx": reference, "quality_metric": metric}
        manifest, _ = build_artifact(
            self.registry,
            version_id,
            profile=profile,
            signing_key=self.signing_key,
            thresholds=thresholds,
            chunk_size=self.chunk_size,
            actor=actor,
            **kwargs,
        )
        art = self.registry.artifacts.find_artifact(manifest=manifest)
        assert art is not None  # build_artifact just recorded it
        return art
