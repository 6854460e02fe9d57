"""Train one Transformer-XL language model with any optimizer registered in adan-core.

Examples::

    # one process (CPU or one GPU)
    python -m adan_txl.train --data ../shared/data/ptb --preset ptb-scaled --opt adan --out runs/a
    # the paper's Adan 100k run on 8 GPUs of one node (global batch 60 x 150 tokens)
    torchrun --nproc_per_node 8 -m adan_txl.train --data data/wikitext-103 --run adan-100k \
        --out runs/adan-100k --accum-steps 1

One run, top to bottom: CLI -> settings -> data -> model -> optimizer -> steps. Each step trains
on the next segment of ``tgt_len`` tokens of every one of the ``batch_size`` streams, carrying
each stream's memory to its next segment; the global batch is split over ``torchrun``'s
processes and ``--accum-steps`` micro-batches, so the update is the same on any number of
devices. Every ``eval_interval`` steps the valid perplexity goes to ``eval.csv``, the best model
so far is kept, and a checkpoint is written from which a run started again with the same
arguments continues exactly (model, optimizer, data position, memories, every RNG). At the end
the best model is evaluated under both protocols (see :data:`PROTOCOLS`) into ``done.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from adan_repro import provenance, rundir
from adan_repro.atomic import write_atomic
from adan_repro.progress import elapsed, measured_rate, rate

from adan_core.optim_factory import add_optimizer_args, create_optimizer, describe, implementation

from .convert import save_checkpoint
from .data import (
    DataError,
    OrderedStream,
    adaptive_cutoffs,
    load_corpus,
    micro_columns,
    resolve_data_dir,
)
from .evaluate import PROTOCOLS as EVAL_PROTOCOLS
from .evaluate import evaluate_stream
from .model import Memory, ModelConfigError, TransformerXL, Window, count_parameters
from .presets import (
    OPTIMIZER_PRESETS,
    RUNS,
    SCALES,
    SettingsError,
    TXLSettings,
    lr_at,
    scale_settings,
    warmup_for,
)

EVAL_HEADER = (
    "step",
    "epoch",
    "lr",
    "train_loss",
    "train_ppl",
    "valid_loss",
    "valid_ppl",
    "train_tokens_per_s",
    "train_s",
    "eval_s",
)
# The two evaluations of the best-valid model at the end (adan_txl.evaluate.PROTOCOLS):
# "paper", train.py's own with the training's segments and memory, what the Adan paper's table
# reports; "standard", Transformer-XL's eval.py, what Transformer-XL papers usually report.
PROTOCOLS = tuple(EVAL_PROTOCOLS)
WT103_VOCAB = 267_735  # the dry run's vocabulary without data (the paper's corpus)
BEST = "best_model.pt"
PROVENANCE_PACKAGES = ("adan-core", "adan-repro", "adan-txl", "numpy")


@dataclass
class RunResult:
    status: str  # "finished", "skipped" (already finished), "stopped" or "dry-run"
    step: int
    run_dir: Path | None


# ---- processes -------------------------------------------------------------------------
@dataclass
class Dist:
    """This process's place among ``torchrun``'s (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def start_processes(device_name: str | None) -> Dist:
    """Join ``torchrun``'s process group when its environment is set (NCCL on GPUs, gloo on
    CPUs) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Dist(rank, world, device)


def pick_device(name: str | None, local_rank: int = 0) -> torch.device:
    if name is None:
        name = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SettingsError(f"bad --device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError("--device cuda, but torch sees no CUDA device; use --device cpu")
    return device


# ---- settings --------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_txl.train (or torchrun ... -m adan_txl.train)",
        description="Train one Transformer-XL language model (the Adan paper's WikiText-103 "
        "setting, or a scaled one). Resumes exactly when run again with the same arguments.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data",
        type=Path,
        help="corpus folder: wiki.{train,valid,test}.tokens (WikiText-103), ptb.*.txt or "
        "{train,valid,test}.txt (default $TXL_DATA, else download WikiText-103 into the cache)",
    )
    p.add_argument("--out", type=Path, help="run folder (required unless --dry-run)")
    p.add_argument(
        "--preset",
        default="wt103-base",
        help=f"model, segments, batch and step budget: {', '.join(SCALES)} (adan_txl.presets)",
    )
    p.add_argument(
        "--run",
        choices=sorted(RUNS),
        help="one run of the paper's table: sets --opt, --lr, --warmup-step and --max-step",
    )
    p.add_argument("--seed", type=int, default=1111, help="random seed (the original's 1111)")
    p.add_argument("--max-step", type=int, help="override the preset's number of steps")
    p.add_argument("--warmup-step", type=int, help="linear warm-up steps (default: the preset's)")
    p.add_argument("--eval-interval", type=int, help="steps between valid evaluations")
    p.add_argument("--tgt-len", type=int, help="segment length (training and paper evaluation)")
    p.add_argument("--mem-len", type=int, help="memory length (training and paper evaluation)")
    p.add_argument("--batch-size", type=int, help="global batch: streams per step (paper: 60)")
    p.add_argument(
        "--accum-steps",
        type=int,
        default=1,
        help="micro-batches per step in each process (batch-size / (processes x accum) streams "
        "each); the update does not depend on it",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        help="fp32 (the paper's) or bf16 autocast (default: the preset's, fp32)",
    )
    p.add_argument(
        "--lr-schedule-compat",
        action="store_true",
        help="reproduce the original's schedule off-by-one: its first step runs at the full lr "
        "before the warm-up (default: the warm-up starts at lr/warmup)",
    )
    model = p.add_argument_group("model", "override the preset's architecture")
    sizes = {
        "--n-layer": "decoder layers",
        "--n-head": "attention heads",
        "--d-model": "model width",
        "--d-head": "width of one head",
        "--d-inner": "feed-forward width",
        "--div-val": "adaptive input/softmax divisor: cluster i embeds in d_model / div_val**i",
    }
    for flag, what in sizes.items():
        model.add_argument(flag, type=int, help=what)
    model.add_argument("--dropout", type=float, help="dropout (the paper's 0.1)")
    model.add_argument("--dropatt", type=float, help="attention dropout (the paper's 0.0)")
    p.add_argument("--train-tokens", type=int, help="train on the first N training tokens only")
    p.add_argument("--eval-tokens", type=int, help="evaluate on the first N tokens only")
    p.add_argument(
        "--vocab-size",
        type=int,
        help=f"--dry-run without data: the vocabulary to build for (default {WT103_VOCAB:,}, "
        "WikiText-103's)",
    )
    p.add_argument(
        "--device", help="torch device (default: cuda:LOCAL_RANK if available, else cpu)"
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-interval", type=float, default=60.0, help="seconds between lines")
    p.add_argument("--tag", help="name shown in progress lines (default: the run folder)")
    p.add_argument(
        "--stop-after-steps",
        type=int,
        help="end this session at the first checkpoint after N steps (run again to continue)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="build the model and optimizer, print the parameter count and settings, stop",
    )
    add_optimizer_args(p, default_opt="adan")
    return p


def settings_from_args(args: argparse.Namespace) -> TXLSettings:
    """The run's settings: the scale preset, then ``--run``, then any explicit flag."""
    run = RUNS[args.run] if args.run else None
    return scale_settings(
        args.preset,
        max_step=args.max_step or (run.max_step if run else None),
        warmup_step=args.warmup_step
        if args.warmup_step is not None
        else (run.warmup_step if run else None),  # fmt: skip
        eval_interval=args.eval_interval,
        tgt_len=args.tgt_len,
        mem_len=args.mem_len,
        eval_tgt_len=args.tgt_len,  # the paper evaluates with its training segments
        batch_size=args.batch_size,
        precision=args.precision,
        lr_schedule_compat=True if args.lr_schedule_compat else None,
        train_tokens=args.train_tokens,
        eval_tokens=args.eval_tokens,
        n_layer=args.n_layer,
        n_head=args.n_head,
        d_model=args.d_model,
        d_head=args.d_head,
        d_inner=args.d_inner,
        div_val=args.div_val,
        dropout=args.dropout,
        dropatt=args.dropatt,
    )


def apply_run_preset(args: argparse.Namespace) -> None:
    """``--run`` names the optimizer and its lr; an explicit ``--lr`` still wins."""
    if args.run:
        run = RUNS[args.run]
        args.opt = run.opt
        if args.lr is None:
            args.lr = run.lr


def optimizer_overrides(args: argparse.Namespace) -> dict:
    """The paper's lr, weight decay, betas and eps for ``args.opt`` where no flag sets them.

    Weight decay goes to every parameter, biases, LayerNorm and embeddings included, as in the
    paper's runs (one parameter group).
    """
    preset = OPTIMIZER_PRESETS.get(args.opt)
    if preset is None:
        if args.lr is None:
            raise SettingsError(
                f"the paper has no preset for --opt {args.opt}; give --lr (and --weight-decay) "
                "explicitly, or use --opt adam / --opt adan"
            )
        return {"bias_decay": True}
    return {
        "lr": args.lr if args.lr is not None else preset.lr,
        "weight_decay": args.weight_decay if args.weight_decay is not None else preset.weight_decay,
        "betas": tuple(args.opt_betas) if args.opt_betas is not None else preset.betas,
        "eps": args.opt_eps if args.opt_eps is not None else preset.eps,
        "bias_decay": True,
    }


def autocast(settings: TXLSettings, device: torch.device):
    if settings.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---- the loop --------------------------------------------------------------------------
class Trainer:
    """The state of one run in one process. Checkpointed: the model, the optimizer, the
    position in the data (``step``, ``epoch``, ``segment``), the memories, the RNGs, the eval
    rows and the best valid loss."""

    def __init__(self, args, settings: TXLSettings, corpus, procs: Dist, log):
        self.args, self.s, self.procs, self.log = args, settings, procs, log
        self.device = procs.device
        self.tag = args.tag or (str(args.out) if args.out else "run")
        vocab = len(corpus.vocab)
        self.config = settings.model_config(vocab, tuple(adaptive_cutoffs(vocab)))
        torch.manual_seed(args.seed)  # the same initial weights in every process
        self.model = TransformerXL(self.config).to(self.device)
        self.net = self.model
        if procs.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # With div_val > 1 a tail cluster without targets in a batch gets no gradient.
            self.net = DDP(
                self.model, device_ids=ids, find_unused_parameters=self.config.div_val > 1
            )
        torch.manual_seed(args.seed * 1000 + procs.rank)  # each process its own dropout
        self.optimizer = create_optimizer(self.model, args, **optimizer_overrides(args))
        self.base_lr = self.optimizer.param_groups[0]["lr"]
        self.warmup = warmup_for(args.opt, settings)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]

        train = corpus.train[: settings.train_tokens] if settings.train_tokens else corpus.train
        stream = OrderedStream(train, settings.batch_size)
        self.accum = args.accum_steps
        self.streams = [
            stream.columns(
                *micro_columns(settings.batch_size, procs.world, procs.rank, self.accum, a)
            )  # fmt: skip
            for a in range(self.accum)
        ]
        self.segments_per_epoch = stream.num_segments(settings.tgt_len)
        cut = settings.eval_tokens
        self.valid = OrderedStream(
            corpus.valid[:cut] if cut else corpus.valid, settings.eval_batch_size
        )
        self.test = OrderedStream(
            corpus.test[:cut] if cut else corpus.test, settings.eval_batch_size
        )
        self.step, self.epoch, self.segment = 0, 1, 0
        self.memories = [Memory() for _ in range(self.accum)]
        self.rows: list[dict] = []
        self.best_valid = math.inf
        self.best_step = 0

    # ---- one step ----------------------------------------------------------------------
    def lr(self, step: int) -> float:
        s = self.s
        return lr_at(step, self.base_lr, self.warmup, s.max_step, s.lr_schedule_compat)

    def train_step(self) -> tuple[float, int]:
        """One optimizer step on the next segment of every stream; returns (mean loss over
        the global batch, tokens of the whole step)."""
        if self.segment >= self.segments_per_epoch:  # a new pass: the original starts it
            self.epoch, self.segment = self.epoch + 1, 0  # without memory
            self.memories = [Memory() for _ in range(self.accum)]
        self.net.train()
        self.optimizer.zero_grad(set_to_none=True)
        total, tokens = 0.0, 0
        for a, stream in enumerate(self.streams):
            data, target = stream.segment(self.segment, self.s.tgt_len, self.device)
            sync = a == self.accum - 1 or self.procs.world == 1
            with contextlib.nullcontext() if sync else self.net.no_sync():
                with autocast(self.s, self.device):
                    nll, self.memories[a] = self.net(data, target, self.memories[a],
                                                     self.s.train_window)  # fmt: skip
                # This micro-batch's share of the global batch's mean: its sum over all the
                # batch's tokens, times the number of processes because DDP averages the
                # gradients over them. Parts may differ by a stream (60 streams on 8 GPUs).
                loss = nll.float().sum() * (self.procs.world / (self.s.batch_size * nll.size(0)))
                loss.backward()
            total += loss.item()
            tokens += target.numel()
        if self.procs.world > 1:  # the logged loss is the global batch's, as with one process
            mean = torch.tensor([total], dtype=torch.float64, device=self.device)
            dist.all_reduce(mean)
            total = mean.item() / self.procs.world
        if self.s.clip:
            torch.nn.utils.clip_grad_norm_(self.params, self.s.clip)
        self.step += 1
        lr = self.lr(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.segment += 1
        return total, tokens * self.procs.world

    # ---- evaluation --------------------------------------------------------------------
    def evaluate(self, stream: OrderedStream, tgt_len: int, window: Window) -> float:
        """Mean NLL per token over ``stream`` (see :func:`adan_txl.evaluate.evaluate_stream`)
        in this run's precision."""
        with autocast(self.s, self.device):
            loss, _ = evaluate_stream(self.model, stream, tgt_len, window, self.device)
        self.model.train()
        return loss

    def protocol(self, name: str) -> dict:
        s = self.s
        if name == "paper":
            tgt, window = s.eval_tgt_len, s.train_window
        else:
            tgt, window = s.std_tgt_len, s.standard_window
        out = {"tgt_len": tgt, "mem_len": window.mem_len, "clamp_len": window.clamp_len,
               "same_length": window.same_length}  # fmt: skip
        for split, stream in (("valid", self.valid), ("test", self.test)):
            loss = self.evaluate(stream, tgt, window)
            out[f"{split}_loss"], out[f"{split}_ppl"] = loss, math.exp(loss)
        return out

    # ---- checkpoints -------------------------------------------------------------------
    def _process_state(self) -> dict:
        return {
            "rank": self.procs.rank,
            "world": self.procs.world,
            "accum": self.accum,
            "memories": [m.states for m in self.memories],
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device)
            if self.device.type == "cuda"
            else None,
        }

    def save(self, run_dir: Path) -> None:
        """A checkpoint every process contributes to: rank 0 writes the shared state, every
        rank its memories and RNG; rank 0 commits it once all are on disk."""
        staging = run_dir / f".process-state-{self.step}"
        if self.procs.main:
            staging.mkdir(exist_ok=True)
        self.procs.barrier()
        state = self._process_state()
        write_atomic(staging / f"rank{self.procs.rank}.pt", lambda t: torch.save(state, t))
        self.procs.barrier()
        if self.procs.main:

            def fill(d: Path) -> None:
                torch.save(self.model.state_dict(), d / "model.pt")
                torch.save(self.optimizer.state_dict(), d / "optimizer.pt")
                shared = {"step": self.step, "epoch": self.epoch, "segment": self.segment,
                          "best_valid": self.best_valid, "best_step": self.best_step}  # fmt: skip
                torch.save(shared, d / "state.pt")
                for f in staging.glob("rank*.pt"):
                    os.replace(f, d / f.name)
                rundir.write_eval(d / rundir.EVAL, EVAL_HEADER, self.rows)

            rundir.write_eval(run_dir / rundir.EVAL, EVAL_HEADER, self.rows)
            rundir.commit_checkpoint(run_dir, self.step, fill)
            staging.rmdir()
        self.procs.barrier()

    def restore(self, ckpt: rundir.Checkpoint) -> None:
        d = ckpt.path
        mine = d / f"rank{self.procs.rank}.pt"
        if not mine.is_file():
            raise SettingsError(
                f"{d} was written by fewer processes than this run's {self.procs.world}; "
                "resume with the number of processes and --accum-steps it was started with"
            )
        state = torch.load(mine, map_location=self.device, weights_only=True)
        if (state["world"], state["accum"]) != (self.procs.world, self.accum):
            raise SettingsError(
                f"{d} was written by {state['world']} process(es) with --accum-steps "
                f"{state['accum']}; resume with the same (the memories belong to those streams)"
            )
        self.model.load_state_dict(torch.load(d / "model.pt", map_location=self.device,
                                              weights_only=True))  # fmt: skip
        self.optimizer.load_state_dict(torch.load(d / "optimizer.pt", map_location=self.device,
                                                  weights_only=True))  # fmt: skip
        shared = torch.load(d / "state.pt", weights_only=True)
        self.step, self.epoch, self.segment = shared["step"], shared["epoch"], shared["segment"]
        self.best_valid, self.best_step = shared["best_valid"], shared["best_step"]
        self.memories = [Memory(list(m)) for m in state["memories"]]
        torch.set_rng_state(state["torch_rng"].cpu())
        if state["cuda_rng"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        self.rows = rundir.read_eval(d / rundir.EVAL)


def save_model(model: TransformerXL, path: Path) -> None:
    """Our model file: its config and weights (``adan_txl.convert.load_checkpoint`` reads it)."""
    write_atomic(path, lambda tmp: save_checkpoint(model, tmp))


def run_config(args, settings: TXLSettings, corpus, trainer: Trainer) -> dict:
    """What the run computes: checked on resume, so a changed setting is an error, not a mix.
    The number of processes and micro-batches is not in it: the update does not depend on it."""
    return {
        "preset": args.preset,
        "run": args.run,
        "optimizer": args.opt,
        "seed": args.seed,
        "settings": settings.to_dict(),
        "warmup_step": trainer.warmup,
        "model": trainer.config.to_dict(),
        "optimizer_kwargs": describe(
            type(trainer.optimizer), dict(trainer.optimizer.defaults), False
        )["kwargs"],  # fmt: skip
        "data_md5": dict(corpus.md5),
        "vocab": len(corpus.vocab),
    }


def load_data(args, procs: Dist):
    """The corpus, encoded once into the cache by rank 0 (the others then only map it)."""
    folder = resolve_data_dir(args.data, allow_download=procs.main)
    corpus = load_corpus(folder) if procs.main else None
    procs.barrier()
    return corpus if corpus is not None else load_corpus(folder)


def setup(args: argparse.Namespace, procs: Dist, log=print):
    """Settings, data, model and optimizer of a run; and the run's config record."""
    apply_run_preset(args)
    settings = settings_from_args(args)
    if args.accum_steps < 1:
        raise SettingsError(f"--accum-steps must be at least 1, got {args.accum_steps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = load_data(args, procs)
    trainer = Trainer(args, settings, corpus, procs, log)
    return settings, trainer, run_config(args, settings, corpus, trainer)


def dry_run(args: argparse.Namespace, procs: Dist, log=print) -> RunResult:
    """Build model and optimizer, print the parameter count and the settings, train nothing.
    Without ``--data`` (and ``$TXL_DATA``) no data is read: the model is built for
    ``--vocab-size`` words (default WikiText-103's)."""
    apply_run_preset(args)
    settings = settings_from_args(args)
    if args.data is None and not os.environ.get("TXL_DATA"):
        n_token = args.vocab_size or WT103_VOCAB
        cfg = settings.model_config(n_token, tuple(adaptive_cutoffs(n_token)))
        model = TransformerXL(cfg)
        optimizer = create_optimizer(model, args, **optimizer_overrides(args))
        where = f"vocabulary {n_token:,} (no data read)"
    else:
        settings, trainer, config = setup(args, procs, log)
        model, optimizer, cfg = trainer.model, trainer.optimizer, trainer.config
        where = f"vocabulary {config['vocab']:,} from {args.data or os.environ.get('TXL_DATA')}"
    log(
        f"parameters: {count_parameters(model):,} ({count_parameters(model, False):,} "
        f"non-embedding); {where}; cutoffs {list(cfg.cutoffs)}"
    )
    kwargs = describe(type(optimizer), dict(optimizer.defaults), False)["kwargs"]
    log(f"optimizer: {args.opt} {kwargs}; warm-up {warmup_for(args.opt, settings)} steps")
    log(f"settings: {settings.to_dict()}")
    return RunResult("dry-run", 0, None)


def train(args: argparse.Namespace, log=print) -> RunResult:
    """Run (or resume, or skip) the run the parsed CLI ``args`` describe, in this process
    (one of ``torchrun``'s when its environment is set)."""
    procs = start_processes(args.device)
    say = log if procs.main else (lambda msg: None)
    if args.dry_run:
        return dry_run(args, procs, say)
    if args.out is None:
        raise SettingsError("--out DIR is required (the run folder)")
    settings, trainer, config = setup(args, procs, say)
    run_dir = Path(args.out)
    if procs.main:
        rundir.prepare_dir(run_dir)
    procs.barrier()
    if rundir.is_done(run_dir):
        say(f"[{trainer.tag}] already finished ({run_dir / rundir.DONE}); nothing to do")
        return RunResult("skipped", settings.max_step, run_dir)
    if procs.main:
        rundir.check_or_write_config(run_dir, config)
    ckpt = rundir.latest_checkpoint(run_dir)
    if ckpt is not None:
        trainer.restore(ckpt)
        say(f"[{trainer.tag}] resuming after step {ckpt.step}")
    if procs.main:
        current = provenance.collect(
            Path(__file__).parent, PROVENANCE_PACKAGES, implementation(trainer.optimizer)
        )
        warning = provenance.record(run_dir, current, trainer.step)
        if warning:
            say(f"[{trainer.tag}] warning: {warning}")
    s = settings
    say(
        f"[{trainer.tag}] {count_parameters(trainer.model):,} parameters, {args.opt} "
        f"{config['optimizer_kwargs']}, warm-up {trainer.warmup}, steps "
        f"{trainer.step + 1}..{s.max_step}, {procs.world} process(es) x {trainer.accum} "
        f"micro-batch(es) of {s.batch_size / (procs.world * trainer.accum):g} streams, "
        f"{s.precision} on {procs.device}"
    )
    session_steps, t_session = 0, time.time()
    window_loss, window_steps, window_tokens, t_window = 0.0, 0, 0, time.time()
    last_line = time.time()
    while trainer.step < s.max_step:
        loss, tokens = trainer.train_step()
        session_steps += 1
        window_loss, window_steps, window_tokens = (
            window_loss + loss,
            window_steps + 1,
            window_tokens + tokens,
        )
        now = time.time()
        if now - last_line >= args.log_interval:
            last_line = now
            left = (now - t_session) / session_steps * (s.max_step - trainer.step)
            say(
                f"[{trainer.tag}] step {trainer.step:,}/{s.max_step:,} | lr "
                f"{trainer.lr(trainer.step):.3g} | train loss {window_loss / window_steps:.3f} | "
                f"{rate(window_tokens, now - t_window, 'tokens/s')} | left {elapsed(left)}"
            )
        if trainer.step % s.eval_interval and trainer.step != s.max_step:
            continue
        train_s = time.time() - t_window
        t_eval = time.time()
        valid = (
            trainer.evaluate(trainer.valid, s.eval_tgt_len, s.train_window) if procs.main else 0.0
        )
        if procs.main and valid < trainer.best_valid:
            # Written before the checkpoint: if a crash falls in between, the resumed run
            # recomputes the same weights and the same valid loss and writes it again.
            trainer.best_valid, trainer.best_step = valid, trainer.step
            save_model(trainer.model, run_dir / BEST)
        train_loss = window_loss / window_steps
        trainer.rows.append(
            {
                "step": trainer.step,
                "epoch": trainer.epoch,
                "lr": trainer.lr(trainer.step),
                "train_loss": train_loss,
                "train_ppl": math.exp(train_loss),
                "valid_loss": valid,
                "valid_ppl": math.exp(valid),
                "train_tokens_per_s": measured_rate(window_tokens, train_s),
                "train_s": train_s,
                "eval_s": time.time() - t_eval,
            }
        )
        trainer.save(run_dir)
        say(
            f"[{trainer.tag}] step {trainer.step:,}/{s.max_step:,} | valid ppl "
            f"{math.exp(valid):.2f} (best {math.exp(trainer.best_valid):.2f} at "
            f"{trainer.best_step:,}) | train ppl {math.exp(train_loss):.2f} | "
            f"{rate(window_tokens, train_s, 'tokens/s')}"
        )
        window_loss, window_steps, window_tokens, t_window = 0.0, 0, 0, time.time()
        if args.stop_after_steps and session_steps >= args.stop_after_steps:
            if trainer.step < s.max_step:
                say(f"[{trainer.tag}] stopping after step {trainer.step}; run again to continue")
                return RunResult("stopped", trainer.step, run_dir)

    if procs.main:
        finish(trainer, run_dir, say)
    procs.barrier()
    return RunResult("finished", s.max_step, run_dir)


def finish(trainer: Trainer, run_dir: Path, log) -> None:
    """Both protocols on the best-valid model (the original reloads it before its test), then
    ``final/model.pt`` and ``done.json``."""
    best = torch.load(run_dir / BEST, map_location=trainer.device, weights_only=True)
    trainer.model.load_state_dict(best["model"])
    results = {name: trainer.protocol(name) for name in PROTOCOLS}

    def fill(d: Path) -> None:
        save_model(trainer.model, d / "model.pt")

    rundir.commit_final(run_dir, fill)
    rundir.write_done(
        run_dir,
        {"steps": trainer.s.max_step, "best_step": trainer.best_step, "protocols": results},
    )
    rundir.remove_checkpoints(run_dir)
    (run_dir / BEST).unlink(missing_ok=True)
    for name, r in results.items():
        log(
            f"[{trainer.tag}] {name} protocol (tgt_len {r['tgt_len']}, mem_len {r['mem_len']}): "
            f"best step {trainer.best_step:,}, valid ppl {r['valid_ppl']:.2f}, test ppl "
            f"{r['test_ppl']:.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except (SettingsError, DataError, ModelConfigError, rundir.RunConflictError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
