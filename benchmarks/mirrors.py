"""Python copies of finetune's native models, for benchmarks that run one model both ways side by side."""

from __future__ import annotations

import torch

import finetune


class PythonCnn(torch.nn.Module):
    """finetune's native "cnn" (csrc/models.cpp's Cnn) as an nn.Module: the same layers under the same names, so
    the weights of one load into the other as they are."""

    def __init__(self, options: dict) -> None:
        super().__init__()
        layers, channels, height, width = [], options["in_channels"], options["height"], options["width"]
        for out in options["channels"]:
            layers += [torch.nn.Conv2d(channels, out, 3, padding=1, bias=False), torch.nn.BatchNorm2d(out),
                       torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
            channels, height, width = out, height // 2, width // 2
        self.features = torch.nn.Sequential(*layers)
        self.classifier = torch.nn.Sequential(
            torch.nn.Dropout(options["dropout"]), torch.nn.Linear(channels * height * width, options["hidden"]),
            torch.nn.ReLU(), torch.nn.Linear(options["hidden"], options["num_classes"]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


def as_python(native: finetune.NativeModel, x) -> PythonCnn:
    """The native CNN's copy, checked to give its logits on ``x`` (a layer changed in models.cpp fails here)."""
    module = PythonCnn(native.options)
    module.load_state_dict({name: torch.as_tensor(value) for name, value in native.state_dict().items()})
    logits = finetune.predict(native, x, output="logits")
    copied = finetune.predict(module, x, output="logits")
    assert torch.allclose(torch.as_tensor(copied), torch.as_tensor(logits), atol=1e-4), "the copy's logits differ"
    return module


def native_copy(name: str, reference: torch.nn.Module, **options) -> finetune.NativeModel:
    """finetune's native model ``name`` with the reference module's weights. The two declare the same parameters
    and buffers in the same order, under the same names (PythonCnn) or other ones (a plain nn.Sequential)."""
    native = finetune.build(name, **options)
    pairs = list(zip((n for n, _ in native._module.named_parameters()), reference.parameters()))
    pairs += zip((n for n, _ in native._module.named_buffers()), reference.buffers())
    assert len(pairs) == len(native.state_dict())
    native.load_state_dict({key: value.detach() for key, value in pairs})
    return native
