"""Which simulated rows of the reproductions pass the convergence rule of finwidth.experiments.verdicts?

Reads the tables under docs/data/reproductions that carry the R̂ and ESS of the test-error trace
(``rhat_test``, ``ess_test``) and prints, per table, the rows that fail R̂ ≤ RHAT_MAX and
ESS ≥ ESS_MIN, as a markdown list (the "Convergence of the runs" section of docs/reproductions.md).

Run: python examples/reproductions/convergence_audit.py
"""

from __future__ import annotations

import csv
from pathlib import Path

from finwidth.experiments.verdicts import ESS_MIN, RHAT_MAX, converged

DATA = Path(__file__).resolve().parents[2] / "docs" / "data" / "reproductions"
TABLES = {  # table: the columns that name a row
    "depth_sim.csv": ("run", "data", "L", "N"),
    "nonodd_sim.csv": ("run", "data", "L", "N"),
    "readout_prior_sim.csv": ("run", "data", "N", "lambda_L"),
    "fig1a_breakdown_runs.csv": ("part", "N1", "T", "sampler", "n_steps"),
}


def main() -> None:
    print(f"Rule: R̂(ε_g) ≤ {RHAT_MAX:g} and ESS(ε_g) ≥ {ESS_MIN:g}.\n")
    for name, label in TABLES.items():
        rows = list(csv.DictReader(open(DATA / name)))
        bad = [r for r in rows if not converged(float(r["rhat_test"]), float(r["ess_test"]))]
        print(f"- `{name}`: {len(rows) - len(bad)} of {len(rows)} rows pass; not converged:")
        for r in bad:
            what = ", ".join(f"{k} = {r[k]}" for k in label)
            print(f"  - {what}: R̂ {float(r['rhat_test']):.2f}, ESS {float(r['ess_test']):.0f}, "
                  f"deviation {100 * float(r['rel_dev']):+.1f}%")


if __name__ == "__main__":
    main()
