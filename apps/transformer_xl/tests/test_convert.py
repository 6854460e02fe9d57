"""Original-format weights in and out: key names and shapes, the same per-token losses after
loading, what is inferred, what is refused, and the checkpoint files."""

from __future__ import annotations

import pytest
import torch
from adan_txl.convert import (
    ConversionError,
    from_original,
    load_checkpoint,
    original_config,
    save_checkpoint,
    to_original,
)
from adan_txl.model import ModelConfig, TransformerXL, Window
from torch import nn

BASE = dict(n_token=50, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=24)
CUTOFFS = (10, 25)


def random_model(seed: int = 0, **settings) -> TransformerXL:
    """A small model with every parameter random (biases, gains and position biases too), so
    that a key mapped to the wrong tensor changes the losses."""
    torch.manual_seed(seed)
    model = TransformerXL(ModelConfig(**{**BASE, **settings}))
    with torch.no_grad():
        for p in model.parameters():  # tied parameters once: ties stay intact
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def per_token_nll(model: TransformerXL) -> list[torch.Tensor]:
    """Losses of two consecutive segments, the second reading the first's memory."""
    g = torch.Generator().manual_seed(7)
    data = torch.randint(BASE["n_token"], (13, 3), generator=g)
    window, memory, out = Window(mem_len=5), None, []
    with torch.no_grad():
        for k in range(2):
            nll, memory = model(
                data[6 * k : 6 * k + 6], data[6 * k + 1 : 6 * k + 7], memory, window
            )
            out.append(nll)
    assert memory.length == 5
    return out


def assert_same_nll(a: TransformerXL, b: TransformerXL) -> None:
    for x, y in zip(per_token_nll(a), per_token_nll(b)):
        assert torch.equal(x, y)


def cloned(state: dict) -> dict:
    """A copy holding its own tensors, as a file would (ties: equal values, not shared)."""
    return {k: v.clone() for k, v in state.items()}


# ---- the original's names ----------------------------------------------------------------
def test_to_original_has_the_original_names_and_shapes():
    model = random_model(cutoffs=CUTOFFS, div_val=2, d_embed=24, untie_r=True)
    sd = to_original(model)
    d, inner, dims, sizes = 16, 16, [24, 12, 6], [10, 15, 25]  # widths: d_embed // 2**i
    expected = {"pos_emb.inv_freq": (8,), "crit.cluster_weight": (2, 24), "crit.cluster_bias": (2,)}
    for i, (size, dim) in enumerate(zip(sizes, dims)):
        expected[f"word_emb.emb_layers.{i}.weight"] = (size, dim)
        expected[f"word_emb.emb_projs.{i}"] = (d, dim)
        expected[f"crit.out_layers.{i}.weight"] = (size, dim)
        expected[f"crit.out_layers.{i}.bias"] = (size,)
        expected[f"crit.out_projs.{i}"] = (d, dim)
    for layer in range(2):
        p = f"layers.{layer}."
        expected.update({
            p + "dec_attn.qkv_net.weight": (3 * inner, d), p + "dec_attn.r_net.weight": (inner, d),
            p + "dec_attn.o_net.weight": (d, inner), p + "dec_attn.layer_norm.weight": (d,),
            p + "dec_attn.layer_norm.bias": (d,), p + "dec_attn.r_w_bias": (2, 8),
            p + "dec_attn.r_r_bias": (2, 8), p + "pos_ff.CoreNet.0.weight": (24, d),
            p + "pos_ff.CoreNet.0.bias": (24,), p + "pos_ff.CoreNet.3.weight": (d, 24),
            p + "pos_ff.CoreNet.3.bias": (d,), p + "pos_ff.layer_norm.weight": (d,),
            p + "pos_ff.layer_norm.bias": (d,),
        })  # fmt: skip
    assert {k: tuple(v.shape) for k, v in sd.items()} == expected
    # The renamed tensors are the right ones.
    assert torch.equal(sd["layers.1.dec_attn.r_w_bias"], model.layers[1].r_w_bias)
    assert torch.equal(sd["layers.1.dec_attn.r_r_bias"], model.layers[1].r_r_bias)
    for i in range(3):
        assert torch.equal(sd[f"crit.out_projs.{i}"], model.crit.out_projs[i])
    assert torch.equal(sd["crit.out_projs.1"], sd["word_emb.emb_projs.1"])  # tied
    assert not torch.equal(sd["crit.out_projs.0"], sd["word_emb.emb_projs.0"])  # the head's

    hf = to_original(random_model(), prefix="transformer.")
    assert "r_w_bias" not in hf and "transformer.r_w_bias" in hf
    assert {k for k in hf if not k.startswith("transformer.")} == {
        "crit.out_layers.0.weight",
        "crit.out_layers.0.bias",
    }  # div_val 1, d_embed == d_model: no projection, no cluster


# ---- round trips -------------------------------------------------------------------------
CASES = {
    "full softmax": (dict(), {}, ""),
    "div_val 1 clusters, HF prefix": (dict(cutoffs=CUTOFFS), dict(cutoffs=CUTOFFS), "transformer."),
    "div_val 1 projected": (dict(cutoffs=CUTOFFS, d_embed=12), dict(cutoffs=CUTOFFS), ""),
    "div_val 2": (dict(cutoffs=CUTOFFS, div_val=2), {}, ""),
    "div_val 2, d_embed, untie_r, HF": (
        dict(cutoffs=CUTOFFS, div_val=2, d_embed=24, untie_r=True), {}, "transformer."),
    "untied": (dict(cutoffs=CUTOFFS, div_val=2, tie_weight=False, tie_projs=(False,) * 3), {}, ""),
    "head tied too": (dict(cutoffs=CUTOFFS, div_val=3, d_embed=18, tie_projs=(True,) * 3), {}, ""),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_from_original_reproduces_the_per_token_losses(case):
    settings, args, prefix = case
    model = random_model(**settings)
    sd = cloned(to_original(model, prefix))
    loaded = from_original(sd, **args)
    assert loaded.cfg == model.cfg  # everything else was read off the tensors
    assert not loaded.training
    assert_same_nll(loaded, model)
    back = to_original(loaded, prefix)
    assert back.keys() == sd.keys()
    for key, tensor in sd.items():
        assert torch.equal(back[key], tensor), key
    # The ties are real ones again, not equal copies.
    if model.cfg.tie_weight:
        assert loaded.crit.out_layers[0].weight is loaded.word_emb.emb_layers[0].weight


def test_wt103_architectures_are_read_off_meta_tensors():
    base = ModelConfig(n_token=267735, cutoffs=(20000, 40000, 200000))
    large = ModelConfig(
        n_token=267735, n_layer=18, n_head=16, d_model=1024, d_head=64, d_inner=4096,
        div_val=4, cutoffs=(20000, 40000, 200000), untie_r=True,
    )  # fmt: skip
    with torch.device("meta"):
        base_sd = to_original(TransformerXL(base))
        large_sd = to_original(TransformerXL(large), prefix="transformer.")
    assert base_sd["crit.out_layers.0.weight"].shape == (267735, 410)
    assert large_sd["transformer.word_emb.emb_layers.3.weight"].shape == (67735, 16)
    assert large_sd["transformer.layers.17.dec_attn.r_w_bias"].shape == (16, 64)
    assert original_config(base_sd, cutoffs=[20000, 40000, 200000]) == base
    assert original_config(large_sd) == large  # div_val 4 and its cutoffs from the tables
    with pytest.raises(ConversionError, match=r"cannot infer cutoffs.*3 tail clusters"):
        original_config(base_sd)


def test_tied_copies_and_inv_freq_may_be_absent():
    model = random_model(cutoffs=CUTOFFS, div_val=2, untie_r=True)
    sd = cloned(to_original(model, "transformer."))
    # Hugging Face's save_pretrained keeps one copy of each tied tensor: the embedding's.
    dropped = [f"crit.out_layers.{i}.weight" for i in range(3)]
    dropped += ["crit.out_projs.1", "crit.out_projs.2", "transformer.pos_emb.inv_freq"]
    for key in dropped:
        del sd[key]
    loaded = from_original(sd)
    assert loaded.cfg == model.cfg
    assert_same_nll(loaded, model)
    assert loaded.crit.out_projs[2] is loaded.word_emb.emb_projs[2]


def test_identity_softmax_projections_of_div_val_1_are_dropped():
    model = random_model(cutoffs=CUTOFFS)  # d_embed == d_model: the original has no projection
    sd = cloned(to_original(model, "transformer."))
    for i in range(3):
        sd[f"crit.out_projs.{i}"] = torch.eye(16)
    loaded = from_original(sd, cutoffs=CUTOFFS)
    assert_same_nll(loaded, model)
    sd["crit.out_projs.1"] = torch.eye(16) * 2
    with pytest.raises(ConversionError, match=r"unexpected keys: crit\.out_projs\.1.*no softmax"):
        from_original(sd, cutoffs=CUTOFFS)


def test_untied_weights_are_read_off_the_values():
    model = random_model(cutoffs=CUTOFFS, div_val=2)
    sd = cloned(to_original(model))
    sd["crit.out_layers.1.weight"] += 0.1  # no longer the embedding's table
    sd["crit.out_projs.2"] += 0.1
    loaded = from_original(sd)
    assert loaded.cfg.tie_weight is False
    assert loaded.cfg.tie_projs == (False, True, False)
    back = to_original(loaded)
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    assert loaded.crit.out_layers[0].weight is not loaded.word_emb.emb_layers[0].weight


# ---- refusals ----------------------------------------------------------------------------
def test_broken_ties_are_named():
    sd = cloned(to_original(random_model(cutoffs=CUTOFFS, div_val=2)))
    sd["crit.out_layers.1.weight"] += 0.1
    named = r"broken tie: crit\.out_layers\.1\.weight differs from word_emb\.emb_layers\.1\."
    with pytest.raises(ConversionError, match=named + r".*pass tie_weight=False"):
        from_original(sd, tie_weight=True)
    from_original(sd, tie_weight=False)  # that is how it was trained
    sd = cloned(to_original(random_model(cutoffs=CUTOFFS, d_embed=12)))
    sd["crit.out_projs.2"] += 0.1
    named = r"crit\.out_projs\.2 differs from word_emb\.emb_projs\.0"
    with pytest.raises(ConversionError, match=named + r".*tie_projs=\(False, True, False\)"):
        from_original(sd, cutoffs=CUTOFFS, tie_projs=(False, True, True))
    # A tie the caller asserts needs no copy, but one declared untied does.
    sd = cloned(to_original(random_model()))
    del sd["crit.out_layers.0.weight"]
    from_original(sd)
    with pytest.raises(ConversionError, match=r"missing keys: crit\.out_layers\.0\.weight"):
        from_original(sd, tie_weight=False)


def test_missing_and_unexpected_keys_are_listed():
    sd = cloned(to_original(random_model(cutoffs=CUTOFFS, div_val=2), "transformer."))
    del sd["transformer.layers.1.pos_ff.CoreNet.3.bias"]
    with pytest.raises(ConversionError, match=r"missing keys: transformer\.layers\.1\.pos_ff\.Co"):
        from_original(sd)
    sd = cloned(to_original(random_model(cutoffs=CUTOFFS, div_val=2), "transformer."))
    sd["transformer.layers.0.dec_attn.extra"] = torch.zeros(3)
    sd["word_emb.emb_layers.0.weight"] = torch.zeros(3)  # no prefix in a prefixed dict
    listed = r"unexpected keys: transformer\.layers\.0\.dec_attn\.extra, word_emb\.emb_layers\.0\."
    with pytest.raises(ConversionError, match=listed):
        from_original(sd)
    ours = random_model(cutoffs=CUTOFFS, div_val=2).state_dict()
    with pytest.raises(ConversionError, match=r"adan_txl's own names"):
        from_original(ours)


@pytest.mark.parametrize(
    "settings, args, message",
    [
        (dict(), dict(d_inner=32), r"layers\.0\.pos_ff\.CoreNet\.0\.weight: expected shape "
                                   r"\(32, 16\), found \(24, 16\).*d_inner=32"),
        (dict(), dict(n_head=4), r"r_w_bias: expected shape \(4, 8\), found \(2, 8\)"),
        (dict(), dict(n_token=60), r"word_emb\.emb_layers\.0\.weight: expected shape \(60, 16\), "
                                   r"found \(50, 16\).*n_token=60 where word_emb"),
        (dict(cutoffs=CUTOFFS, div_val=2), dict(n_token=60),
         r"emb_layers\.2\.weight: expected shape \(35, 4\), found \(25, 4\).*n_token=60"),
        (dict(cutoffs=CUTOFFS, div_val=2), dict(div_val=4, d_embed=16),
         r"emb_layers\.1\.weight: expected shape \(15, 4\), found \(15, 8\).*div_val=4"),
        (dict(), dict(n_layer=3), r"missing keys: layers\.2\..*n_layer=3"),
        (dict(untie_r=True), dict(untie_r=False),
         r"missing keys: r_r_bias, r_w_bias; unexpected keys: layers\.0\.dec_attn\.r_r_bias"),
        (dict(cutoffs=CUTOFFS), dict(), r"cannot infer cutoffs.*2 tail clusters.*pass cutoffs"),
        (dict(cutoffs=CUTOFFS), dict(cutoffs=(10,)),
         r"crit\.cluster_weight: expected shape \(1, 16\), found \(2, 16\)"),
    ],
)  # fmt: skip
def test_contradictions_name_the_key_and_shapes(settings, args, message):
    sd = cloned(to_original(random_model(**settings)))
    with pytest.raises(ConversionError, match=message):
        from_original(sd, **args)


def test_other_refusals():
    sd = cloned(to_original(random_model()))
    with pytest.raises(TypeError, match="mem_len.*Window"):
        from_original(sd, mem_len=150)
    bad = dict(sd, **{"pos_emb.inv_freq": sd["pos_emb.inv_freq"] * 1.1})
    with pytest.raises(ConversionError, match=r"pos_emb\.inv_freq"):
        from_original(bad)
    with pytest.raises(ConversionError, match="not tensors: step"):
        from_original({**sd, "step": 3})
    with pytest.raises(ConversionError, match="cannot infer"):
        from_original({"foo.weight": torch.zeros(2)})


# ---- files -------------------------------------------------------------------------------
def test_our_checkpoint_round_trips(tmp_path):
    model = random_model(cutoffs=CUTOFFS, div_val=2, untie_r=True, dropout=0.2)
    save_checkpoint(model, tmp_path / "model.pt")
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    assert (
        saved["config"] == model.cfg.to_dict()
        and saved["model"].keys() == model.state_dict().keys()
    )
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.cfg == model.cfg and not loaded.training
    assert_same_nll(loaded, model)
    assert load_checkpoint(tmp_path / "model.pt", dropout=0.0).cfg.dropout == 0.0
    with pytest.raises(ConversionError, match=r"missing keys: layers\.2\."):
        load_checkpoint(tmp_path / "model.pt", n_layer=3)


@pytest.mark.parametrize("layout", ["original", "hf", "wrapped original", "our state_dict"])
def test_load_checkpoint_reads_state_dicts(tmp_path, layout):
    model = random_model(cutoffs=CUTOFFS, div_val=2, d_embed=24, untie_r=True)
    content = {
        "original": to_original(model),
        "hf": to_original(model, "transformer."),
        "wrapped original": {"state_dict": to_original(model), "epoch": 3},
        "our state_dict": {"model_state_dict": model.state_dict(), "optimizer": {}},
    }[layout]
    torch.save(content, tmp_path / "weights.pt")
    loaded = load_checkpoint(tmp_path / "weights.pt")
    assert loaded.cfg == model.cfg
    assert_same_nll(loaded, model)


class PickledLM(nn.Module):
    """Stands for the original's MemTransformerLM, which train.py saves whole."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 2)


def test_load_checkpoint_explains_pickled_modules_and_other_content(tmp_path):
    torch.save(PickledLM(), tmp_path / "model.pt")
    with pytest.raises(ConversionError, match=r"(?s)sys\.path\.insert.*\.state_dict\(\)"):
        load_checkpoint(tmp_path / "model.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ConversionError, match="expected a state_dict"):
        load_checkpoint(tmp_path / "list.pt")
    torch.save({"config": {"lr": 1.0}, "model": {}}, tmp_path / "other.pt")
    with pytest.raises(ConversionError, match=r"not a ModelConfig dict \(unknown fields \['lr'\]"):
        load_checkpoint(tmp_path / "other.pt")
