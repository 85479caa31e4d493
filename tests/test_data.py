"""Samplers: array files, user callables, the synthetic Gaussians; checks, seeds, disjoint fresh draws."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pacverify.data import (
    DUPLICATE_LIMIT,
    ArraySampler,
    CallableSampler,
    TruncatedGaussians,
    check_duplicates,
    check_points,
    count_duplicates,
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


def test_synthetic_names_and_a_domain_that_holds_the_draw():
    sampler = make_sampler("synthetic:gaussians:5", seed=0, domain=(-6, 6))
    x = sampler.draw(100)
    assert x.shape == (100, 5) and x.min() >= -6 and x.max() <= 6
    np.testing.assert_array_equal(x, make_sampler("gaussians:5", seed=0, kind="synthetic").draw(100))  # not moved
    with pytest.raises(InputError, match="unknown synthetic"):
        make_sampler("synthetic:moons", seed=0)
    with pytest.raises(InputError, match=r"--domain .*LO < HI.*\(1, 0\)"):
        make_sampler("synthetic:gaussians", seed=0, domain=(1, 0))
    assert make_sampler("synthetic:gaussians", seed=0, domain="-3,3").domain == (-3.0, 3.0)


# --- the sample is never moved into the domain; points outside are refused ---------------------------------------

def test_points_outside_the_domain_are_refused_never_clipped(tmp_path):
    rows = np.array([[0.1, 0.2], [0.5, 1.5], [0.3, 0.3], [-2.0, 0.0]], dtype=np.float32)
    sampler = ArraySampler(seed=0, rows=rows, source="pts.npy", domain=(0.0, 1.0))
    for draw in (lambda: sampler.draw(4), lambda: sampler.fresh(4), lambda: sampler.preview(4)):
        with pytest.raises(InputError) as info:
            draw()
        text = str(info.value)
        assert "pts.npy" in text and "2 of the 4 drawn points" in text and "[0, 1]" in text
        assert "never moves" in text and "--domain" in text and "\n" not in text
    inside = ArraySampler(seed=0, rows=rows[[0, 2]], domain=(0.0, 1.0))
    assert sorted(map(tuple, inside.draw(2))) == sorted(map(tuple, rows[[0, 2]]))  # unchanged values
    with pytest.raises(InputError, match=r"first: row \d+, coordinate \d+ = "):
        make_sampler("synthetic:gaussians", seed=0, domain=(0, 1)).draw(50)
    with pytest.raises(InputError, match="outside the domain box"):
        TruncatedGaussians(seed=0, domain=(0, 1)).draw_labeled(50)


def test_user_sampler_outside_the_domain_is_refused(tmp_path):
    module = tmp_path / "wide.py"
    module.write_text("def f(n, rng):\n    return rng.uniform(-5, 5, size=(n, 3))\n")
    with pytest.raises(InputError, match=r"sampler .*wide.py:f: \d+ of the 40 drawn points lie outside"):
        make_sampler(f"{module}:f", seed=0, domain="-1,1").draw(40)


# --- exact duplicate rows ------------------------------------------------------------------------------------------

def test_count_duplicates_counts_rows_that_repeat_an_earlier_one():
    assert count_duplicates(np.zeros((0, 2))) == 0
    assert count_duplicates(ROWS) == 0
    assert count_duplicates(np.repeat(ROWS, 3, axis=0)) == 40
    assert count_duplicates(np.array([[0.0, -0.0], [-0.0, 0.0]], dtype=np.float32)) == 1  # ±0 are equal
    images = np.zeros((5, 1, 2, 2), dtype=np.float32)
    images[0, 0, 0, 0] = 1
    assert count_duplicates(images) == 3


def test_the_paper_audit_case_40_points_repeated_to_3720_rows_is_refused():
    rows = np.repeat(np.random.default_rng(0).normal(size=(40, 2)), 93, axis=0).astype(np.float32)
    sampler = ArraySampler(seed=0, rows=rows, source="dups.npy")
    with pytest.raises(InputError) as info:
        sampler.draw(3720)
    text = str(info.value)
    assert "dups.npy: 3680 of the 3720 drawn points" in text and "1%" in text and "--allow-duplicates" in text
    allowed = ArraySampler(seed=0, rows=rows, source="dups.npy", allow_duplicates=True)
    assert count_duplicates(allowed.draw(3720)) == 3680
    with pytest.raises(InputError, match="allow_duplicates must be true or false"):
        make_sampler("synthetic:gaussians", seed=0, allow_duplicates="yes")
    assert make_sampler("synthetic:gaussians", seed=0, allow_duplicates=True).allow_duplicates


def test_duplicate_limit_is_one_percent():
    base = np.random.default_rng(1).normal(size=(300, 2)).astype(np.float32)
    three = np.concatenate([base[:297], base[:3]])     # 3 duplicates in 300 rows: exactly 1%, accepted
    assert check_duplicates(three, name="d") == 3
    four = np.concatenate([base[:296], base[:4]])      # 4 in 300: refused
    with pytest.raises(InputError, match="4 of the 300 drawn points"):
        check_duplicates(four, name="d")
    assert check_duplicates(four, name="d", allow=True) == 4
    assert DUPLICATE_LIMIT == 0.01
    with pytest.raises(InputError, match="1 of the 10 drawn points"):  # below 100 points: any repeat
        check_duplicates(np.concatenate([base[:9], base[:1]]), name="d")


def test_fresh_draws_are_not_refused_for_duplicates():
    rows = np.repeat(ROWS, 2, axis=0)
    sampler = ArraySampler(seed=0, rows=rows)
    assert len(sampler.fresh(40)) == 40


# --- what check_points refuses -------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, words", [
    (np.zeros((0, 3)), ["holds no points", "0 rows"]),
    (np.zeros(0), ["holds no points"]),
    (np.zeros((4, 0)), ["no features"]),
    (np.ones((3, 2)) * (1 + 2j), ["complex", "imaginary"]),
    (np.array([[1e300, 0.0]]), ["float32 range", "row 0"]),
    (np.array([[object(), 1]], dtype=object), ["numbers"]),
])
def test_check_points_refuses_with_one_sentence(bad, words):
    with pytest.raises(InputError) as info:
        check_points(bad, name="pts")
    text = str(info.value)
    assert text.startswith("pts: ") and "\n" not in text
    for word in words:
        assert word in text


def test_empty_and_complex_files_are_refused(tmp_path):
    np.save(tmp_path / "zero.npy", np.zeros((0, 2), dtype=np.float32))
    np.save(tmp_path / "complex.npy", np.ones((5, 2), dtype=np.complex64))
    (tmp_path / "header.csv").write_text("a,b\n")
    np.savez(tmp_path / "none.npz")
    for name, word in (("zero.npy", "holds no points"), ("complex.npy", "complex"), ("header.csv", "holds no points"),
                       ("none.npz", "holds no arrays")):
        with pytest.raises(InputError, match=word):
            make_sampler(str(tmp_path / name), seed=0)


USER_ERRORS = """
def boom(n, rng):
    raise ValueError("no data today\\nsecond line")

def memory(n, rng):
    raise MemoryError()
"""


def test_a_sampler_that_raises_is_an_input_error(tmp_path):
    module = tmp_path / "errs.py"
    module.write_text(USER_ERRORS)
    with pytest.raises(InputError) as info:
        make_sampler(f"{module}:boom", seed=0).draw(5)
    assert str(info.value) == f"sampler {module}:boom failed when asked for 5 points: ValueError: no data today"
    with pytest.raises(InputError, match="ran out of memory"):
        make_sampler(f"{module}:memory", seed=0).draw(5)
    (tmp_path / "broken.py").write_text("raise RuntimeError('at import')\n")
    with pytest.raises(InputError, match="failed: RuntimeError: at import"):
        load_callable(f"{tmp_path / 'broken.py'}:f")


def test_a_draw_too_large_for_memory_is_refused_before_allocating():
    with pytest.raises(InputError) as info:
        TruncatedGaussians(seed=0, dim=2).draw(10**12)
    text = str(info.value)
    assert "GiB of memory" in text and "fewer points" in text
