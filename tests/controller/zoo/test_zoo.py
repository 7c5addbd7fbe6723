"""The real zoo: correct labels on real photos, real MNIST accuracy, disjoint splits, cached exports."""

from __future__ import annotations

import numpy as np
import pytest

from controller import zoo
from controller.zoo import datasets


def test_unknown_zoo_name_lists_available():
    with pytest.raises(zoo.UnknownZooModelError, match="minilm"):
        zoo.load("resnet")


def test_sentence_splits_are_real_and_disjoint():
    calib, held_out = datasets.sentence_split("calibration"), datasets.sentence_split("eval")
    assert len(calib) >= 500 and len(held_out) >= 500
    assert not set(calib) & set(held_out)
    assert all(s[0].isupper() and len(s.split()) >= 5 for s in held_out[:50])


def test_mnist_split_is_balanced_and_disjoint():
    data = datasets.mnist()
    assert data["x_train"].shape == (4000, 1, 28, 28) and data["x_test"].shape == (1000, 1, 28, 28)
    assert 0.0 <= data["x_train"].min() and data["x_train"].max() <= 1.0
    assert len(np.unique(data["y_test"])) == 10


@pytest.mark.slow
def test_mobilenetv2_recognises_real_photos():
    import skimage.data

    from controller.zoo.base import ort_session
    from controller.zoo.mobilenetv2 import imagenet_class_name

    m = zoo.load("mobilenetv2")
    sess = ort_session(m.onnx_path)
    top5 = {}
    for name in ("chelsea", "coffee"):
        logits = sess.run(None, {"input": datasets.imagenet_preprocess(getattr(skimage.data, name)())})[0]
        top5[name] = " ".join(imagenet_class_name(i) for i in logits[0].argsort()[::-1][:5]).lower()
    assert "cat" in top5["chelsea"] or "mau" in top5["chelsea"]
    assert "espresso" in top5["coffee"] or "cup" in top5["coffee"]
    calib, held_out = m.calibration_inputs(20), m.eval_inputs(20)
    assert calib[0]["input"].shape == (1, 3, 224, 224) and held_out[0]["input"].dtype == np.float32
    assert m.quality_metric == "top1"


@pytest.mark.slow
def test_mnist_cnn_is_trained_for_real_and_onnx_matches_torch():
    import torch

    m = zoo.load("mnist-cnn")
    assert m.task_score(m.onnx_path)["accuracy"] >= 0.95
    x = m.eval_inputs(4)[2]["input"]
    with torch.no_grad():
        expected = m.torch_model()(torch.from_numpy(x)).numpy()
    from controller.zoo.base import ort_session

    np.testing.assert_allclose(ort_session(m.onnx_path).run(None, {"input": x})[0], expected, atol=1e-4)
    assert len(m.eval_labels(10)) == 10


@pytest.mark.slow
def test_minilm_embeddings_are_unit_norm_and_meaningful():
    from controller.zoo.base import ort_session

    m = zoo.load("minilm")
    sess = ort_session(m.onnx_path)
    emb = np.concatenate([sess.run(None, x)[0] for x in m.eval_inputs(3)])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert m.task_score(m.onnx_path)["retrieval_at_1"] > 0.7  # far above chance (1/475)
