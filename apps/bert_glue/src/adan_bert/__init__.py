"""BERT/RoBERTa MLM pretraining and GLUE fine-tuning with Adam vs Adan, on Hugging Face
transformers."""

__version__ = "0.1.0"
