"""Evaluate a Transformer-XL checkpoint on a corpus split, under either protocol.

Examples::

    # our run's final model, both protocols, on the test split
    python -m adan_txl.evaluate --checkpoint runs/adan/final/model.pt --data data/wikitext-103
    # a state_dict of the original code's MemTransformerLM (WT103 base), standard protocol only
    python -m adan_txl.evaluate --checkpoint wt103_base_state_dict.pt --data data/wikitext-103 \
        --protocol standard --cutoffs 20000 40000 200000

The checkpoint may be our ``model.pt``, or a state_dict of the original (kimiyoung/
transformer-xl) or of Hugging Face's conversion; see :func:`adan_txl.convert.load_checkpoint`.
The vocabulary is rebuilt from the corpus as the original builds it, and must have the
checkpoint's size: the word ids only mean something with the vocabulary they were trained on.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .convert import ConversionError, load_checkpoint
from .data import DataError, OrderedStream, encode_file, load_corpus, resolve_data_dir
from .model import Memory, TransformerXL, Window
from .presets import TXLSettings

# name -> (tgt_len, Window): the Adan paper's table (train.py's evaluation) and Transformer-XL's
# eval.py, as the WT103 preset's settings define them; override the lengths with the flags.
_WT103 = TXLSettings()
PROTOCOLS = {
    "paper": (_WT103.eval_tgt_len, _WT103.train_window),
    "standard": (_WT103.std_tgt_len, _WT103.standard_window),
}


class EvalError(ValueError):
    """The checkpoint and the corpus do not fit together; the message says why."""


@torch.no_grad()
def evaluate_stream(
    model: TransformerXL, stream: OrderedStream, tgt_len: int, window: Window, device=None
) -> tuple[float, int]:
    """(mean NLL per token, tokens) over ``stream`` in segments of ``tgt_len``, each segment
    seeing ``window.mem_len`` positions of memory, dropout off (the original's evaluate())."""
    model.eval()
    memory, total, count = Memory(), 0.0, 0
    for k in range(stream.num_segments(tgt_len)):
        data, target = stream.segment(k, tgt_len, device)
        nll, memory = model(data, target, memory, window)
        total += nll.double().sum().item()
        count += nll.numel()
    return total / count, count


def encode_text(path: Path, corpus) -> np.ndarray:
    """The ids of a text file, tokenized as the corpus's files (its case rule, one ``<eos>``
    per line); an unknown word is a DataError naming it."""
    if not Path(path).is_file():
        raise EvalError(f"--file {str(path)!r} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ids.npy"
        encode_file(Path(path), corpus.vocab, corpus.kind == "ptb", out)
        return np.load(out)


def check_vocabulary(model: TransformerXL, n_words: int, where: Path) -> None:
    if model.cfg.n_token != n_words:
        raise EvalError(
            f"the checkpoint has a vocabulary of {model.cfg.n_token:,} words, the corpus in "
            f"{where} gives {n_words:,}: evaluate on the corpus the model was trained on (its "
            "vocabulary is rebuilt from that corpus's files)"
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m adan_txl.evaluate",
        description="Perplexity of a Transformer-XL checkpoint (ours, the original's or Hugging "
        "Face's state_dict) on a corpus split.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="model file (see above)")
    p.add_argument("--data", type=Path, help="corpus folder (default $TXL_DATA, else the cache)")
    p.add_argument("--split", choices=("valid", "test"), default="test", help="split to score")
    p.add_argument(
        "--file",
        type=Path,
        help="score this text file instead of a split, tokenized as the corpus (one <eos> per "
        "line) with the vocabulary of --data",
    )
    p.add_argument(
        "--protocol",
        choices=(*PROTOCOLS, "both"),
        default="both",
        help="paper: tgt_len = mem_len = 150 (the Adan paper's table); standard: tgt_len 64, "
        "mem_len 640, clamp_len 400, same_length (Transformer-XL's eval.py)",
    )
    p.add_argument("--tgt-len", type=int, help="override the protocol's segment length")
    p.add_argument("--mem-len", type=int, help="override the protocol's memory length")
    p.add_argument("--clamp-len", type=int, help="override the protocol's clamp_len")
    p.add_argument("--batch-size", type=int, default=10, help="streams (the original's 10)")
    p.add_argument(
        "--cutoffs", type=int, nargs="+", help="adaptive softmax cutoffs, where the file has none"
    )
    p.add_argument("--div-val", type=int, help="adaptive input divisor, where the file has none")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    return p


def run(args: argparse.Namespace, log=print) -> dict[str, dict]:
    """Load, check the vocabulary, evaluate each requested protocol; returns the results."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model_args = {}
    if args.cutoffs:
        model_args["cutoffs"] = tuple(args.cutoffs)
    if args.div_val:
        model_args["div_val"] = args.div_val
    model = load_checkpoint(args.checkpoint, **model_args).to(device)
    folder = resolve_data_dir(args.data, allow_download=False)
    corpus = load_corpus(folder)
    check_vocabulary(model, len(corpus.vocab), folder)
    tokens, what = getattr(corpus, args.split), args.split
    if args.file is not None:
        tokens, what = encode_text(args.file, corpus), str(args.file)
    stream = OrderedStream(tokens, args.batch_size)
    names = list(PROTOCOLS) if args.protocol == "both" else [args.protocol]
    results = {}
    for name in names:
        tgt_len, window = PROTOCOLS[name]
        tgt_len = args.tgt_len or tgt_len
        window = Window(
            args.mem_len if args.mem_len is not None else window.mem_len,
            args.clamp_len if args.clamp_len is not None else window.clamp_len,
            window.same_length,
        )
        if tgt_len < 1:
            raise EvalError(f"--tgt-len must be at least 1, got {tgt_len}")
        loss, tokens = evaluate_stream(model, stream, tgt_len, window, device)
        results[name] = {"split": what, "tgt_len": tgt_len, "mem_len": window.mem_len,
                         "clamp_len": window.clamp_len, "same_length": window.same_length,
                         "loss": loss, "ppl": math.exp(loss), "tokens": tokens}  # fmt: skip
        log(
            f"{name} protocol (tgt_len {tgt_len}, mem_len {window.mem_len}, clamp_len "
            f"{window.clamp_len}, same_length {window.same_length}): {what} loss "
            f"{loss:.4f}, ppl {math.exp(loss):.3f} over {tokens:,} tokens"
        )
    if args.json:
        from adan_repro.atomic import write_json_atomic

        write_json_atomic(args.json, results)
    return results


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (EvalError, ConversionError, DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
