"""Pretraining data: a text corpus (one document per line) -> tokens -> 512-token blocks -> masks.

The steps, each cached on disk so that a grid's runs (and torchrun's ranks) share one copy:

1. **Tokenizer.** The paper's GPT-2 byte-level BPE (``encoder.json``, ``vocab.bpe``) with
   fairseq's dictionary (``dict.txt``) ordering the ids, which gives RoBERTa's 50,265 types; or,
   for small runs, a byte-level BPE trained on the corpus itself.
2. **Tokens.** Every document encoded once into a flat array on disk (``tokens.npy``, memory
   mapped, never held once per process) with the documents' offsets, each document followed by
   ``</s>`` as fairseq's binarised data is.
3. **Blocks.** fairseq's ``complete`` break mode: whole documents are packed into a block as
   long as they fit; a block never holds part of a document beside another one (a document
   longer than a block fills blocks of its own). Each block starts with ``<s>``.
4. **Masks.** :class:`Masker`: 15 % of each block's non-special tokens, 80/10/10, drawn per
   block from ``(seed, epoch, index)`` (:class:`MaskedBlocks`).

The validation documents (``valid_fraction`` of them, chosen once by a fixed permutation) are
masked once with a fixed seed, so that every evaluation of every run scores the same inputs.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from adan_repro.atomic import write_atomic, write_json_atomic, write_text_atomic
from adan_repro.download import DownloadError, fetch

from .presets import Masking

SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # fairseq's Dictionary order: ids 0-3
MASK = "<mask>"  # appended last, as fairseq's masked_lm task does
ENV_CACHE = "ADAN_BERT_CACHE"

# The GPT-2 BPE files as fairseq distributes them (the paper's data preparation used these).
GPT2_BPE_URL = "https://dl.fbaipublicfiles.com/fairseq/gpt2_bpe/"
GPT2_BPE_MD5 = {
    "encoder.json": "dffec25a898b1f5e569bec4dffd7e5c0",
    "vocab.bpe": "75a37753dd7a28a2c5df80c28bf06e4e",
    # dict.txt has no published checksum; its layout is checked instead (read_fairseq_dict).
    "dict.txt": None,
}
GPT2_DICT_LINES = 50260


def default_cache() -> Path:
    import os

    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "adan_bert")


def _digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# The corpus.


def read_documents(path: Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, one document each (stripped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"corpus {path} not found: pass --corpus FILE (plain text, one document per line)"
        )
    docs = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    docs = [d for d in docs if d]
    if len(docs) < 10:
        raise ValueError(f"corpus {path} has {len(docs)} non-empty lines; it needs at least 10")
    return docs


def write_glue_corpus(glue_dir: Path, dest: Path, tasks: Sequence[str] | None = None) -> Path:
    """The quick runs' default corpus: every distinct sentence of the GLUE *training* sets in
    ``glue_dir`` (CoLA, SST-2, STS-B, MRPC, RTE where present), one per line, in file order.
    Dev and test text is left out, so fine-tuning is never scored on sentences seen in
    pretraining."""
    from . import glue

    names = list(tasks or ("CoLA", "SST-2", "STS-B", "MRPC", "RTE"))
    seen: dict[str, None] = {}
    found = []
    for name in names:
        try:
            ex = glue.read_split(glue_dir, name, "train")
        except FileNotFoundError:
            continue
        found.append(name)
        for text in ex.text_a + (ex.text_b or []):
            text = " ".join(text.split())
            if text:
                seen.setdefault(text)
    if not found:
        raise FileNotFoundError(
            f"no GLUE training set found under {glue_dir}: pass --glue-dir pointing at the folder "
            "that holds CoLA/, SST-2/, ... or give a corpus with --corpus FILE"
        )
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(dest), "\n".join(seen) + "\n")
    return Path(dest)


def split_documents(n: int, valid_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) document indices: a fixed permutation (seed 0), like the paper's 99:1
    split; the same for every run and optimizer."""
    perm = np.random.default_rng(0).permutation(n)
    n_valid = max(1, round(n * valid_fraction))
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


# --------------------------------------------------------------------------------------------
# Tokenizers.


def read_fairseq_dict(path: Path) -> list[str]:
    """The symbols of a fairseq ``dict.txt`` (``<symbol> <count>`` per line), in order."""
    symbols = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.rsplit(" ", 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{path}:{i}: expected '<symbol> <count>', got {line!r}")
        symbols.append(parts[0])
    return symbols


def download_gpt2_bpe(dest: Path, log: Callable[[str], None] = print) -> Path:
    """Fetch fairseq's GPT-2 BPE files into ``dest`` (skipping those already there), checking
    each MD5, or dict.txt's layout. Raises DownloadError with what to do when offline."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, md5 in GPT2_BPE_MD5.items():
        target = dest / name
        if target.exists():
            continue
        log(f"[data] downloading {GPT2_BPE_URL}{name}")

        def fill(tmp: Path, name=name, md5=md5) -> None:
            try:
                got = fetch(GPT2_BPE_URL + name, tmp, log)
            except DownloadError as exc:
                raise DownloadError(
                    exc.url,
                    f"{exc.reason}; offline, copy encoder.json, vocab.bpe and dict.txt into "
                    f"{dest} and pass --bpe-dir {dest}",
                ) from None
            if md5 is not None and got != md5:
                raise ValueError(f"{name}: MD5 {got} differs from the expected {md5}")
            if name == "dict.txt" and len(read_fairseq_dict(tmp)) != GPT2_DICT_LINES:
                raise ValueError(f"dict.txt should have {GPT2_DICT_LINES} entries")

        write_atomic(target, fill)
    return dest


def gpt2_vocab(bpe_dir: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """RoBERTa's vocabulary from the GPT-2 BPE files: fairseq's four specials, then the BPE
    tokens in ``dict.txt``'s order (by frequency), then ``<mask>``. A ``dict.txt`` symbol that
    is no BPE id (fairseq's ``madeupword`` padding) keeps its place under its own name."""
    bpe_dir = Path(bpe_dir)
    for name in ("encoder.json", "vocab.bpe", "dict.txt"):
        if not (bpe_dir / name).is_file():
            raise FileNotFoundError(
                f"{bpe_dir / name} not found: --bpe-dir must hold GPT-2's encoder.json and "
                "vocab.bpe and fairseq's dict.txt (see adan_bert.data.download_gpt2_bpe)"
            )
    encoder = json.loads((bpe_dir / "encoder.json").read_text(encoding="utf-8"))
    by_id = {str(i): tok for tok, i in encoder.items()}
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for symbol in read_fairseq_dict(bpe_dir / "dict.txt"):
        vocab.setdefault(by_id.get(symbol, symbol), len(vocab))
    vocab[MASK] = len(vocab)
    merges = []
    for line in (bpe_dir / "vocab.bpe").read_text(encoding="utf-8").splitlines():
        if line.startswith("#version") or not line.strip():
            continue
        a, b = line.split(" ")
        merges.append((a, b))
    return vocab, merges


def _wrap(tokenizer_object, max_len: int):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_object,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token=MASK,
        model_max_length=max_len,
    )


def _with_roberta_template(tok) -> None:
    """``<s> A </s>`` and ``<s> A </s></s> B </s>``, RoBERTa's (and fairseq's GLUE) inputs."""
    from tokenizers import processors

    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), trim_offsets=False
    )


def gpt2_tokenizer(bpe_dir: Path, max_len: int = 512):
    """The paper's tokenizer: GPT-2 byte-level BPE with fairseq's ids (50,265 types)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab, merges = gpt2_vocab(bpe_dir)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    _with_roberta_template(tok)
    return _wrap(tok, max_len)


def train_tokenizer(docs: Sequence[str], vocab_size: int, max_len: int = 512):
    """A byte-level BPE of ``vocab_size`` types trained on ``docs``, with RoBERTa's specials at
    the same ids as fairseq's (``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3) and ``<mask>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 260 + len(SPECIALS) + 1:
        raise ValueError(f"a byte-level BPE needs vocab_size >= 265, got {vocab_size}")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIALS, MASK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    _with_roberta_template(tok)
    return _wrap(tok, max_len)


def load_tokenizer(path: Path):
    """A tokenizer saved by :func:`prepare` (or with any model's checkpoint)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


# --------------------------------------------------------------------------------------------
# Encoding and packing.


def encode_documents(tokenizer, docs: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, offsets): every document's ids followed by ``</s>``, concatenated; document
    ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``."""
    eos = tokenizer.convert_tokens_to_ids("</s>")
    # verbose=False: documents longer than a block are expected (packing splits them)
    ids = tokenizer(list(docs), add_special_tokens=False, verbose=False)["input_ids"]
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    dtype = np.uint16 if len(tokenizer) < 2**16 else np.int32
    tokens = np.empty(int(offsets[-1]), dtype=dtype)
    for i, x in enumerate(ids):
        tokens[offsets[i] : offsets[i + 1] - 1] = x
        tokens[offsets[i + 1] - 1] = eos
    return tokens, offsets


def pack_complete(offsets: np.ndarray, capacity: int) -> np.ndarray:
    """Blocks of at most ``capacity`` tokens as ``(start, end)`` rows into the flat tokens:
    whole documents side by side while they fit (fairseq's ``complete`` mode); a document
    longer than ``capacity`` is cut into blocks that hold nothing else."""
    if capacity < 1:
        raise ValueError(f"block capacity must be at least 1 token, got {capacity}")
    blocks: list[tuple[int, int]] = []
    start = end = int(offsets[0])
    for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        if b - a > capacity:  # a long document: blocks of its own
            if end > start:
                blocks.append((start, end))
            blocks.extend((s, min(s + capacity, b)) for s in range(a, b, capacity))
            start = end = b
        elif b - start > capacity:  # does not fit beside the block's documents
            blocks.append((start, end))
            start, end = a, b
        else:
            end = b
    if end > start:
        blocks.append((start, end))
    return np.asarray(blocks, dtype=np.int64).reshape(-1, 2)


class BlockDataset(torch.utils.data.Dataset):
    """Packed blocks over a memory-mapped token array: item ``i`` is ``<s>`` + its tokens."""

    def __init__(self, tokens: np.ndarray, blocks: np.ndarray, bos: int) -> None:
        self.tokens, self.blocks, self.bos = tokens, blocks, bos

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        a, b = self.blocks[i]
        ids = np.empty(b - a + 1, dtype=np.int64)
        ids[0] = self.bos
        ids[1:] = self.tokens[a:b]
        return {"input_ids": ids}


# --------------------------------------------------------------------------------------------
# Masking.


@dataclass(frozen=True)
class Masker:
    """BERT masking as fairseq's ``MaskTokensDataset`` does it:

    - of a block's maskable positions (every token but ``<s>``, ``</s>``, ``<pad>``, ``<unk>``
      and ``<mask>``), ``floor(prob * n + u)`` with ``u ~ U[0, 1)`` are chosen, so that the
      rate is exact in expectation for every block;
    - of those, ``random_token`` get a token drawn uniformly from the non-special vocabulary,
      ``leave_unmasked`` keep theirs, the rest become ``<mask>``;
    - the labels hold the original ids at the chosen positions and -100 (ignored) elsewhere.
    """

    masking: Masking
    vocab_size: int
    mask_id: int
    special_ids: tuple[int, ...]

    @functools.cached_property
    def _specials(self) -> torch.Tensor:
        return torch.tensor(self.special_ids)

    @functools.cached_property
    def _normal_ids(self) -> torch.Tensor:
        """The ids a random replacement draws from (built once: every block is masked alone)."""
        keep = torch.ones(self.vocab_size, dtype=torch.bool)
        keep[self._specials] = False
        return keep.nonzero().flatten()

    def mask(self, ids: torch.Tensor, g: torch.Generator | None = None):
        """(inputs, labels) for a (batch, length) tensor of ids."""
        m = self.masking
        maskable = ~torch.isin(ids, self._specials)
        counts = maskable.sum(1)
        want = (m.prob * counts + torch.rand(len(ids), generator=g)).floor().long()
        want = torch.minimum(want, counts)
        # The `want` maskable positions of highest random score in each row.
        score = torch.rand(ids.shape, generator=g).masked_fill(~maskable, -1.0)
        rank = score.argsort(dim=1, descending=True).argsort(dim=1)
        chosen = maskable & (rank < want[:, None])
        labels = torch.where(chosen, ids, torch.full_like(ids, -100))
        u = torch.rand(ids.shape, generator=g)
        to_random = chosen & (u < m.random_token)
        to_mask = chosen & (u >= m.random_token + m.leave_unmasked)
        normal = self._normal_ids
        random_ids = normal[torch.randint(len(normal), ids.shape, generator=g)]
        inputs = torch.where(to_mask, torch.full_like(ids, self.mask_id), ids)
        inputs = torch.where(to_random, random_ids, inputs)
        return inputs, labels


def masker_for(tokenizer, masking: Masking) -> Masker:
    specials = tuple(sorted(set(tokenizer.all_special_ids)))
    return Masker(masking, len(tokenizer), tokenizer.mask_token_id, specials)


class MaskedBlocks(torch.utils.data.Dataset):
    """Blocks masked by :class:`Masker`, block ``i`` of epoch ``e`` always the same way: its
    random numbers come from ``(seed, e, i)``, as fairseq seeds each item. So a resumed run sees
    the masks the uninterrupted one would have (no global RNG state involved), and ``fixed``
    (the validation set) masks every block once for all evaluations."""

    def __init__(self, blocks: BlockDataset, masker: Masker, seed: int, fixed: bool = False):
        self.blocks, self.masker, self.seed, self.fixed = blocks, masker, seed, fixed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict:
        key = np.random.SeedSequence([self.seed, 0 if self.fixed else self.epoch, int(i)])
        g = torch.Generator().manual_seed(int(key.generate_state(1, np.uint64)[0] >> 1))
        ids = torch.as_tensor(self.blocks[i]["input_ids"])[None]
        inputs, labels = self.masker.mask(ids, g)
        return {"input_ids": inputs[0], "labels": labels[0]}


@dataclass(frozen=True)
class PadCollator:
    """Right-pads ``input_ids`` (with ``<pad>``) and ``labels`` (with -100) to the batch's
    longest block, with the attention mask."""

    pad_id: int

    def __call__(self, items: Sequence[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(x["input_ids"]) for x in items)
        ids = torch.full((len(items), longest), self.pad_id, dtype=torch.long)
        labels = torch.full((len(items), longest), -100, dtype=torch.long)
        for row, x in enumerate(items):
            n = len(x["input_ids"])
            ids[row, :n] = torch.as_tensor(x["input_ids"])
            labels[row, :n] = torch.as_tensor(x["labels"])
        return {"input_ids": ids, "attention_mask": (ids != self.pad_id).long(), "labels": labels}


# --------------------------------------------------------------------------------------------
# Preparing a corpus once: tokenizer, tokens, blocks (cached).


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a bare path
        np.save(f, array)


@dataclass
class Prepared:
    """A prepared corpus: the tokenizer folder and the train/valid blocks over the tokens."""

    folder: Path
    tokenizer_dir: Path
    train: BlockDataset
    valid: BlockDataset
    vocab_size: int

    def tokenizer(self):
        return load_tokenizer(self.tokenizer_dir)


def prepare(
    corpus: Path,
    tokenizer: str,
    vocab_size: int,
    seq_len: int,
    valid_fraction: float,
    cache: Path | None = None,
    bpe_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> Prepared:
    """Tokenize and pack ``corpus`` once into ``cache`` (keyed by the corpus's bytes and every
    setting that changes the result); later calls, in any process, only map the files."""
    corpus = Path(corpus)
    docs_digest = file_digest(corpus) if corpus.is_file() else None
    if docs_digest is None:
        read_documents(corpus)  # raises the clear error
    if tokenizer == "gpt2":
        if bpe_dir is None:
            bpe_dir = download_gpt2_bpe(Path(cache or default_cache()) / "gpt2_bpe", log)
        tok_key = _digest("gpt2", *(file_digest(Path(bpe_dir) / n) for n in GPT2_BPE_MD5))
    else:
        tok_key = _digest("trained", str(vocab_size))
    key = _digest(docs_digest, tok_key, str(seq_len), str(valid_fraction))
    folder = Path(cache or default_cache()) / f"corpus-{key}"
    done = folder / "prepared.json"
    if not done.exists():
        log(f"[data] preparing {corpus} ({tokenizer} tokenizer) in {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        docs = read_documents(corpus)
        train_idx, valid_idx = split_documents(len(docs), valid_fraction)
        if tokenizer == "gpt2":
            tok = gpt2_tokenizer(bpe_dir, max_len=seq_len)
        else:  # trained on the training documents only
            tok = train_tokenizer([docs[i] for i in train_idx], vocab_size, max_len=seq_len)
        tok_dir = folder / "tokenizer"
        tok.save_pretrained(str(tok_dir))
        info = {"corpus": str(corpus), "documents": len(docs), "vocab_size": len(tok)}
        for split, idx in (("train", train_idx), ("valid", valid_idx)):
            tokens, offsets = encode_documents(tok, [docs[i] for i in idx])
            blocks = pack_complete(offsets, seq_len - 1)  # room for <s>
            for name, arr in (("tokens", tokens), ("blocks", blocks)):
                write_atomic(folder / f"{split}.{name}.npy", lambda p, a=arr: _save_npy(p, a))
            info[split] = {"documents": len(idx), "tokens": len(tokens), "blocks": len(blocks)}
        write_json_atomic(done, info)
        log(f"[data] {json.dumps(info)}")
    info = json.loads(done.read_text())
    bos = 0  # <s>, the same id in both tokenizers (SPECIALS)

    def blocks(split: str) -> BlockDataset:
        tokens = np.load(folder / f"{split}.tokens.npy", mmap_mode="r")
        return BlockDataset(tokens, np.load(folder / f"{split}.blocks.npy"), bos)

    return Prepared(
        folder, folder / "tokenizer", blocks("train"), blocks("valid"), info["vocab_size"]
    )
