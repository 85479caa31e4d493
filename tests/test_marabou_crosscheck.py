"""Cross-check against Marabou (an independent complete verifier) on random small networks and L∞ boxes.

Never VERIFIED where Marabou finds a counterexample (itself re-checked by a forward pass); complete
branch and bound agrees with Marabou wherever both finish. The agreement counts are printed
(``pytest -s``) and kept in docs/verifier.md.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_nets import random_mlp

from pacverify.verify.api import verify_points
from pacverify.verify.result import PointVerdict

pytest.importorskip("maraboupy", reason="maraboupy (the pacverify[marabou] extra) is not installed")

CASES = [([2, 8, 8, 2], seed) for seed in range(5)] + [([3, 10, 3], seed) for seed in range(5)]
RADIUS = 0.25


def _marabou_cex_checked(net, x, radius, labels, result):
    """Marabou's counterexamples lie in the box and change the class in a float64 forward pass."""
    for i, cex in result.counterexamples.items():
        assert np.abs(cex - x[i]).max() <= radius * (1 + 1e-12)
        z = net(torch.from_numpy(cex)[None])[0]
        assert int(z.argmax()) != int(labels[i]) and float(z.max() - z[labels[i]]) > 0


def test_agreement_with_marabou():
    counts = {"points": 0, "marabou_sat": 0, "marabou_unsat": 0, "marabou_unknown": 0,
              "incomplete_verified": 0, "bab_agrees": 0, "bab_unknown": 0}
    for widths, seed in CASES:
        net = random_mlp(widths, seed)
        x = np.random.default_rng(seed).random((6, widths[0]))
        labels = net(torch.from_numpy(x)).argmax(1).numpy()
        marabou = verify_points(net, x, RADIUS, "inf", backend="marabou", attack=False, timeout=30)
        _marabou_cex_checked(net, x, RADIUS, labels, marabou)
        bab = verify_points(net, x, RADIUS, "inf", complete=True, timeout=30)
        incomplete = {m: verify_points(net, x, RADIUS, "inf", method=m, attack=False)
                      for m in ("ibp", "crown", "alpha-crown")}
        for i, truth in enumerate(marabou.verdicts):
            counts["points"] += 1
            counts[{"falsified": "marabou_sat", "verified": "marabou_unsat",
                    "unknown": "marabou_unknown"}[truth.value]] += 1
            for result in incomplete.values():
                assert not (truth is PointVerdict.FALSIFIED and result.verdicts[i] is PointVerdict.VERIFIED)
            counts["incomplete_verified"] += incomplete["crown"].verdicts[i] is PointVerdict.VERIFIED
            if bab.verdicts[i] is PointVerdict.UNKNOWN:
                counts["bab_unknown"] += 1
            elif truth is not PointVerdict.UNKNOWN:
                assert bab.verdicts[i] is truth, (widths, seed, i, truth, bab.verdicts[i])
                counts["bab_agrees"] += 1
    print(f"\nMarabou cross-check (L∞ radius {RADIUS}): {counts}")
    assert counts["marabou_sat"] > 0 and counts["marabou_unsat"] > 0
    assert counts["bab_unknown"] == 0 and counts["marabou_unknown"] == 0
