"""Train one AWD-LSTM on Penn Treebank with any optimizer registered in adan-core.

Example::

    python -m adan_lstm.train --data ../shared/data/ptb --nlayers 1 --opt adan --seed 141 \
        --out runs/L1_adan_s141

One run, top to bottom: CLI -> settings -> data -> model -> optimizer -> epochs. Each epoch
trains once over the training text with variable-length BPTT, evaluates valid (batch 10) and
test (batch 1), appends a row to ``eval.csv`` and checkpoints. Started again with the same
arguments, the run resumes from its last epoch and computes exactly what an uninterrupted run
would have (model, optimizer and every RNG are in the checkpoint). At the end ``done.json``
holds both evaluation protocols (see :data:`PROTOCOLS`).
"""

from __future__ import annotations

import argparse
import math
import pickle
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from adan_repro import provenance, rundir
from adan_repro.download import md5sum
from adan_repro.progress import elapsed, measured_rate, rate
from adan_repro.selection import select

from adan_core.optim_factory import add_optimizer_args, create_optimizer, describe, implementation

from .data import DataError, batchify, load_corpus, resolve_data_dir, split_file
from .model import AWDLSTM, count_parameters, detach_hidden
from .presets import (
    PRESETS,
    LSTMSettings,
    SettingsError,
    optimizer_preset,
    preset_settings,
)

EVAL_HEADER = (
    "step",  # the epoch
    "lr",
    "train_ppl",
    "valid_ppl",
    "test_ppl",
    "train_tokens_per_s",
    "train_s",
    "eval_s",
)
# name -> (selected on, reported). "paper": AdaBelief's main.py keeps the epoch with the best
# *test* perplexity and reports it. "clean": select on valid, report that epoch's test once.
PROTOCOLS = {"paper": ("test_ppl", "test_ppl"), "clean": ("valid_ppl", "test_ppl")}
PROVENANCE_PACKAGES = ("adan-core", "adan-repro", "adan-lstm", "numpy")


@dataclass
class RunResult:
    status: str  # "finished", "skipped" (already finished) or "stopped" (--stop-after-epochs)
    epochs: int  # epochs completed
    run_dir: Path | None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_lstm.train",
        description="Train one AWD-LSTM language model on Penn Treebank (AdaBelief's setting). "
        "Resumes from its last epoch when run again with the same arguments.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data",
        type=Path,
        help="folder with ptb.{train,valid,test}.txt (default $PTB_DIR, else download into the "
        "cache $ADAN_LSTM_CACHE or ~/.cache/adan_lstm/ptb)",
    )
    p.add_argument("--out", type=Path, help="run folder (required unless --dry-run)")
    p.add_argument("--nlayers", type=int, default=1, help="LSTM layers (the paper: 1, 2, 3)")
    p.add_argument(
        "--preset",
        default="paper",
        help=f"model and schedule preset: {', '.join(PRESETS)} (see adan_lstm.presets)",
    )
    p.add_argument("--seed", type=int, default=141, help="random seed (the setting's is 141)")
    p.add_argument("--epochs", type=int, help="override the preset's epochs (lr drops rescaled)")
    p.add_argument("--when", type=int, nargs="+", help="epochs after which lr is divided by 10")
    p.add_argument("--emsize", type=int, help="override the embedding size (= last layer width)")
    p.add_argument("--nhid", type=int, help="override the hidden size of the inner layers")
    p.add_argument(
        "--train-tokens", type=int, help="train on only the first N training tokens per epoch"
    )
    p.add_argument(
        "--weight-drop-compat",
        action="store_true",
        help="reproduce the setting's weight_drop.py defect: the raw hidden-to-hidden weights "
        "get no gradient and stay at their initial values (for comparison with published "
        "numbers; the default trains them)",
    )
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-interval", type=float, default=60.0, help="seconds between lines")
    p.add_argument("--tag", help="name shown in progress lines (default: the run folder)")
    p.add_argument(
        "--stop-after-epochs",
        type=int,
        help="end this session after N epochs (the run resumes when started again)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="build data, model and optimizer, print the parameter count and settings, stop",
    )
    add_optimizer_args(p, default_opt="adan")
    return p


def settings_from_args(args: argparse.Namespace) -> LSTMSettings:
    """The run's settings: the preset, then any explicit flag."""
    return preset_settings(
        args.preset,
        args.nlayers,
        epochs=args.epochs,
        when=tuple(args.when) if args.when else None,
        emsize=args.emsize,
        nhid=args.nhid,
        train_tokens=args.train_tokens,
        weight_drop_compat=True if args.weight_drop_compat else None,
    )


def optimizer_overrides(args: argparse.Namespace, nlayers: int) -> dict:
    """The setting's lr, weight decay, betas and eps for ``args.opt`` where no flag sets them.

    Weight decay goes to every parameter, biases included, as in the setting (one group).
    """
    preset = optimizer_preset(args.opt)
    if preset is None:
        if args.lr is None:
            raise SettingsError(
                f"the setting has no preset for --opt {args.opt}; give --lr (and "
                "--weight-decay) explicitly, or use --opt adam / --opt adan"
            )
        return {"bias_decay": True}
    chosen = {
        "lr": args.lr if args.lr is not None else preset.lr_for(nlayers),
        "weight_decay": args.weight_decay if args.weight_decay is not None else preset.weight_decay,
        "betas": tuple(args.opt_betas) if args.opt_betas is not None else preset.betas,
        "eps": args.opt_eps if args.opt_eps is not None else preset.eps,
    }
    return {**chosen, "bias_decay": True}


def pick_device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise SettingsError(f"bad --device {name!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SettingsError("--device cuda, but torch sees no CUDA device; use --device cpu")
    return device


def build_model(settings: LSTMSettings, ntoken: int) -> AWDLSTM:
    """The AWD-LSTM the settings describe, for a vocabulary of ``ntoken`` words."""
    s = settings
    return AWDLSTM(ntoken, s.nlayers, s.emsize, s.nhid, s.dropout, s.dropouth, s.dropouti,
                   s.dropoute, s.wdrop, s.weight_drop_compat)  # fmt: skip


def objective(settings: LSTMSettings, logits, targets, raw, dropped):
    """``(loss to minimise, cross entropy)``: the cross entropy plus activation regularization
    (``alpha``, on the last layer's dropped output) and temporal activation regularization
    (``beta``, on its raw output)."""
    raw_loss = F.cross_entropy(logits, targets.reshape(-1))
    loss = raw_loss
    if settings.alpha:
        loss = loss + settings.alpha * dropped[-1].pow(2).mean()
    if settings.beta:
        loss = loss + settings.beta * (raw[-1][1:] - raw[-1][:-1]).pow(2).mean()
    return loss, raw_loss


class Trainer:
    """The loop of one run; the checkpointed state is ``model``, ``optimizer``, the RNGs and
    ``rows``."""

    def __init__(self, args, settings: LSTMSettings, corpus, device, log):
        self.args, self.s, self.log, self.device = args, settings, log, device
        ids = corpus.train[: settings.train_tokens] if settings.train_tokens else corpus.train
        self.train_data = batchify(ids, settings.batch_size).to(device)
        self.valid_data = batchify(corpus.valid, settings.eval_batch_size).to(device)
        self.test_data = batchify(corpus.test, settings.test_batch_size).to(device)
        self.model = build_model(settings, corpus.ntokens).to(device)
        self.opt_kwargs = optimizer_overrides(args, settings.nlayers)
        self.optimizer = create_optimizer(self.model, args, **self.opt_kwargs)
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.rows: list[dict] = []
        self.tag = args.tag or (str(args.out) if args.out else "run")

    # ---- one epoch of training ---------------------------------------------------------
    def train_epoch(self, epoch: int, rng: np.random.RandomState) -> tuple[float, int, float]:
        """Train over the text once; returns (train ppl, tokens, seconds)."""
        s, model, data = self.s, self.model, self.train_data
        model.train()
        hidden = model.init_hidden(s.batch_size)
        factor = s.lr_factor(epoch)
        n = data.size(0)
        # The setting draws (and never uses) a permutation here; drawing it keeps the numpy
        # stream, and so the sequence lengths, the same as the setting's for the same seed.
        rng.permutation(n - 2)
        # Summed on the device, read once per progress line: no host sync per step on a GPU.
        total_loss, tokens, i = torch.zeros((), device=self.device), 0, 0
        t0 = last_line = time.time()
        while i < n - 2:
            bptt = s.bptt if rng.random_sample() < 0.95 else s.bptt / 2.0
            seq_len = max(5, int(rng.normal(bptt, 5)))
            for group, base in zip(self.optimizer.param_groups, self.base_lrs):
                group["lr"] = base * factor * seq_len / s.bptt  # lr scaled by this length
            length = min(seq_len, n - 1 - i)
            x, y = data[i : i + length], data[i + 1 : i + 1 + length]
            hidden = detach_hidden(hidden)
            self.optimizer.zero_grad()
            logits, hidden, raw, dropped = model(x, hidden)
            loss, raw_loss = objective(s, logits, y, raw, dropped)
            loss.backward()
            if s.clip:
                torch.nn.utils.clip_grad_norm_(self.params, s.clip)
            self.optimizer.step()
            total_loss += raw_loss.detach() * y.numel()
            tokens += y.numel()
            i += seq_len
            now = time.time()
            if now - last_line >= self.args.log_interval:
                last_line = now
                self.log(
                    f"[{self.tag}] epoch {epoch} | {min(i, n - 1):,}/{n - 1:,} steps | "
                    f"train ppl {math.exp(total_loss.item() / tokens):.2f} | "
                    f"{rate(tokens, now - t0, 'tokens/s')}"
                )
        return math.exp(total_loss.item() / tokens), tokens, time.time() - t0

    # ---- evaluation --------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, data: torch.Tensor, batch_size: int) -> float:
        """Perplexity over every next-word target of ``data`` (dropout off, state carried)."""
        model = self.model
        model.eval()
        hidden = model.init_hidden(batch_size)
        total, count = 0.0, 0
        for i in range(0, data.size(0) - 1, self.s.bptt):
            length = min(self.s.bptt, data.size(0) - 1 - i)
            x, y = data[i : i + length], data[i + 1 : i + 1 + length]
            logits, hidden, _, _ = model(x, hidden)
            total += F.cross_entropy(logits, y.reshape(-1), reduction="sum").item()
            count += y.numel()
        return math.exp(total / count)

    # ---- checkpoints -------------------------------------------------------------------
    def save(self, run_dir: Path, epoch: int, rng: np.random.RandomState) -> None:
        def fill(d: Path) -> None:
            torch.save(self.model.state_dict(), d / "model.pt")
            torch.save(self.optimizer.state_dict(), d / "optimizer.pt")
            state = {
                "numpy": rng.get_state(),
                "python": random.getstate(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            }
            with open(d / "rng.pkl", "wb") as f:
                pickle.dump(state, f)
            rundir.write_eval(d / rundir.EVAL, EVAL_HEADER, self.rows)

        rundir.write_eval(run_dir / rundir.EVAL, EVAL_HEADER, self.rows)
        rundir.commit_checkpoint(run_dir, epoch, fill)

    def restore(self, ckpt: rundir.Checkpoint, rng: np.random.RandomState) -> None:
        d = ckpt.path
        self.model.load_state_dict(torch.load(d / "model.pt", map_location=self.device))
        # The saved groups hold the last batch's length-scaled lr; base_lrs stay the settings'.
        self.optimizer.load_state_dict(torch.load(d / "optimizer.pt", map_location=self.device))
        with open(d / "rng.pkl", "rb") as f:
            state = pickle.load(f)  # our own file, written by save()
        rng.set_state(state["numpy"])
        random.setstate(state["python"])
        torch.set_rng_state(state["torch"])
        if state["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        self.rows = rundir.read_eval(d / rundir.EVAL)


def protocols(rows: list[dict]) -> dict[str, dict]:
    """Both evaluation protocols (see :data:`PROTOCOLS`) on a run's per-epoch rows."""
    out = {}
    for name, (on, report) in PROTOCOLS.items():
        sel = select(rows, on, report, "lower")
        out[name] = {"epoch": sel.step, "selected_on": on, "test_ppl": sel.value}
    return out


def run_config(args, settings: LSTMSettings, corpus, optimizer) -> dict:
    """What the run computes: checked on resume, so a changed setting is an error, not a mix."""
    return {
        "task": f"L{settings.nlayers}",
        "optimizer": args.opt,
        "seed": args.seed,
        "preset": args.preset,
        "settings": settings.to_dict(),
        # Every option the optimizer runs with, its defaults included.
        "optimizer_kwargs": describe(type(optimizer), dict(optimizer.defaults), False)["kwargs"],
        "data_md5": {s: md5sum(split_file(corpus.folder, s)) for s in ("train", "valid", "test")},
        "vocab": corpus.ntokens,
    }


def setup(args: argparse.Namespace, log=print) -> tuple[LSTMSettings, Trainer, dict]:
    """Settings, data, model and optimizer of a run, seeded; and the run's config record."""
    settings = settings_from_args(args)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = load_corpus(resolve_data_dir(args.data))
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    trainer = Trainer(args, settings, corpus, device, log)
    return settings, trainer, run_config(args, settings, corpus, trainer.optimizer)


def dry_run(args: argparse.Namespace, log=print) -> RunResult:
    """Build everything, print the parameter count and the resolved settings, train nothing."""
    settings, trainer, config = setup(args, log)
    log(
        f"[{trainer.tag}] parameters: {count_parameters(trainer.model):,} "
        f"({settings.nlayers} layer{'s' if settings.nlayers != 1 else ''}); "
        f"vocabulary {config['vocab']:,}; training tokens {trainer.train_data.numel():,}"
    )
    log(f"[{trainer.tag}] optimizer: {args.opt} {config['optimizer_kwargs']}")
    log(f"[{trainer.tag}] settings: {settings.to_dict()}")
    return RunResult("dry-run", 0, None)


def train(args: argparse.Namespace, log=print) -> RunResult:
    """Run (or resume, or skip) the run the parsed CLI ``args`` describe."""
    if args.dry_run:
        return dry_run(args, log)
    settings, trainer, config = setup(args, log)
    rng = np.random.RandomState(args.seed)
    if args.out is None:
        raise SettingsError("--out DIR is required (the run folder)")
    run_dir = rundir.prepare_dir(args.out)
    if rundir.is_done(run_dir):
        log(f"[{trainer.tag}] already finished ({run_dir / rundir.DONE}); nothing to do")
        return RunResult("skipped", settings.epochs, run_dir)
    rundir.check_or_write_config(run_dir, config)
    ckpt = rundir.latest_checkpoint(run_dir)
    start = 1
    if ckpt is not None:
        trainer.restore(ckpt, rng)
        start = ckpt.step + 1
        log(f"[{trainer.tag}] resuming after epoch {ckpt.step}")
    current = provenance.collect(
        Path(__file__).parent, PROVENANCE_PACKAGES, implementation(trainer.optimizer)
    )
    warning = provenance.record(run_dir, current, start - 1)
    if warning:
        log(f"[{trainer.tag}] warning: {warning}")
    log(
        f"[{trainer.tag}] {count_parameters(trainer.model):,} parameters, {settings.nlayers} "
        f"layer(s), {args.opt} {config['optimizer_kwargs']}, epochs {start}..{settings.epochs}"
    )
    session_t0, done_this_session = time.time(), 0
    for epoch in range(start, settings.epochs + 1):
        train_ppl, tokens, train_s = trainer.train_epoch(epoch, rng)
        t_eval = time.time()
        valid_ppl = trainer.evaluate(trainer.valid_data, settings.eval_batch_size)
        test_ppl = trainer.evaluate(trainer.test_data, settings.test_batch_size)
        eval_s = time.time() - t_eval
        trainer.rows.append(
            {
                "step": epoch,
                "lr": trainer.base_lrs[0] * settings.lr_factor(epoch),
                "train_ppl": train_ppl,
                "valid_ppl": valid_ppl,
                "test_ppl": test_ppl,
                "train_tokens_per_s": measured_rate(tokens, train_s),
                "train_s": train_s,
                "eval_s": eval_s,
            }
        )
        trainer.save(run_dir, epoch, rng)
        done_this_session += 1
        per_epoch = (time.time() - session_t0) / done_this_session
        log(
            f"[{trainer.tag}] epoch {epoch}/{settings.epochs} | lr "
            f"{trainer.rows[-1]['lr']:.3g} | train ppl {train_ppl:.2f} | valid ppl "
            f"{valid_ppl:.2f} | test ppl {test_ppl:.2f} | {rate(tokens, train_s, 'tokens/s')} | "
            f"epoch {elapsed(per_epoch)} | left {elapsed(per_epoch * (settings.epochs - epoch))}"
        )
        if args.stop_after_epochs and done_this_session >= args.stop_after_epochs:
            if epoch < settings.epochs:
                log(f"[{trainer.tag}] stopping after epoch {epoch}; run again to continue")
                return RunResult("stopped", epoch, run_dir)

    def fill(d: Path) -> None:
        torch.save(trainer.model.state_dict(), d / "model.pt")

    rundir.commit_final(run_dir, fill)
    result = protocols(trainer.rows)
    rundir.write_done(run_dir, {"epochs": settings.epochs, "protocols": result})
    rundir.remove_checkpoints(run_dir)
    for name, r in result.items():
        log(f"[{trainer.tag}] {name} protocol: epoch {r['epoch']}, test ppl {r['test_ppl']:.2f}")
    return RunResult("finished", settings.epochs, run_dir)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        train(args)
    except (SettingsError, DataError, rundir.RunConflictError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
