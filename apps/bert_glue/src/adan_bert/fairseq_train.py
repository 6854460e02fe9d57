"""Pretraining and GLUE fine-tuning runs on fairseq: ``fairseq-hydra-train`` with the paper's
YAML configs, in the same run folders as the transformers backend.

Each run takes the same flags as :mod:`adan_bert.pretrain` / :mod:`adan_bert.finetune` (scale,
recipe, overrides) plus fairseq's own (``--bpe-dir``, ``--fairseq-override``). The scale's
numbers and the recipe's optimizer settings are passed as hydra overrides of the committed
config (``fairseq_configs/``), so a run at scale ``paper`` is the paper's config itself.

fairseq runs in a child process (``python -m fairseq_cli.hydra_train``) writing JSON log lines
to ``fairseq.log``; this module turns them into ``eval.csv`` and ``done.json`` exactly as the
transformers backend writes them, so :mod:`adan_bert.summary` reads both alike. fairseq resumes
by itself from ``checkpoints/checkpoint_last.pt``: the same command continues a killed run.

Units: fairseq logs losses in bits (log base 2; the paper's 1.848 is bits); ``eval.csv`` stores
nats like the transformers backend (``valid_loss``) and keeps the bits (``valid_loss_bits``).
Scores are logged in percent with one decimal; ``done.json`` stores fractions as the other
backend does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from adan_repro import provenance, rundir
from adan_repro.progress import elapsed

from . import data, fairseq_data, glue
from .fairseq_adan import IMPLEMENTATION_MARK, USER_DIR
from .presets import FINETUNE_SCALES, MODEL_SIZES, PretrainSettings, heldout_fraction

PACKAGE = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE / "fairseq_configs"
LOG = "fairseq.log"
CHECKPOINTS = "checkpoints"
FINAL_CHECKPOINT = "checkpoint.pt"  # inside final/
PROVENANCE_PACKAGES = (
    "fairseq",
    "ve-fairseq",
    "fairseq-fixed",
    "hydra-core",
    "omegaconf",
    "adan-core",
    "adan-repro",
)
LN2 = math.log(2.0)
PRETRAIN_COLUMNS = ("step", "valid_loss", "valid_loss_bits", "train_loss", "lr", "tokens")
# a stats line in either logging format: fairseq's "... | valid | {json}" and, under hydra,
# "[time][valid][INFO] - {json}"
_LINE = re.compile(r"(?:\| (?P<a>\w+) \| |\]\[(?P<b>\w+)\]\[INFO\] - )(?P<json>\{\".*\})\s*$")


def pretrain_config(recipe: str) -> Path:
    return CONFIG_DIR / "pretraining" / f"{recipe}.yaml"


def finetune_config(task: str, recipe: str, paper_quirks: bool) -> Path:
    """The paper's config (``finetuning/paper/``) with ``paper_quirks``, else our fixed one.
    MRPC has only ours: the paper skipped it."""
    paper = CONFIG_DIR / "finetuning" / "paper" / f"{task}-{recipe}.yaml"
    if paper_quirks and paper.is_file():
        return paper
    return CONFIG_DIR / "finetuning" / f"{task}-{recipe}.yaml"


# --------------------------------------------------------------------------------------------
# Overrides: the scale and the recipe, as hydra arguments.


def _fmt(x: float) -> str:
    return repr(float(x))


def optimizer_overrides(opt, clip: float, adan_impl: str | None = None) -> list[str]:
    """The recipe's optimizer settings (``presets.OptRecipe``) as fairseq overrides."""
    betas = "'(" + ", ".join(_fmt(b) for b in opt.betas) + ")'"
    out = [
        f"optimization.lr=[{_fmt(opt.lr)}]",
        f"optimization.clip_norm={_fmt(clip)}",
        f"optimizer.weight_decay={_fmt(opt.weight_decay)}",
    ]
    if opt.opt == "adan":
        out += [f"optimizer.adan_betas={betas}", f"optimizer.adan_eps={_fmt(opt.eps)}"]
        if adan_impl:
            out.append(f"optimizer.adan_impl={adan_impl}")
    else:
        out += [f"optimizer.adam_betas={betas}", f"optimizer.adam_eps={_fmt(opt.eps)}"]
    return out


def model_overrides(size_name: str) -> list[str]:
    size = MODEL_SIZES[size_name]
    return [
        f"model.encoder_layers={size.layers}",
        f"model.encoder_embed_dim={size.hidden}",
        f"model.encoder_ffn_embed_dim={size.ffn}",
        f"model.encoder_attention_heads={size.heads}",
        f"model.max_positions={size.max_positions}",
    ]


def running_overrides(run_dir: Path, seed: int, log_interval: int) -> list[str]:
    """Where fairseq writes, its seed, the plugin, and the device: fp16 as the paper on a GPU,
    fp32 on CPU (fairseq's --fp16/--bf16 do not run on CPU)."""
    out = [
        f"common.user_dir={USER_DIR}",
        f"common.seed={seed}",
        "common.log_format=json",
        f"common.log_interval={log_interval}",
        f"checkpoint.save_dir={run_dir / CHECKPOINTS}",
        "checkpoint.no_epoch_checkpoints=true",
        "checkpoint.keep_interval_updates=1",
        "checkpoint.keep_best_checkpoints=-1",
        "hydra.run.dir=.",
        "hydra.output_subdir=null",
    ]
    if not torch.cuda.is_available():
        out += [
            "common.cpu=true",
            "common.fp16=false",
            "common.bf16=false",
            "dataset.num_workers=0",
        ]
    return out


def processes() -> int:
    """fairseq's processes on this machine: one per GPU (fairseq starts them), one on CPU."""
    return max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1


def per_process_batch(batch: int, world: int) -> int:
    """fairseq's ``dataset.batch_size`` is per process: the scale's batch split over them."""
    if batch % world:
        raise ValueError(
            f"batch {batch} does not split over {world} fairseq processes (GPUs): use a batch "
            f"divisible by {world}, or set distributed_training.distributed_world_size"
        )
    return batch // world


def pretrain_overrides(s, data_dir: Path, run_dir: Path, log_interval: int) -> list[str]:
    """``presets.PretrainSettings`` as overrides of the pretraining config."""
    world = processes()
    return [
        f"distributed_training.distributed_world_size={world}",
        f"task.data={data_dir}",
        f"task.tokens_per_sample={s.seq_len}",
        f"task.mask_prob={_fmt(s.masking.prob)}",
        f"task.leave_unmasked_prob={_fmt(s.masking.leave_unmasked)}",
        f"task.random_token_prob={_fmt(s.masking.random_token)}",
        *model_overrides(s.model),
        f"dataset.batch_size={per_process_batch(s.batch, world)}",
        f"dataset.validate_interval_updates={s.eval_every}",
        f"checkpoint.save_interval_updates={s.save_every}",
        f"optimization.max_update={s.max_steps}",
        f"lr_scheduler.warmup_updates={s.warmup}",
        f"lr_scheduler.total_num_update={s.max_steps}",
        *optimizer_overrides(s.opt, s.opt.max_grad_norm),
        *running_overrides(run_dir, s.seed, log_interval),
    ]


def hydra_command(config: Path, overrides: Sequence[str]) -> list[str]:
    """``fairseq-hydra-train --config-dir DIR --config-name NAME overrides...`` (this Python).

    Each ``key=value`` becomes ``++key=value`` (set it, whether or not the YAML names the key:
    a config group read from YAML only has the keys it spells out); ``hydra.*`` keys and ones
    already prefixed with ``+`` are passed as they are."""
    if not config.is_file():
        raise FileNotFoundError(f"fairseq config {config} not found (is adan_bert installed?)")
    forced = [o if o.startswith(("+", "~", "hydra.")) else f"++{o}" for o in overrides]
    return [
        sys.executable,
        "-m",
        "fairseq_cli.hydra_train",
        "--config-dir",
        str(config.parent),
        "--config-name",
        config.stem,
        *forced,
    ]


# --------------------------------------------------------------------------------------------
# Running fairseq and reading its log.


def run_fairseq(cmd: list[str], run_dir: Path, threads: int | None, log: Callable, tag: str):
    """Run ``cmd`` in ``run_dir`` (hydra writes there), appending its output to ``fairseq.log``
    and echoing validation lines; RuntimeError with the log's tail when it fails."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # progress lines as they come, not in blocks
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    path = run_dir / LOG
    with path.open("a", encoding="utf-8") as out:
        out.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.Popen(
            cmd, cwd=run_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for line in proc.stdout:
            out.write(line)
            m = _LINE.search(line)
            subset = m and (m["a"] or m["b"])
            if subset and subset not in ("train_inner", "train"):
                stats = json.loads(m["json"])
                step = stats.get(f"{subset}_num_updates", "?")
                loss = stats.get(f"{subset}_loss", "?")
                log(f"[{tag}] step {step}: {subset} loss {loss} bits")
        code = proc.wait()
    if code != 0:
        tail = path.read_text(encoding="utf-8").splitlines()[-25:]
        raise RuntimeError(f"fairseq exited with {code}; the end of {path}:\n" + "\n".join(tail))


def read_log(path: Path) -> dict[str, dict[int, dict]]:
    """``{tag: {num_updates: stats}}`` from fairseq's JSON log lines (``train_inner``,
    ``valid``, ``heldout``, ...); a step logged twice (a resumed run) keeps its last line.
    Keys lose their ``<tag>_`` prefix; values are floats where they parse."""
    out: dict[str, dict[int, dict]] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _LINE.search(line)
        if not m:
            continue
        tag, stats = m["a"] or m["b"], json.loads(m["json"])
        prefix = "" if tag == "train_inner" else f"{tag}_"
        clean = {}
        for k, v in stats.items():
            k = k[len(prefix) :] if prefix and k.startswith(prefix) else k
            try:
                clean[k] = float(v)
            except (TypeError, ValueError):
                clean[k] = v
        if "num_updates" in clean:
            out.setdefault(tag, {})[int(clean["num_updates"])] = clean
    return out


def implementation_from_log(path: Path) -> str | None:
    """The adan-core implementation the plugin logged (None for fairseq's own optimizers)."""
    found = None
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if IMPLEMENTATION_MARK in line:
                found = line.split(IMPLEMENTATION_MARK, 1)[1].strip()
    return found


def pretrain_rows(logged: dict[str, dict[int, dict]], batch: int, seq_len: int) -> list[dict]:
    """``eval.csv`` rows of a pretraining run: one per validation, losses in nats."""
    train = logged.get("train_inner", {})
    rows = []
    for step, v in sorted(logged.get("valid", {}).items()):
        before = [train[k] for k in sorted(train) if k <= step]
        rows.append(
            {
                "step": step,
                "valid_loss": v["loss"] * LN2,
                "valid_loss_bits": v["loss"],
                "train_loss": before[-1]["loss"] * LN2 if before else math.nan,
                "lr": before[-1]["lr"] if before else math.nan,
                "tokens": step * batch * seq_len,
            }
        )
    return rows


def _record(run_dir: Path, cmd: list[str]) -> None:
    impl = implementation_from_log(run_dir / LOG) or "fairseq's own optimizer"
    current = provenance.collect(PACKAGE, PROVENANCE_PACKAGES, impl, extra={"fairseq_command": cmd})
    provenance.record(run_dir, current, 0)


# --------------------------------------------------------------------------------------------
# Pretraining.


def build_pretrain_parser() -> argparse.ArgumentParser:
    from .pretrain import build_parser

    p = build_parser()
    p.prog = "python -m adan_bert.fairseq_train pretrain"
    p.description = (
        "MLM pretraining with the paper's Adam or Adan recipe on fairseq "
        "(fairseq-hydra-train and the paper's YAML). Resumes by itself."
    )
    _add_fairseq_args(p)
    return p


def _add_fairseq_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fairseq")
    g.add_argument(
        "--fairseq-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra hydra override for fairseq, e.g. distributed_training."
        "distributed_world_size=8 (repeatable)",
    )
    g.add_argument(
        "--adan-impl",
        choices=["auto", "fused", "foreach", "single"],
        help="adan-core implementation for the plugin (default: the config's, auto)",
    )
    g.add_argument(
        "--data-dir",
        type=Path,
        help="binarized data folder (default: under --cache-dir, keyed by inputs)",
    )


def settings(args: argparse.Namespace) -> PretrainSettings:
    """The run's ``PretrainSettings``; ValueError for the transformers backend's own flags."""
    from .pretrain import settings_from

    if args.tokenizer not in (None, "gpt2"):
        raise ValueError(
            "the fairseq backend always uses GPT-2 BPE (as the paper did): drop "
            f"--tokenizer {args.tokenizer}"
        )
    if args.bf16:
        raise ValueError(
            "--bf16 is not a fairseq-backend flag: fairseq runs fp16 on a GPU as "
            "the paper did, fp32 on CPU"
        )
    return settings_from(args)


def _cache(args: argparse.Namespace) -> Path:
    return Path(args.cache_dir or data.default_cache()) / "fairseq"


def pretrain_data(args: argparse.Namespace, s: PretrainSettings | None = None) -> tuple[Path, str]:
    """The binarized corpus folder of a pretraining run, and the corpus file's digest."""
    s = s or settings(args)
    corpus_key = data.file_digest(Path(args.corpus))[:16]
    folder = args.data_dir or _cache(args) / f"corpus-{corpus_key}-valid{s.valid_fraction}"
    return Path(folder), corpus_key


def prepare_pretrain_data(args: argparse.Namespace, log: Callable[[str], None] = print) -> Path:
    """Build (or reuse) a pretraining run's binarized corpus."""
    s = settings(args)
    bpe = fairseq_data.check_bpe_dir(args.bpe_dir)
    folder, _ = pretrain_data(args, s)
    return fairseq_data.prepare_corpus(Path(args.corpus), bpe, folder, s.valid_fraction, log=log)


def pretrain(args: argparse.Namespace, log: Callable[[str], None] = print) -> str:
    """Run, resume or skip one fairseq pretraining run; "finished", "skipped" or "dry-run"."""
    s = settings(args)
    run_dir = rundir.prepare_dir(args.out)
    if rundir.is_done(run_dir):
        log(f"[fairseq pretrain] {run_dir} is finished (done.json); nothing to do")
        return "skipped"
    fairseq_data.check_bpe_dir(args.bpe_dir)
    data_dir, corpus_key = pretrain_data(args, s)
    overrides = pretrain_overrides(s, Path(data_dir), run_dir, args.log_interval)
    if args.adan_impl and s.opt.opt == "adan":
        overrides.append(f"optimizer.adan_impl={args.adan_impl}")
    cmd = hydra_command(pretrain_config(s.recipe), overrides + list(args.fairseq_override))
    if args.dry_run:
        log(f"[fairseq pretrain] {' '.join(cmd)}")
        return "dry-run"
    prepare_pretrain_data(args, log)
    config = {
        "task": "pretrain",
        "optimizer": s.recipe,
        "seed": s.seed,
        "backend": "fairseq",
        "settings": s.to_json(),
        "corpus_digest": corpus_key,
    }
    rundir.check_or_write_config(run_dir, config)
    log(
        f"[fairseq pretrain] {s.recipe} at scale {s.scale}: model {s.model}, batch {s.batch} x "
        f"{s.seq_len} tokens, {s.max_steps:,} updates; fairseq log in {run_dir / LOG}"
    )
    start = time.time()
    run_fairseq(cmd, run_dir, args.threads, log, "fairseq pretrain")
    rows = pretrain_rows(read_log(run_dir / LOG), s.batch, s.seq_len)
    if not rows or rows[-1]["step"] < s.max_steps:
        raise RuntimeError(f"fairseq stopped before update {s.max_steps}; see {run_dir / LOG}")
    rundir.write_eval(run_dir / rundir.EVAL, PRETRAIN_COLUMNS, rows)
    _record(run_dir, cmd)
    last = run_dir / CHECKPOINTS / "checkpoint_last.pt"
    rundir.commit_final(run_dir, lambda d: shutil.copy2(last, d / FINAL_CHECKPOINT))
    rundir.write_done(
        run_dir,
        {
            "steps": s.max_steps,
            "final_valid_loss": rows[-1]["valid_loss"],
            "final_valid_loss_bits": rows[-1]["valid_loss_bits"],
            "seconds": time.time() - start,
        },
    )
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)  # final/ holds the model
    log(
        f"[fairseq pretrain] done in {elapsed(time.time() - start)}: valid MLM loss "
        f"{rows[-1]['valid_loss']:.4f} nats ({rows[-1]['valid_loss_bits']:.3f} bits) at step "
        f"{rows[-1]['step']}"
    )
    return "finished"


# --------------------------------------------------------------------------------------------
# GLUE fine-tuning.


def build_finetune_parser() -> argparse.ArgumentParser:
    from .finetune import build_parser

    p = build_parser()
    p.prog = "python -m adan_bert.fairseq_train finetune"
    p.description = (
        "GLUE fine-tuning of a fairseq pretraining run (its final/ folder) with "
        "the paper's recipe on fairseq, scored under both protocols."
    )
    p.add_argument(
        "--bpe-dir",
        type=Path,
        default=os.environ.get("GPT2_BPE_DIR"),
        help="GPT-2 BPE files (default $GPT2_BPE_DIR)",
    )
    p.add_argument("--cache-dir", type=Path, help="binarized data (default ~/.cache/adan_bert)")
    p.add_argument(
        "--model",
        default=None,
        help="the pretrained model's size (default: from its run's config.json)",
    )
    _add_fairseq_args(p)
    return p


def pretrained_size(checkpoint: Path, override: str | None) -> str:
    """The model size of a pretraining run's ``final/`` folder, from its run's config.json."""
    if override:
        return override
    config = Path(checkpoint).parent / rundir.CONFIG
    if not config.is_file():
        raise FileNotFoundError(
            f"{config} not found: --checkpoint takes a fairseq pretraining run's final/ folder "
            "(or pass --model SIZE)"
        )
    return str(json.loads(config.read_text())["settings"]["model"])


def finetune_rows(logged: dict[str, dict[int, dict]], task: glue.GlueTask) -> list[dict]:
    """``eval.csv`` rows (the transformers backend's columns): dev = fairseq's ``valid``,
    the paper's dev scoring = ``valid1`` for CoLA (dev without its first line), held-out =
    ``heldout``; scores as fractions, losses in nats."""
    from .finetune import eval_columns

    names = ["loss", *task.metrics]
    paper_subset = "valid1" if task.name == "CoLA" else "valid"
    rows = []
    for step, dev in sorted(logged.get("valid", {}).items()):
        held = logged.get("heldout", {}).get(step, {})
        paper = logged.get(paper_subset, {}).get(step, {})

        def value(stats: dict, name: str) -> float:
            if name not in stats:
                return math.nan
            return stats[name] * LN2 if name == "loss" else stats[name] / 100.0

        row = {"step": step, "epoch": dev.get("epoch", math.nan)}
        row.update({f"dev_{m}": value(dev, m) for m in names})
        row[f"dev_paper_{task.primary}"] = value(paper, task.primary)
        row.update({f"heldout_{m}": value(held, m) for m in names})
        rows.append(row)
    columns = eval_columns(task)
    return [{c: r[c] for c in columns} for r in rows]


def finetune_overrides(task, r, scale, size, data_dir, pretrained, run_dir, args) -> list[str]:
    every = max(1, r.max_steps // scale.evals_per_run)
    # fairseq sizes the model's positions by task.max_positions, so inputs are truncated at
    # the pretrained model's length (the paper's 512), not at the scale's max_seq_len
    max_len = MODEL_SIZES[size].max_positions
    subsets = ["valid"] + (["valid1"] if task.name == "CoLA" else [])
    if args.heldout:
        subsets.append("heldout")
    schedule = (
        "lr_scheduler.total_num_update"
        if r.schedule == "linear"
        else "lr_scheduler.lr_period_updates"
    )
    period = r.max_steps if r.schedule == "linear" else r.max_steps - r.warmup
    return [
        "distributed_training.distributed_world_size=1",  # the paper: one GPU per GLUE run
        f"task.data={data_dir}",
        f"task.max_positions={max_len}",
        "task.shorten_method=truncate",
        f"checkpoint.restore_file={pretrained}",
        *model_overrides(size),
        f"dataset.batch_size={r.batch}",
        f"dataset.valid_subset='{','.join(subsets)}'",
        f"dataset.validate_interval_updates={every}",
        "dataset.validate_interval=1000000",
        "checkpoint.save_interval=1000000",
        f"checkpoint.save_interval_updates={every}",
        "checkpoint.no_last_checkpoints=false",
        f"optimization.max_update={r.max_steps}",
        f"lr_scheduler.warmup_updates={r.warmup}",
        f"{schedule}={period}",
        *optimizer_overrides(r.opt, r.opt.max_grad_norm),
        *running_overrides(run_dir, args.seed, args.log_interval),
    ]


def finetune_data(args: argparse.Namespace) -> tuple[Path, float]:
    """The binarized folder of a GLUE run's task, and the fraction of train held out in it."""
    task = glue.get_task(args.task)
    n_train = len(glue.read_split(args.glue_dir, task, "train"))
    fraction = (
        heldout_fraction(FINETUNE_SCALES[args.scale], n_train)
        if args.heldout_fraction is None
        else args.heldout_fraction
    )
    key = data.file_digest(glue.task_folder(args.glue_dir, task) / "train.tsv")[:12]
    folder = args.data_dir or _cache(args) / f"glue-{task.name}-{key}-heldout{fraction:.6g}"
    return Path(folder), fraction


def prepare_finetune_data(args: argparse.Namespace, log: Callable[[str], None] = print) -> Path:
    """Build (or reuse) a GLUE run's binarized task."""
    bpe = fairseq_data.check_bpe_dir(args.bpe_dir)
    folder, fraction = finetune_data(args)
    return fairseq_data.prepare_glue_task(args.glue_dir, args.task, bpe, folder, fraction, log=log)


def finetune(args: argparse.Namespace, log: Callable[[str], None] = print) -> str:
    """Run, resume or skip one fairseq GLUE run; "finished", "skipped" or "dry-run"."""
    from .finetune import protocols, recipe_from, run_config

    task = glue.get_task(args.task)
    scale = FINETUNE_SCALES[args.scale]
    r = recipe_from(args, task)
    run_dir = rundir.prepare_dir(args.out)
    if rundir.is_done(run_dir):
        log(f"[fairseq finetune] {run_dir} is finished (done.json); nothing to do")
        return "skipped"
    fairseq_data.check_bpe_dir(args.bpe_dir)
    size = pretrained_size(Path(args.checkpoint), args.model)
    pretrained = Path(args.checkpoint) / FINAL_CHECKPOINT
    if not pretrained.is_file() and not args.dry_run:
        raise FileNotFoundError(
            f"{pretrained} not found: --checkpoint takes a fairseq pretraining run's final/ folder"
        )
    data_dir, fraction = finetune_data(args)
    args.heldout = fraction > 0
    overrides = finetune_overrides(task, r, scale, size, data_dir, pretrained, run_dir, args)
    if args.adan_impl and r.opt.opt == "adan":
        overrides.append(f"optimizer.adan_impl={args.adan_impl}")
    config_file = finetune_config(task.name, args.recipe, args.paper_quirks)
    cmd = hydra_command(config_file, overrides + list(args.fairseq_override))
    if args.dry_run:
        log(f"[fairseq finetune] {' '.join(cmd)}")
        return "dry-run"
    prepare_finetune_data(args, log)
    config = run_config(
        args,
        task,
        r,
        fraction,
        backend="fairseq",
        fairseq_config=str(config_file.relative_to(CONFIG_DIR)),
    )
    rundir.check_or_write_config(run_dir, config)
    start = time.time()
    run_fairseq(cmd, run_dir, args.threads, log, f"fairseq {task.name}")
    rows = finetune_rows(read_log(run_dir / LOG), task)
    if not rows or rows[-1]["step"] < r.max_steps:
        raise RuntimeError(f"fairseq stopped before update {r.max_steps}; see {run_dir / LOG}")
    from .finetune import eval_columns

    rundir.write_eval(run_dir / rundir.EVAL, eval_columns(task), rows)
    _record(run_dir, cmd)
    picks = protocols(rows, task, args.heldout)
    rundir.write_done(run_dir, {**picks, "seconds": time.time() - start})
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
    summary = ", ".join(
        f"{p} {100 * picks[p]['dev']:.1f}" for p in ("paper", "clean", "last") if p in picks
    )
    log(
        f"[fairseq finetune] {task.name} {args.recipe} done in "
        f"{elapsed(time.time() - start)}: dev {task.primary} {summary}"
    )
    return "finished"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {
        "pretrain": (build_pretrain_parser, pretrain),
        "finetune": (build_finetune_parser, finetune),
    }
    if not argv or argv[0] not in commands:
        print(
            "usage: python -m adan_bert.fairseq_train {pretrain,finetune} ... (--help)",
            file=sys.stderr,
        )
        return 2
    parser, run = commands[argv[0]]
    args = parser().parse_args(argv[1:])
    try:
        run(args, log=lambda m: print(m, flush=True))
    except (ValueError, FileNotFoundError, RuntimeError, rundir.RunConflictError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
