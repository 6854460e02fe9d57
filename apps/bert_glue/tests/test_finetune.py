"""GLUE fine-tuning on generated TSVs from a tiny pretrained checkpoint: end to end, both
protocols, resume, and the errors a user can cause."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from adan_bert import finetune as F
from adan_bert import glue
from adan_repro import rundir
from adan_repro.testing import kill_after_first_checkpoint

MICRO = ["--scale", "micro", "--threads", "1", "--log-interval", "1000"]


def _args(pretrained, glue_dir, out, *extra):
    return ["--checkpoint", str(pretrained), "--glue-dir", str(glue_dir), "--out", str(out),
            *MICRO, *extra]  # fmt: skip


@pytest.mark.parametrize("task,recipe", [("CoLA", "adan"), ("STS-B", "adan"), ("RTE", "adam")])
def test_end_to_end_on_generated_glue(pretrained, glue_dir, tmp_path, task, recipe):
    seen = {}

    def inspect(trainer):
        opt = F.unwrapped(trainer.optimizer)
        seen["type"] = type(opt).__name__
        seen["state"] = all(len(opt.state[p]) > 0 for g in opt.param_groups for p in g["params"])

    out = tmp_path / "ft"
    args = F.build_parser().parse_args(
        _args(pretrained, glue_dir, out, "--task", task, "--recipe", recipe, "--max-steps", "6")
    )
    assert F.finetune(args, log=lambda m: None, on_trained=inspect) == "finished"
    assert seen == {"type": {"adan": "Adan", "adam": "AdamW"}[recipe], "state": True}
    t = glue.get_task(task)
    rows = rundir.read_eval(out / rundir.EVAL)
    assert [r["step"] for r in rows] == [3, 6]
    assert list(rows[0]) == F.eval_columns(t)
    done = json.loads((out / rundir.DONE).read_text())
    assert done["metric"] == t.primary
    best_dev = max(rows, key=lambda r: (r[f"dev_{t.paper_select}"], -r["step"]))
    if t.paper_select == "loss":
        best_dev = min(rows, key=lambda r: (r["dev_loss"], r["step"]))
    assert done["paper"]["step"] == best_dev["step"]
    best_held = max(rows, key=lambda r: (r[f"heldout_{t.primary}"], -r["step"]))
    assert done["clean"] == {"step": best_held["step"], "selected_on": f"heldout_{t.primary}",
                             "selected_value": best_held[f"heldout_{t.primary}"],
                             "dev": best_held[f"dev_{t.primary}"]}  # fmt: skip
    config = json.loads((out / rundir.CONFIG).read_text())
    # the held-out part is 10 % of the generated 48 training examples, capped by the scale
    assert config["heldout_fraction"] == pytest.approx(min(0.1, 50 / 48))
    assert not (out / "trainer").exists()


def test_protocols_pick_their_rows():
    t = glue.get_task("CoLA")
    rows = [
        {"step": 1, "dev_accuracy": 0.70, "dev_paper_mcc": 0.10, "dev_mcc": 0.11,
         "heldout_mcc": 0.30, "dev_loss": 0.6},
        {"step": 2, "dev_accuracy": 0.80, "dev_paper_mcc": 0.20, "dev_mcc": 0.21,
         "heldout_mcc": 0.10, "dev_loss": 0.5},
        {"step": 3, "dev_accuracy": 0.75, "dev_paper_mcc": 0.40, "dev_mcc": 0.41,
         "heldout_mcc": 0.20, "dev_loss": 0.4},
    ]  # fmt: skip
    got = F.protocols(rows, t, with_heldout=True)
    # paper: best dev *accuracy* (not MCC), reporting the paper's scoring of MCC
    assert (got["paper"]["step"], got["paper"]["dev"]) == (2, 0.20)
    # clean: best held-out MCC, reporting dev MCC on every example
    assert (got["clean"]["step"], got["clean"]["dev"]) == (1, 0.11)
    assert got["last"] == {"step": 3, "dev": 0.41}
    stsb = F.protocols(
        [{**r, "dev_pearson": r["dev_mcc"], "dev_paper_pearson": r["dev_mcc"],
          "heldout_pearson": r["heldout_mcc"]} for r in rows], glue.get_task("STS-B"), False
    )  # fmt: skip
    assert stsb["paper"]["step"] == 3 and "clean" not in stsb  # lowest dev loss


def test_scorer_scales_stsb_back_and_scores_cola_like_the_paper():
    from types import SimpleNamespace

    from sklearn.metrics import matthews_corrcoef

    labels = np.array([1, 0, 1, 1, 0, 0])
    logits = np.array([[0, 1], [1, 0], [1, 0], [0, 1], [1, 0], [0, 1]], dtype=float)
    got = F.scorer(glue.get_task("CoLA"))(SimpleNamespace(predictions=logits, label_ids=labels))
    pred = logits.argmax(1)
    assert got["mcc"] == pytest.approx(matthews_corrcoef(labels, pred))
    assert got["paper_mcc"] == pytest.approx(matthews_corrcoef(labels[1:], pred[1:]))
    assert got["accuracy"] == pytest.approx((pred == labels).mean())
    scores = np.array([0.1, 0.5, 0.9, 0.3])  # the head predicts score / 5
    gold = np.array([0.2, 0.4, 1.0, 0.2])
    got = F.scorer(glue.get_task("STS-B"))(SimpleNamespace(predictions=scores[:, None],
                                                           label_ids=gold))  # fmt: skip
    assert got["pearson"] == pytest.approx(np.corrcoef(scores, gold)[0, 1])


def test_killed_run_resumes_from_its_checkpoint(pretrained, glue_dir, tmp_path):
    extra = ["--task", "RTE", "--max-steps", "60"]
    cmd = [sys.executable, "-m", "adan_bert.finetune",
           *_args(pretrained, glue_dir, tmp_path / "cut", *extra)]  # fmt: skip
    step = kill_after_first_checkpoint(cmd, tmp_path / "cut")
    assert 0 < step < 60
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    steps = [r["step"] for r in rundir.read_eval(tmp_path / "cut" / rundir.EVAL)]
    assert steps == [30, 60]


def test_errors_name_the_problem(pretrained, glue_dir, tmp_path, capsys):
    out = str(tmp_path / "x")
    assert F.main(_args(pretrained, glue_dir, out, "--task", "CoLAA")) == 2
    assert "CoLAA" in capsys.readouterr().err
    assert F.main(_args(pretrained, tmp_path / "no_glue", out, "--task", "CoLA")) == 2
    assert "--glue-dir" in capsys.readouterr().err
    # a checkpoint whose vocabulary does not match the tokenizer
    other = tmp_path / "other_tok"
    shutil.copytree(pretrained, other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["vocab_size"] += 7
    (other / "config.json").write_text(json.dumps(cfg))
    assert F.main(_args(other, glue_dir, out, "--task", "CoLA")) == 2
    err = capsys.readouterr().err
    assert "vocabulary has" in err and "tokenizer has" in err
    assert F.main(_args(tmp_path, glue_dir, out, "--task", "CoLA")) == 2
    assert "no model checkpoint" in capsys.readouterr().err
