"""Figures for the certificate report, as PNG bytes. Rendering only: every number is computed elsewhere.

Uses ``matplotlib.figure.Figure`` directly (no pyplot, no global backend state).
"""
from __future__ import annotations

import io

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from pacverify import pac

STATUS_COLOURS = {"verified": "#2a9d4a", "falsified": "#d62728", "unknown": "#ff9f1c", "not confident": "#9a9a9a",
                  "disagree": "#7b2cbf"}


def _png(fig: Figure, *, tight: bool = True) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight" if tight else None)
    return buffer.getvalue()


def split_at_cap(radii: np.ndarray, cap: float | None) -> tuple[np.ndarray, int]:
    """The finite radii below the search cap, and how many reached it (the search proved the cap itself: their true
    certified radius may be anything above it)."""
    radii = np.asarray(radii, dtype=float)
    radii = radii[np.isfinite(radii)]
    if cap is None or cap <= 0:
        return radii, 0
    at_cap = radii >= cap * (1 - 1e-12)
    return radii[~at_cap], int(at_cap.sum())


def radius_histogram(radii: np.ndarray, three_delta: float, cap: float | None = None) -> bytes:
    """Histogram of the student's certified radii at the required points, with 3δ marked; radii that reached the
    search's ``cap`` are one separate bar labelled "≥ cap" (they are lower bounds there, not a pile-up)."""
    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.add_subplot()
    below, at_cap = split_at_cap(radii, cap)
    width = None
    if below.size:
        counts, edges, _ = ax.hist(below, bins=min(40, max(5, below.size // 5)), color="#4c78a8")
        width = float(edges[1] - edges[0])
    if at_cap and cap is not None:
        width = width or cap / 20
        ax.bar(cap + width, at_cap, width=width, align="edge", color="#9ecae9", edgecolor="#4c78a8",
               label=f"≥ cap {cap:g} ({at_cap} points)")
    ax.axvline(three_delta, color="#d62728", linestyle="--", label=f"3δ = {three_delta:g}")
    ax.set_xlabel("certified radius r_i of the student")
    ax.set_ylabel("points")
    ax.legend()
    return _png(fig)


def rho_histogram(rho: np.ndarray) -> bytes:
    """Distribution of ρ_i = ‖∇g_S‖ / ‖∇g_T‖ (log scale), with ρ = 1 marked (:func:`rho_figure`)."""
    return _png(rho_figure(rho))


def rho_figure(rho: np.ndarray) -> Figure:
    """:func:`rho_histogram`'s figure. Tick labels: powers of ten, plus 2 and 5 times them when the data span under
    two decades; no minor labels (they overlapped into an unreadable band)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.add_subplot()
    rho = np.asarray(rho, dtype=float)
    rho = rho[np.isfinite(rho) & (rho > 0)]
    if rho.size:
        lo, hi = np.log10(rho.min()), np.log10(rho.max())
        pad = max(0.05, (0.4 - (hi - lo)) / 2)  # at least 0.4 decades: equal ρ make one visible bar, not a hairline
        bins = np.logspace(lo - pad, hi + pad, 30)
        ax.hist(rho, bins=bins.tolist(), color="#72b7b2")
        ax.set_xscale("log")
        decades = np.log10(max(rho.max(), 1.0)) - np.log10(min(rho.min(), 1.0))
        subs = (1.0, 2.0, 5.0) if decades < 2 else (1.0,)
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.axvline(1.0, color="black", linestyle="--", label="ρ = 1")
    ax.set_xlabel("margin-gradient ratio ρ_i (student / teacher)")
    ax.set_ylabel("points")
    ax.legend()
    return fig


def sample_size_curve(dim: int, eta: float, eps: float, norm: str, bound: str = "thm38") -> bytes:
    """s(m, ε, η) of the ε-net ``bound`` that sized the sample ("thm38": Thm 3.8; "tight": double sampling) against
    ε for this m and η, with the chosen ε marked."""
    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.add_subplot()
    grid = np.geomspace(min(eps, 0.01) / 2, 0.5, 80)
    sizes = [pac.sample_size(dim, e, eta, norm=norm, bound=bound) for e in grid]
    ax.loglog(grid, sizes, color="#4c78a8")
    chosen = pac.sample_size(dim, eps, eta, norm=norm, bound=bound)
    ax.scatter([eps], [chosen], color="#d62728", zorder=3, label=f"ε = {eps:g}: s = {chosen}")
    ax.set_xlabel("ε")
    ax.set_ylabel(f"sample size s (m = {dim}, η = {eta:g})")
    ax.legend()
    return _png(fig)


def decision_map(grid_x: np.ndarray, grid_y: np.ndarray, grid_label: np.ndarray, points: np.ndarray,
                 status: np.ndarray) -> bytes:
    """2-D inputs only: the teacher's decision regions with sample points coloured by verdict."""
    fig = Figure(figsize=(5.5, 5.0))
    ax = fig.add_subplot()
    n_classes = int(grid_label.max()) + 1 if grid_label.size else 1
    palette = ["#dbe9f6", "#fde2cf", "#e0f0d9", "#eadcf0", "#f6f1c8", "#d9f0ee"]
    cmap = ListedColormap([palette[i % len(palette)] for i in range(max(n_classes, 2))])
    ax.pcolormesh(grid_x, grid_y, grid_label, cmap=cmap, shading="auto", vmin=0, vmax=max(n_classes, 2) - 1)
    for name, colour in STATUS_COLOURS.items():
        mask = status == name
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=6, color=colour, label=f"{name} ({int(mask.sum())})")
    ax.set_xlabel("x_0")
    ax.set_ylabel("x_1")
    ax.set_title("teacher decision regions and sample points")
    ax.legend(loc="best", fontsize=8, markerscale=2)
    return _png(fig)


def confidence_map_plot(lower: np.ndarray, upper: np.ndarray, confidence: np.ndarray, steps: list,
                        delta: float, kappa: float, holdout_confidence: np.ndarray | None = None,
                        holdout_member: np.ndarray | None = None, holdout_radius: float | None = None) -> bytes:
    """Mass mode's robustness–confidence plot: each sample point at (l_i, conf_i) with a bar up to its attack radius
    u_i (to the right edge when none was found), M(κ) as a step curve, the requested (δ, κ) marked, and the
    held-out members of R(M(κ), κ) at M(κ)."""
    fig = Figure(figsize=(6.2, 4.0))
    ax = fig.add_subplot()
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    conf = np.asarray(confidence, dtype=float)
    finite = upper[np.isfinite(upper)]
    right = float(max(lower.max(initial=0.0), finite.max(initial=0.0), 2 * delta)) * 1.05
    bar_end = np.where(np.isfinite(upper), upper, right)
    ax.hlines(conf, lower, bar_end, colors="#c9d6e8", linewidth=0.6, zorder=1)
    ax.scatter(lower, conf, s=5, color="#4c78a8", zorder=2, label="lower radius l_i (bar: up to attack radius u_i)")
    bad = upper < lower
    if bad.any():
        ax.scatter(upper[bad], conf[bad], s=30, marker="x", color="#d62728", zorder=4, label="u_i < l_i (refuted)")
    if steps:
        ks = [float(k) for k, _ in steps]
        ms = [min(float(m), right) for _, m in steps]
        ax.step(ms, ks, where="pre", color="black", linewidth=1.2, zorder=3, label="M(κ)")
    ax.axvline(delta, color="#d62728", linestyle="--", linewidth=1, label=f"δ = {delta:g}")
    ax.axhline(kappa, color="#7b2cbf", linestyle=":", linewidth=1, label=f"κ = {kappa:g}")
    if holdout_confidence is not None and holdout_member is not None and holdout_radius is not None \
            and np.asarray(holdout_member).any():
        hc = np.asarray(holdout_confidence, dtype=float)[np.asarray(holdout_member, bool)]
        ax.scatter(np.full(hc.size, min(holdout_radius, right)), hc, s=25, marker="D", color="#ff9f1c", zorder=5,
                   label="held-out member of R(M(κ), κ)")
    ax.set_xlim(0, right)
    ax.set_xlabel("robust radius of the teacher (lower bound l_i)")
    ax.set_ylabel("teacher confidence conf_T(x_i)")
    ax.legend(fontsize=7, loc="lower right")
    return _png(fig)


def counterexample_image(point: np.ndarray, cex: np.ndarray, *, point_title: str = "point",
                         cex_title: str = "counterexample", diff_title: str = "change") -> bytes:
    """A point, its counterexample and their difference side by side.

    ``point`` and ``cex`` are (H, W) grey images or (H, W, 3) colour images of the same shape. Grey images share one
    colour scale (shown beside the counterexample); colour images are mapped into [0, 1] by one affine map common to
    both. The difference cex − point (for colour images, its mean over the channels) is on a diverging scale
    symmetric about 0, so unchanged pixels are white. The panels are placed by hand (no layout engine, no tight
    bounding box): a report draws up to a dozen of these.
    """
    p, c = np.asarray(point, dtype=float), np.asarray(cex, dtype=float)
    if p.shape != c.shape or p.ndim not in (2, 3) or (p.ndim == 3 and p.shape[2] != 3):
        raise ValueError(f"point and counterexample must be two (H, W) or (H, W, 3) images, got {p.shape}, {c.shape}")
    fig = Figure(figsize=(7.4, 2.4))
    width, bottom, height = 0.25, 0.04, 0.78
    axes = [fig.add_axes((left, bottom, width, height)) for left in (0.01, 0.28, 0.64)]
    bars = [fig.add_axes((left, bottom + 0.04, 0.012, height - 0.08)) for left in (0.545, 0.905)]
    lo, hi = float(min(p.min(), c.min())), float(max(p.max(), c.max()))
    hi = hi if hi > lo else lo + 1.0
    if p.ndim == 3:
        axes[0].imshow(np.clip((p - lo) / (hi - lo), 0, 1), interpolation="nearest")
        axes[1].imshow(np.clip((c - lo) / (hi - lo), 0, 1), interpolation="nearest")
        bars[0].set_visible(False)
        diff = (c - p).mean(axis=2)
    else:
        axes[0].imshow(p, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        shown = axes[1].imshow(c, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        fig.colorbar(shown, cax=bars[0], ticks=np.linspace(lo, hi, 3), format="%.3g")
        diff = c - p
    limit = float(np.abs(diff).max()) or 1.0
    change = axes[2].imshow(diff, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    fig.colorbar(change, cax=bars[1], ticks=[-limit, 0.0, limit], format="%.2g")
    for bar in bars:
        bar.tick_params(labelsize=8)
    for ax, title in zip(axes, (point_title, cex_title, diff_title), strict=True):
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    return _png(fig, tight=False)
