"""GLUE metrics, computed locally with scikit-learn and scipy (never the ``evaluate`` library,
which downloads its metric scripts from the Hub).

:func:`compute` gives every metric a task lists (:attr:`GlueTask.metrics`);
:func:`paper_scoring` reproduces how the Adan paper's evaluator scored the dev sets.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats
from sklearn.metrics import f1_score, matthews_corrcoef

from adan_bert.glue import GlueTask, get_task

METRIC_NAMES = ("accuracy", "f1", "mcc", "pearson", "spearman")


def _as_array(x: object, what: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except ValueError as e:  # ragged input, e.g. a tuple of arrays of different shapes
        raise ValueError(f"{what} must be one numeric array, not {type(x).__name__} ({e})") from e
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_):
        raise ValueError(
            f"{what} must be numeric, got dtype {a.dtype}; pass the model's logits or class "
            f"ids (a Trainer's EvalPrediction.predictions may be a tuple: take its first item)"
        )
    return a


def _class_ids(task: GlueTask, predictions: np.ndarray, n: int) -> np.ndarray:
    if predictions.ndim == 2:
        if predictions.shape != (n, task.num_labels):
            raise ValueError(
                f"{task.name} logits have shape {predictions.shape}, expected ({n}, "
                f"{task.num_labels}) for {n} labels"
            )
        if np.isnan(predictions).any():
            raise ValueError(f"{task.name} logits contain NaN: the model diverged")
        return predictions.argmax(axis=1)
    if predictions.ndim != 1 or predictions.shape[0] != n:
        raise ValueError(
            f"{task.name} predictions have shape {predictions.shape}, expected logits ({n}, "
            f"{task.num_labels}) or class ids ({n},) for {n} labels"
        )
    if np.isnan(predictions.astype(np.float64)).any():
        raise ValueError(f"{task.name} predictions contain NaN: the model diverged")
    return _checked_ids(task, predictions, "predictions")


def _checked_ids(task: GlueTask, ids: np.ndarray, what: str) -> np.ndarray:
    as_int = ids.astype(np.int64)
    if not np.array_equal(as_int, ids):
        raise ValueError(
            f"{task.name} {what} are not whole class ids (e.g. {ids[as_int != ids][0]!r}); "
            f"pass class ids, or logits of shape (n, {task.num_labels})"
        )
    bad = (as_int < 0) | (as_int >= task.num_labels)
    if bad.any():
        hint = (
            " (-1 marks the unlabelled test split: score a dev split)" if what == "labels" else ""
        )
        raise ValueError(
            f"{task.name} {what} must be class ids in 0..{task.num_labels - 1}, found "
            f"{sorted(set(as_int[bad].tolist()))[:5]}{hint}"
        )
    return as_int


def _scores(task: GlueTask, x: np.ndarray, n: int, what: str) -> np.ndarray:
    if x.shape not in ((n,), (n, 1)):
        raise ValueError(f"{task.name} {what} have shape {x.shape}, expected ({n},) or ({n}, 1)")
    x = x.reshape(n).astype(np.float64)
    if np.isnan(x).any():
        why = "the model diverged" if what == "predictions" else "the test split is unlabelled"
        raise ValueError(f"{task.name} {what} contain NaN ({why})")
    return x


def _correlation(fn, a: np.ndarray, b: np.ndarray) -> float:
    # Undefined (not an error) when either side is constant or there are fewer than 2 points:
    # return NaN ourselves rather than let scipy warn or raise.
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return math.nan
    return float(fn(a, b)[0])


def compute(task: GlueTask | str, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Every metric of ``task`` (names in :attr:`GlueTask.metrics` order) as plain floats.

    ``predictions``: for classification, logits of shape (n, num_labels) (the argmax is taken)
    or class ids of shape (n,); for regression (STS-B), scores of shape (n,) or (n, 1).
    ``labels``: n class ids, or n scores.

    Metrics: "accuracy" (a fraction in [0, 1]), "f1" (binary, class 1 positive), "mcc"
    (scikit-learn's Matthews correlation: 0 for a constant prediction), "pearson" and
    "spearman" (scipy). A correlation is undefined when the predictions (or labels) are
    constant, or n < 2: it comes back as NaN rather than an exception.

    ValueError for mismatched shapes, empty input, NaN predictions, or labels outside the
    task's classes (the -1 of a test split).
    """
    task = get_task(task)
    predictions = _as_array(predictions, "predictions")
    labels = _as_array(labels, "labels")
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels.reshape(-1)
    if labels.ndim != 1:
        raise ValueError(f"{task.name} labels have shape {labels.shape}, expected (n,)")
    n = labels.shape[0]
    if n == 0 or predictions.size == 0:
        raise ValueError(
            f"{task.name}: nothing to score (got {n} labels, {predictions.size} predictions)"
        )
    out: dict[str, float] = {}
    if task.is_regression:
        pred = _scores(task, predictions, n, "predictions")
        gold = _scores(task, labels, n, "labels")
        for name in task.metrics:
            fn = {"pearson": stats.pearsonr, "spearman": stats.spearmanr}[name]
            out[name] = _correlation(fn, pred, gold)
        return out
    if np.isnan(labels.astype(np.float64)).any():
        raise ValueError(f"{task.name} labels contain NaN (is this the unlabelled test split?)")
    gold = _checked_ids(task, labels, "labels")
    pred = _class_ids(task, predictions, n)
    for name in task.metrics:
        if name == "accuracy":
            out[name] = float(np.mean(pred == gold))
        elif name == "f1":
            # zero_division: no positive prediction and no positive label is F1 0, quietly.
            out[name] = float(f1_score(gold, pred, pos_label=1, average="binary", zero_division=0))
        elif name == "mcc":
            out[name] = float(matthews_corrcoef(gold, pred))
        else:
            raise ValueError(f"{task.name} asks for unknown metric {name!r}; known: {METRIC_NAMES}")
    return out


def paper_scoring(
    task: GlueTask | str, predictions: np.ndarray, labels: np.ndarray
) -> dict[str, float]:
    """:func:`compute` as the Adan paper's evaluator scored the dev sets, quirk included.

    The paper's ``acc_test.py`` skips the first line of every dev file as a header. CoLA's
    dev.tsv has no header, so its first example was never scored; every other task's dev file
    starts with a header, so nothing was lost there. Hence: for CoLA, the first example (of
    ``predictions`` and ``labels`` in file order) is dropped before :func:`compute`; for every
    other task this is :func:`compute` itself. Use it only on dev predictions in file order.
    """
    task = get_task(task)
    if task.name != "CoLA":
        return compute(task, predictions, labels)
    predictions = _as_array(predictions, "predictions")
    labels = _as_array(labels, "labels")
    if predictions.ndim == 0 or labels.ndim == 0:
        return compute(task, predictions, labels)  # raises its shape error
    if len(predictions) != len(labels):
        raise ValueError(
            f"CoLA: {len(predictions)} predictions but {len(labels)} labels; pass both in the "
            f"order of dev.tsv"
        )
    if len(labels) < 2:
        raise ValueError(
            f"CoLA paper scoring drops the first example, so it needs at least 2; got {len(labels)}"
        )
    return compute(task, predictions[1:], labels[1:])
