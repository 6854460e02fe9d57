"""Transformer-XL (Dai et al., 2019), written out top to bottom.

The language model of kimiyoung/transformer-xl's ``MemTransformerLM`` with the choices the
Adan paper's WikiText-103 run uses, and nothing else:

- relative positional attention with two learned biases shared by all layers (the original's
  ``attn_type 0``; ``untie_r`` gives every layer its own pair, as Hugging Face's conversion of
  the released large model has);
- segment-level recurrence: each layer also attends to the hidden states of up to ``mem_len``
  previous positions, which are kept without gradient (:meth:`TransformerXL.forward` returns
  them);
- adaptive input (:class:`AdaptiveEmbedding`) and adaptive softmax
  (:class:`AdaptiveLogSoftmax`) with ``div_val``, the softmax's weights tied to the
  embedding's and its projections tied to the embedding's projections;
- post-layer-norm blocks (``pre_lnorm False``) and the original's initialization.

Tensors are sequence-first, as in the original: tokens are ``(seq_len, batch)``, hidden states
``(seq_len, batch, d_model)``. :meth:`TransformerXL.forward` returns the negative log
likelihood of every target token, ``(seq_len, batch)``, and the new memory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ModelConfigError(ValueError):
    """A model configuration that cannot be built; the message names the setting."""


@dataclass(frozen=True)
class ModelConfig:
    """The architecture. Defaults are the WikiText-103 base model except ``n_token``."""

    n_token: int
    n_layer: int = 16
    n_head: int = 10
    d_model: int = 410
    d_head: int = 41
    d_inner: int = 2100
    d_embed: int | None = None  # None: d_model
    dropout: float = 0.1
    dropatt: float = 0.0
    cutoffs: tuple[int, ...] = ()  # adaptive softmax/input cluster boundaries; () = full
    div_val: int = 1  # cluster i embeds in d_embed // div_val**i dimensions
    tie_weight: bool = True  # softmax weights = embedding weights
    tie_projs: tuple[bool, ...] | None = None  # per cluster; None: all but the head's
    untie_r: bool = False  # one pair of position biases per layer
    init_std: float = 0.02
    proj_init_std: float = 0.01

    def __post_init__(self) -> None:
        checks = [
            (self.n_token >= 2, f"n_token must be at least 2, got {self.n_token}"),
            (min(self.n_layer, self.n_head, self.d_head) >= 1, "n_layer/n_head/d_head >= 1"),
            (min(self.d_model, self.d_inner) >= 1, "d_model and d_inner must be positive"),
            (self.d_model % 2 == 0, f"d_model must be even (sin/cos pairs), got {self.d_model}"),
            (0 <= self.dropout < 1 and 0 <= self.dropatt < 1, "dropouts must be in [0, 1)"),
            (self.div_val >= 1, f"div_val must be at least 1, got {self.div_val}"),
            (
                list(self.cutoffs) == sorted(set(self.cutoffs))
                and all(0 < c < self.n_token for c in self.cutoffs),
                f"cutoffs {list(self.cutoffs)} must increase strictly within 1..n_token-1 "
                f"({self.n_token - 1})",
            ),  # fmt: skip
            (
                self.tie_projs is None or len(self.tie_projs) == len(self.cutoffs) + 1,
                f"tie_projs needs one flag per cluster ({len(self.cutoffs) + 1})",
            ),  # fmt: skip
            (
                self.div_val ** len(self.cutoffs) <= self.embed_dim,
                f"div_val {self.div_val} leaves the last cluster no embedding dimension",
            ),  # fmt: skip
        ]
        for ok, message in checks:
            if not ok:
                raise ModelConfigError(message)

    @property
    def embed_dim(self) -> int:
        return self.d_model if self.d_embed is None else self.d_embed

    @property
    def projs_tied(self) -> tuple[bool, ...]:
        """Per cluster: is the softmax projection the embedding's (train.py's default)."""
        if self.tie_projs is not None:
            return tuple(self.tie_projs)
        return (False,) + (True,) * len(self.cutoffs)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cutoffs"] = list(self.cutoffs)
        d["tie_projs"] = None if self.tie_projs is None else list(self.tie_projs)
        return d


@dataclass(frozen=True)
class Window:
    """How a segment sees the past: the evaluation protocol's knobs, not the architecture's.

    ``mem_len`` positions of memory; ``clamp_len`` > 0 caps the relative distance the position
    embedding can express; ``same_length`` gives every query the same number of keys (the
    standard evaluation's setting) instead of more for later queries.
    """

    mem_len: int = 150
    clamp_len: int = -1
    same_length: bool = False

    def __post_init__(self) -> None:
        if self.mem_len < 0:
            raise ModelConfigError(f"mem_len must be >= 0, got {self.mem_len}")
        if self.same_length and self.mem_len == 0:  # every key would be masked
            raise ModelConfigError("same_length needs mem_len >= 1")


@dataclass
class Memory:
    """The hidden states of the last ``mem_len`` positions: the input of every layer and the
    output of the last, ``n_layer + 1`` tensors of ``(mem_len, batch, d_model)``."""

    states: list[Tensor] = field(default_factory=list)

    @property
    def length(self) -> int:
        return self.states[0].size(0) if self.states else 0


# ---- the blocks --------------------------------------------------------------------------
def rel_shift(x: Tensor) -> Tensor:
    """Turn scores against relative distances into scores against key positions.

    ``x[i, k]`` scores query ``i`` against the position embedding at index ``k``, where index
    ``k`` stands for distance ``klen - 1 - k``. The result's ``[i, j]`` is the score for the
    distance between query ``i`` (at absolute position ``mlen + i``) and key ``j``, that is
    ``x[i, j + qlen - 1 - i]``, for every key the query may see (``j <= mlen + i``); entries
    beyond are leftovers that the causal mask hides. The pad-and-reshape does this without an
    index tensor: a row of the padded matrix read with one more column is shifted by one.
    """
    qlen, klen = x.size(0), x.size(1)
    padded = torch.cat([x.new_zeros((qlen, 1, *x.shape[2:])), x], dim=1)
    return padded.view(klen + 1, qlen, *x.shape[2:])[1:].view_as(x)


class RelMultiHeadAttention(nn.Module):
    """Multi-head attention over [memory; segment] with relative positions (the original's
    ``RelPartialLearnableMultiHeadAttn``), residual and post-layer-norm included.

    The score of query ``i`` and key ``j`` is ``(q_i + u) k_j + (q_i + v) W_r r_{i-j}`` (terms
    (a)+(c) and (b)+(d) of the paper), ``u`` and ``v`` the two learned biases.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.d_head = cfg.n_head, cfg.d_head
        inner = cfg.n_head * cfg.d_head
        self.qkv_net = nn.Linear(cfg.d_model, 3 * inner, bias=False)
        self.r_net = nn.Linear(cfg.d_model, inner, bias=False)  # W_r: position -> key space
        self.o_net = nn.Linear(inner, cfg.d_model, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.dropatt = nn.Dropout(cfg.dropatt)
        self.layer_norm = nn.LayerNorm(cfg.d_model)
        self.scale = 1.0 / math.sqrt(cfg.d_head)

    def forward(
        self,
        h: Tensor,
        pos_emb: Tensor,
        r_w_bias: Tensor,
        r_r_bias: Tensor,
        mask: Tensor,
        mem: Tensor | None,
    ) -> Tensor:
        qlen, bsz = h.size(0), h.size(1)
        context = h if mem is None or mem.size(0) == 0 else torch.cat([mem, h], 0)
        klen = context.size(0)
        q, k, v = self.qkv_net(context).chunk(3, dim=-1)
        q = q[-qlen:].view(qlen, bsz, self.n_head, self.d_head)  # queries: the segment only
        k = k.view(klen, bsz, self.n_head, self.d_head)
        v = v.view(klen, bsz, self.n_head, self.d_head)
        r = self.r_net(pos_emb).view(klen, self.n_head, self.d_head)

        content = torch.einsum("ibnd,jbnd->ijbn", q + r_w_bias, k)  # (qlen, klen, bsz, head)
        position = rel_shift(torch.einsum("ibnd,jnd->ijbn", q + r_r_bias, r))
        score = (content + position) * self.scale
        score = score.masked_fill(mask[:, :, None, None], float("-inf"))
        prob = self.dropatt(torch.softmax(score, dim=1))
        out = torch.einsum("ijbn,jbnd->ibnd", prob, v).reshape(qlen, bsz, -1)
        return self.layer_norm(h + self.drop(self.o_net(out)))


class PositionwiseFF(nn.Module):
    """Linear -> ReLU -> dropout -> Linear -> dropout, residual, post-layer-norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.CoreNet = nn.Sequential(  # the original's attribute name, kept for readability
            nn.Linear(cfg.d_model, cfg.d_inner),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.d_inner, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )
        self.layer_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, h: Tensor) -> Tensor:
        return self.layer_norm(h + self.CoreNet(h))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dec_attn = RelMultiHeadAttention(cfg)
        self.pos_ff = PositionwiseFF(cfg)
        if cfg.untie_r:
            inner = (cfg.n_head, cfg.d_head)
            self.r_w_bias = nn.Parameter(torch.zeros(inner))
            self.r_r_bias = nn.Parameter(torch.zeros(inner))

    def forward(self, h, pos_emb, r_w_bias, r_r_bias, mask, mem):
        if hasattr(self, "r_w_bias"):
            r_w_bias, r_r_bias = self.r_w_bias, self.r_r_bias
        return self.pos_ff(self.dec_attn(h, pos_emb, r_w_bias, r_r_bias, mask, mem))


def cluster_bounds(cutoffs: tuple[int, ...], n_token: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]`` of each vocabulary cluster: the head's shortlist, then tails."""
    ends = [0, *cutoffs, n_token]
    return list(zip(ends[:-1], ends[1:]))


class AdaptiveEmbedding(nn.Module):
    """Adaptive input: cluster ``i`` embeds in ``d_embed // div_val**i`` dimensions, projected
    to ``d_model``; the result is scaled by ``sqrt(d_model)``. With ``div_val`` 1 there is one
    table for the whole vocabulary (and a projection only when ``d_embed != d_model``)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.d_model, self.div_val = cfg.d_model, cfg.div_val
        self.bounds = cluster_bounds(cfg.cutoffs, cfg.n_token)
        self.scale = math.sqrt(cfg.d_model)
        d_embed = cfg.embed_dim
        self.emb_layers = nn.ModuleList()
        self.emb_projs = nn.ParameterList()
        if cfg.div_val == 1:
            self.emb_layers.append(nn.Embedding(cfg.n_token, d_embed))
            if d_embed != cfg.d_model:
                self.emb_projs.append(nn.Parameter(torch.zeros(cfg.d_model, d_embed)))
        else:
            for i, (start, end) in enumerate(self.bounds):
                d_i = d_embed // cfg.div_val**i
                self.emb_layers.append(nn.Embedding(end - start, d_i))
                self.emb_projs.append(nn.Parameter(torch.zeros(cfg.d_model, d_i)))

    def forward(self, tokens: Tensor) -> Tensor:
        if self.div_val == 1:
            out = self.emb_layers[0](tokens)
            if len(self.emb_projs):
                out = F.linear(out, self.emb_projs[0])
            return out * self.scale
        flat = tokens.reshape(-1)
        out = torch.zeros(flat.numel(), self.d_model, dtype=self.emb_projs[0].dtype,
                          device=tokens.device)  # fmt: skip
        for i, (start, end) in enumerate(self.bounds):
            index = ((flat >= start) & (flat < end)).nonzero().squeeze(1)
            if index.numel():
                emb = self.emb_layers[i](flat.index_select(0, index) - start)
                out.index_copy_(0, index, F.linear(emb, self.emb_projs[i]).to(out.dtype))
        return out.view(*tokens.shape, self.d_model) * self.scale


class AdaptiveLogSoftmax(nn.Module):
    """Adaptive softmax (Grave et al., 2017) with projections, returning per-token NLL.

    The head scores the shortlist (cluster 0) and one logit per tail cluster; a token of tail
    cluster ``i`` costs ``-log p(cluster i) - log p(token | cluster i)``. As in the original,
    cluster ``i``'s logit is the head's column ``-i`` (``cluster_weight`` row ``n_clusters -
    i``); that order matters only for loading the original's weights.

    The output weights and projections are separate parameters here; :class:`TransformerXL`
    ties them to the embedding's by assigning the same ``Parameter`` objects.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.div_val = cfg.div_val
        self.bounds = cluster_bounds(cfg.cutoffs, cfg.n_token)
        self.n_clusters = len(cfg.cutoffs)
        d_embed = cfg.embed_dim
        if self.n_clusters:
            self.cluster_weight = nn.Parameter(torch.zeros(self.n_clusters, d_embed))
            self.cluster_bias = nn.Parameter(torch.zeros(self.n_clusters))
        self.out_layers = nn.ModuleList()
        # One projection per cluster; None where the cluster needs none (div_val 1 with
        # d_embed == d_model). A plain list: tied entries are the embedding's Parameters.
        self.out_projs: list[nn.Parameter | None] = []
        if cfg.div_val == 1:
            self.out_layers.append(nn.Linear(d_embed, cfg.n_token))
            for i in range(len(self.bounds)):
                proj = None
                if d_embed != cfg.d_model:
                    proj = nn.Parameter(torch.zeros(cfg.d_model, d_embed))
                    self.register_parameter(f"out_proj_{i}", proj)
                self.out_projs.append(proj)
        else:
            for i, (start, end) in enumerate(self.bounds):
                d_i = d_embed // cfg.div_val**i
                proj = nn.Parameter(torch.zeros(cfg.d_model, d_i))
                self.register_parameter(f"out_proj_{i}", proj)
                self.out_projs.append(proj)
                self.out_layers.append(nn.Linear(d_i, end - start))

    def set_proj(self, i: int, proj: nn.Parameter) -> None:
        """Use ``proj`` (the embedding's) as cluster ``i``'s projection."""
        self.register_parameter(f"out_proj_{i}", proj)
        self.out_projs[i] = proj

    def _cluster(self, i: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """Weight, bias and projection that score cluster ``i``'s words (the head: with the
        cluster logits appended)."""
        if self.div_val == 1:
            start, end = self.bounds[i]
            weight = self.out_layers[0].weight[start:end]
            bias = self.out_layers[0].bias[start:end]
        else:
            weight, bias = self.out_layers[i].weight, self.out_layers[i].bias
        if i == 0 and self.n_clusters:
            weight = torch.cat([weight, self.cluster_weight], 0)
            bias = torch.cat([bias, self.cluster_bias], 0)
        return weight, bias, self.out_projs[i]

    @staticmethod
    def _logits(hidden: Tensor, weight: Tensor, bias: Tensor, proj: Tensor | None) -> Tensor:
        if proj is not None:
            hidden = F.linear(hidden, proj.t())
        logits = F.linear(hidden, weight, bias)
        # At least float32 for the log-softmax, but no narrowing of a float64 model.
        return logits.to(torch.promote_types(logits.dtype, torch.float32))

    def forward(self, hidden: Tensor, target: Tensor) -> Tensor:
        """Per-token NLL of ``target`` (N,) given ``hidden`` (N, d_model), in float32 or
        wider (the log-softmax runs in at least float32 under autocast)."""
        head = self._logits(hidden, *self._cluster(0))
        head_logprob = F.log_softmax(head, dim=-1)
        if not self.n_clusters:
            return -head_logprob.gather(1, target[:, None]).squeeze(1)
        nll = torch.zeros(target.shape, dtype=head_logprob.dtype, device=hidden.device)
        for i, (start, end) in enumerate(self.bounds):
            index = ((target >= start) & (target < end)).nonzero().squeeze(1)
            if index.numel() == 0:
                continue
            local = (target.index_select(0, index) - start)[:, None]
            logprob = head_logprob.index_select(0, index)
            if i == 0:
                token_logprob = logprob.gather(1, local).squeeze(1)
            else:
                tail = self._logits(hidden.index_select(0, index), *self._cluster(i))
                token_logprob = logprob[:, -i] + F.log_softmax(tail, -1).gather(1, local).squeeze(1)
            nll.index_copy_(0, index, -token_logprob)
        return nll


# ---- the language model ------------------------------------------------------------------
class TransformerXL(nn.Module):
    """The Transformer-XL language model: embeddings, ``n_layer`` decoder layers with
    recurrence, adaptive softmax. ``forward(tokens, targets, memory, window)`` returns the
    per-token NLL ``(seq_len, batch)`` and the memory for the next segment."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.word_emb = AdaptiveEmbedding(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layer))
        if not cfg.untie_r:
            self.r_w_bias = nn.Parameter(torch.zeros(cfg.n_head, cfg.d_head))
            self.r_r_bias = nn.Parameter(torch.zeros(cfg.n_head, cfg.d_head))
        inv_freq = 1.0 / (10000 ** (torch.arange(0.0, cfg.d_model, 2.0) / cfg.d_model))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.crit = AdaptiveLogSoftmax(cfg)
        self.reset_parameters()
        self._tie()

    def _tie(self) -> None:
        cfg = self.cfg
        if cfg.tie_weight:
            for out, emb in zip(self.crit.out_layers, self.word_emb.emb_layers):
                out.weight = emb.weight
        for i, tied in enumerate(cfg.projs_tied):
            if not tied:
                continue
            if cfg.div_val == 1 and cfg.embed_dim != cfg.d_model:
                self.crit.set_proj(i, self.word_emb.emb_projs[0])
            elif cfg.div_val != 1:
                self.crit.set_proj(i, self.word_emb.emb_projs[i])

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The original's ``weights_init`` (init 'normal'): linear, embedding and cluster
        weights ~ N(0, init_std), projections ~ N(0, proj_init_std), LayerNorm gains
        ~ N(1, init_std), position biases ~ N(0, init_std), every bias 0."""
        std, proj_std = self.cfg.init_std, self.cfg.proj_init_std
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.normal_(1.0, std)
                module.bias.zero_()
        for proj in self.word_emb.emb_projs:
            proj.normal_(0.0, proj_std)
        for proj in self.crit.out_projs:
            if proj is not None:
                proj.normal_(0.0, proj_std)
        if self.crit.n_clusters:
            self.crit.cluster_weight.normal_(0.0, std)
            self.crit.cluster_bias.zero_()
        for name, p in self.named_parameters():
            if name.endswith(("r_w_bias", "r_r_bias")):
                p.normal_(0.0, std)

    def init_memory(self) -> Memory:
        return Memory()

    def _mask(self, qlen: int, mlen: int, window: Window, device) -> Tensor:
        """True where query ``i`` may not see key ``j``: the future, and with ``same_length``
        keys further back than ``mem_len`` (so every query sees the same number)."""
        klen = mlen + qlen
        ones = torch.ones(qlen, klen, dtype=torch.bool, device=device)
        future = torch.triu(ones, diagonal=1 + mlen)
        if not window.same_length:
            return future
        over = klen - window.mem_len
        shift = qlen - over if over > 0 else qlen
        return future | torch.tril(ones, diagonal=-shift)

    def _positions(self, klen: int, window: Window, dtype, device) -> Tensor:
        """Sinusoid embeddings of the distances klen-1 .. 0, ``(klen, d_model)``."""
        dist = torch.arange(klen - 1, -1, -1.0, device=device, dtype=self.inv_freq.dtype)
        if window.clamp_len > 0:
            dist = dist.clamp(max=window.clamp_len)
        angles = torch.outer(dist, self.inv_freq)
        return torch.cat([angles.sin(), angles.cos()], dim=-1).to(dtype)

    def forward(
        self,
        tokens: Tensor,
        targets: Tensor,
        memory: Memory | None = None,
        window: Window | None = None,
    ) -> tuple[Tensor, Memory]:
        window = window or Window()
        memory = memory or Memory()
        qlen, bsz = tokens.shape
        mlen = memory.length
        h = self.word_emb(tokens)
        mask = self._mask(qlen, mlen, window, tokens.device)
        pos_emb = self.drop(self._positions(mlen + qlen, window, h.dtype, tokens.device))
        h = self.drop(h)
        states = [h]
        r_w_bias = getattr(self, "r_w_bias", None)
        r_r_bias = getattr(self, "r_r_bias", None)
        for i, layer in enumerate(self.layers):
            mem = memory.states[i] if memory.states else None
            h = layer(h, pos_emb, r_w_bias, r_r_bias, mask, mem)
            states.append(h)
        h = self.drop(h)
        nll = self.crit(h.reshape(-1, h.size(-1)), targets.reshape(-1)).view(qlen, bsz)
        return nll, self._next_memory(memory, states, window.mem_len)

    @torch.no_grad()
    def _next_memory(self, memory: Memory, states: list[Tensor], mem_len: int) -> Memory:
        """The last ``mem_len`` positions of [old memory; this segment], per layer, detached:
        the next segment reads them but sends no gradient back into this one."""
        if mem_len == 0:
            return Memory()
        new = []
        for i, h in enumerate(states):
            full = h if not memory.states else torch.cat([memory.states[i], h], 0)
            new.append(full[-mem_len:].detach())
        return Memory(new)


def count_parameters(model: nn.Module, embeddings: bool = True) -> int:
    """Distinct trainable parameters (tied ones once). With ``embeddings`` False, only the
    decoder layers', as the original's train.py counts "non-embedding" parameters (so the
    shared position biases are not in it)."""
    params = model.parameters() if embeddings else model.layers.parameters()
    return sum(p.numel() for p in {id(p): p for p in params}.values())
