"""Ctrl-C is noticed within half a second in train, evaluate and predict, whatever callback_interval is; a
finished run can be extended with resume=True and more epochs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import finetune
from helpers import mlp

# The child trains (or evaluates, or predicts) for a long time, SIGINTs itself from a timer thread, and prints
# how long KeyboardInterrupt took to arrive. A child, so that the SIGINT cannot reach pytest.
_CHILD = textwrap.dedent("""
    import json, os, signal, sys, threading, time
    import numpy as np, torch, finetune
    torch.set_num_threads(1)
    what = sys.argv[1]
    # A shell's background job starts with SIGINT ignored, and Python then installs no handler: Ctrl-C's, here
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400_000 if what != "train" else 4_000, 64)).astype("float32")
    y = rng.integers(0, 10, size=len(x))
    model = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10))
    sent = {}
    def interrupt():
        time.sleep(1.0)
        sent["t"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        for _ in range(1000):
            if what == "train":
                finetune.train(model, (x, y), epochs=1000, batch_size=64, progress=False, callback=lambda k, i: None,
                               callback_interval=1e9)
            elif what == "evaluate":
                finetune.evaluate(model, (x, y), batch_size=256)
            else:
                finetune.predict(model, x, batch_size=256)
        print(json.dumps({"interrupted": False}))
    except KeyboardInterrupt:
        print(json.dumps({"interrupted": True, "latency": time.monotonic() - sent["t"]}))
""")


@pytest.mark.parametrize("what", ["train", "evaluate", "predict"])
def test_ctrl_c_is_noticed_within_half_a_second(what):
    out = subprocess.run([sys.executable, "-c", _CHILD, what], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["interrupted"]
    assert result["latency"] < 0.5, result


def test_a_finished_run_is_extended_with_more_epochs(digits, tmp_path):
    x, y, x_test, y_test = digits
    settings = dict(optimizer="adamw", lr=0.003, schedule="constant", batch_size=32, seed=3, progress=False,
                    checkpoint_dir=tmp_path)
    torch.manual_seed(0)
    extended, straight = mlp(), mlp()
    straight.load_state_dict(extended.state_dict())
    first = finetune.train(extended, (x, y), val=(x_test, y_test), epochs=2, **settings)
    assert len(first.history) == 2
    more = finetune.train(extended, (x, y), val=(x_test, y_test), epochs=4, resume=True, **settings)
    assert [h["epoch"] for h in more.history] == [0, 1, 2, 3]
    assert more.steps == 2 * first.steps
    # With a constant rate the schedule does not depend on the length: the extended run is the 4-epoch run.
    finetune.train(straight, (x, y), val=(x_test, y_test), epochs=4, **{**settings, "checkpoint_dir": tmp_path / "b"})
    for a, b in zip(extended.parameters(), straight.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="has already trained 4 epochs; resume it with epochs >= 4, got epochs=3"):
        finetune.train(extended, (x, y), epochs=3, resume=True, **settings)
