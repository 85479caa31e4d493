"""The one attack core (pacverify.attacks): projections stay in ball ∩ box, counterexamples on a linear model
are found exactly when the closed-form distance to the decision boundary is inside the ball, both losses work."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from pacverify.attacks import (
    Attackable,
    attack,
    clip_into_set,
    in_set,
    margin_loss,
    objective,
    pgd,
    pgd_search,
    project,
    project_l2_box,
    random_search,
    spread_in_ball,
)
from pacverify.errors import InputError
from pacverify.norms import dual_norm, vector_norm


def _linear(weight, bias=None, dtype=torch.float64) -> nn.Linear:
    weight = torch.as_tensor(weight, dtype=dtype)
    lin = nn.Linear(weight.shape[1], weight.shape[0], dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(torch.zeros(weight.shape[0], dtype=dtype) if bias is None else torch.as_tensor(bias))
    return lin.eval()


def _boundary_distance(model: nn.Linear, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Closed form for a linear classifier: min over j ≠ y of (z_y − z_j)/‖w_y − w_j‖_* (y = its class at x)."""
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w = model.weight.detach()
    dist = torch.full((x.shape[0],), torch.inf, dtype=torch.float64)
    for j in range(w.shape[0]):
        gap = (z.gather(1, y[:, None]).squeeze(1) - z[:, j]).double()
        normal = dual_norm((w[y] - w[j]).double(), norm, axis=1)
        dist = torch.where(y != j, torch.minimum(dist, gap / normal), dist)
    return dist


def test_margin_loss_is_the_list_of_margins_against_the_other_classes():
    z = torch.tensor([[3.0, 1.0, 2.5], [0.0, 4.0, -1.0]])
    torch.testing.assert_close(margin_loss(z, torch.tensor([0, 2])), torch.tensor([[2.0, 0.5], [-1.0, -5.0]]))


def test_any_callable_is_attackable():
    model = _linear([[1.0, 0.0], [-1.0, 0.0]])

    def fn(x: torch.Tensor) -> torch.Tensor:     # a plain function on shaped inputs (B, 1, 2)
        return model(x.reshape(x.shape[0], 2))

    assert isinstance(fn, Attackable) and isinstance(model, Attackable)
    x = torch.tensor([[[0.1, 0.3]]], dtype=torch.float64)
    res = attack(fn, x, torch.tensor([0]), 0.5, norm="2", steps=10, restarts=2)
    assert bool(res.found[0]) and res.inputs.shape == x.shape and float(res.inputs[0, 0, 0]) < 0


@pytest.mark.parametrize("loss", ["margin", "ce"])
@pytest.mark.parametrize("norm", ["2", "inf"])
def test_finds_a_counterexample_on_a_trivially_non_robust_linear_model(norm, loss):
    model = _linear([[1.0, 0.0], [-1.0, 0.0]])  # class 0 exactly when x0 > 0
    x = torch.tensor([[0.1, 0.4], [0.05, -0.2]], dtype=torch.float64)
    labels = torch.tensor([0, 0])
    res = attack(model, x, labels, 0.3, norm=norm, loss=loss, steps=20, restarts=2, seed=1)
    assert res.found.all()
    assert (res.inputs[:, 0] < 0).all()  # the model's class really changed
    assert (vector_norm(res.inputs - x, norm, axis=1) <= 0.3).all()
    assert torch.equal(res.found, in_set(res.inputs, center=x, radius=torch.full((2,), 0.3), norm=norm) &
                       (res.outputs.argmax(1) != labels))


@pytest.mark.parametrize("loss", ["margin", "ce"])
@pytest.mark.parametrize("norm", ["2", "inf"])
def test_a_point_it_cannot_break_is_never_reported_found(norm, loss):
    model = _linear([[1.0, 0.0], [-1.0, 0.0]])
    x = torch.tensor([[0.1, 0.4]], dtype=torch.float64)
    res = attack(model, x, torch.tensor([0]), 0.099, norm=norm, loss=loss, steps=50, restarts=5)
    assert not res.found.any()
    assert float(res.violation[0]) > 0 and float(res.inputs[0, 0]) > 0
    # the domain cuts off the other class: nothing to find although the bare ball crosses the boundary
    res = attack(model, x, torch.tensor([0]), 0.5, norm=norm, loss=loss, domain=(0.0, 1.0))
    assert not res.found.any() and float(res.inputs.min()) >= 0.0


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["2", "inf"]), loss=st.sampled_from(["margin", "ce"]),
       scale=st.floats(0.3, 3.0))
def test_found_exactly_when_the_boundary_is_inside_the_ball(seed, norm, loss, scale):
    gen = torch.Generator().manual_seed(seed)
    model = _linear(torch.randn(3, 4, generator=gen, dtype=torch.float64),
                    torch.randn(3, generator=gen, dtype=torch.float64))
    x = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    dist = _boundary_distance(model, x, norm)
    radius = scale * dist
    labels = model(x).argmax(1)
    res = attack(model, x, labels, radius, norm=norm, loss=loss, steps=30, restarts=3, seed=seed)
    # never a false report: found only where the closed form says a counterexample exists
    assert not (res.found & (radius < dist)).any()
    assert (vector_norm(res.inputs - x, norm, axis=1) <= radius).all()
    if loss == "margin":  # the targeted margin restarts reach any boundary comfortably inside the ball
        assert res.found[radius > 1.05 * dist].all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["2", "inf"]), radius=st.floats(0.01, 2.0),
       use_box=st.booleans())
def test_projections_stay_in_ball_and_box(seed, norm, radius, use_box):
    gen = torch.Generator().manual_seed(seed)
    center = torch.rand(6, 5, generator=gen, dtype=torch.float64)
    far = center + 3 * torch.randn(6, 5, generator=gen, dtype=torch.float64)
    lo, hi = (torch.zeros_like(center), torch.ones_like(center)) if use_box else (None, None)
    r = torch.full((6,), radius, dtype=torch.float64)
    assert in_set(clip_into_set(far, lo, hi, center, r, norm=norm), lo, hi, center, r, norm=norm).all()
    assert (vector_norm(project(far - center, radius, norm), norm, axis=1) <= radius * (1 + 1e-12)).all()
    if norm == "2" and use_box:
        assert in_set(project_l2_box(far, center, r, lo, hi), lo, hi, center, r).all()
    # every iterate the search keeps lies in the set: run it on a model that pushes points far out
    model = _linear(torch.randn(3, 5, generator=gen, dtype=torch.float64) * 10)
    found = pgd_search(model, objective("ce", torch.zeros(6, dtype=torch.long)), lo, hi, center=center, radius=r,
                       norm=norm, steps=6, restarts=2, seed=seed)
    box_lo = center - radius if lo is None else torch.maximum(lo, center - radius)
    box_hi = center + radius if hi is None else torch.minimum(hi, center + radius)
    tol = 1e-12 * (1 + radius)
    assert ((found.inputs >= box_lo - tol) & (found.inputs <= box_hi + tol)).all()
    assert (vector_norm(found.inputs - center, norm, axis=1) <= radius * (1 + 1e-12)).all()


def test_same_seed_same_result_and_shaped_inputs():
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.rand(5, 1, 2, 2, generator=gen, dtype=torch.float64)
    labels = model(x).argmax(1)
    runs = [attack(model, x, labels, 0.4, norm="inf", seed=3, steps=10) for _ in range(2)]
    assert torch.equal(runs[0].found, runs[1].found) and torch.equal(runs[0].inputs, runs[1].inputs)
    assert runs[0].inputs.shape == x.shape
    deltas = [pgd(model, x, labels, radius=0.4, norm="2", steps=5, seed=3) for _ in range(2)]
    assert torch.equal(deltas[0], deltas[1]) and deltas[0].shape == x.shape
    assert (vector_norm(deltas[0].flatten(1), "2", axis=1) <= 0.4 * (1 + 1e-12)).all()


def test_search_arguments_are_checked():
    model = _linear([[1.0, 0.0], [-1.0, 0.0]])
    x = torch.zeros(1, 2, dtype=torch.float64)
    obj = objective("margin", torch.tensor([0]))
    with pytest.raises(InputError):
        pgd_search(model, obj, center=x, radius=0.1, restarts=2, keep="last")
    with pytest.raises(InputError):
        pgd_search(model, obj)  # neither a box nor a ball
    with pytest.raises(InputError):
        attack(model, x, torch.tensor([0]), 0.1, loss="hinge")


@pytest.mark.parametrize("norm", ["2", "inf"])
@pytest.mark.parametrize("dim", [1, 2, 7])
def test_spread_points_lie_in_the_ball_cover_every_shell_and_come_in_opposite_pairs(norm, dim):
    gen = torch.Generator().manual_seed(dim)
    k, radius = 6, torch.tensor([0.5, 2.0, 1.0])
    pts = spread_in_ball((3, dim), k, radius, norm, gen)
    assert pts.shape == (3 * k, dim)
    size = vector_norm(pts, norm, axis=1).reshape(3, k)
    assert (size <= radius[:, None] * (1 + 1e-6)).all()
    # one point in each of the k equal-volume shells: sorted radii fraction^d fall one per interval [j/k, (j+1)/k)
    shell = torch.floor((size / radius[:, None]) ** dim * k).clamp(max=k - 1).sort(dim=1).values
    assert torch.equal(shell, torch.arange(k, dtype=shell.dtype).expand(3, k))
    # consecutive points of a row pair up along opposite directions
    unit = (pts / vector_norm(pts, "2", axis=1)[:, None]).reshape(3, k // 2, 2, dim)
    torch.testing.assert_close(unit[:, :, 0], -unit[:, :, 1])


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_spread_starts_keep_the_first_start_at_the_centre_and_stay_in_the_set(norm):
    model = _linear([[1.0, 0.0], [-1.0, 0.0]])
    x = torch.tensor([[0.5, 0.5], [0.2, 0.9]], dtype=torch.float64)
    lo, hi = torch.zeros_like(x), torch.ones_like(x)
    r = torch.full((2,), 0.3, dtype=torch.float64)
    found = pgd_search(model, objective("margin", torch.zeros(2, dtype=torch.long)), lo, hi, center=x, radius=r,
                       norm=norm, steps=0, restarts=1, starts="spread")
    # one start: the centre of an L2 ball, the midpoint of the box an L∞ ball makes with the domain
    first = x if norm == "2" else (torch.maximum(lo, x - r[:, None]) + torch.minimum(hi, x + r[:, None])) / 2
    torch.testing.assert_close(found.inputs, first)
    found = pgd_search(model, objective("margin", torch.zeros(2, dtype=torch.long)), lo, hi, center=x, radius=r,
                       norm=norm, steps=5, restarts=8, starts="spread", seed=1)
    assert in_set(found.inputs, lo - 1e-12, hi + 1e-12, x, r * (1 + 1e-9), norm=norm).all()
    res = attack(model, x, torch.zeros(2, dtype=torch.long), 0.6, norm=norm, starts="spread", restarts=4)
    assert res.found.all()


def _bump(centre, width):
    """Class 1 only within L1 distance ``width``·0.5 of ``centre``: a pocket no gradient outside it leads to."""
    centre = torch.as_tensor(centre, dtype=torch.float64)

    def model(x):
        inside = torch.relu(1 - (x - centre).abs().sum(1) / width)
        return torch.stack([torch.full_like(inside, 0.5), inside], 1)

    return model


@pytest.mark.parametrize("norm", ["2", "inf"])
def test_random_search_finds_a_flat_pocket_and_reports_only_confirmed_points_in_the_set(norm):
    model = _bump([0.3, -0.2], 0.1)
    x = torch.tensor([[0.0, 0.0], [3.0, 3.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0])
    assert not attack(model, x, labels, 0.45, norm=norm, steps=30, restarts=1).found.any()   # flat: no gradient
    res = random_search(model, x, labels, 0.45, norm=norm, samples=2000, seed=0, chunk=1000)
    assert res.found.tolist() == [True, False]
    assert in_set(res.inputs, center=x, radius=torch.full((2,), 0.45), norm=norm).all()
    assert int(res.outputs[0].argmax()) == 1
    # the domain cuts the pocket off: nothing is found, every point stays in the domain
    res = random_search(model, x, labels, 0.45, norm=norm, samples=500, domain=(0.0, 5.0))
    assert not res.found.any() and float(res.inputs.min()) >= 0.0
