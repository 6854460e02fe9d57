"""A real short PPO run: eval CSV, saved model, the requested optimizer and its settings."""

from __future__ import annotations

import csv
import math

import pytest
import torch
from adan_ppo.train import train
from stable_baselines3 import PPO


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("opt", ["adam", "adan"])
def test_short_run_writes_eval_csv_and_uses_requested_optimizer(
    tmp_path, tiny_args, opt, system_tmp
):
    out = tmp_path / opt
    result = train(tiny_args(out, opt, 1024, 512), log=lambda m: None)
    assert result.status == "finished" and result.steps == 1024
    # SB3's default logger makes an empty SB3-<time> folder in the system temp dir per learn().
    assert not list(system_tmp.glob("SB3-*")), "training left SB3 log folders in the temp dir"

    rows = _rows(out / "eval.csv")
    assert [int(r["step"]) for r in rows] == [0, 512, 1024]
    assert all(int(r["episodes"]) == 2 and math.isfinite(float(r["mean_return"])) for r in rows)
    assert (out / "done.json").exists() and (out / "final" / "model.zip").exists()
    assert not list(out.glob("ckpt-*")), "checkpoints should be replaced by final/"

    model = PPO.load(out / "final" / "model.zip", device="cpu")
    optimizer = model.policy.optimizer
    if opt == "adan":
        from adan_core.adan import Adan

        assert isinstance(optimizer, Adan)
    else:
        assert type(optimizer) is torch.optim.Adam
    # The paper's eps, not SB3's silent Adam default of 1e-5.
    assert optimizer.defaults["eps"] == pytest.approx(1e-8)
    # State populated for every parameter after 4 updates x 40 minibatches.
    params = list(model.policy.parameters())
    assert len(optimizer.state) == len(params)
    for p in params:
        tensors = [v for v in optimizer.state[p].values() if torch.is_tensor(v) and v.ndim > 0]
        assert tensors and any(t.abs().sum() > 0 for t in tensors)
    # Tianshou's linear decay: update k (of K=4) used lr0 * (1 - k/K); the last one lr0/4.
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-4 / 4)


def test_paper_preset_matches_tianshou_defaults():
    from adan_ppo.settings import PRESETS

    s = PRESETS["paper"]
    assert (s.n_envs * s.n_steps, s.n_epochs, s.batch_size) == (2048, 10, 64)
    assert (s.gamma, s.gae_lambda, s.clip_range, s.vf_coef, s.ent_coef) == (
        0.99, 0.95, 0.2, 0.25, 0.0)  # fmt: skip
    assert (s.max_grad_norm, s.log_std_init, s.hidden) == (0.5, -0.5, (64, 64))
    assert s.total_steps == 3_072_000 and s.eval_every == 30_720 and s.eval_episodes == 10
    assert s.lr_decay and s.norm_obs and s.norm_reward and not s.normalize_advantage


def test_linear_decay_matches_lambdalr_factor():
    from adan_ppo.train import LinearDecay

    total_updates = 1500
    schedule = LinearDecay(3e-4, 1 / total_updates)
    for k in (0, 1, 750, 1499):
        # SB3 evaluates the schedule after the (k+1)-th rollout has been collected.
        progress_remaining = 1 - (k + 1) / total_updates
        assert schedule(progress_remaining) == pytest.approx(3e-4 * (1 - k / total_updates))
