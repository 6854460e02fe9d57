"""AWD-LSTM (Merity et al. 2017) as AdaBelief's PTB setting builds it, written for current torch.

Top to bottom, one forward pass of :class:`AWDLSTM` on a (time, batch) block of word ids:

1. embedding with word dropout (``dropoute``): whole rows of the embedding matrix are zeroed;
2. locked dropout (``dropouti``) on the embeddings: one mask per sequence, shared over time;
3. ``nlayers`` single-layer LSTMs; each drops its hidden-to-hidden weight (DropConnect,
   ``wdrop``) with a fresh mask per forward pass; locked dropout (``dropouth``) between layers;
4. locked dropout (``dropout``) on the last layer's output, then a decoder tied to the embedding.

The last LSTM's hidden size equals the embedding size, so the decoder can share its weight.

DropConnect here is a function of the raw weight, so the raw weight gets its gradient. The
setting's ``weight_drop.py`` instead wraps the dropped weight in a new ``nn.Parameter`` at every
forward pass, which cuts it from the raw weight: the raw hidden-to-hidden weights never receive
a gradient and keep their initial values for the whole run. ``weight_drop_compat=True``
reproduces that (the raw weight is read detached) for like-for-like comparison with the
published numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Hidden = list[tuple[Tensor, Tensor]]


def locked_dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Variational dropout on a (time, batch, features) tensor: one mask per (batch, feature),
    the same at every time step, scaled by 1/(1-p)."""
    if not training or p == 0.0:
        return x
    mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1.0 - p) / (1.0 - p)
    return x * mask


def embedding_dropout(weight: Tensor, words: Tensor, p: float, training: bool) -> Tensor:
    """Look up ``words`` in ``weight`` after dropping whole word types (rows) with probability
    ``p``: a dropped word is zero everywhere it occurs in the batch."""
    if not training or p == 0.0:
        return F.embedding(words, weight)
    mask = weight.new_empty(weight.size(0), 1).bernoulli_(1.0 - p) / (1.0 - p)
    return F.embedding(words, weight * mask)


class DropConnectLSTM(nn.Module):
    """One LSTM layer whose hidden-to-hidden weight gets a fresh dropout mask at each forward
    pass in training (DropConnect), and is used as is in eval.

    It owns plain parameters (``weight_ih``, ``weight_hh_raw``, ``bias_ih``, ``bias_hh``, in
    nn.LSTM's gate order i, f, g, o and initialisation) and calls the same kernel nn.LSTM calls.
    On CUDA the four weights are laid out in one buffer, as cuDNN wants them, so cuDNN neither
    warns nor copies them again; nothing is stored between calls.
    """

    def __init__(self, input_size: int, hidden_size: int, wdrop: float, compat: bool = False):
        super().__init__()
        if not 0.0 <= wdrop < 1.0:
            raise ValueError(f"wdrop must be in [0, 1), got {wdrop}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.wdrop, self.compat = wdrop, compat
        gates = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(gates, input_size))
        self.weight_hh_raw = nn.Parameter(torch.empty(gates, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(gates))
        self.bias_hh = nn.Parameter(torch.empty(gates))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)  # nn.LSTM's default
        for w in self.parameters():
            nn.init.uniform_(w, -bound, bound)

    def recurrent_weight(self) -> Tensor:
        """The hidden-to-hidden weight this forward pass uses."""
        raw = self.weight_hh_raw.detach() if self.compat else self.weight_hh_raw
        return F.dropout(raw, self.wdrop, self.training) if self.wdrop else raw

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple]:
        weights = [self.weight_ih, self.recurrent_weight(), self.bias_ih, self.bias_hh]
        if x.is_cuda and torch.backends.cudnn.enabled:
            weights = _one_buffer(weights)
        out, h, c = torch._VF.lstm(
            x, state, weights, True, 1, 0.0, self.training, False, False
        )  # has_biases, num_layers, dropout, train, bidirectional, batch_first
        return out, (h, c)

    def extra_repr(self) -> str:
        compat = ", weight_drop_compat=True (raw W_hh frozen)" if self.compat else ""
        return f"{self.input_size}, {self.hidden_size}, wdrop={self.wdrop}{compat}"


def _one_buffer(tensors: list[Tensor]) -> list[Tensor]:
    """The tensors as views of one contiguous buffer, in order (differentiable)."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    views, offset = [], 0
    for t in tensors:
        views.append(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()
    return views


class AWDLSTM(nn.Module):
    """The AWD-LSTM language model with a tied decoder; see the module docstring.

    ``forward(words, hidden)`` returns ``(logits, hidden, raw_outputs, dropped_outputs)``:
    logits of shape (time * batch, vocab), the new hidden state, and per layer the LSTM output
    before and after its dropout (for activation and temporal activation regularization).
    """

    def __init__(
        self,
        ntoken: int,
        nlayers: int = 3,
        emsize: int = 400,
        nhid: int = 1150,
        dropout: float = 0.4,
        dropouth: float = 0.25,
        dropouti: float = 0.4,
        dropoute: float = 0.1,
        wdrop: float = 0.5,
        weight_drop_compat: bool = False,
    ):
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be at least 1, got {nlayers}")
        for name, p in (("dropout", dropout), ("dropouth", dropouth), ("dropouti", dropouti),
                        ("dropoute", dropoute)):  # fmt: skip
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {p}")
        self.ntoken, self.nlayers, self.emsize, self.nhid = ntoken, nlayers, emsize, nhid
        self.dropout, self.dropouth, self.dropouti, self.dropoute = (
            dropout, dropouth, dropouti, dropoute)  # fmt: skip
        self.encoder = nn.Embedding(ntoken, emsize)
        sizes = [emsize] + [nhid] * (nlayers - 1) + [emsize]  # the last layer tied: emsize
        self.rnns = nn.ModuleList(
            DropConnectLSTM(sizes[i], sizes[i + 1], wdrop, weight_drop_compat)
            for i in range(nlayers)
        )
        self.decoder = nn.Linear(emsize, ntoken)
        self.decoder.weight = self.encoder.weight
        self.init_weights()

    def init_weights(self) -> None:
        """The setting's init: embedding (= decoder) uniform ±0.1, decoder bias 0."""
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def init_hidden(self, batch_size: int) -> Hidden:
        """Zero (h, c) per layer, on the model's device and dtype."""
        w = self.encoder.weight
        return [
            (
                w.new_zeros(1, batch_size, rnn.hidden_size),
                w.new_zeros(1, batch_size, rnn.hidden_size),
            )
            for rnn in self.rnns
        ]

    def forward(self, words: Tensor, hidden: Hidden):
        x = embedding_dropout(self.encoder.weight, words, self.dropoute, self.training)
        x = locked_dropout(x, self.dropouti, self.training)
        new_hidden, raw_outputs, dropped_outputs = [], [], []
        for i, rnn in enumerate(self.rnns):
            x, h = rnn(x, hidden[i])
            new_hidden.append(h)
            raw_outputs.append(x)
            last = i == self.nlayers - 1
            x = locked_dropout(x, self.dropout if last else self.dropouth, self.training)
            dropped_outputs.append(x)
        logits = self.decoder(x.reshape(-1, x.size(2)))
        return logits, new_hidden, raw_outputs, dropped_outputs


def count_parameters(model: nn.Module) -> int:
    """Distinct parameters (the tied embedding/decoder weight counted once), as the setting's
    ``main.py`` prints them."""
    return sum(p.numel() for p in model.parameters())


def detach_hidden(hidden: Hidden) -> Hidden:
    """Cut the graph between BPTT segments (the state is carried, its history is not)."""
    return [(h.detach(), c.detach()) for h, c in hidden]
