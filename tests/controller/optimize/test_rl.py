"""The RL controller's parts: reward shape, layer features, and a policy that learns from rewards."""

from __future__ import annotations

import numpy as np
import pytest

from controller.optimize.rl import FAIL_REWARD, Policy, layer_features, reward


def test_reward_prefers_fast_small_and_punishes_quality_below_floor() -> None:
    fast = {"latency_ratio": 0.4, "size_ratio": 0.25, "quality": 0.99}
    slow = {"latency_ratio": 0.9, "size_ratio": 0.25, "quality": 0.99}
    broken = {"latency_ratio": 0.3, "size_ratio": 0.1, "quality": 0.90}
    assert reward(fast, 0.98) > reward(slow, 0.98)
    assert reward(broken, 0.98) < reward(slow, 0.98)  # 8 points under the floor cost more than any speed-up
    assert reward(None, 0.98) == FAIL_REWARD < reward(broken, 0.98)  # a failure is worse than any measurement


def test_layer_features_encode_op_weight_and_sensitivity() -> None:
    table = [{"node": "a", "op": "Conv", "has_weight": True, "sensitivity_sqnr_db": 12.0},
             {"node": "b", "op": "Add", "has_weight": False, "sensitivity_sqnr_db": None}]
    f = layer_features(table)
    assert f.shape == (2, 7)
    assert f[0, 1] == 1.0 and f[1, 4] == 1.0  # Conv one-hot / "other"
    assert f[0, 5] == 1.0 and f[1, 5] == 0.0
    assert f[0, 6] == pytest.approx(0.2) and f[1, 6] == 1.0


def test_policy_gradient_moves_probability_towards_rewarded_actions() -> None:
    import torch

    policy = Policy({"precision": ["fp32", "int8", "int4"]}, seed=1, lr=0.1)
    feats = layer_features([{"node": str(i), "op": "MatMul", "has_weight": True, "sensitivity_sqnr_db": 30.0}
                            for i in range(4)])

    def probs() -> tuple[float, np.ndarray]:
        with torch.no_grad():
            p = torch.softmax(policy.logits["precision"], 0)[1].item()
            layer = torch.softmax(policy.layer_net(torch.from_numpy(feats)), 1)[:, 2].numpy()
        return p, layer

    p0, l0 = probs()
    for _ in range(60):  # reward: int8 globally and FP32 ("fp32" = index 2) on every layer
        a = policy.sample_global("precision")
        layers = policy.sample_layers(feats)
        r = float(a == 1) + sum(x == 2 for x in layers) / len(layers)
        policy.update(r, {"precision": a}, layers, feats)
    p1, l1 = probs()
    assert p1 > p0 + 0.2
    assert (l1 > l0 + 0.1).all()
