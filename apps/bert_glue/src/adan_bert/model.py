"""fairseq's RoBERTa as a transformers ``RobertaConfig``, and the checks a checkpoint must pass.

fairseq's ``roberta_base`` is BERT-base's encoder with: learned positions offset by the
padding index (so 512 real positions need 514 rows), no token types (transformers keeps one
row, 768 extra parameters), LayerNorm eps 1e-5, GELU, dropout 0.1 on activations and attention,
the LM head tied to the input embedding, and N(0, 0.02) initialisation. transformers'
``RobertaForMaskedLM`` has exactly this layout (see :func:`fairseq_parameter_count`).
"""

from __future__ import annotations

from pathlib import Path

from .presets import MODEL_SIZES

PAD_OFFSET = 2  # fairseq's learned positions start after the padding index (1)


def roberta_config(
    size: str, vocab_size: int, dropout: float = 0.1, attention_dropout: float = 0.1
):
    """A ``RobertaConfig`` for one of :data:`adan_bert.presets.MODEL_SIZES`."""
    from transformers import RobertaConfig

    if size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {size!r}; choose from {list(MODEL_SIZES)}")
    s = MODEL_SIZES[size]
    return RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=s.hidden,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        intermediate_size=s.ffn,
        max_position_embeddings=s.max_positions + PAD_OFFSET,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=attention_dropout,
        initializer_range=0.02,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        tie_word_embeddings=True,
    )


def fairseq_parameter_count(size: str, vocab_size: int) -> int:
    """Parameters of fairseq's ``roberta`` model with its LM head, by formula from fairseq's
    module list (embeddings, embedding LayerNorm, per layer: q/k/v/out projections, two
    LayerNorms, the feed-forward pair; LM head: dense + LayerNorm + output bias, its weight tied
    to the embedding). The classification head is not counted."""
    s = MODEL_SIZES[size]
    h, f = s.hidden, s.ffn
    embeddings = vocab_size * h + (s.max_positions + PAD_OFFSET) * h + 2 * h
    layer = 4 * (h * h + h) + 2 * (2 * h) + (h * f + f) + (f * h + h)
    lm_head = (h * h + h) + 2 * h + vocab_size
    return embeddings + s.layers * layer + lm_head


def check_vocab(model_config, tokenizer, where: str) -> None:
    """A checkpoint's embedding must fit its tokenizer: a mismatch (a checkpoint fine-tuned with
    another tokenizer than it was pretrained with) would silently index the wrong rows."""
    if model_config.vocab_size != len(tokenizer):
        raise ValueError(
            f"{where}: the model's vocabulary has {model_config.vocab_size} entries but the "
            f"tokenizer has {len(tokenizer)}; use the tokenizer saved with the checkpoint "
            "(pretraining writes both into final/), or pass --tokenizer for the one it was "
            "trained with"
        )


def load_pretrained(path: str | Path, num_labels: int, tokenizer_path: str | Path | None = None):
    """(model for sequence classification/regression, tokenizer) from a pretrained checkpoint:
    one of ours (``final/`` of a pretraining run) or a Hub name such as ``roberta-base``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    src = str(path)
    if Path(src).exists() and not (Path(src) / "config.json").is_file():
        raise FileNotFoundError(
            f"{src} is no model checkpoint (no config.json): pass a pretraining run's final/ "
            "folder or a Hugging Face model name"
        )
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_path or src))
    # fairseq's classification head has no dropout of its own (pooler_dropout 0.0); the
    # encoder keeps its 0.1.
    config = AutoConfig.from_pretrained(src, num_labels=num_labels, classifier_dropout=0.0)
    check_vocab(config, tokenizer, src)
    # Its report of the new classification head and the unused LM head is expected: quiet.
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(src, config=config)
    finally:
        hf_logging.set_verbosity(level)
    return model, tokenizer
