"""Langevin-type samplers of exp(−U/T) over R replicas at once (full batch).

All samplers share one interface: ``sampler.step()`` advances every replica by one step;
``sampler.params`` are the current parameters; ``sampler.energy`` is U per replica at the current
point (float64; Euler and BAOAB compute it only when asked, MALA at every step).

``step_size`` is a time step of the dynamics on U at temperature T (the papers' Euler η):

* ``euler``  θ ← θ − η ∇U + sqrt(2ηT) ξ (Euler–Maruyama, unadjusted; O(η) bias);
* ``baoab``  underdamped Langevin dθ = p dt, dp = −∇U dt − γ p dt + sqrt(2γT) dW (unit mass),
  split B-A-O-A-B (Leimkuhler–Matthews); O(h²) bias in configurational averages, one gradient
  per step; default friction :func:`finwidth.simulate.guidance.default_friction`;
* ``mala``   the Euler proposal accepted with the Metropolis–Hastings probability: exact.
"""

from __future__ import annotations

import inspect
import math

import torch

from finwidth.errors import ConfigError

__all__ = ["SAMPLERS", "BAOABSampler", "CachedEnergy", "EulerSampler", "MALASampler", "NoiseStreams", "make_sampler"]


class NoiseStreams:
    """Independent random streams, each owning a contiguous block of replicas.

    With one stream per replica, replica ρ's noise depends only on (seed, ρ): a run gives the same
    chains however its replicas are grouped into threads (:class:`ShardedSampler`).

    Parameters
    ----------
    generators : list of torch.Generator
        One per block, on the parameters' device.
    blocks : list of (int, int)
        ``[start, stop)`` replica ranges, contiguous and covering ``0 .. R``.
    """

    def __init__(self, generators: list[torch.Generator], blocks: list[tuple[int, int]]):
        if len(generators) != len(blocks) or not blocks:
            raise ConfigError("NoiseStreams needs one generator per replica block")
        starts = [0] + [b for _, b in blocks[:-1]]
        if any(not (a == s < b) for (a, b), s in zip(blocks, starts)):
            raise ConfigError(f"replica blocks must be contiguous, non-empty and start at 0, got {blocks}")
        self.generators, self.blocks = list(generators), [(int(a), int(b)) for a, b in blocks]

    @classmethod
    def per_replica(cls, seeds, device="cpu") -> NoiseStreams:
        """One stream per replica, stream ρ seeded with ``seeds[ρ]``."""
        gens = [torch.Generator(device=device).manual_seed(int(sd)) for sd in seeds]
        return cls(gens, [(i, i + 1) for i in range(len(gens))])

    @classmethod
    def single(cls, generator: torch.Generator, replicas: int) -> NoiseStreams:
        """One stream for all replicas (what a plain ``torch.Generator`` means to the samplers)."""
        return cls([generator], [(0, int(replicas))])

    @property
    def replicas(self) -> int:
        return self.blocks[-1][1]

    def subset(self, start: int, stop: int) -> NoiseStreams:
        """The streams of replicas ``start .. stop`` (must be whole blocks)."""
        keep = [(g, (a, b)) for g, (a, b) in zip(self.generators, self.blocks) if start <= a and b <= stop]
        if not keep or keep[0][1][0] != start or keep[-1][1][1] != stop:
            raise ConfigError(f"replicas {start}..{stop} do not align with the noise blocks {self.blocks}")
        return NoiseStreams([g for g, _ in keep], [(a - start, b - start) for _, (a, b) in keep])

    def normal_like(self, p: torch.Tensor, std: float = 1.0) -> torch.Tensor:
        """N(0, std²) noise shaped like ``p`` (replicas on axis 0)."""
        out = torch.empty(p.shape, device=p.device, dtype=p.dtype)
        for g, (a, b) in zip(self.generators, self.blocks):
            out[a:b].normal_(0.0, std, generator=g)
        return out

    def uniform(self, device, dtype=torch.float64) -> torch.Tensor:
        """One U(0, 1) number per replica."""
        out = torch.empty(self.replicas, device=device, dtype=dtype)
        for g, (a, b) in zip(self.generators, self.blocks):
            out[a:b].uniform_(generator=g)
        return out

    def get_state(self) -> list[torch.Tensor]:
        """The generators' states (one tensor per stream)."""
        return [g.get_state() for g in self.generators]

    def set_state(self, states) -> None:
        if len(states) != len(self.generators):
            raise ValueError(f"{len(states)} saved noise streams for {len(self.generators)} in this run")
        for g, st in zip(self.generators, states):
            g.set_state(st)


def _streams(gen, replicas: int) -> NoiseStreams:
    return gen if isinstance(gen, NoiseStreams) else NoiseStreams.single(gen, replicas)


def _noise(p: torch.Tensor, gen, std: float = 1.0) -> torch.Tensor:
    """N(0, std²) noise shaped like ``p`` (the scale is applied inside the generator's transform)."""
    if isinstance(gen, NoiseStreams):
        return gen.normal_like(p, std)
    return torch.empty(p.shape, device=p.device, dtype=p.dtype).normal_(0.0, std, generator=gen)


class CachedEnergy:
    """The energy U and loss per replica at the current point, computed on demand and cached until
    the point moves (a step sets ``_energy = _loss = None``). Needs ``target``, ``params``, ``A0``, ``y``."""

    _energy: torch.Tensor | None = None
    _loss: torch.Tensor | None = None

    def _refresh(self):
        self._energy, _, self._loss = self.target.potential_and_grad(self.params, self.A0, self.y, need_grad=False)

    @property
    def energy(self) -> torch.Tensor:
        """U per replica at the current point (float64; computed on demand for Euler/BAOAB)."""
        if self._energy is None:
            self._refresh()
        return self._energy

    @property
    def loss(self) -> torch.Tensor:
        """½ Σ (y − f)² per replica at the current point (float64)."""
        if self._loss is None:
            self._refresh()
        return self._loss


class _Base(CachedEnergy):
    name = ""

    def __init__(self, target, A0, y, step_size: float, generator: torch.Generator):
        if step_size is None or not math.isfinite(step_size) or step_size <= 0:
            raise ConfigError(f"step_size must be a positive finite number for sampler {self.name!r}, got {step_size!r}")
        self.target, self.A0, self.y = target, A0, y
        self.h = float(step_size)
        self.T = float(target.temperature)
        self.gen = generator
        self.params: list[torch.Tensor] = []
        self._energy: torch.Tensor | None = None
        self._loss: torch.Tensor | None = None
        # targets may skip the float64 energy sums on steps that only need the gradient
        self._skip_energy_ok = "need_energy" in inspect.signature(target.potential_and_grad).parameters

    def _eval(self, params, need_energy=True):
        if self._skip_energy_ok:
            return self.target.potential_and_grad(params, self.A0, self.y, need_energy=need_energy)
        return self.target.potential_and_grad(params, self.A0, self.y)

    def start(self, params):
        """Set the current point (and derived caches)."""
        self.params = [p.clone() for p in params]
        self._energy, self._grad, self._loss = self._eval(self.params)

    def state(self) -> dict:
        return {"params": [p.clone() for p in self.params]}

    def load_state(self, state: dict) -> None:
        self.start(state["params"])

    def acceptance(self):
        return None

    def advance(self, n: int) -> None:
        """``n`` steps."""
        for _ in range(n):
            self.step()


class EulerSampler(_Base):
    """The papers' update θ ← θ − η∇U + sqrt(2ηT) ξ."""

    name = "euler"

    def step(self) -> None:
        _, grads, _ = self._eval(self.params, need_energy=False)
        c = math.sqrt(2.0 * self.h * self.T)
        for p, g in zip(self.params, grads):
            p.add_(g, alpha=-self.h).add_(_noise(p, self.gen), alpha=c)
        self._energy = self._loss = None


class BAOABSampler(_Base):
    """Underdamped Langevin with unit mass and friction γ, BAOAB splitting.

    The O step is exact: p ← e^{−γh} p + sqrt(T (1 − e^{−2γh})) ξ. Momenta start at N(0, T).
    ``friction=None`` is :func:`finwidth.simulate.guidance.default_friction` of the target's precisions.
    """

    name = "baoab"

    def __init__(self, target, A0, y, step_size, generator, *, friction: float | None = None):
        super().__init__(target, A0, y, step_size, generator)
        if friction is None:
            from finwidth.simulate.guidance import default_friction

            friction = default_friction(target.precisions, self.T)
        if not math.isfinite(friction) or friction <= 0:
            raise ConfigError(f"friction must be positive and finite, got {friction!r}")
        self.gamma = float(friction)
        self.c1 = math.exp(-self.gamma * self.h)
        self.c2 = math.sqrt(self.T * (1.0 - self.c1 * self.c1))
        self.momenta: list[torch.Tensor] = []

    def start(self, params, momenta=None):
        super().start(params)
        if momenta is None:
            momenta = [_noise(p, self.gen).mul_(math.sqrt(self.T)) for p in self.params]
        self.momenta = [m.clone() for m in momenta]

    def state(self):
        return {"params": [p.clone() for p in self.params], "momenta": [m.clone() for m in self.momenta]}

    def load_state(self, state):
        self.start(state["params"], state["momenta"])

    def step(self) -> None:
        self.advance(1)

    def advance(self, n: int) -> None:
        """``n`` BAOAB steps. The closing half-kick of one step and the opening half-kick of the
        next are applied as one kick (the momenta in between are never observed), and the O step
        is one pass, p ← lerp(p, ξ', 1 − c1) with ξ' ~ N(0, c2²/(1 − c1)²): four passes over the
        weights per step instead of six. Between calls the state is the standard one."""
        h, h2 = self.h, 0.5 * self.h
        w = 1.0 - self.c1
        lerp = w > 1e-6  # else c2/w loses precision: two passes
        for m, g in zip(self.momenta, self._grad):
            m.add_(g, alpha=-h2)                                  # B (opening half)
        for k in range(n):
            for p, m in zip(self.params, self.momenta):
                p.add_(m, alpha=h2)                               # A
                if lerp:                                          # O
                    m.lerp_(_noise(m, self.gen, std=self.c2 / w), w)
                else:
                    m.mul_(self.c1).add_(_noise(m, self.gen), alpha=self.c2)
                p.add_(m, alpha=h2)                               # A
            _, self._grad, _ = self._eval(self.params, need_energy=False)
            kick = h2 if k == n - 1 else h                        # B (closing half + next opening)
            for m, g in zip(self.momenta, self._grad):
                m.add_(g, alpha=-kick)
        self._energy = self._loss = None


class MALASampler(_Base):
    """Metropolis-adjusted Langevin: Euler proposal, per-replica accept/reject (exact)."""

    name = "mala"

    def __init__(self, target, A0, y, step_size, generator):
        super().__init__(target, A0, y, step_size, generator)
        self.n_accepted = None
        self.n_proposed = 0

    def start(self, params, n_accepted=None, n_proposed=0):
        super().start(params)
        R = self.params[0].shape[0]
        self.n_accepted = (torch.zeros(R, dtype=torch.float64) if n_accepted is None
                           else n_accepted.clone().to(torch.float64).cpu())
        self.n_proposed = int(n_proposed)

    def state(self):
        return {"params": [p.clone() for p in self.params], "n_accepted": self.n_accepted.clone(),
                "n_proposed": self.n_proposed}

    def load_state(self, state):
        self.start(state["params"], state["n_accepted"], state["n_proposed"])

    def step(self) -> None:
        h, T = self.h, self.T
        c = math.sqrt(2.0 * h * T)
        xis = [_noise(p, self.gen) for p in self.params]
        prop = [p - h * g + c * xi for p, g, xi in zip(self.params, self._grad, xis)]
        U1, g1, loss1 = self._eval(prop)
        # log q(θ|θ') − log q(θ'|θ), written without cancellation:
        # −(h/4T)‖g+g'‖² + (sqrt(2h/T)/2) ξ·(g+g')
        R = U1.shape[0]
        sq = torch.zeros(R, dtype=torch.float64, device=U1.device)
        cross = torch.zeros_like(sq)
        for g0, gp, xi in zip(self._grad, g1, xis):
            s = (g0 + gp).double().flatten(1)
            sq += s.pow(2).sum(-1)
            cross += (s * xi.double().flatten(1)).sum(-1)
        log_alpha = -(U1 - self.energy) / T - (h / (4 * T)) * sq + 0.5 * math.sqrt(2 * h / T) * cross
        u = _streams(self.gen, R).uniform(U1.device)
        accept = torch.log(u) < log_alpha
        accept &= torch.isfinite(U1)
        for i in range(len(self.params)):
            shape = (R,) + (1,) * (self.params[i].dim() - 1)
            a = accept.view(shape)
            self.params[i] = torch.where(a, prop[i], self.params[i])
            self._grad[i] = torch.where(a, g1[i], self._grad[i])
        self._energy = torch.where(accept, U1, self._energy)
        self._loss = torch.where(accept, loss1, self._loss)
        self.n_accepted += accept.double().cpu()
        self.n_proposed += 1

    def acceptance(self):
        """Per-replica acceptance rate so far (numpy array)."""
        return (self.n_accepted / max(self.n_proposed, 1)).numpy()


SAMPLERS = {"euler": EulerSampler, "baoab": BAOABSampler, "mala": MALASampler}


def make_sampler(name, target, A0, y, step_size, generator, *, friction=None):
    """Construct a sampler by name (``"euler"``, ``"baoab"``, ``"mala"``)."""
    if name not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {sorted(SAMPLERS) + ['gibbs']}, got {name!r}")
    if name == "baoab":
        return BAOABSampler(target, A0, y, step_size, generator, friction=friction)
    if friction is not None:
        raise ConfigError(f"friction applies to sampler='baoab' only, not {name!r}")
    return SAMPLERS[name](target, A0, y, step_size, generator)
