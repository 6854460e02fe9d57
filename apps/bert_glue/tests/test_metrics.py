"""GLUE metrics against scikit-learn and scipy called directly, on hand-made predictions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from adan_bert.glue import TASKS
from adan_bert.metrics import compute, paper_scoring
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

# Eight binary examples: 5 right, 3 wrong (two false positives, one false negative).
GOLD = np.array([1, 1, 1, 0, 0, 0, 1, 0])
PRED = np.array([1, 1, 0, 1, 1, 0, 1, 0])


def logits_for(ids: np.ndarray, num_labels: int) -> np.ndarray:
    """Logits whose argmax is ``ids``, with noise so that the argmax is not trivially 0/1."""
    rng = np.random.default_rng(0)
    out = rng.normal(size=(len(ids), num_labels))
    out[np.arange(len(ids)), ids] += 10.0
    return out


def test_classification_metrics_agree_with_sklearn():
    mrpc = compute("mrpc", PRED, GOLD)
    assert list(mrpc) == ["accuracy", "f1"]
    assert mrpc["accuracy"] == pytest.approx(accuracy_score(GOLD, PRED)) == pytest.approx(5 / 8)
    assert mrpc["f1"] == pytest.approx(f1_score(GOLD, PRED))
    cola = compute("cola", PRED, GOLD)
    assert list(cola) == ["mcc", "accuracy"]
    assert cola["mcc"] == pytest.approx(matthews_corrcoef(GOLD, PRED))
    assert 0 < cola["mcc"] < 1
    assert all(type(v) is float for v in (*mrpc.values(), *cola.values()))


def test_f1_takes_class_1_as_positive():
    # Swapping the classes changes F1 (it is not symmetric), so the positive class matters.
    swapped = compute("qqp", 1 - PRED, 1 - GOLD)["f1"]
    assert swapped == pytest.approx(f1_score(1 - GOLD, 1 - PRED, pos_label=1))
    assert swapped != pytest.approx(compute("qqp", PRED, GOLD)["f1"])


def test_logits_are_scored_by_their_argmax():
    assert compute("mrpc", logits_for(PRED, 2), GOLD) == compute("mrpc", PRED, GOLD)
    gold3 = np.array([0, 1, 2, 2, 1, 0])
    pred3 = np.array([0, 2, 2, 1, 1, 0])
    mnli = compute("mnli", logits_for(pred3, 3), gold3)
    assert mnli == {"accuracy": pytest.approx(accuracy_score(gold3, pred3))}


def test_regression_metrics_agree_with_scipy():
    gold = np.array([0.0, 1.2, 2.5, 3.1, 4.8, 5.0])
    pred = np.array([0.4, 0.9, 3.0, 2.7, 4.9, 4.1])
    out = compute("stsb", pred, gold)
    assert list(out) == ["pearson", "spearman"]
    assert out["pearson"] == pytest.approx(pearsonr(pred, gold)[0])
    assert out["spearman"] == pytest.approx(spearmanr(pred, gold)[0])
    assert out["pearson"] != pytest.approx(out["spearman"])  # the two are not mixed up
    assert compute("stsb", pred.reshape(-1, 1).astype(np.float32), gold) == pytest.approx(out)
    assert all(type(v) is float for v in out.values())


def test_every_task_returns_exactly_its_metrics():
    rng = np.random.default_rng(1)
    for task in TASKS.values():
        if task.is_regression:
            out = compute(task, rng.uniform(0, 5, 20), rng.uniform(0, 5, 20))
        else:
            out = compute(task, rng.normal(size=(20, task.num_labels)), rng.integers(0, 2, 20))
        assert tuple(out) == task.metrics, task.name


def test_a_constant_prediction_gives_nan_correlation_and_zero_mcc():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and quietly: no scipy/sklearn warnings either
        stsb = compute("stsb", np.full(4, 2.0), np.array([1.0, 2.0, 3.0, 4.0]))
        assert math.isnan(stsb["pearson"]) and math.isnan(stsb["spearman"])
        cola = compute("cola", np.zeros(4, np.int64), np.array([0, 1, 1, 0]))
    assert cola == {"mcc": 0.0, "accuracy": 0.5}


@pytest.mark.parametrize(
    "task, predictions, labels, message",
    [
        ("mrpc", np.zeros((4, 3)), np.zeros(4), r"logits have shape \(4, 3\), expected \(4, 2\)"),
        ("mrpc", np.zeros(3), np.zeros(4), r"predictions have shape \(3,\)"),
        ("mrpc", np.zeros((4, 2, 1)), np.zeros(4), r"predictions have shape \(4, 2, 1\)"),
        ("mrpc", np.array([0.0, 0.7]), np.zeros(2), r"not whole class ids"),
        ("mrpc", np.array([0, 2]), np.zeros(2), r"predictions must be class ids in 0\.\.1"),
        ("mrpc", np.array([0, 1]), np.array([0, -1]), r"labels must be class ids.*test split"),
        ("mrpc", np.array([[0.1, np.nan]]), np.zeros(1), r"logits contain NaN"),
        ("mrpc", np.array([np.nan, 1.0]), np.zeros(2), r"predictions contain NaN"),
        ("mrpc", np.zeros(0), np.zeros(0), r"nothing to score"),
        ("mrpc", np.zeros(2), np.zeros((2, 2)), r"labels have shape \(2, 2\)"),
        ("stsb", np.zeros((3, 2)), np.zeros(3), r"predictions have shape \(3, 2\)"),
        ("stsb", np.zeros(2), np.zeros(3), r"predictions have shape \(2,\)"),
        ("stsb", np.array([1.0, np.nan]), np.zeros(2), r"predictions contain NaN"),
        ("stsb", np.zeros(2), np.array([1.0, np.nan]), r"labels contain NaN"),
        ("stsb", np.zeros(0), np.zeros(0), r"nothing to score"),
        ("cola", np.array(["a", "b"]), np.zeros(2), r"must be numeric"),
    ],
)
def test_bad_input_is_a_clear_error(task, predictions, labels, message):
    with pytest.raises(ValueError, match=message):
        compute(task, predictions, labels)


def test_paper_scoring_drops_exactly_colas_first_example():
    gold = np.array([0, 1, 1, 0, 1, 0])
    pred = np.array([1, 1, 1, 0, 0, 0])  # the first is wrong, and it moves the MCC
    paper = paper_scoring("cola", pred, gold)
    assert paper["mcc"] == pytest.approx(matthews_corrcoef(gold[1:], pred[1:]))
    assert paper["accuracy"] == pytest.approx(4 / 5)
    assert paper["mcc"] != pytest.approx(compute("cola", pred, gold)["mcc"])
    # Dropping the last example instead would give yet another value.
    assert paper["mcc"] != pytest.approx(matthews_corrcoef(gold[:-1], pred[:-1]))
    assert paper_scoring("cola", logits_for(pred, 2), gold) == paper


def test_paper_scoring_is_compute_for_every_other_task():
    assert paper_scoring("sst2", PRED, GOLD) == compute("sst2", PRED, GOLD)
    assert paper_scoring("sst2", PRED, GOLD)["accuracy"] == pytest.approx(5 / 8)
    gold = np.array([0.0, 1.2, 2.5, 3.1, 4.8])
    pred = np.array([0.4, 0.9, 3.0, 2.7, 4.9])
    assert paper_scoring("stsb", pred, gold) == compute("stsb", pred, gold)


def test_paper_scoring_errors():
    with pytest.raises(ValueError, match="3 predictions but 4 labels"):
        paper_scoring("cola", np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="needs at least 2"):
        paper_scoring("cola", np.zeros(1), np.zeros(1))
