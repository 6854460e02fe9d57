"""GLUE tasks: what each one is, and its examples read from disk or from the Hugging Face Hub.

Two sources, one result (:class:`Examples`, with the same label ids either way):

- a local ``glue_data/`` folder, the layout GLUE's ``download_glue_data.py`` writes and
  fairseq's ``preprocess_GLUE_tasks.sh`` reads: ``<glue_dir>/<Task>/{train,dev,test}.tsv``
  (MNLI: ``dev_matched.tsv``, ``dev_mismatched.tsv``, ``test_matched.tsv``,
  ``test_mismatched.tsv``), see :func:`read_split`;
- the Hub dataset ``nyu-mll/glue``, see :func:`load_hub`.

:func:`load` picks between them from the ``--glue-dir`` value (a folder, or ``"hub"``).

Label ids follow the Hub's ``ClassLabel`` order for every task (RTE and QNLI:
entailment=0, not_entailment=1; MNLI: entailment=0, neutral=1, contradiction=2; the 0/1 tasks
keep their digits), so a model fine-tuned from one source can be scored on the other.
:func:`load_hub` checks the Hub's label names against this table and refuses to go on if they
ever differ.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HUB_DATASET = "nyu-mll/glue"
# Spelled out in every "folder not found" message, so that the fix is on the screen.
_GLUE_DIR_HINT = (
    "pass --glue-dir pointing at the folder that holds CoLA/, SST-2/, ... (the layout of "
    "GLUE's download_glue_data.py), or use --glue-dir hub to load from the Hugging Face Hub"
)
# Real GLUE files have a handful of broken rows (QQP's train.tsv has a few short ones); more than
# this share means the file is not the layout we think it is, and skipping would hide that.
MAX_MALFORMED_FRACTION = 0.01


class GlueDataNotFoundError(FileNotFoundError):
    """A GLUE folder or file is missing; the message names the path and the fix."""


@dataclass(frozen=True)
class _Layout:
    """Where the fields sit in one kind of TSV file (column indices; -1 is the last column)."""

    header: bool
    text_a: int
    text_b: int | None = None
    label: int | None = None  # None: unlabelled (the test files)

    @property
    def min_columns(self) -> int:
        """Fewer columns than this and the row cannot hold every field: it is malformed."""
        cols = [c for c in (self.text_a, self.text_b, self.label) if c is not None]
        needed = max(c for c in cols if c >= 0) + 1
        # A field counted from the end must lie past the others, or it would read one of them.
        return needed + 1 if any(c < 0 for c in cols) else needed


@dataclass(frozen=True)
class GlueTask:
    """One GLUE task: its labels, metrics, splits, and where its fields are in the files.

    ``metrics`` are the names :func:`adan_bert.metrics.compute` returns for it; ``primary`` is
    the one the Adan paper reports; ``paper_select`` is what the paper's fairseq runs chose
    checkpoints on (``"accuracy"`` for every classification task, CoLA included although it
    reports MCC; ``"loss"``, the lowest dev loss, for STS-B).
    """

    name: str
    num_labels: int
    metrics: tuple[str, ...]
    primary: str
    paper_select: str
    dev_splits: tuple[str, ...]
    hub_config: str
    # The label cells of the TSV files, in id order ("0"/"1", or words for the NLI tasks).
    tsv_labels: tuple[str, ...] = field(default=(), repr=False)
    # Human-readable names in id order, exactly the Hub's ClassLabel names.
    hub_label_names: tuple[str, ...] = field(default=(), repr=False)
    # The Hub's text columns (the second is None for single-sentence tasks).
    hub_columns: tuple[str, str | None] = field(default=("sentence", None), repr=False)
    layout: _Layout = field(default=_Layout(header=True, text_a=0), repr=False)
    test_layout: _Layout = field(default=_Layout(header=True, text_a=1), repr=False)

    @property
    def is_regression(self) -> bool:
        """True for STS-B, whose label is one similarity score in [0, 5]."""
        return self.num_labels == 1

    @property
    def label_names(self) -> tuple[str, ...]:
        """Class names in id order; empty for regression."""
        return self.hub_label_names

    @property
    def is_pair(self) -> bool:
        """True when each example is a pair of texts (everything but CoLA and SST-2)."""
        return self.layout.text_b is not None

    @property
    def test_splits(self) -> tuple[str, ...]:
        """The unlabelled splits (MNLI has a matched and a mismatched one)."""
        if len(self.dev_splits) > 1:
            return tuple(s.replace("dev", "test", 1) for s in self.dev_splits)
        return ("test",)

    @property
    def splits(self) -> tuple[str, ...]:
        """Every split name :func:`read_split` and :func:`load_hub` accept for this task."""
        extra = ("dev",) if "dev" not in self.dev_splits else ()
        test_alias = ("test",) if "test" not in self.test_splits else ()
        return ("train", *self.dev_splits, *extra, *self.test_splits, *test_alias)

    def canonical_split(self, split: str) -> str:
        """``split`` with aliases resolved ("dev" is MNLI's dev_matched, "test" its
        test_matched); ValueError for a split this task does not have."""
        if split not in self.splits:
            raise ValueError(
                f"{self.name} has no split {split!r}; choose one of {', '.join(self.splits)}"
            )
        if split == "dev":
            return self.dev_splits[0]
        if split == "test":
            return self.test_splits[0]
        return split


def _binary(
    name: str,
    hub_config: str,
    names: tuple[str, str],
    layout: _Layout,
    test_layout: _Layout,
    *,
    metrics: tuple[str, ...] = ("accuracy",),
    primary: str = "accuracy",
    tsv_labels: tuple[str, str] = ("0", "1"),
    hub_columns: tuple[str, str | None] = ("sentence1", "sentence2"),
) -> GlueTask:
    """A two-class task; the paper's fairseq runs selected all of them on dev accuracy."""
    return GlueTask(
        name=name,
        num_labels=2,
        metrics=metrics,
        primary=primary,
        paper_select="accuracy",
        dev_splits=("dev",),
        hub_config=hub_config,
        tsv_labels=tsv_labels,
        hub_label_names=names,
        hub_columns=hub_columns,
        layout=layout,
        test_layout=test_layout,
    )


_NLI = ("entailment", "not_entailment")
_PAIR_1_2 = _Layout(header=True, text_a=1, text_b=2)  # index, sentence1, sentence2 (tests)
# Layouts as GLUE's download_glue_data.py writes them; checked against the real files (the
# module's tests rebuild each one in miniature).
TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        # source, label, original label, sentence; NO header (its first line is an example).
        # The test file is "index sentence", with a header.
        _binary(
            "CoLA", "cola", ("unacceptable", "acceptable"),
            _Layout(header=False, text_a=3, label=1), _Layout(header=True, text_a=1),
            metrics=("mcc", "accuracy"), primary="mcc", hub_columns=("sentence", None),
        ),
        # sentence, label (test: index, sentence)
        _binary(
            "SST-2", "sst2", ("negative", "positive"),
            _Layout(header=True, text_a=0, label=1), _Layout(header=True, text_a=1),
            hub_columns=("sentence", None),
        ),
        # index genre filename year old_index source1 source2 sentence1 sentence2 score
        GlueTask(
            name="STS-B", num_labels=1, metrics=("pearson", "spearman"), primary="pearson",
            paper_select="loss", dev_splits=("dev",), hub_config="stsb",
            hub_columns=("sentence1", "sentence2"),
            layout=_Layout(header=True, text_a=7, text_b=8, label=-1),
            test_layout=_Layout(header=True, text_a=7, text_b=8),
        ),
        # Quality, #1 ID, #2 ID, #1 String, #2 String (the test file has index for Quality).
        _binary(
            "MRPC", "mrpc", ("not_equivalent", "equivalent"),
            _Layout(header=True, text_a=3, text_b=4, label=0),
            _Layout(header=True, text_a=3, text_b=4),
            metrics=("accuracy", "f1"),
        ),
        # index, sentence1, sentence2, label
        _binary(
            "RTE", "rte", _NLI,
            _Layout(header=True, text_a=1, text_b=2, label=3), _PAIR_1_2, tsv_labels=_NLI,
        ),
        # sentence1/2 at 8/9; the gold label is the last column (train has 12, dev 16 columns).
        GlueTask(
            name="MNLI", num_labels=3, metrics=("accuracy",), primary="accuracy",
            paper_select="accuracy", dev_splits=("dev_matched", "dev_mismatched"),
            hub_config="mnli", tsv_labels=("entailment", "neutral", "contradiction"),
            hub_label_names=("entailment", "neutral", "contradiction"),
            hub_columns=("premise", "hypothesis"),
            layout=_Layout(header=True, text_a=8, text_b=9, label=-1),
            test_layout=_Layout(header=True, text_a=8, text_b=9),
        ),
        # index, question, sentence, label
        _binary(
            "QNLI", "qnli", _NLI,
            _Layout(header=True, text_a=1, text_b=2, label=3), _PAIR_1_2,
            tsv_labels=_NLI, hub_columns=("question", "sentence"),
        ),
        # id, qid1, qid2, question1, question2, is_duplicate (test: id, question1, question2).
        _binary(
            "QQP", "qqp", ("not_duplicate", "duplicate"),
            _Layout(header=True, text_a=3, text_b=4, label=5), _PAIR_1_2,
            metrics=("accuracy", "f1"), hub_columns=("question1", "question2"),
        ),
        # index, sentence1, sentence2, label (0/1, 1 = entailment, as the Hub's order)
        _binary(
            "WNLI", "wnli", ("not_entailment", "entailment"),
            _Layout(header=True, text_a=1, text_b=2, label=3), _PAIR_1_2,
        ),
    )
}  # fmt: skip


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_ALIASES = {_normalise(name): name for name in TASKS}


def get_task(name: str | GlueTask) -> GlueTask:
    """The task called ``name``, ignoring case and punctuation ("cola", "sst2", "STS-B",
    "sts_b" all work); a :class:`GlueTask` is returned as it is. ValueError for an unknown
    name, listing the valid ones."""
    if isinstance(name, GlueTask):
        return name
    if not isinstance(name, str):
        raise TypeError(f"a GLUE task name must be a string, not {type(name).__name__}")
    canonical = _ALIASES.get(_normalise(name))
    if canonical is None:
        raise ValueError(f"unknown GLUE task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[canonical]


@dataclass(eq=False)  # numpy fields: == would be ambiguous
class Examples:
    """One split of one task, column-wise.

    ``labels`` are int64 class ids, or float32 scores for STS-B. For the unlabelled test splits
    they are all -1 (NaN for STS-B). ``malformed`` counts the rows of the source file that were
    skipped for having too few columns.
    """

    task: GlueTask
    split: str
    text_a: list[str]
    text_b: list[str] | None
    labels: np.ndarray
    malformed: int = 0

    def __post_init__(self) -> None:
        n = len(self.text_a)
        if self.text_b is not None and len(self.text_b) != n:
            raise ValueError(f"text_b has {len(self.text_b)} entries but text_a has {n}")
        if self.labels.shape != (n,):
            raise ValueError(f"labels have shape {self.labels.shape}, expected ({n},)")

    def __len__(self) -> int:
        return len(self.text_a)

    @property
    def is_labelled(self) -> bool:
        """False for the test splits, whose labels are placeholders."""
        if self.task.is_regression:
            return not bool(np.isnan(self.labels).any())
        return not bool((self.labels < 0).any())

    def subset(self, indices: Sequence[int] | np.ndarray) -> Examples:
        """The examples at ``indices``, in that order (e.g. from :func:`heldout_split`)."""
        idx = np.asarray(indices)
        if idx.size == 0:
            idx = idx.astype(np.int64)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(
                f"subset() takes a 1-D sequence of integer indices, got dtype {idx.dtype} "
                f"and shape {idx.shape}"
            )
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(
                f"subset() indices must lie in [0, {n}) for {self.task.name} {self.split}; "
                f"got min {idx.min()}, max {idx.max()}"
            )
        pick = idx.tolist()
        return Examples(
            task=self.task,
            split=self.split,
            text_a=[self.text_a[i] for i in pick],
            text_b=None if self.text_b is None else [self.text_b[i] for i in pick],
            labels=self.labels[idx].copy(),
            malformed=self.malformed,
        )


# --------------------------------------------------------------------------------------------
# Local TSV files.


def _file_name(task: GlueTask, split: str) -> str:
    return f"{task.canonical_split(split)}.tsv"


def task_folder(glue_dir: str | Path, task: GlueTask | str) -> Path:
    """The folder holding ``task``'s TSV files: ``glue_dir/<Task>``, or ``glue_dir`` itself
    when it is that task's own folder (it holds train.tsv and its name is the task's, in any
    spelling get_task accepts)."""
    task = get_task(task)
    root = Path(glue_dir).expanduser()
    if not root.is_dir():
        raise GlueDataNotFoundError(f"GLUE folder {root} not found: {_GLUE_DIR_HINT}")
    if any((root / f"{s}.tsv").is_file() for s in ("train", *task.dev_splits, *task.test_splits)):
        if _normalise(root.resolve().name) == _normalise(task.name):
            return root
        if _normalise(root.resolve().name) in _ALIASES:
            # A sibling task's folder: reading it would silently give the wrong task.
            raise GlueDataNotFoundError(
                f"{root} is the folder of {_ALIASES[_normalise(root.resolve().name)]}, not of "
                f"{task.name}: {_GLUE_DIR_HINT}"
            )
    folder = root / task.name
    if folder.is_dir():
        return folder
    # Other copies of glue_data spell the folders differently (SST2, sts-b, ...).
    for child in sorted(root.iterdir()):
        if child.is_dir() and _normalise(child.name) == _normalise(task.name):
            return child
    raise GlueDataNotFoundError(f"GLUE folder {folder} not found: {_GLUE_DIR_HINT}")


def _parse_label(task: GlueTask, cell: str, path: Path, line: int) -> float | int:
    if task.is_regression:
        try:
            score = float(cell)
        except ValueError:
            score = math.nan
        if not (0.0 <= score <= 5.0):  # NaN fails this too
            raise ValueError(
                f"{path}, line {line}: {task.name} score {cell!r} is not a number in [0, 5]; "
                f"is this the GLUE STS-B file (score in the last column)?"
            )
        return score
    try:
        return task.tsv_labels.index(cell)
    except ValueError:
        hint = ""
        if line == 1 and not task.layout.header:
            hint = f" ({task.name}'s train/dev files have no header: line 1 must be an example)"
        raise ValueError(
            f"{path}, line {line}: unknown {task.name} label {cell!r}; allowed labels are "
            f"{', '.join(repr(x) for x in task.tsv_labels)}{hint}"
        ) from None


def _looks_like_data(task: GlueTask, row: list[str], layout: _Layout) -> bool:
    """Whether a row expected to be the header is an example instead (a file that lost its
    header; reading it as a header would silently drop an example)."""
    if len(row) < layout.min_columns:
        return False
    if layout.label is None:  # test files: data rows start with an integer index
        return row[0].strip().isdigit()
    cell = row[layout.label]
    if task.is_regression:
        try:
            float(cell)
        except ValueError:
            return False
        return True
    return cell in task.tsv_labels


def read_split(glue_dir: str | Path, task: GlueTask | str, split: str) -> Examples:
    """Read one split of ``task`` from a local GLUE folder.

    ``glue_dir`` holds ``CoLA/``, ``SST-2/``, ... (the ``glue_data`` layout of GLUE's
    ``download_glue_data.py``), or is the task's own folder. ``split`` is one of "train", "dev",
    "test", and for MNLI also "dev_matched", "dev_mismatched", "test_matched",
    "test_mismatched" ("dev" and "test" are the matched ones there).

    The test files are unlabelled: their labels come back as -1 (NaN for STS-B).

    Rows with too few columns are skipped and counted in ``Examples.malformed``; more than 1%
    of them is a ValueError, as is an unknown label (naming the file and line).
    """
    task = get_task(task)
    name = _file_name(task, split)  # validates split before touching the disk
    folder = task_folder(glue_dir, task)
    path = folder / name
    if not path.is_file():
        present = sorted(p.name for p in folder.glob("*.tsv"))
        raise GlueDataNotFoundError(
            f"GLUE file {path} not found ({folder} has {', '.join(present) or 'no .tsv files'}): "
            f"download {task.name} again with GLUE's download_glue_data.py, or use --glue-dir hub"
        )
    is_test = task.canonical_split(split) in task.test_splits
    layout = task.test_layout if is_test else task.layout
    text_a: list[str] = []
    text_b: list[str] = []
    labels: list[float] = []
    malformed = rows = 0
    # utf-8-sig: MRPC's files start with a byte-order mark. QUOTE_NONE: GLUE sentences hold
    # stray double quotes that the default dialect would treat as field quoting.
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            for row in reader:
                if not row:  # a blank line (e.g. at the end) holds nothing to skip or count
                    continue
                if layout.header and reader.line_num == 1:
                    if _looks_like_data(task, row, layout):
                        raise ValueError(
                            f"{path}, line 1 looks like an example, but {task.name}'s {name} "
                            f"starts with a header in GLUE's layout; add the header line back "
                            f"(or fetch the file again) so that no example is lost"
                        )
                    continue
                rows += 1
                if len(row) < layout.min_columns:
                    malformed += 1
                    continue
                text_a.append(row[layout.text_a])
                if layout.text_b is not None:
                    text_b.append(row[layout.text_b])
                if layout.label is not None:
                    labels.append(_parse_label(task, row[layout.label], path, reader.line_num))
        except UnicodeDecodeError as e:
            raise ValueError(f"{path} is not UTF-8 text ({e}); is it a GLUE TSV file?") from e
    if malformed > MAX_MALFORMED_FRACTION * rows:
        raise ValueError(
            f"{path}: {malformed} of {rows} rows have fewer than {layout.min_columns} "
            f"tab-separated columns (more than {MAX_MALFORMED_FRACTION:.0%}); this is not "
            f"{task.name} in GLUE's layout: fetch it again with download_glue_data.py"
        )
    if malformed:
        log.warning("%s: skipped %d malformed rows of %d", path, malformed, rows)
    if not text_a:
        raise ValueError(f"{path} holds no examples; fetch it again with download_glue_data.py")
    n = len(text_a)
    if layout.label is not None:
        array = np.asarray(labels, dtype=np.float32 if task.is_regression else np.int64)
    else:
        array = np.full(n, np.nan if task.is_regression else -1, _label_dtype(task))
    return Examples(
        task=task,
        split=task.canonical_split(split),
        text_a=text_a,
        text_b=text_b if layout.text_b is not None else None,
        labels=array,
        malformed=malformed,
    )


def _label_dtype(task: GlueTask) -> type:
    return np.float32 if task.is_regression else np.int64


# --------------------------------------------------------------------------------------------
# The Hugging Face Hub.


def _hub_split(task: GlueTask, split: str) -> str:
    s = task.canonical_split(split)
    return s.replace("dev", "validation", 1) if s.startswith("dev") else s


def load_hub(task: GlueTask | str, split: str, cache_dir: str | None = None) -> Examples:
    """Load one split of ``task`` from the Hub dataset ``nyu-mll/glue`` (same split names as
    :func:`read_split`; "dev" maps to the Hub's "validation").

    The ids are the TSV reader's: both follow the Hub's ClassLabel order, and a Hub dataset
    whose label names differ from :attr:`GlueTask.label_names` is an error rather than a silent
    relabelling. Test labels come back as -1 (NaN for STS-B), as from the TSV files.

    Any failure to get the data (no network, Hub down, ``datasets`` missing) is a RuntimeError
    saying to pass a local ``--glue-dir``.
    """
    task = get_task(task)
    hub_split = _hub_split(task, split)
    try:
        import datasets  # lazily: only Hub users need it, and it is slow to import
    except ImportError as e:
        raise RuntimeError(
            f"loading GLUE from the Hub needs the 'datasets' package ({e}); install it "
            f"(pip install datasets) or pass --glue-dir pointing at a local glue_data folder"
        ) from e
    # The except is broad on purpose: offline failures arrive as requests', httpx's or
    # huggingface_hub's own exception types (not all of them OSError); the original stays
    # chained as __cause__.
    try:
        ds = datasets.load_dataset(
            HUB_DATASET, task.hub_config, split=hub_split, cache_dir=cache_dir
        )
    except Exception as e:
        raise RuntimeError(
            f"could not load {HUB_DATASET} ({task.hub_config}, split {hub_split}) from the "
            f"Hugging Face Hub ({type(e).__name__}: {e}); the Hub is unreachable from here "
            f"(offline?): pass --glue-dir pointing at a local glue_data folder holding "
            f"{task.name}/"
        ) from e
    _check_hub_labels(task, ds)
    col_a, col_b = task.hub_columns
    text_a = [str(x) for x in ds[col_a]]
    text_b = [str(x) for x in ds[col_b]] if col_b is not None else None
    raw = np.asarray(list(ds["label"]), dtype=np.float64)
    if len(raw) != len(text_a):
        raise RuntimeError(f"{HUB_DATASET} {task.hub_config} {hub_split}: columns differ in length")
    canonical = task.canonical_split(split)
    if canonical in task.test_splits:
        # The Hub marks the hidden test labels with -1.
        labels = np.full(len(raw), np.nan if task.is_regression else -1, _label_dtype(task))
    elif task.is_regression:
        labels = raw.astype(np.float32)
    else:
        bad = (raw < 0) | (raw >= task.num_labels) | (raw != np.round(raw))
        if bad.any():
            raise RuntimeError(
                f"{HUB_DATASET} {task.hub_config} {hub_split}: {int(bad.sum())} labels outside "
                f"0..{task.num_labels - 1}; use a local --glue-dir instead"
            )
        labels = raw.astype(np.int64)
    return Examples(task=task, split=canonical, text_a=text_a, text_b=text_b, labels=labels)


def _check_hub_labels(task: GlueTask, ds: object) -> None:
    """Refuse a Hub dataset whose class order differs from the TSV reader's ids."""
    features = getattr(ds, "features", None)
    if task.is_regression or not features or "label" not in features:
        return
    names = getattr(features["label"], "names", None)
    if names is not None and tuple(names) != task.label_names:
        raise RuntimeError(
            f"{HUB_DATASET} {task.hub_config} labels are {list(names)}, expected "
            f"{list(task.label_names)}: its ids would not match the TSV files'; use a local "
            f"--glue-dir instead"
        )


# --------------------------------------------------------------------------------------------
# Either source, and a held-out part of train.


def load(
    glue_dir: str | Path | None,
    task: GlueTask | str,
    split: str,
    *,
    cache_dir: str | None = None,
) -> Examples:
    """One split of ``task`` from ``--glue-dir``: the string "hub" loads it from the Hugging
    Face Hub (:func:`load_hub`, with ``cache_dir``), a folder reads the TSV files there
    (:func:`read_split`); None is a ValueError saying what to pass."""
    if glue_dir is None or (isinstance(glue_dir, str) and not glue_dir.strip()):
        raise ValueError(
            "no GLUE data given: pass --glue-dir with a folder holding CoLA/, SST-2/, ... (the "
            "layout of GLUE's download_glue_data.py), or --glue-dir hub to load the tasks from "
            "the Hugging Face Hub"
        )
    if isinstance(glue_dir, str) and glue_dir.strip().lower() == "hub":
        return load_hub(task, split, cache_dir=cache_dir)
    return read_split(glue_dir, task, split)


def heldout_split(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (train indices, held-out indices), both sorted.

    The held-out part has ``round(n * fraction)`` examples (at least 1 when fraction > 0) drawn
    by a permutation from ``numpy.random.default_rng(seed)``: it depends on (n, fraction, seed)
    and nothing else (not the global RNG, not the optimizer), so every run of a grid holds out
    the same examples. ``fraction`` 0 gives (all, empty). ValueError for a fraction outside
    [0, 0.5] or a held-out part that would leave no training examples.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"heldout_split needs a number of examples n >= 0, got {n!r}")
    if not (0.0 <= fraction <= 0.5):  # NaN fails this too
        raise ValueError(
            f"held-out fraction {fraction!r} is outside [0, 0.5]: pass e.g. 0.1 to hold out 10% "
            f"of train, or 0 for none"
        )
    n = int(n)
    size = 0 if fraction == 0 else max(1, round(n * fraction))
    if size >= n and size > 0:
        raise ValueError(
            f"holding out {size} of {n} examples (fraction {fraction}) leaves none to train on; "
            f"use a smaller fraction or more data"
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[size:]).astype(np.int64), np.sort(order[:size]).astype(np.int64)
