"""RL controller: a small policy network chooses the architecture, precision and per-layer precision.

In the spirit of HAQ (per-layer bit-widths) and AMC (per-layer pruning ratios), with a policy
gradient instead of their DDPG: an episode walks the decisions of one candidate — global ones
(sub-network, precision, INT8 range method) from learned logits, then, under static INT8, one
decision per quantised layer (INT8 / INT8 weight-only / FP32) from a network shared by all
layers whose input is the layer's features (position, op type, has weights, measured INT8
sensitivity). The episode's candidate is built and measured like any other trial; its reward is

    R = -(latency_ratio + w_size · size_ratio) - λ · min(1, max(0, floor - quality) / (1 - floor))

(failed candidates get ``FAIL_REWARD``), and REINFORCE with a moving-average baseline updates
the policy. Every episode is a trial of the study, so a resumed search replays the stored
episodes into a fresh policy before asking for new ones.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from controller.optimize.errors import CandidateFailed
from controller.optimize.problem import Budget, spent
from controller.optimize.space import LAYER_CHOICES, Candidate

FAIL_REWARD = -12.0  # below any measured candidate: a failure teaches only 'not this'
OPS = ("Conv", "MatMul", "Gemm")
MAX_LAYERS = 64  # per-layer decisions for the most sensitive layers; the rest stay INT8


@dataclasses.dataclass(frozen=True)
class RewardWeights:
    """Terms of the reward (HAQ/AMC-style: quality penalty + resource terms)."""

    size: float = 0.5
    memory: float = 0.0
    quality_penalty: float = 10.0


def reward(m: dict[str, Any] | None, floor: float, w: RewardWeights | None = None) -> float:
    """Reward of a measured candidate (``None`` = failed)."""
    w = w or RewardWeights()
    if m is None:
        return FAIL_REWARD
    r = -(m["latency_ratio"] + w.size * m["size_ratio"] + w.memory * (m.get("memory_ratio") or 0.0))
    shortfall = max(0.0, floor - m["quality"]) / max(1.0 - floor, 1e-3)
    return r - w.quality_penalty * min(1.0, shortfall)  # capped: a miss is bad, a bigger miss only somewhat worse


def layer_features(table: list[dict[str, Any]]) -> np.ndarray:
    """One row per layer: relative position, op one-hot (+ other), has weights, scaled SQNR sensitivity."""
    n = max(len(table), 1)
    rows = []
    for i, r in enumerate(table):
        op = [1.0 if r["op"] == o else 0.0 for o in OPS]
        sqnr = r.get("sensitivity_sqnr_db")
        rows.append([i / n, *op, 1.0 - sum(op), 1.0 if r["has_weight"] else 0.0,
                     min(float(sqnr), 60.0) / 60.0 if sqnr is not None else 1.0])
    return np.asarray(rows, np.float32).reshape(-1, 7)


class Policy:
    """Global logits per decision plus a 2-layer MLP over layer features (torch, CPU, tiny)."""

    def __init__(self, choices: dict[str, list[str]], seed: int | None = 0, lr: float = 0.05) -> None:
        import torch

        self.torch = torch
        self.gen = torch.Generator().manual_seed(seed or 0)
        torch.manual_seed(seed or 0)
        self.choices = choices
        self.logits = torch.nn.ParameterDict({k: torch.nn.Parameter(torch.zeros(len(v))) for k, v in choices.items()})
        self.layer_net = torch.nn.Sequential(torch.nn.Linear(7, 16), torch.nn.Tanh(),
                                             torch.nn.Linear(16, len(LAYER_CHOICES)))
        with torch.no_grad():  # start with a preference for INT8 per layer, like a quantise-everything default
            self.layer_net[2].bias.copy_(torch.tensor([1.5, 0.0, -0.5]))
        params = [*self.logits.parameters(), *self.layer_net.parameters()]
        self.optim = torch.optim.Adam(params, lr=lr)
        self.baseline: float | None = None

    def _dist(self, logits: Any) -> Any:
        return self.torch.distributions.Categorical(logits=logits)

    def sample_global(self, name: str) -> int:
        """Index of the sampled choice for a global decision."""
        return int(self._dist(self.logits[name]).sample().item())

    def sample_layers(self, feats: np.ndarray) -> list[int]:
        """One decision per layer row."""
        with self.torch.no_grad():
            logits = self.layer_net(self.torch.from_numpy(feats))
        return [int(a) for a in self._dist(logits).sample().tolist()]

    def log_prob(self, actions: dict[str, int], layer_actions: list[int], feats: np.ndarray | None) -> Any:
        """Log-probability of an episode's actions under the current policy (for the gradient)."""
        total = sum(self._dist(self.logits[k]).log_prob(self.torch.tensor(a)) for k, a in actions.items())
        if layer_actions and feats is not None and len(feats):
            logits = self.layer_net(self.torch.from_numpy(feats))
            total = total + self._dist(logits).log_prob(self.torch.tensor(layer_actions)).sum()
        return total

    def update(self, r: float, actions: dict[str, int], layer_actions: list[int], feats: np.ndarray | None) -> float:
        """One REINFORCE step with a moving-average baseline; returns the advantage used."""
        self.baseline = r if self.baseline is None else 0.8 * self.baseline + 0.2 * r
        advantage = r - self.baseline
        if abs(advantage) < 1e-9:
            return 0.0
        loss = -advantage * self.log_prob(actions, layer_actions, feats)
        self.optim.zero_grad()
        loss.backward()
        self.optim.step()
        return advantage


class Controller:
    """Turns policy actions into candidates for one problem, and episodes back into updates."""

    def __init__(self, problem: Any, seed: int | None = 0, weights: RewardWeights | None = None) -> None:
        self.problem = problem
        space = problem.space
        self.choices = {"arch": list(space.archs), "precision": list(space.precisions),
                        "calibration": list(space.calibrations)}
        self.policy = Policy(self.choices, seed=seed)
        self.weights = weights or RewardWeights()
        self.floor = problem.constraints.quality_floor

    def _table(self, arch: str, calibration: str) -> list[dict[str, Any]]:
        return self.problem.evaluator.sensitivity(arch, calibration)[:MAX_LAYERS]

    def propose(self) -> tuple[Candidate, dict[str, int], list[int]]:
        """Sample one episode's candidate; raises CandidateFailed when its sub-network cannot be built."""
        actions = {k: self.policy.sample_global(k) for k in self.choices}
        arch, precision = self.choices["arch"][actions["arch"]], self.choices["precision"][actions["precision"]]
        calibration = self.choices["calibration"][actions["calibration"]]
        if precision != "int8":
            return Candidate(arch=arch, precision=precision), actions, []
        table = self._table(arch, calibration)
        layer_actions = self.policy.sample_layers(layer_features(table))
        layers = tuple(sorted((r["node"], LAYER_CHOICES[a]) for r, a in zip(table, layer_actions, strict=True)))
        return Candidate(arch=arch, precision=precision, calibration=calibration, layers=layers), actions, layer_actions

    def actions_of(self, candidate: Candidate) -> tuple[dict[str, int], list[int], np.ndarray | None]:
        """Recover the actions of a stored candidate (to replay it after a restart)."""
        actions = {"arch": self.choices["arch"].index(candidate.arch),
                   "precision": self.choices["precision"].index(candidate.precision),
                   "calibration": self.choices["calibration"].index(candidate.calibration)}
        if candidate.precision != "int8" or not candidate.layers:
            return actions, [], None
        table = self._table(candidate.arch, candidate.calibration)
        chosen = dict(candidate.layers)
        layer_actions = [LAYER_CHOICES.index(chosen.get(r["node"], "int8")) for r in table]
        return actions, layer_actions, layer_features(table)

    def learn(self, candidate: Candidate, m: dict[str, Any] | None) -> float:
        """Reward an episode and update the policy."""
        try:
            actions, layer_actions, feats = self.actions_of(candidate)
        except (ValueError, CandidateFailed):  # outside today's space (e.g. the space was narrowed): skip
            return 0.0
        if candidate.precision != "int8":
            actions.pop("calibration")  # not a decision of this episode
        return self.policy.update(reward(m, self.floor, self.weights), actions, layer_actions, feats)


def run_rl(problem: Any, study: Any, budget: Budget, *, seed: int | None = 0) -> dict[str, Any]:
    """Train the controller episode by episode until the budget is spent; every episode is a study trial."""
    import time
    import warnings

    import optuna

    controller = Controller(problem, seed=seed)
    rewards: list[float] = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)):
        if "candidate" in t.user_attrs:  # replay what a previous run learnt from
            controller.learn(Candidate.from_dict(t.user_attrs["candidate"]), t.user_attrs.get("measurement"))
    started = time.monotonic()
    while True:
        if budget.trials is not None and spent(study) >= budget.trials:
            break
        if budget.time_s is not None and time.monotonic() - started > budget.time_s:
            break
        with warnings.catch_warnings():  # heartbeats are optuna.optimize's; ask/tell trials finish here anyway
            warnings.simplefilter("ignore", UserWarning)
            trial = study.ask()
        measurement = None
        try:
            candidate, _, _ = controller.propose()
        except CandidateFailed as exc:  # the sampled sub-network cannot be built: a failed episode
            trial.set_user_attr("failure", exc.reason)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            rewards.append(FAIL_REWARD)
            continue
        try:
            values = problem.run_trial(trial, candidate, study)
        except CandidateFailed:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, values)
            measurement = study.trials[trial.number].user_attrs.get("measurement")
        controller.learn(candidate, measurement)
        rewards.append(reward(measurement, controller.floor, controller.weights))
    mean = float(np.mean(rewards)) if rewards else math.nan
    return {"episodes": len(rewards), "mean_reward": mean, "baseline": controller.policy.baseline}
