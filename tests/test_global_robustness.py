"""Global robustness over a domain box (``verify_global``, ``verify --global``): known answers, soundness against
brute force, agreement with Marabou on a twin-network encoding, the reach sets, and the command line."""
from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from helpers_nets import random_mlp
from verify_nets import network_to_onnx

from pacverify.errors import InputError
from pacverify.network import Affine, Network
from pacverify.synthetic import pocket_teacher, sigmoid_teacher
from pacverify.verify.bounds import crown
from pacverify.verify.global_robustness import (
    GlobalResult,
    ReachSet,
    check_global_domain,
    coupled_lower_bound,
    reach_set,
    verify_global,
)
from pacverify.verify.output_rows import margin_rows

DUAL = {"inf": 1.0, "2": 2.0}          # ord of the dual norm


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _t(kappa: float) -> float:
    return math.log(kappa / (1 - kappa))


def _linear_net(w, b: float) -> Network:
    """Logits (w·x + b, 0)."""
    w = torch.as_tensor(w, dtype=torch.float64)
    weight = torch.stack([w, torch.zeros_like(w)])
    return Network((Affine(weight, torch.tensor([b, 0.0], dtype=torch.float64)),), (w.numel(),))


def assert_real_pair(net, result: GlobalResult, domain, radius: float, kappa: float, norm: str, *,
                     inside: bool = True) -> None:
    """The reported pair: x in the domain, κ-confident with a strict argmax c; x′ within δ (and in the domain);
    another class strictly above c at x′ — all by a float64 forward pass."""
    pair = result.pair
    assert result.verdict == "falsified" and pair is not None
    lo, hi = check_global_domain(domain, pair.x.shape[0])
    assert np.all(pair.x >= lo) and np.all(pair.x <= hi)
    if inside:
        assert np.all(pair.x_prime >= lo) and np.all(pair.x_prime <= hi)
    assert np.linalg.norm(pair.x_prime - pair.x, ord=np.inf if norm == "inf" else 2) <= radius
    with torch.no_grad():
        z = net(torch.tensor(np.stack([pair.x, pair.x_prime]), dtype=torch.float64))
    c = pair.class_x
    assert int(z[0].argmax()) == c and float(torch.softmax(z[0], 0)[c]) >= kappa
    assert float(z[1, pair.class_x_prime]) > float(z[1, c]) and pair.class_x_prime != c


# --------------------------------------------------------------------------------------------------- known answers
@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize("factor", [0.8, 1.2])
def test_linear_two_class_net_matches_the_analytic_radius(norm, factor):
    """Logits (w·x + b, 0): every κ-confident point is at distance >= t/‖w‖_* from the boundary, and points at
    exactly that distance exist in the domain: globally δ-robust iff δ < t/‖w‖_*."""
    kappa, w = 0.9, np.array([1.0, -2.0, 0.5])
    net = _linear_net(w, 0.3)
    radius = factor * _t(kappa) / np.linalg.norm(w, ord=DUAL[norm])
    result = verify_global(net, (-3, 3), radius, kappa, norm=norm, timeout=30)
    if factor < 1:
        assert result.verdict == "verified" and result.proven_fraction == 1.0 and result.boxes_open == 0
        assert result.pair is None and result.largest_open == []
    else:
        assert_real_pair(net, result, (-3, 3), radius, kappa, norm)


@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize("factor", [0.8, 1.2])
def test_sigmoid_teacher_relu_net_matches_the_analytic_radius(norm, factor):
    """The sigmoid teacher (a ReLU net with logits ±a·Σx/2) in 2-D: robust iff δ < t/(a·‖1‖_*)."""
    a, kappa, m = 4.0, 0.9, 2
    net = sigmoid_teacher(a, dim=m, width=8)
    radius = factor * _t(kappa) / (a * np.linalg.norm(np.ones(m), ord=DUAL[norm]))
    result = verify_global(net, (-2, 2), radius, kappa, norm=norm, timeout=30)
    if factor < 1:
        assert result.verdict == "verified" and result.proven_fraction == 1.0
    else:
        assert_real_pair(result_net(net), result, (-2, 2), radius, kappa, norm)


def result_net(module) -> Network:
    from pacverify.verify.global_robustness import _network

    return _network(module, "cpu")


def test_pocket_teacher_is_falsified_with_a_checked_pair():
    net = pocket_teacher(4.0, np.array([[1.0, 0.5]]), 0.2)
    for norm in ("inf", "2"):
        result = verify_global(net, (-2, 2), 0.1, 0.9, norm=norm, timeout=30)
        assert_real_pair(result_net(net), result, (-2, 2), 0.1, 0.9, norm)


def test_inside_domain_or_anywhere():
    """z0 − z1 = x1 on x1 ∈ [1, 3]: every point is class 0; with x′ inside the domain nothing changes class, with x′
    anywhere a confident x (x1 >= t ≈ 2.2) reaches x1 < 0 when δ = 2.5."""
    net = _linear_net([1.0, 0.0], 0.0)
    domain = np.array([[1.0, -1.0], [3.0, 1.0]])
    inside = verify_global(net, domain, 2.5, 0.9, timeout=30)
    assert inside.verdict == "verified"
    anywhere = verify_global(net, domain, 2.5, 0.9, inside_domain=False, timeout=30)
    assert_real_pair(net, anywhere, domain, 2.5, 0.9, "inf", inside=False)
    assert anywhere.pair.x_prime[0] < 0


def test_budget_exhaustion_is_unknown_never_verified():
    """The 4-D sigmoid teacher is globally robust here, but not within 5 boxes or 1 ms."""
    net = sigmoid_teacher(4.0, dim=4, width=8)
    radius = 0.8 * _t(0.9) / (4.0 * 4)
    for budget in ({"max_boxes": 5}, {"timeout": 1e-3}):
        result = verify_global(net, (-2, 2), radius, 0.9, attack=False, **budget)
        assert result.verdict == "unknown" and result.boxes_open > 0 and result.proven_fraction < 1
        assert result.stats["stopped_by"] in ("max_boxes", "timeout")
        assert len(result.largest_open) >= 1


def test_a_minimum_width_leaves_boxes_open():
    net = sigmoid_teacher(4.0, dim=2, width=8)
    result = verify_global(net, (-2, 2), 0.9 * _t(0.9) / 8, 0.9, min_width=3.0, attack=False)
    assert result.verdict == "unknown" and result.stats["items_stuck"] > 0


# --------------------------------------------------------------------------------------------------- soundness
def _violations(net: Network, lo, hi, radius: float, kappa: float, norm: str, seed: int, grid: int,
                perturbations: int) -> np.ndarray:
    """Grid points x that are κ-confident and have a wrong-class x′ within δ (inside the domain) among random
    perturbations and the corners of the L∞ ball: brute force, (V, m)."""
    m = lo.shape[0]
    axes = [np.linspace(lo[i], hi[i], grid) for i in range(m)]
    x = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, m)
    with torch.no_grad():
        z = net(torch.from_numpy(x))
    p = torch.softmax(z, 1)
    conf = p.max(1).values.numpy() >= kappa
    x, label = x[conf], z.argmax(1).numpy()[conf]
    rng = np.random.default_rng(seed)
    d = rng.uniform(-1, 1, size=(perturbations, m))
    if norm == "2":
        d = d / np.linalg.norm(d, axis=1, keepdims=True)          # on the sphere
    corners = np.stack(np.meshgrid(*[[-1.0, 1.0]] * m, indexing="ij"), -1).reshape(-1, m)
    d = radius * np.concatenate([d, corners if norm == "inf" else corners / math.sqrt(m)])
    bad = np.zeros(len(x), dtype=bool)
    for step in d:
        xp = np.clip(x + step, lo, hi)
        with torch.no_grad():
            bad |= net(torch.from_numpy(xp)).argmax(1).numpy() != label
    return x[bad]


# (widths, seed, norm, whether brute force finds violations: the test has teeth where it does)
CASES = [([2, 8, 8, 2], 0, "inf", True), ([2, 12, 3], 1, "2", False), ([2, 10, 2], 2, "inf", True),
         ([3, 8, 8, 2], 3, "inf", False), ([3, 10, 3], 4, "2", True), ([2, 8, 8, 3], 5, "2", False)]


@pytest.mark.parametrize("method", ["crown", "crown-ibp"])
@pytest.mark.parametrize("widths,seed,norm,has_violations", CASES)
def test_proven_boxes_hold_no_violation_found_by_brute_force(widths, seed, norm, has_violations, method):
    """Random 2- and 3-class nets in 2-D and 3-D: no κ-confident grid point with a wrong-class x′ within δ (random
    perturbations and the ball's corners) lies in a box the search proved; VERIFIED only without such points (with
    CROWN, and with CROWN-IBP for the reach sets)."""
    m = widths[0]
    net = random_mlp(widths, seed)
    lo, hi = np.full(m, -2.0), np.full(m, 2.0)
    radius, kappa = 0.25, 0.6
    result = verify_global(net, (lo, hi), radius, kappa, norm=norm, max_boxes=1500, keep_done_boxes=True,
                           stop_at_counterexample=False, seed=seed, method=method)
    bad = _violations(net, lo, hi, radius, kappa, norm, seed, grid=161 if m == 2 else 41, perturbations=24)
    assert (len(bad) > 0) == has_violations
    done_lo, done_hi = result.done_boxes
    assert result.proven_fraction == pytest.approx(float(np.prod((done_hi - done_lo) / 4.0, axis=1).sum()))
    for x in bad:
        inside = np.all((done_lo <= x) & (x <= done_hi), axis=1)
        assert not inside.any(), (x, done_lo[inside][:1], done_hi[inside][:1])
    if len(bad):
        assert result.verdict != "verified"
    if result.verdict == "falsified":
        assert_real_pair(net, result, (lo, hi), radius, kappa, norm)


# --------------------------------------------------------------------------------------------------- reach sets
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_reach_set_linear_minimum_and_crown_are_sound(norm):
    """Points of T = {x + d : x ∈ B, g·x + h >= t, ‖d‖ <= r} ∩ P never go below ``linear_min`` nor outside CROWN's
    bounds over T."""
    gen = torch.Generator().manual_seed(3)
    B, m, n_pts = 6, 3, 4000
    lo = torch.rand(B, m, generator=gen, dtype=torch.float64) * 2 - 1
    hi = lo + torch.rand(B, m, generator=gen, dtype=torch.float64)
    g = torch.randn(B, m, generator=gen, dtype=torch.float64)
    h = torch.randn(B, generator=gen, dtype=torch.float64)
    t, r = 0.3, 0.2
    dom = (torch.full((m,), -0.8, dtype=torch.float64), torch.full((m,), 1.5, dtype=torch.float64))
    T = reach_set(lo, hi, r, norm, None, g, h, t)
    T_dom = reach_set(lo, hi, r, norm, dom, g, h, t)
    x = lo[:, None] + (hi - lo)[:, None] * torch.rand(B, n_pts, m, generator=gen, dtype=torch.float64)
    d = torch.rand(B, n_pts, m, generator=gen, dtype=torch.float64) * 2 - 1
    if norm == "2":
        d = d / torch.linalg.vector_norm(d, dim=-1, keepdim=True).clamp(min=1.0)
    xp = x + r * d
    feasible = (x * g[:, None]).sum(-1) + h[:, None] >= t
    A = torch.randn(B, 5, m, generator=gen, dtype=torch.float64)
    values = torch.einsum("bkm,bpm->bpk", A, xp)
    low = T.linear_min(A)
    assert bool((values >= low[:, None] - 1e-12)[feasible].all())
    in_dom = feasible & ((xp >= dom[0]) & (xp <= dom[1])).all(-1)
    assert bool((values >= T_dom.linear_min(A)[:, None] - 1e-12)[in_dom].all())
    assert bool((values <= T_dom.linear_max(A)[:, None] + 1e-12)[in_dom].all())
    assert bool((T_dom.linear_min(A) >= T.linear_min(A)).all())
    owner = torch.arange(B).repeat_interleave(5)
    assert torch.allclose(T_dom.linear_min_rows(A.reshape(-1, m), owner), T_dom.linear_min(A).reshape(-1))
    net = random_mlp([m, 10, 10, 3], 7)
    bounds = crown(net, T_dom, margin_rows(torch.zeros(B, dtype=torch.long), 3))
    with torch.no_grad():
        z = net(xp.reshape(-1, m)).reshape(B, n_pts, 3)
    margins = z[..., :1] - z[..., 1:]
    ok = (margins >= bounds.lower[:, None] - 1e-9) & (margins <= bounds.upper[:, None] + 1e-9)
    assert bool(ok.all(-1)[in_dom].all())
    assert isinstance(T_dom.select(torch.tensor([0, 2])), ReachSet)
    assert T_dom.to(dtype=torch.float32).g is None         # another precision drops the constraint (a larger set)


def test_coupled_bound_matches_the_linear_program():
    """For one constraint the best λ is at a breakpoint: the bound equals the LP optimum (scipy HiGHS, whose
    feasibility tolerance is ~1e-7) up to the solver's tolerance."""
    from scipy.optimize import linprog

    rng = np.random.default_rng(0)
    for _ in range(20):
        m = int(rng.integers(1, 6))
        lo = rng.uniform(-1, 0, m)
        hi = lo + rng.uniform(0.1, 1, m)
        a, g = rng.normal(size=m), rng.normal(size=m)
        h, c, r, t = rng.normal(), rng.normal(), 0.1, 0.2
        # min a·x + c − r‖a‖_1 s.t. g·x + h >= t, x in the box (L∞ perturbation)
        res = linprog(a, A_ub=-g[None], b_ub=[h - t], bounds=list(zip(lo, hi, strict=True)), method="highs")
        bound = coupled_lower_bound(*(torch.tensor(v)[None, None] for v in (a, c)), torch.tensor(g)[None, None],
                                    torch.tensor([[h]]), torch.tensor(lo)[None], torch.tensor(hi)[None], r, "inf",
                                    t).item()
        if res.status == 2:        # infeasible: any bound is sound
            continue
        assert res.status == 0
        exact = res.fun + c - r * np.abs(a).sum()
        assert bound == pytest.approx(exact, abs=1e-6)


# --------------------------------------------------------------------------------------------------- Marabou
def _marabou():
    pytest.importorskip("maraboupy", reason="maraboupy (the pacverify[marabou] extra) is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from maraboupy import Marabou, MarabouCore
    return Marabou, MarabouCore


def _twin_query(net: Network, lo, hi, radius: float, kappa: float, c: int, timeout: int = 60):
    """Marabou on the twin network: x, x′ in the domain, |x′_i − x_i| <= δ, z_c − z_j >= ln(κ/(1 − κ)) at x (exactly
    κ-confidence for 2 classes) and z′_c <= z′_j at x′. Returns (code, x, x′)."""
    Marabou, core = _marabou()
    m, j = net.in_features, 1 - c
    affine = [(layer.weight.numpy(), layer.bias.numpy()) if isinstance(layer, Affine) else None for layer in net.layers]
    per_copy, width = 0, m
    for layer in affine:
        width = width if layer is None else layer[0].shape[0]
        per_copy += width
    q = core.InputQuery()
    q.setNumberOfVariables(2 * m + 2 * per_copy)

    def row(kind, terms, scalar):
        eq = core.Equation(kind)
        for coef, var in terms:
            eq.addAddend(float(coef), var)
        eq.setScalar(float(scalar))
        q.addEquation(eq)

    def copy(inputs, nxt):
        current = inputs
        for layer in affine:
            fresh = list(range(nxt, nxt + (len(current) if layer is None else layer[0].shape[0])))
            nxt += len(fresh)
            if layer is None:
                for a, b in zip(current, fresh, strict=True):
                    core.addReluConstraint(q, a, b)
            else:
                W, bias = layer
                for k, out in enumerate(fresh):
                    row(core.Equation.EQ, [(W[k, i], current[i]) for i in np.flatnonzero(W[k])] + [(-1.0, out)],
                        -bias[k])
            current = fresh
        return current, nxt

    xs, xps = list(range(m)), list(range(m, 2 * m))
    for i in range(m):
        for v in (xs[i], xps[i]):
            q.setLowerBound(v, float(lo[i]))
            q.setUpperBound(v, float(hi[i]))
        row(core.Equation.LE, [(1.0, xps[i]), (-1.0, xs[i])], radius)
        row(core.Equation.LE, [(1.0, xs[i]), (-1.0, xps[i])], radius)
    z, nxt = copy(xs, 2 * m)
    zp, _ = copy(xps, nxt)
    row(core.Equation.LE, [(-1.0, z[c]), (1.0, z[j])], -_t(kappa))
    row(core.Equation.LE, [(1.0, zp[c]), (-1.0, zp[j])], 0.0)
    code, values, _ = core.solve(q, Marabou.createOptions(verbosity=0, timeoutInSeconds=timeout), "")
    if code != "sat":
        return code, None, None
    return code, np.array([values[v] for v in xs]), np.array([values[v] for v in xps])


def _checked_sat(net: Network, x, xp, radius: float, kappa: float, c: int) -> bool:
    """Marabou's pair satisfies the query in a float64 forward pass (up to 1e-6)."""
    with torch.no_grad():
        z = net(torch.tensor(np.stack([x, xp]), dtype=torch.float64))
    return (float(z[0, c] - z[0, 1 - c]) >= _t(kappa) - 1e-6 and float(z[1, c] - z[1, 1 - c]) <= 1e-6
            and np.abs(xp - x).max() <= radius + 1e-6)


MARABOU_CASES = [([3, 6, 2], seed, radius) for seed in range(4) for radius in (0.1, 0.3)] + \
                [([2, 10, 2], seed, radius) for seed in (0, 1, 3) for radius in (0.1, 0.3)]


def test_agreement_with_marabou_on_the_twin_network():
    """Marabou decides the twin query; a "sat" counts only when its pair passes a float64 forward pass.

    Marabou has once (CI, stop 19) answered "sat" on a case it answers "unsat" here, with a pair whose second point
    keeps a margin of 0.40 for the first class: a spurious witness, so that answer is no evidence either way and is
    counted apart ("marabou_spurious").
    """
    counts = {"cases": 0, "marabou_sat": 0, "marabou_unsat": 0, "marabou_spurious": 0, "verified": 0,
              "falsified": 0, "unknown": 0, "agree": 0}
    kappa = 0.6
    for widths, seed, radius in MARABOU_CASES:
        net = random_mlp(widths, seed)
        m = widths[0]
        lo, hi = np.full(m, -2.0), np.full(m, 2.0)
        answers = [_twin_query(net, lo, hi, radius, kappa, c) for c in (0, 1)]
        sat = [code == "sat" and _checked_sat(net, x, xp, radius, kappa, c) for c, (code, x, xp) in enumerate(answers)]
        spurious = any(code == "sat" and not ok for (code, _, _), ok in zip(answers, sat, strict=True))
        unsat = all(code == "unsat" for code, _, _ in answers)
        result = verify_global(net, (lo, hi), radius, kappa, norm="inf", timeout=10, seed=seed)
        counts["cases"] += 1
        counts["marabou_sat"] += any(sat)
        counts["marabou_unsat"] += unsat
        counts["marabou_spurious"] += spurious
        counts[result.verdict] += 1
        if result.verdict == "verified":
            assert not any(sat), (widths, seed, radius, answers)
            assert unsat or spurious, (widths, seed, radius, answers)
        if result.verdict == "falsified":
            assert_real_pair(net, result, (lo, hi), radius, kappa, "inf")
            assert not unsat, (widths, seed, radius)
        counts["agree"] += (result.verdict == "verified" and not any(sat)) or \
            (result.verdict == "falsified" and not unsat)
    print(f"\nglobal robustness vs Marabou (twin network, L∞, κ = {kappa}): {counts}")
    assert counts["marabou_sat"] > 0 and counts["marabou_unsat"] > 0
    assert counts["marabou_spurious"] <= 2
    assert counts["agree"] == counts["cases"]


# --------------------------------------------------------------------------------------------------- API input
@pytest.mark.parametrize("domain,words", [
    (np.zeros((3, 2)), "(2, 2)"), (np.array([[0.0, 1.0], [1.0, 0.0]]), "exceeds"),
    (np.array([[0.0, np.nan], [1.0, 1.0]]), "finite"), ((0.0, np.inf), "finite"), (([0, 0, 0], [1, 1, 1]), "(2,)"),
    ("abc", "numbers")])
def test_bad_domains_are_input_errors(domain, words):
    net = _linear_net([1.0, 1.0], 0.0)
    with pytest.raises(InputError, match=None) as info:
        verify_global(net, domain, 0.1, 0.9)
    assert words in str(info.value)


@pytest.mark.parametrize("kwargs", [{"radius": 0.0}, {"radius": -1.0}, {"kappa": 0.4}, {"kappa": 1.0},
                                    {"norm": "1"}, {"method": "lp"}, {"max_boxes": 0}, {"timeout": -1.0},
                                    {"min_width": -1.0}])
def test_bad_parameters_are_input_errors(kwargs):
    net = _linear_net([1.0, 1.0], 0.0)
    args = {"radius": 0.1, "kappa": 0.9, **kwargs}
    with pytest.raises(InputError):
        verify_global(net, (-1, 1), args.pop("radius"), args.pop("kappa"), **args)


def test_result_json_and_progress():
    net = sigmoid_teacher(4.0, dim=2, width=8)
    seen = []
    result = verify_global(net, (-2, 2), 0.1, 0.9, progress=seen.append, method="ibp")
    assert seen and {"round", "open", "done", "proven_fraction", "time_s"} <= set(seen[-1])
    data = json.loads(json.dumps(result.to_json()))
    assert data["verdict"] == result.verdict and data["settings"]["method"] == "ibp"
    assert {"proven_fraction", "boxes_done", "boxes_open", "largest_open", "pair", "time_s", "stats"} <= set(data)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_gives_the_cpu_answer():
    net = sigmoid_teacher(4.0, dim=3, width=8)
    radius = 0.8 * _t(0.9) / (4.0 * 3)
    cpu = verify_global(net, (-2, 2), radius, 0.9)
    gpu = verify_global(net, (-2, 2), radius, 0.9, device="cuda")
    assert cpu.verdict == gpu.verdict == "verified"


# --------------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def sigmoid_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("global") / "sigmoid.onnx"
    network_to_onnx(result_net(sigmoid_teacher(4.0, dim=2, width=8)), path)
    return path


def _main(argv, capsys):
    from pacverify.cli import main

    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_first_word_exit_code_and_json(sigmoid_onnx, tmp_path, capsys):
    out = tmp_path / "global.json"
    code, stdout, _ = _main(["verify", sigmoid_onnx, "--global", "--domain=-2,2", "--radius", "0.1", "--kappa", "0.9",
                             "--json", out, "--threads", "1"], capsys)
    assert code == 0 and stdout.split()[0] == "verified" and "proven_fraction 1.000000" in stdout
    data = json.loads(out.read_text())
    assert data["verdict"] == "verified" and data["settings"]["norm"] == "inf"
    code, stdout, _ = _main(["verify", sigmoid_onnx, "--global", "--domain=-2,2", "--radius", "0.5", "--kappa", "0.9",
                             "--norm", "2", "--json", out], capsys)
    assert code == 0 and stdout.split()[0] == "falsified" and "counterexample" in stdout
    pair = json.loads(out.read_text())["pair"]
    assert pair["class_x"] != pair["class_x_prime"] and pair["distance"] <= 0.5
    domain = tmp_path / "domain.npy"
    np.save(domain, np.array([[-2.0, -1.0], [2.0, 1.0]]))
    code, stdout, _ = _main(["verify", sigmoid_onnx, "--global", "--domain", domain, "--radius", "0.1", "--kappa",
                             "0.9", "--max-boxes", "3", "--no-attack"], capsys)
    assert code == 0 and stdout.split()[0] == "unknown"


def test_cli_negative_domain_through_the_real_entry_point(cli, sigmoid_onnx):
    proc = cli("verify", sigmoid_onnx, "--global", "--domain", "-2,2", "--radius", "0.1", "--kappa", "0.9",
               "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == "verified"


@pytest.mark.parametrize("args,words", [
    (["--domain", "-2,2", "--radius", "0.1", "--kappa", "1"], ["kappa"]),
    (["--domain", "-2,2", "--radius", "0.1", "--kappa", "0.3"], ["kappa"]),
    (["--domain", "-2,2", "--radius", "0", "--kappa", "0.9"], ["radius"]),
    (["--domain", "-2,2", "--radius", "-1", "--kappa", "0.9"], ["radius"]),
    (["--domain", "2,-2", "--radius", "0.1", "--kappa", "0.9"], ["--domain"]),
    (["--domain", "-2,nan", "--radius", "0.1", "--kappa", "0.9"], ["--domain"]),
    (["--domain", "BAD3.npy", "--radius", "0.1", "--kappa", "0.9"], ["(2, 2)"]),
    (["--domain", "FLIP.npy", "--radius", "0.1", "--kappa", "0.9"], ["exceeds"]),
    (["--domain", "NAN.npy", "--radius", "0.1", "--kappa", "0.9"], ["finite"]),
    (["--domain", "MISSING.npy", "--radius", "0.1", "--kappa", "0.9"], ["does not exist"]),
    (["--radius", "0.1", "--kappa", "0.9"], ["--domain"]),
    (["--domain", "-2,2", "--radius", "0.1"], ["--kappa"]),
    (["--domain", "-2,2", "--radius", "0.1", "--kappa", "0.9", "--max-boxes", "0"], ["max-boxes"]),
    (["--domain", "-2,2", "--radius", "0.1", "--kappa", "0.9", "--complete"], ["--complete", "--global"]),
])
def test_cli_bad_input_exits_2_with_one_line(sigmoid_onnx, tmp_path, capsys, args, words):
    files = {"BAD3.npy": np.zeros((3, 2)), "FLIP.npy": np.array([[1.0, 0.0], [0.0, 1.0]]),
             "NAN.npy": np.array([[0.0, np.nan], [1.0, 1.0]])}
    argv = []
    for a in args:
        if a in files:
            np.save(tmp_path / a, files[a])
        argv.append(str(tmp_path / a) if a.endswith(".npy") else a)
    code, stdout, stderr = _main(["verify", sigmoid_onnx, "--global", *argv], capsys)
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and stdout == "", stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_cli_global_options_need_global(sigmoid_onnx, tmp_path, capsys):
    points = tmp_path / "p.npy"
    np.save(points, np.zeros((2, 2)))
    code, _, stderr = _main(["verify", sigmoid_onnx, "--points", points, "--radius", "0.1", "--norm", "inf",
                             "--kappa", "0.9"], capsys)
    assert code == 2 and "--kappa" in stderr and "--global" in stderr
