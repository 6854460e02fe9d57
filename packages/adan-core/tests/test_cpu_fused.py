"""The compiled CPU path (`_cpu_fused`) called directly with hand-built buckets.

Every bucket is checked one step at a time against the float64 reference in ``reference_adan``:
before each step the reference is loaded with our current tensors (read exactly as float64), so
the only differences left are fp32 math and the one rounding of each result into its storage.
"""

from __future__ import annotations

import logging

import pytest
import torch
from reference_adan import ReferenceAdan, hp

import adan_core._cpu_fused as cf
from adan_core import Adan
from adan_core.functional import AdanHyper

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
LR, WD, BETAS, EPS = 1e-2, 0.02, (0.98, 0.92, 0.99), 1e-8
# small ones go to a pack; the last two take the large-tensor path
SIZES = (1, 5, 300, 1000, cf.SMALL_NUMEL, cf.SMALL_NUMEL + 3)


class Bucket:
    """One bucket as the dispatcher hands it over: params P, grads G, states S, neg_pre_grad N."""

    def __init__(self, sizes, dtypes, steps=None, seed=0):
        p_dt, g_dt, s_dt, n_dt = dtypes
        self.gen = torch.Generator().manual_seed(seed)
        self.g_dt = g_dt
        self.params = [torch.randn(n, generator=self.gen).to(p_dt) for n in sizes]
        self.m = [(0.1 * torch.randn(n, generator=self.gen)).to(s_dt) for n in sizes]
        self.n = [(0.01 * torch.rand(n, generator=self.gen)).to(s_dt) for n in sizes]
        self.d = [(0.01 * torch.randn(n, generator=self.gen)).to(s_dt) for n in sizes]
        self.neg = [torch.randn(n, generator=self.gen).to(n_dt) for n in sizes]
        steps = steps if steps is not None else [0] * len(sizes)
        self.steps = [torch.tensor(float(s)) for s in steps]
        self.cache: dict = {}
        self.new_grads()

    def new_grads(self):
        self.grads = [torch.randn(p.shape, generator=self.gen).to(self.g_dt) for p in self.params]

    def lists(self, idx=None):
        idx = range(len(self.params)) if idx is None else idx
        seqs = (self.params, self.grads, self.m, self.n, self.d, self.neg, self.steps)
        return [[seq[i] for i in idx] for seq in seqs]

    def step(self, idx=None, lr=LR, grad_mul=None):
        hyper = AdanHyper(lr, BETAS, EPS, WD, no_prox=False)
        cf.cpu_fused_adan(*self.lists(idx), hyper, grad_mul, cache=self.cache)

    def snapshot(self):
        return [[t.clone() for t in seq] for seq in self.lists()]


def _reference_from(bucket: Bucket) -> ReferenceAdan:
    """A float64 reference holding exactly the bucket's current values."""
    ref = ReferenceAdan(bucket.params, [(list(range(len(bucket.params))), hp(LR, BETAS, EPS, WD))])
    for i in range(len(bucket.params)):
        ref.m[i] = bucket.m[i].double()
        ref.n[i] = bucket.n[i].double()
        ref.d[i] = bucket.d[i].double()
        ref.prev[i] = -bucket.neg[i].double()
        ref.t[i] = int(bucket.steps[i])
    return ref


def _tol(dtype):
    """One rounding into ``dtype`` after fp32 math."""
    return {F32: dict(rtol=2e-5, atol=1e-7), BF16: dict(rtol=8e-3, atol=1e-6)}.get(
        dtype, dict(rtol=1.5e-3, atol=1e-7)
    )


def _check_one_step(bucket: Bucket) -> None:
    ref = _reference_from(bucket)
    bucket.step()
    ref.step(bucket.grads)
    for i in range(len(bucket.params)):
        pairs = (
            (bucket.params[i], ref.p[i]),
            (bucket.m[i], ref.m[i]),
            (bucket.n[i], ref.n[i]),
            (bucket.d[i], ref.d[i]),
            (bucket.neg[i], -ref.prev[i]),
        )
        for ours, want in pairs:
            torch.testing.assert_close(ours.double(), want, **_tol(ours.dtype))
        assert float(bucket.steps[i]) == ref.t[i]


# --- 1. every role keeps its own dtype ---------------------------------------------------


@pytest.mark.parametrize(
    "dtypes",
    [(BF16, BF16, F32, F32), (F16, F16, F32, F32), (BF16, F32, F32, F32)],
    ids=["bf16-fp32state", "fp16-fp32state", "bf16-fp32grad"],
)
def test_low_precision_params_with_fp32_state_match_the_reference(dtypes):
    bucket = Bucket(SIZES, dtypes)
    for _ in range(4):
        bucket.new_grads()
        _check_one_step(bucket)
    p_dt, _, s_dt, n_dt = dtypes
    roles = ((bucket.params, p_dt), (bucket.m, s_dt), (bucket.n, s_dt), (bucket.d, s_dt))
    for seq, dtype in (*roles, (bucket.neg, n_dt)):
        assert all(t.dtype == dtype for t in seq)
    # the small tensors' states really are packed, in their own dtype
    small = [i for i, n in enumerate(SIZES) if n < cf.SMALL_NUMEL]
    storages = {bucket.m[i].untyped_storage().data_ptr() for i in small}
    assert len(storages) == 1


def test_model_cast_to_bf16_after_some_steps_keeps_fp32_state():
    """Issue item 1: ``model.to(torch.bfloat16)`` mid-training used to crash inside the pack.
    With state_dtype=float32 the fp32 state is kept (without it, the optimizer casts the state to
    bf16 with a warning: test_adan_hardening)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4))
    opt = Adan(model.parameters(), lr=LR, weight_decay=WD, state_dtype=torch.float32)
    x = torch.randn(5, 8)
    for _ in range(2):
        model(x).square().sum().backward()
        opt.step()
        opt.zero_grad()
    model.to(torch.bfloat16)
    for _ in range(3):
        model(x.bfloat16()).float().square().sum().backward()
        opt.step()
        opt.zero_grad()
    for p in model.parameters():
        assert p.dtype == BF16 and opt.state[p]["exp_avg"].dtype == F32
        assert torch.isfinite(p.float()).all() and float(opt.state[p]["step"]) == 5


def test_states_of_one_parameter_that_disagree_raise_a_type_error():
    bucket = Bucket((4, 7), (F32, F32, F32, F32))
    bucket.n[1] = bucket.n[1].to(BF16)
    before = bucket.snapshot()
    with pytest.raises(TypeError, match="exp_avg_sq"):
        bucket.step()
    for old, new in zip(before, bucket.lists()):
        assert all(torch.equal(a, b) for a, b in zip(old, new))


def test_fp64_is_refused_with_a_type_error():
    bucket = Bucket((4,), (torch.float64, torch.float64, torch.float64, torch.float64))
    with pytest.raises(TypeError, match="float64"):
        bucket.step()


def test_dtype_keys_and_tiny_packs_stay_within_the_recompile_limit(monkeypatch):
    """Each dtype key compiles apart, and a pack of one scalar (or nothing) is padded: with
    Dynamo allowed one entry per function, nothing here may recompile."""
    monkeypatch.setattr(cf, "_compiled", {})
    monkeypatch.setattr(cf, "_probed", set())
    monkeypatch.setattr(cf, "_compile_failed", None)  # a failure here must not leak out
    with torch._dynamo.config.patch(recompile_limit=1):
        for dtypes in [(F32, F32, F32, F32), (BF16, BF16, F32, F32)]:
            for sizes in [(1,), (0,), (3, 4), (5, cf.SMALL_NUMEL)]:
                bucket = Bucket(sizes, dtypes)
                for p in bucket.params:
                    p.requires_grad_(True)  # real params: must not fail a guard of the probe
                _check_one_step(bucket)


# --- 2. nothing changes unless the update runs --------------------------------------------


def test_a_failing_kernel_changes_no_tensor_and_no_step(monkeypatch):
    bucket = Bucket(SIZES, (F32, F32, F32, F32), steps=[3] * len(SIZES))
    bucket.step()  # compiled, packed, ready
    before = bucket.snapshot()

    def broken(*tensors):
        raise RuntimeError("simulated kernel failure")

    monkeypatch.setattr(cf, "_serial_failed", False)
    monkeypatch.setitem(cf._compiled, True, broken)
    monkeypatch.setitem(cf._compiled, False, broken)
    for idx in ([0, 1, 2, 3], [4, 5], None):  # packed only, large only, both
        with pytest.raises(RuntimeError, match="simulated"):
            bucket.step(idx)
        for old, new in zip(before, bucket.lists()):
            assert all(torch.equal(a, b) for a, b in zip(old, new))


def test_steps_are_read_before_and_incremented_after_the_update():
    bucket = Bucket(SIZES, (F32, F32, F32, F32), steps=[0, 0, 5, 5, 0, 5])
    _check_one_step(bucket)  # t = step + 1 per tensor, as the reference counts
    assert [float(s) for s in bucket.steps] == [1, 1, 6, 6, 1, 6]


# --- 3. pack cache ------------------------------------------------------------------------


def _count_pack_builds(monkeypatch) -> list[int]:
    builds: list[int] = []
    original = cf._SmallPack.__init__

    def spy(self, *args, **kwargs):
        builds.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(cf._SmallPack, "__init__", spy)
    return builds


def test_a_late_parameter_costs_a_constant_number_of_pack_builds(monkeypatch):
    builds = _count_pack_builds(monkeypatch)
    bucket = Bucket((3, 10, 20, 40), (F32, F32, F32, F32), steps=[4, 4, 4, 0])
    for _ in range(6):
        bucket.new_grads()
        _check_one_step(bucket)
    assert len(builds) == 2  # one pack per step count, each built once
    assert len(bucket.cache) == 2


def _state_storage_bytes(bucket: Bucket) -> tuple[int, int]:
    """(bytes of the distinct storages the states live in, bytes the states need)."""
    states = [t for seq in (bucket.m, bucket.n, bucket.d, bucket.neg) for t in seq]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in states}
    return sum(storages.values()), sum(t.nbytes for t in states)


def test_changing_membership_keeps_memory_bounded():
    sizes = tuple(range(2, 14))  # no 1-element pack: it would be padded
    bucket = Bucket(sizes, (F32, F32, F32, F32))
    gen = torch.Generator().manual_seed(5)
    for _ in range(20):
        # a different subset of params has grads every step
        count = 4 + int(torch.randint(7, (1,), generator=gen))
        idx = sorted(torch.randperm(len(sizes), generator=gen)[:count].tolist())
        bucket.new_grads()
        bucket.step(idx)
        # at most one pack per parameter, whatever happened before (step counts drift apart)
        assert len(bucket.cache) <= len(sizes)
        held, needed = _state_storage_bytes(bucket)
        assert held == needed  # no state keeps an old pack's buffer alive


# --- 4. compile notice --------------------------------------------------------------------


def test_the_compile_notice_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(cf, "_probed", set())
    monkeypatch.setattr(cf, "_notice_given", False, raising=False)
    with caplog.at_level(logging.INFO, logger="adan_core"):
        assert cf.ready({(F32, F32, F32, F32), (BF16, BF16, F32, F32)})
        assert cf.ready({(F16, F16, F32, F32)})
        Bucket((3, 4), (F32, F32, F32, F32)).step()
    notices = [r for r in caplog.records if "compil" in r.getMessage()]
    assert len(notices) == 1
    assert notices[0].levelno == logging.INFO and notices[0].name.startswith("adan_core")
    assert "once" in notices[0].getMessage() and "disk" in notices[0].getMessage()
