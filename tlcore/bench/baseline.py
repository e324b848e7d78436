"""The baseline: the PyTorch transfer-learning tutorial loop as users write it, and the floor."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.data import DataLoader

from tlcore.models import backbones

# ---- the baseline: the PyTorch tutorial loop ----------------------------------------------


def tutorial_loop(model: nn.Module, loaders: dict[str, DataLoader], epochs: int, lr: float,
                  device: torch.device, frozen_bn_eval: bool = False) -> float:
    """`train_model` of the PyTorch transfer-learning tutorial; returns the best val accuracy.

    The optimizer covers the parameters that require grad (the head for feature extraction),
    Adam at `lr` as in tlcore's rows, with no LR schedule. `frozen_bn_eval` keeps frozen
    BatchNorms in eval mode while training (as tlcore does); the tutorial does not.
    """
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    best_acc, best_state = 0.0, copy.deepcopy(model.state_dict())
    for _epoch in range(epochs):
        for phase in ("train", "val"):
            model.train(phase == "train")  # as the tutorial: frozen BatchNorms in train mode too
            if frozen_bn_eval:
                for m in model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.weight.requires_grad:
                        m.eval()
            running_loss, running_corrects = 0.0, 0
            for inputs, labels in loaders[phase]:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                running_loss += loss.item() * inputs.size(0)
                running_corrects += (outputs.argmax(1) == labels).sum().item()
            acc = running_corrects / len(loaders[phase].dataset)
            if phase == "val" and acc > best_acc:
                best_acc, best_state = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best_acc


def baseline_model(backbone: str, num_classes: int, frozen: bool, device: torch.device) -> nn.Module:
    """tlcore's backbone with ImageNet weights and a new head; all but the head frozen if asked."""
    torch.manual_seed(0)  # same head initialisation as tlcore's runs (seed 0)
    model = backbones.build_model(backbone, num_classes)
    if frozen:
        head = backbones.get_module(model, backbones.get_backbone(backbone).head)
        for p in model.parameters():
            p.requires_grad = False
        for p in head.parameters():
            p.requires_grad = True
    return model.to(device)


def loaders_for(sets: dict, batch_size: int, workers: int) -> dict[str, DataLoader]:
    return {split: DataLoader(ds, batch_size=batch_size, shuffle=split == "train", num_workers=workers)
            for split, ds in sets.items()}


@torch.inference_mode()
def floor_pass(model: nn.Module, sets: dict, batch_size: int, workers: int, device: torch.device) -> int:
    """One eval-mode forward over train + val with the baseline's decode; returns the image count."""
    model.eval()
    n = 0
    for loader in loaders_for(sets, batch_size, workers).values():
        for inputs, _ in loader:
            model(inputs.to(device))
            n += len(inputs)
    return n


