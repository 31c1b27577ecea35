"""The scikit-learn estimator contract shared by the theory estimators, without importing scikit-learn.

Every estimator (NNGP, RKGP, BPKR, AdaptiveKernel, …) inherits :class:`Estimator`:

* ``__init__`` only stores its arguments under the same names; ``fit`` validates them (``ConfigError``)
  and sets the fitted attributes, whose names end in ``_``;
* ``get_params`` / ``set_params`` as in scikit-learn, so ``sklearn.base.clone``, ``GridSearchCV`` and
  pipelines work. The network is a frozen dataclass: its fields are nested parameters
  (``network__widths``, ``network__priors``, ``network__activation``, ``network__bias``; for a
  ``ConvNetwork`` ``network__channels`` …), and ``set_params(network__widths=[200])`` *replaces* the
  network by an edited copy (never mutates a network another estimator may share);
* ``score(X, y)`` is the coefficient of determination R² of the posterior mean (see :meth:`Estimator.score`);
* ``predict(X, return_std=True)`` gives the posterior standard deviation of f, as scikit-learn's
  ``GaussianProcessRegressor`` names it (:func:`with_std`);
* a readable ``repr`` listing the parameters that differ from their defaults.

scikit-learn is needed only by the code that calls these methods (it is a test extra of finwidth).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np

from finwidth.errors import ConfigError

__all__ = ["Estimator", "r2_score", "with_std"]

_NO_DEFAULT = inspect.Parameter.empty
# network fields where a scalar means "the same for every layer" (Network, ConvNetwork)
_PER_LAYER = ("priors", "bias")


def r2_score(y: Any, prediction: Any, sample_weight: Any = None) -> float:
    """Coefficient of determination R² = 1 − Σ w (y − ŷ)² / Σ w (y − ȳ)², ȳ the weighted mean of y.

    Follows ``sklearn.metrics.r2_score``: several outputs (columns) are averaged uniformly; a constant
    ``y`` gives 1.0 for a perfect prediction and 0.0 otherwise.
    """
    y = np.asarray(y, dtype=np.float64)
    pred = np.asarray(prediction, dtype=np.float64)
    if y.ndim == 2 and y.shape[1] == 1 and pred.ndim == 1:
        y = y[:, 0]
    if y.shape != pred.shape:
        raise ConfigError(f"y has shape {y.shape} but the prediction has shape {pred.shape}")
    y2, p2 = y.reshape(y.shape[0], -1), pred.reshape(pred.shape[0], -1)
    w = np.ones(y2.shape[0]) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).ravel()
    if w.shape != (y2.shape[0],):
        raise ConfigError(f"sample_weight must have shape ({y2.shape[0]},), got {np.shape(sample_weight)}")
    resid = w @ (y2 - p2) ** 2
    spread = w @ (y2 - (w @ y2) / w.sum()) ** 2
    scores = np.where(spread > 0, 1.0 - resid / np.where(spread > 0, spread, 1.0), np.where(resid == 0, 1.0, 0.0))
    return float(np.mean(scores))


def with_std(outputs: Any, return_var: bool, return_cov: bool) -> tuple:
    """Turn ``predict(..., return_var=True, return_cov=return_cov)``'s answer into the ``return_std`` one.

    The tuple lists what was asked in the order of ``predict``'s keywords: mean, var (if asked),
    cov (if asked), std = √var.
    """
    mean, var, *rest = outputs
    return (mean, *([var] if return_var else []), *(rest if return_cov else []), np.sqrt(var))


class Estimator:
    """Mixin: the scikit-learn estimator API (parameters, clone, score, tags, repr) for finwidth's theories.

    Subclasses declare their parameters as the arguments of ``__init__``, store each under its own
    name, and validate them at the start of ``fit``.
    """

    _estimator_type = "regressor"  # scikit-learn < 1.6 reads this; later versions read __sklearn_tags__

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters, by name.

        With ``deep=True`` the fields of a dataclass parameter (the network) and the parameters of a
        nested estimator are included as ``name__field``.
        """
        out: dict[str, Any] = {}
        for name in self._param_names():
            value = getattr(self, name)
            out[name] = value
            if not deep:
                continue
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                out.update((f"{name}__{f.name}", getattr(value, f.name)) for f in dataclasses.fields(value))
            elif hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params(deep=True).items())
        return out

    def set_params(self, **params: Any) -> Estimator:
        """Set parameters; ``name__field`` edits a field of the network (a new network is built).

        The estimator's own parameters are not validated here (``fit`` does it); an edited network is
        rebuilt, so its constructor checks the new fields. A per-layer field with equal entries that is
        not edited (``priors``, ``bias``) is passed as one scalar, so ``network__widths`` may change the
        depth. Returns ``self``.

        Raises
        ------
        ConfigError
            An unknown parameter name (the message lists the valid ones).
        """
        names = self._param_names()
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in names:
                raise ConfigError(f"invalid parameter {name!r} for {type(self).__name__}; valid parameters: {names}")
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub_params in nested.items():
            setattr(self, name, _edited(getattr(self, name), sub_params, f"{type(self).__name__}.{name}"))
        return self

    @property
    def n_features_in_(self) -> int:
        """N_0, the number of input features seen by ``fit`` (scikit-learn's name)."""
        X = self.__dict__.get("X_train_")
        if X is None:
            raise AttributeError(f"{type(self).__name__} is not fitted yet: no n_features_in_")
        return int(X.shape[1])

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """R² of the posterior mean on (X, y): 1 − Σ(y − ⟨f⟩)² / Σ(y − ȳ)² (higher is better, 1 is perfect).

        R² is what every scikit-learn regressor's ``score`` returns, so ``GridSearchCV``,
        ``cross_val_score`` and pipelines treat finwidth's estimators like any other regressor. On a given
        test split it ranks models exactly as the mean squared error of the posterior mean (the bias part
        of ε_g) does, since the denominator does not depend on the model; for ε_g = bias + variance use
        ``generalization_error``, or ``scoring="neg_mean_squared_error"`` in a grid search to rank on the
        bias alone with the usual units.
        """
        return r2_score(y, self.predict(X), sample_weight)

    def __sklearn_tags__(self):  # noqa: ANN204 - called by scikit-learn >= 1.6 only, which is then imported
        from sklearn.utils import InputTags, RegressorTags, Tags, TargetTags

        return Tags(estimator_type="regressor", target_tags=TargetTags(required=True),
                    regressor_tags=RegressorTags(), input_tags=InputTags())

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__)
        shown = []
        for name in self._param_names():
            value = getattr(self, name)
            default = sig.parameters[name].default
            if default is _NO_DEFAULT or not _same(value, default):
                shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or a == b)
    except Exception:  # noqa: BLE001 - arrays and odd types: show them
        return False


def _edited(value: Any, changes: dict[str, Any], what: str) -> Any:
    """A copy of a frozen dataclass with some fields changed (or set_params on a nested estimator)."""
    if hasattr(value, "set_params") and not dataclasses.is_dataclass(value):
        return value.set_params(**changes)
    if not dataclasses.is_dataclass(value) or isinstance(value, type):
        raise ConfigError(f"{what} is {type(value).__name__}, which has no parameters to set ({sorted(changes)})")
    fields = [f.name for f in dataclasses.fields(value)]
    unknown = sorted(set(changes) - set(fields))
    if unknown:
        raise ConfigError(f"invalid parameter(s) {unknown} for {what}; valid: {fields}")
    kwargs = {}
    for name in fields:
        v = getattr(value, name)
        # a per-layer tuple with equal entries is the scalar it was built from: keeps depth changes legal
        if name not in changes and name in _PER_LAYER and isinstance(v, tuple) and v and all(x == v[0] for x in v):
            v = v[0]
        kwargs[name] = changes.get(name, v)
    return type(value)(**kwargs)
