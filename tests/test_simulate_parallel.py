"""The fast CPU path of the samplers: triangular input basis, BLAS triangular products, replica
groups on parallel threads with per-replica noise streams. Each cut must change nothing but the
cost: products equal the dense ones, chains do not depend on the grouping, states move between
groupings, and checkpoints of the earlier layout still resume."""

import math

import numpy as np
import pytest
import torch

import finwidth
from finwidth import Network
from finwidth.inputs import InputReduction
from finwidth.simulate.config import RunConfig
from finwidth.simulate.loop import build_run
from finwidth.simulate.networks import BatchedMLP
from finwidth.simulate.samplers import NoiseStreams
from finwidth.simulate.sharded import ShardedSampler
from finwidth.simulate.trapezoid import LowerTrapezoid, blas_trmm_available

torch.set_num_threads(1)


def _lower(P, r, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.tril(torch.randn(P, r, generator=g, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("P,r", [(7, 7), (9, 4), (30, 17), (5, 1)])
def test_lower_trapezoid_products_equal_dense(dtype, P, r):
    assert blas_trmm_available(dtype)
    L = _lower(P, r, dtype)
    lt = LowerTrapezoid(L)
    g = torch.Generator().manual_seed(1)
    W = torch.randn(3, 6, r, generator=g, dtype=dtype)
    D = torch.randn(3, 6, P, generator=g, dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lt.right_mul_t(W), W @ L.T, **tol)
    D0 = D.clone()
    torch.testing.assert_close(lt.right_mul(D), D0 @ L, **tol)
    torch.testing.assert_close(D, D0, rtol=0, atol=0)  # not overwritten unless asked
    torch.testing.assert_close(lt.right_mul(D.transpose(0, 1).contiguous().transpose(0, 1)), D0 @ L, **tol)
    torch.testing.assert_close(lt.right_mul(D, overwrite=True), D0 @ L, **tol)
    # autograd inputs take the dense path (torch.func and autograd see every operation)
    Wg = W.clone().requires_grad_(True)
    (lt.right_mul_t(Wg) ** 2).sum().backward()
    torch.testing.assert_close(Wg.grad, 2 * (W @ L.T) @ L, **tol)


def test_lower_trapezoid_rejects_bad_matrices():
    with pytest.raises(ValueError, match="above the diagonal"):
        LowerTrapezoid(torch.ones(4, 3))
    with pytest.raises(ValueError, match="P >= r"):
        LowerTrapezoid(torch.zeros(2, 3))
    lt = LowerTrapezoid(_lower(5, 3, torch.float64))
    with pytest.raises(ValueError, match="r = 3"):
        lt.right_mul_t(torch.zeros(2, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="P = 5"):
        lt.right_mul(torch.zeros(2, 4, dtype=torch.float64))


@pytest.mark.parametrize("P,N0,rank", [(12, 40, 12), (30, 20, 20), (25, 40, 9)])
def test_lower_input_basis_spans_the_inputs_and_triangularises_them(P, N0, rank):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((P, rank)) @ rng.standard_normal((rank, N0))
    low, svd = InputReduction.from_inputs(X), InputReduction.from_inputs(X, "svd")
    assert low.rank == svd.rank == rank
    B = low.basis
    np.testing.assert_allclose(B.T @ B, np.eye(rank), atol=1e-12)
    np.testing.assert_allclose(B @ B.T, svd.basis @ svd.basis.T, atol=1e-10)  # the same span
    np.testing.assert_allclose(X @ B, low.train_lower, atol=1e-10 * np.abs(X).max())
    assert np.all(np.triu(low.train_lower, 1) == 0) and svd.train_lower is None
    with pytest.raises(finwidth.ConfigError, match="form"):
        InputReduction.from_inputs(X, "qr")


@pytest.mark.parametrize("act,bias", [("erf", None), ("relu", 0.5), ("linear", None)])
def test_model_on_lower_inputs_equals_the_dense_path(act, bias):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((14, 30))
    red = InputReduction.from_inputs(X)
    net = Network([9, 7], act, bias=bias, priors=[1.0, 2.0, 0.5])
    model = BatchedMLP(net, 30, 0.1, first_layer_inputs=red.rank, dtype=torch.float64)
    A_low = torch.as_tensor(red.train_lower)
    A_dense = A_low.clone()
    model.use_lower_inputs(A_low)
    params = model.init_params(3, torch.Generator().manual_seed(0), "prior")
    y = torch.as_tensor(rng.standard_normal(14))
    U1, g1, l1 = model.potential_and_grad(params, A_low, y)
    U2, g2, l2 = model.potential_and_grad(params, A_dense, y)
    torch.testing.assert_close(U1, U2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    # the path other devices take: the declared trapezoid without BLAS (dense products, scale folded)
    model._lower[1]._fn = None
    U3, g3, _ = model.potential_and_grad(params, A_low, y)
    torch.testing.assert_close(U3, U2)
    for a, b in zip(g3, g2):
        torch.testing.assert_close(a, b)
    model.use_lower_inputs(A_low)
    # and the gradient is that of U (autograd on the dense path)
    ps = [p.clone().requires_grad_(True) for p in params]
    U, _ = finwidth.simulate.networks.gibbs_energy(model.forward(ps, A_dense) - y, ps, model.precisions, 0.1)
    auto = torch.autograd.grad(U.sum(), ps)
    for a, b in zip(g1, auto):
        torch.testing.assert_close(a, b)


def _sharded(groups, sampler="baoab", R=5, dtype=torch.float64, seed=3):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((10, 16))
    y = torch.as_tensor(np.tanh(X[:, 0]), dtype=dtype)
    red = InputReduction.from_inputs(X)
    model = BatchedMLP(Network([12], "erf"), 16, 0.05, first_layer_inputs=red.rank, dtype=dtype)
    A0 = torch.as_tensor(red.train_lower, dtype=dtype)
    model.use_lower_inputs(A0)
    streams = NoiseStreams.per_replica([seed * 100 + i for i in range(R)])
    s = ShardedSampler(sampler, model, A0, y, 0.05 if sampler != "mala" else 0.01, streams, groups=groups)
    s.start(model.init_params(R, torch.Generator().manual_seed(seed), "prior"))
    return s


@pytest.mark.parametrize("sampler", ["euler", "baoab", "mala"])
def test_chains_do_not_depend_on_the_grouping(sampler):
    runs = [_sharded(g, sampler) for g in (1, 2, 5)]
    assert [len(s.parts) for s in runs] == [1, 2, 5]
    old = torch.get_num_threads()
    torch.set_num_threads(2)  # two groups run on two threads
    try:
        for s in runs:
            s.advance(40)
    finally:
        torch.set_num_threads(old)
    assert torch.get_num_threads() == old  # the worker settings do not leak
    for s in runs[1:]:
        for a, b in zip(s.params, runs[0].params):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(s.energy, runs[0].energy, rtol=1e-12, atol=1e-12)
        if sampler == "mala":
            np.testing.assert_array_equal(s.acceptance(), runs[0].acceptance())
    for s in runs:
        s.close()


def test_state_moves_between_groupings():
    a, b = _sharded(2), _sharded(3)
    a.advance(10)
    b.load_state(a.state())
    # the runs own separate noise streams (the run state saves them): give b a's positions
    sa = [g.get_state() for part in a.parts for g in part.gen.generators]
    for g, st in zip([g for part in b.parts for g in part.gen.generators], sa):
        g.set_state(st)
    a.advance(15)
    b.advance(15)
    for x, y in zip(a.params, b.params):
        torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    st = a.state()
    assert st["params"][0].shape[0] == 5 and st["momenta"][0].shape[0] == 5


@pytest.mark.slow
@pytest.mark.parametrize("net,scaling,sampler", [
    ("Network([20], 'erf')", "standard", "baoab"),
    ("Network([6, 5], 'relu', bias=0.3)", "standard", "mala"),
    ("ConvNetwork(30, 5, 8, 'erf')", "mean_field", "baoab"),
    ("Network([10], 'tanh')", "mean_field", "euler"),
])
# 300 steps compare traces across thread counts, not posteriors: the chains are short on purpose
@pytest.mark.filterwarnings("ignore::finwidth.errors.NotConvergedWarning")
def test_sample_posterior_is_the_same_on_one_and_two_threads(net, scaling, sampler):
    from finwidth.convnet import ConvNetwork

    rng = np.random.default_rng(4)
    X, Xt = rng.standard_normal((12, 30)), rng.standard_normal((20, 30))
    y, yt = np.tanh(X[:, 0]), np.tanh(Xt[:, 0])
    kw = dict(temperature=0.05, sampler=sampler, step_size=0.2 if sampler == "baoab" else 0.01, n_steps=300,
              record_every=10, replicas=4, X_test=Xt, y_test=yt, seed=9, dtype="float64", scaling=scaling)
    make = lambda: eval(net, {"Network": Network, "ConvNetwork": ConvNetwork})  # noqa: E731
    one = finwidth.sample_posterior(make(), X, y, **kw)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        two = finwidth.sample_posterior(make(), X, y, **kw)
    finally:
        torch.set_num_threads(old)
    for k in one.traces:
        np.testing.assert_allclose(two.traces[k], one.traces[k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert one.config["noise_streams"] == "replica"
    assert one.config["input_basis"] == "lower"


@pytest.mark.filterwarnings("ignore::finwidth.errors.NotConvergedWarning")  # a short run: bit-identical resume, not a result
def test_svd_basis_and_single_noise_stream_run_and_resume(tmp_path):
    """Runs with the SVD input basis and one noise stream for all replicas (the layout of non-CPU
    devices) sample and resume bit-identically, also from a checkpoint without a noise-stream state."""
    rng = np.random.default_rng(5)
    X, Xt = rng.standard_normal((10, 25)), rng.standard_normal((15, 25))
    y, yt = np.tanh(X[:, 0]), np.tanh(Xt[:, 0])
    cfg = RunConfig(temperature=0.05, sampler="baoab", step_size=0.2, n_steps=200, burn_in=None, replicas=3,
                    record_every=5, seed=1, device="cpu", dtype="float64", checkpoint=str(tmp_path / "old.ckpt"),
                    checkpoint_every=100, friction=None, init="normal", input_reduction=True, rao_blackwell=True,
                    scaling="standard", input_basis="svd", noise_streams="single")
    data = {"X": X, "y": y, "X_test": Xt, "y_test": yt}
    net = Network([8], "erf")
    full = build_run(net, data, cfg.replace(checkpoint=None))
    full.initialize()
    full.run()
    assert full.red.train_lower is None and full.noise is None
    half = build_run(net, data, cfg.replace(n_steps=200))
    half.initialize()
    half.cfg = half.cfg.replace(n_steps=100)  # stop at the first checkpoint, as a killed run would
    half.run()
    payload = finwidth.simulate.checkpoint.load_checkpoint(tmp_path / "old.ckpt")
    payload["cfg"]["n_steps"] = 200
    payload["run"].pop("noise")
    finwidth.simulate.checkpoint.save_checkpoint(tmp_path / "old.ckpt", payload)
    resumed = finwidth.simulate.resume(tmp_path / "old.ckpt")
    for k in full.recorder.traces:
        np.testing.assert_array_equal(resumed.traces[k], full.recorder.traces[k], err_msg=k)


def test_noise_streams_validate_their_blocks():
    g = [torch.Generator().manual_seed(i) for i in range(2)]
    with pytest.raises(finwidth.ConfigError, match="contiguous, non-empty and start at 0"):
        NoiseStreams(g, [(0, 2), (3, 4)])
    with pytest.raises(finwidth.ConfigError, match="start at 0"):
        NoiseStreams(g, [(1, 2), (2, 4)])
    with pytest.raises(finwidth.ConfigError, match="one generator"):
        NoiseStreams(g, [(0, 2)])
    s = NoiseStreams(g, [(0, 2), (2, 4)])
    with pytest.raises(finwidth.ConfigError, match="align"):
        s.subset(1, 4)
    assert s.subset(2, 4).replicas == 2
    x = s.normal_like(torch.empty(4, 1000))
    assert abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1
    assert not torch.equal(x[0], x[2])
    assert math.isfinite(float(s.uniform("cpu").sum()))


def test_concurrent_runs_restore_the_blas_thread_limits():
    """Sweep workers run samplers concurrently; the process-wide BLAS limit they share must be
    restored when the last one leaves, and a closed sampler still advances every replica."""
    import threading

    from threadpoolctl import ThreadpoolController

    def limits():
        return sorted((m["filepath"], m["num_threads"]) for m in ThreadpoolController().info()
                      if m["user_api"] == "blas")

    runs = [_sharded(2, "euler", seed=s) for s in (1, 2, 3)]
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with ThreadpoolController().limit(limits=2, user_api="blas"):  # the suite runs with 1
            before = limits()
            assert before and all(n == 2 for _, n in before)
            threads = [threading.Thread(target=s.advance, args=(30,)) for s in runs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert limits() == before
    finally:
        torch.set_num_threads(old)
    ref = _sharded(1, "euler", seed=1)
    ref.advance(30)
    torch.testing.assert_close(runs[0].params[0], ref.params[0], rtol=1e-12, atol=1e-12)
    runs[0].close()
    runs[0].advance(5)
    ref.advance(5)
    torch.testing.assert_close(runs[0].params[0], ref.params[0], rtol=1e-12, atol=1e-12)


def test_one_group_runs_scipy_blas_on_torch_threads():
    """With one replica group (``torch.set_num_threads(1)``, or R = 1) the triangular products in
    scipy's BLAS must not use more threads than torch: single-threaded benchmarks and runs beside
    other jobs depend on it. The limit holds inside the group's work and is restored after."""
    from threadpoolctl import ThreadpoolController

    def limits():
        return [m["num_threads"] for m in ThreadpoolController().info() if m["user_api"] == "blas"]

    s = _sharded(1, "euler")
    old = torch.get_num_threads()
    with ThreadpoolController().limit(limits=2, user_api="blas"):
        torch.set_num_threads(1)
        try:
            inside = s._in_workers(lambda part: limits())[0]
            after = limits()
        finally:
            torch.set_num_threads(old)
    assert inside and all(n == 1 for n in inside)
    assert after and all(n == 2 for n in after)
