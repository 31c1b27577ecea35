"""The ``finwidth`` command line.

Subcommands: ``theory`` (one fit), ``simulate`` (one posterior sampling run), ``sweep run|status|
collect|plot`` (declarative sweeps from a TOML spec, resumable), ``data fetch`` (download the original
data files, checked), ``demo`` (theory vs sampled networks on MNIST 0/1). ``finwidth COMMAND --help`` documents each.

Exit codes: 0 success; 1 some sweep tasks failed (their errors are printed and kept in
``STORE/failed``); 2 a user mistake (bad arguments, an invalid spec, a missing or corrupt data set:
``ConfigError``, ``DataError``, pydantic validation errors), reported in one message without a
traceback; 3 a computation gave no verified answer (``ConvergenceError``, ``DivergenceError``), with
what to try; 130 interrupted. Anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED_TASKS, EXIT_USAGE, EXIT_NO_ANSWER, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_EPILOG = """exit codes: 0 ok; 1 some sweep tasks failed; 2 bad input (arguments, spec, data);
3 no verified answer (solver did not converge, simulation diverged); 130 interrupted.
Conventions (priors are precisions, T the likelihood variance): docs/conventions.md."""


def _fmt(value: Any, digits: int = 5) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _print_table(headers: Sequence[str], rows: Sequence[Sequence[str]], out=None) -> None:  # noqa: ANN001
    out = out or sys.stdout
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print("  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)), file=out)


# ---- one task from command-line options ------------------------------------------------------------
def _add_task_options(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    src = d.add_mutually_exclusive_group()
    src.add_argument("--dataset", default=None, help="data set read from disk: mnist or cifar10 (default mnist)")
    src.add_argument("--teacher", default=None, help="synthetic teacher kind instead of a data set (see finwidth.data.teacher)")
    d.add_argument("--n-features", type=int, default=None, help="input dimension N_0 of a teacher")
    d.add_argument("--classes", type=int, nargs="+", default=None, help="the classes (default 0 1; with --labels onehot or onehot_centered, one output each)")
    d.add_argument("--preset", default="paper", help="preprocessing preset (default: paper)")
    d.add_argument("--labels", default="01", help="label coding: 01, pm1, onehot (D outputs), ... (default 01)")
    d.add_argument("-P", "--n-train", type=int, default=100, help="training set size P (default 100)")
    d.add_argument("--n-test", type=int, default=1000, help="test set size P_test (default 1000)")
    d.add_argument("--data-seed", type=int, default=0, help="seed of the data subset / teacher (default 0)")
    d.add_argument("--data-root", default=None, help="folder with the data sets (default $FINWIDTH_DATA, then the search path)")
    n = p.add_argument_group("network and posterior")
    n.add_argument("--activation", default="erf", help="activation name (default erf)")
    n.add_argument("-N", "--width", type=int, nargs="+", default=[100],
                   help="hidden width(s): one value N_1 for every layer, or N_1..N_L (default 100)")
    n.add_argument("-L", "--depth", type=int, default=None, help="depth L when one width is given (default 1)")
    n.add_argument("--prior", type=float, default=1.0, help="prior precision λ of every layer (default 1)")
    n.add_argument("--input-prior", type=float, default=None, help="λ_0, overriding --prior")
    n.add_argument("--readout-prior", type=float, default=None, help="λ_L, overriding --prior")
    n.add_argument("--bias", type=float, default=None, help="bias prior variance σ_b² of every layer (default: no biases)")
    n.add_argument("-T", "--temperature", type=float, default=1e-3, help="temperature T (default 1e-3)")
    c = p.add_argument_group("CNN (a two-layer ConvNetwork; --width is then the channels C)")
    c.add_argument("--patch", type=int, nargs="+", default=None, metavar="K",
                   help="patch size: K (1-D windows) or KH KW (2-D windows); makes the network a CNN")
    c.add_argument("--image-shape", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="image height and width, H·W = N_0 (needed by 2-D windows; e.g. 28 28 for MNIST)")
    c.add_argument("--stride", type=int, nargs="+", default=None, metavar="S",
                   help="stride: S or SH SW (default: the patch size, non-overlapping)")
    c.add_argument("--readout", default=None, choices=["local", "pooled"],
                   help="local (one readout weight per patch and channel, default) or pooled")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")


def _add_sim_options(p: argparse.ArgumentParser) -> None:
    s = p.add_argument_group("simulation")
    s.add_argument("--sampler", default="baoab", help="euler, baoab, mala or gibbs (default baoab)")
    s.add_argument("--step-size", type=float, default=0.1, help="step size in Langevin time (default 0.1)")
    s.add_argument("--steps", type=int, default=4000, help="steps per replica, burn-in included (default 4000)")
    s.add_argument("--burn-in", type=int, default=None, help="burn-in steps (default: the sampler's choice)")
    s.add_argument("--replicas", type=int, default=8, help="independent chains, batched (default 8)")
    s.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    s.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="simulation precision")
    s.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")


def _task_dict(args: argparse.Namespace, models: Sequence[str], simulation: dict[str, Any] | None) -> dict[str, Any]:
    if args.teacher is not None:
        data: dict[str, Any] = {"teacher": args.teacher, "n_features": args.n_features}
    else:
        data = {"name": args.dataset or "mnist", "classes": args.classes if args.classes is not None else [0, 1]}
    data.update(preset=args.preset, labels=args.labels, n_train=args.n_train, n_test=args.n_test, seed=args.data_seed)
    network: dict[str, Any] = {"activation": args.activation, "prior": args.prior}
    if len(args.width) == 1:
        network["width"] = args.width[0]
        if args.depth is not None:
            network["depth"] = args.depth
    else:
        network["widths"] = args.width
        if args.depth is not None:
            network["depth"] = args.depth
    for key in ("input_prior", "readout_prior", "bias"):
        if getattr(args, key) is not None:
            network[key] = getattr(args, key)
    conv = _conv_table(args)
    if conv is not None:
        network["conv"] = conv
    raw: dict[str, Any] = {"temperature": args.temperature, "data": data, "network": network, "theory": {"models": list(models)}}
    if simulation is not None:
        raw["simulation"] = simulation
    return raw


def _conv_table(args: argparse.Namespace) -> dict[str, Any] | None:
    """The ``[network.conv]`` table of the CNN options, or None for a fully connected network."""
    from finwidth.errors import ConfigError

    if args.patch is None:
        given = [f"--{k.replace('_', '-')}" for k in ("image_shape", "stride", "readout") if getattr(args, k) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: CNN options; give the patch size with --patch")
        return None
    for name in ("patch", "stride"):
        value = getattr(args, name)
        if value is not None and len(value) not in (1, 2):
            raise ConfigError(f"--{name} takes one value (1-D windows) or two (height, width), not {len(value)}")
    if len(args.patch) == 2 and args.image_shape is None:
        raise ConfigError("--patch KH KW (2-D windows) needs --image-shape H W (e.g. 28 28 for MNIST)")
    conv: dict[str, Any] = {"patch_size": args.patch[0] if len(args.patch) == 1 else list(args.patch)}
    if args.image_shape is not None:
        conv["image_shape"] = list(args.image_shape)
    if args.stride is not None:
        conv["stride"] = args.stride[0] if len(args.stride) == 1 else list(args.stride)
    if args.readout is not None:
        conv["readout"] = args.readout
    return conv


def _one_task(args: argparse.Namespace, raw: dict[str, Any]) -> dict[str, Any]:
    from pydantic import ValidationError

    from finwidth.errors import ConfigError
    from finwidth.experiments.spec import TaskConfig, format_validation_error
    from finwidth.experiments.tasks import run_task

    try:
        config = TaskConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "in the command-line options")) from None
    _set_data_root(args.data_root)
    out = run_task(config, progress=not args.json and sys.stderr.isatty())
    return {"config": config.model_dump(mode="json"), "results": out.values}


def _set_data_root(root: str | None) -> None:
    if root is not None:
        from finwidth.errors import DataError

        if not Path(root).is_dir():
            raise DataError(f"--data-root {root} is not a folder")
        os.environ["FINWIDTH_DATA"] = str(Path(root).resolve())  # read by the loaders, inherited by workers


def _theory_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for model in ("nngp", "rkgp", "rkgp_product", "rkgp_nested"):
        if model not in results:
            continue
        r = results[model]
        if "error" in r:
            rows.append([model, "no answer: " + r["error"].splitlines()[0], "", "", "", ""])
            continue
        q, crit = r.get("qbar"), r.get("r")
        if q is not None and len(q) and isinstance(q[0], list) and "qbar_L_matrix" not in r:
            qcol = f"tr/Ñ {_fmt(r['qbar_L'])} (Ñ = {len(q)})"  # a CNN's Ñ×Ñ Q: its global mode
        elif "qbar_L_matrix" in r:  # D outputs: tr Q_L / D, and the eigenvalues of R
            qcol, crit = f"tr/D {_fmt(r['qbar_L'])}", ", ".join(_fmt(v, 3) for v in crit)
        else:
            qcol = "1 (infinite width)" if model == "nngp" else ", ".join(_fmt(v) for v in q)
        total = _fmt(r["total"]) + (f" (acc {_fmt(r['accuracy'], 3)})" if r.get("accuracy") is not None else "")
        rows.append([model, total, _fmt(r["bias"]), _fmt(r["variance"]), qcol, crit if isinstance(crit, str) else _fmt(crit)])
    return rows


def cmd_theory(args: argparse.Namespace) -> int:
    res = _one_task(args, _task_dict(args, args.models, None))
    if args.json:
        print(json.dumps(res, indent=1))
        return EXIT_OK
    _print_table(["model", "eps_g", "bias", "variance", "Qbar", "r"], _theory_rows(res["results"]))
    failed = [m for m in args.models if "error" in res["results"].get(m, {})]
    if failed:
        print(f"finwidth: {', '.join(failed)} gave no verified answer (see the message above)", file=sys.stderr)
        return EXIT_NO_ANSWER
    return EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    sim = {"sampler": args.sampler, "step_size": args.step_size, "n_steps": args.steps, "burn_in": args.burn_in,
           "replicas": args.replicas, "device": args.device, "dtype": args.dtype, "seed": args.seed}
    res = _one_task(args, _task_dict(args, args.models, sim))
    s = res["results"]["sim"]
    if args.json:
        print(json.dumps(res, indent=1))
        return EXIT_NO_ANSWER if "error" in s else EXIT_OK
    if "error" in s:
        print(f"finwidth: the simulation diverged: {s['error']}", file=sys.stderr)
        return EXIT_NO_ANSWER
    names = ("total", "bias", "variance", "train_error", "qbar_readout") + (("accuracy",) if "accuracy" in s else ())
    rows = [[name, f"{_fmt(s[name])} ± {_fmt(s.get(name + '_stderr'), 2)}"] for name in names]
    rows += [[name, _fmt(s.get(name))] for name in ("rhat", "ess", "acceptance") if s.get(name) is not None]
    rows.append(["wall time (s)", _fmt(s["wall_s"], 3)])
    _print_table(["simulation", "value ± s.e."], rows)
    if args.models:
        print()
        _print_table(["model", "eps_g", "bias", "variance", "Qbar", "r"], _theory_rows(res["results"]))
    return EXIT_OK


# ---- sweeps ----------------------------------------------------------------------------------------------
def _store_and_spec(target: str, store: str | None):  # noqa: ANN202
    from finwidth.experiments.spec import load_spec
    from finwidth.experiments.store import ResultStore

    path = Path(target)
    if path.is_dir():
        rs = ResultStore(path)
        return rs, rs.load_spec()
    spec = load_spec(path)
    return ResultStore(store or Path("runs") / spec.name), spec


def cmd_sweep_run(args: argparse.Namespace) -> int:
    from finwidth.experiments.runner import run_sweep
    from finwidth.experiments.spec import load_spec

    slurm = _slurm_options(args)  # validated before the spec is even read
    spec = load_spec(args.spec)
    store = args.store or str(Path("runs") / spec.name)
    _set_data_root(args.data_root)
    n = len(spec.tasks())
    print(f"sweep {spec.name!r}: {n} tasks → {store}", file=sys.stderr)
    report = run_sweep(spec, store, task_fn=args.task, executor=args.executor, max_workers=args.workers,
                       scheduler=args.scheduler, slurm=slurm, progress=False if args.no_progress else "auto",
                       fail_fast=args.fail_fast,
                       worker_timeout=args.worker_timeout, scheduler_timeout=args.scheduler_timeout)
    print(report.summary(), file=sys.stderr)
    return EXIT_OK if not report.failed else EXIT_FAILED_TASKS


_SLURM_FLAGS = {"partition": "partition", "account": "account", "cores": "cores", "memory": "memory",
                "walltime": "walltime", "jobs": "jobs", "interface": "interface", "prologue": "prologue",
                "extra": "job_extra", "python": "python", "log_dir": "log_directory", "retries": "retries"}


def _slurm_options(args: argparse.Namespace):  # noqa: ANN202 - SlurmOptions | None
    given = {field: getattr(args, f"slurm_{flag}") for flag, field in _SLURM_FLAGS.items()
             if getattr(args, f"slurm_{flag}") is not None}
    if args.executor != "slurm":
        if given:
            from finwidth.errors import ConfigError

            flags = ", ".join("--slurm-" + f.replace("_", "-") for f, fld in _SLURM_FLAGS.items() if fld in given)
            raise ConfigError(f"{flags} apply to --executor slurm only")
        return None
    from finwidth.errors import ConfigError
    from finwidth.experiments.cluster import slurm_options

    try:
        return slurm_options(given)
    except ConfigError as exc:  # name the flags, not the fields
        text = str(exc)
        for flag, fld in _SLURM_FLAGS.items():
            text = text.replace(f"slurm.{fld}:", f"--slurm-{flag.replace('_', '-')}:")
        raise ConfigError(text) from None


def cmd_sweep_status(args: argparse.Namespace) -> int:
    from finwidth.experiments.runner import sweep_status

    store, spec = _store_and_spec(args.target, args.store)
    st = sweep_status(spec, store)
    if args.json:
        print(json.dumps(st, indent=1))
    else:
        print(f"sweep {st['name']!r} in {st['store']}: {st['done']}/{st['total']} done, "
              f"{len(st['pending'])} pending, {len(st['failed'])} failed")
        for key, err in st["failed"].items():
            print(f"  failed {key}: {err.splitlines()[0] if err else ''}")
        if st["extra"]:
            print(f"  ({len(st['extra'])} results in the store belong to no task of this spec)")
    return EXIT_OK if not st["failed"] else EXIT_FAILED_TASKS


def cmd_sweep_collect(args: argparse.Namespace) -> int:
    from finwidth.experiments.store import write_table

    store, spec = _store_and_spec(args.target, args.store)
    frame = store.collect(keys=[t.key for t in spec.tasks()])
    if frame.empty:
        print(f"finwidth: no completed tasks in {store.root} yet", file=sys.stderr)
        return EXIT_FAILED_TASKS
    out = Path(args.out) if args.out else store.root / "results.csv"
    write_table(frame, out)
    print(f"{len(frame)} rows, {len(frame.columns)} columns → {out}")
    return EXIT_OK


def cmd_sweep_plot(args: argparse.Namespace) -> int:
    from finwidth.experiments.plots import plot_sweep

    store, spec = _store_and_spec(args.target, args.store)
    frame = store.collect(keys=[t.key for t in spec.tasks()])
    out = Path(args.out) if args.out else store.root / "figure"
    title = args.title
    if title is None and not frame.empty:
        from finwidth.experiments.plots import describe_task

        title = f"{spec.name}: {describe_task(frame, args.x)}"
    paths = plot_sweep(frame, out, x=args.x, formats=args.format.split(","), decomposition=args.decomposition,
                       title=title)
    for p in paths:
        print(p)
    return EXIT_OK


def cmd_data_fetch(args: argparse.Namespace) -> int:
    from finwidth.data import fetch

    root = fetch(args.name, args.root, mirrors=args.mirror or None, timeout=args.timeout, quiet=args.quiet)
    print(root)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from finwidth.experiments.demo import run_demo

    _set_data_root(args.data_root)
    return run_demo(out=Path(args.out), quick=args.quick, workers=args.workers,
                    progress=False if args.no_progress else "auto")


# ---- parser ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from finwidth import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="finwidth",
        description="Bayesian deep networks beyond the infinite-width limit: renormalised-kernel theory "
        "and posterior sampling of finite-width networks.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    parser.add_argument("--version", action="version", version=f"finwidth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("theory", help="fit the theory for one network and data set", epilog=_EPILOG, formatter_class=fmt,
                       description="Fit NNGP (infinite width) and/or RKGP (finite width) on one data set and print "
                       "the test error ε_g = bias + variance, the order parameters Q̄ and the width criterion r.")
    _add_task_options(p)
    p.add_argument("--models", nargs="+", default=["nngp", "rkgp"],
                   choices=["nngp", "rkgp", "rkgp_product", "rkgp_nested"], help="theories (default nngp rkgp)")
    p.set_defaults(func=cmd_theory)

    p = sub.add_parser("simulate", help="sample the posterior of one finite-width network", epilog=_EPILOG,
                       formatter_class=fmt, description="Sample real finite-width networks from their Gibbs posterior "
                       "and print the test error with standard errors, the readout-norm Q̄ and diagnostics.")
    _add_task_options(p)
    _add_sim_options(p)
    p.add_argument("--models", nargs="*", default=[], choices=["nngp", "rkgp", "rkgp_product", "rkgp_nested"],
                   help="theories to print beside the simulation (default none)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("sweep", help="run, inspect, collect and plot sweeps from a TOML spec", epilog=_EPILOG,
                       formatter_class=fmt, description="Declarative sweeps: see docs/experiments.md and examples/.")
    ssub = p.add_subparsers(dest="sweep_command", metavar="ACTION", required=True)
    r = ssub.add_parser("run", help="run the tasks of a spec that are not done yet (resumable)", epilog=_EPILOG,
                        formatter_class=fmt)
    r.add_argument("spec", help="TOML sweep spec")
    r.add_argument("--store", default=None, help="result store folder (default runs/<sweep name>)")
    r.add_argument("--executor", default=None, choices=["process", "thread", "serial", "dask", "slurm"],
                   help="where tasks run (default a local process pool, one worker per core); slurm: Slurm jobs "
                   "started from here, one Dask worker each (options --slurm-*)")
    r.add_argument("--workers", type=int, default=None, help="process/thread pool size (default: the number of cores)")
    r.add_argument("--scheduler", default=None, help="Dask scheduler address, e.g. tcp://host:8786 (with --executor dask)")
    r.add_argument("--task", default=None, help="task function as package.module:function (default the built-in one)")
    r.add_argument("--data-root", default=None, help="folder with the data sets (default $FINWIDTH_DATA)")
    r.add_argument("--fail-fast", action="store_true", help="stop at the first failed task")
    r.add_argument("--worker-timeout", type=float, default=600.0, help="dask/slurm: seconds tasks may wait with no "
                   "worker (Slurm jobs waiting in the queue do not count) before they fail (default 600)")
    r.add_argument("--scheduler-timeout", type=float, default=120.0,
                   help="dask/slurm: seconds the scheduler may stay silent before the sweep ends (default 120)")
    g = r.add_argument_group("slurm jobs (with --executor slurm; see docs/experiments.md)")
    g.add_argument("--slurm-partition", default=None, help="partition (queue); default the cluster's default")
    g.add_argument("--slurm-account", default=None, help="account to charge")
    g.add_argument("--slurm-cores", type=int, default=None, help="CPU cores per job = threads of its worker (default 1)")
    g.add_argument("--slurm-memory", default=None, help="memory per job, e.g. 4GB (default 4GB)")
    g.add_argument("--slurm-walltime", default=None, help="time limit per job, [D-]HH:MM:SS (default 01:00:00)")
    g.add_argument("--slurm-jobs", type=int, default=None, help="at most this many jobs at once (default 4)")
    g.add_argument("--slurm-interface", default=None, help="network interface of scheduler and workers, e.g. ib0")
    g.add_argument("--slurm-prologue", action="append", default=None, metavar="LINE",
                   help="shell line run in each job before its worker starts (repeatable), e.g. 'source .venv/bin/activate'")
    g.add_argument("--slurm-extra", action="append", default=None, metavar="OPTION",
                   help="further sbatch option (repeatable), e.g. --slurm-extra=--gres=gpu:1")
    g.add_argument("--slurm-python", default=None, help="the workers' Python (default: this interpreter)")
    g.add_argument("--slurm-log-dir", default=None, help="job logs (default STORE/cluster/logs)")
    g.add_argument("--slurm-retries", type=int, default=None,
                   help="re-runs of a task whose worker died before it fails (default 2)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar on a terminal, none in logs; it moves within each simulation)")
    r.set_defaults(func=cmd_sweep_run)
    for name, helptext, func in (
        ("status", "how many tasks are done, pending, failed", cmd_sweep_status),
        ("collect", "gather results into one table (CSV or Parquet)", cmd_sweep_collect),
        ("plot", "plot ε_g (and Q̄) against a swept axis (PNG, SVG, PDF)", cmd_sweep_plot),
    ):
        q = ssub.add_parser(name, help=helptext, epilog=_EPILOG, formatter_class=fmt)
        q.add_argument("target", help="a result store folder, or a TOML spec (then --store or runs/<name>)")
        q.add_argument("--store", default=None, help="result store when TARGET is a spec")
        q.set_defaults(func=func)
        if name == "status":
            q.add_argument("--json", action="store_true", help="print JSON")
        elif name == "collect":
            q.add_argument("-o", "--out", default=None, help="table file, .csv or .parquet (default STORE/results.csv)")
        else:
            q.add_argument("--x", default="N1", help="x axis: N1, lambda_L, P, L, T or a column (default N1)")
            q.add_argument("-o", "--out", default=None, help="figure path without suffix (default STORE/figure)")
            q.add_argument("--format", default="png", help="comma-separated: png,svg,pdf (default png)")
            q.add_argument("--decomposition", action="store_true", help="add bias and variance panels")
            q.add_argument("--title", default=None, help="figure title (default: the sweep name, then the data set, P, T and activation the tasks share)")

    p = sub.add_parser("data", help="download the original MNIST / CIFAR-10 files (checked)", epilog=_EPILOG,
                       formatter_class=fmt, description="Data sets are read from disk, never downloaded at run time "
                       "(docs/data.md); this is the explicit way to get them.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = dsub.add_parser("fetch", help="download a data set and verify its pinned SHA-256", epilog=_EPILOG,
                        formatter_class=fmt, description="Download the original files from the canonical mirrors "
                        "into ROOT (MNIST: ROOT/mnist/*.gz, 11.6 MB; CIFAR-10: ROOT/cifar-10-binary.tar.gz, 170 MB, "
                        "not extracted), resuming an interrupted download; a file is moved into place only after "
                        "its size and SHA-256 match. Prints ROOT, which load(..., root=ROOT) and --data-root accept.")
    q.add_argument("name", choices=["mnist", "cifar10"], help="data set")
    q.add_argument("--root", default=None, help="destination folder (default: the first folder of $FINWIDTH_DATA, "
                   "else ~/.cache/finwidth; both are searched by the loader)")
    q.add_argument("--mirror", action="append", default=None, metavar="URL",
                   help="base URL to download from instead of the canonical mirrors (repeatable, tried in order)")
    q.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a server (default 60)")
    q.add_argument("--quiet", action="store_true", help="no progress lines")
    q.set_defaults(func=cmd_data_fetch)

    p = sub.add_parser("demo", help="theory vs sampled networks on MNIST 0/1 (table + plot)", epilog=_EPILOG,
                       formatter_class=fmt, description="One hidden layer, erf, MNIST 0/1 (paper preset), P = 100, "
                       "N_1 in {50, 100, 200, 500, 1000}, T = 1e-3, λ = 1: finite- and infinite-width theory and "
                       "short posterior simulations, compared in a table and a plot. Resumable: results are kept "
                       "in OUT/store.")
    p.add_argument("--out", default="out/demo", help="output folder (default out/demo)")
    p.add_argument("--quick", action="store_true", help="theory only (seconds), for smoke tests")
    p.add_argument("--data-root", default=None, help="folder with the data sets (default $FINWIDTH_DATA, then the search path)")
    p.add_argument("--workers", type=int, default=None, help="parallel simulations (default: the number of cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: a bar on a terminal, none in logs; it moves within each simulation)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``finwidth`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from finwidth.errors import ConfigError, ConvergenceError, DataError, DivergenceError, FinwidthError

    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover - pydantic is a dependency
        ValidationError = ConfigError  # type: ignore[misc,assignment]  # noqa: N806
    try:
        return int(args.func(args))
    except (ConfigError, DataError) as exc:
        print(f"finwidth: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ValidationError as exc:
        from finwidth.experiments.spec import format_validation_error

        print(f"finwidth: error: {format_validation_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except (ConvergenceError, DivergenceError) as exc:
        print(f"finwidth: no verified answer: {exc}", file=sys.stderr)
        return EXIT_NO_ANSWER
    except FinwidthError as exc:
        print(f"finwidth: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("finwidth: interrupted (a sweep resumes where it stopped: run it again)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into head etc.
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
