"""The grid runner: tasks x optimizers x seeds, resumable, parallel and shardable.

Each run is a :class:`RunSpec` with its own run folder (``OUT/runs/<task>/<optimizer>/seed<N>``,
see :mod:`adan_repro.rundir`) and either a command line or a function the app supplies. The
runner

- skips runs whose folder has ``done.json``; an interrupted run is started again and resumes
  itself from its checkpoint (that part is the app's: it reads ``checkpoint.json``);
- runs ``--jobs N`` at a time in fresh processes, each run's output going to its ``run.log``
  (and to this process's stdout);
- reports a failed run with its log path and lets the others go on;
- with ``--shard K/N`` runs only the K-th of N disjoint slices of the grid, so several
  machines (a Slurm job array) can share one output folder;
- prints a progress line (runs done and left, elapsed time) whenever a run ends and at least
  every ``--log-interval`` seconds.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from . import rundir
from .progress import elapsed

# A function run: called in a fresh process as target(spec, log) and returning a status:
# "finished", "stopped" (a time-boxed session ended; rerun to continue) or "skipped".
Target = Callable[["RunSpec", Callable[[str], None]], str]
STATUSES = ("finished", "stopped", "skipped")


@dataclass(frozen=True)
class RunSpec:
    """One run of the grid: where it lives and how to run it."""

    task: str
    optimizer: str
    seed: int
    run_dir: Path
    command: tuple[str, ...] = ()  # run as a subprocess when given
    args: tuple[str, ...] = ()  # handed to a function target (e.g. its CLI arguments)

    @property
    def tag(self) -> str:
        return f"{self.task}/{self.optimizer}/seed{self.seed}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / rundir.LOG


@dataclass
class GridReport:
    """What a grid call did: counts per status and the failures with their logs."""

    total: int
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*STATUSES, "failed"), 0))
    failed: list[tuple[str, str, Path]] = field(default_factory=list)  # (tag, error, log path)

    @property
    def done(self) -> int:
        return sum(self.counts.values())


def run_path(out: Path, task: str, optimizer: str, seed: int) -> Path:
    """The run folder of one (task, optimizer, seed) under a grid's output folder."""
    return Path(out) / "runs" / task / optimizer / f"seed{seed}"


def plan(
    out: Path,
    tasks: Sequence[str],
    optimizers: Sequence[str],
    seeds: Sequence[int],
    command: Callable[[str, str, int, Path], Sequence[str]] | None = None,
    args: Callable[[str, str, int, Path], Sequence[str]] | None = None,
) -> list[RunSpec]:
    """Every run, seed-major so that all optimizers of a task advance together.

    ``command(task, optimizer, seed, run_dir)`` gives a run's command line, or
    ``args(...)`` the arguments for a function target.
    """
    runs = []
    for seed in seeds:
        for task in tasks:
            for opt in optimizers:
                d = run_path(out, task, opt, seed)
                runs.append(
                    RunSpec(
                        task,
                        opt,
                        int(seed),
                        d,
                        tuple(command(task, opt, seed, d)) if command else (),
                        tuple(args(task, opt, seed, d)) if args else (),
                    )
                )
    return runs


def parse_seeds(text: Sequence[str]) -> list[int]:
    """``["1-3", "7"]`` or ``["1,2"]`` -> ``[1, 2, 3, 7]``."""
    seeds: list[int] = []
    for item in ",".join(text).split(","):
        item = item.strip()
        if not item:
            continue
        try:
            if "-" in item:
                first, last = (int(x) for x in item.split("-", 1))
                if last < first:
                    raise ValueError
                seeds.extend(range(first, last + 1))
            else:
                seeds.append(int(item))
        except ValueError:
            raise ValueError(
                f"bad seed list item {item!r}; use e.g. --seeds 1-10 or --seeds 1 2 3"
            ) from None
    if not seeds:
        raise ValueError("empty seed list")
    return sorted(set(seeds))


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"2/8"`` -> ``(2, 8)``; None -> ``(1, 1)`` (the whole grid)."""
    if text is None:
        return 1, 1
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"bad --shard {text!r}; use K/N, e.g. --shard 3/8") from None
    if not 1 <= k <= n:
        raise ValueError(f"bad --shard {text!r}: need 1 <= K <= N")
    return k, n


def shard(runs: Sequence[RunSpec], k: int, n: int) -> list[RunSpec]:
    """The K-th of N disjoint slices (round robin, so each slice mixes tasks and optimizers)."""
    return [r for i, r in enumerate(runs) if i % n == k - 1]


def add_grid_args(
    parser: argparse.ArgumentParser,
    *,
    out: Path,
    seeds_help: str = "seeds, e.g. 1-10 or 1 2 3",
    jobs: int = 1,
    log_interval: float = 60.0,
) -> None:
    """The flags every app's grid shares: --seeds, --jobs, --shard, --out, --log-interval,
    --summarize-only."""
    parser.add_argument("--seeds", nargs="+", help=seeds_help)
    parser.add_argument("--jobs", type=int, default=jobs, help="runs in parallel")
    parser.add_argument(
        "--shard",
        metavar="K/N",
        help="run only the K-th of N disjoint slices of the grid (e.g. a Slurm array task; "
        "all shards share --out); the summary is written once every run is finished",
    )
    parser.add_argument("--out", type=Path, default=out, help="output directory")
    parser.add_argument(
        "--log-interval",
        type=float,
        default=log_interval,
        help="seconds between progress lines (grid and runs)",
    )
    parser.add_argument(
        "--summarize-only",
        action="store_true",
        help="only (re)write plots and summary from the runs already in --out",
    )


def _tee(path: Path) -> tuple[Callable[[str], None], Callable[[], None]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "a", buffering=1)

    def log(msg: str) -> None:
        print(msg, flush=True)
        f.write(msg + "\n")

    return log, f.close


def _execute(spec: RunSpec, target: Target | None) -> dict:
    """Run one run in a pool process; never raises (errors come back as a status)."""
    try:
        log, close = _tee(spec.log_path)
    except OSError as exc:
        return {"status": "failed", "error": f"cannot open its log: {exc}"}
    try:
        if spec.command:
            return _execute_command(spec, log)
        status = target(spec, log)
        if status not in STATUSES:
            return {"status": "failed", "error": f"the run function returned {status!r}"}
        return {"status": status}
    except SystemExit as exc:  # argparse inside the app
        log(f"exit {exc.code}")
        return {"status": "failed", "error": f"exited with {exc.code}"}
    except BaseException as exc:  # noqa: BLE001 - reported to the runner, which goes on
        log(traceback.format_exc())
        return {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    finally:
        close()


def _execute_command(spec: RunSpec, log: Callable[[str], None]) -> dict:
    proc = subprocess.Popen(
        list(spec.command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    for line in proc.stdout:
        log(line.rstrip("\n"))
    rc = proc.wait()
    if rc != 0:
        return {"status": "failed", "error": f"exit status {rc}"}
    return {"status": "finished" if rundir.is_done(spec.run_dir) else "stopped"}


def _progress(report: GridReport, left: int, t0: float) -> str:
    c = report.counts
    stopped = f", {c['stopped']} stopped early" if c["stopped"] else ""
    return (
        f"[grid] {report.done}/{report.total} runs done ({c['finished']} trained, "
        f"{c['skipped']} already finished, {c['failed']} failed{stopped}), {left} left, "
        f"{elapsed(time.time() - t0)} elapsed"
    )


def run_grid(
    runs: Iterable[RunSpec],
    target: Target | None = None,
    jobs: int = 1,
    log_interval: float = 60.0,
    log: Callable[[str], None] = print,
) -> GridReport:
    """Run every run not finished yet, ``jobs`` at a time; see the module docstring.

    ``target`` must be importable by name (a module-level function): runs start in fresh
    ``spawn`` processes so that no state leaks from one run into the next.
    """
    runs = list(runs)
    if jobs < 1:
        raise ValueError(f"--jobs must be at least 1, got {jobs}")
    if target is None and not all(r.command for r in runs):
        raise ValueError("a run has neither a command nor a target function")
    report = GridReport(total=len(runs))
    t0 = time.time()
    todo = []
    for spec in runs:
        if rundir.is_done(spec.run_dir):
            report.counts["skipped"] += 1
        else:
            todo.append(spec)
    log(
        f"[grid] {len(runs)} runs ({report.counts['skipped']} already finished), "
        f"{min(jobs, max(len(todo), 1))} at a time"
    )
    if not todo:
        log(_progress(report, 0, t0))
        return report
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx) as pool:
        pending = {pool.submit(_execute, spec, target): spec for spec in todo}
        try:
            while pending:
                finished, _ = wait(pending, timeout=log_interval, return_when=FIRST_COMPLETED)
                for fut in finished:
                    spec = pending.pop(fut)
                    try:
                        res = fut.result()
                    except Exception as exc:  # the worker process itself died
                        res = {"status": "failed", "error": f"worker died: {exc!r}"}
                    report.counts[res["status"]] += 1
                    if res["status"] == "failed":
                        report.failed.append((spec.tag, res["error"], spec.log_path))
                        log(f"[grid] FAILED {spec.tag}: {res['error']} (log: {spec.log_path})")
                log(_progress(report, len(pending), t0))
        except KeyboardInterrupt:
            log("[grid] interrupted: runs keep their last checkpoint; rerun the same command")
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if report.failed:
        log(f"[grid] {len(report.failed)} runs failed:")
        for tag, error, path in report.failed:
            log(f"[grid]   {tag}: {error}; log: {path}")
    return report


def all_done(runs: Iterable[RunSpec]) -> bool:
    """Whether every run has ``done.json`` (a shard uses this to decide on the summary)."""
    return all(rundir.is_done(r.run_dir) for r in runs)


def run_my_shard(
    runs: Sequence[RunSpec],
    target: Target | None,
    shard_text: str | None,
    jobs: int,
    log_interval: float,
    out: Path,
    log: Callable[[str], None] = print,
) -> tuple[GridReport, bool]:
    """What an app's grid command does with ``--shard K/N``: run this process's slice of
    ``runs`` and say whether the summary may be written now (True once every run of the whole
    grid is finished; a shard that finds runs of other shards unfinished logs how to summarize
    later and returns False)."""
    k, n = parse_shard(shard_text)
    mine = shard(runs, k, n)
    note = f" (shard {k}/{n} of {len(runs)} runs)" if n > 1 else ""
    log(f"[grid] {len(mine)} runs{note}, {jobs} at a time, output in {out}")
    report = run_grid(mine, target, jobs, log_interval, log)
    if n > 1 and not all_done(runs):
        left = sum(not rundir.is_done(r.run_dir) for r in runs)
        log(
            f"[grid] shard {k}/{n} done; {left} runs of the grid are not finished yet, so no "
            "summary now. When all shards are done: the same command with --summarize-only "
            "and without --shard"
        )
        return report, False
    return report, True


def run_then_summarize(
    runs: Sequence[RunSpec],
    target: Target | None,
    args: argparse.Namespace,
    summarize: Callable[[], None],
    log: Callable[[str], None] = print,
    jobs: int | None = None,
    files: str = "summary.md, summary.csv, curves.csv, PNGs",
) -> int:
    """The rest of an app's grid command once its runs are planned and validated: run this
    shard's runs (unless ``--summarize-only``), call ``summarize()`` when the whole grid is
    finished, print ``summary.md``, and return the exit status (0; 1 when a run failed or the
    summary could not be written, whose ``ValueError`` is printed). ``args`` holds the flags
    of :func:`add_grid_args`; ``jobs`` overrides ``args.jobs``."""
    failed: list = []
    if not args.summarize_only:
        report, complete = run_my_shard(
            runs, target, args.shard, jobs or args.jobs, args.log_interval, args.out, log
        )
        failed = report.failed
        if not complete:
            return 1 if failed else 0
    try:
        summarize()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log((Path(args.out) / "summary.md").read_text())
    log(f"[grid] plots and summary in {args.out} ({files})")
    if failed:
        log(f"[grid] {len(failed)} runs failed: {', '.join(t for t, _, _ in failed)}")
        return 1
    return 0
