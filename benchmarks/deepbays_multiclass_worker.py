"""Times deepbays 0.1.11's ``FC_1HL_multiclass`` on one data set, in deepbays' side environment (never
finwidth's): called by ``bench_multioutput.py`` as a subprocess.

    PYTHONPATH=/tmp/deepbays-stubs /tmp/deepbays-venv/bin/python deepbays_multiclass_worker.py IN.npz OUT.json

IN.npz holds X, Y, N1, T; OUT.json gets the wall and CPU seconds of preprocess + optimize, deepbays' Q and
its converged flag. The class is run through ``tests/fixtures/deepbays_multiclass/adapter.py`` (its
``preprocess`` raises as shipped; the adapter says why); finwidth is not imported.
"""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import sys
import time
import warnings

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures" / "deepbays_multiclass"))

from adapter import prepare  # noqa: E402
from deepbays.rkgp import FC_1HL_multiclass  # noqa: E402


def main(src, dst):
    torch.set_num_threads(1)
    d = np.load(src)
    X, Y, N1, T = d["X"], d["Y"], int(d["N1"]), float(d["T"])
    t, c = time.perf_counter(), time.process_time()
    mdl = FC_1HL_multiclass(N1, Y.shape[1], T, l0=1.0, l1=1.0, act="erf")
    prepare(mdl, X, Y)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fsolve's "not making good progress": the caller compares Q instead
        mdl.optimize()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    out = {"wall": wall, "cpu": cpu, "Q": np.asarray(mdl.optQ, dtype=float).tolist(),
           "converged": bool(mdl.converged), "torch": torch.__version__, "threads": torch.get_num_threads()}
    pathlib.Path(dst).write_text(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:3])
