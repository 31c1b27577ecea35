"""The default task function: theory and/or simulation for one :class:`TaskConfig`.

:func:`run_task` loads the data set (``finwidth.data.load`` or ``finwidth.data.teacher``), builds the
:class:`finwidth.Network` (or the :class:`finwidth.convnet.ConvNetwork` of a ``[network.conv]`` table), fits each requested theory and evaluates its test error, and samples the
posterior of real finite-width networks when the config has a ``simulation`` table. Its values, as
stored in ``result.json`` and collected into columns:

=========================== ==================================================================
``<model>.total/bias/variance``  ε_g = bias + variance on the test set (theory; noise T not added)
``<model>.qbar``                 order parameters Q̄_1..Q̄_L (RKGP; list), ``<model>.qbar_L`` the last
                                 (a CNN: the Ñ×Ñ Q as a list of rows, ``qbar_L`` = tr Q/Ñ)
``adaptive.adaptation``          AdaptiveKernel: data term over prior term of Σ⁻¹ (``residual``, ``solver``)
``<model>.r``                    width criterion r = yᵀK⁻¹y/P (RKGP; finite width better iff r < 1)
``<model>.effective_load``       validity diagnostic (RKGP): α_eff = df/N_L, ``rank_per_unit`` the
                                 kernel's effective rank per hidden unit, ``reliable`` the verdict
                                 (docs/validity.md)
``<model>.error``                the message of a theory that did not converge (values then absent)
``sim.total/bias/variance``      the same ε_g from sampled networks, with ``..._stderr``
``sim.train_error``              posterior mean training MSE (with ``_stderr``)
``sim.qbar_readout``             readout-norm estimate of Q̄_L (with ``_stderr``)
``sim.qbar_patches``             CNN with the local readout: the Ñ×Ñ Q̂ (with ``_stderr``)
``sim.rhat``, ``sim.ess``        convergence diagnostics over replicas
``sim.wall_s``                   sampling time in seconds
``data.N0``                      input dimension after preprocessing
=========================== ==================================================================

With D outputs (``data.labels`` one-hot): ε_g and its parts are summed over the outputs, and also

=========================== ==================================================================
``<model>.accuracy``             argmax accuracy of the posterior mean (``sim.accuracy`` with ``_stderr``)
``<model>.bias_per_output``      lists of D (theory: also ``variance_per_output``; simulation:
                                 ``total/bias/variance_per_output`` with ``..._stderr``)
``<model>.qbar``                 Q_1..Q_L as D × D nested lists; ``<model>.qbar_L`` = tr Q_L / D (comparable
                                 with ``sim.qbar_readout`` = tr Q̂_L / D), ``<model>.qbar_L_matrix`` = Q_L
``<model>.r``                    the eigenvalues of R = Yᵀ K⁺ Y / P (list)
``<model>.output_correlation``   D × D correlations of the test-averaged posterior covariance (RKGP; and
                                 ``sim.output_correlation`` with ``_stderr``); ``sim.qbar_matrix`` = Q̂_L
=========================== ==================================================================

A theory that raises :class:`finwidth.errors.ConvergenceError` is recorded (``<model>.error``)
rather than failing the task, so the simulation of the same grid point is kept; a diverged
simulation likewise records ``sim.error``. Anything else (a bug, bad input) fails the task.
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from finwidth.errors import ConvergenceError, DivergenceError, FinwidthError, ValidityWarning
from finwidth.experiments.spec import DataConfig, TaskConfig
from finwidth.experiments.store import TaskOutput

__all__ = ["load_data", "run_task", "run_theory", "run_simulation"]


@functools.lru_cache(maxsize=8)
def _load_cached(data_json: str, root: str | None):  # noqa: ANN202 - finwidth.data.Dataset
    cfg = DataConfig.model_validate_json(data_json)
    from finwidth import data

    if cfg.name is not None:
        return data.load(
            cfg.name,
            classes=cfg.classes,
            n_train=cfg.n_train,
            n_test=cfg.n_test,
            preset=cfg.preset,
            seed=cfg.seed,
            root=root,
            labels=cfg.labels,
        )
    return data.teacher(
        cfg.teacher, n_features=cfg.n_features, n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed, **cfg.options
    )


def load_data(cfg: DataConfig):  # noqa: ANN201 - finwidth.data.Dataset
    """The data set of a task (cached per process: a sweep over widths loads MNIST once per worker).

    The data root is ``$FINWIDTH_DATA`` when set, else the library's search path.
    """
    return _load_cached(cfg.model_dump_json(), os.environ.get("FINWIDTH_DATA") or None)


def _estimate(x: Any) -> tuple[float | None, float | None]:
    """(value, standard error) of a simulation estimate (a number carrying ``.stderr``)."""
    if x is None:
        return None, None
    stderr = getattr(x, "stderr", None)
    value = getattr(x, "value", x)
    return float(value), (None if stderr is None else float(stderr))


def _network(config: TaskConfig, dataset):  # noqa: ANN001, ANN202 - Network or ConvNetwork
    """The task's network; a ConvNetwork on the data's N_0 features."""
    return config.network.build(int(np.asarray(dataset.X_train).shape[1]))


def run_theory(config: TaskConfig, dataset) -> dict[str, Any]:  # noqa: ANN001
    """Fit each theory of ``config.theory.models`` and evaluate its test error (see module doc)."""
    from finwidth.theory.adaptive import AdaptiveKernel
    from finwidth.theory.nngp import NNGP
    from finwidth.theory.rkgp import RKGP

    network = _network(config, dataset)
    T = config.temperature
    out: dict[str, Any] = {}
    for model in config.theory.models:
        start = time.perf_counter()
        if model == "nngp":
            est = NNGP(network, T)
        elif model == "adaptive":
            est = AdaptiveKernel(network, T, **(config.theory.adaptive or {}))
        else:
            form = {"rkgp": "product", "rkgp_product": "product", "rkgp_nested": "nested"}[model]
            est = RKGP(network, T, renormalization=form)
        try:
            with warnings.catch_warnings():
                # a sweep records the validity diagnostic in its table (rkgp.reliable) instead of
                # warning from every worker
                warnings.simplefilter("ignore", ValidityWarning)
                est.fit(dataset.X_train, dataset.y_train)
            err = est.generalization_error(dataset.X_test, dataset.y_test)
        except ConvergenceError as exc:
            out[model] = {"error": str(exc), "wall_s": time.perf_counter() - start}
            continue
        values: dict[str, Any] = err.as_dict()  # with D outputs also accuracy and the per-output terms
        if model == "adaptive":
            values["adaptation"] = float(est.adaptation_)
            values["residual"] = float(est.residual_)
            values["solver"] = str(est.solver_)
        elif model != "nngp":
            qbar = np.atleast_1d(np.asarray(est.qbar_, dtype=float))
            values["qbar"] = qbar.tolist()
            if qbar.ndim == 3:  # D outputs: Q_l are D × D matrices
                values["qbar_L"] = float(np.trace(qbar[-1])) / qbar.shape[-1]
                values["qbar_L_matrix"] = qbar[-1].tolist()
                values["r"] = np.atleast_1d(np.asarray(est.width_criterion_.r, dtype=float)).tolist()
                values["output_correlation"] = est.output_correlation(dataset.X_test, average=True).tolist()
            elif qbar.ndim == 2:  # a CNN's Ñ×Ñ Q: its global mode tr Q/Ñ, what sim.qbar_readout estimates
                values["qbar_L"] = float(np.trace(qbar)) / qbar.shape[0]
                values["r"] = float(est.width_criterion_.r)
            else:
                values["qbar_L"] = float(qbar[-1])
                # the matrix-free path (solver_ = "krylov") has no width criterion (a T = 0 quantity)
                values["r"] = None if est.width_criterion_ is None else float(est.width_criterion_.r)
            values["residual"] = float(est.residual_)
            values["kind"] = str(est.kind_)
            validity = getattr(est, "validity_", None)  # fully connected single-output RKGP only
            if validity is not None:
                values["effective_load"] = float(validity.effective_load)
                values["rank_per_unit"] = float(validity.rank_per_unit)
                values["reliable"] = bool(validity.reliable)
        values["wall_s"] = time.perf_counter() - start
        out[model] = values
    return out


def _limit_torch_threads() -> None:
    threads = os.environ.get("FINWIDTH_WORKER_THREADS")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def run_simulation(
    config: TaskConfig,
    dataset,  # noqa: ANN001
    *,
    progress: bool | Callable[[Any], None] = False,
    checkpoint: str | os.PathLike | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Sample the posterior of the finite-width network with ``config.simulation`` (see module doc).

    ``progress``: passed to ``sample_posterior`` (True: its own bar; a callable: called with a
    :class:`finwidth.simulate.loop.ProgressInfo` after each record).
    ``checkpoint``: a file to checkpoint into; when it exists (a killed run of this very task) the
    run continues from it. Gibbs runs do not checkpoint.
    """
    from finwidth.simulate import sample_posterior

    sim = config.simulation
    assert sim is not None
    _limit_torch_threads()
    kwargs: dict[str, Any] = dict(
        temperature=config.temperature,
        sampler=sim.sampler,
        step_size=sim.step_size,
        n_steps=sim.n_steps,
        burn_in=sim.burn_in,
        replicas=sim.replicas,
        X_test=dataset.X_test,
        y_test=dataset.y_test,
        seed=sim.seed,
        device=sim.device,
        dtype=sim.dtype,
        **sim.options,
    )
    if sim.record_every is not None:
        kwargs["record_every"] = sim.record_every
    kwargs["progress"] = progress  # explicit: sample_posterior's own default ("auto") draws bars on a terminal
    checkpoint = Path(checkpoint) if checkpoint is not None and sim.sampler != "gibbs" else None
    start = time.perf_counter()
    try:
        res = None
        if checkpoint is not None and checkpoint.exists():  # a killed run of this very task: continue it
            from finwidth.simulate import resume

            try:
                res = resume(checkpoint, progress=progress)
            except (FinwidthError, OSError, KeyError):
                checkpoint.unlink(missing_ok=True)  # unusable: start afresh (same seed, same result)
        if res is None:
            if checkpoint is not None:
                kwargs["checkpoint"] = checkpoint
            res = sample_posterior(_network(config, dataset), dataset.X_train, dataset.y_train, **kwargs)
    except DivergenceError as exc:
        return {"error": str(exc), "wall_s": time.perf_counter() - start}, {}
    wall = time.perf_counter() - start
    values: dict[str, Any] = {}
    ge = res.generalization_error
    for part in ("total", "bias", "variance"):
        values[part], values[f"{part}_stderr"] = _estimate(getattr(ge, part))
    values["train_error"], values["train_error_stderr"] = _estimate(res.train_error)
    values["qbar_readout"], values["qbar_readout_stderr"] = _estimate(res.qbar_readout)
    if res.n_outputs > 1:
        values["accuracy"], values["accuracy_stderr"] = _estimate(ge.accuracy)
        for part in ("total", "bias", "variance"):
            per = getattr(ge, f"{part}_per_output")
            values[f"{part}_per_output"] = [float(e) for e in per]
            values[f"{part}_per_output_stderr"] = [e.stderr for e in per]
        for name in ("qbar_matrix", "output_correlation"):
            values[name] = getattr(res, name).tolist()
            values[f"{name}_stderr"] = getattr(res, f"{name}_stderr").tolist()
    if getattr(res, "qbar_patches", None) is not None:  # CNN, local readout: the Ñ×Ñ Q̂
        values["qbar_patches"] = np.asarray(res.qbar_patches).tolist()
        values["qbar_patches_stderr"] = np.asarray(res.qbar_patches_stderr).tolist()
    diag = res.diagnostics
    for name in ("rhat", "ess", "acceptance"):
        value = diag.get(name) if isinstance(diag, dict) else getattr(diag, name, None)
        if isinstance(value, dict):  # one diagnostic per observable
            for k, v in value.items():
                values[f"{name}_{k}"] = None if v is None else float(v)
        else:
            values[name] = None if value is None else float(np.max(np.asarray(value, dtype=float)))
    values["wall_s"] = wall
    arrays: dict[str, np.ndarray] = {}
    for name, trace in (getattr(res, "traces", None) or {}).items():
        arrays[f"trace_{name}"] = np.asarray(trace)
    return values, arrays


def run_task(config: TaskConfig, *, progress: bool | Callable[[Any], None] = False,
             checkpoint: str | os.PathLike | None = None) -> TaskOutput:
    """Theory and/or simulation for one task config (the runner's default task function).

    Parameters
    ----------
    config : TaskConfig
    progress : bool or callable
        True: the sampler's own progress bar (sensible only when the task runs in the foreground); a
        callable receives the sampler's :class:`finwidth.simulate.loop.ProgressInfo` after each
        record (how :func:`~finwidth.experiments.runner.run_sweep` moves its bar within a task).
    checkpoint : path, optional
        Where the simulation checkpoints (the runner passes ``STORE/checkpoints/<key>.ckpt``), so a
        killed task resumes instead of restarting.

    Returns
    -------
    TaskOutput
        ``values`` as described in the module docstring; ``arrays`` holds the simulation traces.
    """
    dataset = load_data(config.data)
    values: dict[str, Any] = {"data": {"N0": int(np.asarray(dataset.X_train).shape[1])}}
    values.update(run_theory(config, dataset))
    arrays: dict[str, np.ndarray] = {}
    if config.simulation is not None:
        values["sim"], arrays = run_simulation(config, dataset, progress=progress, checkpoint=checkpoint)
    for model, res in values.items():
        if isinstance(res, dict) and "total" in res and res["total"] is not None and not math.isfinite(res["total"]):
            raise FloatingPointError(f"{model} returned a non-finite test error {res['total']}")
    return TaskOutput(values=values, arrays=arrays)
