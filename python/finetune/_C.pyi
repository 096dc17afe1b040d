"""Type stub for finetune._C, the compiled core (csrc/bindings.cpp)."""

from typing import Any, Callable

import torch

# A list of input tensors in memory, or a finetune.streams.Stream (examples fetched by index: fetch(indices) and
# plan(batches), read by the C++ loop's ExampleSource).
Inputs = list[torch.Tensor] | Any

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
    decay_norm_and_bias: bool
    beta1: float
    beta2: float
    eps: float
    alpha: float
    schedule: str
    warmup: float
    step_size: int
    gamma: float
    min_lr: float
    pct_start: float
    cycle_momentum: bool
    base_momentum: float
    max_momentum: float
    freeze: list[str]
    unfreeze_at: dict[int, list[str]]
    lr_groups: list[tuple[str, float]]
    layer_decay: float
    clip_grad_norm: float
    accumulate: int
    class_weights: list[float]
    label_smoothing: float
    augment_crop: int
    augment_flip: bool
    sampler: str
    early_stopping: int
    monitor: str
    restore_best: bool
    ema: float
    precision: str
    on_nan: str
    checkpoint_dir: str
    checkpoint_every: int
    keep_last: int
    distributed: str
    bucket_mb: float
    dist_timeout: float
    sample_fraction: float
    sample_size: int
    stratify: bool
    shuffle: bool
    drop_last: bool
    seed: int
    device: str
    runner: str
    trim_padding: str
    group_by_length: bool
    cache_frozen: str
    cache_frozen_gb: float
    num_workers: int
    prefetch: int
    output_key: str
    topk: int
    progress: bool
    def __init__(self) -> None: ...
    @staticmethod
    def field_names() -> list[str]: ...
    def validate(self) -> None: ...

class EpochRecord:
    epoch: int
    train_loss: float
    lr: float
    seconds: float
    samples_per_s: float
    val: dict[str, float]
    def __init__(self) -> None: ...
    def as_dict(self) -> dict[str, float]: ...  # {"epoch", "train_loss", "lr", "seconds", "samples_per_s", "val_<metric>"...}
    @staticmethod
    def from_dict(entry: dict[str, float]) -> EpochRecord: ...

class LoopState:
    epoch: int
    epoch_step: int
    steps: int
    skipped_steps: int
    loss_sum: float
    weight_sum: float
    samples: int
    epoch_seconds: float
    best_epoch: int
    best_value: float
    epochs_without_improvement: int
    history: list[EpochRecord]
    best_metrics: dict[str, float]
    rng_state: torch.Tensor | None
    optimizer: list[tuple[str, torch.Tensor]]
    ema: list[tuple[str, torch.Tensor]]
    best: list[tuple[str, torch.Tensor]]
    def __init__(self) -> None: ...
    def counters(self) -> dict[str, int | float]: ...
    def set_counters(self, counters: dict[str, int | float]) -> None: ...
    @staticmethod
    def counter_names() -> list[str]: ...

class ParamGroupReport:
    names: list[str]
    lr: float
    weight_decay: float
    from_epoch: int

class Metrics:
    values: dict[str, float]
    confusion: torch.Tensor | None
    precision: list[float]
    recall: list[float]

class TrainResult:
    class_counts: list[int]
    train_size: int
    steps: int
    skipped_steps: int
    seconds: float
    communication_seconds: float
    buckets_reduced: int
    buckets_overlapped: int
    stopped: bool
    best_epoch: int  # -1: nothing monitored
    best_value: float
    history: list[EpochRecord]
    metrics: Metrics
    param_groups: list[ParamGroupReport]

class MlpOptions:
    in_features: int
    hidden: list[int]
    num_classes: int
    dropout: float
    center: list[float]
    scale: list[float]
    clip: float
    target_center: list[float]
    target_scale: list[float]
    linear: str
    linear_center: list[float]
    linear_scale: list[float]
    embedding: str
    embedding_frequencies: int
    embedding_size: int
    embedding_sigma: float
    indicator_columns: list[int]
    indicator_values: list[float]
    missing_columns: list[int]
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

class MfOptions:
    num_users: int
    num_items: int
    dim: int
    mean: float
    scale: float
    reg: float
    def __init__(self) -> None: ...

class NcfOptions:
    num_users: int
    num_items: int
    dim: int
    hidden: list[int]
    dropout: float
    mean: float
    def __init__(self) -> None: ...

class NativeModule:
    training: bool
    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor: ...
    def features(self, inputs: list[torch.Tensor]) -> torch.Tensor: ...  # the head's input; undefined (None): no head
    def named_parameters(self) -> list[tuple[str, torch.Tensor]]: ...
    def named_buffers(self) -> list[tuple[str, torch.Tensor]]: ...
    def train(self, mode: bool = True) -> None: ...
    def to(self, device: str) -> None: ...

def make_mlp(options: MlpOptions) -> NativeModule: ...
def make_cnn(options: CnnOptions) -> NativeModule: ...
def make_mf(options: MfOptions) -> NativeModule: ...
def make_ncf(options: NcfOptions) -> NativeModule: ...
def train(model: Any, train_inputs: Inputs, train_targets: torch.Tensor,
          val_inputs: Inputs | None, val_targets: torch.Tensor | None, config: TrainConfig,
          callback: Callable[[str, dict[str, Any]], bool] | None = None, callback_interval_s: float = 0.1,
          checkpoint: Callable[[str, LoopState], None] | None = None, resume: LoopState | None = None,
          process_group: Any = None, mask_input: int = -1) -> TrainResult: ...
def find_lr(model: Any, inputs: Inputs, targets: torch.Tensor, config: TrainConfig, start_lr: float,
            end_lr: float, num_steps: int, diverge_factor: float, mask_input: int = -1) -> dict[str, Any]: ...
def fit_probe(features: torch.Tensor, targets: torch.Tensor, members: torch.Tensor, classes: int, strength: float,
              class_weights: torch.Tensor | None, label_smoothing: float, start_weight: torch.Tensor | None,
              start_bias: torch.Tensor | None, max_iterations: int,
              tolerance: float) -> tuple[torch.Tensor, torch.Tensor, int]: ...  # (weight, bias, L-BFGS iterations)
def scheduled_lr(config: TrainConfig, base_lr: float, step: int, total_steps: int, steps_per_epoch: int) -> float: ...
def scheduled_momentum(config: TrainConfig, step: int, total_steps: int) -> float | None: ...
def schedule_names() -> list[str]: ...
def lower_is_better(monitor: str) -> bool: ...
def evaluate(model: Any, inputs: Inputs, targets: torch.Tensor, config: TrainConfig,
             process_group: Any = None, mask_input: int = -1) -> dict[str, Any]: ...
def predict(model: Any, inputs: Inputs, config: TrainConfig, mask_input: int = -1) -> torch.Tensor: ...
def sequence_lengths(mask: torch.Tensor) -> torch.Tensor: ...
def group_by_length(order: torch.Tensor, lengths: torch.Tensor, step_examples: int) -> torch.Tensor: ...
def trim_to_longest(inputs: list[torch.Tensor], mask_input: int) -> list[torch.Tensor]: ...
def sample_indices(targets: torch.Tensor, config: TrainConfig) -> torch.Tensor: ...
def class_counts(targets: torch.Tensor, indices: torch.Tensor) -> list[int]: ...
def epoch_order(subset: torch.Tensor, seed: int, epoch: int, shuffle: bool = True) -> torch.Tensor: ...
def balanced_epoch_order(targets: torch.Tensor, subset: torch.Tensor, seed: int, epoch: int) -> torch.Tensor: ...
def augment_images(inputs: list[torch.Tensor], pad: int, flip: bool, seed: int, epoch: int,
                   step: int) -> list[torch.Tensor]: ...
def read_idx(path: str) -> torch.Tensor: ...
def negatives_seed(seed: int, epoch: int, micro_batch: int) -> int: ...
def with_negatives(pairs: torch.Tensor, num_items: int, seed: int) -> torch.Tensor: ...
def optimizer_names() -> list[str]: ...
def matches_any(name: str, patterns: list[str]) -> bool: ...
def recipe_constants() -> dict[str, float | int]: ...
def rate_from_range(lrs: list[float], losses: list[float], divisor: float, flat_tolerance: float,
                    floor_steps: int) -> float: ...
def recipe_split_validation(targets: torch.Tensor, sample: torch.Tensor, classification: bool, seed: int,
                            fraction: float) -> tuple[torch.Tensor, torch.Tensor]: ...
def per_example_loss(outputs: torch.Tensor, targets: torch.Tensor, task: str) -> torch.Tensor: ...
def paired_gain(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float | int]: ...
