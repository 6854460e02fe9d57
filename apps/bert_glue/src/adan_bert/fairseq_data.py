"""Data for the fairseq backend: GPT-2 BPE encoding and ``fairseq-preprocess`` binarization.

What the paper's pipeline did (fairseq's ``multiprocessing_bpe_encoder`` then
``fairseq-preprocess --only-source --srcdict dict.txt``), from local files:

- ``corpus``: a text file, one document per line, split into train and valid by the same
  fixed document split as the transformers backend (:func:`adan_bert.data.split_documents`),
  so both backends train and validate on the same documents;
- ``glue``: each task in fairseq's GLUE layout (``input0/``, ``input1/`` for pairs, ``label/``),
  ``valid`` = dev as in the paper; optionally a ``heldout`` split taken out of train (the clean
  protocol selects checkpoints on it) and, for CoLA, ``valid1`` = dev without its first line
  (the paper's evaluator skipped it as a header, though CoLA's dev.tsv has none).

Every output folder is built beside its destination and renamed into place, with a
``manifest.json`` of what it was made from: a finished folder is reused, never half-written.

    python -m adan_bert.fairseq_data corpus --corpus corpus.txt --bpe-dir BPE --out data/corpus
    python -m adan_bert.fairseq_data glue --glue-dir glue_data --bpe-dir BPE --out data/glue
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from adan_repro.atomic import write_json_atomic

from . import glue
from .data import file_digest, read_documents, split_documents

BPE_FILES = ("encoder.json", "vocab.bpe", "dict.txt")
MANIFEST = "manifest.json"
FORMAT = 1  # bump when the layout changes, so old folders are rebuilt


def check_bpe_dir(bpe_dir: Path | None) -> Path:
    """``bpe_dir`` holding fairseq's GPT-2 BPE files, or a clear error naming the fix."""
    if bpe_dir is None:
        raise ValueError(
            "the fairseq backend needs fairseq's GPT-2 BPE files: pass --bpe-dir DIR (or set "
            "$GPT2_BPE_DIR) holding encoder.json, vocab.bpe and dict.txt"
        )
    missing = [n for n in BPE_FILES if not (Path(bpe_dir) / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{bpe_dir} lacks {', '.join(missing)}: the GPT-2 BPE folder needs "
            f"{', '.join(BPE_FILES)} (python -m adan_bert.data can download them with checksums)"
        )
    return Path(bpe_dir)


class BpeEncoder:
    """fairseq's own GPT-2 byte-level BPE (``gpt2_bpe_utils``), lines to GPT-2 ids as text."""

    def __init__(self, bpe_dir: Path):
        from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

        bpe_dir = check_bpe_dir(bpe_dir)
        self._encoder = get_encoder(str(bpe_dir / "encoder.json"), str(bpe_dir / "vocab.bpe"))

    def line(self, text: str) -> str:
        """One line as fairseq's ``multiprocessing_bpe_encoder`` writes it."""
        return " ".join(str(i) for i in self._encoder.encode(text.strip()))


def _manifest(kind: str, sources: dict[str, Path], bpe_dir: Path, **settings) -> dict:
    return {
        "format": FORMAT,
        "kind": kind,
        "sources": {k: file_digest(p) for k, p in sorted(sources.items())},
        "bpe": {n: file_digest(bpe_dir / n) for n in BPE_FILES},
        "settings": settings,
    }


def _is_current(dest: Path, manifest: dict) -> bool:
    path = dest / MANIFEST
    return path.is_file() and json.loads(path.read_text()) == manifest


def _build(dest: Path, manifest: dict, fill: Callable[[Path], None]) -> Path:
    """``fill`` a temporary folder beside ``dest``, write its manifest, rename it into place."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        fill(tmp)
        write_json_atomic(tmp / MANIFEST, manifest)
        # Another process (two runs of a grid side by side) may have finished the same folder
        # meanwhile: a current folder is never replaced, so its readers are never disturbed.
        if not _is_current(dest, manifest):
            if dest.exists():
                shutil.rmtree(dest)  # stale: made from other inputs
            try:
                os.replace(tmp, dest)
            except OSError:
                if not _is_current(dest, manifest):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def binarize(
    dictionary: Path,
    dest: Path,
    train: Path,
    valid: Sequence[Path] = (),
    test: Path | None = None,
    workers: int = 1,
) -> None:
    """``fairseq-preprocess --only-source --srcdict dictionary`` of text files: ``train``,
    ``valid`` (fairseq names the second and later ``valid1``, ``valid2``, ...) and ``test``,
    into ``dest/{split}.{bin,idx}`` and ``dest/dict.txt``.

    Runs fairseq's preprocess in this process (the same code as the command, without paying
    for fairseq's import on every call), removes the log handler it adds and keeps its INFO
    lines (an argument dump per call) out of the run's output."""
    import logging

    quiet = {name: logging.getLogger(name) for name in ("fairseq", "fairseq_cli")}
    levels = {name: logger.level for name, logger in quiet.items()}
    for logger in quiet.values():
        logger.setLevel(logging.WARNING)
    try:
        _preprocess(dictionary, dest, train, valid, test, workers)
    finally:
        for name, logger in quiet.items():
            logger.setLevel(levels[name])


def _preprocess(
    dictionary: Path,
    dest: Path,
    train: Path,
    valid: Sequence[Path],
    test: Path | None,
    workers: int,
) -> None:
    import logging

    from fairseq import options
    from fairseq_cli import preprocess

    argv = [
        "--only-source",
        "--srcdict",
        str(dictionary),
        "--destdir",
        str(dest),
        "--workers",
        str(workers),
        "--trainpref",
        str(train),
    ]
    if valid:
        argv += ["--validpref", ",".join(str(v) for v in valid)]
    if test is not None:
        argv += ["--testpref", str(test)]
    args = options.get_preprocessing_parser().parse_args(argv)
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        preprocess.main(args)
    finally:
        for handler in root.handlers[:]:
            if handler not in before:
                root.removeHandler(handler)
                handler.close()


def _write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def prepare_corpus(
    corpus: Path,
    bpe_dir: Path,
    dest: Path,
    valid_fraction: float = 0.01,
    workers: int = 1,
    log: Callable[[str], None] = print,
) -> Path:
    """``dest`` with ``{train,valid}.{bin,idx}`` and ``dict.txt`` for fairseq's ``masked_lm``."""
    bpe_dir = check_bpe_dir(bpe_dir)
    manifest = _manifest("corpus", {"corpus": Path(corpus)}, bpe_dir, valid_fraction=valid_fraction)
    if _is_current(Path(dest), manifest):
        log(f"[fairseq-data] {dest} is up to date")
        return Path(dest)
    docs = read_documents(Path(corpus))
    train_idx, valid_idx = split_documents(len(docs), valid_fraction)
    encoder = BpeEncoder(bpe_dir)

    def fill(tmp: Path) -> None:
        raw = tmp / "raw"
        raw.mkdir()
        bpe = {
            split: _write_lines(raw / f"{split}.bpe", [encoder.line(docs[i]) for i in idx])
            for split, idx in (("train", train_idx), ("valid", valid_idx))
        }
        binarize(bpe_dir / "dict.txt", tmp, bpe["train"], [bpe["valid"]], workers=workers)
        shutil.rmtree(raw)

    log(f"[fairseq-data] {len(train_idx):,} train / {len(valid_idx):,} valid documents -> {dest}")
    return _build(Path(dest), manifest, fill)


def glue_splits(
    task: glue.GlueTask, train: glue.Examples, dev: glue.Examples, heldout_fraction: float
) -> dict[str, glue.Examples]:
    """The fairseq splits of one task: ``train``, ``valid`` (dev), ``heldout`` (part of train,
    when ``heldout_fraction`` > 0) and, for CoLA, ``valid1`` (dev without its first line)."""
    splits = {}
    if heldout_fraction > 0:
        keep, held = glue.heldout_split(len(train), heldout_fraction)
        splits["train"], splits["heldout"] = train.subset(keep), train.subset(held)
    else:
        splits["train"] = train
    splits["valid"] = dev
    if task.name == "CoLA":
        splits["valid1"] = dev.subset(range(1, len(dev)))
    return splits


def _label_lines(task: glue.GlueTask, ex: glue.Examples) -> list[str]:
    if task.is_regression:  # fairseq's GLUE recipe trains STS-B on score / 5
        return [repr(float(y) / 5.0) for y in ex.labels]
    return [str(int(y)) for y in ex.labels]


def prepare_glue_task(
    glue_dir: Path,
    task_name: str,
    bpe_dir: Path,
    dest: Path,
    heldout_fraction: float = 0.0,
    workers: int = 1,
    log: Callable[[str], None] = print,
) -> Path:
    """One GLUE task in fairseq's ``sentence_prediction`` layout under ``dest``."""
    bpe_dir = check_bpe_dir(bpe_dir)
    task = glue.get_task(task_name)
    sources = {
        s: glue.task_folder(glue_dir, task) / f"{task.canonical_split(s)}.tsv"
        for s in ("train", "dev")
    }
    manifest = _manifest(
        "glue", sources, bpe_dir, task=task.name, heldout_fraction=heldout_fraction
    )
    if _is_current(Path(dest), manifest):
        log(f"[fairseq-data] {dest} is up to date")
        return Path(dest)
    train = glue.read_split(glue_dir, task, "train")
    dev = glue.read_split(glue_dir, task, "dev")
    splits = glue_splits(task, train, dev, heldout_fraction)
    encoder = BpeEncoder(bpe_dir)
    columns = ["input0"] + (["input1"] if task.is_pair else [])

    def fill(tmp: Path) -> None:
        raw = tmp / "raw"
        raw.mkdir()
        texts = {"input0": lambda ex: ex.text_a, "input1": lambda ex: ex.text_b}
        for col in columns:
            files = {
                s: _write_lines(raw / f"{s}.{col}", [encoder.line(t) for t in texts[col](ex)])
                for s, ex in splits.items()
            }
            _binarize_splits(files, bpe_dir / "dict.txt", tmp / col, workers)
        labels = {s: _label_lines(task, ex) for s, ex in splits.items()}
        (tmp / "label").mkdir()
        if task.is_regression:  # sentence_prediction reads raw scores from label/{split}.label
            for split, lines in labels.items():
                _write_lines(tmp / "label" / f"{split}.label", lines)
        else:  # a fixed label dictionary, so that class i is label id i in every split
            label_dict = _write_lines(
                raw / "label.dict", [f"{i} 1" for i in range(task.num_labels)]
            )
            files = {s: _write_lines(raw / f"{s}.label", lines) for s, lines in labels.items()}
            _binarize_splits(files, label_dict, tmp / "label", workers)
        shutil.rmtree(raw)

    counts = ", ".join(f"{s} {len(e):,}" for s, e in splits.items())
    log(f"[fairseq-data] {task.name}: {counts} -> {dest}")
    return _build(Path(dest), manifest, fill)


def _binarize_splits(files: dict[str, Path], dictionary: Path, dest: Path, workers: int) -> None:
    """Binarize ``{split: text file}`` for splits train, valid, valid1 (CoLA) and heldout in one
    preprocess call: heldout goes through preprocess's ``test`` slot and is renamed."""
    valid = [files[s] for s in ("valid", "valid1") if s in files]
    binarize(dictionary, dest, files["train"], valid, files.get("heldout"), workers)
    if "heldout" in files:
        for ext in ("bin", "idx"):
            os.replace(dest / f"test.{ext}", dest / f"heldout.{ext}")


def prepare_glue(
    glue_dir: Path,
    tasks: Sequence[str],
    bpe_dir: Path,
    dest: Path,
    heldout_fraction: float = 0.0,
    workers: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """:func:`prepare_glue_task` for each task, into ``dest/<TASK>``."""
    return {
        t: prepare_glue_task(
            glue_dir, t, bpe_dir, Path(dest) / glue.get_task(t).name, heldout_fraction, workers, log
        )
        for t in tasks
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_bert.fairseq_data",
        description="GPT-2 BPE encoding and fairseq-preprocess binarization of a pretraining "
        "corpus or of GLUE tasks, from local files (needs fairseq installed).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("corpus", help="a text corpus, one document per line, for masked_lm")
    c.add_argument("--corpus", type=Path, required=True, help="the text file")
    c.add_argument("--valid-fraction", type=float, default=0.01, help="documents held out")
    g = sub.add_parser("glue", help="GLUE tasks for sentence_prediction")
    g.add_argument("--glue-dir", type=Path, required=True, help="folder with CoLA/, SST-2/, ...")
    g.add_argument(
        "--tasks", nargs="+", default=["CoLA", "SST-2", "STS-B", "MRPC", "RTE"], help="GLUE tasks"
    )
    g.add_argument(
        "--heldout-fraction",
        type=float,
        default=0.0,
        help="part of train held out as split 'heldout' (the clean protocol)",
    )
    for q in (c, g):
        q.add_argument(
            "--bpe-dir",
            type=Path,
            default=os.environ.get("GPT2_BPE_DIR"),
            help="encoder.json, vocab.bpe, dict.txt (default $GPT2_BPE_DIR)",
        )
        q.add_argument("--out", type=Path, required=True, help="destination folder")
        q.add_argument("--workers", type=int, default=1, help="fairseq-preprocess workers")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.what == "corpus":
            prepare_corpus(args.corpus, args.bpe_dir, args.out, args.valid_fraction, args.workers)
        else:
            prepare_glue(
                args.glue_dir,
                args.tasks,
                args.bpe_dir,
                args.out,
                args.heldout_fraction,
                args.workers,
            )
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
