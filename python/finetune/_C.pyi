"""Type stub for finetune._C, the compiled core (csrc/bindings.cpp)."""

from typing import Any, Callable

import torch

class TrainConfig:
    task: str
    epochs: int
    batch_size: int
    eval_batch_size: int
    optimizer: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    beta1: float
    beta2: float
    eps: float
    sample_fraction: float
    sample_size: int
    stratify: bool
    shuffle: bool
    seed: int
    device: str
    topk: int
    progress: bool
    def __init__(self) -> None: ...
    @staticmethod
    def field_names() -> list[str]: ...
    def validate(self) -> None: ...

class MlpOptions:
    in_features: int
    hidden: list[int]
    num_classes: int
    dropout: float
    def __init__(self) -> None: ...

class CnnOptions:
    in_channels: int
    height: int
    width: int
    channels: list[int]
    hidden: int
    num_classes: int
    dropout: float
    def __init__(self) -> None: ...

class NativeModule:
    training: bool
    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor: ...
    def named_parameters(self) -> list[tuple[str, torch.Tensor]]: ...
    def named_buffers(self) -> list[tuple[str, torch.Tensor]]: ...
    def train(self, mode: bool = True) -> None: ...
    def to(self, device: str) -> None: ...

def make_mlp(options: MlpOptions) -> NativeModule: ...
def make_cnn(options: CnnOptions) -> NativeModule: ...
def train(model: Any, train_inputs: list[torch.Tensor], train_targets: torch.Tensor,
          val_inputs: list[torch.Tensor] | None, val_targets: torch.Tensor | None, config: TrainConfig,
          callback: Callable[[str, dict[str, Any]], bool] | None = None,
          callback_interval_s: float = 0.1) -> dict[str, Any]: ...
def evaluate(model: Any, inputs: list[torch.Tensor], targets: torch.Tensor, config: TrainConfig) -> dict[str, Any]: ...
def predict(model: Any, inputs: list[torch.Tensor], config: TrainConfig) -> torch.Tensor: ...
def sample_indices(targets: torch.Tensor, config: TrainConfig) -> torch.Tensor: ...
def class_counts(targets: torch.Tensor, indices: torch.Tensor) -> list[int]: ...
def epoch_order(subset: torch.Tensor, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor: ...
def read_idx(path: str) -> torch.Tensor: ...
def optimizer_names() -> list[str]: ...
