"""PPO on MuJoCo with Adam vs Adan, built on Stable-Baselines3 and adan-core.

Entry points (each has ``--help``):

- ``python -m adan_ppo.train``: one training run (one task, optimizer and seed), resumable.
- ``python -m adan_ppo.evaluate``: reload a saved run and evaluate or render it.
- ``python -m adan_ppo.grid``: the reproduction grid (tasks x optimizers x seeds) over a process
  pool, then :mod:`adan_ppo.summarize`.
- ``python -m adan_ppo.summarize``: curves with confidence bands, ``summary.md``/``summary.csv``.
- ``python -m adan_ppo.throughput``: env steps/s per optimizer, measured side by side.
"""

__version__ = "0.1.0"
