"""``python -m adan_bert.fairseq_plugin``: print the folder to pass as fairseq's ``--user-dir``."""

from pathlib import Path

# Not imported from the package: printing a path should not import fairseq.
print(Path(__file__).resolve().parent / "adan_fairseq")
