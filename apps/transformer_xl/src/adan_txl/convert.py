"""Weights in and out of :class:`~adan_txl.model.TransformerXL`.

The original Transformer-XL (kimiyoung/transformer-xl, ``pytorch/mem_transformer.py``'s
``MemTransformerLM``) and Hugging Face's conversion of it (``TransfoXLLMHeadModel``, whose body
keys carry the prefix ``transformer.`` while the adaptive softmax stays under ``crit.``) hold
the same tensors as our model, under the same names but for three:

====================================  ==========================================
original                              ours
====================================  ==========================================
``crit.out_projs.{i}``                ``crit.out_proj_{i}``
``layers.{l}.dec_attn.r_w_bias``      ``layers.{l}.r_w_bias`` (likewise r_r_bias;
                                      only with ``untie_r``)
``pos_emb.inv_freq`` (a buffer)       recomputed, not stored
====================================  ==========================================

:func:`from_original` reads the architecture off the tensors' shapes (what it cannot read, the
caller passes), checks every key, shape and weight tie, and returns our model in eval mode; on
the same segments, memory included, it gives the original's per-token losses. One caveat when
comparing: the original's adaptive softmax returns the losses of a batch grouped by vocabulary
cluster unless it was built with ``keep_order=True``; ours keeps the token order, so compare
sums, or against ``keep_order=True``. :func:`to_original` goes the other way.

Our own checkpoint file is ``{"config": ModelConfig.to_dict(), "model": state_dict}``
(:func:`save_checkpoint`); :func:`load_checkpoint` reads it, a bare state_dict of either model,
or a dict holding one under ``"model"``, ``"state_dict"`` or ``"model_state_dict"``.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from itertools import accumulate

import torch
from torch import Tensor

from adan_txl.model import ModelConfig, ModelConfigError, TransformerXL

HF_PREFIX = "transformer."
INV_FREQ = "pos_emb.inv_freq"
STATE_ENTRIES = ("model", "state_dict", "model_state_dict")

_MODEL_FIELDS = [f.name for f in fields(ModelConfig)]
_WINDOW_FIELDS = ("mem_len", "clamp_len", "same_length")
# Every field the tensors decide; none may silently fall back to a ModelConfig default.
_STRUCTURE = (
    "n_token",
    "n_layer",
    "n_head",
    "d_model",
    "d_head",
    "d_inner",
    "d_embed",
    "div_val",
    "cutoffs",
    "untie_r",
)
_SHOWN = 5  # keys listed per kind in an error message

_ORIGINAL_TO_OURS = [
    (re.compile(r"crit\.out_projs\.(\d+)"), r"crit.out_proj_\1"),
    (re.compile(r"layers\.(\d+)\.dec_attn\.(r_[wr]_bias)"), r"layers.\1.\2"),
]
_OURS_TO_ORIGINAL = [
    (re.compile(r"crit\.out_proj_(\d+)"), r"crit.out_projs.\1"),
    (re.compile(r"layers\.(\d+)\.(r_[wr]_bias)"), r"layers.\1.dec_attn.\2"),
]
_LAYER = re.compile(r"layers\.(\d+)\.")
_TABLE = re.compile(r"word_emb\.emb_layers\.(\d+)\.weight")
_OWN_BIAS = re.compile(r"layers\.\d+\.dec_attn\.r_w_bias")
_OUT_PROJ = re.compile(r"crit\.out_projs\.\d+")

RECIPE = (
    "A model.pt written by the original train.py pickles the whole MemTransformerLM; turn it "
    "into a state_dict once, with the original code importable (this runs the file's pickled "
    "code, so only for files you trust):\n"
    "    import sys, torch; sys.path.insert(0, '/path/to/transformer-xl/pytorch')\n"
    "    torch.save(torch.load('model.pt', map_location='cpu', weights_only=False)"
    ".state_dict(), 'model_state.pt')\n"
    "and load model_state.pt."
)


class ConversionError(ValueError):
    """A state_dict or checkpoint that does not fit the model; the message names the key."""


def _rename(key: str, rules: list[tuple[re.Pattern, str]]) -> str:
    for pattern, replacement in rules:
        match = pattern.fullmatch(key)
        if match:
            return match.expand(replacement)
    return key


def _listing(keys: list[str]) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


# ---- our model -> the original's keys ----------------------------------------------------
def to_original(model: TransformerXL, prefix: str = "") -> dict[str, Tensor]:
    """The state_dict of the original ``MemTransformerLM`` with ``model``'s weights.

    ``prefix`` goes before the transformer body's keys (``"transformer."`` gives Hugging Face's
    layout); the adaptive softmax's ``crit.*`` keys never get it. The buffer
    ``pos_emb.inv_freq`` is included, as the original stores it. Like ``state_dict()``, the
    tensors share memory with the model's parameters, and tied weights appear under both keys.
    """
    if prefix and not prefix.endswith("."):
        prefix += "."
    out: dict[str, Tensor] = {}
    for key, tensor in model.state_dict().items():
        name = _rename(key, _OURS_TO_ORIGINAL)
        out[name if name.startswith("crit.") else prefix + name] = tensor
    out[prefix + INV_FREQ] = model.inv_freq.detach()
    return out


# ---- the original's keys -> a configuration ----------------------------------------------
@dataclass
class _Source:
    """A state_dict in the original's names without the prefix, and how to show its keys."""

    tensors: dict[str, Tensor]
    prefix: str
    stray: list[str]  # keys outside the detected layout (body keys without the prefix)

    def show(self, name: str) -> str:
        return name if name.startswith("crit.") else self.prefix + name


def _split_prefix(state_dict: Mapping[str, Tensor]) -> _Source:
    if not isinstance(state_dict, Mapping):
        raise ConversionError(f"expected a state_dict (a mapping), got {type(state_dict).__name__}")
    odd = [
        str(k) for k, v in state_dict.items() if not isinstance(k, str) or not isinstance(v, Tensor)
    ]
    if odd:
        raise ConversionError(f"not a state_dict: these entries are not tensors: {_listing(odd)}")
    prefix = HF_PREFIX if any(k.startswith(HF_PREFIX) for k in state_dict) else ""
    tensors, stray = {}, []
    for key, value in state_dict.items():
        if prefix and key.startswith(prefix):
            tensors[key[len(prefix) :]] = value
        elif prefix and not key.startswith("crit."):
            stray.append(key)
        else:
            tensors[key] = value
    return _Source(tensors, prefix, stray)


def _read_shapes(t: dict[str, Tensor]) -> tuple[dict[str, object], dict[str, str]]:
    """What the shapes say about the fields they decide, and the key each was read from."""
    found: dict[str, object] = {}
    source: dict[str, str] = {}

    def note(name: str, value: object, key: str) -> None:
        found[name], source[name] = value, key

    layers = {int(m.group(1)) for m in map(_LAYER.match, t) if m}
    if layers:
        note("n_layer", max(layers) + 1, f"layers.{max(layers)}.*")
    own = sorted(k for k in t if _OWN_BIAS.fullmatch(k))
    if ("r_w_bias" in t) != bool(own):  # both or neither: untie_r cannot be told
        bias = "r_w_bias" if "r_w_bias" in t else own[0]
        note("untie_r", bias != "r_w_bias", bias)
        if t[bias].dim() == 2:
            note("n_head", t[bias].shape[0], bias)
            note("d_head", t[bias].shape[1], bias)
    for name, key, dim in [
        ("d_model", "layers.0.dec_attn.layer_norm.weight", 0),
        ("d_inner", "layers.0.pos_ff.CoreNet.0.weight", 0),
    ]:
        if key in t and t[key].dim() > dim:
            note(name, t[key].shape[dim], key)

    tables = sorted((int(m.group(1)), m.group(0)) for m in map(_TABLE.fullmatch, t) if m)
    if not tables or [i for i, _ in tables] != list(range(len(tables))):
        return found, source  # no tables, or a gap: the key check names what is missing
    if any(t[key].dim() != 2 for _, key in tables):
        return found, source
    sizes = [t[key].shape[0] for _, key in tables]
    dims = [t[key].shape[1] for _, key in tables]
    first = tables[0][1]
    note("d_embed", dims[0], first)
    if len(tables) == 1:
        note("n_token", sizes[0], first)
        # One table is div_val 1, or div_val > 1 without cutoffs, which always projects, even
        # to the same width; the value of div_val is then immaterial.
        if "word_emb.emb_projs.0" in t and dims[0] == found.get("d_model"):
            note("div_val", 2, "word_emb.emb_projs.0")
            note("cutoffs", (), first)
        else:
            note("div_val", 1, first)
            if "crit.cluster_weight" not in t:
                note("cutoffs", (), "crit.cluster_weight (absent)")
        return found, source
    tables_key = "word_emb.emb_layers.{i}.weight"
    note("n_token", sum(sizes), tables_key)
    note("cutoffs", tuple(accumulate(sizes[:-1])), tables_key)
    # Widths are d_embed // div_val**i; several div_val can give the same widths (and then
    # the same model), so the smallest is as good as any.
    for div_val in range(2, dims[0] + 1):
        if all(dims[0] // div_val**i == d for i, d in enumerate(dims)):
            note("div_val", div_val, tables_key)
            break
    return found, source


def _check_args(model_args: dict) -> dict:
    unknown = sorted(set(model_args) - set(_MODEL_FIELDS))
    if unknown:
        window = [name for name in unknown if name in _WINDOW_FIELDS]
        hint = (
            f" ({', '.join(window)}: a Window setting, not part of the weights)" if window else ""
        )
        raise TypeError(f"unknown model argument(s) {unknown}{hint}; known: {_MODEL_FIELDS}")
    args = dict(model_args)
    for name in ("cutoffs", "tie_projs"):
        if args.get(name) is not None:
            args[name] = tuple(args[name])
    return args


def _hint(given: dict, found: dict, source: dict) -> str:
    """The given arguments that disagree with what the shapes say, for error messages."""
    clashes = [
        f"{name}={given[name]!r} where {source[name]} says {found[name]!r}"
        for name in given
        if name in found
        and given[name] != found[name]
        and not (name == "d_embed" and given[name] is None)
    ]
    return f" (you passed {'; '.join(clashes)})" if clashes else ""


def _cannot_infer(missing: list[str], found: dict, src: _Source) -> ConversionError:
    if "cutoffs" in missing and "crit.cluster_weight" in src.tensors:
        n = src.tensors["crit.cluster_weight"].shape[0]
        n_token = found.get("n_token", "n_token")
        return ConversionError(
            f"cannot infer cutoffs: with div_val 1 the embedding is one table for the whole "
            f"vocabulary, and {src.show('crit.cluster_weight')} says there are {n} tail "
            f"clusters; pass cutoffs=(...) with {n} increasing boundaries below {n_token} "
            f"(WikiText-103: cutoffs=(20000, 40000, 200000))"
        )
    return ConversionError(
        f"cannot infer {', '.join(missing)} from the tensors (the keys they are read from, "
        f"word_emb.emb_layers.{{i}}.weight, layers.{{l}}.*, r_w_bias or "
        f"layers.{{l}}.dec_attn.r_w_bias, are missing or inconsistent); pass "
        f"{', '.join(f'{name}=...' for name in missing)}, or check that this is a "
        f"MemTransformerLM state_dict (keys found: {_listing(list(src.tensors))})"
    )


def _expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):  # shapes only: no memory, no initialization cost
        model = TransformerXL(cfg)
    return {k: tuple(v.shape) for k, v in to_original(model).items()}


def _tie_pairs(cfg: ModelConfig) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(softmax key, embedding key) of the weights and of the projections that can be tied."""
    n = len(cfg.cutoffs) + 1
    weights = [
        (f"crit.out_layers.{i}.weight", f"word_emb.emb_layers.{i}.weight")
        for i in range(1 if cfg.div_val == 1 else n)
    ]
    if cfg.div_val > 1:
        projs = [(f"crit.out_projs.{i}", f"word_emb.emb_projs.{i}") for i in range(n)]
    elif cfg.embed_dim != cfg.d_model:
        projs = [(f"crit.out_projs.{i}", "word_emb.emb_projs.0") for i in range(n)]
    else:
        projs = []
    return weights, projs


def _tie_state(t: dict[str, Tensor], out: str, emb: str) -> str:
    """'missing' (the softmax key is absent), 'equal', 'different' or 'unknown' (no data)."""
    if out not in t:
        return "missing"
    a, b = t[out], t.get(emb)
    if b is None or a.shape != b.shape:
        return "different"
    if a.is_meta or b.is_meta:
        return "unknown"
    return "equal" if torch.equal(a, b) else "different"


def _resolve_ties(src: _Source, cfg: ModelConfig, given: dict) -> ModelConfig:
    """The ties: as given (checked later), else read off the source: a softmax tensor that is
    absent or equal to the embedding's is tied (the original stores a tied one under both
    keys; Hugging Face's save_pretrained may drop the softmax's copy)."""
    weights, projs = _tie_pairs(cfg)
    t = src.tensors
    if "tie_weight" not in given:
        states = {_tie_state(t, *pair) for pair in weights}
        tie_weight = cfg.tie_weight if states == {"unknown"} else "different" not in states
        cfg = replace(cfg, tie_weight=tie_weight)
    if "tie_projs" not in given and projs:
        default = cfg.projs_tied
        flags = []
        for i, pair in enumerate(projs):
            state = _tie_state(t, *pair)
            flags.append(default[i] if state == "unknown" else state != "different")
        cfg = replace(cfg, tie_projs=None if tuple(flags) == default else tuple(flags))
    return cfg


def _drop_identity_projs(src: _Source, cfg: ModelConfig) -> None:
    """Hugging Face's conversion can hold softmax projections where the original has none
    (div_val 1, d_embed == d_model); identity matrices change nothing, so they go."""
    if cfg.div_val != 1 or cfg.embed_dim != cfg.d_model:
        return
    for key in [k for k in src.tensors if _OUT_PROJ.fullmatch(k)]:
        tensor = src.tensors[key]
        if tensor.shape != (cfg.d_model, cfg.d_model) or tensor.is_meta:
            continue
        if torch.equal(tensor.float(), torch.eye(cfg.d_model, device=tensor.device)):
            del src.tensors[key]


def _read(state_dict: Mapping[str, Tensor], model_args: dict) -> tuple[ModelConfig, _Source]:
    """The checked configuration and the source tensors (tied softmax copies filled in)."""
    given = _check_args(model_args)
    src = _split_prefix(state_dict)
    found, source = _read_shapes(src.tensors)
    args = {**found, **given}
    missing = [name for name in _STRUCTURE if name not in args]
    if missing:
        raise _cannot_infer(missing, found, src)
    if "d_embed" not in given and args["d_embed"] == args["d_model"]:
        args["d_embed"] = None  # the ModelConfig spelling of "as d_model"
    hint = _hint(given, found, source)
    try:
        cfg = ModelConfig(**args)
    except ModelConfigError as err:
        raise ConversionError(
            f"the tensors and arguments give no valid model: {err}{hint}"
        ) from err

    _drop_identity_projs(src, cfg)
    expected = _expected_shapes(cfg)
    cfg = _resolve_ties(src, cfg, given)
    weights, projs = _tie_pairs(cfg)
    tied = (weights if cfg.tie_weight else []) + [
        pair for pair, flag in zip(projs, cfg.projs_tied) if flag
    ]

    _check_keys(src, cfg, expected, tied, hint)
    _check_shapes_and_ties(src, cfg, expected, tied, hint)
    return cfg, src


def _check_keys(src: _Source, cfg: ModelConfig, expected: dict, tied: list, hint: str) -> None:
    """Every expected key present (but the buffer and tied softmax copies), none other."""
    t = src.tensors
    optional = {INV_FREQ} | {out for out, _ in tied}
    absent = [src.show(k) for k in expected if k not in t and k not in optional]
    extra = [src.show(k) for k in t if k not in expected] + src.stray
    if absent or extra:
        parts = []
        if absent:
            parts.append(f"missing keys: {_listing(absent)}")
        if extra:
            parts.append(f"unexpected keys: {_listing(extra)}")
            if any(_OUT_PROJ.fullmatch(k) for k in extra) and not _tie_pairs(cfg)[1]:
                parts.append(
                    "(a div_val 1 model with d_embed == d_model has no softmax projection, "
                    "and these are not identity matrices)"
                )
            if any(_rename(k, _OURS_TO_ORIGINAL) != k for k in extra):
                parts.append(
                    "(crit.out_proj_{i} / layers.{l}.r_w_bias are adan_txl's own names: load "
                    "such a state_dict with load_checkpoint or TransformerXL.load_state_dict)"
                )
        layout = "Hugging Face (prefix 'transformer.')" if src.prefix else "original"
        raise ConversionError(
            f"state_dict ({layout} layout) does not fit {cfg}: {'; '.join(parts)}{hint}"
        )


def _check_shapes_and_ties(
    src: _Source, cfg: ModelConfig, expected: dict, tied: list, hint: str
) -> None:
    """Every shape as expected, every tie intact; tied softmax copies filled in."""
    t = src.tensors
    for key, shape in expected.items():
        if key in t and tuple(t[key].shape) != shape:
            raise ConversionError(
                f"{src.show(key)}: expected shape {shape}, found {tuple(t[key].shape)}{hint}"
            )
    for out, emb in tied:
        if out in t and _tie_state(t, out, emb) == "different":
            if out.startswith("crit.out_layers"):
                fix = "tie_weight=False"
            else:
                projs = _tie_pairs(cfg)[1]
                flags = [flag and pair[0] != out for pair, flag in zip(projs, cfg.projs_tied)]
                fix = f"tie_projs={tuple(flags)}"
            raise ConversionError(
                f"broken tie: {src.show(out)} differs from {src.show(emb)}, which it is tied to "
                f"(tie_weight={cfg.tie_weight}, tie_projs={cfg.projs_tied}); if the model was "
                f"trained with them untied, pass {fix}"
            )
        t.setdefault(out, t[emb])


def original_config(state_dict: Mapping[str, Tensor], **model_args) -> ModelConfig:
    """The architecture of an original-format state_dict, with every key and shape checked.

    Read off the tensors: ``n_token``, ``n_layer``, ``n_head``/``d_head`` (the position
    biases), ``d_model``, ``d_inner``, ``d_embed``, ``untie_r`` (where the biases live),
    ``div_val`` and ``cutoffs`` (from the per-cluster tables when div_val > 1), and the ties
    (a softmax tensor absent or equal to the embedding's is tied; on meta tensors the
    defaults). ``model_args`` are :class:`ModelConfig` fields; they must agree with the
    tensors, and supply what cannot be read: ``cutoffs`` for div_val 1, and the dropouts.
    Works on meta tensors. Raises :class:`ConversionError`.
    """
    return _read(state_dict, model_args)[0]


def from_original(state_dict: Mapping[str, Tensor], **model_args) -> TransformerXL:
    """Our model, in eval mode, with the weights of an original ``MemTransformerLM``
    state_dict (``torch.load(f).state_dict()`` where the original code is importable), or of
    Hugging Face's ``TransfoXLLMHeadModel`` (body keys prefixed ``transformer.``).

    See :func:`original_config` for what is inferred and checked; in addition the stored
    ``pos_emb.inv_freq`` must match the one our model computes. The weights are copied into
    float32 parameters. Raises :class:`ConversionError` naming the key at fault.
    """
    cfg, src = _read(state_dict, model_args)
    model = TransformerXL(cfg)
    inv_freq = src.tensors.pop(INV_FREQ, None)
    if inv_freq is not None and not torch.allclose(
        inv_freq.cpu().float(), model.inv_freq, rtol=1e-3
    ):
        # rtol: a half-precision copy of the same buffer still passes.
        raise ConversionError(
            f"{src.show(INV_FREQ)} is not the sinusoid frequencies "
            f"1 / 10000**(2k / d_model) for d_model {cfg.d_model}"
        )
    ours = {_rename(k, _ORIGINAL_TO_OURS): v for k, v in src.tensors.items()}
    model.load_state_dict(ours, strict=True)
    return model.eval()


# ---- files -------------------------------------------------------------------------------
def save_checkpoint(model: TransformerXL, path: str | os.PathLike) -> None:
    """Write ``{"config": model.cfg.to_dict(), "model": model.state_dict()}`` to ``path``."""
    torch.save({"config": model.cfg.to_dict(), "model": model.state_dict()}, path)


def _config_args(config: object, path: object) -> dict:
    if not isinstance(config, Mapping) or not set(config) <= set(_MODEL_FIELDS):
        extra = sorted(set(config) - set(_MODEL_FIELDS)) if isinstance(config, Mapping) else []
        raise ConversionError(
            f"{path}: the 'config' entry is not a ModelConfig dict "
            f"(unknown fields {extra}); pass its 'model' state_dict to "
            f"from_original with the model arguments instead"
        )
    return dict(config)


def _has_our_names(state: Mapping[str, Tensor]) -> bool:
    return any(_rename(k, _OURS_TO_ORIGINAL) != k for k in state)


def load_checkpoint(path: str | os.PathLike, **model_args) -> TransformerXL:
    """Our model, in eval mode, from a file holding one of:

    - our checkpoint, ``{"config": ..., "model": state_dict}`` (:func:`save_checkpoint`);
      ``model_args`` then override the saved config (and must still fit the tensors);
    - a dict with the state_dict under ``"model"``, ``"state_dict"`` or ``"model_state_dict"``;
    - a bare state_dict: the original's (or Hugging Face's), or our ``TransformerXL``'s.

    State dicts without a config go through :func:`from_original` (so ``model_args`` supply
    what cannot be inferred, e.g. ``cutoffs`` for div_val 1). The file is read with
    ``weights_only=True``; the original's own ``model.pt`` is a pickled module and must first be
    turned into a state_dict (the error says how).
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConversionError(
            f"{path} holds more than tensors and plain containers ({reason}).\n{RECIPE}"
        ) from err
    if isinstance(obj, Mapping) and "config" in obj and "model" in obj:
        saved = _config_args(obj["config"], path)
        state = obj["model"]
        if isinstance(state, Mapping) and _has_our_names(state):
            state = {_rename(k, _OURS_TO_ORIGINAL): v for k, v in state.items()}
        return from_original(state, **{**saved, **_check_args(model_args)})
    state = obj
    if isinstance(obj, Mapping):
        for entry in STATE_ENTRIES:
            if isinstance(obj.get(entry), Mapping):
                state = obj[entry]
                break
    if not isinstance(state, Mapping) or not state:
        what = (
            f"a dict with keys {_listing([str(k) for k in obj])}"
            if isinstance(obj, Mapping)
            else type(obj).__name__
        )
        raise ConversionError(
            f"{path}: expected a state_dict or a dict with one under "
            f"{' / '.join(STATE_ENTRIES)}, found {what}"
        )
    if _has_our_names(state):
        state = {_rename(k, _OURS_TO_ORIGINAL): v for k, v in state.items()}
    return from_original(state, **model_args)
