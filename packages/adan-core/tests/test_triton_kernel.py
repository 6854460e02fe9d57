"""The fused Triton kernel called directly: dtypes per role, the step rule, device checks,
readiness probes, the full-block/tail split and the tensor-lr branch.

Runs on CPU through ``TRITON_INTERPRET=1`` (set by conftest). The PTX check compiles for a CUDA
target offline in a subprocess, because the interpreter replaces ``triton.jit`` in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from reference_adan import ReferenceAdan, hp

pytest.importorskip("triton")

import adan_core._triton_adan as tk  # noqa: E402
from adan_core.functional import AdanHyper  # noqa: E402

F32, BF16, F16 = torch.float32, torch.bfloat16, torch.float16
# Relative size of one rounding into storage, with slack for fp32 math before it.
ULP = {F32: 2e-6, BF16: 1e-2, F16: 1.5e-3}
BETAS = (0.98, 0.92, 0.99)


class Bucket:
    """Hand-built tensors for one ``fused_adan`` call, with per-role dtypes."""

    def __init__(self, sizes, dtypes, seed=0, steps_from=0.0):
        self.P, self.G, self.S, self.N = dtypes
        self.gen = torch.Generator().manual_seed(seed)
        self.params = [torch.randn(n, generator=self.gen).to(self.P) for n in sizes]
        self.m = [torch.zeros(n, dtype=self.S) for n in sizes]
        self.n = [torch.zeros(n, dtype=self.S) for n in sizes]
        self.d = [torch.zeros(n, dtype=self.S) for n in sizes]
        self.neg = [torch.zeros(n, dtype=self.N) for n in sizes]
        self.steps = [torch.tensor(steps_from) for _ in sizes]
        self.grads: list[torch.Tensor] = []

    def new_grads(self):
        self.grads = [torch.randn(p.shape, generator=self.gen).to(self.G) for p in self.params]
        return self.grads

    def lists(self):
        return self.params, self.grads, self.m, self.n, self.d, self.neg, self.steps

    def all_tensors(self):
        return [t for seq in self.lists() for t in seq]

    def run(self, lr=1e-2, wd=0.02, no_prox=False, grad_mul=None, found_inf=None):
        hyper = AdanHyper(lr, BETAS, 1e-8, wd, no_prox)
        tk.fused_adan(*self.lists(), hyper, grad_mul, found_inf)


def _check_steps_against_reference(bucket, steps=3, lr=1e-2, ref_lr=None, wd=0.02):
    """Each step must match the float64 reference to one rounding into each role's dtype; the
    reference is then resynchronised to the stored values so errors never accumulate."""
    ref_lr = lr if ref_lr is None else ref_lr
    ref = ReferenceAdan(bucket.params, [(list(range(len(bucket.params))), hp(lr=ref_lr, wd=wd))])
    for k in range(steps):
        grads = bucket.new_grads()
        bucket.run(lr=lr, wd=wd)
        ref.step(grads)
        for i, p in enumerate(bucket.params):
            assert bucket.steps[i].item() == k + 1
            u_p, u_s = ULP[bucket.P], ULP[bucket.S]
            torch.testing.assert_close(p.double(), ref.p[i], rtol=u_p, atol=u_p * 0.1)
            torch.testing.assert_close(bucket.m[i].double(), ref.m[i], rtol=u_s, atol=u_s * 0.1)
            torch.testing.assert_close(bucket.d[i].double(), ref.d[i], rtol=u_s, atol=u_s * 0.1)
            torch.testing.assert_close(bucket.n[i].double(), ref.n[i], rtol=2 * u_s, atol=1e-6)
            # One rounding into N (the interpreter's fp32 -> bf16 cast may truncate: 1 ulp).
            expect_neg = -grads[i].double()
            torch.testing.assert_close(
                bucket.neg[i].double(), expect_neg, rtol=ULP[bucket.N], atol=0
            )
            ref.p[i], ref.m[i] = p.double().clone(), bucket.m[i].double().clone()
            ref.n[i], ref.d[i] = bucket.n[i].double().clone(), bucket.d[i].double().clone()
            ref.prev[i] = -bucket.neg[i].double()


# --- 1. separate dtypes per role -------------------------------------------------------------

ROLE_DTYPES = [
    (BF16, BF16, F32, F32),  # bf16 model with Adan(state_dtype=torch.float32)
    (BF16, BF16, F32, BF16),  # fp32 state kept after model.to(torch.bfloat16)
    (F16, F16, F32, F32),
    (F16, F16, F32, F16),
    (F32, F32, BF16, BF16),  # fp32 params with bf16 state (loaded from a bf16 checkpoint)
    (F32, F32, BF16, F32),
    (F32, BF16, F32, BF16),  # fp32 master weights, bf16 grads
    (F32, F32, F32, F32),
]


@pytest.mark.parametrize("dtypes", ROLE_DTYPES, ids=lambda d: "-".join(str(x)[6:] for x in d))
def test_each_role_has_its_own_dtype(dtypes):
    _check_steps_against_reference(Bucket([1, 3, 1025, 2048], dtypes))


def test_one_call_with_several_state_dtypes_is_split_not_misread():
    plain, wide = (BF16, BF16, BF16, BF16), (BF16, BF16, F32, F32)
    a, b = Bucket([1030], plain, seed=1), Bucket([7], wide)
    ref_a, ref_b = Bucket([1030], plain, seed=1), Bucket([7], wide)
    for _ in range(2):
        ga, gb = a.new_grads(), b.new_grads()
        lists = [x + y for x, y in zip(a.lists(), b.lists())]
        tk.fused_adan(*lists, AdanHyper(1e-2, BETAS, 1e-8, 0.0, False), None, None)
        for ref, grads in ((ref_a, ga), (ref_b, gb)):
            ref.grads = grads
            ref.run(wd=0.0)
        together = a.all_tensors() + b.all_tensors()
        for x, y in zip(together, ref_a.all_tensors() + ref_b.all_tensors()):
            torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_states_of_one_parameter_in_different_dtypes_are_refused():
    bucket = Bucket([5], (F32, F32, F32, F32))
    bucket.n[0] = bucket.n[0].to(BF16)
    bucket.new_grads()
    before = [t.clone() for t in bucket.all_tensors()]
    with pytest.raises(TypeError, match=r"exp_avg.*torch.float32.*exp_avg_sq.*torch.bfloat16"):
        bucket.run()
    for x, y in zip(bucket.all_tensors(), before):
        assert torch.equal(x, y)


def test_unsupported_state_dtype_is_refused_by_name():
    bucket = Bucket([5], (F32, F32, torch.float64, F32))
    bucket.new_grads()
    with pytest.raises(TypeError, match=r"exp_avg.*torch.float64"):
        bucket.run()


def test_bytes_per_parameter_are_documented():
    doc = tk.__doc__
    for line in ("fp32 | fp32 | fp32 | fp32 | 44", "bf16 | bf16 | fp32 | fp32 | 38"):
        assert line in doc


# --- 2. the step rule: read, use step + 1, increment only after the launch --------------------


def _snapshot(bucket):
    return [t.clone() for t in bucket.all_tensors()]


def _assert_unchanged(bucket, before):
    for x, y in zip(bucket.all_tensors(), before):
        assert torch.equal(x, y)


def test_found_inf_skips_everything_and_leaves_steps():
    bucket = Bucket([3, 1030], (F32, F32, F32, F32), steps_from=4.0)
    bucket.new_grads()
    before = _snapshot(bucket)
    bucket.run(found_inf=torch.tensor(1.0))
    _assert_unchanged(bucket, before)
    bucket.run(found_inf=torch.tensor(0.0))
    assert [s.item() for s in bucket.steps] == [5.0, 5.0]
    assert not torch.equal(bucket.params[1], before[1])


def test_parameters_at_different_steps_use_their_own_step():
    """A late parameter (step 0, garbage previous gradient) next to one at step 4: each update
    uses t = its step + 1, and a first step ignores the previous gradient."""
    bucket = Bucket([9, 1030], (F32, F32, F32, F32), seed=2)
    for t in (*bucket.m, *bucket.d, *bucket.neg):
        t.normal_(generator=bucket.gen)
    for t in bucket.n:
        t.uniform_(0.5, 2.0, generator=bucket.gen)
    bucket.neg[0].fill_(123.0)
    bucket.steps[1].fill_(4.0)
    ref = ReferenceAdan(bucket.params, [([0, 1], hp(lr=1e-2, wd=0.02))])
    for i in range(2):
        ref.m[i], ref.n[i], ref.d[i] = (
            s[i].double().clone() for s in (bucket.m, bucket.n, bucket.d)
        )
        ref.prev[i] = -bucket.neg[i].double()
    ref.t = [0, 4]
    ref.step(bucket.new_grads())
    bucket.run()
    assert [s.item() for s in bucket.steps] == [1.0, 5.0]
    for i in range(2):
        torch.testing.assert_close(bucket.params[i].double(), ref.p[i], rtol=2e-6, atol=2e-7)
        torch.testing.assert_close(bucket.d[i].double(), ref.d[i], rtol=2e-6, atol=2e-7)


class _FailingKernel:
    """Stands in for the JIT function: compiling (warm-up or first launch) raises."""

    def __init__(self, fail_for=None):
        self.fail_for = fail_for
        self.calls = 0

    def _maybe_fail(self, constexprs):
        self.calls += 1
        if self.fail_for is None or constexprs.get("P_DTYPE") == self.fail_for:
            raise RuntimeError("CompilationError: ptxas fatal (test)\nsecond line of detail")

    def warmup(self, *args, grid, **constexprs):
        self._maybe_fail(constexprs)

    def __getitem__(self, grid):
        def launch(*args, **constexprs):
            self._maybe_fail(constexprs)

        return launch


def test_a_compile_error_changes_nothing(monkeypatch):
    monkeypatch.setattr(tk, "_adan_kernel", _FailingKernel())
    bucket = Bucket([3, 1030], (F32, F32, F32, F32), steps_from=2.0)
    bucket.new_grads()
    before = _snapshot(bucket)
    with pytest.raises(RuntimeError, match="ptxas fatal"):
        bucket.run(found_inf=torch.tensor(0.0))
    _assert_unchanged(bucket, before)


def test_a_compile_error_in_a_later_bucket_changes_nothing_in_earlier_ones(monkeypatch):
    """Every specialisation is compiled before any launch, so one dtype failing to compile
    cannot leave the other dtypes of the call updated with their steps not counted."""
    import triton.language as tl

    def compile_ahead(launch):
        if launch.constexprs["P_DTYPE"] == tl.bfloat16:
            raise RuntimeError("ptxas fatal (test)")

    monkeypatch.setattr(tk, "_compile_ahead", compile_ahead, raising=False)
    a, b = Bucket([1030], (F32, F32, F32, F32)), Bucket([5], (BF16, BF16, BF16, BF16))
    a.new_grads(), b.new_grads()
    lists = [x + y for x, y in zip(a.lists(), b.lists())]
    before = _snapshot(a) + _snapshot(b)
    with pytest.raises(RuntimeError, match="ptxas fatal"):
        tk.fused_adan(*lists, AdanHyper(1e-2, BETAS, 1e-8, 0.0, False), None, None)
    for x, y in zip(a.all_tensors() + b.all_tensors(), before):
        assert torch.equal(x, y)


# --- 3. device checks ------------------------------------------------------------------------


def test_scalars_are_moved_to_the_params_device():
    meta = torch.device("meta")
    moved = tk._scalar_on(torch.tensor(0.5), meta, "grad_mul")
    assert moved.device == meta and moved.dtype == F32
    as_fp32 = tk._scalar_on(torch.tensor(0.5, dtype=torch.float64), torch.device("cpu"), "lr")
    assert as_fp32.dtype == F32 and as_fp32.item() == 0.5
    same = torch.tensor(1.0)
    assert tk._scalar_on(same, torch.device("cpu"), "found_inf") is same
    assert tk._scalar_on(None, meta, "found_inf") is None
    with pytest.raises(ValueError, match="grad_mul must be a 0-d tensor"):
        tk._scalar_on(torch.ones(2), meta, "grad_mul")


def test_fused_adan_moves_found_inf_grad_mul_and_lr(monkeypatch):
    seen = []
    original = tk._scalar_on

    def spy(t, device, name):
        seen.append((name, device))
        return original(t, device, name)

    monkeypatch.setattr(tk, "_scalar_on", spy)
    bucket = Bucket([4], (F32, F32, F32, F32))
    bucket.new_grads()
    bucket.run(lr=torch.tensor(1e-2), grad_mul=torch.tensor(0.5), found_inf=torch.tensor(0.0))
    cpu = torch.device("cpu")
    assert {("lr", cpu), ("grad_mul", cpu), ("found_inf", cpu)} <= set(seen)


def test_steps_on_another_device_are_refused_before_anything_changes():
    bucket = Bucket([4], (F32, F32, F32, F32))
    bucket.new_grads()
    bucket.steps[0] = torch.zeros((), device="meta")
    before = [t.clone() for t in bucket.all_tensors() if t.device.type == "cpu"]
    with pytest.raises(
        ValueError,
        match=r"state_steps must be on the params' device \(cpu\); "
        r"got meta",
    ):
        bucket.run()
    for x, y in zip([t for t in bucket.all_tensors() if t.device.type == "cpu"], before):
        assert torch.equal(x, y)


def test_a_state_on_another_device_is_refused():
    bucket = Bucket([4], (F32, F32, F32, F32))
    bucket.new_grads()
    bucket.d[0] = torch.zeros(4, device="meta")
    with pytest.raises(ValueError, match=r"exp_avg_diff.*meta.*cpu"):
        bucket.run()


def test_steps_must_be_float32():
    bucket = Bucket([4], (F32, F32, F32, F32))
    bucket.new_grads()
    bucket.steps[0] = torch.tensor(0, dtype=torch.int64)
    with pytest.raises(TypeError, match="state_steps must be float32"):
        bucket.run()


# --- 4. devices Triton cannot serve, and the cached compile probe ------------------------------


@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA device of a chosen capability, without ever initialising CUDA."""

    def no_init(*args, **kwargs):
        raise AssertionError("the test must not initialise CUDA")

    monkeypatch.setattr(torch.cuda, "_lazy_init", no_init)
    capability = {"value": (8, 0)}

    def get_capability(device=None):
        assert torch.device(device) == torch.device("cuda", 0)
        return capability["value"]

    monkeypatch.setattr(torch.cuda, "get_device_capability", get_capability)
    return capability


def test_old_cuda_gpus_are_unavailable(fake_cuda):
    fake_cuda["value"] = (6, 1)
    reason = tk.unavailable_reason(torch.device("cuda", 0))
    assert "compute capability 6.1" in reason and "7.0" in reason
    fake_cuda["value"] = (7, 0)
    assert tk.unavailable_reason(torch.device("cuda", 0)) is None


def test_a_cuda_device_that_cannot_be_queried_is_unavailable(monkeypatch):
    def broken(device=None):
        raise RuntimeError("no driver (test)")

    monkeypatch.setattr(torch.cuda, "get_device_capability", broken)
    assert "no driver (test)" in tk.unavailable_reason(torch.device("cuda", 0))


def test_compile_failure_probe_succeeds_and_is_cached(monkeypatch):
    monkeypatch.setattr(tk, "_probe_cache", {}, raising=False)
    cpu = torch.device("cpu")
    assert tk.compile_failure(cpu, (BF16, BF16, F32, F32), lr_is_tensor=True) is None
    monkeypatch.setattr(tk, "_adan_kernel", _FailingKernel())
    assert tk.compile_failure(cpu, (BF16, BF16, F32, F32), lr_is_tensor=True) is None  # cached


def test_compile_failure_reports_the_first_line_once_per_key(monkeypatch):
    monkeypatch.setattr(tk, "_probe_cache", {}, raising=False)
    kernel = _FailingKernel()
    monkeypatch.setattr(tk, "_adan_kernel", kernel)
    cpu = torch.device("cpu")
    reason = tk.compile_failure(cpu, (F32, F32, F32, F32))
    assert reason == "RuntimeError: CompilationError: ptxas fatal (test)"
    calls = kernel.calls
    assert tk.compile_failure(cpu, (F32, F32, F32, F32)) == reason
    assert kernel.calls == calls
    tk.compile_failure(cpu, (F32, F32, F32, F32), has_found_inf=True, maximize=True)
    assert kernel.calls > calls  # another specialisation is probed on its own


def test_compile_failure_names_unsupported_dtypes(monkeypatch):
    monkeypatch.setattr(tk, "_probe_cache", {}, raising=False)
    reason = tk.compile_failure(torch.device("cpu"), (torch.float64, F32, F32, F32))
    assert "torch.float64" in reason


# --- 5. full blocks and tails, alignment ------------------------------------------------------

SIZES = [0, 1, 3, 1023, 1024, 1025, 4097, 5120, 65537]


def test_every_size_matches_the_reference():
    _check_steps_against_reference(Bucket(SIZES, (F32, F32, F32, F32)), steps=2)


def test_block_table_splits_full_aligned_blocks_from_tails():
    buf = torch.zeros(3000)
    aligned = torch.zeros(2500)
    odd = buf[1:2501]  # 4-byte storage offset: no 16-byte alignment
    assert aligned.data_ptr() % 16 == 0 and odd.data_ptr() % 16 != 0
    step = torch.zeros(())
    rows = [(t.data_ptr(),) * 6 + (step.data_ptr(),) for t in (aligned, odd)]
    _, _, blocks = tk._tables(rows, [2500, 2500], torch.device("cpu"))
    assert blocks.tolist() == [
        [0, 0, 1],
        [0, 1024, 1],
        [0, 2048, 0],  # tail of an aligned tensor: masked path
        [1, 0, 0],  # every block of an unaligned tensor: masked path
        [1, 1024, 0],
        [1, 2048, 0],
    ]


@pytest.mark.parametrize("offset", [1, 3, 4])
def test_a_slice_at_any_storage_offset_updates_only_its_bytes(offset):
    n = 4097
    gen = torch.Generator().manual_seed(offset)
    bufs = [torch.randn(n + 16, generator=gen) for _ in range(5)]
    keep = [b.clone() for b in bufs]
    views = [b[offset : offset + n] for b in bufs]
    bucket = Bucket([n], (F32, F32, F32, F32))
    bucket.params, bucket.m, bucket.n, bucket.d, bucket.neg = ([v] for v in views)
    bucket.n[0].uniform_(0.5, 2.0, generator=gen)  # a second moment is positive
    keep[2] = bufs[2].clone()
    ref = ReferenceAdan(bucket.params, [([0], hp(lr=1e-2, wd=0.02))])
    ref.m[0], ref.n[0], ref.d[0] = (v.double().clone() for v in views[1:4])
    ref.prev[0], ref.t[0] = -views[4].double(), 1
    bucket.steps[0].fill_(1.0)
    ref.step(bucket.new_grads())
    bucket.run()
    assert (views[0].data_ptr() % 16 == 0) == (offset == 4)  # 4: fast path; 1, 3: masked path
    torch.testing.assert_close(views[0].double(), ref.p[0], rtol=ULP[F32], atol=ULP[F32] * 0.1)
    torch.testing.assert_close(views[3].double(), ref.d[0], rtol=ULP[F32], atol=ULP[F32] * 0.1)
    for b, k in zip(bufs, keep):
        assert torch.equal(b[:offset], k[:offset]) and torch.equal(b[offset + n :], k[offset + n :])


# --- 6. the tensor-lr branch -----------------------------------------------------------------


def test_a_tensor_lr_is_read_on_the_device():
    bucket = Bucket([3, 1024, 1500], (F32, F32, F32, F32), seed=5)
    _check_steps_against_reference(bucket, steps=3, lr=torch.tensor(3e-2), ref_lr=3e-2)


def test_a_float64_tensor_lr_is_read_as_fp32():
    bucket = Bucket([1030], (BF16, BF16, F32, F32), seed=6)
    lr = torch.tensor(3e-2, dtype=torch.float64)
    _check_steps_against_reference(bucket, steps=2, lr=lr, ref_lr=3e-2)


# --- 5b. vector loads in the PTX, compiled offline for sm_90 ----------------------------------

_PTX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    try:
        import adan_core._triton_adan as tk
        out = {}
        for name in ("fp32", "bf16"):
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
            out[name] = tk.ptx_for((dtype,) * 4, capability=90)
    except Exception as err:  # no CUDA backend or ptxas here: report, the test skips
        print(json.dumps({"skip": f"{type(err).__name__}: {err}".splitlines()[0]}))
        sys.exit(0)
    print(json.dumps(out))
    """
)


def _global_access_counts(ptx: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in ptx.splitlines():
        for word in line.split():
            if word.startswith(("ld.global", "st.global")):
                counts[word] = counts.get(word, 0) + 1
    return counts


def test_full_blocks_compile_to_128_bit_loads_and_stores():
    src = Path(tk.__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="0", PYTHONPATH=str(src))
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    proc = subprocess.run(
        [sys.executable, "-c", _PTX_SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        print(f"PTX check skipped: {result['skip']}")
        pytest.skip(f"Triton cannot compile for sm_90 here: {result['skip']}")
    for name, ptx in result.items():
        counts = _global_access_counts(ptx)
        print(name, counts)
        # Six 128-bit loads (p, g, m, n, d, prev) and five 128-bit stores per thread-vector.
        assert counts.get("ld.global.v4.b32", 0) >= 6, (name, counts)
        assert counts.get("st.global.v4.b32", 0) >= 5, (name, counts)
