"""An independent float64 Adan written from ADAN.md §4-§6, used only by the tests.

Deliberately plain: one Python loop per parameter, no code shared with the package. Each parameter
counts its own steps (the package's documented choice), and the clip factor uses the constructor's
eps over every gradient of every group.
"""

from __future__ import annotations

import math

import torch


class ReferenceAdan:
    def __init__(
        self,
        params,
        groups,
        max_grad_norm=0.0,
        clip_eps=1e-8,
        maximize=False,
        mode="none",
        gammas=(2.0, 8.0),
    ):
        """params: list of fp64 tensors; groups: list of (param indices, dict(lr, betas, eps, wd,
        no_prox)); mode: "none", or Win acceleration "win"/"win2" per WIN.md §7."""
        self.mode, self.gammas = mode, gammas
        self.x = [t.detach().double().clone() for t in params]
        self.y = [t.detach().double().clone() for t in params]
        self.p = [t.detach().double().clone() for t in params]
        self.groups = groups
        self.C = max_grad_norm
        self.clip_eps = clip_eps
        self.maximize = maximize
        self.m = [torch.zeros_like(t) for t in self.p]
        self.n = [torch.zeros_like(t) for t in self.p]
        self.d = [torch.zeros_like(t) for t in self.p]
        self.prev = [None] * len(self.p)
        self.t = [0] * len(self.p)

    def clip_coefficient(self, grads):
        total = sum(float((g.double() ** 2).sum()) for g in grads if g is not None)
        norm = math.sqrt(total)
        return min(1.0, self.C / (norm + self.clip_eps)) if self.C > 0 else 1.0

    def step(self, grads, grad_divisor=1.0):
        grads = [None if g is None else g.double() / grad_divisor for g in grads]
        c = self.clip_coefficient(grads)
        for idx, hp in self.groups:
            b1, b2, b3 = hp["betas"]
            lr, eps, wd = hp["lr"], hp["eps"], hp["wd"]
            for i in idx:
                if grads[i] is None:
                    continue
                g = c * grads[i]
                if self.maximize:
                    g = -g
                self.t[i] += 1
                t = self.t[i]
                delta = torch.zeros_like(g) if t == 1 else g - self.prev[i]
                self.m[i] = (1 - (1 - b1)) * self.m[i] + (1 - b1) * g
                self.d[i] = b2 * self.d[i] + (1 - b2) * delta
                self.n[i] = b3 * self.n[i] + (1 - b3) * (g + b2 * delta) ** 2
                m_hat = self.m[i] / (1 - b1**t)
                d_hat = self.d[i] / (1 - b2**t)
                n_hat = self.n[i] / (1 - b3**t)
                step_dir = (m_hat + b2 * d_hat) / (n_hat.sqrt() + eps)
                if self.mode != "none":
                    self._win(i, step_dir, lr, wd)
                elif hp["no_prox"]:
                    self.p[i] = self.p[i] * (1 - lr * wd) - lr * step_dir
                else:
                    self.p[i] = (self.p[i] - lr * step_dir) / (1 + lr * wd)
                self.prev[i] = g.clone()

    def _win(self, i, u, lr, wd):
        """WIN.md §7: x is Adan's proximal step; p (and y) are the reckless sequences."""
        g1, g2 = self.gammas
        self.x[i] = (self.x[i] - lr * u) / (1 + lr * wd)
        if self.mode == "win":
            self.p[i] = (self.p[i] + g1 * self.x[i] - g1 * lr * u) / (1 + g1 + g1 * lr * wd)
            return
        self.y[i] = (self.y[i] + g1 * self.x[i] - g1 * lr * u) / (1 + g1 + g1 * lr * wd)
        numerator = self.p[i] + g2 * self.x[i] + (g2 / g1) * self.y[i] - g2 * lr * u
        self.p[i] = numerator / (1 + g2 + g2 / g1 + g2 * lr * wd)

    def restart(self):
        for i in range(len(self.p)):
            self.m[i].zero_()
            self.n[i].zero_()
            self.d[i].zero_()
            self.t[i] = 0


def hp(lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, wd=0.0, no_prox=False):
    return dict(lr=lr, betas=betas, eps=eps, wd=wd, no_prox=no_prox)
