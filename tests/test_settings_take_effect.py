"""A setting the user gave takes effect or is an error before the first step: patterns that match nothing,
settings of another optimizer or schedule, unreachable epochs, overflowing products, bad inputs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import finetune
from helpers import mlp


def _small(digits, n=200):
    x, y, _, _ = digits
    return x[:n], y[:n]


@pytest.mark.parametrize("settings, message", [
    (dict(freeze=["0."]), r"freeze pattern '0\.' matches no parameter.*close matches: '0'.*'0\.weight'"),
    (dict(lr_groups={"head": 10.0}), r"lr_groups pattern 'head' matches no parameter.*'2\.bias'"),
    (dict(freeze=["0"], unfreeze_at={1: ["O"]}), r"unfreeze_at\[1\] pattern 'O' matches no parameter.*close matches: '0'"),
    (dict(freeze=["0"], unfreeze_at={5: ["0"]}, epochs=3), r"unfreeze_at epoch 5 is never reached: epochs=3"),
    (dict(monitor="val_accuracy"), r"monitor 'val_accuracy' needs validation data \(val=...\); without it"),
    (dict(early_stopping=2), r"monitor 'val_loss' needs validation data \(val=...\) for early_stopping/restore_best"),
    (dict(monitor="val_acc"), r"monitor must be one of \['train_loss', 'val_accuracy', 'val_balanced_accuracy', 'val_loss'.*got 'val_acc'"),
    (dict(augment_flip=True), r"augment_flip needs image inputs"),
    (dict(augment_crop=2), r"augment_crop needs image inputs"),
    (dict(optimizer="adam", nesterov=True), r"nesterov is set but optimizer='adam' does not use it.*'sgd'"),
    (dict(optimizer="adamw", momentum=0.5), r"momentum is set but optimizer='adamw' does not use it"),
    (dict(optimizer="rmsprop", momentum=0.5), r"momentum is set but optimizer='rmsprop'"),
    (dict(optimizer="sgd", beta1=0.5), r"beta1 is set but optimizer='sgd' does not use it.*'adam', 'adamw'"),
    (dict(schedule="cosine", gamma=0.5), r"gamma is set but schedule='cosine' does not use it.*'step'"),
    (dict(schedule="constant", min_lr=0.001), r"min_lr is set but schedule='constant'"),
    (dict(schedule="onecycle", momentum=0.5), r"momentum=0.5 has no effect with schedule='onecycle'"),
])
def test_a_setting_that_would_have_no_effect_is_an_error(digits, settings, message):
    x, y = _small(digits)
    with pytest.raises(ValueError, match=message):
        finetune.train(mlp(), (x, y), progress=False, **settings)


def test_pattern_errors_come_from_find_lr_too(digits):
    with pytest.raises(ValueError, match="freeze pattern '0.' matches no parameter"):
        finetune.find_lr(mlp(), _small(digits), freeze=["0."], num_steps=5)


def test_monitor_is_checked_before_the_first_step(digits):
    x, y = _small(digits)
    steps = []
    with pytest.raises(ValueError, match="monitor must be one of"):
        finetune.train(mlp(), (x, y), val=(x, y), monitor="val_acc", early_stopping=2, progress=False,
                       callback=lambda kind, info: steps.append(kind), callback_interval=0)
    assert steps == []


def test_augmentation_bounded_by_the_image(digits):
    x, y = _small(digits)
    images = x.reshape(-1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"augment_crop=9 pads by more than the image's smaller side \(8 pixels"):
        finetune.train("cnn", (images, y), augment_crop=9, epochs=1, progress=False)
    finetune.train("cnn", (images, y), augment_crop=8, epochs=1, progress=False)


_OVERFLOW = """
import numpy as np, finetune
from sklearn.datasets import load_digits
d = load_digits()
try:
    finetune.train("mlp", (d.data[:100].astype("float32"), d.target[:100]), progress=False, {settings})
except ValueError as e:
    print("ValueError:", e)
"""


@pytest.mark.parametrize("settings, message", [
    ("accumulate=2**62, batch_size=4", r"accumulate x batch_size = 4611686018427387904 x 4 does not fit"),
    ("accumulate=2**63-1, batch_size=2", r"accumulate x batch_size = 9223372036854775807 x 2 does not fit"),
    ("epochs=2**62, batch_size=1", r"steps per epoch x epochs = 100 x 4611686018427387904 does not fit"),
    ("accumulate=2**64", r"accumulate must fit in a signed 64-bit integer"),
    ("seed=2**70", r"seed must fit in a signed 64-bit integer, got 1180591620717411303424"),
])
def test_integer_overflow_is_an_error_not_a_crash(settings, message):
    # In a child process: a SIGFPE (the old behaviour) is a failed test here, not a dead pytest.
    out = subprocess.run([sys.executable, "-c", _OVERFLOW.format(settings=settings)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ValueError:"), out.stdout + out.stderr[-2000:]
    assert len(out.stdout.strip().splitlines()) == 1
    import re
    assert re.search(message, out.stdout), out.stdout


def test_accumulating_past_the_data_is_one_full_step(digits):
    x, y = _small(digits, 100)
    r = finetune.train(mlp(), (x, y), accumulate=1000, batch_size=10, epochs=2, progress=False)
    assert r.steps == 2  # one step per epoch over the whole subset, not zero steps


class _Norm(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32), torch.nn.ReLU())
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.body(x))


def test_a_last_batch_of_one_with_batch_norm_says_what_to_do(digits):
    x, y = _small(digits, 65)  # 65 = 2 x 32 + 1
    with pytest.raises(ValueError) as error:
        finetune.train(_Norm(), (x, y), epochs=1, progress=False)
    text = str(error.value)
    assert len(text.splitlines()) == 1, text
    assert "drop_last=True" in text and "Traceback" not in text


def test_drop_last_drops_the_incomplete_batch(digits):
    x, y = _small(digits, 65)
    r = finetune.train(_Norm(), (x, y), epochs=2, drop_last=True, progress=False)
    assert r.steps == 4  # 2 full batches per epoch; the 65th example waits for another epoch's order
    assert r.history[-1]["samples_per_s"] > 0
    # A batch larger than the data is the whole data (as without drop_last): one full batch per epoch.
    assert finetune.train(_Norm(), (x, y), batch_size=100, epochs=2, drop_last=True, progress=False).steps == 2


def test_drop_last_matches_a_dataloader_loop(digits):
    from finetune.config import TrainConfig
    x, y = _small(digits, 70)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch.manual_seed(0)
    reference = mlp()
    model = mlp()
    model.load_state_dict(reference.state_dict())
    finetune.train(model, (x, y), epochs=2, batch_size=32, drop_last=True, momentum=0.0, progress=False)
    cfg = TrainConfig(epochs=2, batch_size=32, momentum=0.0)
    optimizer = torch.optim.SGD(reference.parameters(), lr=cfg.lr)
    subset = finetune._C.sample_indices(yt, cfg.to_cpp())
    for epoch in range(2):
        order = finetune._C.epoch_order(subset, cfg.seed, epoch, True)
        for start in range(0, 64, 32):  # 70 examples: two full batches, 6 dropped
            idx = order[start:start + 32]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(reference(xt[idx]), yt[idx]).backward()
            optimizer.step()
    for a, b in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make_x, message", [
    (lambda x: x.astype(np.int32), r"dtype Int\).*X\.astype\('float32'\)"),
    (lambda x: torch.from_numpy(x).to_sparse(), r"X is a sparse torch tensor .*X\.to_dense\(\)"),
    (lambda x: list(x), r"X is a list of 200 arrays, one per example: pass one array"),
])
def test_bad_inputs_get_one_line_errors_naming_x(digits, make_x, message):
    x, y = _small(digits)
    with pytest.raises((ValueError, TypeError), match=message) as error:
        finetune.train(mlp(), (make_x(x), y), epochs=1, progress=False)
    assert len(str(error.value).splitlines()) == 1, str(error.value)
    assert "Traceback" not in str(error.value)


def test_scipy_sparse_x_is_named(digits):
    sparse = pytest.importorskip("scipy.sparse")
    x, y = _small(digits)
    with pytest.raises(TypeError, match=r"X is a scipy.sparse matrix .*X\.toarray\(\)"):
        finetune.train(mlp(), (sparse.csr_matrix(x), y), epochs=1, progress=False)


def test_bool_features_are_cast_to_the_model_dtype(digits):
    x, y = _small(digits)
    r = finetune.train(mlp(), (x > 0.5, y), epochs=1, progress=False)
    assert r.steps > 0


def test_class_weights_accept_any_array_like(digits):
    x, y = _small(digits)
    for weights in (np.ones(10), torch.ones(10), (1.0,) * 10):
        r = finetune.train(mlp(), (x, y), epochs=1, class_weights=weights, progress=False)
        assert r.config.class_weights == [1.0] * 10


def test_balanced_class_weights_with_a_head_wider_than_the_labels(digits):
    x, y = _small(digits)
    keep = y < 5
    model = mlp(out=10)
    weighted = finetune.train(model, (x[keep], y[keep]), epochs=1, class_weights="balanced", progress=False)
    assert len(weighted.config.class_weights) == 5
    # The absent classes' weight is 0: the same as training with explicit weights padded with zeros.
    torch.manual_seed(0)
    a, b = mlp(out=10), mlp(out=10)
    b.load_state_dict(a.state_dict())
    w = weighted.config.class_weights
    finetune.train(a, (x[keep], y[keep]), epochs=1, class_weights=w, label_smoothing=0.1, progress=False)
    finetune.train(b, (x[keep], y[keep]), epochs=1, class_weights=w + [0.0] * 5, label_smoothing=0.1, progress=False)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_checkpoint_dir_is_checked_before_the_first_step(digits, tmp_path):
    x, y = _small(digits)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    steps = []
    with pytest.raises(ValueError, match=r"checkpoint_dir '.*a-file/run' cannot be created"):
        finetune.train(mlp(), (x, y), checkpoint_dir=blocker / "run", progress=False,
                       callback=lambda kind, info: steps.append(kind), callback_interval=0)
    assert steps == []


class _ComplexBuffer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(64, 10)
        self.register_buffer("phase", torch.zeros(3, dtype=torch.complex128))

    def forward(self, x):
        return self.linear(x)


def test_a_buffer_no_checkpoint_can_hold_is_an_error_before_the_first_step(digits, tmp_path):
    x, y = _small(digits)
    steps = []
    with pytest.raises(ValueError, match=r"state tensor 'phase' has dtype torch.complex128, which a safetensors"):
        finetune.train(_ComplexBuffer(), (x, y), checkpoint_dir=tmp_path, progress=False,
                       callback=lambda kind, info: steps.append(kind), callback_interval=0)
    assert steps == []
