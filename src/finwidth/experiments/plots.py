"""Figures from a collected sweep table (matplotlib, no pyplot: safe on headless workers).

* :func:`plot_errors`: ε_g against one axis (``N1``, ``lambda_L``, ``P``, ``L``, ``T`` or any column):
  theory lines (RKGP solid), the infinite-width NNGP level dashed, simulation points with their
  standard-error bars; optional bias and variance panels beside the total.
* :func:`plot_qbar`: Q̄_L from the theory against the readout-norm estimate from the simulation.
* :func:`plot_sweep`: both, saved as PNG, SVG and/or PDF.

Each group of rows that differ in something other than the x axis (say P = 100 and P = 300, or two
data sets) gets its own colour and legend entry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finwidth.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from matplotlib.figure import Figure

__all__ = ["describe_task", "plot_errors", "plot_qbar", "plot_sweep", "save_figure"]

AXIS_LABELS = {
    "N1": r"hidden width $N_1$",
    "N_min": r"smallest hidden width $N_{\min}$",
    "lambda_L": r"readout prior precision $\lambda_L$",
    "lambda_0": r"input prior precision $\lambda_0$",
    "P": r"training set size $P$",
    "L": r"depth $L$",
    "T": r"temperature $T$",
}
LOG_AXES = {"N1", "N_min", "lambda_L", "lambda_0", "P", "T"}
PART_LABELS = {"total": r"test error $\epsilon_g$", "bias": "bias", "variance": "variance"}
# config columns that are bookkeeping rather than an experimental condition
_NOT_CONDITIONS = {"key", "wall_s", "network.widths", "network.priors", "data.n_train", "data.n_test", "temperature"}
_THEORY_STYLE = {"rkgp": "-", "rkgp_product": "-", "rkgp_nested": "-."}
_FORMATS = ("png", "svg", "pdf")


def _figure_class():  # noqa: ANN202
    try:
        from matplotlib.figure import Figure
    except ImportError:
        from finwidth.errors import MissingDependencyError

        raise MissingDependencyError("plots need matplotlib, which is not installed: pip install 'finwidth[plot]'",
                                     name="matplotlib") from None
    return Figure


def _conditions(frame: pd.DataFrame, x: str) -> list[str]:
    """Config columns (other than x and its aliases) that vary across the table."""
    config_cols = [c for c in frame.columns if c in {"P", "P_test", "T", "L", "N1", "lambda_0", "lambda_L"}
                   or c.startswith(("data.", "network.", "simulation.", "theory."))]
    aliases = {"N1": {"network.widths", "N_min"}, "N_min": {"network.widths", "N1"}, "P": {"data.n_train"},
               "T": {"temperature"}, "L": {"network.widths", "network.priors", "network.bias"},
               "lambda_L": {"network.priors"}, "lambda_0": {"network.priors"}}.get(x, set())
    out = []
    for c in config_cols:
        if c == x or c in aliases or c in _NOT_CONDITIONS or c == "data.N0":
            continue
        if frame[c].astype(str).nunique(dropna=False) > 1:
            out.append(c)
    return out


def _groups(frame: pd.DataFrame, x: str) -> list[tuple[str, pd.DataFrame]]:
    conds = _conditions(frame, x)
    if not conds:
        return [("", frame.sort_values(x))]
    out = []
    for values, sub in frame.groupby(conds, sort=True, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        label = ", ".join(f"{c.split('.')[-1]}={v}" for c, v in zip(conds, values, strict=True))
        out.append((label, sub.sort_values(x)))
    return out


def _models(frame: pd.DataFrame) -> list[str]:
    return [m for m in ("nngp", "rkgp", "rkgp_product", "rkgp_nested") if f"{m}.total" in frame.columns]


def _constant(frame: pd.DataFrame, col: str) -> Any:
    if col not in frame.columns:
        return None
    values = frame[col].dropna().astype(str).unique()
    return frame[col].dropna().iloc[0] if len(values) == 1 else None


def describe_task(frame: pd.DataFrame, x: str | None = None) -> str:
    """What the tasks of a table share, for a figure title: data, P, T, activation (and depth).

    Settings that vary across the table (or are the x axis) are left out: the legend or the axis
    names them. E.g. ``"mnist 0/1, P = 100, T = 0.001, erf"``.
    """
    parts = []
    name, teacher = _constant(frame, "data.name"), _constant(frame, "data.teacher")
    if name is not None:
        classes = _constant(frame, "data.classes")
        try:
            classes = "/".join(str(c) for c in json.loads(classes)) if isinstance(classes, str) else None
        except (TypeError, ValueError):
            classes = None
        parts.append(f"{name} {classes}" if classes else str(name))
    elif teacher is not None:
        n0 = _constant(frame, "data.n_features")
        parts.append(f"{teacher} teacher" + (f" (N_0 = {int(n0)})" if n0 is not None else ""))
    for col, label in (("P", "P"), ("T", "T")):
        value = _constant(frame, col)
        if value is not None and col != x:
            parts.append(f"{label} = {float(value):g}")
    activation = _constant(frame, "network.activation")
    if activation is not None:
        depth = _constant(frame, "L")
        parts.append(f"{activation}" + (f", L = {int(depth)}" if depth is not None and int(depth) > 1 and x != "L" else ""))
    return ", ".join(parts)


def _check_axis(frame: pd.DataFrame, x: str) -> None:
    if frame.empty:
        raise ConfigError("nothing to plot: the table has no completed tasks")
    if x not in frame.columns:
        raise ConfigError(f"no column {x!r} to plot against; try one of N1, lambda_L, P, L, T")


def plot_errors(
    frame: pd.DataFrame,
    x: str = "N1",
    *,
    parts: Sequence[str] = ("total",),
    title: str | None = None,
    note: str | None = None,
) -> Figure:
    """ε_g (and optionally its bias and variance) against ``x``: theory lines, simulation points.

    Parameters
    ----------
    frame : DataFrame
        A table from :meth:`ResultStore.collect`.
    x : str
        Column for the horizontal axis: ``N1`` (hidden width), ``lambda_L`` (readout prior),
        ``P``, ``L`` (depth), ``T`` or any other column.
    parts : sequence of {"total", "bias", "variance"}
        One panel each.
    title, note : str, optional
        Figure title; a small note under the axes (e.g. how long the simulations were).

    Returns
    -------
    matplotlib.figure.Figure
        Not attached to pyplot; save it with :func:`save_figure`.
    """
    _check_axis(frame, x)
    bad = [p for p in parts if p not in PART_LABELS]
    if bad:
        raise ConfigError(f"unknown panel(s) {bad}; use total, bias, variance")
    Figure = _figure_class()
    fig = Figure(figsize=(4.6 * len(parts), 3.8 + (0.3 if note else 0)), layout="constrained")
    axes = fig.subplots(1, len(parts), squeeze=False)[0]
    groups = _groups(frame, x)
    colors = [f"C{i % 10}" for i in range(len(groups))]
    models = _models(frame)
    for ax, part in zip(axes, parts, strict=True):
        for (_, sub), color in zip(groups, colors, strict=True):
            xs = sub[x].to_numpy(dtype=float)
            for model in models:
                col = f"{model}.{part}"
                if col not in sub or sub[col].isna().all():
                    continue
                ys = sub[col].to_numpy(dtype=float)
                finite = ys[~np.isnan(ys)]
                if model == "nngp" and x in {"N1", "N_min"} and len(set(finite)) == 1:
                    ax.axhline(finite[0], color=color, ls="--", lw=1.2)  # the level the theory tends to
                else:
                    ls = "--" if model == "nngp" else _THEORY_STYLE[model]
                    ax.plot(xs, ys, color=color, ls=ls, lw=1.6, marker=".", ms=3)
            col = f"sim.{part}"
            if col in sub and not sub[col].isna().all():
                err = sub.get(f"{col}_stderr")
                yerr = None if err is None else err.to_numpy(dtype=float)
                ax.errorbar(xs, sub[col].to_numpy(dtype=float), yerr=yerr, fmt="o", color=color, ms=4.5,
                            mfc="white", capsize=2.5, lw=1.1)
        _x_axis(ax, frame, x)
        ax.set_ylabel(PART_LABELS[part])
        ax.grid(alpha=0.3)
    _legend(axes[-1], groups, colors, models, frame)
    if title:
        fig.suptitle(title)
    if note:
        fig.supxlabel(note, fontsize=7, color="0.3")  # laid out below the axes labels
    return fig


def _legend(ax, groups, colors, models, frame) -> None:  # noqa: ANN001
    """Line styles say what a curve is; colours say which group (outside the axes, on the right)."""
    from matplotlib.lines import Line2D

    handles = []
    for model in models:
        if model == "nngp":
            handles.append(Line2D([], [], color="0.25", ls="--", lw=1.2, label="infinite width (NNGP)"))
        else:
            handles.append(Line2D([], [], color="0.25", ls=_THEORY_STYLE[model], lw=1.6,
                                  label={"rkgp": "theory (RKGP)", "rkgp_product": "theory (RKGP product)",
                                         "rkgp_nested": "theory (RKGP nested)"}[model]))
    if any(c.startswith("sim.") for c in frame.columns):
        handles.append(Line2D([], [], color="0.25", marker="o", mfc="white", ls="none", label="simulation ± 1 s.e."))
    if len(groups) > 1:
        handles += [Line2D([], [], color=c, lw=3, label=label) for (label, _), c in zip(groups, colors, strict=True)]
    ax.legend(handles=handles, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))


def _x_axis(ax, frame: pd.DataFrame, x: str) -> None:  # noqa: ANN001
    values = sorted(set(frame[x].astype(float)))
    if x in LOG_AXES and values[0] > 0 and len(values) > 1:
        ax.set_xscale("log")
    if len(values) <= 10:  # label the swept values themselves, in plain numbers
        from matplotlib.ticker import NullFormatter, NullLocator

        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(values, [f"{v:g}" for v in values])
    ax.set_xlabel(AXIS_LABELS.get(x, x))


def plot_qbar(frame: pd.DataFrame, x: str = "N1", *, title: str | None = None) -> Figure:
    """Q̄_L from the theory (lines) against the readout-norm estimate from the simulation (points).

    The level Q̄ = 1 (infinite width) is dashed. With D outputs both are tr Q_L / D.
    """
    _check_axis(frame, x)
    models = [m for m in ("rkgp", "rkgp_product", "rkgp_nested") if f"{m}.qbar_L" in frame.columns]
    if not models and "sim.qbar_readout" not in frame.columns:
        raise ConfigError("no order parameters in the table: run an RKGP theory or a simulation")
    # D outputs: the columns hold tr Q_L / D (theory) and tr Q̂_L / D (simulation)
    multi = any(c.endswith((".qbar_L_matrix", "sim.qbar_matrix")) for c in frame.columns)
    q = r"$\mathrm{tr}\, Q_L / D$" if multi else r"$\bar Q_L$"
    Figure = _figure_class()
    fig = Figure(figsize=(6.6, 3.8), layout="constrained")
    ax = fig.subplots()
    for (label, sub), i in zip(_groups(frame, x), range(10**6), strict=False):
        color = f"C{i % 10}"
        suffix = f" ({label})" if label else ""
        xs = sub[x].to_numpy(dtype=float)
        for model in models:
            ax.plot(xs, sub[f"{model}.qbar_L"].to_numpy(dtype=float), color=color, ls=_THEORY_STYLE[model],
                    marker=".", ms=3, label="theory " + q + suffix)
        if "sim.qbar_readout" in sub and not sub["sim.qbar_readout"].isna().all():
            err = sub.get("sim.qbar_readout_stderr")
            ax.errorbar(xs, sub["sim.qbar_readout"].to_numpy(dtype=float),
                        yerr=None if err is None else err.to_numpy(dtype=float), fmt="o", color=color, mfc="white",
                        ms=4.5, capsize=2.5, label="readout-norm estimate ± 1 s.e." + suffix)
    ax.axhline(1.0, color="0.4", ls="--", lw=1, label="infinite width (" + (r"$Q = 1$" if multi else r"$\bar Q = 1$") + ")")
    _x_axis(ax, frame, x)
    ax.set_ylabel("order parameter " + q)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    if title:
        fig.suptitle(title)
    return fig


def save_figure(fig: Figure, out: str | Path, formats: Sequence[str] | None = None, *, dpi: int = 150) -> list[Path]:
    """Save ``fig`` as ``out`` (its suffix picks the format) or as ``out.<fmt>`` for each format.

    Returns the written paths. Formats: png, svg, pdf.
    """
    out = Path(out)
    if formats is None:
        suffix = out.suffix.lstrip(".").lower()
        formats = [suffix] if suffix else ["png"]
        stem = out.with_suffix("") if suffix else out
    else:
        stem = out.with_suffix("") if out.suffix.lstrip(".").lower() in _FORMATS else out
    bad = [f for f in formats if f not in _FORMATS]
    if bad:
        raise ConfigError(f"unknown figure format(s) {bad}; use png, svg or pdf")
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, format=fmt, dpi=dpi, metadata=None if fmt == "png" else {"Creator": "finwidth"})
        paths.append(path)
    return paths


def plot_sweep(
    frame: pd.DataFrame,
    out: str | Path,
    *,
    x: str = "N1",
    formats: Sequence[str] = ("png",),
    decomposition: bool = False,
    qbar: bool = True,
    title: str | None = None,
    note: str | None = None,
) -> list[Path]:
    """The standard figures of a sweep: ε_g vs ``x`` (with bias/variance panels if
    ``decomposition``) saved as ``out.<fmt>``, and Q̄ vs ``x`` as ``out_qbar.<fmt>`` when the table
    has order parameters. Returns the written paths.

    ``title``: default :func:`describe_task` of the table (data, P, T, activation); ``""`` for none.
    """
    if title is None and not frame.empty:
        title = describe_task(frame, x)
    parts = ("total", "bias", "variance") if decomposition else ("total",)
    paths = save_figure(plot_errors(frame, x, parts=parts, title=title, note=note), out, formats)
    has_q = any(c.endswith(".qbar_L") for c in frame.columns) or "sim.qbar_readout" in frame.columns
    if qbar and has_q:
        out = Path(out)
        stem = out.with_suffix("") if out.suffix.lstrip(".").lower() in _FORMATS else out
        paths += save_figure(plot_qbar(frame, x, title=title), stem.with_name(stem.name + "_qbar"), formats)
    return paths
