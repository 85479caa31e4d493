"""Small networks for the verification tests: seeded random ReLU MLPs and hand-made ones."""
from __future__ import annotations

import torch

from pacverify.verify.network import Affine, Network, Relu


def random_net(sizes: tuple[int, ...], seed: int, *, dtype: torch.dtype = torch.float64,
               scale: float = 1.0) -> Network:
    """A ReLU MLP with layer widths ``sizes`` (input first) and N(0, scale²/fan_in) weights, N(0, 0.1) biases."""
    gen = torch.Generator().manual_seed(seed)
    layers: list = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = torch.randn(fan_out, fan_in, generator=gen, dtype=torch.float64) * scale / fan_in ** 0.5
        b = torch.randn(fan_out, generator=gen, dtype=torch.float64) * 0.1
        layers.append(Affine(w.to(dtype), b.to(dtype)))
        if i < len(sizes) - 2:
            layers.append(Relu())
    return Network(tuple(layers), (sizes[0],))


def sum_threshold_net(threshold: float = 0.9) -> Network:
    """2 inputs, 2 classes: z0 = threshold, z1 = x0 + x1 (through ReLUs), so the class at the origin
    is 0 and it changes exactly where x0 + x1 > threshold."""
    w1 = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dtype=torch.float64)
    w2 = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]], dtype=torch.float64)
    return Network((Affine(w1, torch.zeros(3, dtype=torch.float64)), Relu(),
                    Affine(w2, torch.tensor([threshold, 0.0], dtype=torch.float64))), (2,))
