"""The grid summary on fake grid folders written here by hand: known pretraining curves and
known GLUE dev scores, so every number in the summary files can be recomputed with numpy and
scipy. No training, no network, no real data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from adan_bert import summary
from adan_repro.stats import Difference, welch
from scipy import stats

TASK_METRICS = {"CoLA": "mcc", "RTE": "accuracy"}
PIPES = (("adam", "adam"), ("adan", "adan"), ("adam", "adan"), ("adan", "adam"))
PRETRAIN_SEEDS = (1, 2)
SEEDS = (1, 2)
PROTOCOLS = ("paper", "clean", "last")
PRETRAIN_FINAL = {("adam", 1): 2.0, ("adam", 2): 2.1, ("adan", 1): 1.8, ("adan", 2): 1.9}
PRETRAIN_STEPS = (0, 100, 200, 300)
# This run has a config and an eval.csv but no done.json: still training.
UNFINISHED = ("RTE", "adan", "adan", 2, 2)
PNG = b"\x89PNG\r\n\x1a\n"


def _glue_values() -> dict[tuple, float]:
    """Dev fractions per (task, pre, ft, pretrain seed, seed, protocol). Each pipeline gets its
    own shift and spread, so Welch's test differs from Student's on these numbers."""
    rng = np.random.default_rng(7)
    shift = {"adam→adam": 0.0, "adan→adan": 0.05, "adam→adan": 0.02, "adan→adam": 0.01}
    spread = {"adam→adam": 0.01, "adan→adan": 0.04, "adam→adan": 0.02, "adan→adam": 0.03}
    values = {}
    for task in TASK_METRICS:
        for pre, ft in PIPES:
            pipe = f"{pre}→{ft}"
            for ps in PRETRAIN_SEEDS:
                for seed in SEEDS:
                    for protocol in PROTOCOLS:
                        noise = spread[pipe] * rng.uniform(-1.0, 1.0)
                        v = 0.5 + shift[pipe] + noise
                        values[(task, pre, ft, ps, seed, protocol)] = round(float(v), 6)
    return values


VALUES = _glue_values()


def _json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_grid(
    root: Path,
    clean_tasks: tuple[str, ...] = tuple(TASK_METRICS),
    pretrain: bool = True,
) -> Path:
    """A grid folder in the layout adan_bert.grid writes (only the files the summary reads)."""
    if pretrain:
        for (opt, seed), final in PRETRAIN_FINAL.items():
            d = root / "runs" / "pretrain" / opt / f"seed{seed}"
            _json(d / "config.json", {"task": "pretrain", "optimizer": opt, "seed": seed,
                                      "settings": {"max_steps": 300}})  # fmt: skip
            lines = ["step,valid_loss,train_loss,lr,tokens"]
            for k, step in enumerate(PRETRAIN_STEPS):
                loss = final + 0.5 * (len(PRETRAIN_STEPS) - 1 - k)  # falls to `final`
                lines.append(f"{step},{loss},{loss + 0.1},0.001,{step * 1000}")
            (d / "eval.csv").write_text("\n".join(lines) + "\n")
            _json(d / "done.json", {"seconds": 1.0})
            # The saved model's Hugging Face config: not a run, must not be read as one.
            _json(d / "final" / "config.json", {"model_type": "roberta"})
    for task, metric in TASK_METRICS.items():
        for pre, ft in PIPES:
            for ps in PRETRAIN_SEEDS:
                label = f"{task}.pre-{pre}-{ps}"
                for seed in SEEDS:
                    d = root / "runs" / label / ft / f"seed{seed}"
                    _json(d / "config.json", {
                        "task": label, "glue_task": task, "optimizer": ft, "seed": seed,
                        "pretrain_optimizer": pre, "pretrain_seed": str(ps), "scale": "quick",
                        "recipe": {"lr": 1e-5},
                    })  # fmt: skip
                    # A fine-tuning eval.csv has other columns than a pretraining one.
                    (d / "eval.csv").write_text("step,dev_loss,dev_mcc\n50,0.6,0.1\n")
                    if (task, pre, ft, ps, seed) == UNFINISHED:
                        continue
                    v = {p: VALUES[(task, pre, ft, ps, seed, p)] for p in PROTOCOLS}
                    done = {
                        "paper": {"step": 50, "selected_on": "dev_accuracy",
                                  "selected_value": 0.7, "dev": v["paper"]},
                        "last": {"step": 300, "dev": v["last"]},
                        "metric": metric,
                        "seconds": 1.0,
                    }  # fmt: skip
                    if task in clean_tasks:
                        done["clean"] = {"step": 100, "selected_on": f"heldout_{metric}",
                                         "selected_value": 0.5, "dev": v["clean"]}  # fmt: skip
                    _json(d / "done.json", done)
    return root


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def finished(task: str, pre: str, ft: str) -> list[tuple[int, int]]:
    """The (pretrain seed, seed) pairs of a pipeline's finished runs on a task."""
    return [
        (ps, s)
        for ps in PRETRAIN_SEEDS
        for s in SEEDS
        if (task, pre, ft, ps, s) != UNFINISHED
    ]  # fmt: skip


def expected_values(task: str, pre: str, ft: str, protocol: str) -> np.ndarray:
    """×100 scores of a pipeline's finished runs; task "average": the mean over both tasks of
    each (pretrain seed, seed) that finished on every task."""
    if task == "average":
        pairs = set.intersection(*(set(finished(t, pre, ft)) for t in TASK_METRICS))
        return np.array([
            100 * np.mean([VALUES[(t, pre, ft, ps, s, protocol)] for t in TASK_METRICS])
            for ps, s in sorted(pairs)
        ])  # fmt: skip
    return np.array([100 * VALUES[(task, pre, ft, ps, s, protocol)]
                     for ps, s in finished(task, pre, ft)])  # fmt: skip


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    out = make_grid(tmp_path_factory.mktemp("grid"))
    summary.write(out, "Test grid", notes=["a note from the caller"])
    return out


def summary_rows(out: Path) -> dict[tuple[str, str, str], dict]:
    return {(r["task"], r["protocol"], r["pipeline"]): r for r in read_csv(out / "summary.csv")}


def test_glue_csv_has_one_row_per_finished_run_and_protocol_scaled_by_100(grid):
    rows = read_csv(grid / "glue.csv")
    expected = {
        (task, pre, str(ps), ft, str(seed), p)
        for (task, pre, ft, ps, seed, p) in VALUES
        if (task, pre, ft, ps, seed) != UNFINISHED
    }
    got = {(r["task"], r["pretrain_optimizer"], r["pretrain_seed"], r["optimizer"], r["seed"],
            r["protocol"]) for r in rows}  # fmt: skip
    assert got == expected and len(rows) == len(expected)  # no duplicates, unfinished absent
    steps = {"paper": "50", "clean": "100", "last": "300"}
    for r in rows:
        key = (r["task"], r["pretrain_optimizer"], r["optimizer"], int(r["pretrain_seed"]),
               int(r["seed"]), r["protocol"])  # fmt: skip
        assert float(r["value"]) == pytest.approx(100 * VALUES[key], abs=1e-4)
        assert r["pipeline"] == f"{r['pretrain_optimizer']}→{r['optimizer']}"
        assert r["metric"] == TASK_METRICS[r["task"]]
        assert r["step"] == steps[r["protocol"]]


def test_summary_csv_statistics_equal_numpy(grid):
    rows = summary_rows(grid)
    keys = {(t, p, f"{pre}→{ft}") for t in [*TASK_METRICS, "average"] for p in PROTOCOLS
            for pre, ft in PIPES}  # fmt: skip
    assert set(rows) == keys
    for task, protocol, pipe in keys:
        pre, ft = pipe.split("→")
        v = expected_values(task, pre, ft, protocol)
        r = rows[(task, protocol, pipe)]
        assert int(r["n"]) == len(v)
        for name, want in (("mean", v.mean()), ("std", v.std()), ("min", v.min()),
                           ("max", v.max())):  # fmt: skip
            assert float(r[name]) == pytest.approx(want, abs=1e-4), (task, protocol, pipe, name)
    assert rows[("CoLA", "paper", "adan→adan")]["metric"] == "mcc"


def test_differences_equal_scipy_welch(grid):
    rows = summary_rows(grid)
    for (task, protocol, pipe), r in rows.items():
        if pipe == "adam→adam":
            assert r["diff"] == r["p"] == r["baseline"] == ""
            continue
        pre, ft = pipe.split("→")
        a = expected_values(task, pre, ft, protocol)
        b = expected_values(task, "adam", "adam", protocol)
        res = stats.ttest_ind(a, b, equal_var=False)
        ci = res.confidence_interval(0.95)
        assert r["baseline"] == "adam→adam"
        assert float(r["diff"]) == pytest.approx(a.mean() - b.mean(), abs=1e-4)
        assert float(r["diff_ci_low"]) == pytest.approx(ci.low, abs=1e-4)
        assert float(r["diff_ci_high"]) == pytest.approx(ci.high, abs=1e-4)
        assert float(r["p"]) == pytest.approx(res.pvalue, rel=1e-3)


def test_average_only_over_combinations_with_every_task(grid):
    rows = summary_rows(grid)
    # adan→adan pretrain seed 2 / seed 2 did not finish RTE: its CoLA score must not count.
    assert int(rows[("average", "paper", "adan→adan")]["n"]) == 3
    assert int(rows[("average", "paper", "adam→adam")]["n"]) == 4
    complete = expected_values("average", "adan", "adan", "paper")
    assert float(rows[("average", "paper", "adan→adan")]["mean"]) == pytest.approx(
        complete.mean(), abs=1e-4
    )
    with_partial = np.append(complete, 100 * VALUES[("CoLA", "adan", "adan", 2, 2, "paper")])
    assert abs(with_partial.mean() - complete.mean()) > 1e-3  # the check above can tell


def test_files_pngs_and_pretraining_part(grid):
    for name in ("glue_paper.png", "glue_clean.png", "pretrain/pretrain.png"):
        data = (grid / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, name
    assert not (grid / "glue_last.png").exists()
    assert (grid / "pretrain" / "summary.md").read_text().startswith("# Test grid: MLM")
    pre = {r["optimizer"]: r for r in read_csv(grid / "pretrain" / "summary.csv")}
    assert float(pre["adan"]["final_mean"]) == pytest.approx(1.85, abs=0.006)
    assert pre["adam"]["final_step"] == "300"
    points = read_csv(grid / "curves.csv")
    assert len(points) == len(PRETRAIN_FINAL) * len(PRETRAIN_STEPS)
    assert {(r["optimizer"], r["seed"]) for r in points} == {(o, str(s)) for o, s in PRETRAIN_FINAL}
    assert not list(grid.glob(".*.tmp")) and not list((grid / "pretrain").glob(".*.tmp"))


def test_markdown_tables_pretraining_difference_and_notes(grid):
    text = (grid / "summary.md").read_text()
    assert text.startswith("# Test grid\n")
    for needed in ("## How to read this", "**paper**", "**clean**", "**last**",
                   "- a note from the caller",
                   "1 run(s) not finished yet, left out: `runs/RTE.pre-adan-2/adan/seed2`\n",
                   "[glue_paper.png](glue_paper.png)", "[glue_clean.png](glue_clean.png)",
                   "[pretrain/summary.md](pretrain/summary.md)"):  # fmt: skip
        assert needed in text, needed
    v = expected_values("CoLA", "adan", "adan", "paper")
    assert f"{v.mean():.1f} ± {v.std():.1f} (4)" in text
    a = [PRETRAIN_FINAL[("adan", s)] for s in (1, 2)]
    b = [PRETRAIN_FINAL[("adam", s)] for s in (1, 2)]
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert f"adan − adam: {np.mean(a) - np.mean(b):+.3f} [{ci.low:+.3f}, {ci.high:+.3f}]" in text
    d = welch(expected_values("average", "adan", "adan", "clean"),
                      expected_values("average", "adam", "adam", "clean"), 0.95)  # fmt: skip
    assert (
        f"| average | adan→adan − adam→adam | {d.diff:+.2f} | [{d.ci_low:+.2f}, {d.ci_high:+.2f}]"
        in text
    )


def test_verdict_words():
    base = {"diff": 1.0, "n_a": 4, "n_b": 4, "confidence": 0.95}
    yes = Difference(ci_low=0.5, ci_high=1.5, p=0.01, **base)
    no = Difference(ci_low=-0.5, ci_high=2.5, p=0.3, **base)
    untestable = Difference(ci_low=None, ci_high=None, p=None, reason="too few seeds", **base)
    assert summary.verdict(yes) == "higher, distinguishable from noise at 5%"
    assert summary.verdict(no) == "not distinguishable from noise at 5%"
    assert summary.verdict(untestable) == "too few seeds"


def test_runs_without_clean_still_summarize(tmp_path):
    out = make_grid(tmp_path, clean_tasks=("RTE",), pretrain=False)
    summary.write(out, "No clean for CoLA")
    glue = read_csv(out / "glue.csv")
    assert not [r for r in glue if r["task"] == "CoLA" and r["protocol"] == "clean"]
    assert [r for r in glue if r["task"] == "CoLA" and r["protocol"] == "paper"]
    rows = summary_rows(out)
    assert ("RTE", "clean", "adam→adam") in rows and ("CoLA", "clean", "adam→adam") not in rows
    assert ("average", "clean", "adam→adam") not in rows  # CoLA is missing from every one
    assert ("average", "paper", "adam→adam") in rows
    assert (out / "glue_clean.png").read_bytes().startswith(PNG)
    text = (out / "summary.md").read_text()
    assert "No finished pretraining runs: this part is skipped." in text
    assert not (out / "pretrain").exists() and not (out / "curves.csv").exists()


def test_wanted_restricts_the_runs_read(tmp_path):
    out = make_grid(tmp_path)
    summary.write(out, "Subset", wanted={"CoLA.pre-adam-1", "CoLA.pre-adan-1"})
    glue = read_csv(out / "glue.csv")
    assert {r["task"] for r in glue} == {"CoLA"} and {r["pretrain_seed"] for r in glue} == {"1"}
    assert len(glue) == 4 * len(SEEDS) * len(PROTOCOLS)
    assert not (out / "pretrain").exists()  # "pretrain" was not wanted
    assert "this part is skipped" in (out / "summary.md").read_text()


def test_no_finished_runs_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="no finished runs"):
        summary.write(tmp_path, "Empty")
    d = tmp_path / "runs" / "pretrain" / "adam" / "seed1"
    _json(d / "config.json", {"task": "pretrain", "optimizer": "adam", "seed": 1})
    (d / "eval.csv").write_text("step,valid_loss\n0,9.0\n")
    with pytest.raises(ValueError, match="no finished runs"):  # running, not finished
        summary.write(tmp_path, "Only running")
    _json(d / "done.json", {})
    with pytest.raises(ValueError, match="wanted"):
        summary.write(tmp_path, "Nothing wanted", wanted={"CoLA.pre-adam-1"})
    assert not (tmp_path / "summary.md").exists()


def test_an_error_while_writing_leaves_the_old_files(tmp_path, monkeypatch):
    out = make_grid(tmp_path)
    summary.write(out, "First")
    before = {n: (out / n).read_bytes() for n in ("summary.md", "glue.csv", "summary.csv")}
    done = out / "runs" / "CoLA.pre-adam-1" / "adam" / "seed1" / "done.json"
    info = json.loads(done.read_text())
    info["paper"]["dev"] = 0.99
    done.write_text(json.dumps(info))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(summary.summarize, "run", fail)
    with pytest.raises(OSError, match="disk full"):
        summary.write(out, "Second")
    assert {n: (out / n).read_bytes() for n in before} == before
    assert not list(out.glob(".*.tmp"))


def test_main_resummarizes_a_folder(tmp_path, capsys):
    out = make_grid(tmp_path, pretrain=False)
    assert summary.main([str(out), "--title", "Again", "--note", "by hand"]) == 0
    text = (out / "summary.md").read_text()
    assert text.startswith("# Again\n") and "- by hand" in text
    assert summary.main([str(tmp_path / "missing")]) == 2
    assert "error: no finished runs" in capsys.readouterr().err
