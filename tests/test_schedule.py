"""Every schedule equals PyTorch's own scheduler at every optimizer step, to 1e-9."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import finetune
from finetune import _C
from finetune.config import TrainConfig

from helpers import torch_loop

LR, TOTAL, PER_EPOCH = 0.1, 97, 10


def torch_scheduler(name: str, optimizer: torch.optim.Optimizer, cfg: TrainConfig, total: int):
    sched = torch.optim.lr_scheduler
    if name == "constant":
        return sched.LambdaLR(optimizer, lambda step: 1.0)
    if name == "step":
        return sched.StepLR(optimizer, step_size=cfg.step_size or PER_EPOCH, gamma=cfg.gamma)
    if name == "cosine":
        return sched.CosineAnnealingLR(optimizer, T_max=total, eta_min=cfg.min_lr)
    if name == "linear":
        return sched.LinearLR(optimizer, start_factor=1.0, end_factor=cfg.min_lr / cfg.lr, total_iters=total)
    if name == "onecycle":
        return sched.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=cfg.pct_start,
                                cycle_momentum=cfg.cycle_momentum, base_momentum=cfg.base_momentum,
                                max_momentum=cfg.max_momentum)
    raise AssertionError(name)


def reference_lrs(cfg: TrainConfig, total: int) -> list[float]:
    """The learning rate before each step, from torch.optim.lr_scheduler (warm-up as a LambdaLR)."""
    warmup = int(cfg.warmup) if cfg.warmup >= 1 else round(cfg.warmup * total)
    warm = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    warm_sched = torch.optim.lr_scheduler.LambdaLR(warm, lambda t: (t + 1) / warmup) if warmup else None
    main = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    main_sched = torch_scheduler(cfg.schedule, main, cfg, total - warmup)
    lrs = []
    for t in range(total):
        if t < warmup:
            lrs.append(warm.param_groups[0]["lr"])
            warm.step()
            warm_sched.step()
        else:
            lrs.append(main.param_groups[0]["lr"])
            main.step()
            main_sched.step()
    return lrs


CASES = [
    dict(schedule="constant"),
    dict(schedule="step", gamma=0.5),
    dict(schedule="step", step_size=7, gamma=0.3),
    dict(schedule="cosine"),
    dict(schedule="cosine", min_lr=0.001),
    dict(schedule="linear"),
    dict(schedule="linear", min_lr=0.01),
    dict(schedule="onecycle"),
    dict(schedule="onecycle", pct_start=0.25),
    dict(schedule="cosine", warmup=10),
    dict(schedule="linear", warmup=0.1),
    dict(schedule="constant", warmup=5),
]


def test_every_registered_schedule_is_covered():
    assert sorted({c["schedule"] for c in CASES}) == finetune.schedules()


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_schedule_equals_pytorch_at_every_step(case):
    cfg = TrainConfig(lr=LR, **case)
    cpp = cfg.to_cpp()
    ours = [_C.scheduled_lr(cpp, LR, t, TOTAL, PER_EPOCH) for t in range(TOTAL)]
    theirs = reference_lrs(cfg, TOTAL)
    for t, (a, b) in enumerate(zip(ours, theirs)):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (t, a, b)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("case", [dict(), dict(pct_start=0.25, base_momentum=0.8, max_momentum=0.9)],
                         ids=["default", "custom"])
def test_onecycle_momentum_equals_pytorch_at_every_step(optimizer, case):
    cfg = TrainConfig(lr=LR, schedule="onecycle", optimizer=optimizer, **case)
    params = [torch.zeros(1, requires_grad=True)]
    opt = torch.optim.SGD(params, lr=LR, momentum=0.9) if optimizer == "sgd" else torch.optim.Adam(params, lr=LR)
    sched = torch_scheduler("onecycle", opt, cfg, TOTAL)
    cpp = cfg.to_cpp()
    for t in range(TOTAL):
        theirs = opt.param_groups[0]["momentum"] if optimizer == "sgd" else opt.param_groups[0]["betas"][0]
        ours = _C.scheduled_momentum(cpp, t, TOTAL)
        assert math.isclose(ours, theirs, rel_tol=1e-9, abs_tol=1e-12), (t, ours, theirs)
        opt.step()
        sched.step()
    assert _C.scheduled_momentum(TrainConfig(schedule="onecycle", cycle_momentum=False).to_cpp(), 0, TOTAL) is None
    assert _C.scheduled_momentum(TrainConfig(schedule="cosine").to_cpp(), 0, TOTAL) is None


@pytest.mark.parametrize("optimizer", ["sgd", "adamw", "rmsprop"])
def test_onecycle_training_equals_torch_optim_with_onecycle_lr(digits, optimizer):
    # The whole loop against torch.optim + OneCycleLR (momentum cycling on, its default).
    x, y, _, _ = digits
    x, y = torch.from_numpy(x[:256]), torch.from_numpy(y[:256])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    ref = copy.deepcopy(model)
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, schedule="onecycle", optimizer=optimizer, weight_decay=0.0,
                      progress=False)
    finetune.train(model, (x, y), config=cfg)
    opt = {"sgd": lambda p: torch.optim.SGD(p, lr=cfg.lr, momentum=cfg.momentum),
           "adamw": lambda p: torch.optim.AdamW(p, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=0),
           "rmsprop": lambda p: torch.optim.RMSprop(p, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps)}[optimizer](ref.parameters())
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=24, pct_start=cfg.pct_start)
    torch_loop(ref, x, y, cfg, opt, sched)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0, msg=name)


def test_loop_applies_the_schedule_per_step(digits):
    x, y, _, _ = digits
    seen = []
    finetune.train("mlp", (x[:320], y[:320]), epochs=3, batch_size=32, schedule="cosine", lr=0.1,
                   progress=False, callback=lambda kind, info: seen.append(info["lr"]) if kind == "epoch" else None)
    cpp = TrainConfig(schedule="cosine", lr=0.1).to_cpp()
    # the lr recorded after each epoch is the one its last step used
    expected = [_C.scheduled_lr(cpp, 0.1, (e + 1) * 10 - 1, 30, 10) for e in range(3)]
    assert seen == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("bad, message", [
    (dict(schedule="exp"), r"schedule must be one of \['constant', 'cosine', 'linear', 'onecycle', 'step'\], got 'exp'"),
    (dict(schedule="onecycle", warmup=3), r"warmup does not combine with schedule='onecycle'"),
    (dict(warmup=-1.0), r"warmup must be >= 0"),
    (dict(gamma=0.0), r"gamma must be in \(0, 1\], got 0"),
    (dict(min_lr=1.0), r"min_lr must be in \[0, lr\], got 1"),
    (dict(pct_start=1.0), r"pct_start must be in \(0, 1\), got 1"),
])
def test_bad_schedule_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**bad).to_cpp()
