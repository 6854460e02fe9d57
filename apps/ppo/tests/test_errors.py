"""Bad env ids, optimizer names, output paths and settings give clear errors."""

from __future__ import annotations

import pytest
from adan_ppo import grid, train

BASE = ["--steps", "512", "--n-envs", "2", "--n-steps", "64"]


def test_bad_env_id(tmp_path, capsys):
    rc = train.main(["--env", "HalfCheetah-v9", "--opt", "adam", "--out", str(tmp_path), *BASE])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown environment id 'HalfCheetah-v9'" in err and "HalfCheetah-v5" in err
    assert not (tmp_path / "config.json").exists()


def test_discrete_env_is_rejected(tmp_path, capsys):
    rc = train.main(["--env", "CartPole-v1", "--opt", "adam", "--out", str(tmp_path), *BASE])
    assert rc == 2 and "continuous (Box) action space" in capsys.readouterr().err


def test_bad_optimizer_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--env", "Hopper-v5", "--opt", "adamm", "--out", str(tmp_path), *BASE])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "unknown optimizer 'adamm'" in err and "adan" in err


def test_optimizer_option_it_does_not_take(tmp_path, capsys):
    rc = train.main(["--env", "Hopper-v5", "--opt", "adam", "--opt-betas", "0.98", "0.92", "0.99",
                     "--out", str(tmp_path), *BASE])  # fmt: skip
    assert rc == 2 and "needs 2 betas" in capsys.readouterr().err


def test_output_path_is_a_file(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a directory")
    rc = train.main(["--env", "Hopper-v5", "--opt", "adam", "--out", str(target), *BASE])
    assert rc == 2 and "exists and is not a directory" in capsys.readouterr().err
    assert target.read_text() == "not a directory"


def test_output_path_under_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    rc = grid.main(["--envs", "Hopper-v5", "--out", str(tmp_path / "file" / "sub")])
    assert rc == 2 and "cannot create output directory" in capsys.readouterr().err


def test_batch_size_must_divide_rollout(tmp_path, capsys):
    rc = train.main(["--env", "Hopper-v5", "--opt", "adam", "--out", str(tmp_path), *BASE,
                     "--batch-size", "100"])  # fmt: skip
    assert rc == 2 and "does not divide the rollout" in capsys.readouterr().err


def test_grid_rejects_bad_names_before_training(tmp_path, capsys):
    assert grid.main(["--envs", "Nope-v5", "--out", str(tmp_path)]) == 2
    assert "unknown environment id 'Nope-v5'" in capsys.readouterr().err
    assert grid.main(["--envs", "Hopper-v5", "--opts", "adam", "sgdx", "--out", str(tmp_path)]) == 2
    assert "unknown optimizer 'sgdx'" in capsys.readouterr().err
    assert grid.main(["--envs", "Hopper-v5", "--seeds", "3-1", "--out", str(tmp_path)]) == 2
    assert "bad seed list item '3-1'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_seed_lists():
    assert grid.parse_seeds(["1-3", "7"]) == [1, 2, 3, 7]
    assert grid.parse_seeds(["1,2", "2"]) == [1, 2]
