"""``optimize``: search compositions of existing techniques for a device, measure, return the front.

Every trial lives in an optuna study (SQLite in the output directory by default, any database
URL optuna accepts for several workers), so a stopped search resumes where it was and workers on
several machines can join one study. Strategies: optuna's NSGA-II, TPE and random samplers, and
an RL controller (``controller.optimize.rl``) for per-layer decisions.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import random
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common.profiles import DeviceProfile, load_profile
from controller.optimize.data import search_data
from controller.optimize.errors import CandidateFailed, InvalidSearchError
from controller.optimize.measure import BuildOptions, Evaluator
from controller.optimize.metrics import get_metric
from controller.optimize.problem import Budget, Constraints, StopAtBudget, check_objectives, check_strategy, spent
from controller.optimize.result import SearchResult, collect
from controller.optimize.space import Candidate, build_space, model_traits

log = logging.getLogger(__name__)

Progress = Callable[[int, int | None, str], None]


@dataclasses.dataclass
class Problem:
    """Everything a strategy needs to run trials: the space, the evaluator, objectives, constraints."""

    evaluator: Evaluator
    space: Any
    profile: DeviceProfile
    objectives: tuple[str, ...]
    constraints: Constraints
    out: Path
    progress: Progress | None = None
    budget_trials: int | None = None

    def values(self, m: dict[str, Any]) -> list[float]:
        """Objective values in optuna's directions (quality maximised, the rest minimised)."""
        keys = {"quality": "quality", "latency": "latency_ratio", "size": "size_ratio", "memory": "memory_ratio"}
        return [float(m[keys[o]]) for o in self.objectives]

    def directions(self) -> list[str]:
        """optuna study directions matching :meth:`values`."""
        return ["maximize" if o == "quality" else "minimize" for o in self.objectives]

    def run_trial(self, trial: Any, candidate: Candidate, study: Any) -> list[float]:
        """Build + measure one candidate, record it on ``trial``; CandidateFailed marks it failed."""
        trial.set_user_attr("candidate", candidate.to_dict())
        trial.set_user_attr("label", candidate.describe())
        trial.set_user_attr("worker", f"{platform.node()}:{os.getpid()}")
        started = time.perf_counter()
        try:
            previous = _measured(study, candidate.key(), trial.number)
            if previous is not None:  # the sampler proposed a candidate already measured: reuse its figures
                measurement, stages, path = previous["measurement"], previous["stages"], previous["path"]
                trial.set_user_attr("repeat_of", previous["number"])
            else:
                path = self.out / "candidates" / f"trial-{trial.number:04d}.onnx"
                try:
                    built = self.evaluator.build(candidate, path)
                    measurement, stages = self.evaluator.measure(path).to_dict(), built.stages
                except CandidateFailed:
                    raise
                except Exception as exc:  # any crash of a technique or probe fails this trial, not the search
                    log.exception("trial %d crashed", trial.number)
                    detail = str(exc).splitlines()[0][:300] if str(exc) else ""
                    raise CandidateFailed(f"{candidate.describe()}: crashed: {type(exc).__name__}: {detail}") from exc
                path = str(path.relative_to(self.out))
        except CandidateFailed as exc:
            trial.set_user_attr("failure", exc.reason)
            trial.set_user_attr("seconds", time.perf_counter() - started)
            self._report(study, trial.number, f"trial {trial.number} failed: {exc.reason}")
            raise
        violations = self.constraints.violations(measurement, self.profile)
        trial.set_user_attr("measurement", measurement)
        trial.set_user_attr("stages", stages)
        trial.set_user_attr("path", path)
        trial.set_user_attr("violations", violations)
        for name, value in violations.items():  # samplers prefer feasible trials (optuna >= 5)
            trial.set_constraint(name, value)
        trial.set_user_attr("seconds", time.perf_counter() - started)
        self._report(study, trial.number, f"trial {trial.number}: {candidate.describe()} quality "
                     f"{measurement['quality']:.4f} latency {measurement['latency_ratio']:.2f}x size "
                     f"{measurement['size_ratio']:.3f}x", (candidate.describe(), measurement))
        return self.values(measurement)

    def _report(self, study: Any, number: int, message: str, current: tuple[str, dict] | None = None) -> None:
        log.info(message)
        if self.progress is not None:
            done = spent(study) + 1
            best = best_so_far(study, lambda m: self.constraints.feasible(m, self.profile), current)
            self.progress(done, self.budget_trials, f"{message}; best so far: {best}")


def _measured(study: Any, key: str, number: int) -> dict[str, Any] | None:
    """The stored outcome of an identical candidate: its figures, or CandidateFailed with its reason."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
    for t in study.get_trials(deepcopy=False, states=states):
        attrs = t.user_attrs
        if t.number == number or "candidate" not in attrs or Candidate.from_dict(attrs["candidate"]).key() != key:
            continue
        if "measurement" in attrs:
            return {"number": t.number, **{k: attrs[k] for k in ("measurement", "stages", "path")}}
        if "failure" in attrs:  # the same candidate failed before: fail again at once (same reason, no rebuild)
            raise CandidateFailed(f"same as trial {t.number}: {attrs['failure']}")
    return None


def best_so_far(study: Any, feasible: Callable[[dict], bool], current: tuple[str, dict] | None = None) -> str:
    """The fastest feasible measured point (the trial being finished included), in words."""
    import optuna

    measured = [(t.user_attrs.get("label"), t.user_attrs.get("measurement"))
                for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    best = None
    for label, m in [*measured, *([current] if current else [])]:
        if m and feasible(m) and (best is None or m["latency_ratio"] < best[1]["latency_ratio"]):
            best = (label, m)
    if best is None:
        return "nothing meets the quality floor and the SLO yet"
    label, m = best
    return f"{label} ({m['latency_ratio']:.2f}x latency, quality {m['quality']:.4f})"


def _storage(url: str) -> Any:
    """An optuna storage for ``url``: RDB with heartbeats (so a restarted search fails the trials a killed
    worker left running) and a patient SQLite lock wait; anything else is handed to optuna as is."""
    import optuna

    if not url.startswith(("sqlite", "postgresql", "mysql")):
        return url
    kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=30, grace_period=600)


def open_study(problem: Problem, strategy: str, storage: str, study_name: str, seed: int | None) -> Any:
    """Create or load the study (a restart with the same storage + name resumes it)."""
    import optuna

    samplers = {
        "nsga2": lambda: optuna.samplers.NSGAIISampler(population_size=8, seed=seed),
        "tpe": lambda: optuna.samplers.TPESampler(n_startup_trials=5, seed=seed,
                                                  multivariate=True),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
        "rl": lambda: optuna.samplers.RandomSampler(seed=seed),  # unused: the RL controller asks itself
    }
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for attempt in range(6):  # workers starting together race to create the schema: the loser retries
        try:
            study = optuna.create_study(storage=_storage(storage), study_name=study_name,
                                        directions=problem.directions(), sampler=samplers[strategy](),
                                        load_if_exists=True)
            break
        except Exception as exc:  # sqlalchemy IntegrityError / OperationalError ("database is locked")
            if attempt == 5 or type(exc).__name__ not in ("IntegrityError", "OperationalError"):
                raise
            time.sleep(0.2 + random.random() * (attempt + 1))
    stored = study.user_attrs.get("objectives")
    if stored is None:
        study.set_user_attr("objectives", list(problem.objectives))
        study.set_user_attr("strategy", strategy)
    elif list(stored) != list(problem.objectives):
        raise InvalidSearchError(f"study {study_name!r} was started with objectives {stored}; resume it with the "
                                 "same objectives or use another study name")
    return study


def run_optuna(problem: Problem, study: Any, budget: Budget) -> None:
    """Ask optuna's sampler for candidates until the (shared) budget is spent."""
    remaining = None if budget.trials is None else max(0, budget.trials - spent(study))
    if remaining == 0:
        return
    # several workers on one study share the trial budget
    callbacks = [StopAtBudget(budget.trials)] if budget.trials is not None else []
    study.optimize(lambda trial: problem.run_trial(trial, problem.space.suggest(trial), study), n_trials=remaining,
                   timeout=budget.time_s, catch=(CandidateFailed,), callbacks=callbacks)


def optimize(
    model: Any,
    profile: str | DeviceProfile,
    objectives: Sequence[str] = ("quality", "latency", "size", "memory"),
    constraints: Constraints | None = None,
    strategy: str = "nsga2",
    budget: Budget | None = None,
    *,
    out: Path | str,
    metric: str | None = None,
    calibration: Path | str | None = None,
    eval_data: Path | str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int | None = 0,
    dimensions: Sequence[str] = ("arch", "precision"),
    archs: Sequence[str] | None = None,
    precisions: Sequence[str] | None = None,
    options: BuildOptions | None = None,
    eval_limit: int | None = None,
    stage_cache: Path | str | None = None,
    progress: Progress | None = None,
) -> SearchResult:
    """Search the compositions a model + profile allow; return the measured front and a recommendation.

    Args:
        model: zoo name, ``ZooModel``, ONNX path or ``(nn.Module, example_inputs)`` (as ``compress``).
        profile: profile id, path or :class:`DeviceProfile`: formats, fast dtypes, ``[slo]``,
            ``max_artifact_mb`` and the ORT tuning every latency is measured with.
        objectives: subset of ``quality, latency, size, memory`` (quality and latency always).
        constraints: quality floor + SLO use (see :class:`Constraints`).
        strategy: ``nsga2``, ``tpe``, ``random`` or ``rl``.
        budget: trials (all workers together) and/or wall seconds; when it runs out the result
            holds the best found so far.
        out: directory for candidates, the stage cache, ``study.db`` and the result files.
        metric: quality metric name (default: the zoo's ``cosine`` / ``top1``, else ``cosine``).
        calibration / eval_data: ``.npz`` files (keys = input names; ``labels`` optional in eval).
        storage / study_name: optuna storage URL (default ``sqlite:///<out>/study.db``) and study;
            the same pair resumes a search or lets several workers share it.
        dimensions / archs / precisions: narrow the space (see :func:`build_space`).
        eval_limit: judge on the first N held-out samples only (shorter benchmarks).
        stage_cache: directory of built sub-networks to share between searches of the same model
            (default ``<out>/stages``); e.g. strategies compared on one model build each once.

    Returns:
        :class:`SearchResult` with every trial, the Pareto flags and the recommended point (or,
        when nothing is feasible, the closest point and why).

    Example:
        >>> r = optimize("mnist-cnn", "rpi4", constraints=Constraints(quality_floor=0.98),
        ...              budget=Budget(trials=8), out="build/opt")  # doctest: +SKIP
        >>> r.recommended["config"], r.recommended["latency_ratio"]  # doctest: +SKIP
    """
    from controller.compression.source import resolve_model

    strategy = check_strategy(strategy)
    objectives = check_objectives(objectives)
    constraints = constraints or Constraints()
    budget = budget or Budget()
    prof = profile if isinstance(profile, DeviceProfile) else load_profile(profile)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    source = resolve_model(model, out)
    metric_obj = get_metric(metric or source.quality_metric)
    data = search_data(source, calibration, eval_data, eval_limit=eval_limit)
    if metric_obj.needs_labels and data.labels is None:
        raise InvalidSearchError(f"metric {metric_obj.name!r} needs labelled held-out data ({data.origin} has none)")
    opts = options or BuildOptions()
    if "memory" not in objectives and opts.measure_memory and not constraints.use_slo:
        opts = dataclasses.replace(opts, measure_memory=False)
    space = build_space(model_traits(source), prof, dimensions=dimensions, archs=archs, precisions=precisions)
    evaluator = Evaluator(model, source, prof, metric_obj, data, out, opts, stage_dir=stage_cache)
    problem = Problem(evaluator, space, prof, objectives, constraints, out, progress, budget.trials)
    storage = storage or f"sqlite:///{out / 'study.db'}"
    study_name = study_name or f"{source.name}-{prof.id}-{strategy}"
    study = open_study(problem, strategy, storage, study_name, seed)
    started = time.perf_counter()
    if strategy == "rl":
        from controller.optimize.rl import run_rl

        run_rl(problem, study, budget, seed=seed)
    else:
        run_optuna(problem, study, budget)
    return collect(study, problem, strategy=strategy, metric=metric_obj.name, data_origin=data.origin,
                   storage=storage, seconds=time.perf_counter() - started, model_name=source.name)
