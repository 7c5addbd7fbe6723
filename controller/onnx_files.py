"""ONNX models the way users hand them over: one file, ``.onnx`` + external weight files, or a zip.

Why a module of its own: torch's default exporter writes ``model.onnx`` (a 2 KB graph) next to
``model.onnx.data`` (every weight). Counting only the graph made a compressed model look 15×
*larger* than its FP32 source, and a REST upload of the graph alone cannot run anywhere. Every
place that sizes, checks, unpacks or stores a model goes through these functions so the weight
files are never forgotten.

Example:
    >>> from controller.onnx_files import model_bytes, external_data_files
    >>> model_bytes(Path("model.onnx"))          # graph + every weight file it references  # doctest: +SKIP
    >>> unpack_model(Path("model.zip"), workdir)  # the one .onnx inside, its data beside it  # doctest: +SKIP
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any


class ModelFileError(ValueError):
    """A model file that is not usable as handed over (missing weight file, zip without one .onnx, ...)."""


def _external_locations(model: Any) -> list[str]:
    from onnx import TensorProto

    locations: list[str] = []
    tensors = list(model.graph.initializer)
    for node in model.graph.node:  # Constant nodes may keep their value outside too
        tensors += [a.t for a in node.attribute if a.HasField("t")]
    for tensor in tensors:
        if tensor.data_location == TensorProto.EXTERNAL:
            entry = {e.key: e.value for e in tensor.external_data}
            loc = entry.get("location")
            if loc and loc not in locations:
                locations.append(loc)
    return locations


def external_data_files(path: Path) -> list[Path]:
    """The weight files ``path`` references (resolved beside it), in first-use order; [] for a single file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [path.parent / loc for loc in _external_locations(model)]


def missing_external_data(path: Path) -> list[str]:
    """Names of referenced weight files that are not beside ``path``."""
    return [p.name for p in external_data_files(path) if not p.is_file()]


def model_bytes(path: Path | str) -> int:
    """Size of the model as deployed: the graph file plus every external weight file it references."""
    path = Path(path)
    total = path.stat().st_size
    try:
        files = external_data_files(path)
    except Exception:  # noqa: BLE001 - not parseable as ONNX: the file size is all we can say
        return total
    return total + sum(p.stat().st_size for p in files if p.is_file())


def unpack_model(archive: Path, workdir: Path) -> Path:
    """Extract a zip holding exactly one ``.onnx`` (plus its weight files) and return that ``.onnx``.

    Member names are checked before extraction: absolute paths and ``..`` are refused, so a crafted
    archive cannot write outside ``workdir``.
    """
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise ModelFileError(f"{archive.name} is not a readable zip ({exc})") from None
    with zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        for name in names:
            if name.startswith(("/", "\\")) or ".." in Path(name).parts:
                raise ModelFileError(f"{archive.name}: member {name!r} points outside the archive; refused")
        onnx_members = [n for n in names if n.lower().endswith(".onnx") and not Path(n).name.startswith(".")]
        if len(onnx_members) != 1:
            raise ModelFileError(f"{archive.name} must hold exactly one .onnx file (plus its weight files), found "
                                 f"{len(onnx_members)}: {onnx_members[:5]}")
        dest = workdir / "unpacked"
        dest.mkdir(parents=True, exist_ok=True)
        zf.extractall(dest, members=names)
    model = dest / onnx_members[0]
    missing = missing_external_data(model)
    if missing:
        raise ModelFileError(f"{archive.name}: {onnx_members[0]} references weight file(s) {missing} that are not "
                             "in the zip beside it; zip the .onnx together with its .data file(s)")
    return model


def single_file_copy(path: Path, dest: Path) -> Path:
    """``path`` with its external weights folded into one file at ``dest`` (ONNX's 2 GB protobuf limit applies)."""
    import onnx

    missing = missing_external_data(path)
    if missing:
        raise ModelFileError(f"{path.name} keeps its weights in {missing}, which are not beside it; send the .onnx "
                             "and those files together as a .zip")
    model = onnx.load(str(path), load_external_data=True)
    if model.ByteSize() >= 2**31 - 1:
        raise ModelFileError(f"{path.name} is {model.ByteSize() / 2**30:.1f} GiB: over ONNX's 2 GiB single-file "
                             "limit; keep it as .onnx + external data")
    onnx.save(model, str(dest))
    return dest
