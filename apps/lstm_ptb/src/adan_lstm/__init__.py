"""adan-lstm: AWD-LSTM language models on Penn Treebank, Adam vs Adan (AdaBelief's setting)."""

__version__ = "0.1.0"
