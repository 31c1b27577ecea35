"""``sample_posterior``, ``resume`` and ``suggest_step_size``: the entry points of posterior sampling.

The pieces they assemble: :mod:`~finwidth.simulate.config` (the run's options), :mod:`~finwidth.simulate.models`
(the potential of each network spec), :mod:`~finwidth.simulate.samplers` (one step),
:mod:`~finwidth.simulate.loop` (the loop), :mod:`~finwidth.simulate.recorder` (the records),
:mod:`~finwidth.simulate.estimates` (error bars and diagnostics) and :mod:`~finwidth.simulate.results`.
See docs/sampling.md for which sampler to use, step sizes, the diagnostics and the exact cost cuts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from finwidth.errors import ConfigError, DataError
from finwidth.inputs import InputReduction, as_inputs, validate_targets, validate_temperature
from finwidth.network import check_scaling
from finwidth.simulate.checkpoint import load_checkpoint, remove_stale_temporaries
from finwidth.simulate.config import RunConfig, is_two_layer, run_config
from finwidth.simulate.guidance import default_friction, step_size_guidance, stiffness
from finwidth.simulate.loop import build_run, check_progress
from finwidth.simulate.models import build_model, network_from_dict, network_kind
from finwidth.simulate.results import PosteriorSamples

__all__ = ["resume", "sample_posterior", "suggest_step_size"]


def sample_posterior(network, X, y, *, temperature, sampler="baoab", step_size=None, n_steps, burn_in=None,
                     replicas=8, record_every=None, X_test=None, y_test=None, seed=0, device="cpu",
                     dtype="float32", checkpoint=None, checkpoint_every=None, friction=None, init="normal",
                     input_reduction="auto", rao_blackwell=True, progress="auto",
                     scaling="standard", observers=None, resume=False, input_rank=None,
                     input_tolerance=None) -> PosteriorSamples:
    """Sample the Bayesian posterior of a finite-width network and measure ε_g, Q̄_L and more.

    Target: p(θ|D) ∝ exp[−(1/2T) Σ_μ (y^μ − f(x^μ))² − Σ_l λ_l ‖W^(l)‖²/2] (docs/conventions.md), full batch,
    with R independent replicas run as one batch.

    Parameters
    ----------
    network : finwidth.Network or finwidth.convnet.ConvNetwork
        Widths, activation, priors λ_0..λ_L (precisions) and optional bias variances; or the
        two-layer CNN (1-D blocks or 2-D windows, any stride; local or pooled readout), simulated by
        :class:`finwidth.simulate.two_layer.TwoLayerCNN` (docs/sampling.md, "CNNs").
    X : array (P, N_0), y : array (P,)
        Training data (float64 is converted to ``dtype`` on ``device``).
    temperature : float
        T > 0: the likelihood variance, and the temperature of the Langevin dynamics on U.
    sampler : {"baoab", "euler", "mala", "gibbs"}
        ``"euler"`` reproduces the papers' update θ ← θ − η∇U + sqrt(2ηT)ξ (O(η) bias);
        ``"baoab"`` underdamped Langevin (O(h²) bias, much larger stable steps); ``"mala"``
        Metropolis-adjusted, exact; ``"gibbs"`` exact block Gibbs, linear activation without biases
        only (numpy, float64 whatever ``dtype``; ``n_steps`` counts sweeps).
    step_size : float
        Time step of the dynamics on U at temperature T, in the units of the papers' Euler η
        (BAOAB: unit mass). Ignored (may be None) for ``"gibbs"``. See
        :func:`finwidth.simulate.suggest_step_size`.
    n_steps : int
        Total steps (sweeps for Gibbs), burn-in included.
    burn_in : int, optional
        Steps discarded before averaging. Default None: the MSER rule on the replica-averaged
        traces (energy, train error, test error, readout norm), at the granularity of 1/64 of the
        run, searched over the first half.
    replicas : int
        Independent chains R (≥ 2 for error bars).
    record_every : int, optional
        Steps between recorded samples. Default :func:`finwidth.simulate.config.default_record_every`:
        about 200 records, spaced at least 8 times the cost of a record (evaluating the network on the
        training and test points and the Rao–Blackwell readout, counted in steps by
        :func:`~finwidth.simulate.config.record_cost`), and at least 50 records.
    X_test, y_test : arrays, optional
        Test inputs (P_t, N_0) and labels (P_t,): predictions and ε_g.
    seed : int
        Seeds every random draw; a run is reproducible (and resumable bit-for-bit on the same
        machine and thread count).
    device : str
        ``"cpu"`` or ``"cuda"``.
    dtype : {"float32", "float64"}
        Parameter precision (energies and the Rao–Blackwell linear algebra are float64 anyway).
    checkpoint : path, optional
        File written atomically every ``checkpoint_every`` steps (default n_steps // 20) and at the
        end; :func:`resume` continues a killed run from it (any sampler, Gibbs included).
    friction : float, optional
        BAOAB friction γ (1/time). Default :func:`finwidth.simulate.guidance.default_friction`,
        2 sqrt(T min λ_l): critical damping of the prior-dominated directions, the slowest ones of a
        wide network.
    init : {"normal", "prior", "readout_conditional"}
        ``"normal"``: all weights N(0, 1) as in the papers' code; ``"prior"``: from the prior;
        ``"readout_conditional"``: hidden layers from the prior and the readout drawn exactly from
        its conditional posterior (starts near the data fit, shortens burn-in). The same for every
        model (N(0, 1) for all weights also in mean-field scaling).
    input_reduction : bool or "auto"
        Simulate only the first-layer weights in the span of the training inputs (exact; see
        docs/sampling.md). ``"auto"`` uses it when the inputs' rank r is below N_0.
    input_rank, input_tolerance : int or float, optional
        Truncated input reduction, an **approximation** (at most one of the two; needs
        ``input_reduction`` True or "auto"): keep only the k leading right singular directions V_k
        of X, k = ``input_rank`` (1 ≤ k ≤ N_0; above the inputs' rank r all r are kept), or the
        fewest whose dropped energy ‖X − X V_k V_kᵀ‖_F²/‖X‖_F² is at most ``input_tolerance`` (in
        (0, 1)). The run then samples, exactly, the posterior of the network trained on the
        projected inputs X V_k V_kᵀ (train errors are on those; test points keep their full inputs,
        their part outside the kept span meeting first-layer weights at the prior). The first layer
        costs about P k instead of P r per hidden unit and step. The accuracy check
        (``result.input_truncation``, :class:`~finwidth.simulate.truncation.TruncationCheck`):
        the relative change of the NNGP kernel on the training points (and the test × train block);
        above 1e-3 an :class:`~finwidth.simulate.truncation.InputTruncationWarning`. On MNIST 0/1 at
        P = 1000–4000 the kernel changes by about 0.7 × the dropped energy and the theory's ε_g by
        10–40 × the kernel change (docs/sampling.md, "Truncated input reduction").
    rao_blackwell : bool
        Use the readout's exact conditional posterior for test/train errors, predictions and
        Q̄_L (exact, lower variance). Raw estimates are always reported too. For the two-layer models
        the readout is written in the standard form f = Φ a'/sqrt(M), a' ~ N(0, 1/λ') (λ' = λ_1 N for
        the mean-field FCN, λ_1 C for the mean-field CNN), so the same conditional applies.
    progress : bool, "auto" or callable
        ``"auto"`` (default): a progress bar on stderr (steps, ETA, the latest record's ε_g) only when
        stderr is a terminal, so logs and CI stay quiet; True/False: always/never. A callable is
        called with a :class:`finwidth.simulate.loop.ProgressInfo` (step, ETA, latest test and train
        error) after each record and at the end: how an experiment reports progress within a task.
    scaling : {"standard", "mean_field"}
        Output scale of the readout. ``"standard"``: f = a·σ(h)/sqrt(N) (docs/conventions.md).
        ``"mean_field"``: f = a·σ(h)/N for a ``Network`` with one hidden layer and no biases
        (:class:`finwidth.simulate.two_layer.TwoLayerFCN`), f = Σ_{c,i} a_ci σ(h_ci)/(C sqrt(Ñ)) for
        a ``ConvNetwork`` with the local readout (standard: 1/sqrt(C Ñ); the pooled readout is standard only). The prior a ~ N(0, 1/λ_L) is the same in both:
        a mean-field FCN is the standard one with readout precision λ_1 N in function space, but its
        Langevin dynamics (hence step sizes) differ. The two-layer models have no input reduction
        (``input_reduction=True`` is an error) and no ``sampler="gibbs"``.
    observers : dict[str, callable], optional
        Extra measurements: ``{name: fn}`` with ``fn(state)`` called at every record after the burn-in
        and returning an array (or tensor) with the replica axis first, ``[R, ...]``; ``state`` is a
        :class:`~finwidth.simulate.recorder.RecordState` (parameters, last hidden features on the
        training and test inputs). Their posterior means with jackknife error bars are in
        ``result.observed[name]`` (:class:`~finwidth.simulate.results.Observed`). Sums are kept per
        replica for 8 time groups (memory 64·R·size bytes per observer); checkpoints keep them, and
        :func:`resume` needs the same observers. Example: the hidden-feature kernel,
        ``{"K": lambda s: s.features @ s.features.transpose(1, 2) / s.features.shape[-1]}``.
    resume : bool
        With ``checkpoint``: when that file exists, continue the run it holds (as :func:`resume`)
        instead of starting anew, so that a script rerun after an interruption picks up where it
        stopped and a finished run just returns its result. The checkpoint must have been written
        by this same call: the network, the data and every option are compared, and a mismatch
        raises ``ConfigError`` naming what differs (delete the file, or change ``checkpoint``, to
        start afresh). Without the file, the run starts as usual.

    Returns
    -------
    PosteriorSamples
        ``qbar_readout`` is λ_L ⟨|a|²⟩/M with M the number of readout weights (N_L; C·Ñ for the
        CNN): the posterior readout norm over its prior value, 1 in the prior and at infinite width.
        For the standard FCN it is Q̄_L (BPKR §A.9); for the mean-field FCN it equals Q̄_1 of the
        equivalent standard network (readout precision λ_1 N). For a CNN with the local readout,
        ``qbar_patches`` is the Ñ×Ñ estimate λ_1⟨Σ_c a_c a_cᵀ⟩/C of the theory's patch–patch Q (its
        trace over Ñ is ``qbar_readout``); with the pooled readout ``qbar_readout`` is the 1HL Q̄ (M = C).

    Raises
    ------
    ConfigError
        Invalid shapes, values or options.
    DivergenceError
        NaN/inf or energy blow-up during the run; the message suggests a step size.

    Warns
    -----
    NotConvergedWarning
        The chains have not converged (R̂ of a key observable above ``RHAT_MAX`` = 1.1) or MALA
        barely moves (acceptance below 5 %, or a replica below 1 %); the message says what to change.
        The same text is in ``diagnostics.problems`` (empty when none).
    """
    cfg, data = run_config(network, X, y, temperature=temperature, sampler=sampler, step_size=step_size,
                           n_steps=n_steps, burn_in=burn_in, replicas=replicas, record_every=record_every,
                           X_test=X_test, y_test=y_test, seed=seed, device=device, dtype=dtype, checkpoint=checkpoint,
                           checkpoint_every=checkpoint_every, friction=friction, init=init,
                           input_reduction=input_reduction, rao_blackwell=rao_blackwell, scaling=scaling,
                           input_rank=input_rank, input_tolerance=input_tolerance)
    observers = _check_observers(observers)
    check_progress(progress)
    if not isinstance(resume, bool):
        raise ConfigError(f"resume must be True or False, got {resume!r}")
    if resume and cfg.checkpoint is None:
        raise ConfigError("resume=True needs checkpoint=<path>: the file a previous run of this call wrote")
    if resume and Path(cfg.checkpoint).exists():
        state = load_checkpoint(cfg.checkpoint)
        _check_same_run(state, network, cfg, data)
        return _continue(state, cfg.checkpoint, progress, observers)
    if cfg.checkpoint is not None:
        remove_stale_temporaries(cfg.checkpoint)
    run = build_run(network, data, cfg, observers=observers)
    try:
        check = _truncation(network, data, run)
        run.initialize()
        run.run(progress)
        return _with_check(run.result(), check)
    finally:
        run.close()


def _truncation(network, data, run):
    """The accuracy check of a truncated input reduction (warns), None for an exact run."""
    if run.cfg.input_rank is None or run.red is None:
        return None
    from finwidth.simulate.truncation import truncation_check

    return truncation_check(network, data["X"], run.red, data.get("X_test"))


def _with_check(result: PosteriorSamples, check) -> PosteriorSamples:
    result.input_truncation = check
    return result


def _check_observers(observers):
    if observers is None:
        return None
    if not isinstance(observers, dict) or not all(isinstance(k, str) and k and callable(v) for k, v in observers.items()):
        raise ConfigError("observers must be a dict {name: callable(state) -> array [R, ...]} with non-empty names")
    return observers


def resume(checkpoint_path, *, progress="auto", observers=None) -> PosteriorSamples:
    """Continue a run from its checkpoint (written by ``sample_posterior(..., checkpoint=path)``).

    The run continues with the saved random-generator states, so the result equals that of the
    uninterrupted run (bit-identical on the same machine; equal to rounding on another thread
    count), with no record lost or duplicated. A finished run just returns its result. Temporary
    files that the killed run left beside the checkpoint are deleted. ``progress`` as in
    :func:`sample_posterior`; ``observers``: the same as the interrupted run's.
    """
    check_progress(progress)
    return _continue(load_checkpoint(checkpoint_path), checkpoint_path, progress, _check_observers(observers))


def _check_same_run(state: dict, network, cfg: RunConfig, data: dict) -> None:
    """Raise ConfigError unless the checkpointed run was started with this network, data and options."""
    where = f"checkpoint {str(cfg.checkpoint)!r}"
    try:
        saved_kind, saved_net, saved_cfg, saved_data = (state["network_kind"], state["network"], dict(state["cfg"]),
                                                         state["data"])
    except (KeyError, TypeError) as exc:
        raise DataError(f"{where} is incomplete or inconsistent ({exc})") from exc
    try:
        saved_network = network_from_dict(saved_kind, saved_net)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where} is incomplete or inconsistent ({exc})") from exc
    if saved_kind != network_kind(network) or saved_network != network:
        raise ConfigError(f"{where} holds a run of another network ({saved_network}); "
                          "delete it or choose another checkpoint path to start afresh")
    saved_cfg.pop("checkpoint", None)
    here = {k: v for k, v in cfg.to_dict().items() if k != "checkpoint"}
    differ = sorted(k for k in set(saved_cfg) | set(here) if saved_cfg.get(k) != here.get(k))
    if differ:
        shown = ", ".join(f"{k}: {saved_cfg.get(k)!r} there, {here.get(k)!r} here" for k in differ)
        raise ConfigError(f"{where} holds a run with other options ({shown}); "
                          "delete it or choose another checkpoint path to start afresh")
    for k in sorted(set(saved_data) | set(data)):
        a, b = saved_data.get(k), data.get(k)
        same = (a is None and b is None) or (a is not None and b is not None and np.array_equal(np.asarray(a), np.asarray(b)))
        if not same:
            raise ConfigError(f"{where} holds a run on other data ({k!r} differs); "
                              "delete it or choose another checkpoint path to start afresh")


def _continue(state: dict, checkpoint_path, progress, observers) -> PosteriorSamples:
    """Rebuild the run saved in ``state`` (read from ``checkpoint_path``) and run it to its end."""
    remove_stale_temporaries(checkpoint_path)
    try:
        net = network_from_dict(state["network_kind"], state["network"])
        cfg = RunConfig.from_dict(state["cfg"]).replace(checkpoint=str(checkpoint_path))
        run = build_run(net, state["data"], cfg, observers=observers)
        run.load_state(state["run"])
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"checkpoint {str(checkpoint_path)!r} is incomplete or inconsistent ({exc})") from exc
    try:
        check = _truncation(net, state["data"], run)
        run.run(progress)
        return _with_check(run.result(), check)
    finally:
        run.close()


def suggest_step_size(network, X, y, *, temperature, replicas=4, seed=0, input_reduction="auto",
                      scaling="standard") -> dict[str, Any]:
    """Estimate the stiffness κ_max of U at prior draws and suggest step sizes for each sampler.

    Returns a dict with ``stiffness`` and the suggestions of
    :func:`finwidth.simulate.guidance.step_size_guidance` (``euler``, ``mala``, ``baoab`` and the
    stability limits) plus the default BAOAB ``friction``. A guide, not a guarantee: check
    ε_g against a run at half the step (or MALA's acceptance). ``network`` and ``scaling`` as in
    :func:`sample_posterior`.
    """
    X = as_inputs(X, "X")
    y = validate_targets(y, X.shape[0], "y", multi_output=True)
    temperature = validate_temperature(temperature, allow_zero=False)
    two_layer = is_two_layer(network, check_scaling(scaling))
    red = InputReduction.from_inputs(X) if input_reduction and not two_layer else None
    if input_reduction == "auto" and red is not None and red.rank >= X.shape[1]:
        red = None
    model = build_model(network, X.shape[1], temperature, scaling, first_layer_inputs=None if red is None else red.rank,
                        n_outputs=1 if y.ndim == 1 else y.shape[1], dtype=torch.float64)
    A0 = model.prepare_inputs(red.reduce(X) if red else X)
    gen = torch.Generator().manual_seed(int(seed))
    params = model.init_params(replicas, gen, "prior")
    kappa = stiffness(model, params, A0, generator=gen)
    out: dict[str, Any] = {"stiffness": kappa}
    out.update(step_size_guidance(kappa))
    out["friction"] = default_friction(network, temperature)
    return out
