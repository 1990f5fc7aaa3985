"""Classification metrics from scores: accuracy, precision, recall, F1, ROC-AUC, confusion matrix."""
from __future__ import annotations

import numpy as np


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float | None:
    """Area under the ROC curve as the Mann-Whitney U statistic (ties count one half)."""
    y_true = np.asarray(y_true).astype(bool)
    score = np.asarray(score, dtype=float)
    pos, neg = score[y_true], score[~y_true]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    # average ranks over ties
    start = 0
    for end in range(1, len(score) + 1):
        if end == len(score) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    u = ranks[y_true].sum() - len(pos) * (len(pos) + 1) / 2.0
    return float(u / (len(pos) * len(neg)))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    cm = np.zeros((n, n), dtype=int)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str],
                           threshold: float | None = None) -> dict:
    """Metrics for ``proba`` ``[N, C]``. Binary: positive = class 1, predicted when p >= threshold
    (default 0.5 via argmax). Multi-class: macro averages, one-vs-rest ROC-AUC."""
    y_true = np.asarray(y_true, int)
    proba = np.asarray(proba, float)
    n = len(classes)
    if n == 2 and threshold is not None:
        y_pred = (proba[:, 1] >= threshold).astype(int)
    else:
        y_pred = proba.argmax(1)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    out: dict = {"n": int(len(y_true)), "accuracy": float((y_pred == y_true).mean()) if len(y_true) else None,
                 "confusion_matrix": cm.tolist(), "classes": list(classes)}
    if n == 2:
        out.update(precision=float(precision[1]), recall=float(recall[1]), f1=float(f1[1]),
                   roc_auc=roc_auc(y_true == 1, proba[:, 1]), threshold=0.5 if threshold is None else threshold)
    else:
        aucs = [roc_auc(y_true == c, proba[:, c]) for c in range(n)]
        defined = [a for a in aucs if a is not None]
        out.update(precision=float(precision.mean()), recall=float(recall.mean()), f1=float(f1.mean()),
                   roc_auc=float(np.mean(defined)) if defined else None,
                   per_class={c: {"precision": float(precision[i]), "recall": float(recall[i]),
                                  "f1": float(f1[i])} for i, c in enumerate(classes)})
    return out


def summarize_folds(fold_metrics: list[dict]) -> dict:
    """Mean and standard deviation of each scalar metric across cross-validation folds."""
    out = {}
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        vals = [m[key] for m in fold_metrics if m.get(key) is not None]
        if vals:
            out[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "folds": vals}
    return out
