"""Samplers: array files, user callables, the synthetic Gaussians; checks, seeds, disjoint fresh draws."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.data import (
    ArraySampler,
    CallableSampler,
    TruncatedGaussians,
    check_points,
    load_array,
    load_callable,
    make_sampler,
)
from pacverify.errors import InputError

ROWS = np.arange(60, dtype=np.float32).reshape(20, 3)


def _write(path, rows):
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, rows)
    elif suffix == ".npz":
        np.savez(path, x=rows, labels=np.zeros(len(rows)))
    elif suffix == ".pt":
        torch.save(torch.from_numpy(rows), path)
    else:
        path.write_text("a,b,c\n" + "\n".join(",".join(str(v) for v in row) for row in rows) + "\n")
    return path


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".csv"])
def test_array_files_round_trip(tmp_path, suffix):
    path = _write(tmp_path / f"points{suffix}", ROWS)
    np.testing.assert_array_equal(load_array(path), ROWS)
    sampler = make_sampler(str(path), seed=0)
    assert isinstance(sampler, ArraySampler) and sampler.input_shape == (3,)
    x = sampler.draw(20)
    assert x.dtype == np.float32
    assert sorted(map(tuple, x)) == sorted(map(tuple, ROWS))  # all rows, each once


def test_draw_is_seeded_without_replacement_and_fresh_is_disjoint():
    sampler = ArraySampler(seed=7, rows=ROWS)
    a, b = sampler.draw(12), sampler.draw(12)
    np.testing.assert_array_equal(a, b)
    assert len({tuple(r) for r in a}) == 12
    assert not np.array_equal(a, ArraySampler(seed=8, rows=ROWS).draw(12))
    fresh = sampler.fresh(8, after=12)
    assert not ({tuple(r) for r in a} & {tuple(r) for r in fresh})
    assert sampler.available_fresh(12) == 8


@settings(max_examples=40, deadline=None)
@given(n_rows=st.integers(2, 40), seed=st.integers(0, 2**32), data=st.data())
def test_fresh_rows_never_overlap_the_sample(n_rows, seed, data):
    n = data.draw(st.integers(1, n_rows - 1))
    k = data.draw(st.integers(1, n_rows - n))
    rows = np.arange(n_rows, dtype=np.float32)[:, None]
    sampler = ArraySampler(seed=seed, rows=rows)
    assert not set(sampler.draw(n)[:, 0]) & set(sampler.fresh(k, after=n)[:, 0])


def test_too_few_rows_names_the_numbers_and_the_options():
    sampler = ArraySampler(seed=0, rows=ROWS, source="points.npy")
    with pytest.raises(InputError) as info:
        sampler.draw(3720)
    text = str(info.value)
    for word in ("points.npy", "20 rows", "3720", "more data", "sampler", "eps", "eta"):
        assert word in text
    with pytest.raises(InputError, match="disjoint fresh"):
        sampler.fresh(10, after=15)


@pytest.mark.parametrize("bad, words", [
    (np.array([[0.0, np.nan], [1.0, 2.0]]), ["NaN or inf", "row 0"]),
    (np.array([[0.0, 1.0], [np.inf, 2.0]]), ["NaN or inf", "row 1"]),
    (np.arange(5.0), ["one row per point", "(N, 1)"]),
    (np.array([["a", "b"]]), ["numbers"]),
])
def test_bad_points_are_rejected(bad, words):
    with pytest.raises(InputError) as info:
        check_points(bad, name="pts")
    for word in words:
        assert word in str(info.value)


def test_shape_mismatch_is_rejected():
    with pytest.raises(InputError, match=r"shape \(3,\)"):
        check_points(np.zeros((4, 2)), name="pts", input_shape=(3,))


def test_file_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_array(tmp_path / "missing.npy")
    (tmp_path / "p.txt").write_text("1,2\n")
    with pytest.raises(InputError, match="unknown format"):
        load_array(tmp_path / "p.txt")
    np.savez(tmp_path / "two.npz", a=ROWS, b=ROWS)
    with pytest.raises(InputError, match="several arrays"):
        load_array(tmp_path / "two.npz")
    (tmp_path / "bad.csv").write_text("1,2\n3,x\n")
    with pytest.raises(InputError, match="must be a number"):
        load_array(tmp_path / "bad.csv")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(InputError, match="could not be read"):
        load_array(tmp_path / "junk.npy")


USER_SAMPLER = """
import numpy as np

def uniform(n, rng):
    return rng.uniform(-1.0, 1.0, size=(n, 4))

def wrong_count(n, rng):
    return rng.uniform(size=(n + 1, 4))
"""


def test_callable_sampler_from_a_file(tmp_path):
    module = tmp_path / "my_sampler.py"
    module.write_text(USER_SAMPLER)
    sampler = make_sampler(f"{module}:uniform", seed=3)
    assert isinstance(sampler, CallableSampler)
    x = sampler.draw(50)
    assert x.shape == (50, 4) and x.dtype == np.float32 and np.abs(x).max() <= 1
    np.testing.assert_array_equal(x, sampler.draw(50))
    assert not np.array_equal(x, sampler.fresh(50))  # an independent stream
    with pytest.raises(InputError, match="returned 11 rows when asked for 10"):
        make_sampler(f"{module}:wrong_count", seed=0).draw(10)


def test_callable_spec_errors(tmp_path):
    with pytest.raises(InputError, match="MODULE:FUNCTION"):
        load_callable("no_colon")
    with pytest.raises(InputError, match="cannot import"):
        load_callable("surely_not_a_module_xyz:f")
    with pytest.raises(InputError, match="has no function"):
        load_callable("math:not_there")


@pytest.mark.parametrize("dim", [2, 8])
def test_truncated_gaussians_are_separated_by_the_hyperplane(dim):
    g = TruncatedGaussians(seed=1, dim=dim)
    x, side = g.draw_labeled(2000)
    assert x.shape == (2000, dim) and x.dtype == np.float32
    signed = x.sum(axis=1) / math.sqrt(dim)
    assert np.all(np.abs(signed) >= g.gap / 2 - 1e-5)  # the gap around x·1 = 0
    assert np.all((signed > 0) == (side == 0))
    assert 0.45 < side.mean() < 0.55
    # along the normal each class is N(±mu, sigma^2) truncated: its mean lies beyond mu
    assert abs(np.abs(signed).mean() - g.mu) < 0.1
    # orthogonal to the normal: N(0, sigma^2) per direction
    ortho = x - np.outer(signed, np.ones(dim) / math.sqrt(dim))
    assert abs(ortho.var(axis=0).sum() - (dim - 1) * g.sigma**2) < 0.15 * dim


def test_synthetic_names_and_clipping():
    sampler = make_sampler("synthetic:gaussians:5", seed=0, domain=(-0.5, 0.5))
    x = sampler.draw(100)
    assert x.shape == (100, 5) and x.min() >= -0.5 and x.max() <= 0.5
    np.testing.assert_array_equal(x, make_sampler("gaussians:5", seed=0, kind="synthetic", domain=(-0.5, 0.5)).draw(100))
    with pytest.raises(InputError, match="unknown synthetic"):
        make_sampler("synthetic:moons", seed=0)
    with pytest.raises(InputError, match=r"--domain .*LO < HI.*\(1, 0\)"):
        make_sampler("synthetic:gaussians", seed=0, domain=(1, 0))
    assert make_sampler("synthetic:gaussians", seed=0, domain="-3,3").domain == (-3.0, 3.0)
