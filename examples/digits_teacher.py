"""Train a small CNN teacher on scikit-learn's digits and save it as ONNX, with the data as a .npy file.

    python examples/digits_teacher.py --out digits          # digits/teacher.onnx, digits/digits.npy
    pacverify certify digits/teacher.onnx --guarantee mass --data digits/digits.npy --domain 0,1 \
        --norm inf --delta 0.01 --eps 0.05 --eta 0.01 --kappa 0.9 --out digits/cert

docs/quickstart-real-data.md walks through it. The rows are the 1,797 digits of scikit-learn (8×8 grey levels
0–16) scaled to [0, 1], shuffled with the seed, shape (N, 1, 8, 8). The teacher trains on all of them: the
certificate is about the distribution the rows are drawn from, not about a test split.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn


def digits(seed: int = 0, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The scikit-learn digits as float32 (N, 1, 8, 8) in [0, 1] and their labels, shuffled with ``seed``."""
    from sklearn.datasets import load_digits

    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))[:rows]
    x = (data.images[order] / 16.0).astype(np.float32)[:, None]
    return x, data.target[order].astype(np.int64)


def cnn() -> nn.Module:
    """Conv(1→8, 3×3) → ReLU → Conv(8→16, 3×3, stride 2) → ReLU → Linear(256 → 10): ops the engine reads."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10))


def train(x: np.ndarray, y: np.ndarray, *, epochs: int = 15, seed: int = 0, model=cnn) -> nn.Module:
    """Adam, cross-entropy, batches of 64, on ``model()`` (default :func:`cnn`); returns it in eval mode."""
    torch.manual_seed(seed)
    model = model()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


def save(model: nn.Module, x: np.ndarray, out: Path) -> tuple[Path, Path]:
    """``out/teacher.onnx`` and ``out/digits.npy``. pacverify's exporter checks that onnxruntime reproduces the model
    and that every op is one its verifier reads, so the teacher oracle can prove the teacher's own radii."""
    from pacverify.onnx_io.export import export_onnx

    out.mkdir(parents=True, exist_ok=True)
    onnx_path, data_path = out / "teacher.onnx", out / "digits.npy"
    export_onnx(model, onnx_path, tuple(x.shape[1:]), sample=x)
    np.save(data_path, x)
    return onnx_path, data_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="digits", help="output directory (default ./digits)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--rows", type=int, help="use only the first ROWS shuffled digits")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x, y = digits(args.seed, args.rows)
    model = train(x, y, epochs=args.epochs, seed=args.seed)
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    onnx_path, data_path = save(model, x, Path(args.out))
    print(f"teacher: {onnx_path} (training accuracy {accuracy:.3f}); data: {data_path} ({len(x)} rows)")


if __name__ == "__main__":
    main()
