"""Real fairseq runs through ``fairseq-hydra-train`` and the paper's YAML configs, shrunk to
the micro scale: pretraining with ``--optimizer adan`` learns and uses adan-core, a stopped run
resumes from ``checkpoint_last.pt``, GLUE fine-tuning scores both protocols, bad options fail
clearly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "fairseq",
    reason="fairseq is not installed: these tests run in the tox env bert-fairseq "
    "(tox -e bert-fairseq), see apps/bert_glue/README.md",
)

import torch  # noqa: E402
from adan_bert import fairseq_train  # noqa: E402
from adan_repro import rundir  # noqa: E402

MICRO = [
    "--scale",
    "micro",
    "--seq-len",
    "64",
    "--threads",
    "1",
    "--log-interval",
    "5",
    "--adan-impl",
    "foreach",
]
STEPS = 30


def pretrain_args(data: dict, out: Path, recipe: str = "adan", *extra: str) -> list[str]:
    return [
        "--recipe",
        recipe,
        "--corpus",
        str(data["corpus"]),
        "--bpe-dir",
        str(data["bpe"]),
        "--out",
        str(out),
        "--cache-dir",
        str(out.parent / "cache"),
        "--max-steps",
        str(STEPS),
        "--eval-every",
        "10",
        "--save-every",
        "10",
        *MICRO,
        *extra,
    ]


def run_pretrain(argv: list[str]) -> str:
    args = fairseq_train.build_pretrain_parser().parse_args(argv)
    return fairseq_train.pretrain(args, log=lambda m: None)


def load_checkpoint(path: Path) -> dict:
    import adan_bert.fairseq_plugin  # noqa: F401 - allow-lists what fairseq checkpoints pickle

    return torch.load(path, map_location="cpu")


@pytest.fixture(scope="module")
def adan_run(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pre") / "adan"
    assert run_pretrain(pretrain_args(tiny_data, out)) == "finished"
    return out


def test_hydra_train_with_adan_lowers_the_loss_and_steps_adan_core(adan_run):
    rows = rundir.read_eval(adan_run / rundir.EVAL)
    assert [r["step"] for r in rows] == [10, 20, 30]
    losses = [float(r["valid_loss"]) for r in rows]
    assert losses[-1] < losses[0] - 0.1, losses
    assert float(rows[0]["valid_loss"]) == pytest.approx(
        float(rows[0]["valid_loss_bits"]) * 0.6931471805599453
    )
    ckpt = load_checkpoint(adan_run / rundir.FINAL / fairseq_train.FINAL_CHECKPOINT)
    assert ckpt["optimizer_history"][-1]["optimizer_name"] == "FairseqAdan"
    state = ckpt["last_optimizer_state"]["state"]
    assert state, "the optimizer state is empty"
    for s in state.values():  # adan-core's own state names, every parameter stepped each update
        assert {"exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad"} <= set(s)
        assert int(s["step"]) == STEPS
        assert s["exp_avg_sq"].abs().sum() > 0
    group = ckpt["last_optimizer_state"]["param_groups"][0]
    assert tuple(group["betas"]) == (0.98, 0.92, 0.99) and group["weight_decay"] == 0.02
    assert ckpt["cfg"]["optimization"]["clip_norm"] == 5.0  # the recipe's, through fairseq
    provenance = json.loads((adan_run / "provenance.json").read_text())
    assert "adan_core.adan.Adan: foreach" in json.dumps(provenance)
    done = json.loads((adan_run / rundir.DONE).read_text())
    assert done["steps"] == STEPS
    assert not (adan_run / fairseq_train.CHECKPOINTS).exists()  # final/ keeps the model


def test_checkpoints_need_nothing_beyond_the_allow_list(adan_run):
    path = adan_run / rundir.FINAL / fairseq_train.FINAL_CHECKPOINT
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    allowed = {
        f"{g.__module__}.{g.__qualname__}"
        for g in __import__("adan_bert.fairseq_adan").fairseq_adan.checkpoint_globals()
    }
    assert needed <= allowed, needed - allowed


def test_a_stopped_run_resumes_from_checkpoint_last(tiny_data, tmp_path):
    """The first call stops fairseq at update 20 (as a kill after the checkpoint would); the
    same command then continues from checkpoint_last.pt to 30 instead of starting over."""
    out = tmp_path / "run"
    argv = pretrain_args(tiny_data, out)
    with pytest.raises(RuntimeError, match="stopped before update 30"):
        run_pretrain([*argv, "--fairseq-override", "optimization.max_update=20"])
    assert (out / "checkpoints" / "checkpoint_last.pt").is_file()
    assert not rundir.is_done(out)
    assert run_pretrain(argv) == "finished"
    log = (out / fairseq_train.LOG).read_text()
    assert "Loaded checkpoint" in log and "@ 20 updates" in log
    ckpt = load_checkpoint(out / rundir.FINAL / fairseq_train.FINAL_CHECKPOINT)
    steps = {int(s["step"]) for s in ckpt["last_optimizer_state"]["state"].values()}
    assert steps == {STEPS}, "the optimizer state did not carry over the resume"
    logged = fairseq_train.read_log(out / fairseq_train.LOG)
    assert min(logged["train_inner"]) == 5 and max(logged["train_inner"]) == STEPS
    assert run_pretrain(argv) == "skipped"


def test_adam_recipe_runs_fairseq_adam(tiny_data, tmp_path):
    out = tmp_path / "adam"
    assert run_pretrain(pretrain_args(tiny_data, out, "adam")) == "finished"
    ckpt = load_checkpoint(out / rundir.FINAL / fairseq_train.FINAL_CHECKPOINT)
    assert ckpt["optimizer_history"][-1]["optimizer_name"] == "FairseqAdam"
    group = ckpt["last_optimizer_state"]["param_groups"][0]
    assert tuple(group["betas"]) == (0.9, 0.98) and group["weight_decay"] == 0.01


@pytest.mark.parametrize("task", ["CoLA", "STS-B"])
def test_glue_finetuning_scores_both_protocols(task, adan_run, tiny_data, tmp_path):
    out = tmp_path / task
    argv = [
        "--task",
        task,
        "--recipe",
        "adan",
        "--checkpoint",
        str(adan_run / rundir.FINAL),
        "--glue-dir",
        str(tiny_data["glue"]),
        "--bpe-dir",
        str(tiny_data["bpe"]),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        "--scale",
        "micro",
        "--max-steps",
        "12",
        "--heldout-fraction",
        "0.25",
        "--threads",
        "1",
        "--log-interval",
        "4",
        "--adan-impl",
        "foreach",
    ]
    args = fairseq_train.build_finetune_parser().parse_args(argv)
    assert fairseq_train.finetune(args, log=lambda m: None) == "finished"
    done = json.loads((out / rundir.DONE).read_text())
    primary = {"CoLA": "mcc", "STS-B": "pearson"}[task]
    assert done["metric"] == primary
    assert {"paper", "clean", "last"} <= set(done)
    assert done["last"]["step"] == 12
    rows = rundir.read_eval(out / rundir.EVAL)
    assert len(rows) >= 2
    for r in rows:
        for column in (f"dev_{primary}", f"heldout_{primary}", f"dev_paper_{primary}", "dev_loss"):
            assert r[column] not in ("", "nan"), (column, r)
            if column != "dev_loss":
                assert -1.0 <= float(r[column]) <= 1.0
    log = (out / fairseq_train.LOG).read_text()
    assert "Loaded checkpoint" in log  # the pretrained weights, not a fresh model
    subsets = {"CoLA": ("valid", "valid1", "heldout"), "STS-B": ("valid", "heldout")}[task]
    logged = fairseq_train.read_log(out / fairseq_train.LOG)
    assert set(subsets) <= set(logged)
    if task == "CoLA":  # the paper's scoring drops dev's first line: 23 of the 24 examples
        valid_bsz = sum(v["bsz"] for v in logged["valid"].values()) / len(logged["valid"])
        valid1_bsz = sum(v["bsz"] for v in logged["valid1"].values()) / len(logged["valid1"])
        assert valid1_bsz < valid_bsz


def test_bad_optimizer_option_is_a_clear_error(tiny_data, tmp_path):
    argv = pretrain_args(tiny_data, tmp_path / "bad")
    argv += ["--fairseq-override", "optimizer.adan_betas='(0.9, 2)'"]
    cmd = [sys.executable, "-m", "adan_bert.fairseq_train", "pretrain", *argv]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2
    assert "optimizer.adan_betas='(0.9, 2)' is not three numbers in [0, 1)" in done.stderr
    assert not rundir.is_done(tmp_path / "bad")


def test_transformers_only_flags_are_refused(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="GPT-2 BPE"):
        run_pretrain(pretrain_args(tiny_data, tmp_path / "x", "adan", "--tokenizer", "trained"))
    with pytest.raises(FileNotFoundError, match="lacks encoder.json"):
        argv = pretrain_args(tiny_data, tmp_path / "y")
        argv[argv.index("--bpe-dir") + 1] = str(tmp_path / "nowhere")
        run_pretrain(argv)
