"""REST uploads of models users really have: one ``.onnx``, or a ``.zip`` of the ``.onnx`` and its weight files.

Why: torch's default export is ``model.onnx`` + ``model.onnx.data``. The upload used to store the
2 KB graph and refuse it with onnx's message, which named a path on the server. Here a zip is
unpacked in a private temp dir and folded into one self-contained ONNX file (what the registry
stores, signs and ships); a bare graph whose weights live elsewhere is refused naming the field,
the missing files and what to send instead. Sample files (``samples``, ``eval_samples``) are
checked with the same input contract as ``edgefleet compress --calibration``. No message carries a
server path.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from controller.api.errors import ApiError


def _scrub(message: str, *paths: Path) -> str:
    for path in paths:
        for text in (str(path), str(path.parent)):
            message = message.replace(text, "")
    return message.replace(" :", ":").strip()


def normalize_model_upload(tmp: Path, filename: str | None = None) -> None:
    """Turn the uploaded ``file`` into one self-contained ONNX file in place, or raise a 422 ApiError."""
    from controller.onnx_files import ModelFileError, missing_external_data, single_file_copy, unpack_model

    shown = filename or "the upload"
    if zipfile.is_zipfile(tmp):
        scratch = Path(tempfile.mkdtemp(prefix="unzip-", dir=tmp.parent))  # beside the upload, same disk
        try:
            inner = unpack_model(tmp, scratch)
            single_file_copy(inner, scratch / "single.onnx")
            shutil.move(str(scratch / "single.onnx"), tmp)
        except ModelFileError as exc:
            raise ApiError(422, f"field 'file' ({shown}): {_scrub(str(exc).replace(tmp.name, shown), tmp, scratch)}",
                           code="invalid_model") from None
        except Exception as exc:  # noqa: BLE001 - onnx parse errors of the inner file
            raise ApiError(422, f"field 'file' ({shown}): the .onnx inside the zip is not a loadable ONNX model "
                           f"({_scrub(str(exc).splitlines()[0][:200], tmp, scratch)})", code="invalid_model") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    try:
        missing = missing_external_data(tmp)
    except Exception:  # noqa: BLE001 - not ONNX at all: check_onnx gives the full message
        return
    if missing:
        raise ApiError(422, f"field 'file' ({shown}): the model keeps its weights in external file(s) {missing}, "
                       "which were not uploaded; send one .zip holding the .onnx and those files (torch's default "
                       "export writes model.onnx + model.onnx.data)", code="invalid_model")


def check_sample_upload(samples: Path, model: Path, field: str) -> int:
    """Validate an uploaded samples ``.npz`` against the model's inputs (the CLI's contract); returns the count."""
    from controller.compression.errors import CalibrationError
    from controller.compression.inputs import load_samples
    from controller.compression.source import input_specs

    try:
        return len(load_samples(samples, input_specs(model), flag=f"field '{field}'"))
    except CalibrationError as exc:
        raise ApiError(422, _scrub(str(exc), samples), code="invalid_input") from None
