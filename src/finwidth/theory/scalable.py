"""Matrix-free renormalised-kernel fits: the product-form saddle point from products K V only.

The product-form (and one-hidden-layer) equations Q̄_l = 1 − α_l g(Π), Π = ∏ Q̄_l need K only through

    g(Π) = (1/P) [ tr(Π K (T + Π K)⁻¹) − yᵀ Π K (T + Π K)⁻² y ]

(docs/theory.md). Both terms are integrals of one function over a spectral measure of K
(:class:`~finwidth.theory.spectral.SpectralMeasure`): the label term over the measure of y, the
trace term over the uniform one. Here

* the label measure is the Gauss rule of a Lanczos run from y (full reorthogonalisation), exact to a
  bracket from the Gauss–Radau rule;
* the trace measure is stochastic Lanczos quadrature: the mean of the Gauss rules of Rademacher
  probes z (E zᵀ f(K) z = tr f(K)), each with its own Radau bracket, and the spread over probes as
  standard error.

One Lanczos run serves every Π (the functions 1/(T + Π x) share one Krylov space), so the scalar
root is found on the rules exactly as on an eigenbasis (:func:`spectral.solve_product_measure`).
The accuracy is then propagated to Q̄ through the equations (implicit-function derivative
dQ̄_l/dg), and the solver refines until it is verified: more Lanczos steps until the quadrature
bracket is below a tenth of the target, more probes until the standard error of every Q̄_l is below
``rtol·Q̄_l``; past the budgets it raises :class:`~finwidth.errors.ConvergenceError` with the
estimate reached.

What limits the accuracy: the Hutchinson variance of tr f(K) is 2 Σ_{i≠j} f(K)_ij², set by the modes
of K near T/Π. For MNIST 0/1 at T = 10⁻³ it gives a standard error of about 3·10⁻³·(4000/P)^½ in
Q̄ per probe at α = 2 (so ~10² probes for 3·10⁻⁴ at P = 12 665), less at smaller α. The quadrature
and the label term are deterministic and converge to 1e-10 in a few hundred steps.

**Deflation** (``deflate``, :class:`~finwidth.theory.krylov.Deflation`). The k verified leading
eigenpairs (θ_i, x_i) of K (block Lanczos, residual ‖KX − XΘ‖_F² from an explicit product) are taken
out: tr f(K) = Σ_i f(θ_i) + tr_⊥ f(K_⊥), the first part exact for every Π (one deflation serves
every Π, like one Lanczos run), the second by Hutchinson with probes projected on the complement and
recurrences on K_⊥ = (I − XXᵀ)K(I − XXᵀ), with the control variate ĉ(‖z'‖² − (P − k)). The split is
exact up to ‖R‖_F² max|f''| (no gap assumption), kept below 10⁻³·rtol in g and reported in the
quadrature error. Why deflation and not Hutch++ (Meyer, Musco, Musco & Woodruff 2021): Hutch++'s
sketch would have to be of f(K), a different matrix for every Π, while the top eigenvectors of K are
those of f(K) for every Π (f increasing), so one deflation serves the whole root search; and Hutch++'s
gain, like deflation's, is in the variance, which here it does not give (below). What deflation buys
here is the number of Lanczos steps: the probes' quadratures of 1/(T/Π + x) converge at a rate set by
√(λ_max/(T/Π)), and λ_max falls from the top of K's spectrum to ``DEFLATE_ABOVE``·T. Measured on
MNIST 0/1, P = 4000, T = 10⁻³: 375 steps without deflation, 100 with k = 50, ≤ 50 with k = 200.

Why the variance does not fall: at T = 10⁻³, f(K) = ΠK(T + ΠK)⁻¹ is near 1 on ~64% of K's modes
(P = 4000; 2551 eigenvalues above T/Π), not a low-rank matrix, and its off-diagonal mass (which is the
Hutchinson variance) sits in the modes below T/Π: the exact variance of the deflated estimator
(from K's eigendecomposition) is 0.99, 0.94 and 0.84 times the plain one for k = 20, 100 and 300 with
the least-squares control variate, and 1.1–1.9 times for k = 50–500 without it (the spread of
‖z'‖²). The gain is in cost per probe: the same variance with several times fewer products per
probe, so that the ~10³ probes an answer to 10⁻⁴ needs become affordable.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from finwidth.errors import ConfigError, ConvergenceError
from finwidth.theory import krylov, spectral
from finwidth.theory.gp import clip_variance

__all__ = ["KrylovSaddle", "KrylovSpectrum", "QuadratureMeasure", "solve_product_krylov"]


class KrylovSpectrum:
    """Lanczos quadrature of the label and trace measures of K, extended on demand.

    Parameters
    ----------
    matmat : callable
        V ↦ K V for V of shape (P, c) (e.g. :meth:`finwidth.kernel_operator.KernelOperator.matmat`).
    y : ndarray, shape (P,)
        Labels (start vector of the label run).
    probes : int or "exact"
        Number of Rademacher probes of the first batch, or ``"exact"``: the P unit vectors, which
        make the trace deterministic (tests and small P only: P Lanczos runs).
    seed : int
        Seed of the probes.
    deflation : krylov.Deflation, optional
        Deflated top eigenpairs: the probes are projected on their complement, and so is every
        product of their recurrences (:meth:`finwidth.theory.krylov.Deflation.complete`).
    """

    def __init__(self, matmat, y: np.ndarray, *, probes=32, seed: int = 0,
                 deflation: krylov.Deflation | None = None):
        self.matmat = matmat
        y = np.asarray(y, dtype=np.float64)
        self.P = y.size
        self.deflation = deflation if deflation is not None and deflation.k > 0 else None
        self.label = krylov.BlockLanczos(y[:, None])
        self.rng = np.random.default_rng(seed)
        self.exact = probes == "exact"
        self.batches: list[krylov.ScalarLanczos] = []
        self.done: list[np.ndarray] = []
        self.label_done = False
        self.n_products = 0
        if self.exact:
            self.add_probes(self.P)
        else:
            self.add_probes(int(probes))

    @property
    def n_probes(self) -> int:
        return sum(b.n for b in self.batches)

    def add_probes(self, n: int) -> None:
        """Start n more probe recurrences (Rademacher, or the unit vectors in exact mode)."""
        if n < 1:
            return
        V = np.eye(self.P) if self.exact else krylov.rademacher(self.P, n, self.rng)
        if self.deflation is not None:
            V = self.deflation.project(V)
        self.batches.append(krylov.ScalarLanczos(V))
        self.done.append(np.zeros(V.shape[1], dtype=bool))

    def advance(self, steps: int) -> None:
        """``steps`` more Lanczos steps for every column not yet converged."""
        probes = [(b, np.flatnonzero(~d)) for b, d in zip(self.batches, self.done)]
        self.n_products += krylov.run_lanczos(
            self.matmat, steps, block=None if self.label_done else self.label, probes=probes,
            project=None if self.deflation is None else self.deflation.project,
        )

    def use_unit_vectors(self) -> None:
        """Replace the probes by the P unit vectors (deterministic trace; the label run goes on)."""
        self.exact = True
        self.batches, self.done = [], []
        self.add_probes(self.P)

    @property
    def label_steps(self) -> int:
        return self.label.n_steps

    def probe_steps(self) -> np.ndarray:
        return np.concatenate([b.n_steps for b in self.batches])

    def measure(self) -> QuadratureMeasure:
        """The Gauss rules so far as a measure the product-form solver can use."""
        probes = [b.jacobi() for b in self.batches]
        return QuadratureMeasure(krylov.block_jacobi(self.label), probes, self.P, self.exact, self.deflation)


class QuadratureMeasure:
    """Lanczos quadrature of the label and trace measures of K (duck-types
    :class:`~finwidth.theory.spectral.SpectralMeasure` for :func:`spectral.solve_product_measure`).

    The trace part is the mean of the probes' rules (Hutchinson), or their sum for unit-vector
    probes, each completed by the deflated part and its control variate where there is a deflation
    (:meth:`finwidth.theory.krylov.Deflation.complete`). Resolvents are continued fractions (no
    eigendecomposition per trial Π); the log-determinant of the action uses the eigendecomposition of
    each Jacobi matrix, once.
    """

    def __init__(self, label: krylov.JacobiSet, probes: list[krylov.JacobiSet], size: int, exact: bool,
                 deflation: krylov.Deflation | None = None):
        self.label = label
        self.probes = probes
        self.size = int(size)
        self.exact = exact
        self.n_probes = sum(p.n for p in probes)
        self._c = 1.0 if exact else 1.0 / self.n_probes
        # every probe's value in units of the mean: × P for the unit vectors (whose sum is the trace)
        self._scale = self.n_probes * self._c
        self._masses = np.concatenate([p.masses for p in probes]) * self._scale
        if deflation is None:
            deflation = krylov.Deflation.none(size)
        self.deflation = deflation

    def _complete(self, values: np.ndarray, f_values: np.ndarray) -> np.ndarray:
        if self.exact:  # unit vectors: their masses sum to P − k exactly, no control variate
            return values + float(np.sum(f_values))
        return self.deflation.complete(values, self._masses, f_values, self.size)

    def probe_values(self, pi: float, temperature: float) -> np.ndarray:
        """Each probe's tr(ΠK(T + ΠK)⁻¹)/P (mean or sum: the trace part of g), shape (n_probes,)."""
        s = temperature / pi
        out = np.concatenate([(p.masses - s * p.resolvent(s)[0]) for p in self.probes]) * self._scale
        theta = self.deflation.values
        return self._complete(out, theta / (s + theta)) / self.size

    def g(self, pi: float, temperature: float) -> tuple[float, float, float]:
        """g(Π) = Π D'(Π)/P and its two parts (T > 0)."""
        s = temperature / pi
        tr = float(np.mean(self.probe_values(pi, temperature)))
        r1, r2 = self.label.resolvent(s)
        lab = float(r1[0] - s * r2[0]) / (pi * self.size)
        return tr - lab, tr, lab

    def probe_logdets(self, pi: float, temperature: float) -> np.ndarray:
        """Each probe's estimate of log det(T + Π K), shape (n_probes,)."""
        vals = np.array([np.sum(w * np.log(temperature + pi * t)) for p in self.probes for t, w in p.rules()])
        return self._complete(vals * self._scale, np.log(temperature + pi * self.deflation.values))

    def data_term(self, pi: float, temperature: float) -> float:
        """D(Π) = log det(T + Π K) + yᵀ(T + Π K)⁻¹ y."""
        s = temperature / pi
        return float(np.mean(self.probe_logdets(pi, temperature))) + float(self.label.resolvent(s)[0][0]) / pi

    def roundoff_sensitivity(self, pi: float, temperature: float) -> float:
        """:func:`finwidth.theory.spectral.roundoff_sensitivity` on the label rule: δ r₂/r₁ with
        r_j = yᵀ(T/Π + K)⁻ʲy and δ = ε √P k_max (k_max: the rule's largest node)."""
        r1, r2 = self.label.resolvent(temperature / pi)
        if r1[0] == 0.0:
            return 0.0
        k_max = float(np.max(self.label.rules()[0][0]))
        return np.finfo(float).eps * math.sqrt(self.size) * k_max * float(r2[0] / r1[0])

    def brackets(self, pi: float, temperature: float) -> tuple[float, np.ndarray]:
        """Widths of the Gauss/Gauss–Radau brackets at Π: on the label part of g, and on each probe's value."""
        s = temperature / pi
        G1, G2 = self.label.resolvent(s)
        R1, R2 = self.label.radau().resolvent(s)
        lab = (max(float(R1[0] - G1[0]), 0.0) + s * max(float(R2[0] - G2[0]), 0.0)) / (pi * self.size)
        out = []
        for p in self.probes:
            g1 = p.resolvent(s)[0]
            r1 = p.radau().resolvent(s)[0]
            out.append(s * np.maximum(r1 - g1, 0.0))
        return lab, np.concatenate(out) / self.size * self._scale

    def deflation_bound(self, pi: float, temperature: float) -> float:
        """Bound on the deflation's error in the trace part of g: ‖R‖_F² max|f''| / P with
        f(x) = Πx/(T + Πx), max|f''| = 2Π²/T² (:class:`finwidth.theory.krylov.Deflation`)."""
        return 2.0 * self.deflation.residual2 * (pi / temperature) ** 2 / self.size


@dataclass
class KrylovSaddle(spectral.ProductSaddle):
    """A product-form saddle point found by Lanczos quadrature, with its verified accuracy.

    Attributes (besides those of :class:`~finwidth.theory.spectral.ProductSaddle`)
    ----------
    qbar_stderr : ndarray, shape (L,)
        Standard error of Q̄_l from the Hutchinson probes (0 with ``probes="exact"``).
    qbar_quadrature_error : ndarray, shape (L,)
        Bound on the change of Q̄_l from the quadrature brackets (label and trace), propagated
        through the equations.
    qbar_product_error : ndarray, shape (L,)
        Estimated change of Q̄_l from inexact products K V (float32 tiles and products):
        ``PRODUCT_ERROR_SAFETY`` times the first-order effect of an entrywise relative perturbation η
        of K (``product_error``) in its coherent direction K → (1 + η) K, i.e. Π → (1 + η) Π in g, so
        |δg| = η |Π dg/dΠ|, propagated like the other errors. An empirical estimate, not a bound:
        ~10⁻⁶ relative for float32 tiles.
    g_stderr, g_quadrature_error : float
        The same on g(Π).
    action_stderr : float
        Standard error of the action S (the SLQ estimate of log det(T + Π K)).
    n_probes : int
    label_steps : int
        Lanczos steps of the label run.
    probe_steps : ndarray of int
        Lanczos steps of every probe.
    n_products : int
        Products K V (each with a block of vectors), the deflation's included.
    n_deflated : int
        Eigenpairs of K deflated (0: plain Hutchinson).
    g_deflation_error : float
        Bound on the deflation's error in g (included in ``g_quadrature_error`` and
        ``qbar_quadrature_error``).
    measure : QuadratureMeasure
        The quadrature measure the root was found on.
    """

    qbar_stderr: np.ndarray = field(default_factory=lambda: np.zeros(0))
    qbar_quadrature_error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    qbar_product_error: np.ndarray = field(default_factory=lambda: np.zeros(0))
    g_stderr: float = 0.0
    g_quadrature_error: float = 0.0
    action_stderr: float = 0.0
    n_probes: int = 0
    label_steps: int = 0
    probe_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    n_products: int = 0
    n_deflated: int = 0
    g_deflation_error: float = 0.0
    measure: QuadratureMeasure | None = field(default=None, repr=False)


def _fmt(values: np.ndarray, digits: int) -> str:
    return "[" + ", ".join(f"{float(v):.{digits}g}" for v in np.ravel(values)) + "]"


#: the float32 − float64 differences of Q̄ measured with the same probes (P = 220–400, T = 1e-4–1e-2,
#: α = 0.5–2; tests/test_scalable.py) were 0.5–21 times the coherent first-order term η |Π dg/dΠ| |dQ̄/dg|:
#: the reported product error is this many times that term
PRODUCT_ERROR_SAFETY = 30.0

#: ``deflate="auto"`` deflates the verified eigenpairs of K above this many times T
DEFLATE_ABOVE = 100.0
#: and keeps at most this many basis vectors of length P for them (block Lanczos)
DEFLATE_MAX_VECTORS = 2048
#: block size of the deflation's block Lanczos
DEFLATE_BLOCK = 64
#: ``deflate="auto"`` deflates only with products this exact (float64; float32 products are ~6e-8)
DEFLATE_MAX_PRODUCT_ERROR = 1e-10


def deflate_top(matmat, P: int, temperature: float, rtol: float, deflate, seed: int) -> krylov.Deflation:
    """The deflation of :func:`solve_product_krylov` (module docstring): ``deflate`` "auto" or a number of
    pairs (0: none). The residual budget keeps the deflation's bound on g (2‖R‖²Π²/(T²P)) at
    ≤ 10⁻³·rtol·Π², far below the target, so that it never decides the accuracy."""
    if deflate == 0:
        return krylov.Deflation.none(P)
    budget = 1e-3 * rtol * temperature ** 2 * P / 2
    if deflate == "auto":
        above, cap, pairs = DEFLATE_ABOVE * temperature, min(P // 2, DEFLATE_MAX_VECTORS), None
    else:
        above, cap, pairs = 0.0, min(P - 1, max(2 * int(deflate) + 2 * DEFLATE_BLOCK, 4 * DEFLATE_BLOCK)), int(deflate)
    return krylov.top_eigenpairs(matmat, P, above=above, residual_budget=budget, max_vectors=cap, max_pairs=pairs,
                                 block=DEFLATE_BLOCK, rng=np.random.default_rng([seed, 1]))


def _dg_dlogpi(measure, pi: float, temperature: float) -> float:
    """Π dg/dΠ on the measure (central difference in log Π)."""
    z, eps = math.log(pi), 1e-5
    return (measure.g(math.exp(z + eps), temperature)[0] - measure.g(math.exp(z - eps), temperature)[0]) / (2 * eps)


def qbar_sensitivity(measure: spectral.SpectralMeasure, sol: spectral.ProductSaddle, temperature: float,
                     widths: np.ndarray) -> np.ndarray:
    """dQ̄_l/dδ when g is shifted by a constant δ, at the root (implicit-function theorem on h(z))."""
    P = measure.size
    alphas = P / widths
    gz = _dg_dlogpi(measure, sol.pi, temperature)
    q = sol.qbar
    dh_dd = -float(np.sum(alphas / q))
    dh_dz = -float(np.sum(alphas * gz / q)) - 1.0
    dz = -dh_dd / dh_dz
    return -alphas * (gz * dz + 1.0)


def solve_product_krylov(
    matmat,
    y: np.ndarray,
    temperature: float,
    widths,
    *,
    rtol: float = 1e-3,
    probes="auto",
    max_probes: int = 2048,
    max_steps: int = 3000,
    check_every: int = 25,
    seed: int = 0,
    progress=None,
    product_error: float = 0.0,
    deflate="auto",
) -> KrylovSaddle:
    """The product-form saddle point (one hidden layer or the deep product form) from products K V.

    Parameters
    ----------
    matmat : callable
        V ↦ K_L V, (P, c) → (P, c); K_L the NNGP output kernel (all 1/λ_l included).
    y : ndarray, shape (P,)
        Labels.
    temperature : float
        T > 0 (the Krylov path needs a positive definite T + Π K).
    widths : sequence
        N_1..N_L.
    rtol : float
        Target on the accuracy of every Q̄_l, relative: standard error ≤ rtol·Q̄_l and quadrature
        error ≤ rtol·Q̄_l/10.
    probes : "auto", int or "exact"
        Probes of the first batch ("auto": 32); more are added (up to ``max_probes``) until the
        standard error meets ``rtol``; where that would take P/2 probes or more and P ≤ ``max_probes``,
        the P unit vectors replace them (the same cost, no variance). "exact": the P unit vectors
        from the start (deterministic).
    max_probes, max_steps : int
        Budgets: probes in total, Lanczos steps per run.
    check_every : int
        Lanczos steps between two solves of the equations on the current rules.
    seed : int
        Seed of the probes.
    progress : callable, optional
        Called with a one-line status string after each check.
    product_error : float
        η, the entrywise relative backward error of ``matmat``
        (:attr:`finwidth.kernel_operator.KernelOperator.product_error`); its estimated effect is
        reported as ``qbar_product_error`` and must stay below ``rtol``.
    deflate : "auto" or int
        Eigenpairs of K deflated from the probes (module docstring): "auto", the verified pairs above
        ``DEFLATE_ABOVE``·T within ``DEFLATE_MAX_VECTORS`` vectors (none with ``probes="exact"`` or with
        ``product_error`` above ``DEFLATE_MAX_PRODUCT_ERROR``: float32 products cannot verify them); an
        integer, that many leading pairs (fewer if their residual cannot be verified); 0, none.

    Returns
    -------
    KrylovSaddle

    Raises
    ------
    ConfigError
        T = 0, or bad arguments.
    ConvergenceError
        A budget ran out before the accuracy was verified (the message has the estimate reached).
    """
    T = float(temperature)
    if not T > 0:
        raise ConfigError("the matrix-free (Krylov) fit needs a temperature T > 0; use the dense solver at T = 0")
    if not (isinstance(rtol, float | int) and rtol > 0):
        raise ConfigError(f"rtol must be a positive number, got {rtol!r}")
    widths = np.asarray(widths, dtype=float)
    first = 32 if probes == "auto" else probes
    if not (first == "exact" or (isinstance(first, int | np.integer) and not isinstance(first, bool) and first >= 2)):
        raise ConfigError(f"probes must be 'auto', 'exact' or an integer ≥ 2, got {probes!r}")
    if not (deflate == "auto" or (isinstance(deflate, int | np.integer) and not isinstance(deflate, bool)
                                  and deflate >= 0)):
        raise ConfigError(f"deflate must be 'auto' or an integer ≥ 0 (pairs), got {deflate!r}")
    P = int(np.asarray(y).size)
    # "auto" skips the deflation where it cannot pay: unit-vector probes, and inexact (float32) products, whose
    # rounding alone exceeds the residual budget (‖KX − XΘ‖_F ~ η‖K‖ against ~10⁻⁵ at P = 12 665, T = 10⁻³)
    auto_off = first == "exact" or product_error > DEFLATE_MAX_PRODUCT_ERROR
    deflation = deflate_top(matmat, P, T, float(rtol), 0 if (deflate == "auto" and auto_off) else deflate, seed)
    if progress is not None and deflate != 0 and not deflation.k and deflation.n_products:
        progress(f"no eigenpair verified for deflation within the residual budget ({deflation.n_products} products; "
                 "float32 products are too inexact for it): plain Hutchinson")
    if progress is not None and deflation.k:
        progress(f"deflated {deflation.k} eigenpairs (θ from {deflation.values[0]:.4g} to {deflation.values[-1]:.4g}, "
                 f"‖KX − XΘ‖_F = {math.sqrt(deflation.residual2):.2e}) with {deflation.n_products} products")
    spec = KrylovSpectrum(matmat, y, probes=first, seed=seed, deflation=deflation)
    spec.n_products = deflation.n_products
    min_steps = 2 * check_every
    while True:
        spec.advance(check_every if spec.label_steps >= min_steps else min_steps)
        measure = spec.measure()
        sol = spectral.solve_product_measure(measure, T, widths, with_action=False)
        sens = qbar_sensitivity(measure, sol, T, widths)
        target_q = rtol * sol.qbar
        target_g = float(np.min(target_q / np.maximum(np.abs(sens), 1e-300)))
        vals = measure.probe_values(sol.pi, T)
        lab_br, brk = measure.brackets(sol.pi, T)
        n = vals.size
        defl_g = measure.deflation_bound(sol.pi, T)
        if defl_g > 0.05 * target_g:
            raise ConvergenceError(
                f"the deflated eigenpairs' residual (‖KX − XΘ‖_F² = {deflation.residual2:.3g}) bounds the error in g "
                f"at {defl_g:.3g}, above 5% of the target {target_g:.3g}",
                suggestion="deflate fewer pairs (solver_options deflate=0 or a smaller integer)",
            )
        quad_g = lab_br + (float(np.sum(brk)) if spec.exact else float(np.mean(brk))) + defl_g
        # per column: converged when its share of the bracket is below a tenth of the target
        col_tol = 0.1 * target_g / (n if spec.exact else 1.0)
        spec.label_done = spec.label.exhausted or lab_br <= 0.1 * target_g
        off = 0
        for b, d in zip(spec.batches, spec.done):
            d[:] = (brk[off:off + b.n] <= col_tol) | b.exhausted
            off += b.n
        all_done = spec.label_done and all(d.all() for d in spec.done)
        # before every probe has converged, the spread comes from the first batch only: younger probes
        # are further from convergence and would inflate it
        ref = vals if all_done else vals[: spec.batches[0].n]
        se_g = 0.0 if spec.exact else float(np.std(ref, ddof=1) / math.sqrt(n))
        steps = spec.probe_steps()
        if progress is not None:
            progress(f"steps {spec.label_steps}, probes {n}, Π = {sol.pi:.8g}, Q̄ = {_fmt(sol.qbar, 7)}, "
                     f"stderr(g) {se_g:.2e}, quadrature(g) {quad_g:.2e}, target(g) {target_g:.2e}")
        if not spec.exact and se_g > target_g:
            # the spread of the probes is visible long before their rules converge: add the probes
            # needed now, so that they run in lockstep with the first ones
            need = int(math.ceil(n * (se_g / target_g) ** 2 * 1.1))
            if 2 * need >= spec.P and spec.P <= max_probes:
                # the P unit vectors cost at most twice the probes needed and make the trace exact
                spec.use_unit_vectors()
                if progress is not None:
                    progress(f"about {need} probes needed: the {spec.P} unit vectors instead (exact trace)")
                continue
            if n < max_probes:
                spec.add_probes(min(need, 4 * n, max_probes) - n)  # at most ×4 on an early estimate
                continue
            if all_done:
                se_q = np.abs(sens) * se_g
                raise ConvergenceError(
                    f"{n} probes give Q̄ = {_fmt(sol.qbar, 7)} ± "
                    f"{_fmt(se_q, 2)} (standard error), above the target rtol = {rtol:g}; "
                    f"about {need} probes would be needed",
                    suggestion=f"raise max_probes to {need}, accept a larger rtol, or use the dense solver",
                )
        if all_done:
            break
        if spec.label_steps >= max_steps or np.any(steps[~np.concatenate(spec.done)] >= max_steps):
            raise ConvergenceError(
                f"Lanczos quadrature not converged in {max_steps} steps: bracket on g {quad_g:.3g} against "
                f"the target {0.1 * target_g:.3g} (Q̄ ≈ {_fmt(sol.qbar, 7)})",
                suggestion="raise max_steps, a larger temperature, or the dense solver",
            )
    prod_g = PRODUCT_ERROR_SAFETY * float(product_error) * abs(_dg_dlogpi(measure, sol.pi, T))
    prod_q = np.abs(sens) * prod_g
    if np.any(prod_q > rtol * sol.qbar):
        raise ConvergenceError(
            f"the products K V are too inexact for rtol = {rtol:g}: their error η = {product_error:.2g} moves Q̄ "
            f"= {_fmt(sol.qbar, 7)} by about {_fmt(prod_q, 2)}",
            suggestion="store the kernel in float64 (solver_options storage='float64') or accept a larger rtol",
        )
    # the action: SLQ log-determinant with its own standard error
    logdet_vals = measure.probe_logdets(sol.pi, T)
    action = spectral._measure_action(sol.qbar, np.where(np.isfinite(widths), widths, 0.0), measure, T)
    action_se = 0.0 if spec.exact else float(np.std(logdet_vals, ddof=1) / math.sqrt(n))
    return KrylovSaddle(
        qbar=sol.qbar, pi=sol.pi, g=sol.g, action=action, residual=sol.residual, roots=sol.roots,
        qbar_stderr=np.abs(sens) * se_g, qbar_quadrature_error=np.abs(sens) * quad_g, qbar_product_error=prod_q,
        g_stderr=se_g,
        g_quadrature_error=quad_g, action_stderr=action_se, n_probes=n, label_steps=spec.label_steps,
        probe_steps=spec.probe_steps(), n_products=spec.n_products, n_deflated=deflation.k, g_deflation_error=defl_g,
        measure=measure,
    )


# ----------------------------------------------------------------------------------------------
# predictions: (T + Π K) α = y by preconditioned CG; variances by block CG on the test columns
# ----------------------------------------------------------------------------------------------


class KrylovPredictor:
    """GP predictions with the renormalised kernel Π K_L from products K V only.

    mean(x*) = Π k*ᵀ α with (T + Π K) α = y, and var(x*) = Π k** − Π² k*ᵀ (T + Π K)⁻¹ k* (no
    observation noise, docs/conventions.md). Each solve is conjugate gradients preconditioned by a
    randomized Nyström approximation of K of rank ``rank``; every solution's true residual is
    checked (≤ 10·rtol).

    Parameters
    ----------
    operator : finwidth.kernel_operator.KernelOperator
    y : ndarray, shape (P,)
    temperature : float
        T > 0.
    pi : float
        Π, the renormalisation of the output kernel (1 for the NNGP).
    rtol : float
        Relative residual of every CG solve.
    rank : int
        Rank of the Nyström preconditioner (one product K Ω with ``rank`` columns, P·rank doubles).
    seed : int
    preconditioner : NystromPreconditioner, optional
        One already made for K (``rank`` and ``seed`` then unused).
    """

    def __init__(self, operator, y: np.ndarray, temperature: float, pi: float, *, rtol: float = 1e-9,
                 rank: int = 500, seed: int = 0, preconditioner: krylov.NystromPreconditioner | None = None):
        self.operator = operator
        self.T = float(temperature)
        self.pi = float(pi)
        self.rtol = float(rtol)
        P = operator.shape[0]
        # a Nyström approximation of K serves every Π (it preconditions T/Π + K): shareable between predictors
        self.preconditioner = preconditioner if preconditioner is not None else \
            krylov.NystromPreconditioner(operator.matmat, P, min(rank, P), np.random.default_rng(seed))
        res = self.solve(np.asarray(y, dtype=np.float64))
        self.alpha = res.X
        self.cg_iterations = res.iterations
        self.residual = float(np.max(res.residual))

    def solve(self, B: np.ndarray) -> krylov.CGResult:
        """(T + Π K)⁻¹ B by preconditioned CG."""
        return krylov.block_cg(self.operator.matmat, B, self.T, self.pi, rtol=self.rtol,
                               preconditioner=self.preconditioner)

    def predict(self, X_test, return_var: bool = False, *, block_rows: int = 256):
        """Posterior mean (P_t,) and, if ``return_var``, variance (P_t,) at X_test.

        Cost: one pass over the test×train kernel for the mean; for the variance one block CG per
        ``block_rows`` test points (each iteration a product K V with that many columns).
        """
        from finwidth.inputs import as_inputs

        Xt = as_inputs(X_test, "X_test")
        mean = np.empty(Xt.shape[0])
        var = np.empty(Xt.shape[0]) if return_var else None
        kdiag = self.operator.test_diagonal(Xt) if return_var else None
        for sl, kt in self.operator.cross(Xt, block_rows=block_rows):
            mean[sl] = self.pi * (kt @ self.alpha)
            if return_var:
                sol = self.solve(kt.T)
                quad = np.einsum("ij,ji->i", kt, sol.X)
                var[sl] = self.pi * kdiag[sl] - self.pi ** 2 * quad
        if not return_var:
            return mean
        return mean, clip_variance(var, self.pi * kdiag)


# ----------------------------------------------------------------------------------------------
# the estimator's matrix-free path (RKGP(solver="krylov"), chosen automatically above KRYLOV_ABOVE_P)
# ----------------------------------------------------------------------------------------------

#: ``RKGP(solver="auto")`` takes the matrix-free path above this many training points (product form,
#: T > 0). Below it the dense path is exact and faster on CPU: at P = 12 665 one eigendecomposition
#: takes minutes and 2.6 GB, while Lanczos quadrature needs ~10² probes × ~300 products for 3e-4 in Q̄.
#: Above it, two dense P×P float64 matrices exceed 6.4 GB and the P³ time grows past tens of minutes.
KRYLOV_ABOVE_P = 20000

#: keys accepted in ``RKGP(solver_options=...)`` and their defaults
SOLVER_OPTIONS = {
    "rtol": 1e-3,  # target relative accuracy of Q̄ (standard error; quadrature ≤ rtol/5)
    "probes": "auto",  # first batch of Rademacher probes (or "exact")
    "max_probes": 2048,
    "max_steps": 3000,
    "seed": 0,
    "deflate": "auto",  # eigenpairs of K deflated from the probes ("auto", a number, or 0)
    "storage": "auto",  # KernelOperator storage: "float64", "float32", "recompute"
    "max_bytes": None,  # memory for the tiles under storage="auto" (default 8 GiB)
    "tile": None,
    "threads": 1,
    "cg_rtol": 1e-9,  # relative residual of the prediction solves
    "preconditioner_rank": 500,
    "progress": None,  # callable receiving one status line per check
}


def solver_options(options) -> dict:
    """``SOLVER_OPTIONS`` updated by the user's dict; ConfigError naming an unknown key."""
    out = dict(SOLVER_OPTIONS)
    if options is None:
        return out
    if not isinstance(options, dict):
        raise ConfigError(f"solver_options must be a dict, got {type(options).__name__}")
    unknown = sorted(set(options) - set(SOLVER_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown solver_options {unknown}; valid keys: {sorted(SOLVER_OPTIONS)}")
    out.update(options)
    return out


def choose_solver(solver: str, P: int, *, product_form: bool, temperature: float) -> str:
    """"dense" or "krylov" for ``RKGP(solver=...)`` (ConfigError where the matrix-free path cannot apply)."""
    if solver not in ("auto", "dense", "krylov"):
        raise ConfigError(f"solver must be 'auto', 'dense' or 'krylov', got {solver!r}")
    possible = product_form and temperature > 0
    if solver == "krylov" and not possible:
        raise ConfigError(
            "solver='krylov' covers the product form (and one hidden layer without the mean term) at T > 0; "
            "use solver='dense' for the nested form, the mean-corrected non-odd theory or T = 0"
        )
    if solver == "auto":
        return "krylov" if possible and P > KRYLOV_ABOVE_P else "dense"
    return solver


def build_operator(model, X: np.ndarray, opts: dict):
    """The tiled kernel operator of a matrix-free fit (:class:`finwidth.kernel_operator.KernelOperator`) from the
    solver options ``opts`` and the model's device, with its build time and product error sent to ``progress``."""
    from finwidth.kernel_operator import KernelOperator

    op_kw = {k: opts[k] for k in ("tile", "max_bytes") if opts[k] is not None}
    t0 = time.perf_counter()
    op = KernelOperator(model.network, X, storage=opts["storage"], threads=opts["threads"],
                        device=getattr(model, "_device", None), **op_kw)
    if opts["progress"] is not None:
        opts["progress"](f"kernel operator {op!r} built in {time.perf_counter() - t0:.1f} s; "
                         f"product error η = {op.product_error:.2g}")
    return op


def fit_rkgp(model, X: np.ndarray, y: np.ndarray) -> None:
    """Fit an RKGP (product form) on the matrix-free path; sets its fitted attributes."""
    opts = solver_options(model.solver_options)
    net = model.network
    T = float(model.temperature)
    widths = np.array(net.widths, dtype=float)
    op = build_operator(model, X, opts)
    sol = solve_product_krylov(
        op.matmat, y, T, widths, rtol=opts["rtol"], probes=opts["probes"], max_probes=opts["max_probes"],
        max_steps=opts["max_steps"], seed=opts["seed"], progress=opts["progress"], product_error=op.product_error,
        deflate=opts["deflate"],
    )
    P = X.shape[0]
    model.X_train_ = X
    model.y_train_ = y
    model._train_diags = op.diags
    model.n_factorizations_ = 0
    model.kind_ = "product"
    model.qbar_ = sol.qbar
    model.q_ = 1.0 / sol.qbar - 1.0
    model.action_ = sol.action
    model.residual_ = sol.residual
    model.roots_ = sol.roots
    model.width_criterion_ = None  # a T = 0 quantity: Lanczos quadrature at T = 0 is not reliable
    model.validity_ = None  # needs the kernel's eigenvalues (its participation ratio)
    model.correction_ = None
    model.qbar_stderr_ = sol.qbar_stderr
    model.qbar_quadrature_error_ = sol.qbar_quadrature_error
    model.qbar_product_error_ = sol.qbar_product_error
    model.log_evidence_ = -0.5 * sol.action - 0.5 * P * math.log(2 * math.pi)
    model.log_evidence_stderr_ = 0.5 * sol.action_stderr
    model.krylov_ = sol
    model.roundoff_sensitivity_ = sol.measure.roundoff_sensitivity(sol.pi, T)
    model._operator = op
    model._pred_scale = sol.pi
    model._pred_basis = None
    model._pred_cache = {}  # the CG predictor, made by the first predict


def predict_rkgp(model, X_test, return_var: bool):
    """Predictions of an RKGP fitted on the matrix-free path (the CG solve is done at the first call)."""
    opts = solver_options(model.solver_options)
    cache = model._pred_cache
    if "krylov" not in cache:
        cache["krylov"] = KrylovPredictor(model._operator, model.y_train_, float(model.temperature), model._pred_scale,
                                          rtol=opts["cg_rtol"], rank=opts["preconditioner_rank"], seed=opts["seed"])
    return cache["krylov"].predict(X_test, return_var=return_var)
