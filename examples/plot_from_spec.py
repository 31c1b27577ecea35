"""From a sweep spec to a figure: run (or resume) the sweep, collect the table, plot.

    python examples/plot_from_spec.py examples/demo.toml --x N1 --out runs/demo/figure
    python examples/plot_from_spec.py examples/fig1a.toml --theory-only --format png,pdf

``--theory-only`` drops the [simulation] table (seconds instead of hours). The same steps on the
command line: ``finwidth sweep run SPEC``, ``finwidth sweep collect runs/NAME``,
``finwidth sweep plot runs/NAME``.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from finwidth.experiments import ResultStore, parse_spec, run_sweep, write_table
from finwidth.experiments.plots import plot_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("spec", type=Path, help="TOML sweep spec")
    parser.add_argument("--store", type=Path, default=None, help="result store (default runs/<name>[-theory])")
    parser.add_argument("--x", default="N1", help="x axis: N1, P, lambda_L, L, T (default N1)")
    parser.add_argument("--out", type=Path, default=None, help="figure path without suffix (default STORE/figure)")
    parser.add_argument("--format", default="png", help="png,svg,pdf")
    parser.add_argument("--theory-only", action="store_true", help="drop the [simulation] table")
    parser.add_argument("--workers", type=int, default=None, help="local processes (default: all cores)")
    args = parser.parse_args()

    raw = tomllib.loads(args.spec.read_text())
    if args.theory_only:
        raw.pop("simulation", None)
        sweep = raw.setdefault("sweep", {})
        sweep["name"] = sweep.get("name", "sweep") + "-theory"
        # a zip group may name simulation keys that are gone now
        sweep["zip"] = [[k for k in g if not k.startswith("simulation.")] for g in sweep.get("zip", [])]
        sweep["zip"] = [g for g in sweep["zip"] if len(g) > 1]
    spec = parse_spec(raw, source=str(args.spec))
    store = ResultStore(args.store or Path("runs") / spec.name)
    report = run_sweep(spec, store, max_workers=args.workers)
    print(report.summary())
    frame = store.collect(keys=[t.key for t in spec.tasks()])
    print(write_table(frame, store.root / "results.csv"))
    for path in plot_sweep(frame, args.out or store.root / "figure", x=args.x, formats=args.format.split(","),
                           title=spec.description or spec.name):
        print(path)


if __name__ == "__main__":
    main()
