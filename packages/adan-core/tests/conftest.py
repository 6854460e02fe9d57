"""Shared fixtures: the implementation paths every behaviour is checked on."""

from __future__ import annotations

import os

# The fused Triton kernel runs on CPU tensors only in interpreter mode, which must be set before
# Triton is imported. tox sets it too; this keeps a bare `pytest` run equivalent.
os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib.util  # noqa: E402

import pytest  # noqa: E402

HAS_TRITON = importlib.util.find_spec("triton") is not None

# name -> constructor flags selecting that implementation on CPU
PATH_FLAGS = {
    "single": dict(foreach=False),
    "foreach": dict(foreach=True),
    "fused": dict(fused=True),
    "cpu_fused": dict(),  # the default on CPU: compiled one-pass kernel
}


def path_params(*names):
    names = names or tuple(PATH_FLAGS)
    out = []
    for name in names:
        marks = []
        if name == "fused" and not HAS_TRITON:
            marks.append(
                pytest.mark.skip(reason="triton is not installed: fused path not testable")
            )
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.fixture
def chosen_impl(monkeypatch):
    """Records which implementation each bucket of each Adan step actually ran."""
    import adan_core.functional as functional

    seen: list[str] = []
    original = functional.choose_impl

    def spy(*args, **kwargs):
        impl, note = original(*args, **kwargs)
        seen.append(impl)
        return impl, note

    monkeypatch.setattr(functional, "choose_impl", spy)
    return seen
