"""What a sampling run returns: estimates with standard errors, diagnostics and the raw traces."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from finwidth.simulate.config import RunConfig
    from finwidth.simulate.truncation import TruncationCheck

__all__ = ["Diagnostics", "ErrorEstimate", "Estimate", "Observed", "PosteriorSamples"]


class Estimate(float):
    """A float with a standard error: ``float(e)``, ``e.value`` and ``e.stderr``."""

    def __new__(cls, value: float, stderr: float = float("nan")):
        obj = super().__new__(cls, float(value))
        obj.stderr = float(stderr)
        return obj

    @property
    def value(self) -> float:
        return float(self)

    def __repr__(self) -> str:
        return f"{float(self):.6g} ± {self.stderr:.2g}"

    def __reduce__(self):
        return (Estimate, (float(self), self.stderr))


@dataclass(frozen=True)
class ErrorEstimate:
    """ε_g = bias + variance, each an :class:`Estimate` (mean over the test set; noise T not added).

    ``bias`` = mean_test (y − ⟨f⟩)², with the jackknife correction of the finite-sample term
    Var(⟨f⟩_estimate); ``variance`` = total − bias = mean_test Var f. With D outputs the three are
    summed over the outputs (as the theory's ``ErrorDecomposition``) and the per-output terms and the
    accuracy are filled in.

    Attributes (D outputs; None for one)
    ------------------------------------
    total_per_output, bias_per_output, variance_per_output : list of Estimate
        Each output's ε_g and its split (length D).
    accuracy : Estimate
        Fraction of test points where the argmax of the posterior mean is the argmax of the target row.
    """

    total: Estimate
    bias: Estimate
    variance: Estimate
    total_per_output: list[Estimate] | None = None
    bias_per_output: list[Estimate] | None = None
    variance_per_output: list[Estimate] | None = None
    accuracy: Estimate | None = None

    @property
    def stderr(self) -> float:
        return self.total.stderr


@dataclass
class Diagnostics:
    """Convergence diagnostics over replicas (post burn-in records).

    Attributes
    ----------
    rhat, ess : dict[str, float]
        Split-R̂ and effective sample size of each traced observable.
    acceptance : float or None
        Mean MALA acceptance rate (None for the other samplers).
    acceptance_per_replica : np.ndarray or None
    burn_in_steps : int
        Steps discarded; ``burn_in_rule`` says how they were chosen.
    tau_records : float
        Largest integrated autocorrelation time (in records) over the key observables.
    n_blocks : int
        Blocks (replica × time batch) used for the jackknife error bars.
    steps_per_second : float
        Chain steps per second of wall time (all replicas together count once).
    wall_time : float
        Seconds of sampling (all sessions of a resumed run).
    problems : list of str
        Why the chains are not to be trusted, with what to change (also issued as a
        :class:`~finwidth.errors.NotConvergedWarning`); empty when none. See :attr:`converged`.
    """

    rhat: dict[str, float]
    ess: dict[str, float]
    acceptance: float | None
    acceptance_per_replica: np.ndarray | None
    burn_in_steps: int
    burn_in_rule: str
    tau_records: float
    n_blocks: int
    steps_per_second: float
    wall_time: float
    problems: list[str] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        """No problem found (R̂ of the key observables ≤ RHAT_MAX, MALA acceptance not near zero)."""
        return not self.problems

    @property
    def max_rhat(self) -> float:
        vals = [v for v in self.rhat.values() if np.isfinite(v)]
        return max(vals) if vals else float("nan")

    @property
    def min_ess(self) -> float:
        vals = [v for v in self.ess.values() if np.isfinite(v)]
        return min(vals) if vals else float("nan")


@dataclass
@dataclass(frozen=True)
class Observed:
    """Posterior mean of a user observer (``sample_posterior(..., observers=...)``).

    Attributes
    ----------
    mean : np.ndarray
        Average over replicas and post-burn-in records of the observer's value (its replica axis
        removed).
    stderr : np.ndarray
        Delete-one-block jackknife over blocks = replicas × time groups (NaN with fewer than 2 blocks).
    n_records : int
        Records averaged (per replica): those of the time groups that start after the burn-in.
    """

    mean: np.ndarray
    stderr: np.ndarray
    n_records: int


@dataclass
class PosteriorSamples:
    """Result of :func:`sample_posterior`.

    Attributes
    ----------
    generalization_error : ErrorEstimate or None
        Posterior-averaged test MSE and its bias/variance split (Rao–Blackwellised readout when
        ``rao_blackwell=True``), None without ``y_test``.
    generalization_error_raw : ErrorEstimate or None
        The same from the sampled networks' own outputs.
    variance_reduction : float or None
        (stderr_raw / stderr_RB)² of ε_g: how many times fewer samples the RB estimate needs.
    train_error, train_error_raw : Estimate
        Posterior mean of the training MSE (1/P) Σ_μ (y − f)².
    qbar_readout, qbar_readout_raw : Estimate
        λ_L ⟨|a|²⟩ / M with M the number of readout weights (N_L; C·Ñ for a ``ConvNetwork``): the
        readout-norm estimate of Q̄_L (BPKR §A.9) for standard and mean-field FCNs (in mean field it
        is Q̄_1 of the equivalent standard network with readout precision λ_1 N); for the CNN tr Q/Ñ
        with the local readout (see ``qbar_patches``) and the 1HL Q̄ of the pooled channels with the
        pooled readout (M = C).
    layer_norms : list[Estimate]
        ⟨‖W^(l)‖²⟩ for l = 0..L (under input reduction, layer 0 adds the exact prior
        expectation N_1 (N_0 − r)/λ_0 of the orthogonal part).
    prediction_mean, prediction_var, prediction_mean_stderr : np.ndarray or None
        Posterior mean and variance of f at the test points and the standard error of the mean.
    diagnostics : Diagnostics
    traces : dict[str, np.ndarray]
        Per-record, per-replica scalar traces (shape ``[n_records, R]``; ``layer_norms``:
        ``[n_records, R, L+1]``), including the burn-in.
    record_steps : np.ndarray
        Step number (1-based) of each record.
    config : RunConfig
        The options of the run (``config.name`` or ``config["name"]``).
    qbar_patches, qbar_patches_stderr : np.ndarray or None
        CNN with the local readout: the sampled patch–patch order parameter Q̂ = λ_1 ⟨Σ_c a_c a_cᵀ⟩/C
        (Ñ × Ñ, a_c the readout row of channel c; Rao–Blackwellised when ``rao_blackwell=True``), the
        estimator of :class:`finwidth.theory.conv.ConvRKGP`'s ``qbar_`` (docs/sampling.md, "CNNs"), and its
        entrywise standard errors; ``tr Q̂/Ñ`` is ``qbar_readout``. None for other networks (the pooled
        readout's Q̄ is ``qbar_readout``). Diagnostics: ``rhat["patch_outer_rb"]`` (worst entry).
    qbar_patches_raw, qbar_patches_raw_stderr : np.ndarray or None
        The same from the sampled readout itself.
    observed : dict[str, Observed]
        Posterior means of the user observers, with error bars (empty without ``observers``).

    With D outputs (targets of shape (P, D)) ``qbar_readout`` is tr(Q̂)/D and these are filled in (None
    for one output); each ``*_stderr`` is the jackknife standard error of the entry:

    qbar_matrix, qbar_matrix_stderr : np.ndarray (D, D)
        Q̂_L = λ_L ⟨a aᵀ⟩ / N_L of the D × N_L readout a (Rao–Blackwellised when the run is): the
        estimator of the theory's D × D order parameter Q_L at any temperature (docs/multioutput.md).
    qbar_matrix_raw, qbar_matrix_raw_stderr : np.ndarray (D, D)
        The same from the sampled readout itself.
    output_covariance, output_covariance_stderr : np.ndarray (D, D)
        (1/P_t) Σ_x Cov(f_a(x), f_b(x)): the posterior covariance of the outputs, averaged over the test
        points (the theory's ``output_covariance(X_test).mean(0)``).
    output_correlation, output_correlation_stderr : np.ndarray (D, D)
        Its correlation matrix (the theory's ``output_correlation(X_test, average=True)``).
    input_truncation : TruncationCheck or None
        With ``input_rank``/``input_tolerance`` (an approximation): the directions kept, the dropped
        energy of the inputs and the relative change of the NNGP kernel
        (:class:`finwidth.simulate.truncation.TruncationCheck`); None for exact runs.
    """

    generalization_error: ErrorEstimate | None
    generalization_error_raw: ErrorEstimate | None
    variance_reduction: float | None
    train_error: Estimate
    train_error_raw: Estimate
    qbar_readout: Estimate
    qbar_readout_raw: Estimate
    layer_norms: list[Estimate]
    prediction_mean: np.ndarray | None
    prediction_var: np.ndarray | None
    prediction_mean_stderr: np.ndarray | None
    diagnostics: Diagnostics
    traces: dict[str, np.ndarray]
    record_steps: np.ndarray
    config: RunConfig | None = None
    qbar_patches: np.ndarray | None = None
    qbar_patches_stderr: np.ndarray | None = None
    qbar_patches_raw: np.ndarray | None = None
    qbar_patches_raw_stderr: np.ndarray | None = None
    observed: dict[str, Observed] = field(default_factory=dict)
    qbar_matrix: np.ndarray | None = None
    qbar_matrix_stderr: np.ndarray | None = None
    qbar_matrix_raw: np.ndarray | None = None
    qbar_matrix_raw_stderr: np.ndarray | None = None
    output_covariance: np.ndarray | None = None
    output_covariance_stderr: np.ndarray | None = None
    output_correlation: np.ndarray | None = None
    output_correlation_stderr: np.ndarray | None = None
    input_truncation: TruncationCheck | None = None

    @property
    def n_outputs(self) -> int:
        """D, the number of outputs."""
        return 1 if self.qbar_matrix is None else self.qbar_matrix.shape[0]
