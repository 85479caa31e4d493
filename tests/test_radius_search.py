"""The certified-radius searches (pacverify.verify.radius) and CROWN read at smaller radii (crown_radius).

Soundness: every radius ``crown_radius`` calls proven keeps every specification row positive at sampled points of
the ball (hypothesis: random MLPs, both norms, with and without a domain, float64 and float32) and, on tiny nets,
at the exact minimum over the L∞ box (MILP); its lower bounds are CROWN's. The searches: radii within tol of a
radius not proved, proved again by branch and bound, never above the exact radius, fewer bounds than bisection.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_nets import exact_range_milp, random_mlp, sample_in_set, spec_values
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.errors import InputError
from pacverify.verify.api import certified_radius, verify_points
from pacverify.verify.bounds import crown
from pacverify.verify.bounds.crown import crown_radius
from pacverify.verify.output_rows import margin_rows
from pacverify.verify.radius import EXPAND, EXPANSIONS, PILOT, search_radii
from pacverify.verify.result import PointVerdict
from pacverify.verify.sets import perturbation_set


def _problem(seed: int, widths: list[int], batch: int):
    net = random_mlp(widths, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, widths[0], generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)
    return net, x, y, margin_rows(y, widths[-1])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**20), depth=st.integers(1, 3), norm=st.sampled_from(["2", "inf"]),
       domain=st.booleans(), scale=st.floats(0.05, 1.5), float32=st.booleans())
def test_crown_radius_proofs_hold_at_sampled_points(seed, depth, norm, domain, scale, float32):
    widths = [int(w) for w in np.random.default_rng(seed).integers(2, 9, depth + 1)] + [3]
    net, x, _, C = _problem(seed, widths, 4)
    if float32:
        net = net.to(dtype=torch.float32)
    dom = (0.0, 1.0) if domain else None
    R = torch.full((4,), scale * (widths[0] ** 0.5 if norm == "2" else 1.0) / 4, dtype=torch.float64)
    out = crown_radius(net, x, R, norm, C, domain=dom)
    plain = crown(net, perturbation_set(x, R, norm, dom), C, upper=False).lower
    assert torch.allclose(out.lower, plain, rtol=0, atol=1e-5 if float32 else 1e-12)
    assert torch.equal(out.proven >= R, (plain > 0).all(dim=1))       # proven = R exactly when CROWN proves R
    assert ((out.proven >= 0) & (out.proven <= R)).all()
    exact = net.to(dtype=torch.float64)
    for b in torch.nonzero(out.proven > 0).reshape(-1).tolist():
        s = perturbation_set(x[b:b + 1], out.proven[b:b + 1].to(torch.float64), norm, dom)
        values = spec_values(exact, C[b:b + 1], sample_in_set(s, 300, seed))
        assert (values > 0).all(), (b, float(out.proven[b]), float(values.min()))


@pytest.mark.parametrize("seed", range(4))
def test_crown_radius_is_never_above_the_exact_linf_radius_by_milp(seed):
    net, x, y, C = _problem(seed, [2, 6, 6, 3], 6)
    for R in (0.2, 0.6):
        out = crown_radius(net, x, torch.full((6,), R, dtype=torch.float64), "inf", C)
        for b in torch.nonzero(out.proven > 0).reshape(-1).tolist():
            r = float(out.proven[b])
            lo, hi = x[b].numpy() - r, x[b].numpy() + r
            for row in C[b].numpy():
                found = exact_range_milp(net, lo, hi, row)
                assert found is not None and found[0] > -1e-9, (seed, R, b, r, found)


@pytest.mark.parametrize("norm", ["2", "inf"])
@pytest.mark.parametrize("domain", [None, (0.0, 1.0)])
def test_lines_search_brackets_and_every_radius_is_proved_again(norm, domain):
    net, x, y, _ = _problem(5, [5, 24, 24, 4], 48)
    cap, tol = (1.5 if norm == "2" else 0.5), 1e-2
    bisect = search_radii(net, x.numpy(), y.numpy(), norm, cap=cap, tol=tol, domain=domain, search="bisect")
    assert bisect.search == "bisect"
    for search in ("lines", "itp"):
        found = search_radii(net, x.numpy(), y.numpy(), norm, cap=cap, tol=tol, domain=domain, search=search)
        assert found.search == search
        open_ = found.proven < cap
        assert np.all(found.failed[open_] - found.proven[open_] <= tol + 1e-12)
        assert np.all((found.proven >= 0) & (found.proven <= cap))
        # (no pointwise order with bisection: CROWN's bound is not monotone in r, and a failed pass's reading at a
        # smaller radius can prove more than a fresh pass there; every radius is proved again below instead)
        assert found.stats["bounded"] < bisect.stats["bounded"]
        assert abs(found.proven.mean() - bisect.proven.mean()) <= tol
        proven = found.proven > 0
        again = verify_points(net, x.numpy()[proven], found.proven[proven], norm, labels=y.numpy()[proven],
                              domain=domain, complete=True, timeout=20, attack=False)
        assert all(v is PointVerdict.VERIFIED for v in again.verdicts), search


def test_a_pilot_sets_the_first_guess_on_many_points():
    net, x, y, _ = _problem(6, [4, 16, 16, 3], 4 * PILOT)
    found = search_radii(net, x.numpy(), y.numpy(), "2", cap=1.0, tol=1e-2)
    alone = search_radii(net, x.numpy()[:PILOT], y.numpy()[:PILOT], "2", cap=1.0, tol=1e-2)
    assert found.search == "itp" and found.stats["passes"] > alone.stats["passes"]   # the pilot, then the rest
    again = verify_points(net, x.numpy(), np.maximum(found.proven, 1e-12), "2", labels=y.numpy(), attack=False,
                          complete=True, timeout=20)
    assert all(v is PointVerdict.VERIFIED for v, r in zip(again.verdicts, found.proven, strict=True) if r > 0)


def test_the_pilots_first_pass_errs_low(monkeypatch):
    """Without a learnt ratio (the pilot's own points) itp first tries ITP_FIRST_GUESS × the first-order radius."""
    import pacverify.verify.radius as radius_module

    net, x, y, _ = _problem(6, [4, 16, 16, 3], 4 * PILOT)
    cap, first = 1.0, []
    real = radius_module._crown_pass

    def recording(net_, x_, y_, index, r, norm, domain):
        if not first:
            first.append((x_.clone(), y_.clone(), index.clone(), r.clone()))
        return real(net_, x_, y_, index, r, norm, domain)

    monkeypatch.setattr(radius_module, "_crown_pass", recording)
    search_radii(net, x.numpy(), y.numpy(), "2", cap=cap, tol=1e-2, search="itp")
    [(xp, yp, index, r)] = first
    assert xp.shape[0] == PILOT
    r_lin, _ = radius_module._linear_radius(net, xp[index], yp[index], "2", None, cap, beyond_cap=True)
    finite = torch.isfinite(r_lin) & (r_lin > 0)
    assert int(finite.sum()) > PILOT // 2
    torch.testing.assert_close(r[finite], (radius_module.ITP_FIRST_GUESS * r_lin[finite]).clamp(max=cap))


def test_itp_grows_a_radius_proved_below_the_cap_before_trying_the_cap(monkeypatch):
    """With CROWN, a point whose passes keep proving radii below an untested cap tries at most EXPANSIONS larger
    radii (each ≥ EXPAND × the radius proved, where the proving pass's linear bounds reach 0), then the cap. (Many
    points: the pilot's first guess proves about half of them; the radii are proved again in the pilot test above.)"""
    import pacverify.verify.radius as radius_module

    net, x, y, _ = _problem(6, [4, 16, 16, 3], 4 * PILOT)
    cap, tries = 1.0, {}
    real = radius_module._crown_pass

    def recording(net_, x_, y_, index, r, norm, domain):
        out = real(net_, x_, y_, index, r, norm, domain)
        for i, ri, fi in zip(index.tolist(), r.tolist(), out[0].tolist(), strict=True):
            tries.setdefault((x_.data_ptr(), i), []).append((ri, fi > 0))   # the pilot's points, then the rest
        return out

    monkeypatch.setattr(radius_module, "_crown_pass", recording)
    search_radii(net, x.numpy(), y.numpy(), "2", cap=cap, tol=1e-2, search="itp")
    grown = 0
    for seq in tries.values():
        proved = 0.0
        for k, (r, ok) in enumerate(seq):
            if k >= 1:   # every pass before this one proved its radius, below the cap
                if k <= EXPANSIONS:
                    assert min(cap, EXPAND * proved) - 1e-12 <= r <= cap
                    grown += r < cap
                else:
                    assert r == cap
            if not ok or r >= cap:
                break
            proved = r
    assert grown >= 5   # the rule was exercised


def test_itp_first_guess_without_a_first_order_root_is_the_pilots_median_radius(monkeypatch):
    """Where the first-order model never reaches 0 within the cap (L∞ in a domain, points near its corners), the
    first pass tries the pilot's median radius instead of the cap."""
    import pacverify.verify.radius as radius_module

    net = random_mlp([6, 16, 16, 3], 7)
    corners = torch.rand(4 * PILOT, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64) > 0.5
    x = corners.to(torch.float64) * 0.98 + 0.01
    with torch.no_grad():
        y = net(x).argmax(1)
    cap, domain, first = 0.5, (0.0, 1.0), {}
    real = radius_module._crown_pass

    def recording(net_, x_, y_, index, r, norm, dom):
        out = real(net_, x_, y_, index, r, norm, dom)
        for i, ri in zip(index.tolist(), r.tolist(), strict=True):
            first.setdefault((x_.data_ptr(), i), (ri, x_[i]))
        return out

    monkeypatch.setattr(radius_module, "_crown_pass", recording)
    found = search_radii(net, x.numpy(), y.numpy(), "inf", cap=cap, tol=cap / 128, domain=domain, search="itp")
    r_lin, _ = radius_module._linear_radius(net, x, y, "inf", domain, cap, beyond_cap=True)
    pilot = torch.linspace(0, x.shape[0] - 1, PILOT).round().long().unique()
    inside = (found.proven[pilot.numpy()] > 0) & (found.proven[pilot.numpy()] < cap)
    rest = torch.ones(x.shape[0], dtype=torch.bool)
    rest[pilot] = False
    no_root = torch.nonzero(rest & ~torch.isfinite(r_lin)).reshape(-1)
    assert no_root.numel() >= 20 and int(inside.sum()) >= PILOT // 4
    tried = {tuple(point.tolist()): r for r, point in first.values()}
    guesses = {tried[tuple(x[i].tolist())] for i in no_root.tolist()}
    assert len(guesses) == 1 and 0 < guesses.pop() < cap   # one shared guess, below the cap


def test_certified_radius_chooses_its_search_and_refuses_impossible_ones():
    net, x, y, _ = _problem(2, [4, 16, 3], 20)
    auto = certified_radius(net, x.numpy(), "2", cap=1.0, tol=1e-2, attack=False)
    assert auto.stats["search"] == "itp" and auto.stats["passes"] >= 1
    ibp = certified_radius(net, x.numpy(), "2", method="ibp", cap=1.0, tol=1e-2, attack=False)
    assert ibp.stats["search"] == "itp"
    complete = certified_radius(net, x.numpy()[:4], "2", cap=1.0, tol=0.1, attack=False, complete=True, timeout=5)
    assert complete.stats["search"] == "bisect"
    bisect = certified_radius(net, x.numpy(), "2", cap=1.0, tol=1e-2, attack=False, search="bisect")
    assert bisect.stats["bounded"] > auto.stats["bounded"]
    with pytest.raises(InputError, match="needs method 'crown'"):
        certified_radius(net, x.numpy(), "2", method="ibp", search="lines")
    with pytest.raises(InputError, match="native bounds only"):
        certified_radius(net, x.numpy(), "2", search="lines", complete=True)
    with pytest.raises(InputError, match="search must be one of"):
        certified_radius(net, x.numpy(), "2", search="newton")
