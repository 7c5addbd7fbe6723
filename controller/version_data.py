"""Where a model version's data comes from, decided once through its lineage.

A version has no data of its own: its calibration inputs (for compression), its golden
inputs (for an artifact's on-device quality check and a conversion's cross-runtime check)
and its quality metric are those of its lineage root, the version that entered the
registry. Three sources exist, tried in this order:

1. a golden set already stored for the lineage (an artifact of any version with the same
   root): every version of a lineage is judged against the same reference outputs;
2. sample inputs uploaded with the root (``config["samples_sha256"]``, an ``.npz`` without
   pickle whose keys are the graph inputs), quality metric ``cosine``;
3. the model zoo, when the lineage descends from a zoo import (``config["source"] == "zoo"``),
   with the zoo's held-out inputs, its metric and the root as FP32 reference.

Jobs (``controller.jobs.kinds``), the API (upload, fleet start-up) and the artifact builder
(``controller.artifacts``) all ask this module, so the rule cannot drift between them.

Example:
    >>> data = VersionData(registry)                              # doctest: +SKIP
    >>> data.zoo_name(version), data.samples_path(version)        # ('mobilenetv2', None)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from controller.registry import ModelRecord, Registry, VersionRecord
    from controller.zoo import ZooModel

#: golden inputs per artifact when they come from uploaded samples or the zoo
GOLDEN_SAMPLES = 16
#: samples a conversion's cross-runtime check runs on
CHECK_SAMPLES = 32


@dataclass(frozen=True)
class GoldenInputs:
    """What a new golden set is built from: real inputs, the FP32 reference to run them on, the metric."""

    inputs: list[dict[str, np.ndarray]]
    reference_onnx: Path
    quality_metric: str


def load_samples(path: Path) -> list[dict[str, Any]]:
    """Per-sample input dicts (batch axis kept, size 1) from a samples ``.npz`` (no pickle)."""
    import numpy as np

    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    n = min(len(a) for a in arrays.values())
    return [{k: a[i:i + 1] for k, a in arrays.items()} for i in range(n)]


class VersionData:
    """Resolves a version's calibration / golden / evaluation data through its lineage (see the module doc)."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def root(self, version: VersionRecord) -> VersionRecord:
        """The lineage root: the version that entered the registry (upload or zoo import)."""
        return self.registry.lineage(version_id=version.id)[0]

    def zoo_name(self, version: VersionRecord) -> str | None:
        """The zoo model the lineage was imported from, or None (uploaded ONNX)."""
        from controller.zoo import ZOO_NAMES

        root = self.root(version)
        name = root.config.get("zoo") if root.config.get("source") == "zoo" else None
        return name if name in ZOO_NAMES else None

    def zoo_entry(self, version: VersionRecord) -> ZooModel | None:
        """The zoo entry (real data, torch module) of a zoo lineage, else None."""
        name = self.zoo_name(version)
        if name is None:
            return None
        from controller import zoo

        return zoo.load(name)

    def samples_path(self, version: VersionRecord) -> Path | None:
        """The ``.npz`` of real inputs uploaded with the lineage root (calibration for user ONNX), if any."""
        sha = self.root(version).config.get("samples_sha256")
        return self.registry.blob_path(sha256=sha) if sha else None

    def eval_samples_path(self, version: VersionRecord) -> Path | None:
        """The held-out ``.npz`` uploaded with the root (``eval_samples``): measured on, never calibrated on."""
        sha = self.root(version).config.get("eval_samples_sha256")
        return self.registry.blob_path(sha256=sha) if sha else None

    def compression_input(self, version: VersionRecord, onnx_path: Path) -> tuple[Path | ZooModel, Path | None]:
        """(model, calibration) to hand ``compress`` for ``version`` whose ONNX was copied to ``onnx_path``.

        A zoo lineage gives the zoo entry (real calibration/eval data, torch module); a derived
        version of it keeps the zoo's data but its own ONNX file. Anything else is the ONNX file
        calibrated on the samples uploaded with its root (None: the technique synthesizes none
        and says so).
        """
        entry = self.zoo_entry(version)
        if entry is None:
            return onnx_path, self.samples_path(version)
        if version.id == self.root(version).id:
            return entry, None
        derived = type(f"{type(entry).__name__}Version", (type(entry),), {"onnx_path": property(lambda _: onnx_path)})
        clone = derived.__new__(derived)
        clone.__dict__.update(entry.__dict__)
        return clone, None

    def check_inputs(self, version: VersionRecord, limit: int = CHECK_SAMPLES) -> dict[str, np.ndarray] | None:
        """Uploaded sample inputs stacked on axis 0 (a conversion's cross-runtime check), if any."""
        import numpy as np

        path = self.samples_path(version)
        if path is None:
            return None
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k][:limit] for k in npz.files}

    def quality_metric(self, version: VersionRecord) -> str:
        """``top1`` / ``cosine`` as the zoo entry declares it; ``cosine`` for uploaded models."""
        entry = self.zoo_entry(version)
        return entry.quality_metric if entry is not None else "cosine"

    def stored_golden(self, version: VersionRecord) -> tuple[str, str] | None:
        """(golden sha256, quality metric) of any artifact already built in the same lineage."""
        root = self.root(version)
        for other in reversed(self.registry.list_versions(model_id=version.model_id, limit=10_000)):
            arts = self.registry.artifacts.list_artifacts(version_id=other.id)
            if not arts or self.root(other).id != root.id:
                continue
            for art in arts:
                for ref in art.manifest.get("files", []):
                    if ref.get("role") == "golden":
                        return ref["sha256"], art.manifest["quality_metric"]
        return None

    def golden_inputs(self, model: ModelRecord, version: VersionRecord, root: VersionRecord,
                      limit: int = GOLDEN_SAMPLES) -> GoldenInputs | None:
        """Inputs for a lineage's first golden set: uploaded samples, else the zoo; None when neither exists.

        For the zoo, the name is the root's ``config["zoo"]``, else the version's, else the model
        name (a model registered under a zoo name without an import record still finds its data).
        """
        sha = root.config.get("samples_sha256")
        if sha:
            return GoldenInputs(load_samples(self.registry.blob_path(sha256=sha))[:limit],
                                self.registry.blob_path(sha256=root.sha256), "cosine")
        from controller import zoo

        name = root.config.get("zoo") or version.config.get("zoo") or model.name
        if name not in zoo.ZOO_NAMES:
            return None
        entry = zoo.load(name)
        return GoldenInputs(entry.eval_inputs(limit), entry.onnx_path, entry.quality_metric)
