"""The "without transfer learning" baseline: a small CNN trained from random weights."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class SimpleCNN(nn.Module):
    """Three conv-BN-ReLU-pool blocks, global average pooling and a linear head."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.block1 = _block(3, width)
        self.block2 = _block(width, width * 2)
        self.block3 = _block(width * 2, width * 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
