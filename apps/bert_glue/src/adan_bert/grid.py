"""The BERT reproduction grid on adan_repro's runner: pretraining, then GLUE fine-tuning.

Stage 1 pretrains one model per (recipe, seed) into ``OUT/runs/pretrain/<recipe>/seed<N>``.
Stage 2 fine-tunes each of those checkpoints on every task with every fine-tuning recipe and
seed, into ``OUT/runs/<TASK>.pre-<recipe>-<N>/<ft recipe>/seed<M>``: the paper's comparison is
Adan-pretrained + Adan-fine-tuned against Adam + Adam, and the crossed pairs tell the
pretraining's share from the fine-tuning recipe's. Every run resumes from its last checkpoint,
so the same command finishes an interrupted grid; ``--shard K/N`` runs one of N disjoint
slices of each stage (a Slurm job array sharing one ``--out``; stage 2 starts once every
pretraining run is finished). ``--nproc-per-node N`` starts each run under ``torchrun``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from adan_repro import grid as harness
from adan_repro import rundir
from adan_repro.grid import RunSpec
from adan_repro.rundir import prepare_dir

from .presets import FINETUNE_SCALES, PRETRAIN_SCALES

PAPER_TASKS = ["CoLA", "SST-2", "STS-B", "MRPC", "RTE"]  # the five GLUE tasks on offer offline
QUICK = {"tasks": ["CoLA", "STS-B"], "pretrain_seeds": [1], "seeds": [1], "scale": "quick"}
QUICK_JOBS = 2  # two tiny runs side by side use 2 cores better than one run on 2 threads
DEFAULT_SEEDS = {"paper": ([1], [1, 2, 3]), "reduced": ([1, 2], [1, 2, 3])}
TITLE = "BERT (RoBERTa recipe) MLM pretraining and GLUE fine-tuning: Adam vs Adan"


def run_pretrain(spec: RunSpec, log) -> str:
    from .pretrain import build_parser, pretrain

    return pretrain(build_parser().parse_args(list(spec.args)), log=log)


def run_finetune(spec: RunSpec, log) -> str:
    from .finetune import build_parser, finetune

    return finetune(build_parser().parse_args(list(spec.args)), log=log)


def run_fairseq_pretrain(spec: RunSpec, log) -> str:
    from . import fairseq_train

    return fairseq_train.pretrain(fairseq_train.build_pretrain_parser().parse_args(spec.args), log)


def run_fairseq_finetune(spec: RunSpec, log) -> str:
    from . import fairseq_train

    return fairseq_train.finetune(fairseq_train.build_finetune_parser().parse_args(spec.args), log)


# backend -> (pretraining target, fine-tuning target, the modules' command lines)
BACKENDS = {
    "transformers": (run_pretrain, run_finetune, ("adan_bert.pretrain",), ("adan_bert.finetune",)),
    "fairseq": (
        run_fairseq_pretrain,
        run_fairseq_finetune,
        ("adan_bert.fairseq_train", "pretrain"),
        ("adan_bert.fairseq_train", "finetune"),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_bert.grid (or bash apps/bert_glue/run.sh)",
        description="Pretrain with each recipe and seed, fine-tune every checkpoint on each GLUE "
        "task with each recipe and seed, then plot and summarize both evaluation protocols. "
        "Resumable: re-run the same command to finish.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        default="transformers",
        help="Hugging Face transformers (Trainer), or fairseq (fairseq-hydra-train with the "
        "paper's YAML configs and the adan plugin; needs fairseq installed, see the README)",
    )
    p.add_argument(
        "--glue-dir",
        default=os.environ.get("GLUE_DIR"),
        help="folder holding CoLA/, SST-2/, ... in GLUE's TSV layout, or 'hub' (default $GLUE_DIR)",
    )
    p.add_argument(
        "--corpus",
        type=Path,
        help="pretraining text, one document per line (default: the GLUE training "
        "sentences of --glue-dir; the paper used BookCorpus + Wikipedia)",
    )
    p.add_argument(
        "--tasks", nargs="+", help=f"GLUE tasks (default {PAPER_TASKS}; --quick: {QUICK['tasks']})"
    )
    p.add_argument(
        "--opts",
        nargs="+",
        default=["adam", "adan"],
        choices=["adam", "adan"],
        help="pretraining recipes",
    )
    p.add_argument(
        "--ft-opts",
        nargs="+",
        default=["adam", "adan"],
        choices=["adam", "adan"],
        help="fine-tuning recipes, each applied to every pretrained checkpoint",
    )
    p.add_argument(
        "--scale",
        "--preset",
        dest="scale",
        choices=["paper", "reduced", "quick", "micro"],
        help="pretraining and fine-tuning scale (presets.py); default paper, --quick: quick; "
        "micro is for the tests",
    )
    p.add_argument(
        "--pretrain-seeds",
        nargs="+",
        help="pretraining seeds (default: paper 1, reduced 1 2, quick 1)",
    )
    harness.add_grid_args(
        p,
        out=Path("results/bert_glue"),
        seeds_help="fine-tuning seeds per checkpoint (default 1-3; quick 1)",
        jobs=None,  # 1, or 2 with --quick (jobs_of)
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="the pipeline in minutes on 2 CPU cores: a tiny model pretrained with "
        "both recipes, fine-tuned on CoLA and STS-B; proves nothing about the paper",
    )
    p.add_argument(
        "--paper-quirks",
        action="store_true",
        help="fine-tuning keeps the configs' halved epochs for Adan on MNLI/QNLI/QQP",
    )
    p.add_argument("--cache-dir", type=Path, help="tokenized corpora (default ~/.cache/adan_bert)")
    p.add_argument(
        "--bpe-dir",
        type=Path,
        default=os.environ.get("GPT2_BPE_DIR"),
        help="GPT-2 BPE files for the paper scale (default $GPT2_BPE_DIR)",
    )
    p.add_argument("--threads", type=int, help="torch threads per run (default cores / jobs)")
    p.add_argument(
        "--nproc-per-node",
        type=int,
        default=1,
        help="GPUs per run: > 1 starts each run as `torchrun --nproc_per_node N` "
        "(multi-node: run adan_bert.pretrain under your own torchrun line)",
    )
    p.add_argument(
        "--pretrain-args",
        default="",
        help='extra arguments for every adan_bert.pretrain call, e.g. "--bf16"',
    )
    p.add_argument(
        "--finetune-args",
        default="",
        help='extra arguments for every adan_bert.finetune call, e.g. "--fp16"',
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print every run's command and check its settings; train nothing",
    )
    return p


def resolved(args: argparse.Namespace) -> dict:
    """The grid's tasks, scale and seeds after --quick and the scale's defaults."""
    scale = args.scale or (QUICK["scale"] if args.quick else "paper")
    pre_default, ft_default = DEFAULT_SEEDS.get(scale, (QUICK["pretrain_seeds"], QUICK["seeds"]))
    from . import glue

    tasks = [
        glue.get_task(t).name
        for t in (args.tasks or (QUICK["tasks"] if args.quick else PAPER_TASKS))
    ]
    return {
        "scale": scale,
        "tasks": tasks,
        "pretrain_seeds": harness.parse_seeds(args.pretrain_seeds)
        if args.pretrain_seeds
        else pre_default,
        "seeds": harness.parse_seeds(args.seeds) if args.seeds else ft_default,
    }


def jobs_of(args: argparse.Namespace) -> int:
    """--jobs, or 2 for --quick."""
    if args.jobs is not None:
        return args.jobs
    return min(QUICK_JOBS, os.cpu_count() or 1) if args.quick else 1


def corpus_path(args: argparse.Namespace) -> Path:
    """--corpus, or the GLUE training sentences written once into OUT."""
    if args.corpus is not None:
        return args.corpus
    if args.glue_dir is None or str(args.glue_dir).lower() == "hub":
        raise ValueError(
            "no pretraining corpus: pass --corpus FILE (one document per line), or --glue-dir "
            "with a local GLUE folder to pretrain on its training sentences"
        )
    return Path(args.out) / "corpus" / "glue_train_sentences.txt"


def _command(module: str, targs: list[str], nproc: int) -> tuple[str, ...]:
    if nproc <= 1:
        return ()
    return ("torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", module, *targs)


def plan(args: argparse.Namespace, r: dict | None = None) -> tuple[list[RunSpec], list[RunSpec]]:
    """(pretraining runs, fine-tuning runs), each seed-major, with their CLI arguments; ``r``
    is :func:`resolved` (computed here when not given)."""
    r = r or resolved(args)
    jobs = jobs_of(args)
    threads = args.threads or max(1, (os.cpu_count() or 1) // jobs)
    per_run = ["--log-interval", "50"]
    if args.nproc_per_node <= 1:
        per_run += ["--threads", str(threads)]
    corpus = corpus_path(args)
    pre_common = ["--scale", r["scale"], "--corpus", str(corpus), *per_run]
    if args.cache_dir is not None:
        pre_common += ["--cache-dir", str(args.cache_dir)]
    if args.bpe_dir is not None:
        pre_common += ["--bpe-dir", str(args.bpe_dir)]
    fairseq = args.backend == "fairseq"
    if fairseq:
        pre_common += ["--tokenizer", "gpt2"]  # the paper's BPE, whatever the scale's
    pre_common += shlex.split(args.pretrain_args)
    pre = []
    for seed in r["pretrain_seeds"]:
        for opt in args.opts:
            d = harness.run_path(args.out, "pretrain", opt, seed)
            targs = ["--recipe", opt, "--seed", str(seed), "--out", str(d), *pre_common]
            cmd = _command("adan_bert.pretrain", targs, args.nproc_per_node)
            pre.append(RunSpec("pretrain", opt, int(seed), d, cmd, tuple(targs)))
    ft_common = ["--scale", r["scale"], "--glue-dir", str(args.glue_dir), *per_run]
    if args.paper_quirks:
        ft_common.append("--paper-quirks")
    if fairseq:
        ft_common += ["--bpe-dir", str(args.bpe_dir)]
        if args.cache_dir is not None:
            ft_common += ["--cache-dir", str(args.cache_dir)]
    ft_common += shlex.split(args.finetune_args)
    ft = []
    for seed in r["seeds"]:
        for p in pre:
            for task in r["tasks"]:
                label = f"{task}.pre-{p.optimizer}-{p.seed}"
                for opt in args.ft_opts:
                    d = harness.run_path(args.out, label, opt, seed)
                    targs = [
                        "--task",
                        task,
                        "--recipe",
                        opt,
                        "--seed",
                        str(seed),
                        "--checkpoint",
                        str(p.run_dir / rundir.FINAL),
                        "--out",
                        str(d),
                        "--label",
                        label,
                        "--note",
                        f"pretrain_optimizer={p.optimizer}",
                        "--note",
                        f"pretrain_seed={p.seed}",
                        *ft_common,
                    ]
                    cmd = _command("adan_bert.finetune", targs, args.nproc_per_node)
                    ft.append(RunSpec(label, opt, int(seed), d, cmd, tuple(targs)))
    return pre, ft


def validate(args: argparse.Namespace, r: dict, pre: list[RunSpec], ft: list[RunSpec], log) -> None:
    """Fail fast, before any pool starts: every run's flags and settings, the GLUE folder."""
    from . import finetune, glue, pretrain

    fairseq = args.backend == "fairseq"
    if fairseq:
        from . import fairseq_data, fairseq_train

        fairseq_data.check_bpe_dir(args.bpe_dir)
        if args.nproc_per_node > 1:
            raise ValueError(
                "--nproc-per-node is the transformers backend's: fairseq starts its own "
                "processes, pass --pretrain-args '--fairseq-override "
                "distributed_training.distributed_world_size=N' instead"
            )
    for module, runs in ((pretrain, pre), (finetune, ft)):
        parser = module.build_parser()
        if fairseq:
            parser = (
                fairseq_train.build_pretrain_parser()
                if module is pretrain
                else fairseq_train.build_finetune_parser()
            )
        parser.exit_on_error = False
        for run in runs:
            try:
                parsed = parser.parse_args(list(run.args))
            except (argparse.ArgumentError, SystemExit) as exc:
                raise ValueError(f"invalid run arguments {shlex.join(run.args)}: {exc}") from None
            if module is pretrain and fairseq:
                fairseq_train.settings(parsed)
            elif module is pretrain:
                s = pretrain.settings_from(parsed)
                world = max(1, args.nproc_per_node)
                pretrain.accumulation(
                    s.batch, pretrain.micro_batch_for(s.batch, world, parsed.micro_batch), world
                )
            else:
                finetune.recipe_from(parsed, glue.get_task(parsed.task))
    if str(args.glue_dir).lower() != "hub":
        for task in r["tasks"]:
            glue.task_folder(args.glue_dir, task)  # a missing folder fails here, clearly
    log(
        f"[grid] {len(pre)} pretraining runs and {len(ft)} fine-tuning runs; scales: pretraining "
        f"{PRETRAIN_SCALES[r['scale']]}, fine-tuning "
        f"{FINETUNE_SCALES[r['scale']]}"
        + ("; the fairseq backend uses GPT-2 BPE, not the scale's tokenizer" if fairseq else "")
    )


def prepare_fairseq_data(stage: str, runs: list[RunSpec], shard_text: str | None, log) -> None:
    """Build the binarized data this shard's unfinished fairseq runs of one stage need, each
    folder once, before they start side by side: otherwise every parallel run BPE-encodes and
    binarizes the same corpus at the same time, and all but one of them throw the work away."""
    from . import fairseq_train

    if stage == "pretrain":
        parser, where, prepare = (
            fairseq_train.build_pretrain_parser(),
            lambda a: fairseq_train.pretrain_data(a)[0],
            fairseq_train.prepare_pretrain_data,
        )
    else:
        parser, where, prepare = (
            fairseq_train.build_finetune_parser(),
            lambda a: fairseq_train.finetune_data(a)[0],
            fairseq_train.prepare_finetune_data,
        )
    k, n = harness.parse_shard(shard_text)
    built: set[Path] = set()
    for run in harness.shard(runs, k, n):
        if rundir.is_done(run.run_dir):
            continue
        run_args = parser.parse_args(list(run.args))
        folder = where(run_args)
        if folder not in built:
            prepare(run_args, log)
            built.add(folder)


def _prepared(stage: str, runs: list[RunSpec], shard_text: str | None, log) -> bool:
    """:func:`prepare_fairseq_data`, printing a failure as an error instead of raising it."""
    try:
        prepare_fairseq_data(stage, runs, shard_text, log)
    except (ValueError, OSError) as exc:
        print(f"error: preparing the fairseq data of stage {stage}: {exc}", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    try:
        harness.parse_shard(args.shard)  # a bad --shard fails before any run
        if jobs_of(args) < 1:
            raise ValueError(f"--jobs must be at least 1, got {args.jobs}")
        if args.glue_dir is None:
            raise ValueError(
                "no GLUE data: pass --glue-dir with the folder holding CoLA/, SST-2/, ... (GLUE's "
                "TSV layout), or --glue-dir hub to load the tasks from the Hugging Face Hub"
            )
        prepare_dir(args.out)
        r = resolved(args)
        pre, ft = plan(args, r)
        validate(args, r, pre, ft, log)
        if args.dry_run:
            _, _, pre_module, ft_module = BACKENDS[args.backend]
            for r in pre + ft:
                module = pre_module if r.task == "pretrain" else ft_module
                line = r.command or ("python", "-m", *module, *r.args)
                log(f"[grid] {r.tag}: {shlex.join(line)}")
            return 0
        corpus = corpus_path(args)
        if args.corpus is None and not args.summarize_only and not corpus.exists():
            from .data import write_glue_corpus

            write_glue_corpus(Path(args.glue_dir), corpus)
            log(f"[grid] pretraining corpus: the GLUE training sentences, in {corpus}")
    except (ValueError, ImportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def summarize() -> None:
        from . import summary

        wanted = None if args.summarize_only else {r.task for r in pre + ft}
        notes = [
            f"Scale `{r['scale']}`; command: `python -m adan_bert.grid "
            f"{shlex.join(argv if argv is not None else sys.argv[1:])}`"
        ]
        if r["scale"] != "paper":
            notes.append(
                "At this scale the numbers check the pipeline and the recipes' behaviour on a "
                "tiny model; they say nothing about the paper's BERT-base results."
            )
        if args.backend == "fairseq":
            notes.append(
                "Backend: fairseq (fairseq-hydra-train with the paper's YAML configs "
                "and adan-core's `adan` plugin)."
            )
        summary.write(Path(args.out), TITLE, notes=notes, wanted=wanted)

    pre_run, ft_run, _, _ = BACKENDS[args.backend]
    pre_target = None if args.nproc_per_node > 1 else pre_run
    ft_target = None if args.nproc_per_node > 1 else ft_run
    if not args.summarize_only:
        log("[grid] stage 1: pretraining")
        if args.backend == "fairseq" and not _prepared("pretrain", pre, args.shard, log):
            return 2
        report, complete = harness.run_my_shard(
            pre, pre_target, args.shard, jobs_of(args), args.log_interval, args.out, log
        )
        if not harness.all_done(pre):
            log(
                "[grid] stage 2 waits for every pretraining run: rerun the same command when "
                "they are finished"
            )
            return 1 if report.failed else 0
        log("[grid] stage 2: GLUE fine-tuning")
        if args.backend == "fairseq" and not _prepared("finetune", ft, args.shard, log):
            return 2
    return harness.run_then_summarize(
        ft,
        ft_target,
        args,
        summarize,
        log,
        jobs=jobs_of(args),
        files="summary.md, summary.csv, glue.csv, curves.csv, PNGs",
    )


if __name__ == "__main__":
    sys.exit(main())
