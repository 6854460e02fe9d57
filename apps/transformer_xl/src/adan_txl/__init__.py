"""Transformer-XL language models with Adam vs Adan (the Adan paper's WikiText-103 experiment)."""

__version__ = "0.1.0"
