"""The model against its definition: dropout masks, DropConnect, gradients, sizes, kernel."""

from __future__ import annotations

import warnings

import pytest
import torch
from adan_lstm.model import (
    AWDLSTM,
    DropConnectLSTM,
    count_parameters,
    embedding_dropout,
    locked_dropout,
)


def test_locked_dropout_uses_one_mask_across_time():
    x = torch.ones(30, 4, 50)
    y = locked_dropout(x, 0.5, training=True)
    assert torch.equal(y, y[:1].expand_as(y))  # every time step has the same mask
    zeros = (y[0] == 0).float().mean().item()
    assert 0.3 < zeros < 0.7  # about half dropped
    assert set(y.unique().tolist()) <= {0.0, 2.0}  # kept units scaled by 1/(1-p)
    assert torch.equal(locked_dropout(x, 0.5, training=False), x)


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    weight = torch.randn(20, 8)
    words = torch.arange(20).repeat(5, 1)  # every word five times
    out = embedding_dropout(weight, words, 0.5, training=True)
    dropped = (out == 0).all(dim=-1)
    assert torch.equal(dropped, dropped[:1].expand_as(dropped))  # a word is dropped everywhere
    assert 0 < dropped[0].sum() < 20
    kept = ~dropped[0]
    assert torch.allclose(out[0, kept], weight[kept] * 2)
    assert torch.equal(embedding_dropout(weight, words, 0.5, training=False), weight[words])


def _reference_lstm(layer: DropConnectLSTM, w_hh: torch.Tensor) -> torch.nn.LSTM:
    ref = torch.nn.LSTM(layer.input_size, layer.hidden_size)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(layer.weight_ih)
        ref.weight_hh_l0.copy_(w_hh)
        ref.bias_ih_l0.copy_(layer.bias_ih)
        ref.bias_hh_l0.copy_(layer.bias_hh)
    return ref


def test_dropconnect_matches_nn_lstm_with_the_dropped_weight():
    torch.manual_seed(1)
    layer = DropConnectLSTM(6, 5, wdrop=0.5)
    x = torch.randn(7, 3, 6)
    state = (torch.randn(1, 3, 5), torch.randn(1, 3, 5))
    # Eval: the raw weight, exactly nn.LSTM.
    layer.eval()
    out, (h, c) = layer(x, state)
    ref_out, (rh, rc) = _reference_lstm(layer, layer.weight_hh_raw)(x, state)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close((h, c), (rh, rc))
    # Training: nn.LSTM with the weight the same RNG draw drops.
    layer.train()
    torch.manual_seed(2)
    w = layer.recurrent_weight()
    torch.manual_seed(2)
    out, _ = layer(x, state)
    ref_out, _ = _reference_lstm(layer, w)(x, state)
    torch.testing.assert_close(out, ref_out)
    assert (w == 0).any() and not torch.equal(w, layer.weight_hh_raw)


def test_dropconnect_changes_recurrent_weights_in_training_only():
    torch.manual_seed(3)
    layer = DropConnectLSTM(4, 8, wdrop=0.5)
    x = torch.randn(5, 2, 4)
    state = (torch.zeros(1, 2, 8), torch.zeros(1, 2, 8))
    layer.train()
    w1, w2 = layer.recurrent_weight(), layer.recurrent_weight()
    assert not torch.equal(w1, w2)  # a fresh mask per forward pass
    assert 0.35 < (w1 == 0).float().mean().item() < 0.65
    o1, _ = layer(x, state)
    o2, _ = layer(x, state)
    assert torch.equal(o1[0], o2[0])  # the first step does not see W_hh (zero state)...
    assert not torch.allclose(o1[1:], o2[1:])  # ...the later ones do
    layer.eval()
    assert torch.equal(layer.recurrent_weight(), layer.weight_hh_raw)
    assert torch.equal(layer(x, state)[0], layer(x, state)[0])


@pytest.mark.parametrize("compat", [False, True])
def test_gradients_reach_the_raw_recurrent_weights_unless_compat(compat):
    torch.manual_seed(4)
    model = AWDLSTM(30, nlayers=2, emsize=8, nhid=12, weight_drop_compat=compat)
    model.train()
    words = torch.randint(0, 30, (9, 3))
    logits, _, raw, dropped = model(words, model.init_hidden(3))
    logits.sum().backward()
    for rnn in model.rnns:
        assert rnn.weight_ih.grad is not None and rnn.weight_ih.grad.abs().sum() > 0
        if compat:  # the setting's defect: the raw weight is cut from the graph
            assert rnn.weight_hh_raw.grad is None
        else:
            assert rnn.weight_hh_raw.grad is not None and rnn.weight_hh_raw.grad.abs().sum() > 0


def test_no_weight_copies_left_behind_and_no_warnings():
    model = AWDLSTM(30, nlayers=3, emsize=8, nhid=12)
    keys = list(model.state_dict())
    params = [id(p) for p in model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for mode in (model.train, model.eval):
            mode()
            model(torch.randint(0, 30, (6, 2)), model.init_hidden(2))[0].sum().backward()
    assert list(model.state_dict()) == keys
    assert [id(p) for p in model.parameters()] == params
    for rnn in model.rnns:  # no dropped weight or flat buffer kept as an attribute
        assert not [k for k, v in vars(rnn).items() if isinstance(v, torch.Tensor)]
        assert not list(rnn.buffers())


def lstm_params(n_in: int, n_hid: int) -> int:
    return 4 * n_hid * (n_in + n_hid) + 2 * 4 * n_hid  # W_ih, W_hh, two biases


@pytest.mark.parametrize("nlayers", [1, 2, 3])
def test_parameter_counts_follow_the_setting(nlayers):
    """emsize 400, nhid 1150, last layer emsize wide, tied decoder: 5.29M / 13.6M / 24.2M."""
    sizes = [400] + [1150] * (nlayers - 1) + [400]
    expected = 10_000 * 400 + 10_000  # tied embedding/decoder weight + decoder bias
    expected += sum(lstm_params(a, b) for a, b in zip(sizes, sizes[1:]))
    model = AWDLSTM(10_000, nlayers)
    assert count_parameters(model) == expected
    assert model.decoder.weight is model.encoder.weight
    assert [r.hidden_size for r in model.rnns][-1] == 400
    assert {1: 5_293_200, 2: 13_632_400, 3: 24_221_600}[nlayers] == expected


def test_bad_model_sizes_are_errors():
    with pytest.raises(ValueError, match="wdrop"):
        DropConnectLSTM(4, 4, wdrop=1.0)
    with pytest.raises(ValueError, match="nlayers"):
        AWDLSTM(10, nlayers=0)
    with pytest.raises(ValueError, match="dropouti"):
        AWDLSTM(10, nlayers=1, dropouti=-0.1)


def test_one_buffer_layout_is_differentiable_and_exact():
    """The CUDA path lays the four weights out in one buffer; on CPU the same function must
    give the same output and the same gradients as the separate tensors."""
    from adan_lstm.model import _one_buffer

    torch.manual_seed(5)
    layer = DropConnectLSTM(6, 5, wdrop=0.0)
    x = torch.randn(4, 2, 6)
    state = (torch.zeros(1, 2, 5), torch.zeros(1, 2, 5))
    weights = [layer.weight_ih, layer.weight_hh_raw, layer.bias_ih, layer.bias_hh]
    views = _one_buffer(weights)
    assert all(
        v.data_ptr() == views[0].data_ptr() + 4 * o for v, o in zip(views, (0, 120, 220, 240))
    )  # fmt: skip  (contiguous, in order)
    outs = []
    for ws in (weights, views):
        layer.zero_grad()
        out, _, _ = torch._VF.lstm(x, state, ws, True, 1, 0.0, True, False, False)
        out.square().sum().backward()
        outs.append((out.detach(), [p.grad.clone() for p in weights]))
    torch.testing.assert_close(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (cuDNN path)")


@cuda
def test_cuda_cudnn_path_without_warnings_matches_nn_lstm():
    torch.manual_seed(6)
    layer = DropConnectLSTM(32, 48, wdrop=0.5).cuda()
    x = torch.randn(20, 4, 32, device="cuda")
    state = (torch.zeros(1, 4, 48, device="cuda"), torch.zeros(1, 4, 48, device="cuda"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # cuDNN warns when the weights are not one buffer
        layer.train()
        out, _ = layer(x, state)
        out.sum().backward()
        layer.eval()
        out, _ = layer(x, state)
    ref = _reference_lstm(layer, layer.weight_hh_raw).cuda()  # copy_ crosses devices
    torch.testing.assert_close(out, ref(x, state)[0], rtol=1e-4, atol=1e-5)
    assert layer.weight_hh_raw.grad is not None and layer.weight_hh_raw.grad.abs().sum() > 0


@cuda
def test_cuda_model_trains_a_step():
    model = AWDLSTM(100, nlayers=3, emsize=16, nhid=24).cuda()
    logits, *_ = model(torch.randint(0, 100, (10, 2), device="cuda"), model.init_hidden(2))
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
