"""Independent float64 reference of the Win optimizers, written from WIN.md (not from adan_core).

One parameter at a time, one formula per line, no foreach, no folding of bias corrections: this
file is deliberately the most literal reading of WIN.md §1-§3 (with the project's [ours] rules:
constructor eps for clipping, C <= 0 / None = no clipping, per-parameter step counters).

The tests in this file check the reference itself against the fixed values of WIN.md §8, so the
comparisons in test_win_math.py compare the production code with a validated oracle.
"""

from __future__ import annotations

import math

import pytest
import torch

DEFAULTS = {
    "adamw": dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, max_grad_norm=0.0
    ),
    "adam": dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, max_grad_norm=0.0
    ),
    "lamb": dict(
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-6,
        weight_decay=0.01,
        bias_correction=True,
        grad_averaging=True,
        max_grad_norm=1.0,
        trust_clip=False,
        always_adapt=False,
    ),
    "sgd": dict(
        momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=True, eps=1e-8, max_grad_norm=0.0
    ),
}
for _d in DEFAULTS.values():
    _d.update(reckless_steps=(2.0, 8.0), acceleration_mode="win")


class ReferenceWin:
    """Float64 reference. ``groups``: list of dicts with "params" (list of tensors) + options."""

    def __init__(self, kind: str, groups: list[dict], **constructor):
        self.kind = kind
        self.defaults = {**DEFAULTS[kind], **constructor}
        self.groups = []
        for g in groups:
            full = {**self.defaults, **g}
            full["params"] = [p.detach().clone().double() for p in g["params"]]
            self.groups.append(full)
        self.state: dict[tuple[int, int], dict] = {}

    def params(self) -> list[torch.Tensor]:
        return [p for g in self.groups for p in g["params"]]

    def _clip_factor(self, grads: list[torch.Tensor]) -> float:
        c = self.defaults["max_grad_norm"]
        if c is None or c <= 0:
            return 1.0
        norm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in grads))
        if self.kind == "lamb":  # g / (G/C) when G > C, no eps
            return 1.0 / (norm / c) if norm > c else 1.0
        return min(c / (norm + self.defaults["eps"]), 1.0)

    def step(self, grads: list[list[torch.Tensor | None]]) -> None:
        """``grads[i][j]``: gradient of param j of group i (None = no grad this step)."""
        flat = [g for gs in grads for g in gs if g is not None]
        c = self._clip_factor(flat)
        for gi, (group, ggrads) in enumerate(zip(self.groups, grads)):
            for pj, (p, g) in enumerate(zip(group["params"], ggrads)):
                if g is None:
                    continue
                g = g.double() * c
                key = (gi, pj)
                if key not in self.state:
                    self.state[key] = {"t": 0, "x": p.clone(), "y": p.clone()}
                st = self.state[key]
                st["t"] += 1
                u, lam_p = getattr(self, "_direction_" + self.kind)(group, p, g, st)
                if u is None:  # mode "none" already applied its own update
                    continue
                self._core(group, p, st, u, lam_p)

    # --- WIN.md §1: the shared core, written as in the spec
    @staticmethod
    def _core(group, p, st, u, lam):
        eta = group["lr"]
        g1, g2 = group["reckless_steps"]
        x = (st["x"] - eta * u) / (1 + eta * lam)
        st["x"] = x
        if group["acceleration_mode"] == "win":
            y = (p + g1 * x - g1 * eta * u) / (1 + g1 + g1 * eta * lam)
            p.copy_(y)
        else:
            y = (st["y"] + g1 * x - g1 * eta * u) / (1 + g1 + g1 * eta * lam)
            st["y"] = y
            z = (p + g2 * x + (g2 / g1) * y - g2 * eta * u) / (1 + g2 + g2 / g1 + g2 * eta * lam)
            p.copy_(z)

    @staticmethod
    def _moments(group, g, st):
        b1, b2 = group["betas"]
        st["m"] = b1 * st.get("m", torch.zeros_like(g)) + (1 - b1) * g
        st["v"] = b2 * st.get("v", torch.zeros_like(g)) + (1 - b2) * g * g
        v = st["v"]
        if group.get("amsgrad"):
            st["vmax"] = torch.maximum(st.get("vmax", torch.zeros_like(g)), v)
            v = st["vmax"]
        return st["m"], v, 1 - b1 ** st["t"], 1 - b2 ** st["t"]

    # --- WIN.md §2.1
    def _direction_adamw(self, group, p, g, st):
        m, v, bc1, bc2 = self._moments(group, g, st)
        denom = torch.sqrt(v) / math.sqrt(bc2) + group["eps"]
        eta, lam = group["lr"], group["weight_decay"]
        if group["acceleration_mode"] == "none":
            p.mul_(1 - eta * lam)
            p.sub_((eta / bc1) * m / denom)
            return None, None
        return (m / denom) / bc1, lam

    # --- WIN.md §2.2
    def _direction_adam(self, group, p, g, st):
        g = g + group["weight_decay"] * p
        m, v, bc1, bc2 = self._moments(group, g, st)
        denom = torch.sqrt(v) + group["eps"]
        if group["acceleration_mode"] == "none":
            p.sub_(group["lr"] * (math.sqrt(bc2) / bc1) * m / denom)
            return None, None
        return (m / denom) * math.sqrt(bc2) / bc1, 0.0

    # --- WIN.md §2.3
    def _direction_lamb(self, group, p, g, st):
        b1, b2 = group["betas"]
        t = st["t"]
        bc1, bc2 = (1 - b1**t, 1 - b2**t) if group["bias_correction"] else (1.0, 1.0)
        b3 = 1 - b1 if group["grad_averaging"] else 1.0
        st["m"] = b1 * st.get("m", torch.zeros_like(g)) + b3 * g
        st["v"] = b2 * st.get("v", torch.zeros_like(g)) + (1 - b2) * g * g
        u = (st["m"] / bc1) / (torch.sqrt(st["v"]) / math.sqrt(bc2) + group["eps"])
        lam = group["weight_decay"]
        if lam != 0:
            u = u + lam * p
        if lam != 0 or group["always_adapt"]:
            wn, un = float(p.norm()), float(u.norm())
            r = wn / un if wn > 0 and un > 0 else 1.0
            if group["trust_clip"]:
                r = min(r, 1.0)
            u = r * u
        if group["acceleration_mode"] == "none":
            p.sub_(group["lr"] * u)
            return None, None
        return u, 0.0

    # --- WIN.md §2.4
    def _direction_sgd(self, group, p, g, st):
        mu, damp, lam = group["momentum"], group["dampening"], group["weight_decay"]
        none = group["acceleration_mode"] == "none"
        if none and lam != 0:
            g = g + lam * p
        st["b"] = g.clone() if st["t"] == 1 else mu * st["b"] + (1 - damp) * g
        u = g + mu * st["b"] if group["nesterov"] else st["b"]
        if none:
            p.sub_(group["lr"] * u)
            return None, None
        return u, lam


# ---------------------------------------------------------------------------------------------
# WIN.md §8: p0 = [1, -2, 0.5], grad = a*p + b, lr 0.1, weight_decay 0.1, (2, 8), float64.
P0 = [1.0, -2.0, 0.5]
A = [1.0, 2.0, 0.5]
B = [0.1, -0.2, 0.3]

SECTION8 = {
    # (kind, mode, extra constructor kwargs): {"p1", "p3", "x3", "y3"}
    ("adamw", "none", ()): dict(
        p1=[0.8900000009, -1.8800000002, 0.3950000018],
        p3=[0.6748629719, -1.6443210675, 0.1896105934],
    ),
    ("adamw", "win", ()): dict(
        p1=[0.8550259011, -1.8418464366, 0.3616156342],
        p3=[0.628087298, -1.5925205897, 0.1449272771],
        x3=[0.6786405331, -1.6480421922, 0.1931966754],
    ),
    ("adamw", "win2", ()): dict(
        p1=[0.821774961, -1.8055726835, 0.3298761007],
        p3=[0.6017131386, -1.5629198819, 0.1197112906],
        x3=[0.6791737514, -1.6482432421, 0.1936850851],
        y3=[0.6287467895, -1.5927684658, 0.1455311187],
    ),
    ("adamw", "win", (("max_grad_norm", 0.5),)): dict(
        p3=[0.6262651127, -1.5912517484, 0.1431652391]
    ),
    ("adam", "none", ()): dict(
        p1=[0.9000000264, -1.9000000072, 0.4000000527],
        p3=[0.7013989732, -1.7005882731, 0.2015863953],
    ),
    ("adam", "win", ()): dict(
        p1=[0.8666667018, -1.8666666762, 0.3666667369],
        p3=[0.6543285901, -1.6528452727, 0.1546835339],
        x3=[0.701949193, -1.7007826004, 0.2022280434],
    ),
    ("adam", "win2", ()): dict(
        p1=[0.8358974791, -1.8358974477, 0.3358975224],
        p3=[0.6293265529, -1.6271454359, 0.1298611907],
        x3=[0.7024252649, -1.7009410466, 0.2027882965],
        y3=[0.6549184727, -1.653040965, 0.1553781575],
    ),
    ("lamb", "none", ()): dict(
        p1=[0.8698895935, -1.8580609846, 0.3758041948],
        p3=[0.6436637056, -1.6105038892, 0.159798959],
    ),
    ("lamb", "win", ()): dict(
        p1=[0.826519458, -1.8107479795, 0.3344055931],
        p3=[0.5996819763, -1.5620167252, 0.11776734],
        x3=[0.6517652612, -1.6191021092, 0.1675067189],
    ),
    ("lamb", "win2", ()): dict(
        p1=[0.7864854867, -1.7670744362, 0.2961914992],
        p3=[0.5809552166, -1.5411297724, 0.0998441819],
        x3=[0.6575349891, -1.6252103184, 0.1729926974],
        y3=[0.6065890343, -1.5693253705, 0.1243341835],
    ),
    ("sgd", "none", ()): dict(
        p1=[0.772, -1.164, 0.386], p3=[0.207746332, 0.389552836, 0.065647256]
    ),
    ("sgd", "win", ()): dict(
        p1=[0.7113697462, -0.9219198741, 0.3556848731],
        p3=[0.167750229, 0.3934341394, 0.0277714367],
        x3=[0.2853886368, 0.0994085585, 0.0982882151],
    ),
    ("sgd", "win2", ()): dict(
        p1=[0.6451701468, -0.6746537902, 0.3225850734],
        p3=[0.1398270399, 0.3334052588, -0.0031140032],
        x3=[0.3123524186, -0.0509260666, 0.1058981784],
        y3=[0.2008842197, 0.2139244404, 0.0372117065],
    ),
    ("sgd", "win2", (("max_grad_norm", 0.5),)): dict(
        p3=[0.8295109827, -1.4346078419, 0.4130575839]
    ),
}


def section8_grad(p: torch.Tensor) -> torch.Tensor:
    return torch.tensor(A, dtype=torch.float64) * p.detach() + torch.tensor(B, dtype=torch.float64)


@pytest.mark.parametrize("case", list(SECTION8), ids=lambda c: f"{c[0]}-{c[1]}-{dict(c[2])}")
def test_reference_reproduces_section8(case):
    kind, mode, extra = case
    ref = ReferenceWin(
        kind,
        [{"params": [torch.tensor(P0, dtype=torch.float64)]}],
        lr=0.1,
        weight_decay=0.1,
        acceleration_mode=mode,
        **dict(extra),
    )
    got = {}
    for k in range(3):
        p = ref.params()[0]
        ref.step([[section8_grad(p)]])
        if k == 0:
            got["p1"] = p.tolist()
    got["p3"] = ref.params()[0].tolist()
    st = ref.state[(0, 0)]
    got["x3"], got["y3"] = st["x"].tolist(), st["y"].tolist()
    for name, want in SECTION8[case].items():
        assert got[name] == pytest.approx(want, abs=1e-10), name
