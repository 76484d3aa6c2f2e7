"""Disentanglement metrics of codes (N, D) against known factors of variation (N, K): MIG, DCI and SAP.

Each factor is flagged ``discrete`` (class labels: attributes, digits, FairFace groups) or continuous (age
in years, a synthetic pose angle). Estimator choices, made for speed and stated here because the published
numbers depend on them:

MIG (Chen et al. 2018)      codes and continuous factors are binned into ``n_bins`` (20) equal-width bins per
                            column, as in disentanglement_lib; I(z_j; v_k) is the plug-in mutual information
                            of the bin labels, normalised by the factor's plug-in entropy H(v_k). Per factor:
                            (largest MI - second largest) / H(v_k), averaged over factors.
DCI (Eastwood & Williams    importance R (D, K) from one predictor per factor on a train split, standardised
2018)                       codes: ``linear`` (default; L2 logistic regression for discrete, Lasso with
                            alpha 0.01 on the standardised factor for continuous; importance |coefficient|,
                            averaged over classes) or ``gbt`` (gradient-boosted trees, 50 trees of depth 3,
                            impurity importance; close to disentanglement_lib but ~100x slower).
                            Disentanglement: 1 - entropy (base K) of each code's row of R, weighted by the
                            code's share of total importance; completeness: 1 - entropy (base D) of each
                            factor's column, weighted likewise; informativeness: mean held-out accuracy
                            (discrete) or R^2 (continuous).
SAP (Kumar et al. 2018)     score S (D, K) per single code and factor: R^2 of a 1-D linear fit (continuous),
                            or for discrete factors held-out balanced accuracy of thresholds on that code (a
                            decision tree with one leaf per class), chance-corrected to (acc - 1/C) / (1 - 1/C)
                            so discrete and continuous scores share the 0..1 scale (the paper uses raw
                            accuracy). Per factor: best minus second-best score, averaged over factors.

All three are near 1 for an axis-aligned code with one dimension per factor and near 0 for a rotation mixing
every factor into every dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class DCIResult:
    """Scores in [0, 1] (informativeness can dip below 0 through a negative held-out R^2) and the (D, K)
    importance matrix they come from."""

    disentanglement: float
    completeness: float
    informativeness: float
    importance: np.ndarray


def _prepare(codes, factors, discrete) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    z, v = np.asarray(codes, dtype=np.float64), np.asarray(factors, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    if z.ndim != 2 or z.shape[0] != v.shape[0] or z.shape[0] < 10:
        raise ValueError(f"codes (N, D) and factors (N, K) must share N >= 10; got {z.shape} and {v.shape}")
    flags = [bool(discrete)] * v.shape[1] if isinstance(discrete, (bool, np.bool_)) else [bool(f) for f in discrete]
    if len(flags) != v.shape[1]:
        raise ValueError(f"discrete has {len(flags)} flags for {v.shape[1]} factors")
    if np.any(v.std(0) == 0):
        raise ValueError("a factor is constant; it has no variation to capture")
    return z, v, flags


def _bins(column: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin labels (N,) int of one column."""
    edges = np.linspace(column.min(), column.max(), n_bins + 1)[1:-1]
    return np.digitize(column, edges)


def _labels(column: np.ndarray) -> np.ndarray:
    return np.unique(column, return_inverse=True)[1]


def mig(codes, factors, discrete: bool | Sequence[bool], n_bins: int = 20) -> float:
    """Mutual information gap of codes (N, D) for factors (N, K); see the module docstring."""
    return float(np.mean(mig_per_factor(codes, factors, discrete, n_bins)))


def mig_per_factor(codes, factors, discrete: bool | Sequence[bool], n_bins: int = 20) -> np.ndarray:
    """Each factor's gap (K,): the best code's and the runner-up's mutual information with it, apart, over
    its entropy (MIG is their mean)."""
    from sklearn.metrics import mutual_info_score

    z, v, flags = _prepare(codes, factors, discrete)
    binned = [_bins(z[:, j], n_bins) for j in range(z.shape[1])]
    gaps = []
    for k, is_discrete in enumerate(flags):
        target = _labels(v[:, k]) if is_discrete else _bins(v[:, k], n_bins)
        entropy = mutual_info_score(target, target)
        mi = np.sort([mutual_info_score(target, b) for b in binned])[::-1]
        gaps.append((mi[0] - (mi[1] if len(mi) > 1 else 0.0)) / entropy)
    return np.array(gaps)


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    return order[n_test:], order[:n_test]


def _fit_factor(x_train, y_train, x_test, y_test, is_discrete: bool, estimator: str,
                seed: int) -> tuple[np.ndarray, float]:
    """Importance (D,) of each code for one factor, and the predictor's held-out accuracy or R^2."""
    from sklearn import ensemble, linear_model

    if estimator == "gbt":
        cls = ensemble.GradientBoostingClassifier if is_discrete else ensemble.GradientBoostingRegressor
        model = cls(n_estimators=50, max_depth=3, random_state=seed).fit(x_train, y_train)
        return model.feature_importances_, float(model.score(x_test, y_test))
    if is_discrete:
        model = linear_model.LogisticRegression(C=1.0, max_iter=2000).fit(x_train, y_train)
        return np.abs(model.coef_).mean(0), float(model.score(x_test, y_test))
    # Standardising the factor makes Lasso's alpha mean the same for age in years and an angle in radians.
    mean, std = y_train.mean(), y_train.std()
    model = linear_model.Lasso(alpha=0.01).fit(x_train, (y_train - mean) / std)
    return np.abs(model.coef_), float(model.score(x_test, (y_test - mean) / std))


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy (base ``base``) of each row of a row-stochastic matrix."""
    return -(p * np.log(p + 1e-11)).sum(1) / np.log(base)


def dci(codes, factors, discrete: bool | Sequence[bool], estimator: str = "linear", test_fraction: float = 0.3,
        seed: int = 0) -> DCIResult:
    """DCI disentanglement, completeness and informativeness; see the module docstring."""
    if estimator not in ("linear", "gbt"):
        raise ValueError(f"unknown DCI estimator {estimator!r} (known: linear, gbt)")
    z, v, flags = _prepare(codes, factors, discrete)
    if z.shape[1] < 2 or v.shape[1] < 2:
        raise ValueError("DCI needs at least 2 code dimensions and 2 factors (its entropies are over them)")
    train, test = _split(len(z), test_fraction, seed)
    mean, std = z[train].mean(0), z[train].std(0)
    x = (z - mean) / np.where(std > 1e-12, std, 1.0)
    importance, scores = np.zeros((z.shape[1], v.shape[1])), []
    for k, is_discrete in enumerate(flags):
        y = _labels(v[:, k]) if is_discrete else v[:, k]
        importance[:, k], score = _fit_factor(x[train], y[train], x[test], y[test], is_discrete, estimator, seed)
        scores.append(score)
    total = importance.sum()
    if total <= 0:
        raise ValueError("no code dimension predicts any factor; DCI is undefined")
    code_weight, factor_weight = importance.sum(1) / total, importance.sum(0) / total
    rows = importance / np.maximum(importance.sum(1, keepdims=True), 1e-11)
    columns = (importance / np.maximum(importance.sum(0, keepdims=True), 1e-11)).T
    return DCIResult(
        disentanglement=float(((1 - _entropy_rows(rows, v.shape[1])) * code_weight).sum()),
        completeness=float(((1 - _entropy_rows(columns, z.shape[1])) * factor_weight).sum()),
        informativeness=float(np.mean(scores)), importance=importance)


def sap(codes, factors, discrete: bool | Sequence[bool], test_fraction: float = 0.3, seed: int = 0) -> float:
    """Separated attribute predictability; see the module docstring."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.tree import DecisionTreeClassifier

    z, v, flags = _prepare(codes, factors, discrete)
    train, test = _split(len(z), test_fraction, seed)
    gaps = []
    for k, is_discrete in enumerate(flags):
        if is_discrete:
            y = _labels(v[:, k])
            chance = 1.0 / len(np.unique(y[train]))
            scores = []
            for j in range(z.shape[1]):
                tree = DecisionTreeClassifier(max_leaf_nodes=max(2, len(np.unique(y))), random_state=seed)
                tree.fit(z[train, j:j + 1], y[train])
                accuracy = balanced_accuracy_score(y[test], tree.predict(z[test, j:j + 1]))
                scores.append(max(0.0, (accuracy - chance) / (1 - chance)))
        else:
            with np.errstate(invalid="ignore"):  # a constant code has no correlation: NaN -> 0 below
                corr = np.array([np.corrcoef(z[:, j], v[:, k])[0, 1] for j in range(z.shape[1])])
            scores = np.nan_to_num(corr) ** 2
        top = np.sort(scores)[::-1]
        gaps.append(top[0] - (top[1] if len(top) > 1 else 0.0))
    return float(np.mean(gaps))


def disentanglement_scores(codes, factors, discrete: bool | Sequence[bool], seed: int = 0,
                           estimator: str = "linear") -> dict[str, float]:
    """All metrics in one flat dict: mig, dci_disentanglement, dci_completeness, dci_informativeness, sap."""
    result = dci(codes, factors, discrete, estimator=estimator, seed=seed)
    return {"mig": mig(codes, factors, discrete), "dci_disentanglement": result.disentanglement,
            "dci_completeness": result.completeness, "dci_informativeness": result.informativeness,
            "sap": sap(codes, factors, discrete, seed=seed)}
