"""How an nn.Module's forward runs in the C++ loop (runner=): scripted, traced, or called in Python as written."""

from __future__ import annotations

import copy
import signal
import threading

import numpy as np
import pytest
import torch

import finetune
from finetune import models
from finetune.config import TrainConfig
from helpers import batches, mlp, torch_loop


class Branchy(torch.nn.Module):
    """A forward that TorchScript rejects (``*inputs``) with control flow on tensor values: a trace would keep the
    branch of its example batch for every batch."""

    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(64, 32)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, *inputs):
        h = torch.relu(self.body(inputs[0]))
        if inputs[0][:, 0].sum() > 0:  # the batch decides the branch
            h = 2 * h
        return self.head(h)


class Plain(torch.nn.Module):
    """Scriptable, with batch norm and dropout (mode-dependent layers)."""

    def __init__(self):
        super().__init__()
        self.a, self.bn, self.drop, self.b = (torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                                              torch.nn.Dropout(0.2), torch.nn.Linear(32, 10))

    def forward(self, x):
        return self.b(self.drop(torch.relu(self.bn(self.a(x)))))


@pytest.fixture
def centred(digits):
    """Digits with features centred, so that the sign of a batch's first-feature sum varies from batch to batch."""
    x, y, x_test, y_test = digits
    mean = x.mean(axis=0)
    x, x_test = x - mean, x_test - mean
    x[:, 0] = np.random.default_rng(0).normal(size=len(x)).astype(np.float32)
    return x, y, x_test, y_test


def test_auto_runs_data_dependent_control_flow_in_python_as_a_plain_loop_does(centred):
    x, y, _, _ = centred
    model = Branchy()
    ref = copy.deepcopy(model)
    result = finetune.train(model, (x, y), epochs=2, batch_size=32, lr=0.05, optimizer="sgd", progress=False)
    assert result.runner["runner"] == "python"
    assert "trace would fix" in result.runner["reason"]

    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    branches = {bool(xt[idx, 0].sum() > 0) for idx in batches(yt, cfg)}
    assert branches == {True, False}  # both branches were taken: a trace would have been wrong
    torch_loop(ref, xt, yt, cfg, torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9))
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=name)
    # predict runs one batch here (under eval_batch_size): the same branch as the plain module's call
    np.testing.assert_array_equal(finetune.predict(model, x[:500]), ref(xt[:500]).argmax(1).numpy())


def test_python_runner_trains_as_the_scripted_model_does(digits):
    # Same model, same batches, dropout draws and batch statistics: the Python forward and the TorchScript one
    # give the same weights, running statistics and metrics.
    x, y, x_test, y_test = digits
    scripted, eager = Plain(), Plain()
    eager.load_state_dict(scripted.state_dict())
    settings = dict(val=(x_test, y_test), epochs=2, batch_size=64, lr=0.05, optimizer="sgd", progress=False)
    expected = finetune.train(scripted, (x, y), **settings)
    result = finetune.train(eager, (x, y), runner="python", **settings)
    assert expected.runner["runner"] == "script" and result.runner["runner"] == "python"
    for (name, a), b in zip(eager.state_dict().items(), scripted.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    assert result.metrics == pytest.approx(expected.metrics, abs=1e-9)
    assert eager.training  # the caller's mode is kept


def test_python_runner_keeps_a_frozen_batchnorm_in_eval_mode(digits):
    # A frozen batch-norm layer keeps its pretrained running statistics, as it does under the compiled runners.
    x, y, _, _ = digits
    model = Plain()
    before = model.bn.running_mean.clone()
    finetune.train(model, (x, y), epochs=1, freeze=["a", "bn"], runner="python", progress=False)
    torch.testing.assert_close(model.bn.running_mean, before, atol=0, rtol=0)
    unfrozen = Plain()
    finetune.train(unfrozen, (x, y), epochs=1, runner="python", progress=False)
    assert not torch.equal(unfrozen.bn.running_mean, before)


def test_find_lr_and_the_recipe_run_with_the_python_runner(centred):
    x, y, x_test, y_test = centred
    curve = finetune.find_lr(Branchy(), (x, y), num_steps=20)
    assert len(curve.lrs) >= 11
    result = finetune.train(Branchy(), (x, y), val=(x_test, y_test), progress=False)  # the recipe, by default
    assert result.runner["runner"] == "python" and result.recipe[0]["value"] == "auto"
    assert result.metrics["accuracy"] > 0.8


def test_explicit_runners_take_effect_or_say_why_not(digits):
    x, y, _, _ = digits
    assert finetune.train(Plain(), (x, y), epochs=1, runner="trace", progress=False).runner["runner"] == "trace"
    assert finetune.train(Plain(), (x, y), epochs=1, runner="script", progress=False).runner["runner"] == "script"
    with pytest.raises(TypeError, match=r"runner='script': model Branchy cannot be compiled with torch.jit.script"):
        finetune.train(Branchy(), (x, y), epochs=1, runner="script", progress=False)
    with pytest.raises(ValueError, match=r"runner must be one of \['auto', 'script', 'trace', 'python'\], got 'jit'"):
        finetune.train(Plain(), (x, y), epochs=1, runner="jit", progress=False)
    with pytest.raises(ValueError, match=r"runner='python' chooses how an nn.Module's forward runs; the built-in"):
        finetune.train("mlp", (x, y), epochs=1, runner="python", progress=False)
    with pytest.warns(DeprecationWarning):  # torch 2.13 deprecates TorchScript
        scripted = torch.jit.script(mlp())
    with pytest.raises(ValueError, match=r"runner='trace' does not apply to a TorchScript module"):
        finetune.train(scripted, (x, y), epochs=1, runner="trace", progress=False)


def test_a_python_forward_error_is_one_line_naming_the_inputs(digits):
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(64, 10)

        def forward(self, *inputs):
            raise RuntimeError("my model's own error")

    x, y, _, _ = digits
    with pytest.raises(ValueError, match=r"model forward\(\) failed on training inputs of shape \[32, 64\].*my model's own error"):
        finetune.train(Broken(), (x, y), epochs=1, runner="python", progress=False)


def test_ctrl_c_in_a_python_forward_is_a_keyboard_interrupt(digits, tmp_path):
    x, y, _, _ = digits
    calls = []

    class Slow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(64, 10)

        def forward(self, x):
            calls.append(self.training)  # the probes for the head and the output run in eval mode
            if sum(calls) == 3:
                signal.raise_signal(signal.SIGINT)  # Python raises KeyboardInterrupt inside this forward
            return self.a(x)

    assert threading.current_thread() is threading.main_thread()
    # Python's own handler, as an interactive session has it (a shell's background job starts with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            finetune.train(Slow(), (x, y), epochs=1, runner="python", checkpoint_dir=str(tmp_path), progress=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    found = finetune.checkpoint.find(tmp_path)  # the two steps done before it are saved, as between steps
    assert found is not None and finetune.checkpoint.load(found)[1]["counters"]["steps"] == 2


def test_a_range_test_stopped_by_an_error_restores_the_weights(digits):
    x, y, _, _ = digits
    calls = []

    class FailsLater(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(64, 10)

        def forward(self, x):
            calls.append(1)
            if len(calls) == 6:
                raise RuntimeError("stop here")
            return self.a(x)

    model = FailsLater()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="stop here"):
        finetune.find_lr(model, (x, y), runner="python", start_lr=1e-2, end_lr=10.0)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, before[name], atol=0, rtol=0, msg=name)
