"""D outputs on the matrix-free path: the multi-output saddle point from products K V only.

The multi-output action (:mod:`finwidth.theory.multioutput`) needs the kernel K_L through two measures:

* the **trace measure**, Σ_i f(k_i) = tr f(K) (the log det A and tr terms): stochastic Lanczos
  quadrature, the mean of the Gauss rules of Rademacher probes (as for one output, :mod:`scalable`);
* the **label measure**, Yᵀ f(K) Y = Σ_i f(k_i) Ỹ_i Ỹ_iᵀ (every term with the targets): one block
  Lanczos run from the D label columns gives nodes θ_j and D-vectors z_j with
  Yᵀ f(K) Y ≈ Σ_j f(θ_j) z_j z_jᵀ, exact for polynomials of degree ≤ 2m − 1 after m steps.

One run serves every 𝒬 and every f, so the SPD solver of the eigenbasis path runs unchanged on the
action built from these rules (:class:`~finwidth.theory.multioutput.MultiOutputAction` with ``trace=``).
Every product K V carries the label block and all probes together.

Accuracy (all propagated to 𝒬 through the action's Hessian H at the answer, δ𝒬 = −H⁻¹ δG for a
perturbation δG of the gradient):

* **standard error**: each probe alone gives a trace gradient diag(t⁽ⁱ⁾); the spread of the probes'
  δ𝒬⁽ⁱ⁾ over √n is the standard error of every entry of 𝒬 (``renormalization_stderr``);
* **quadrature**: the trace part is bracketed per probe by its Gauss and Gauss–Radau rules (as for one
  output); the label part by the change of the label gradient over the last ``check_every`` steps at
  the answer (an estimate: the block rule converges geometrically once it has found the top of the
  spectrum; not a bound). Their sum is ``renormalization_quadrature_error``;
* **products**: float32 tiles and products perturb K entrywise by η (``KernelOperator.product_error``);
  its effect is estimated as for one output, ``scalable.PRODUCT_ERROR_SAFETY`` times the first-order
  change in the coherent direction K → (1 + η)K (``renormalization_product_error``; empirical).

The solver stops when every entry's standard error is below ``rtol·‖𝒬‖₂`` and its quadrature error
below a tenth of that; it adds probes (up to ``max_probes``) and steps (up to ``max_steps``), else
raises :class:`~finwidth.errors.ConvergenceError` with the estimate reached and what to change.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from finwidth.errors import ConfigError, ConvergenceError
from finwidth.theory import krylov, scalable, spectral
from finwidth.theory.multioutput import MultiOutputAction, MultiOutputSaddle, _factor_divided_differences, solve_from_starts

__all__ = ["MultiOutputKrylovSaddle", "solve_multioutput_krylov"]


@dataclass(frozen=True)
class MultiOutputKrylovSaddle(MultiOutputSaddle):
    """A multi-output saddle point found by Lanczos quadrature, with its accuracy.

    Attributes (besides those of :class:`~finwidth.theory.multioutput.MultiOutputSaddle`)
    ----------
    renormalization_stderr, renormalization_quadrature_error, renormalization_product_error : ndarray, (D, D)
        Standard error (probes), quadrature error estimate and float32-product error estimate of each
        entry of 𝒬 (module docstring).
    qbar_stderr : ndarray, shape (L, D, D)
        Standard error of each entry of each Q_l.
    action_stderr : float
        Standard error of the action S (the probes' estimates of log det A).
    n_probes, label_steps, n_products : int
    probe_steps : ndarray of int
    """

    renormalization_stderr: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    renormalization_quadrature_error: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    renormalization_product_error: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    qbar_stderr: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0)))
    action_stderr: float = 0.0
    n_probes: int = 0
    label_steps: int = 0
    probe_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    n_products: int = 0


class _Spectrum:
    """The label block and the probe recurrences, advanced together (one product K V per step)."""

    def __init__(self, matmat, Y: np.ndarray, probes: int, seed: int):
        self.matmat = matmat
        self.P = Y.shape[0]
        self.label = krylov.BlockLanczos(Y)
        self.rng = np.random.default_rng(seed)
        self.batches: list[krylov.ScalarLanczos] = []
        self.n_products = 0
        self.add_probes(probes)

    @property
    def n_probes(self) -> int:
        return sum(b.n for b in self.batches)

    def add_probes(self, n: int) -> None:
        if n >= 1:
            self.batches.append(krylov.ScalarLanczos(krylov.rademacher(self.P, n, self.rng)))

    def advance(self, steps: int, progress=None) -> None:
        probes = [(b, np.arange(b.n)) for b in self.batches]
        chunk = 10 if progress is not None else steps  # a line every 10 products for long runs
        while steps > 0:
            t0 = time.perf_counter()
            done = krylov.run_lanczos(self.matmat, min(chunk, steps), block=self.label, probes=probes)
            self.n_products += done
            steps -= min(chunk, steps)
            if progress is not None and done:
                progress(f"step {self.label.n_steps}: {done} products K V with {self.label.D + self.n_probes} "
                         f"columns, {(time.perf_counter() - t0) / done:.2f} s each")
            if not done:
                break

    def probe_rules(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each probe's Gauss rule (θ, w) with Σ_j w_j f(θ_j) ≈ zᵀ f(K) z (an estimate of tr f(K))."""
        return [r for b in self.batches for r in b.jacobi().rules()]

    def probe_brackets(self, s: np.ndarray) -> np.ndarray:
        """(n_probes, D): Radau minus Gauss of zᵀ(s_a + K)⁻¹z for each probe and shift s_a."""
        out = []
        for b in self.batches:
            J = b.jacobi()
            R = J.radau()
            out.append(np.stack([np.maximum(R.resolvent(sa)[0] - J.resolvent(sa)[0], 0.0) for sa in s], axis=1))
        return np.concatenate(out, axis=0)


def _action(label_rule, probe_rules, T: float, widths, scale: float = 1.0) -> MultiOutputAction:
    theta, Z = label_rule
    nodes = np.concatenate([t for t, _ in probe_rules])
    weights = np.concatenate([w for _, w in probe_rules]) / len(probe_rules)
    return MultiOutputAction(scale * theta, Z, T, widths, trace=(scale * nodes, weights))


def _propagate(H: np.ndarray, V: np.ndarray, dG: np.ndarray) -> np.ndarray:
    """δ𝒬 (D×D, output coordinates) for gradient perturbations dG (…, D, D) in 𝒬's eigen-coordinates."""
    D = V.shape[0]
    rows, cols = np.triu_indices(D)
    w = np.where(rows == cols, 1.0, math.sqrt(2.0))
    g = dG[..., rows, cols] * w
    e = -np.linalg.solve(H, g.reshape(-1, g.shape[-1]).T).T.reshape(g.shape)
    E = np.zeros(dG.shape)
    E[..., rows, cols] = e / w
    E[..., cols, rows] = e / w
    return V @ E @ V.T


def _bound(H: np.ndarray, V: np.ndarray, dG: np.ndarray) -> np.ndarray:
    """Entrywise bound on |δ𝒬| for gradient perturbations bounded entrywise by |dG| (first order)."""
    D = V.shape[0]
    rows, cols = np.triu_indices(D)
    w = np.where(rows == cols, 1.0, math.sqrt(2.0))
    e = np.abs(np.linalg.inv(H)) @ (np.abs(dG[rows, cols]) * w)
    E = np.zeros((D, D))
    E[rows, cols] = e / w
    E[cols, rows] = e / w
    return np.abs(V) @ E @ np.abs(V).T


def _data_gradient(action: MultiOutputAction, pi: np.ndarray, V: np.ndarray) -> np.ndarray:
    """∂(log det A + quadratic form)/∂𝒬 in 𝒬's eigen-coordinates: diag(t) − W."""
    _, _, t, Wm = action.data_terms(pi, V)
    return np.diag(t) - Wm


def _layer_errors(action: MultiOutputAction, Qn: np.ndarray, dQ: np.ndarray) -> np.ndarray:
    """δQ_l (…, L, D, D) for perturbations δ𝒬 (…, D, D): δQ_n = δ𝒬 ./ f[q_a, q_b] in Q_n's eigenbasis
    (Daleckii–Krein for 𝒬 = f(Q_n)), δQ_l = r_l δQ_n."""
    q, U = np.linalg.eigh(Qn)
    _, _, dd = _factor_divided_differences(q, action.ratios)
    dQn = U @ ((U.T @ dQ @ U) / dd) @ U.T
    return action.ratios[:, None, None] * dQn[..., None, :, :]


def solve_multioutput_krylov(
    matmat,
    Y: np.ndarray,
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
) -> MultiOutputKrylovSaddle:
    """The multi-output product-form saddle point (equivalent-Wishart ansatz) from products K V.

    Parameters
    ----------
    matmat : callable
        V ↦ K_L V, (P, c) → (P, c); K_L the NNGP output kernel (all 1/λ_l included).
    Y : ndarray, shape (P, D), D ≥ 1
        Targets (linearly independent columns: drop redundant outputs).
    temperature : float
        T > 0.
    widths : sequence
        N_1..N_L (finite).
    rtol : float
        Target, relative to ‖𝒬‖₂: standard error of every entry of 𝒬 ≤ rtol‖𝒬‖₂, quadrature error
        ≤ rtol‖𝒬‖₂/10.
    probes : "auto" or int
        Rademacher probes of the first batch ("auto": 16; at least 4); more are added up to
        ``max_probes`` while the standard error is above the target.
    max_probes, max_steps : int
        Budgets: probes in total, Lanczos steps.
    check_every : int
        Steps between two solves on the current rules (grows with the number of steps: the block
        rule costs an eigendecomposition of size mD).
    seed : int
    progress : callable, optional
        Called with a one-line status string after each check.
    product_error : float
        η of ``matmat`` (:attr:`finwidth.kernel_operator.KernelOperator.product_error`).

    Returns
    -------
    MultiOutputKrylovSaddle

    Raises
    ------
    ConfigError
        T ≤ 0, bad shapes or options, dependent label columns.
    ConvergenceError
        A budget ran out before the accuracy was verified, or the products are too inexact for
        ``rtol`` (the message gives the estimate reached and what to change).
    """
    T = float(temperature)
    if not T > 0:
        raise ConfigError("the matrix-free (Krylov) fit needs a temperature T > 0; use the dense solver at T = 0")
    if isinstance(rtol, bool) or not (isinstance(rtol, float | int) and rtol > 0):
        raise ConfigError(f"rtol must be a positive number, got {rtol!r}")
    Y = np.asarray(Y, dtype=np.float64)
    if Y.ndim != 2 or Y.shape[0] < 2 or not np.all(np.isfinite(Y)):
        raise ConfigError(f"Y must be a finite (P, D) array, got shape {Y.shape}")
    widths = np.asarray(widths, dtype=float)
    if not np.all(np.isfinite(widths)) or not np.all(widths > 0):
        raise ConfigError("the multi-output theory needs finite positive widths")
    first = 16 if probes == "auto" else probes
    if isinstance(first, bool) or not isinstance(first, int | np.integer) or first < 4:
        raise ConfigError(f"probes must be 'auto' or an integer ≥ 4, got {probes!r}")
    P, D = Y.shape
    spec = _Spectrum(matmat, Y, int(first), seed)
    prev_label = None  # (steps, rule) at the previous check
    Qn_prev = None
    steps_done = 0
    while True:
        step = check_every if steps_done else 2 * check_every
        step = max(step, steps_done // 8)  # the block rule's eigendecomposition grows like (mD)³
        spec.advance(step, progress if spec.P >= 20000 else None)
        steps_done += step
        label_rule = spec.label.rule()
        probe_rules = spec.probe_rules()
        action = _action(label_rule, probe_rules, T, widths)
        n = action.narrowest
        if Qn_prev is None:
            iso = spectral.SpectralMeasure(action.trace_nodes, action.trace_weights, label_rule[0],
                                           np.sum(label_rule[1] ** 2, axis=1) / D, P)
            starts = [np.eye(D)]
            try:
                starts.append(spectral.solve_product_measure(iso, T, widths, with_action=False).qbar[n] * np.eye(D))
            except ConvergenceError:
                pass
        else:
            starts = [Qn_prev]
        sol = solve_from_starts(action, starts)
        Qn = sol.qbar[n]
        Qn_prev = Qn
        # δG in the eigen-coordinates of 𝒬 that the Hessian uses (those of Q_n, same order)
        H, V = action.hessian(Qn)
        pi = action.layers(np.linalg.eigvalsh(Qn))[1]
        top = float(np.max(np.abs(pi)))
        target = rtol * top
        # standard error: one trace gradient per probe
        t_i = np.stack([(w * th) @ (1.0 / (T + th[:, None] * pi[None, :])) for th, w in probe_rules])
        dG = np.zeros((t_i.shape[0], D, D))
        idx = np.arange(D)
        dG[:, idx, idx] = t_i - t_i.mean(axis=0)
        dQ = _propagate(H, V, dG)
        se = np.std(dQ, axis=0, ddof=1) / math.sqrt(t_i.shape[0])
        # quadrature: probes' Gauss/Radau brackets on t_a = (Σ w − s_a zᵀ(s_a + K)⁻¹ z)/π_a, s_a = T/π_a
        s = T / pi
        brk = spec.probe_brackets(s) * (s / pi)[None, :]
        quad = _bound(H, V, np.diag(np.mean(brk, axis=0)))
        label_change = None
        if prev_label is not None:
            old = MultiOutputAction(prev_label[0], prev_label[1], T, widths,
                                    trace=(action.trace_nodes, action.trace_weights))
            label_change = _bound(H, V, _data_gradient(action, pi, V) - _data_gradient(old, pi, V))
            quad = quad + label_change
        prev_label = label_rule
        n_pr = spec.n_probes
        se_max, quad_max = float(np.max(se)), float(np.max(quad))
        if progress is not None:
            progress(f"steps {spec.label.n_steps}, probes {n_pr}, eigenvalues of 𝒬 {np.array2string(np.sort(pi), precision=6)}, "
                     f"stderr {se_max:.2e}, quadrature {quad_max if label_change is not None else math.inf:.2e}, "
                     f"target {target:.2e}")
        if se_max > target:
            need = int(math.ceil(n_pr * (se_max / target) ** 2 * 1.1))
            if n_pr < max_probes:
                spec.add_probes(min(need, 4 * n_pr, max_probes) - n_pr)
                prev_label = None  # new probes: the next check compares like with like
                continue
            if label_change is not None and quad_max <= 0.1 * target:
                raise ConvergenceError(
                    f"{n_pr} probes give 𝒬 with eigenvalues {np.array2string(np.sort(pi), precision=6)} and a "
                    f"standard error up to {se_max:.2g} per entry, above the target rtol·‖𝒬‖ = {target:.2g}; about "
                    f"{need} probes would be needed",
                    suggestion=f"raise max_probes to {need}, accept a larger rtol, or use the dense solver",
                )
        if label_change is not None and quad_max <= 0.1 * target and se_max <= target:
            break
        if spec.label.n_steps >= max_steps or spec.label.exhausted and label_change is not None \
                and quad_max > 0.1 * target and np.all(np.concatenate([b.exhausted for b in spec.batches])):
            raise ConvergenceError(
                f"Lanczos quadrature not converged in {spec.label.n_steps} steps: quadrature error {quad_max:.3g} "
                f"against the target {0.1 * target:.3g} (eigenvalues of 𝒬 ≈ {np.array2string(np.sort(pi), precision=6)})",
                suggestion="raise max_steps, a larger temperature or rtol, or the dense solver",
            )
    # the estimate of the float32 products' effect: K → (1 + η) K in the coherent direction
    h = 1e-4
    scaled = _action(label_rule, probe_rules, T, widths, scale=1.0 + h)
    dG_prod = (_data_gradient(scaled, pi, V) - _data_gradient(action, pi, V)) * (
        scalable.PRODUCT_ERROR_SAFETY * float(product_error) / h)
    prod = np.abs(_propagate(H, V, dG_prod))
    if float(np.max(prod)) > target:
        raise ConvergenceError(
            f"the products K V are too inexact for rtol = {rtol:g}: their error η = {product_error:.2g} moves 𝒬 by "
            f"about {float(np.max(prod)):.2g}",
            suggestion="store the kernel in float64 (solver_options storage='float64') or accept a larger rtol",
        )
    # the final answer: every start on the converged rules (identity, isotropic, the last solution)
    iso = spectral.SpectralMeasure(action.trace_nodes, action.trace_weights, label_rule[0],
                                   np.sum(label_rule[1] ** 2, axis=1) / D, P)
    starts = [Qn, np.eye(D)]
    try:
        starts.append(spectral.solve_product_measure(iso, T, widths, with_action=False).qbar[action.narrowest] * np.eye(D))
    except ConvergenceError:
        pass
    final = solve_from_starts(action, starts)
    logdets = [w @ np.sum(np.log(T + th[:, None] * final.pi[None, :]), axis=1) for th, w in probe_rules]
    action_se = float(np.std(logdets, ddof=1) / math.sqrt(len(logdets)))
    qbar_se = np.std(_layer_errors(action, final.qbar[action.narrowest], dQ), axis=0, ddof=1) / math.sqrt(dQ.shape[0])
    return MultiOutputKrylovSaddle(
        qbar=final.qbar, renormalization=final.renormalization, pi=final.pi, vectors=final.vectors,
        action=final.action, residual=final.residual, roots=final.roots, n_evaluations=final.n_evaluations,
        method="minimize_spd (Lanczos quadrature)", min_curvature=final.min_curvature,
        renormalization_stderr=se, renormalization_quadrature_error=quad, renormalization_product_error=prod,
        qbar_stderr=qbar_se, action_stderr=action_se, n_probes=spec.n_probes, label_steps=spec.label.n_steps,
        probe_steps=np.concatenate([b.n_steps for b in spec.batches]), n_products=spec.n_products,
    )
