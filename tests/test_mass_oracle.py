"""The teacher as its own oracle (pacverify.verify.oracle, issue 11 mass mode): sound lower radii l_i, confirmed
attack upper radii u_i, and the teacher's Network.

Soundness is checked against independent references: Marabou's exact L∞ radius (bisection to 1e-3 with a
complete verifier), dense random sampling (L2 and L∞: the closest point of another class found), and a linear
teacher whose radius is known in closed form."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_nets import random_mlp
from verify_nets import network_to_onnx

from pacverify.network import Affine, Network
from pacverify.norms import dual_norm, vector_norm
from pacverify.pipeline.teacher_check import TeacherModel
from pacverify.verify.bounds import crown
from pacverify.verify.oracle import (
    OracleResult,
    attack_radii,
    estimate_cost,
    teacher_lower_radii,
    teacher_network,
    teacher_oracle,
)
from pacverify.verify.property import robustness_property
from pacverify.verify.radius import _bound_margin
from pacverify.verify.result import PointVerdict
from pacverify.verify.sets import perturbation_set

CASES = [([2, 8, 8, 3], seed) for seed in (1, 2)] + [([3, 10, 3], seed) for seed in (0, 2)]
CAP = 0.5
TOL = CAP / 32
DOMAIN = (-1.0, 1.0)


def _case(widths, seed, n=8):
    net = random_mlp(widths, seed)
    x = np.random.default_rng(seed).uniform(-1, 1, (n, widths[0]))
    y = net(torch.from_numpy(x)).argmax(1).numpy()
    return net, x, y


def _marabou_bracket(net, x, y, cap, domain):
    """Per point [lo, hi] holding the exact L∞ robust radius (Marabou, bisection to 1e-3); hi = inf when the
    cap ball is robust."""
    from pacverify.verify.api import verify_points

    lo, hi = np.zeros(len(x)), np.full(len(x), cap)
    stuck = np.zeros(len(x), bool)  # Marabou timed out (a loaded machine): the bracket stays as last proven
    for k in range(12):
        idx = np.nonzero(np.isfinite(hi) & (hi - lo > 1e-3) & ~stuck)[0]
        if not len(idx):
            break
        r = hi[idx].copy() if k == 0 else (lo[idx] + hi[idx]) / 2
        res = verify_points(net, x[idx], r, "inf", labels=y[idx], backend="marabou", attack=False, timeout=30,
                            domain=domain)
        for i, radius, verdict in zip(idx, r, res.verdicts, strict=True):
            if verdict is PointVerdict.UNKNOWN:
                stuck[i] = True
                continue
            if verdict is PointVerdict.VERIFIED:
                lo[i] = radius
            else:
                hi[i] = radius
        if k == 0:
            hi[lo >= cap] = np.inf
    return lo, hi


def _sampled_distance(net, x, y, norm, cap, domain, samples=10000, seed=0):
    """Per point the distance to the closest point of another class among dense random draws in the cap ball
    (uniform in the ball, half of them scaled toward the centre for L∞; clipped to the domain): inf if none."""
    gen = torch.Generator().manual_seed(seed)
    n, m = x.shape
    if norm == "inf":
        d = (torch.rand((n, samples, m), generator=gen, dtype=torch.float64) * 2 - 1) * cap
        d[:, : samples // 2] *= torch.rand((n, samples // 2, 1), generator=gen, dtype=torch.float64)
    else:
        d = torch.randn((n, samples, m), generator=gen, dtype=torch.float64)
        d = d / d.norm(dim=2, keepdim=True) * cap * torch.rand((n, samples, 1), generator=gen, dtype=torch.float64)
    c = torch.from_numpy(x)[:, None, :]
    p = c + d
    if domain is not None:
        p = p.clamp(*domain)
    with torch.no_grad():
        z = net(p.reshape(n * samples, m)).reshape(n, samples, -1)
    label = torch.from_numpy(y)[:, None, None].expand(n, samples, 1)
    other = z.amax(dim=2) > z.gather(2, label)[..., 0]          # strictly another class
    dist = torch.where(other, vector_norm(p - c, norm, axis=2), torch.full((n, samples), torch.inf,
                                                                          dtype=torch.float64))
    return dist.amin(dim=1).numpy()


# ------------------------------------------------------------------------------------------ lower radii
@pytest.mark.parametrize("search", ["itp", "bisect"])
def test_lower_radii_never_exceed_the_exact_linf_radius_from_marabou(search):
    pytest.importorskip("maraboupy", reason="maraboupy (the pacverify[marabou] extra) is not installed")
    gaps = []
    for widths, seed in CASES:
        net, x, y = _case(widths, seed)
        lower = teacher_lower_radii(net, x, y, "inf", cap=CAP, tol=TOL, domain=DOMAIN, search=search)
        lo, hi = _marabou_bracket(net, x, y, CAP, DOMAIN)
        assert np.all(lower <= hi + 1e-12), (widths, seed, lower, hi)
        assert np.all((lower >= 0) & (lower <= CAP))
        gaps += list(np.minimum(lo, CAP) - lower)
    print(f"\n{search}: exact L∞ radius (Marabou, capped) − l_i: mean {np.mean(gaps):.4f}, max {np.max(gaps):.4f}")


@pytest.mark.parametrize("norm", ["2", "inf"])
@pytest.mark.parametrize("domain", [None, DOMAIN])
def test_lower_radii_never_exceed_sampled_or_attacked_counterexamples(norm, domain):
    for widths, seed in CASES:
        net, x, y = _case(widths, seed)
        lower = teacher_lower_radii(net, x, y, norm, cap=CAP, tol=TOL, domain=domain)
        sampled = _sampled_distance(net, x, y, norm, CAP, domain, seed=seed)
        upper, cex = attack_radii(net, x, y, norm, hi=CAP, domain=domain, seed=seed)
        assert np.all(lower <= sampled + 1e-12), (widths, seed, lower, sampled)
        assert np.all(lower <= upper + 1e-12), (widths, seed, lower, upper)
        bisect = teacher_lower_radii(net, x, y, norm, cap=CAP, tol=TOL, domain=domain, search="bisect")
        assert np.all(bisect <= sampled + 1e-12)


def test_points_whose_class_is_not_the_label_get_zero():
    net, x, y = _case([3, 10, 3], 0)
    wrong = (y + 1) % 3
    assert np.all(teacher_lower_radii(net, x, wrong, "2", cap=CAP, tol=TOL) == 0)
    upper, cex = attack_radii(net, x, wrong, "2", hi=CAP)
    assert np.all(upper == 0) and np.array_equal(cex, x)


def test_skipping_the_first_layer_gives_the_engine_crown_bounds():
    """The first ReLU layer's intermediate bounds passed as (−inf, inf): the same lower bounds as plain CROWN."""
    for widths, seed in [([4, 12, 12, 3], 0), ([5, 16, 4], 1)]:
        net = random_mlp(widths, seed)
        x = torch.from_numpy(np.random.default_rng(seed).uniform(-1, 1, (16, widths[0])))
        y = net(x).argmax(1)
        r = torch.full((16,), 0.3, dtype=torch.float64)
        for norm in ("2", "inf"):
            for domain in (None, DOMAIN):
                prop = robustness_property(y, widths[-1])
                plain = crown(net, perturbation_set(x, r, norm, domain), prop.C, upper=False).lower
                mine = _bound_margin(net, x, y, r, norm, domain, "crown", np.arange(16))
                assert torch.allclose(mine, prop.proof_margin(plain), rtol=0, atol=1e-9)


def test_search_statistics_and_itp_needs_fewer_bounds_than_bisection():
    net = random_mlp([6, 20, 20, 4], 3)
    x = np.random.default_rng(3).uniform(0, 1, (64, 6))
    y = net(torch.from_numpy(x)).argmax(1).numpy()
    stats: dict = {}
    teacher_lower_radii(net, x, y, "inf", cap=CAP, tol=TOL, domain=(0.0, 1.0), stats=stats)
    assert set(stats) >= {"passes", "bounded", "proved_at_cap", "seconds"}
    assert stats["bounded"] <= 64 * (stats["passes"])
    assert stats["bounded"] / 64 < 6     # bisection to cap/32 bounds every open point 6 times


# ------------------------------------------------------------------------------------------ a linear teacher
def _linear(m, seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(m, generator=gen, dtype=torch.float64)
    b = torch.randn((), generator=gen, dtype=torch.float64) * 0.2
    net = Network((Affine(torch.stack([w, -w]), torch.stack([b, -b])),), (m,))
    return net, w.numpy(), float(b)


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_linear_teacher_radii_are_exact_to_the_tolerance(norm):
    """Logits (w·x + b, −(w·x + b)): rob(x) = |w·x + b| / ‖w‖_* (dual norm); the bounds are exact on a linear
    network, so rob − tol ≤ l ≤ rob; the attack finds the boundary to 1e-3 relative."""
    net, w, b = _linear(5, 0)
    x = np.random.default_rng(0).normal(size=(40, 5))
    y = net(torch.from_numpy(x)).argmax(1).numpy()
    rob = np.abs(x @ w + b) / float(dual_norm(w, norm))
    cap = float(rob.max()) * 1.2
    tol = cap / 32
    lower = teacher_lower_radii(net, x, y, norm, cap=cap, tol=tol)
    assert np.all(lower <= rob)
    assert np.all(lower >= rob - tol - 1e-9)
    upper, cex = attack_radii(net, x, y, norm, hi=cap, lo=lower)
    assert np.all(upper >= rob)
    assert np.all(upper <= rob * (1 + 1e-3) + 1e-9), np.max(upper / rob)
    assert np.allclose(vector_norm(cex - x, norm, axis=1), upper, rtol=1e-12, atol=0)


# ------------------------------------------------------------------------------------------ attack radii
@pytest.mark.parametrize("norm", ["2", "inf"])
def test_attack_counterexamples_are_confirmed_at_their_distance(norm):
    for widths, seed in CASES:
        net, x, y = _case(widths, seed)
        lower = teacher_lower_radii(net, x, y, norm, cap=CAP, tol=TOL, domain=DOMAIN)
        upper, cex = attack_radii(net, x, y, norm, hi=CAP, lo=lower, domain=DOMAIN, seed=seed)
        assert np.all(upper >= lower)
        found = np.isfinite(upper)
        assert np.all(np.isnan(cex[~found]))
        assert np.all((cex[found] >= DOMAIN[0]) & (cex[found] <= DOMAIN[1]))
        z = net(torch.from_numpy(cex[found])).numpy()
        assert np.all(z.max(axis=1) > z[np.arange(len(z)), y[found]])
        assert np.allclose(vector_norm(cex[found] - x[found], norm, axis=1), upper[found], rtol=1e-12, atol=0)
        if seed == CASES[0][1]:    # deterministic for a seed
            again = attack_radii(net, x, y, norm, hi=CAP, lo=lower, domain=DOMAIN, seed=seed)
            assert np.array_equal(again[0], upper) and np.array_equal(again[1], cex, equal_nan=True)


def test_attack_on_a_float32_teacher_confirms_in_the_teacher_precision():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    model = TeacherModel(module, (3,))
    x = np.random.default_rng(1).uniform(-1, 1, (32, 3))
    with torch.no_grad():
        y = module(torch.from_numpy(x).float()).argmax(1).numpy()
    upper, cex = attack_radii(model, x, y, "2", hi=1.0, domain=DOMAIN)
    found = np.isfinite(upper)
    assert found.sum() >= 5
    assert np.array_equal(cex[found].astype(np.float32).astype(np.float64), cex[found])   # the teacher's own points
    with torch.no_grad():
        z = module(torch.from_numpy(cex[found]).float())
    assert np.all(z.amax(1).numpy() > z[torch.arange(len(z)), torch.as_tensor(y[found])].numpy())


# ------------------------------------------------------------------------------------------ teacher network
def _parity(net, module, shape, n=16):
    x = torch.randn((n, *shape))
    with torch.no_grad():
        return float((net(x.double().reshape(n, -1)) - module(x).double()).abs().max())


def test_teacher_network_reads_onnx_files_and_torch_modules(tmp_path):
    source = random_mlp([4, 9, 3], 0)
    path = tmp_path / "teacher.onnx"
    network_to_onnx(source, path)
    from pacverify.models import load_teacher

    teacher = load_teacher(path, device="cpu")
    net, reason = teacher_network(teacher, path, (4,))
    assert net is not None and "ONNX graph" in reason and "read by the engine" in reason
    assert _parity(net, teacher, (4,)) < 1e-4

    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 10), torch.nn.ReLU(), torch.nn.Linear(10, 3)).eval()
    net, reason = teacher_network(mlp, None, (4,))
    assert net is not None and "exported" in reason, reason
    assert _parity(net, mlp, (4,)) < 1e-5

    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 6 * 6, 3)).eval()
    torch.save(conv.state_dict(), tmp_path / "weights.pt")        # a state dict: exported from the module
    net, reason = teacher_network(conv, tmp_path / "weights.pt", (1, 8, 8))
    assert net is not None, reason
    assert net.in_features == 64 and _parity(net, conv, (1, 8, 8)) < 1e-5


@pytest.mark.parametrize("middle", [torch.nn.Sigmoid, lambda: torch.nn.LayerNorm(8), lambda: torch.nn.Softmax(dim=1)])
def test_teacher_network_refuses_ops_the_engine_cannot_read(middle):
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), middle(), torch.nn.Linear(8, 3)).eval()
    net, reason = teacher_network(module, None, (4,))
    assert net is None and reason.startswith("the engine cannot read the teacher: ") and "\n" not in reason


def test_teacher_network_refuses_an_onnx_file_with_an_unsupported_op_or_other_logits(tmp_path):
    path = tmp_path / "sig.onnx"
    network_to_onnx(random_mlp([4, 9, 3], 0), path, extra_op="Sigmoid")
    net, reason = teacher_network(torch.nn.Identity(), path, (4,))
    assert net is None and "Sigmoid" in reason
    other = tmp_path / "other.onnx"
    network_to_onnx(random_mlp([4, 9, 3], 1), other)
    module = torch.nn.Sequential(torch.nn.Linear(4, 9), torch.nn.ReLU(), torch.nn.Linear(9, 3)).eval()
    net, reason = teacher_network(module, other, (4,))
    assert net is None and "differs from the teacher" in reason


# ------------------------------------------------------------------------------------------ both
def test_teacher_oracle_brackets_the_radius_and_estimate_cost_is_positive():
    torch.manual_seed(2)
    module = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                 torch.nn.Linear(16, 3)).eval()
    net, reason = teacher_network(module, None, (3,))
    assert net is not None, reason
    x = np.random.default_rng(1).uniform(-1, 1, (32, 3))
    with torch.no_grad():
        y = module(torch.from_numpy(x).float()).argmax(1).numpy()
    result = teacher_oracle(net, TeacherModel(module, (3,)), x, y, "inf", cap=CAP, tol=TOL, method="crown",
                            domain=DOMAIN, seed=0, attack_steps=20, attack_restarts=2, attack_bisection=4)
    assert isinstance(result, OracleResult)
    assert np.all(result.lower <= result.upper) and np.all((result.lower >= 0) & (result.lower <= CAP))
    assert np.isfinite(result.upper).any() and (result.lower > 0).any()
    assert result.time_lower_s > 0 and result.time_upper_s > 0 and result.stats["passes"] >= 1
    cost = estimate_cost(net, 10_000, points=x, norm="inf", cap=CAP, domain=DOMAIN)
    assert np.isfinite(cost) and cost > 0


def test_exact_keeps_class_separates_rounding_from_a_contradicted_proof():
    """A counterexample closer than the proven radius counts as rounding only where the exact function (float64
    network) keeps the class there — a tie or better — and as a contradiction where it clearly does not."""
    import torch

    from pacverify.network import Affine, Network
    from pacverify.pipeline.mass import exact_keeps_class

    # logits (x0, x1): class 0 where x0 > x1, a tie on the diagonal
    net = Network((Affine(torch.eye(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)),), (2,))
    labels = np.array([0, 0, 0, 0, 1])
    cex = np.array([[0.5, 0.5],          # on the boundary: a float64 tie -> rounding
                    [0.5, 0.6],          # class 1: the exact function changes class -> a contradiction
                    [0.7, 0.2],          # keeps class 0 (a float32 evaluation said otherwise) -> rounding
                    [np.nan, np.nan],    # no counterexample
                    [0.9, 0.1]])         # label 1, class 0 at the counterexample -> a contradiction
    closer = np.array([True, True, True, True, True])
    np.testing.assert_array_equal(exact_keeps_class(net, labels, cex, closer), [True, False, True, False, False])
    np.testing.assert_array_equal(exact_keeps_class(net, labels, cex, ~closer), [False] * 5)
    np.testing.assert_array_equal(exact_keeps_class(None, labels, cex, closer), [False] * 5)
