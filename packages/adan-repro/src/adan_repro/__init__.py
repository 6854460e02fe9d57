"""adan-repro: the reproduction harness every Adan app shares.

- :mod:`adan_repro.atomic`: atomic writes of single files and of a batch of files.
- :mod:`adan_repro.rundir`: the run folder (config check, eval CSV, checkpoint pointer, done).
- :mod:`adan_repro.provenance`: git commit, versions and optimizer implementation of a run.
- :mod:`adan_repro.grid`: tasks x optimizers x seeds, resumable, ``--jobs``, ``--shard K/N``.
- :mod:`adan_repro.curves`: curves from run folders or a long CSV.
- :mod:`adan_repro.stats`: confidence bands, areas under curves, Welch's t-test (SciPy).
- :mod:`adan_repro.plot`, :mod:`adan_repro.summarize`: plots, ``summary.md``, ``summary.csv``.
- :mod:`adan_repro.progress`: progress-line pieces that never print ``nan``.
- :mod:`adan_repro.download`: streamed downloads with an MD5 and progress lines.
- :mod:`adan_repro.testing`: for the apps' tests: a learnable word corpus, a hard kill.

It knows nothing about any one experiment and depends on neither torch nor adan-core.
"""

__version__ = "0.1.0"
