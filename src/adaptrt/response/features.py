"""Classifiers of lesion response from handcrafted features (radiomics, gradients): scikit-learn pipelines.

Part I compares its CNN with classifiers built on standard radiomics (:mod:`.radiomics`) and on gradient
features (:mod:`.gradients`). With ~69 lesions and up to ~850 correlated features the danger is leakage and
over-fitting, so the whole chain is one :class:`sklearn.pipeline.Pipeline`: every step, imputation and
selection included, is fitted by ``pipeline.fit(X_train, y_train)`` on the training split only and merely
applied to the test split.

The pipeline (:func:`feature_model`)
------------------------------------
1. ``SimpleImputer(strategy="median")`` -- NaN features (a tiny GTV, an empty core) get the training
   median; a column that is NaN in every training lesion is dropped.
2. ``VarianceThreshold(0.0)`` -- drops features constant over the training lesions (they carry nothing and
   make the F statistic 0/0).
3. ``StandardScaler`` -- z-scores with the training mean and SD, so the penalty treats features alike.
4. Univariate selection of the ``k = min(10, n_features)`` features with the largest ANOVA F statistic
   (:func:`sklearn.feature_selection.f_classif`, which for two classes is the square of the two-sample t
   statistic). Chosen over mutual information (random and noisy with ~20-30 lesions per class) and over an
   L1-logistic selector (on hundreds of strongly correlated radiomics features its choice jumps between
   near-duplicates from split to split); the F test is deterministic, fast, and the usual first filter of a
   radiomics study. Ten features for ~55 training lesions keeps about 5 lesions per feature.
5. ``LogisticRegression`` (L2, ``C = 1``, ``class_weight="balanced"``) -- a linear model with few parameters
   is the standard low-variance choice at this sample size, gives calibrated-ish probabilities for the AUC,
   and ``"balanced"`` reweights the classes so that the minority class is not ignored at the 0.5 threshold.
   A random forest would add hyper-parameters and variance without a reason to expect interactions among
   10 filtered features.

Both profiles build the same pipeline: fitting it takes milliseconds, so there is nothing for ``"quick"``
to save; the argument keeps the interface of the other model builders.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.feature_selection import SelectKBest, VarianceThreshold, f_classif
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ..config import PROFILES

__all__ = ["N_SELECTED", "SelectTopK", "feature_model", "features_table"]

#: Number of features kept by the univariate selection (fewer when fewer survive steps 1-2).
N_SELECTED = 10

FeatureKind = Literal["radiomics", "gradients"]
_KINDS: tuple[str, ...] = ("radiomics", "gradients")


class SelectTopK(SelectKBest):
    """:class:`~sklearn.feature_selection.SelectKBest` that keeps every feature when ``k`` exceeds their number.

    The number of features reaching the selector depends on the training split (constant and all-NaN
    columns are dropped before it), so ``k = min(k, n_features)`` must be decided at fit time; plain
    ``SelectKBest`` does the same but warns.
    """

    def _check_params(self, X: Any, y: Any) -> None:
        # k's type and sign are checked by sklearn's parameter validation; k > n_features selects all
        return None


def feature_model(kind: FeatureKind, *, seed: int, profile: str = "paper") -> Pipeline:
    """An unfitted pipeline imputer -> variance filter -> scaler -> top-10 F-test selection -> logistic model.

    Parameters
    ----------
    kind
        ``"radiomics"`` or ``"gradients"``; both use the same steps (see the module docstring), the kind
        names the pipeline's purpose and is checked so that a typo fails early.
    seed
        Random state of the logistic regression (its lbfgs solver is deterministic; kept for provenance).
    profile
        ``"paper"`` or ``"quick"``; both give the same pipeline.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Steps ``impute``, ``variance``, ``scale``, ``select``, ``classify``. ``fit(X, y)`` with ``X`` of shape
        ``(n_lesions, n_features)`` (NaN allowed) and ``y`` in {0, 1} (1 = responder);
        ``predict_proba(X)[:, 1]`` is the probability of response.

    Raises
    ------
    ValueError
        For an unknown ``kind`` or ``profile``, or a negative ``seed``.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {list(_KINDS)}, got {kind!r}")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {list(PROFILES)}, got {profile!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return Pipeline(
        [
            ("impute", SimpleImputer(strategy="median")),
            ("variance", VarianceThreshold(threshold=0.0)),
            ("scale", StandardScaler()),
            ("select", SelectTopK(score_func=f_classif, k=N_SELECTED)),
            (
                "classify",
                LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000, random_state=int(seed)),
            ),
        ]
    )


def features_table(
    rows: Sequence[Mapping[str, float]], names: Sequence[str] | None = None
) -> tuple[NDArray[np.float64], list[str]]:
    """Stack per-lesion feature dicts into a matrix with aligned columns.

    Parameters
    ----------
    rows
        One ``{feature name: value}`` per lesion (from :func:`~.radiomics.radiomics_features` or
        :func:`~.gradients.gradient_features`).
    names
        Column order to use (e.g. the training table's names when building a test table); None: the union
        of the rows' keys in first-seen order.

    Returns
    -------
    X
        ``(n_rows, n_names)`` float64; NaN where a row lacks a name, or its value is None or not finite.
    names
        The column names.

    Raises
    ------
    ValueError
        For no rows, or a value that is not a number.
    """
    if len(rows) == 0:
        raise ValueError("features_table needs at least one row of features")
    if names is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        cols = list(seen)
    else:
        cols = [str(n) for n in names]
        if len(set(cols)) != len(cols):
            raise ValueError("names has repeated feature names")
    index = {n: j for j, n in enumerate(cols)}
    X = np.full((len(rows), len(cols)), np.nan, dtype=np.float64)
    for i, row in enumerate(rows):
        for key, value in row.items():
            j = index.get(key)
            if j is None or value is None:
                continue
            try:
                v = float(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"row {i}, feature {key!r}: {value!r} is not a number") from exc
            X[i, j] = v if math.isfinite(v) else np.nan
    return X, cols
