"""The torch half of :mod:`tests.tiny_models` (imported only by tests that have torch)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class ResidualCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.Conv2d(64, 64, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.ReLU(), nn.Conv2d(64, 64, 1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 256), nn.ReLU(),
                                  nn.Linear(256, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(x + self.block(x))


class Block(nn.Module):
    def __init__(self, d: int = 32) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / 32 ** 0.5, dim=-1) @ self.v(x)
        x = self.ln1(x + self.o(att))
        return self.ln2(x + self.ffn(x))


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Block() for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.layer:
            x = block(x)
        return x


class AttentionEncoder(nn.Module):
    """Three self-attention blocks under ``encoder.layer`` (BERT's layout): activation×activation MatMuls."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).mean(1)


class MobileCnn(nn.Module):
    """Conv-BN-ReLU, depthwise conv, pooling, linear: the MobileNet building blocks in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dw(self.stem(x)).mean((2, 3)))


def mobile_cnn() -> nn.Module:
    model = MobileCnn()
    with torch.no_grad():  # non-trivial BN statistics so folding is actually exercised
        model.stem[1].running_mean.uniform_(-0.5, 0.5)
        model.stem[1].running_var.uniform_(0.5, 2.0)
    return model


class TokenEncoder(nn.Module):
    """Token ids + attention mask → pooled, normalised embedding: the MiniLM signature in miniature."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(1000, 32)
        self.ff = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.norm = nn.LayerNorm(32)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.emb(input_ids) + self.ff(self.emb(input_ids)))
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)


class BesselAct(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.special.bessel_j0(x)


class Bessel(nn.Module):
    """Has an op (special_bessel_j0) that no mobile converter lowers, inside a named submodule."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.act = BesselAct()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.proj(x))


MODULES: dict[str, Callable[[], nn.Module]] = {
    "cnn": ResidualCnn,
    "mlp": lambda: nn.Sequential(nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 128), nn.GELU(),
                                 nn.Linear(128, 16)),
    "attention-encoder": AttentionEncoder,
    "mobile-cnn": mobile_cnn,
    "token-encoder": TokenEncoder,
    "bessel": Bessel,
}
