"""Shared helpers of the ``benchmarks/repro_*.py`` scripts (issue 15): threads, the machine line, the command line,
seeded data and teachers, Clopper–Pearson intervals and whole-file writes of the results.

Not a pacverify module: the scripts import it from ``benchmarks/`` (each puts the repository root and this folder on
``sys.path``, so they run from a checkout without an install).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported (2 shared cores, other jobs run too)

import platform  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

torch.set_num_threads(1)


def machine() -> str:
    """One line naming the machine the numbers were measured on."""
    try:
        load = ", load average at the start {:.2f}".format(os.getloadavg()[0])
    except OSError:  # pragma: no cover - not on every platform
        load = ""
    cpu = platform.processor() or platform.machine()
    return (f"{cpu} CPU, {os.cpu_count()} cores (shared with other jobs{load}), {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread, no GPU used")


def command() -> str:
    """The command line that produced the results, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_text = str(script.relative_to(REPO))
    except ValueError:
        script_text = str(script)
    return " ".join(["python", script_text, *map(shlex.quote, sys.argv[1:])])


def header(title: str, started: float, extra: str = "") -> list[str]:
    """The first lines of every results file: title, command, machine, wall time."""
    lines = [f"# {title}", "",
             f"Command: `{command()}` (wall time {time.perf_counter() - started:.0f} s).", "",
             f"Machine: {machine()}.", ""]
    if extra:
        lines += [extra, ""]
    return lines


def write_text(path: Path, text: str) -> Path:
    """Write the whole file at once (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    tmp.replace(path)
    return path


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper–Pearson interval for k successes in n trials."""
    from scipy import stats

    if n == 0:
        return 0.0, 1.0
    alpha = 1 - confidence
    lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def table(head: list[str], rows: list[list], align: str | None = None) -> list[str]:
    """A Markdown table (every cell through ``str``)."""
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(align or ["---"] * len(head)) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if isinstance(value, float) and np.isinf(value):
        return "∞"
    return f"{value:.{digits}f}"


# --- data and teachers ---------------------------------------------------------------------------------------------

def digits_flat(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 digits as flat float32 rows in [0, 1] (64 pixels), split 80/20 with ``seed``:
    (x_train, y_train, x_test, y_test)."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def gaussians(dim: int, n: int, seed: int, stream: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n labelled draws of the truncated Gaussians of 004 §5 in R^dim (pacverify.data.TruncatedGaussians)."""
    from pacverify.data import TruncatedGaussians

    return TruncatedGaussians(seed=seed, dim=dim).draw_labeled(n, stream=stream)


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def pgd_labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor, radius: float, *, norm: str = "2",
               steps: int = 10, seed: int = 0, domain: tuple[float, float] | None = None) -> torch.Tensor:
    """x + δ from pacverify's PGD (cross-entropy ascent against the given labels y)."""
    from pacverify.attacks import pgd

    delta = pgd(model, x, y, radius=radius, norm=norm, steps=steps, seed=seed, domain=domain)
    return (x + delta).detach()


def train_classifier(x: np.ndarray, y: np.ndarray, sizes: list[int], *, epochs: int, seed: int,
                     adversarial: float = 0.0, norm: str = "2", attack_steps: int = 5, lr: float = 3e-3,
                     domain: tuple[float, float] | None = None) -> nn.Sequential:
    """A ReLU MLP trained with Adam on cross-entropy; ``adversarial`` > 0: PGD adversarial training (Madry et al.)
    at that radius (each batch replaced by its ``attack_steps``-step PGD points, cross-entropy on them)."""
    torch.manual_seed(seed)
    model = mlp(sizes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        for step, idx in enumerate(torch.randperm(len(xt), generator=gen).split(64)):
            xb, yb = xt[idx], yt[idx]
            if adversarial > 0:
                model.eval()
                # ramp the radius over the first third of training (a common warm start of adversarial training)
                r = adversarial * min(1.0, (epoch + 1) / max(1, epochs // 3))
                xb = pgd_labels(model, xb, yb, r, norm=norm, steps=attack_steps, seed=seed * 100003 + step,
                                domain=domain)
                model.train()
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
    return model.eval().requires_grad_(False)


def robust_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, radius: float, *, norm: str = "2",
                    steps: int = 20, restarts: int = 2, seed: int = 0,
                    domain: tuple[float, float] | None = None) -> float:
    """Fraction of points classified as y and not broken by PGD (``restarts`` random starts, CE ascent) within
    ``radius``: an upper estimate of the robust accuracy (an attack only finds counterexamples)."""
    xt, yt = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    with torch.no_grad():
        ok = model(xt).argmax(1) == yt
    for r in range(restarts):
        adv = pgd_labels(model, xt, yt, radius, norm=norm, steps=steps, seed=seed + 7919 * r, domain=domain)
        with torch.no_grad():
            ok &= model(adv).argmax(1) == yt
    return float(ok.float().mean())
