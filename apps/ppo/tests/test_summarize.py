"""Aggregation of hand-made curves through adan_ppo.summarize: numbers recomputed here
independently (the statistics themselves are tested in packages/adan-repro)."""

from __future__ import annotations

import csv
import json
import math
import statistics

import pytest
from adan_ppo import summarize

# (task, optimizer, seed) -> {step: return}. Seed 3 of adan lacks step 20, so that step is
# dropped for adan (alignment on common steps).
CURVES = {
    ("Cheetah", "adam", 1): {0: 0.0, 10: 100.0, 20: 300.0, 30: 250.0},
    ("Cheetah", "adam", 2): {0: 10.0, 10: 140.0, 20: 260.0, 30: 330.0},
    ("Cheetah", "adan", 1): {0: 5.0, 10: 310.0, 20: 400.0, 30: 500.0},
    ("Cheetah", "adan", 2): {0: 0.0, 10: 270.0, 20: 380.0, 30: 420.0},
    ("Cheetah", "adan", 3): {0: 2.0, 10: 300.0, 30: 460.0},
    ("Walker", "adam", 1): {0: 1.0, 10: 50.0},
    ("Walker", "adan", 1): {0: 1.0, 10: 20.0},
}


def _write_grid(root):
    for (task, opt, seed), curve in CURVES.items():
        d = root / "runs" / task / opt / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"env": task, "optimizer": opt, "seed": seed}))
        with open(d / "eval.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "mean_return", "std_return"])
            for step, value in curve.items():
                w.writerow([step, value, 0.0])


def _expected(task, opt, baseline_final=None):
    seeds = [c for (t, o, _), c in CURVES.items() if t == task and o == opt]
    steps = sorted(set.intersection(*(set(c) for c in seeds)))
    means = [statistics.fmean(c[s] for c in seeds) for s in steps]
    stds = [statistics.pstdev([c[s] for c in seeds]) for s in steps]
    best = max(range(len(steps)), key=lambda i: means[i])
    reach = ""
    if baseline_final is not None:
        reach = next((steps[i] for i in range(len(steps)) if means[i] >= baseline_final), "")
    return {
        "n_seeds": len(seeds), "final_step": steps[-1], "final_mean": means[-1],
        "final_std": stds[-1], "best_mean": means[best], "best_std": stds[best],
        "best_step": steps[best], "steps_to_baseline_final": reach,
    }  # fmt: skip


def test_summary_csv_has_independently_computed_numbers(tmp_path):
    _write_grid(tmp_path)
    assert summarize.main(["--grid", str(tmp_path), "--baseline", "adam"]) == 0
    with open(tmp_path / "summary.csv", newline="") as f:
        got = {(r["task"], r["optimizer"]): r for r in csv.DictReader(f)}
    assert set(got) == {(t, o) for t, o, _ in CURVES}
    for task in ("Cheetah", "Walker"):
        adam_final = _expected(task, "adam")["final_mean"]
        for opt in ("adam", "adan"):
            want = _expected(task, opt, adam_final)
            row = got[(task, opt)]
            for key, value in want.items():
                if value == "":
                    assert row[key] == "", (task, opt, key)
                else:
                    assert float(row[key]) == pytest.approx(value, abs=0.006), (task, opt, key)
    # Spot values, worked by hand: adan on Cheetah reaches adam's final (290) at step 10.
    assert got[("Cheetah", "adan")]["steps_to_baseline_final"] == "10"
    assert got[("Cheetah", "adan")]["final_step"] == "30"
    assert float(got[("Cheetah", "adan")]["final_mean"]) == pytest.approx(460.0)
    assert got[("Walker", "adan")]["steps_to_baseline_final"] == ""  # never reaches 50
    assert (tmp_path / "Cheetah.png").stat().st_size > 1000
    assert "not reached" in (tmp_path / "summary.md").read_text()


def test_confidence_band_is_student_t_interval():
    import numpy as np

    values = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 7.0]])
    lo, hi = summarize.confidence_band(values, 0.75)
    half = 1.6037 * values.std(axis=0, ddof=1) / math.sqrt(3)  # t_0.875(2 df), printed tables
    assert np.allclose(hi - values.mean(axis=0), half, atol=1e-3)
    assert np.allclose(values.mean(axis=0) - lo, half, atol=1e-3)


def test_summary_has_the_difference_from_the_baseline(tmp_path):
    _write_grid(tmp_path)
    assert summarize.main(["--grid", str(tmp_path), "--note", "protocol line"]) == 0
    text = (tmp_path / "summary.md").read_text()
    assert (
        "## Difference from the baseline" in text
        and "| Cheetah | adan − adam | final return |" in text
    )
    assert "Walker, final return: too few seeds to tell (1 vs 1" in text
    assert "- protocol line" in text
    adan = statistics.fmean([500.0, 420.0, 460.0])
    adam = statistics.fmean([250.0, 330.0])
    with open(tmp_path / "summary.csv", newline="") as f:
        row = {(r["task"], r["optimizer"]): r for r in csv.DictReader(f)}[("Cheetah", "adan")]
    assert float(row["final_diff"]) == pytest.approx(adan - adam, abs=0.006)
    assert 0 < float(row["final_p"]) < 1


def test_long_csv_round_trip_gives_the_same_summary(tmp_path):
    _write_grid(tmp_path / "grid")
    curves = summarize.load_grid_curves(tmp_path / "grid")
    summarize.write_long_csv(curves, tmp_path / "curves.csv")
    again = summarize.load_long_csv(tmp_path / "curves.csv")
    assert again == curves
    assert summarize.summarize(again) == summarize.summarize(curves)
