"""FP32 ONNX export shared by the zoo and the training-based compression techniques."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

OPSET = 17


def export_onnx(
    module: Any,
    example_inputs: tuple[Any, ...],
    path: Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> Path:
    """Export ``module`` to a single-file ONNX at ``path`` and check it with ``onnx.checker``.

    The TorchScript exporter (``dynamo=False``) is used on purpose: it is deterministic, exports
    the BERT encoder and MobileNetV2 cleanly, and keeps the graph free of dynamo's extra
    ``Cast``/``Shape`` plumbing that would otherwise show up as unquantisable ops.
    """
    import warnings

    import onnx
    import torch

    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example_inputs,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes or {},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return path
