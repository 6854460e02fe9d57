"""The model against its definition: relative attention, masks, memory, parameter counts,
weight tying, initialization, the adaptive softmax, configuration checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from adan_txl.model import (
    AdaptiveLogSoftmax,
    Memory,
    ModelConfig,
    ModelConfigError,
    TransformerXL,
    Window,
    count_parameters,
    rel_shift,
)
from torch import nn

TINY = dict(n_token=30, n_layer=2, n_head=2, d_model=8, d_head=4, d_inner=12, dropout=0.0)


def tiny_model(seed: int = 0, dtype=torch.float64, **overrides) -> TransformerXL:
    """A small model whose every parameter (biases and layer norms included) is random, so
    that no mix-up hides behind a zero or a one."""
    torch.manual_seed(seed)
    model = TransformerXL(ModelConfig(**{**TINY, **overrides})).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def segments(n_token: int, qlen: int, count: int, bsz: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    data = torch.randint(n_token, (qlen * count + 1, bsz), generator=g)
    return [(data[k * qlen : (k + 1) * qlen], data[k * qlen + 1 : (k + 1) * qlen + 1])
            for k in range(count)]  # fmt: skip


# ---- relative positions ------------------------------------------------------------------
@pytest.mark.parametrize("qlen", [3, 4, 5])
@pytest.mark.parametrize("mlen", [0, 1, 2, 3, 4])
def test_rel_shift_moves_each_row_to_key_positions(qlen, mlen):
    klen = qlen + mlen
    x = torch.randn(qlen, klen, 2, 3)
    y = rel_shift(x)
    assert y.shape == x.shape
    for i in range(qlen):
        for j in range(mlen + i + 1):  # the keys query i may see
            assert torch.equal(y[i, j], x[i, j + qlen - 1 - i]), (i, j)


def naive_attention(attn, h, mem, u, v, window: Window):
    """One attention block (residual and layer norm included) from the definition, one
    query, key and head at a time: score(i, j) = ((q_i + u) k_j + (q_i + v) W_r r_dist) /
    sqrt(d_head), dist = mlen + i - j, r the sinusoid of dist (capped by clamp_len)."""
    context = h if mem is None else torch.cat([mem, h])
    qlen, bsz, d_model = h.shape
    mlen, klen = context.size(0) - qlen, context.size(0)
    n_head, d_head = u.shape
    w_q, w_k, w_v = attn.qkv_net.weight.split(n_head * d_head)
    w_r = attn.r_net.weight
    # The frequencies as the model stores them (float32, like the original's buffer).
    inv_freq = (1.0 / 10000 ** (torch.arange(0.0, d_model, 2.0) / d_model)).to(h.dtype)
    out = torch.zeros(qlen, bsz, n_head * d_head, dtype=h.dtype)
    for b in range(bsz):
        for n in range(n_head):
            rows = slice(n * d_head, (n + 1) * d_head)
            for i in range(qlen):
                q = w_q[rows] @ context[mlen + i, b]
                scores = []
                for j in range(klen):
                    dist = mlen + i - j
                    if dist < 0 or (window.same_length and dist >= window.mem_len):
                        scores.append(torch.tensor(-math.inf, dtype=h.dtype))
                        continue
                    if window.clamp_len > 0:
                        dist = min(dist, window.clamp_len)
                    r = torch.cat([torch.sin(dist * inv_freq), torch.cos(dist * inv_freq)])
                    k = w_k[rows] @ context[j, b]
                    scores.append(((q + u[n]) @ k + (q + v[n]) @ (w_r[rows] @ r)) / d_head**0.5)
                p = torch.softmax(torch.stack(scores), 0)
                out[i, b, rows] = sum(p[j] * (w_v[rows] @ context[j, b]) for j in range(klen))
    ln = attn.layer_norm
    return F.layer_norm(h + out @ attn.o_net.weight.T, (d_model,), ln.weight, ln.bias, ln.eps)


@pytest.mark.parametrize(
    "window, untie_r",
    [
        (Window(mem_len=4), False),
        (Window(mem_len=4, same_length=True), False),
        (Window(mem_len=6, clamp_len=2), True),
        (Window(mem_len=4, same_length=True, clamp_len=3), False),
    ],
)
def test_attention_matches_a_naive_computation(window, untie_r):
    model = tiny_model(untie_r=untie_r)
    calls = []
    hooks = [
        layer.dec_attn.register_forward_hook(lambda mod, args, out: calls.append((mod, args, out)))
        for layer in model.layers
    ]
    memory = None
    with torch.no_grad():
        for tokens, targets in segments(TINY["n_token"], qlen=5, count=2):
            _, memory = model(tokens, targets, memory, window)
    for hook in hooks:
        hook.remove()
    assert len(calls) == 2 * TINY["n_layer"]
    for k, (attn, args, out) in enumerate(calls):
        layer = model.layers[k % TINY["n_layer"]]
        owner = layer if untie_r else model
        h, mem = args[0], args[5]
        if k < TINY["n_layer"]:
            assert mem is None or mem.size(0) == 0  # the first segment has no memory
        else:
            assert mem.size(0) == min(window.mem_len, 5)
        ref = naive_attention(attn, h, mem, owner.r_w_bias, owner.r_r_bias, window)
        torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


# ---- masks -------------------------------------------------------------------------------
@pytest.mark.parametrize("window", [Window(mem_len=6), Window(mem_len=3, same_length=True,
                                                                clamp_len=2)])  # fmt: skip
def test_nll_at_a_position_depends_on_no_later_token(window):
    model = tiny_model()
    (seg1, tgt1), (seg2, tgt2) = segments(TINY["n_token"], qlen=6, count=2)
    with torch.no_grad():
        _, memory = model(seg1, tgt1, None, window)
        for mem in (None, memory):
            base, _ = model(seg2, tgt2, mem, window)
            for t in (0, 2, 5):
                changed = seg2.clone()
                changed[t] = (changed[t] + 1) % TINY["n_token"]  # targets stay as they are
                nll, _ = model(changed, tgt2, mem, window)
                torch.testing.assert_close(nll[:t], base[:t], rtol=0, atol=1e-12)
                assert (nll[t] - base[t]).abs().min() > 1e-6  # the position itself does see it


@pytest.mark.parametrize("qlen", [3, 5])
@pytest.mark.parametrize("mlen", [0, 2, 6])
@pytest.mark.parametrize("mem_len", [1, 4, 8, 12])
def test_visible_keys_per_query(qlen, mlen, mem_len):
    model = tiny_model()
    for same_length in (False, True):
        mask = model._mask(qlen, mlen, Window(mem_len, same_length=same_length), "cpu")
        assert mask.shape == (qlen, qlen + mlen)
        for i in range(qlen):
            # Causal: keys 0 .. mlen+i; with same_length only the last mem_len of them.
            count = min(mlen + i + 1, mem_len) if same_length else mlen + i + 1
            visible = (~mask[i]).nonzero().squeeze(1).tolist()
            assert visible == list(range(mlen + i + 1 - count, mlen + i + 1)), (i, same_length)


def test_clamp_len_caps_the_relative_distance():
    model = tiny_model()
    klen, clamp = 9, 3
    free = model._positions(klen, Window(), torch.float64, "cpu")
    capped = model._positions(klen, Window(clamp_len=clamp), torch.float64, "cpu")
    # Row k stands for distance klen-1-k; distances beyond clamp use the row of distance clamp.
    for k in range(klen):
        dist = klen - 1 - k
        assert torch.equal(capped[k], free[klen - 1 - min(dist, clamp)]), k
    assert free[klen - 1].tolist() == [0.0] * 4 + [1.0] * 4  # distance 0: sin 0, cos 0
    (seg, tgt), = segments(TINY["n_token"], qlen=klen, count=1)  # fmt: skip
    with torch.no_grad():
        nll = model(seg, tgt, None, Window())[0]
        same = model(seg, tgt, None, Window(clamp_len=klen - 1))[0]  # caps nothing
        changed = model(seg, tgt, None, Window(clamp_len=clamp))[0]
    assert torch.equal(nll, same)
    assert torch.equal(nll[: clamp + 1], changed[: clamp + 1])  # no distance above clamp yet
    assert (nll[clamp + 1 :] - changed[clamp + 1 :]).abs().min() > 1e-8


# ---- memory ------------------------------------------------------------------------------
@pytest.mark.parametrize("mem_len", [0, 3, 5, 12])
def test_memory_holds_the_last_inputs_of_every_layer(mem_len):
    model = tiny_model()
    window = Window(mem_len=mem_len)
    calls = []  # per layer call: (input, memory passed, output)
    hooks = [layer.register_forward_hook(lambda m, args, out: calls.append((args[0], args[5], out)))
             for layer in model.layers]  # fmt: skip
    memory, seen = Memory(), []
    with torch.no_grad():
        for tokens, targets in segments(TINY["n_token"], qlen=5, count=3):
            calls.clear()
            _, new = model(tokens, targets, memory, window)
            for i, (_, mem, _) in enumerate(calls):  # layer i reads memory state i
                assert mem is None if memory.length == 0 else mem is memory.states[i]
            seen.append(tokens)
            length = min(mem_len, 5 * len(seen))
            assert new.length == length
            if mem_len == 0:
                assert new.states == []
                continue
            # Every layer's input, then the last layer's output: [old memory; this], the tail.
            states = [h for h, _, _ in calls] + [calls[-1][2]]
            assert len(new.states) == TINY["n_layer"] + 1
            for i, state in enumerate(new.states):
                assert state.shape == (length, 2, TINY["d_model"])
                full = states[i] if memory.length == 0 else torch.cat([memory.states[i], states[i]])
                assert torch.equal(state, full[-length:])
            # The first state is the embedding of the last `length` tokens (eval: no dropout).
            emb = model.word_emb(torch.cat(seen)[-length:])
            torch.testing.assert_close(new.states[0], emb, rtol=0, atol=1e-12)
            memory = new
    for hook in hooks:
        hook.remove()


def test_memory_changes_the_next_segments_loss():
    model = tiny_model()
    window = Window(mem_len=4)
    (seg1, tgt1), (seg2, tgt2) = segments(TINY["n_token"], qlen=5, count=2)
    with torch.no_grad():
        _, memory = model(seg1, tgt1, None, window)
        with_mem, _ = model(seg2, tgt2, memory, window)
        without, _ = model(seg2, tgt2, None, window)
        empty, _ = model(seg2, tgt2, Memory(), window)
        _, none = model(seg1, tgt1, None, Window(mem_len=0))
        with_zero, _ = model(seg2, tgt2, none, window)
    assert (with_mem - without).abs().min() > 1e-8  # every position sees the memory
    assert torch.equal(empty, without)
    assert none.length == 0 and torch.equal(with_zero, without)


def test_memory_carries_no_gradient():
    model = tiny_model(dtype=torch.float64).train()  # dropout 0: train mode is deterministic
    params = list(model.parameters())
    window = Window(mem_len=4)
    (seg1, tgt1), (seg2, tgt2) = segments(TINY["n_token"], qlen=5, count=2)
    loss1, memory = model(seg1, tgt1, None, window)
    assert loss1.requires_grad
    assert all(not s.requires_grad and s.grad_fn is None for s in memory.states)
    loss2, _ = model(seg2, tgt2, memory, window)
    grads = torch.autograd.grad(loss2.sum(), params, allow_unused=True)
    by_hand = Memory([s.clone().detach() for s in memory.states])
    loss2_ref, _ = model(seg2, tgt2, by_hand, window)
    ref = torch.autograd.grad(loss2_ref.sum(), params, allow_unused=True)
    for g, r in zip(grads, ref):
        assert (g is None and r is None) or torch.equal(g, r)
    # The first segment's graph is intact: it can still be differentiated.
    assert all(g is not None for g in torch.autograd.grad(loss1.sum(), params[:1]))


# ---- sizes and tying ---------------------------------------------------------------------
def test_wt103_base_has_the_papers_parameter_count():
    with torch.device("meta"):
        model = TransformerXL(ModelConfig(n_token=267735, cutoffs=(20000, 40000, 200000)))
    assert count_parameters(model) == 151_107_538
    assert count_parameters(model, embeddings=False) == 41_066_400


@pytest.mark.parametrize("tie_weight", [True, False])
@pytest.mark.parametrize("untie_r", [False, True])
def test_parameter_count_formula(tie_weight, untie_r):
    n_token, cutoffs, d_embed, d_model = 40, (10, 20), 12, 8
    n_head, d_head, d_inner, n_layer = 2, 3, 10, 2
    cfg = ModelConfig(n_token=n_token, n_layer=n_layer, n_head=n_head, d_model=d_model,
                      d_head=d_head, d_inner=d_inner, d_embed=d_embed, div_val=2,
                      cutoffs=cutoffs, tie_weight=tie_weight, untie_r=untie_r)  # fmt: skip
    sizes, dims = [10, 10, 20], [12, 6, 3]  # d_embed // 2**i
    tables = sum(s * d for s, d in zip(sizes, dims))
    projs = sum(d_model * d for d in dims)
    inner = n_head * d_head
    biases = 2 * n_head * d_head
    layer = (3 * inner * d_model + inner * d_model + d_model * inner + 2 * d_model  # attention
             + d_inner * d_model + d_inner + d_model * d_inner + d_model + 2 * d_model  # FF
             + (biases if untie_r else 0))  # fmt: skip
    softmax = (n_token  # output biases
               + 2 * d_embed + 2  # cluster logits
               + d_model * dims[0]  # the head's projection: untied by default
               + (0 if tie_weight else tables))  # fmt: skip
    total = tables + projs + n_layer * layer + (0 if untie_r else biases) + softmax
    model = TransformerXL(cfg)
    assert count_parameters(model) == total
    assert count_parameters(model, embeddings=False) == n_layer * layer


def test_softmax_weights_and_projections_are_the_embeddings():
    model = TransformerXL(ModelConfig(**{**TINY, "cutoffs": (10, 20), "div_val": 2}))
    emb, crit = model.word_emb, model.crit
    for out, table in zip(crit.out_layers, emb.emb_layers):
        assert out.weight is table.weight
    assert crit.out_projs[0] is not emb.emb_projs[0]  # the head's projection is its own
    assert not torch.equal(crit.out_projs[0], emb.emb_projs[0])
    for i in (1, 2):
        assert crit.out_projs[i] is emb.emb_projs[i]
        assert getattr(crit, f"out_proj_{i}") is emb.emb_projs[i]  # registered, so trained
    # div_val 1 with a projection: the tail clusters share the embedding's one projection.
    model = TransformerXL(ModelConfig(**{**TINY, "cutoffs": (10, 20), "d_embed": 6}))
    assert model.crit.out_layers[0].weight is model.word_emb.emb_layers[0].weight
    assert [p is model.word_emb.emb_projs[0] for p in model.crit.out_projs] == [False, True, True]
    # div_val 1 without projection: none anywhere.
    model = TransformerXL(ModelConfig(**{**TINY, "cutoffs": (10, 20)}))
    assert model.crit.out_projs == [None] * 3 and len(model.word_emb.emb_projs) == 0


def test_untied_weights_are_separate():
    cfg = ModelConfig(**{**TINY, "cutoffs": (10, 20), "div_val": 2, "tie_weight": False,
                         "tie_projs": (False, False, False)})  # fmt: skip
    model = TransformerXL(cfg)
    for out, table in zip(model.crit.out_layers, model.word_emb.emb_layers):
        assert out.weight is not table.weight and not torch.equal(out.weight, table.weight)
    for out, proj in zip(model.crit.out_projs, model.word_emb.emb_projs):
        assert out is not proj and not torch.equal(out, proj)
    names = dict(model.named_parameters())
    assert {"crit.out_layers.1.weight", "crit.out_proj_1"} <= set(names)


def test_initialization_follows_the_original():
    torch.manual_seed(0)
    std, proj_std = 0.05, 0.004  # not the defaults: the settings must be the ones used
    cfg = ModelConfig(n_token=3000, n_layer=2, n_head=4, d_model=128, d_head=32, d_inner=256,
                      cutoffs=(1000, 2000), div_val=2, init_std=std,
                      proj_init_std=proj_std)  # fmt: skip
    model = TransformerXL(cfg)

    def close(tensor, mean, sd, tol):
        assert abs(tensor.mean().item() - mean) < 4 * sd / tensor.numel() ** 0.5
        assert abs(tensor.std().item() - sd) < tol * sd

    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            close(module.weight, 0.0, std, 0.1)
            if getattr(module, "bias", None) is not None:
                assert torch.all(module.bias == 0)
        elif isinstance(module, nn.LayerNorm):
            close(module.weight, 1.0, std, 0.25)
            assert torch.all(module.bias == 0)
    for proj in [*model.word_emb.emb_projs, *model.crit.out_projs]:
        close(proj, 0.0, proj_std, 0.1)
    close(model.crit.cluster_weight, 0.0, std, 0.25)
    assert torch.all(model.crit.cluster_bias == 0)
    for bias in (model.r_w_bias, model.r_r_bias):
        close(bias, 0.0, std, 0.25)
    assert not torch.equal(model.r_w_bias, model.r_r_bias)


# ---- adaptive softmax --------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [dict(cutoffs=()), dict(cutoffs=(4, 8)), dict(cutoffs=(4, 8), d_embed=6),
     dict(cutoffs=(4, 8), div_val=2), dict(cutoffs=(3, 7), div_val=2, d_embed=12)],
)  # fmt: skip
def test_adaptive_softmax_is_a_distribution(settings):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY, "n_token": 12, **settings})
    crit = TransformerXL(cfg).crit.double()
    assert isinstance(crit, AdaptiveLogSoftmax)
    with torch.no_grad():
        for p in crit.parameters():
            p.normal_(0.0, 1.0)  # far from uniform
    hidden = torch.randn(1, cfg.d_model, dtype=torch.float64).expand(cfg.n_token, -1)
    nll = crit(hidden, torch.arange(cfg.n_token))
    prob = torch.exp(-nll)
    assert abs(prob.sum().item() - 1.0) < 1e-12
    assert prob.max() > 2 * prob.min()
    # Each tail cluster's mass is its head logit's share, the logit of tail cluster i being
    # cluster_weight row n_clusters - i (the original's order, which its weights rely on).
    n_clusters = len(cfg.cutoffs)
    if n_clusters:
        proj = crit.out_projs[0]
        h = hidden[0] if proj is None else proj.T @ hidden[0]
        shortlist = cfg.cutoffs[0]
        head_w = torch.cat([crit.out_layers[0].weight[:shortlist], crit.cluster_weight])
        head_b = torch.cat([crit.out_layers[0].bias[:shortlist], crit.cluster_bias])
        head = torch.softmax(head_w @ h + head_b, 0)
        torch.testing.assert_close(prob[:shortlist], head[:shortlist], rtol=1e-12, atol=0)
        for i, (start, end) in enumerate(zip(cfg.cutoffs, [*cfg.cutoffs[1:], cfg.n_token]), 1):
            mass = prob[start:end].sum()
            torch.testing.assert_close(mass, head[shortlist + n_clusters - i], rtol=1e-12, atol=0)
    # The same targets in another order give the same losses in that order.
    perm = torch.randperm(cfg.n_token)
    torch.testing.assert_close(crit(hidden, perm), nll[perm], rtol=0, atol=1e-12)


# ---- configuration -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(cutoffs=(10, 5)), "cutoffs"),
        (dict(cutoffs=(5, 5)), "cutoffs"),
        (dict(cutoffs=(0, 5)), "cutoffs"),
        (dict(cutoffs=(5, 30)), "cutoffs"),  # = n_token
        (dict(cutoffs=(5, 10), tie_projs=(False, True)), "tie_projs"),
        (dict(div_val=0), "div_val"),
        (dict(cutoffs=(5, 10), div_val=4, d_embed=8), "div_val"),  # 4**2 > 8
        (dict(n_token=1), "n_token"),
        (dict(n_layer=0), "n_layer"),
        (dict(d_inner=0), "d_inner"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropatt=-0.1), "dropout"),
    ],
)
def test_bad_configurations_are_refused(settings, message):
    with pytest.raises(ModelConfigError, match=message):
        ModelConfig(**{**TINY, **settings})


def test_good_edge_configurations_build():
    ModelConfig(**{**TINY, "cutoffs": (5, 10), "div_val": 2, "d_embed": 4})  # 2**2 == 4
    ModelConfig(**{**TINY, "cutoffs": (1, 29)})
    assert Window(mem_len=0).mem_len == 0
    with pytest.raises(ModelConfigError, match="mem_len"):
        Window(mem_len=-1)
