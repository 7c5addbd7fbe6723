"""Low-rank decomposition: SVD for Linear layers, Tucker-2 (tensorly) for convolutions, optional fine-tune.

A layer is only replaced when the factorised form has fewer parameters than the original — a
rank-r factorisation of an m×n Linear costs r(m+n), so near-square low-energy layers shrink and
others are left alone (and listed in the report). Quality is restored by a short fine-tune with
real labels or distillation from the FP32 model (see ``torch_tools``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import numpy as np

from controller.compression.config import CompressionConfig, TechniqueFamily, check_range, register_handler
from controller.compression.source import ModelSource


@dataclasses.dataclass(frozen=True)
class SvdConfig(CompressionConfig):
    """Truncated SVD of ``nn.Linear`` weights.

    Attributes:
        rank_mode: ``energy`` (keep the smallest rank holding ``energy`` of the squared singular
            values) or ``ratio`` (rank so each layer keeps ``ratio`` of its parameters).
        energy: energy fraction for ``energy`` mode.
        ratio: per-layer parameter ratio for ``ratio`` mode.
        min_features: skip layers whose smaller side is below this.
        finetune_epochs / lr: optional fine-tune after factorising.
    """

    technique: ClassVar[str] = "svd"

    family: ClassVar[TechniqueFamily] = TechniqueFamily.DECOMPOSE
    needs_torch: ClassVar[bool] = True
    rank_mode: Literal["energy", "ratio"] = "ratio"
    energy: float = 0.9
    ratio: float = 0.5
    min_features: int = 32
    finetune_epochs: int = 2
    lr: float = 1e-4
    version: int = 1

    def _validate(self) -> None:
        check_range("energy", self.energy, 0.01, 1.0)
        check_range("ratio", self.ratio, 0.01, 1.0)
        check_range("finetune_epochs", self.finetune_epochs, 0, 1000)


@dataclasses.dataclass(frozen=True)
class TuckerConfig(CompressionConfig):
    """Tucker-2 decomposition of ``nn.Conv2d`` (1×1 → k×k core → 1×1).

    Attributes:
        rank_ratio: ranks of the input / output channel modes as a fraction of the channels.
        min_channels: skip convolutions with fewer input or output channels.
        finetune_epochs / lr: optional fine-tune after decomposing.
        also_svd_linear: factorise Linear layers too (same ``rank_ratio``).
    """

    technique: ClassVar[str] = "tucker"

    family: ClassVar[TechniqueFamily] = TechniqueFamily.DECOMPOSE
    needs_torch: ClassVar[bool] = True
    rank_ratio: float = 0.5
    min_channels: int = 16
    finetune_epochs: int = 2
    lr: float = 1e-4
    also_svd_linear: bool = True
    version: int = 1

    def _validate(self) -> None:
        check_range("rank_ratio", self.rank_ratio, 0.01, 1.0)
        check_range("finetune_epochs", self.finetune_epochs, 0, 1000)


def _svd_rank(s: np.ndarray, m: int, n: int, mode: str, energy: float, ratio: float) -> int:
    if mode == "energy":
        cum = np.cumsum(s**2) / max(float(np.sum(s**2)), 1e-30)
        return int(np.searchsorted(cum, energy) + 1)
    return max(1, int(ratio * m * n / (m + n)))


def _factorise_linear(layer: Any, rank: int) -> Any:
    import torch
    from torch import nn

    w = layer.weight.detach()
    u, s, vh = torch.linalg.svd(w, full_matrices=False)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    root = s[:rank].sqrt()
    first.weight.data = (root[:, None] * vh[:rank]).contiguous()
    second.weight.data = (u[:, :rank] * root[None, :]).contiguous()
    if layer.bias is not None:
        second.bias.data = layer.bias.detach().clone()
    return nn.Sequential(first, second)


def _tucker_conv(layer: Any, ratio: float) -> Any:
    import tensorly as tl
    import torch
    from tensorly.decomposition import partial_tucker
    from torch import nn

    tl.set_backend("numpy")
    w = layer.weight.detach().numpy().astype(np.float64)  # out, in, kh, kw
    r_out = max(1, int(round(ratio * w.shape[0])))
    r_in = max(1, int(round(ratio * w.shape[1])))
    (core, factors), _ = partial_tucker(w, rank=[r_out, r_in], modes=[0, 1], init="svd", n_iter_max=50)
    u_out, u_in = factors
    first = nn.Conv2d(w.shape[1], r_in, 1, bias=False)
    middle = nn.Conv2d(r_in, r_out, layer.kernel_size, layer.stride, layer.padding, layer.dilation, bias=False)
    last = nn.Conv2d(r_out, w.shape[0], 1, bias=layer.bias is not None)
    first.weight.data = torch.from_numpy(u_in.T[:, :, None, None].astype(np.float32)).contiguous()
    middle.weight.data = torch.from_numpy(core.astype(np.float32)).contiguous()
    last.weight.data = torch.from_numpy(u_out[:, :, None, None].astype(np.float32)).contiguous()
    if layer.bias is not None:
        last.bias.data = layer.bias.detach().clone()
    return nn.Sequential(first, middle, last)


def _replace(root: Any, name: str, new: Any) -> None:
    parent = root.get_submodule(name.rsplit(".", 1)[0]) if "." in name else root
    setattr(parent, name.rsplit(".", 1)[-1], new)


def decompose(model: Any, *, conv_ratio: float | None, linear: dict[str, Any] | None,
              min_channels: int = 16) -> list[dict[str, Any]]:
    """Replace eligible layers in place; returns one row per layer (factorised or skipped, with why)."""
    from torch import nn

    rows = []
    for name, layer in list(model.named_modules()):
        if isinstance(layer, nn.Linear) and linear is not None:
            m, n = layer.out_features, layer.in_features
            if min(m, n) < linear["min_features"]:
                rows.append({"layer": name, "kind": "linear", "action": "skipped", "why": "too small"})
                continue
            s = np.linalg.svd(layer.weight.detach().numpy(), compute_uv=False)
            rank = _svd_rank(s, m, n, linear["mode"], linear["energy"], linear["ratio"])
            if rank * (m + n) >= m * n:
                rows.append({"layer": name, "kind": "linear", "action": "skipped", "rank": rank,
                             "why": "factorised form would not be smaller"})
                continue
            _replace(model, name, _factorise_linear(layer, rank))
            rows.append({"layer": name, "kind": "linear", "action": "svd", "rank": rank,
                         "param_ratio": rank * (m + n) / (m * n)})
        elif isinstance(layer, nn.Conv2d) and conv_ratio is not None:
            if layer.groups != 1 or min(layer.in_channels, layer.out_channels) < min_channels \
                    or layer.kernel_size == (1, 1):
                rows.append({"layer": name, "kind": "conv", "action": "skipped",
                             "why": "grouped, 1x1 or too few channels"})
                continue
            before = layer.weight.numel()
            new = _tucker_conv(layer, conv_ratio)
            after = sum(p.numel() for p in new.parameters() if p.dim() == 4)
            if after >= before:
                rows.append({"layer": name, "kind": "conv", "action": "skipped", "why": "would not be smaller"})
                continue
            _replace(model, name, new)
            rows.append({"layer": name, "kind": "conv", "action": "tucker", "param_ratio": after / before})
    return rows


def _run(source: ModelSource, config: Any, ctx: Any, conv_ratio: float | None,
         linear: dict[str, Any] | None) -> dict[str, Any]:
    from controller.compression import torch_tools
    from controller.compression.errors import UnsupportedModelError

    teacher = source.torch_model(config.technique)
    model = source.torch_model(config.technique)
    before = torch_tools.param_count(model)
    ctx.progress(0.1, "decomposing layers")
    rows = decompose(model, conv_ratio=conv_ratio, linear=linear,
                     min_channels=getattr(config, "min_channels", 16))
    if not any(r["action"] != "skipped" for r in rows):
        raise UnsupportedModelError(f"{config.technique}: no layer of {source.name} could be factorised smaller "
                                    f"({len(rows)} candidates skipped)")
    history: dict[str, Any] = {"epochs": 0}
    if config.finetune_epochs:
        data = torch_tools.train_data(source, ctx, max_samples=4000, batch=32)
        history = torch_tools.fine_tune(model, teacher, data, metric=source.quality_metric,
                                        epochs=config.finetune_epochs, lr=config.lr,
                                        progress=lambda f, m: ctx.progress(0.2 + 0.7 * f, m))
    torch_tools.export(model, source, ctx.output)
    after = torch_tools.param_count(model)
    return {"params_before": before, "params_after": after, "param_ratio": after / before, "layers": rows,
            "fine_tune": history}


@register_handler(SvdConfig)
def svd(source: ModelSource, config: SvdConfig, ctx: Any) -> dict[str, Any]:
    """Factorise Linear layers by truncated SVD, fine-tune, export."""
    linear = {"mode": config.rank_mode, "energy": config.energy, "ratio": config.ratio,
              "min_features": config.min_features}
    return _run(source, config, ctx, None, linear)


@register_handler(TuckerConfig)
def tucker(source: ModelSource, config: TuckerConfig, ctx: Any) -> dict[str, Any]:
    """Tucker-2 decompose convolutions (and optionally SVD the Linears), fine-tune, export."""
    linear = ({"mode": "ratio", "energy": 1.0, "ratio": config.rank_ratio, "min_features": config.min_channels}
              if config.also_svd_linear else None)
    return _run(source, config, ctx, config.rank_ratio, linear)
