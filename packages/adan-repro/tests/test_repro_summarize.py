"""Summaries of hand-made curves, checked against numbers computed here independently."""

from __future__ import annotations

import csv
import json
import math
import statistics

import numpy as np
import pytest
from adan_repro import curves as C
from adan_repro import stats, summarize

# (task, optimizer, seed) -> {step: value}. Seed 3 of adan lacks step 20, so that step is
# dropped for adan (alignment on common steps), and so for the adan-vs-adam difference too.
CURVES = {
    ("Cheetah", "adam", 1): {0: 0.0, 10: 100.0, 20: 300.0, 30: 250.0},
    ("Cheetah", "adam", 2): {0: 10.0, 10: 140.0, 20: 260.0, 30: 330.0},
    ("Cheetah", "adam", 3): {0: 4.0, 10: 120.0, 20: 280.0, 30: 270.0},
    ("Cheetah", "adan", 1): {0: 5.0, 10: 310.0, 20: 400.0, 30: 500.0},
    ("Cheetah", "adan", 2): {0: 0.0, 10: 270.0, 20: 380.0, 30: 420.0},
    ("Cheetah", "adan", 3): {0: 2.0, 10: 300.0, 30: 460.0},
    ("Walker", "adam", 1): {0: 1.0, 10: 50.0},
    ("Walker", "adan", 1): {0: 1.0, 10: 20.0},
}


def _as_curves(table):
    out: dict = {}
    for (task, opt, seed), curve in table.items():
        out.setdefault((task, opt), {})[seed] = sorted(curve.items())
    return out


def _write_grid(root, table=CURVES, metric="score"):
    for (task, opt, seed), curve in table.items():
        d = root / "runs" / task / opt / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"task": task, "optimizer": opt, "seed": seed}))
        with open(d / "eval.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", metric, "other"])
            for step, value in curve.items():
                w.writerow([step, value, 0.0])


def _seeds(task, opt, table=CURVES):
    return [c for (t, o, _), c in table.items() if t == task and o == opt]


def _expected(task, opt, baseline_final=None, lower=False, table=CURVES):
    seeds = _seeds(task, opt, table)
    steps = sorted(set.intersection(*(set(c) for c in seeds)))
    means = [statistics.fmean(c[s] for c in seeds) for s in steps]
    stds = [statistics.pstdev([c[s] for c in seeds]) for s in steps]
    best = (min if lower else max)(range(len(steps)), key=lambda i: means[i])
    reach = ""
    if baseline_final is not None:
        ok = (lambda m: m <= baseline_final) if lower else (lambda m: m >= baseline_final)
        reach = next((steps[i] for i in range(len(steps)) if ok(means[i])), "")
    return {
        "n_seeds": len(seeds), "final_step": steps[-1], "final_mean": means[-1],
        "final_std": stds[-1], "best_mean": means[best], "best_std": stds[best],
        "best_step": steps[best], "steps_to_baseline_final": reach,
    }  # fmt: skip


def _t_cdf(x, df):
    """Student-t CDF by trapezoid integration of the density (independent of SciPy)."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    n, h = 100_000, abs(x) / 100_000
    ys = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
    half = h * (sum(ys) - (ys[0] + ys[-1]) / 2)
    return 0.5 + math.copysign(half, x)


def _welch_by_hand(a, b):
    """(diff, t, df, p) by the textbook formulas."""
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    diff = statistics.fmean(a) - statistics.fmean(b)
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return diff, t, df, 2 * (1 - _t_cdf(abs(t), df))


def _read(path):
    with open(path, newline="") as f:
        return {(r["task"], r["optimizer"]): r for r in csv.DictReader(f)}


def test_summary_numbers_match_an_independent_computation(tmp_path):
    _write_grid(tmp_path)
    argv = ["--grid", str(tmp_path), "--metric", "score", "--baseline", "adam"]
    assert summarize.main(argv) == 0
    got = _read(tmp_path / "summary.csv")
    assert set(got) == {(t, o) for t, o, _ in CURVES}
    for task in ("Cheetah", "Walker"):
        adam_final = _expected(task, "adam")["final_mean"]
        for opt in ("adam", "adan"):
            for key, value in _expected(task, opt, adam_final).items():
                row = got[(task, opt)]
                if value == "":
                    assert row[key] == "", (task, opt, key)
                else:
                    assert float(row[key]) == pytest.approx(value, abs=0.006), (task, opt, key)
    # Worked by hand: adam's final mean on Cheetah is 283.3; adan's mean is 293.3 at step 10.
    assert got[("Cheetah", "adan")]["steps_to_baseline_final"] == "10"
    assert float(got[("Cheetah", "adan")]["final_mean"]) == pytest.approx(460.0)
    assert got[("Walker", "adan")]["steps_to_baseline_final"] == ""  # never reaches 50

    # Difference from adam: final values at step 30, areas over steps 0, 10, 30.
    adan, adam = _seeds("Cheetah", "adan"), _seeds("Cheetah", "adam")
    diff, t, df, p = _welch_by_hand([c[30] for c in adan], [c[30] for c in adam])
    row = got[("Cheetah", "adan")]
    assert float(row["final_diff"]) == pytest.approx(176.67, abs=0.006)
    assert float(row["final_diff"]) == pytest.approx(diff, abs=0.006)
    assert float(row["final_p"]) == pytest.approx(p, rel=1e-3)

    def area(c):  # trapezoids over 0-10 and 10-30, divided by the span 30
        return ((c[0] + c[10]) / 2 * 10 + (c[10] + c[30]) / 2 * 20) / 30

    a_diff, _, a_df, a_p = _welch_by_hand([area(c) for c in adan], [area(c) for c in adam])
    assert float(row["auc_diff"]) == pytest.approx(a_diff, abs=0.006)
    assert float(row["auc_p"]) == pytest.approx(a_p, rel=1e-3)
    text = (tmp_path / "summary.md").read_text()
    assert "Cheetah, final score: adan is better than adam" in text
    assert "Walker, final score: too few seeds to tell (1 vs 1" in text
    assert got[("Walker", "adan")]["final_p"] == "" and got[("Cheetah", "adam")]["final_p"] == ""
    assert (tmp_path / "Cheetah.png").stat().st_size > 1000


def _t_quantile(q, df):
    lo, hi = 0.0, 50.0
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < q else (lo, mid)
    return lo


def test_welch_against_a_worked_example():
    # a = 1, 2, 3 (var 1) and b = 4, 6, 8, 10 (var 20/3): diff -5, se sqrt(1/3 + 5/3) = sqrt(2),
    # Welch-Satterthwaite df = 4 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 4.0755 (Student's would be 5).
    a, b = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0, 10.0]
    d = stats.welch(np.array(a), np.array(b))
    diff, t, df, p = _welch_by_hand(a, b)
    assert diff == d.diff == -5.0 and t == pytest.approx(-5 / math.sqrt(2))
    assert df == pytest.approx(4.0755, abs=1e-4)
    half = _t_quantile(0.975, df) * math.sqrt(2)
    assert d.ci_low == pytest.approx(-5 - half, abs=1e-4)
    assert d.ci_high == pytest.approx(-5 + half, abs=1e-4)
    assert d.p == pytest.approx(p, rel=1e-4)
    same = stats.welch(np.array([1.0, 1.0]), np.array([1.0, 1.0]))
    assert not same.testable and "no spread" in same.reason


def test_lower_is_better_flips_best_reach_and_verdict(tmp_path):
    # Perplexity-like curves: adan falls faster and ends lower on every seed.
    table = {
        ("PTB", "adam", 1): {0: 500.0, 1: 200.0, 2: 120.0, 3: 100.0},
        ("PTB", "adam", 2): {0: 520.0, 1: 210.0, 2: 118.0, 3: 104.0},
        ("PTB", "adam", 3): {0: 510.0, 1: 190.0, 2: 125.0, 3: 110.0},
        ("PTB", "adan", 1): {0: 505.0, 1: 150.0, 2: 95.0, 3: 90.0},
        ("PTB", "adan", 2): {0: 515.0, 1: 140.0, 2: 92.0, 3: 91.0},
        ("PTB", "adan", 3): {0: 500.0, 1: 160.0, 2: 99.0, 3: 93.0},
    }
    rows = summarize.run(_as_curves(table), tmp_path, "adam", direction="lower", label="ppl")
    got = {r["optimizer"]: r for r in rows}
    for opt in ("adam", "adan"):
        base_final = _expected("PTB", "adam", table=table)["final_mean"]
        want = _expected("PTB", opt, base_final, lower=True, table=table)
        for key, value in want.items():
            assert got[opt][key] == pytest.approx(value), (opt, key)
    assert got["adan"]["best_step"] == 3 and got["adan"]["steps_to_baseline_final"] == 2
    assert got["adam"]["steps_to_baseline_final"] == 3
    text = (tmp_path / "summary.md").read_text()
    assert "PTB, final ppl: adan is better than adam" in text
    assert "the minimum of the seed-mean curve" in text and "Lower is better" in text
    higher = summarize.summarize(_as_curves(table), "adam", "higher")
    assert {r["optimizer"]: r["best_step"] for r in higher} == {"adam": 0, "adan": 0}


def test_unknown_metric_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    _write_grid(tmp_path)
    assert summarize.main(["--grid", str(tmp_path), "--metric", "return"]) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'return'" in err and "score, other" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


def test_unwritable_output_folder_is_a_clear_error(tmp_path, capsys):
    _write_grid(tmp_path / "grid")
    (tmp_path / "file").write_text("x")
    cases = [(tmp_path / "file", "exists and is not a directory"),
             (tmp_path / "file" / "sub", "cannot create output directory")]  # fmt: skip
    for out, message in cases:
        argv = ["--grid", str(tmp_path / "grid"), "--metric", "score", "--out", str(out)]
        assert summarize.main(argv) == 2 and message in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"


def test_a_failure_half_way_leaves_the_old_summary(tmp_path, monkeypatch):
    curves = _as_curves(CURVES)
    summarize.run(curves, tmp_path, "adam")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    calls = []

    def draw(task, *args, **kwargs):
        calls.append(task)
        if len(calls) == 2:
            raise RuntimeError("plot failed")
        (args[1]).write_bytes(b"new plot")

    monkeypatch.setattr(summarize, "draw_task", draw)
    with pytest.raises(RuntimeError):
        summarize.run(_as_curves({**CURVES, ("Cheetah", "adan", 1): {0: 9.0, 10: 9.0}}),
                      tmp_path, "adam")  # fmt: skip
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_bad_direction_and_long_csv_round_trip(tmp_path):
    curves = _as_curves(CURVES)
    with pytest.raises(ValueError, match="direction must be 'higher' or 'lower'"):
        summarize.run(curves, tmp_path, "adam", direction="up")
    assert not list(tmp_path.iterdir())
    C.write_long_csv(curves, tmp_path / "curves.csv")
    again = C.load_long_csv(tmp_path / "curves.csv")
    assert again == curves and summarize.summarize(again) == summarize.summarize(curves)
    (tmp_path / "bad.csv").write_text("task,seed\nA,1\n")
    with pytest.raises(ValueError, match="missing columns"):
        C.load_long_csv(tmp_path / "bad.csv")


def test_reference_curves_are_read_and_drawn(tmp_path):
    rows = "task,label,step,value\nCheetah,paper,10,5\nCheetah,paper,0,1\n"
    (tmp_path / "ref.csv").write_text(rows)
    refs = summarize.load_references(tmp_path / "ref.csv")
    assert list(refs["Cheetah"][0].steps) == [0, 10] and refs["Cheetah"][0].label == "paper"
    summarize.run(_as_curves(CURVES), tmp_path / "out", "adam", references=refs)
    assert (tmp_path / "out" / "Cheetah.png").stat().st_size > 1000


def test_confidence_band_is_the_student_t_interval():
    values = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 7.0]])
    lo, hi = stats.confidence_band(values, 0.75)
    half = 1.6037  # t_0.875 with 2 degrees of freedom, from a printed table
    assert np.allclose(hi - values.mean(axis=0), half * values.std(axis=0, ddof=1) / math.sqrt(3),
                       atol=1e-3)  # fmt: skip
    assert np.allclose(values.mean(axis=0) - lo, hi - values.mean(axis=0))
