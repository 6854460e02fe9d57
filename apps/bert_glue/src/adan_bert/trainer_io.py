"""The Trainer's run in an adan-repro run folder: ``eval.csv``, the checkpoint pointer, progress.

One callback, :class:`RunRecorder`, used by pretraining and fine-tuning alike:

- after each evaluation it rewrites ``eval.csv`` from the Trainer's own ``log_history`` (which
  the Trainer saves in every checkpoint and restores on resume, so the file always matches the
  state the run continues from, without duplicate rows after a crash);
- after each save it points ``checkpoint.json`` at the Trainer's new ``checkpoint-<step>/``
  (complete by then), which is where the next run of the same command resumes;
- it prints a progress line every ``log_interval`` steps (steps/s, loss, time left).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from adan_repro import rundir
from adan_repro.atomic import write_json_atomic
from adan_repro.progress import elapsed
from transformers import PrinterCallback, TrainerCallback
from transformers.utils import logging as hf_logging

Row = Callable[[int, dict, list[dict]], dict]


def quiet(trainer) -> None:
    """Our progress lines instead of the Trainer's dict prints and save progress bars."""
    trainer.remove_callback(PrinterCallback)
    hf_logging.disable_progress_bar()


def world_size() -> int:
    """Processes of this job (torchrun's WORLD_SIZE; 1 without it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def unwrapped(optimizer):
    """The optimizer the Trainer steps, without accelerate's ``AcceleratedOptimizer`` wrapper."""
    return getattr(optimizer, "optimizer", optimizer)


def latest_trainer_checkpoint(run_dir: Path) -> Path | None:
    """The Trainer checkpoint ``checkpoint.json`` points to, if it is still there."""
    ckpt = rundir.latest_checkpoint(run_dir)
    if ckpt is None:
        return None
    if not (ckpt.path / "trainer_state.json").is_file():
        raise FileNotFoundError(
            f"{run_dir / rundir.POINTER} points at {ckpt.path}, which is missing or incomplete: "
            "delete the run folder to start it again"
        )
    return ckpt.path


class EpochToDataset(TrainerCallback):
    """Tells a dataset with ``set_epoch`` which epoch starts (also the resumed one), so that its
    per-epoch randomness (the MLM masks) follows the epoch and not the order of calls."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.dataset.set_epoch(int(state.epoch or 0))


class RunRecorder(TrainerCallback):
    """See the module docstring. ``row(step, metrics, log_history)`` makes one ``eval.csv`` row
    from an evaluation's metrics; evaluations at the same step (several eval sets) are merged."""

    def __init__(
        self,
        run_dir: Path,
        columns: Sequence[str],
        row: Row,
        log: Callable[[str], None] = print,
        log_interval: int = 50,
        tag: str = "run",
        int_columns: Sequence[str] = ("step",),
    ) -> None:
        self.int_columns = tuple(int_columns)
        self.run_dir, self.columns, self.row = Path(run_dir), tuple(columns), row
        self.log, self.log_interval, self.tag = log, max(1, log_interval), tag
        self.rows: dict[int, dict] = {}
        self._t0 = time.time()
        self._step0 = 0
        self._history: list[dict] = []
        self.fixed: dict[int, dict] = {}  # finished rows kept as they are (step 0)

    def on_train_begin(self, args, state, control, **kwargs):
        self._t0, self._step0 = time.time(), state.global_step
        # The untrained model's evaluation (step 0) comes before train(), outside the history
        # the Trainer checkpoints: keep its finished row, from this process or from eval.csv.
        if 0 in self.rows:
            self.fixed = {0: self.row(0, self.rows[0], [])}
        else:
            path = self.run_dir / rundir.EVAL
            old = rundir.read_eval(path, self.int_columns) if path.exists() else []
            self.fixed = {r["step"]: r for r in old if r["step"] == 0}
        # Rows of the history the run resumes from (the Trainer restored it), and nothing later.
        self.rows = {}
        for h in state.log_history:
            if any(k.startswith("eval_") for k in h):
                self._add(h["step"], h, state.log_history)
        if state.is_world_process_zero and (self.rows or self.fixed):
            self._write()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._add(state.global_step, metrics or {}, state.log_history)
        if state.is_world_process_zero:
            self._write()
            try:
                shown = self.row(state.global_step, self.rows[state.global_step], self._history)
            except KeyError:  # the other eval sets of this step come next
                return
            text = ", ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in shown.items()
                if k != "step"
            )
            self.log(f"[{self.tag}] eval at step {state.global_step}: {text}")

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            rel = os.path.relpath(folder, self.run_dir)
            write_json_atomic(
                self.run_dir / rundir.POINTER, {"dir": rel, "step": state.global_step}
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        step = state.global_step
        if not state.is_world_process_zero or not logs or "loss" not in logs:
            return
        if step % self.log_interval and step != state.max_steps:
            return
        done = step - self._step0
        secs = time.time() - self._t0
        rate = done / secs if secs > 0 else 0.0
        left = (state.max_steps - step) / rate if rate > 0 else float("nan")
        eta = elapsed(left) if left == left else "?"
        self.log(
            f"[{self.tag}] step {step}/{state.max_steps} loss {logs['loss']:.4f} "
            f"lr {logs.get('learning_rate', 0):.3g} {rate:.2f} steps/s, {eta} left"
        )

    def _add(self, step: int, metrics: dict, history: list[dict]) -> None:
        self.rows[step] = {**self.rows.get(step, {}), **metrics}
        self._history = history

    def _write(self) -> None:
        table = dict(self.fixed)
        for step, metrics in self.rows.items():
            try:
                table[step] = self.row(step, metrics, self._history)
            except KeyError:  # not all eval sets seen yet at this step
                continue
        rundir.write_eval(
            self.run_dir / rundir.EVAL, self.columns, [table[k] for k in sorted(table)]
        )
