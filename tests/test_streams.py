"""Streamed data (finetune.streams): torch Datasets and memory-mapped arrays train, evaluate and predict as the
same data in memory does, read ahead by DataLoader workers, with one-line errors and exact resume."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import finetune
from finetune import streams
from helpers import mlp


class Digits(torch.utils.data.Dataset):
    """A map-style dataset as users write them: (inputs, label) per index, labels in `targets`."""

    def __init__(self, x: np.ndarray, y: np.ndarray, attribute: str | None = "targets"):
        self.x, self.y = x.astype(np.float32), y
        if attribute is not None:
            setattr(self, attribute, y)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return torch.from_numpy(self.x[i]), int(self.y[i])


class Broken(Digits):
    def __getitem__(self, i: int):
        if i == 7:
            raise OSError("cannot read image-0007.png: truncated file")
        return super().__getitem__(i)


SETTINGS = dict(epochs=3, lr=0.05, batch_size=32, sample_fraction=0.5, progress=False)


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in model.state_dict().values()]


def _max_difference(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(_weights(a), _weights(b)))


def _mapped(array: np.ndarray, path) -> np.memmap:
    """``array`` saved to ``path`` and opened again memory-mapped, as a user's large X is."""
    np.save(path, array)
    return np.load(path, mmap_mode="r")


@pytest.fixture(scope="module")
def split(digits):
    x, y, _, _ = digits
    return x[:1200].astype(np.float32), y[:1200], x[1200:].astype(np.float32), y[1200:]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_dataset_trains_to_the_weights_of_the_same_data_in_memory(split, num_workers):
    x, y, vx, vy = split
    torch.manual_seed(0)
    start = mlp()
    in_memory, streamed = copy.deepcopy(start), copy.deepcopy(start)
    settings = dict(SETTINGS, accumulate=2, schedule="cosine", class_weights="balanced")
    expected = finetune.train(in_memory, (x, y), (vx, vy), **settings)
    result = finetune.train(streamed, Digits(x, y), Digits(vx, vy), num_workers=num_workers, **settings)
    assert _max_difference(in_memory, streamed) <= 1e-6
    assert result.metrics["accuracy"] == pytest.approx(expected.metrics["accuracy"])
    assert result.train_size == expected.train_size and result.class_counts == expected.class_counts
    # every batch the loop fetched was the one it had planned next (read ahead by the workers)
    assert result.streaming["unplanned"] == 0 and result.streaming["batches"] == 3 * -(-600 // 32)  # micro-batches
    assert expected.streaming is None


def test_a_memory_mapped_x_trains_evaluates_and_predicts_as_the_array(split, tmp_path):
    x, y, vx, vy = split
    mapped = _mapped(x, tmp_path / "x.npy")
    torch.manual_seed(0)
    start = mlp()
    in_memory, streamed = copy.deepcopy(start), copy.deepcopy(start)
    finetune.train(in_memory, (x, y), **SETTINGS)
    finetune.train(streamed, (mapped, y), **SETTINGS)
    assert _max_difference(in_memory, streamed) <= 1e-6
    assert (finetune.predict(streamed, mapped) == finetune.predict(in_memory, x)).all()
    got, expected = finetune.evaluate(streamed, (mapped, y)), finetune.evaluate(in_memory, (x, y))
    assert got["accuracy"] == expected["accuracy"] and got["loss"] == pytest.approx(expected["loss"])


def test_a_safetensors_tensor_is_read_a_batch_at_a_time(split, tmp_path):
    from safetensors.torch import save_file

    x, y, _, _ = split
    save_file({"x": torch.from_numpy(x), "x_bf16": torch.from_numpy(x).bfloat16(), "y": torch.from_numpy(y)},
              str(tmp_path / "digits.safetensors"))
    torch.manual_seed(0)
    start = mlp()
    in_memory, streamed, bf16 = copy.deepcopy(start), copy.deepcopy(start), copy.deepcopy(start)
    finetune.train(in_memory, (x, y), **SETTINGS)
    finetune.train(streamed, (streams.MappedRows.safetensors(tmp_path / "digits.safetensors", "x"), y), **SETTINGS)
    assert _max_difference(in_memory, streamed) <= 1e-6
    rows = streams.MappedRows.safetensors(tmp_path / "digits.safetensors", "x_bf16")
    assert torch.equal(rows.rows_at([3, 0]), torch.from_numpy(x[[3, 0]]).bfloat16())
    finetune.train(bf16, (rows, y), **SETTINGS)  # read as bf16, trained in the model's float32
    with pytest.raises(ValueError, match=r"has no tensor 'X'; its tensors: \['x', 'x_bf16', 'y'\]"):
        streams.MappedRows.safetensors(tmp_path / "digits.safetensors", "X")
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match=r"is not a safetensors file"):
        streams.MappedRows.safetensors(tmp_path / "bad.safetensors", "x")


def test_evaluate_and_predict_read_datasets(split):
    x, y, vx, vy = split
    model = mlp()
    finetune.train(model, (x, y), **SETTINGS)
    expected = finetune.evaluate(model, (vx, vy), batch_size=100)
    for workers in (0, 1):
        got = finetune.evaluate(model, Digits(vx, vy), batch_size=100, num_workers=workers)
        assert got["accuracy"] == expected["accuracy"] and got["loss"] == pytest.approx(expected["loss"])
        # A dataset with labels gives (inputs, label) items: predict reads the inputs
        assert (finetune.predict(model, Digits(vx, vy), num_workers=workers) == finetune.predict(model, vx)).all()


def test_labels_come_from_the_dataset_or_beside_it_and_must_agree(split):
    x, y, _, _ = split
    torch.manual_seed(0)
    start = mlp()
    a, b, c = copy.deepcopy(start), copy.deepcopy(start), copy.deepcopy(start)
    finetune.train(a, Digits(x, y), **SETTINGS)
    finetune.train(b, Digits(x, y, attribute="labels"), **SETTINGS)
    finetune.train(c, (Digits(x, y, attribute=None), y), **SETTINGS)
    d = copy.deepcopy(start)
    finetune.train(d, Digits(x, y, attribute=None), labels=y, **SETTINGS)
    assert _max_difference(a, b) == 0 and _max_difference(a, c) == 0 and _max_difference(a, d) == 0
    assert finetune.evaluate(d, Digits(x, y, attribute=None), labels=y)["loss"] == finetune.evaluate(d, Digits(x, y))["loss"]
    with pytest.raises(ValueError, match=r"labels= labels a dataset's examples, and train_data is a tuple \(X, y\) "
                                         r"with its labels already"):
        finetune.train(mlp(), (x, y), labels=y, **SETTINGS)
    with pytest.raises(ValueError, match=r"train_data is a dataset \(Digits\) without a `targets` or `labels` "
                                         r"attribute: pass \(train_data, labels\)"):
        finetune.train(mlp(), Digits(x, y, attribute=None), **SETTINGS)
    wrong = y.copy()
    wrong[5] = (wrong[5] + 1) % 10
    with pytest.raises(ValueError, match=rf"train_data\[5\] has label {y[5]} but the labels given for it say "
                                         rf"{wrong[5]}"):
        finetune.train(mlp(), (Digits(x, y, attribute=None), wrong), **dict(SETTINGS, sample_fraction=1.0))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_an_example_that_cannot_be_read_is_a_one_line_error_naming_it(split, num_workers):
    x, y, _, _ = split
    with pytest.raises(ValueError) as error:
        finetune.train(mlp(), Broken(x, y), num_workers=num_workers, **dict(SETTINGS, sample_fraction=1.0))
    assert str(error.value) == "train_data[7]: OSError: cannot read image-0007.png: truncated file"


def test_stream_settings_are_errors_where_they_would_do_nothing(split):
    x, y, _, _ = split
    with pytest.raises(ValueError, match=r"num_workers=2 sets how a streamed dataset is read ahead .* the data is in memory"):
        finetune.train(mlp(), (x, y), num_workers=2, **SETTINGS)
    with pytest.raises(ValueError, match=r"prefetch=4 sets how"):
        finetune.predict(mlp(), x, prefetch=4)
    with pytest.raises(ValueError, match=r"prefetch=4 sets how many batches each worker reads ahead, and num_workers=0"):
        finetune.train(mlp(), Digits(x, y), prefetch=4, **SETTINGS)
    with pytest.raises(ValueError, match=r"num_workers must be >= 0 .* got -1"):
        finetune.train(mlp(), Digits(x, y), num_workers=-1, **SETTINGS)
    with pytest.raises(ValueError, match=r"group_by_length=True"):
        finetune.train(mlp(), Digits(x, y), group_by_length=True, **SETTINGS)
    with pytest.raises(ValueError, match=r"model='mlp' reads its sizes and statistics from X in memory"):
        finetune.train("mlp", Digits(x, y), **SETTINGS)


def test_a_streamed_run_resumes_bit_for_bit(split, tmp_path):
    x, y, _, _ = split
    torch.manual_seed(0)
    start = mlp()
    whole, interrupted = copy.deepcopy(start), copy.deepcopy(start)
    settings = dict(SETTINGS, checkpoint_every=5, num_workers=2)
    finetune.train(whole, Digits(x, y), **settings)
    def interrupt(kind, info):  # Ctrl-C at step 23 of 57, in the second epoch: saved there, then raised
        if kind == "step" and info["step"] == 23:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune.train(interrupted, Digits(x, y), checkpoint_dir=str(tmp_path), callback=interrupt,
                       callback_interval=0, **settings)
    assert _max_difference(whole, interrupted) > 0
    finetune.train(interrupted, Digits(x, y), checkpoint_dir=str(tmp_path), resume=True,
                   **dict(settings, num_workers=0))
    assert _max_difference(whole, interrupted) == 0


def test_the_recipe_runs_on_a_dataset_and_says_what_streaming_changes(split):
    x, y, vx, vy = split
    torch.manual_seed(0)
    pretrained = mlp()
    finetune.train(pretrained, (x[:200], y[:200]), epochs=2, progress=False)
    result = finetune.train(copy.deepcopy(pretrained), Digits(x, y), progress=False)
    assert result.recipe[0]["value"] == "auto"
    assert not result.cache_frozen["used"] and "whose items may differ from one read to the next" in \
        result.cache_frozen["reason"]
    in_memory = finetune.train(copy.deepcopy(pretrained), (x, y), progress=False)
    assert abs(result.metrics["accuracy"] - in_memory.metrics["accuracy"]) <= 0.02


def test_predict_reads_a_stream_subset_with_its_own_labels(split):
    """The recipe's validation slice of a dataset is a labelled stream subset: predict reads it (its labels checked
    against its own, not against placeholders), for the logits a transformer's phases are compared by."""
    x, y, _, _ = split
    model = mlp()
    positions = torch.tensor([5, 900, 17, 300])
    subset = streams.Stream(Digits(x, y), torch.as_tensor(y), name="train_data").subset(positions)
    logits = finetune.predict(model, subset, output="logits")
    np.testing.assert_allclose(logits, finetune.predict(model, x[positions.numpy()], output="logits"), rtol=1e-6)
    mislabelled = subset.with_targets(torch.as_tensor((y[positions.numpy()] + 1) % 10))
    with pytest.raises(ValueError, match=r"has label \d but the labels given for it say"):
        finetune.predict(model, mislabelled)


def test_workers_read_the_plan_ahead_and_only_unplanned_batches_are_read_when_asked(split):
    x, y, _, _ = split
    stream = streams.Stream(Digits(x, y), torch.as_tensor(y), name="train_data", num_workers=1)
    plan = [torch.arange(0, 10), torch.arange(50, 60), torch.tensor([3, 1, 2])]
    stream.plan(plan)
    for batch in plan:
        assert torch.equal(stream.fetch(batch)[0], torch.from_numpy(x[batch.numpy()]))
    assert stream.reader.unplanned == 0 and stream.reader.fetched == 3
    stream.plan(plan)
    assert torch.equal(stream.fetch(plan[1])[0], torch.from_numpy(x[50:60]))  # not next: read here, plan dropped
    assert stream.reader.unplanned == 1
    assert torch.equal(stream.fetch(plan[2])[0], torch.from_numpy(x[[3, 1, 2]]))
    assert stream.reader.unplanned == 2 and stream.reader.fetched == 5


def test_a_large_memory_mapped_x_trains_without_coming_into_memory(tmp_path):
    """A 4 GiB float32 map (sparse on disk: it costs no disk writes) trains over every row in a child process whose
    peak resident memory (VmHWM: ru_maxrss would count the pytest process the child was forked from) stays far
    below the map's size."""
    code = textwrap.dedent(f"""
        import re, numpy as np, torch, finetune
        rows, width = 2**20, 1024  # 4 GiB of float32
        x = np.lib.format.open_memmap({str(tmp_path / "x.npy")!r}, mode="w+", dtype=np.float32, shape=(rows, width))
        del x
        x = np.load({str(tmp_path / "x.npy")!r}, mmap_mode="r")
        y = np.arange(rows) % 2
        model = torch.nn.Linear(width, 2)
        result = finetune.train(model, (x, y), epochs=1, batch_size=4096, progress=False)
        peak_kib = int(re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1))
        print(result.train_size, peak_kib // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    examples, peak_mib = map(int, out.stdout.split()[-2:])
    assert examples == 2**20
    assert peak_mib < 1536, f"peak RSS {peak_mib} MiB for a 4096 MiB map"


def _image_folder(root, per_class: int = 12, corrupt: bool = False):
    """Three classes of generated PNGs (20 x 24, class-coloured noise); with `corrupt`, one file that is not an image."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, name in enumerate(["ant", "bee", "cat"]):
        (root / name).mkdir(parents=True)
        for k in range(per_class):
            pixels = rng.integers(0, 256, (20, 24, 3)).astype(np.uint8) // 2
            pixels[..., label] += 100
            Image.fromarray(pixels).save(root / name / f"{k:03d}.png")
    if corrupt:
        (root / "bee" / "005-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image at all")
    return root


def _small_cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(16, 3))


IMAGE_SETTINGS = dict(epochs=2, lr=0.05, batch_size=8, progress=False)


def test_an_image_folder_streams_the_images_load_image_folder_decodes(tmp_path):
    root = _image_folder(tmp_path / "images")
    x, y, classes = finetune.datasets.load_image_folder(root, size=(16, 16), mode="RGB")
    folder = finetune.datasets.ImageFolder(root, size=16)
    assert folder.classes == classes == ["ant", "bee", "cat"] and (folder.targets == y).all()
    in_memory, streamed = _small_cnn(), _small_cnn()
    finetune.train(in_memory, (x, y), **IMAGE_SETTINGS)
    finetune.train(streamed, folder, num_workers=2, **IMAGE_SETTINGS)
    assert _max_difference(in_memory, streamed) <= 1e-6
    # the first epoch's batches are the arrays' rows
    stream = streams.Stream(folder, torch.as_tensor(y), name="train_data")
    batch = torch.tensor([5, 30, 0, 17])
    assert torch.equal(stream.fetch(batch)[0], torch.from_numpy(x[batch.numpy()]))



def test_a_built_in_image_model_is_sized_by_a_streamed_folder_first_image(tmp_path):
    """finetune.train("cnn", ImageFolder(...)) builds the CNN from the first image's shape and the labels (an image
    model's options are all sizes), to the run the decoded arrays give; evaluate reads another folder with some of
    the classes by their names, predict a folder of new images (ImageFiles) as ids that result.classes names; a subset of the folder (a split's
    rows) reads those images alone."""
    root = _image_folder(tmp_path / "images")
    x, y, _ = finetune.datasets.load_image_folder(root, size=(12, 10), mode="L")
    folder = finetune.datasets.ImageFolder(root, size=(12, 10), mode="L")
    in_memory = finetune.train("cnn", (x, y), channels=[4], **IMAGE_SETTINGS)
    streamed = finetune.train("cnn", folder, channels=[4], **IMAGE_SETTINGS)
    assert {k: streamed.model.options[k] for k in ("in_channels", "height", "width", "num_classes")} == \
        {"in_channels": 1, "height": 12, "width": 10, "num_classes": 3}
    assert _max_difference(in_memory.model, streamed.model) <= 1e-6
    # another folder with some of the classes is scored by the training folder's class names, not its own ids
    some = tmp_path / "some"
    shutil.copytree(root / "cat", some / "cat")
    cats = np.flatnonzero(y == 2)
    found = finetune.evaluate(streamed.model, finetune.datasets.ImageFolder(some, size=(12, 10), mode="L"))
    expected = finetune.evaluate(streamed.model, (x[cats], y[cats]))
    assert [found[k] for k in ("accuracy", "loss")] == pytest.approx([expected[k] for k in ("accuracy", "loss")])
    new = finetune.datasets.ImageFiles(root / "cat", size=(12, 10), mode="L")  # new images, no labels
    assert len(new) == len(cats) and (finetune.predict(streamed.model, new) ==
                                      finetune.predict(streamed.model, x[cats])).all()
    assert streamed.classes == ["ant", "bee", "cat"] and in_memory.classes is None  # the ids' names (ids: none)
    shutil.copytree(root / "bee", some / "wasp")
    with pytest.raises(ValueError, match=r"has class folder\(s\) \['wasp'\] not among the classes \['ant', 'bee', 'cat'\]"):
        finetune.evaluate(streamed.model, finetune.datasets.ImageFolder(some, size=(12, 10), mode="L"))
    rows = np.array([7, 2, 30])
    part = folder.subset(rows)
    assert len(part) == 3 and part.classes == folder.classes and (part.targets == y[rows]).all()
    assert all(np.array_equal(part[i][0], x[r]) for i, r in enumerate(rows))


def test_an_image_folder_augments_from_the_seed_of_each_read(tmp_path):
    root = _image_folder(tmp_path / "images")
    folder = finetune.datasets.ImageFolder(root, size=16, augment=True, mean=[0.5] * 3, std=[0.25] * 3)
    plain = finetune.datasets.ImageFolder(root, size=16, mean=[0.5] * 3, std=[0.25] * 3)
    assert np.array_equal(folder.load(3, None)[0], plain.load(3, None)[0])  # evaluation reads: resized whole
    assert np.array_equal(folder.load(3, 11)[0], folder.load(3, 11)[0])
    assert not np.array_equal(folder.load(3, 11)[0], folder.load(3, 12)[0])
    assert folder.load(3, 11)[0].shape == (3, 16, 16)
    # the crops are the run's, whichever worker reads them
    one, two = _small_cnn(), _small_cnn()
    finetune.train(one, folder, num_workers=0, **IMAGE_SETTINGS)
    finetune.train(two, folder, num_workers=2, **IMAGE_SETTINGS)
    assert _max_difference(one, two) == 0
    unaugmented = _small_cnn()
    finetune.train(unaugmented, plain, **IMAGE_SETTINGS)
    assert _max_difference(one, unaugmented) > 1e-3


def test_a_corrupt_image_is_an_error_naming_the_file_or_is_skipped_and_counted(tmp_path):
    root = _image_folder(tmp_path / "images", corrupt=True)
    bad = root / "bee" / "005-broken.png"
    for workers in (0, 2):
        with pytest.raises(ValueError, match=rf"image '{bad}' cannot be read") as error:
            finetune.train(_small_cnn(), finetune.datasets.ImageFolder(root, size=16), num_workers=workers,
                           **IMAGE_SETTINGS)
        assert "\n" not in str(error.value)
    folder = finetune.datasets.ImageFolder(root, size=16, on_bad_file="skip")
    assert folder.skipped == [str(bad)] and len(folder) == 36
    result = finetune.train(_small_cnn(), folder, num_workers=2, **IMAGE_SETTINGS)
    assert result.train_size == 36


def test_a_truncated_jpeg_is_skipped_with_on_bad_file_skip(tmp_path):
    """A half-downloaded JPEG passes Pillow's verify() (its structure reads) and fails only when decoded: skipped
    as a file that is not an image is, not met mid-training."""
    from PIL import Image

    root = _image_folder(tmp_path / "images")
    whole = root / "bee" / "whole.jpg"
    Image.fromarray(np.full((20, 24, 3), 90, np.uint8)).save(whole)
    truncated = root / "bee" / "truncated.jpg"
    truncated.write_bytes(whole.read_bytes()[:len(whole.read_bytes()) // 2])
    folder = finetune.datasets.ImageFolder(root, size=16, on_bad_file="skip")
    assert folder.skipped == [str(truncated)] and len(folder) == 37
    assert finetune.train(_small_cnn(), folder, **IMAGE_SETTINGS).train_size == 37


def test_a_class_reads_the_images_of_its_sub_folders_and_hidden_folders_are_no_class(tmp_path):
    """As torchvision's ImageFolder: a class folder's sub-folders hold its images too (predict's ImageFiles read
    them, training left them out); a hidden folder (.ipynb_checkpoints) is no class, a hidden file no image."""
    import shutil as sh

    root = _image_folder(tmp_path / "images")
    (root / "bee" / "more").mkdir()
    for k in range(3):
        sh.copy(root / "bee" / f"00{k}.png", root / "bee" / "more" / f"x{k}.png")
    (root / ".ipynb_checkpoints").mkdir()
    sh.copy(root / "ant" / "000.png", root / ".ipynb_checkpoints" / "000-checkpoint.png")
    sh.copy(root / "ant" / "000.png", root / "ant" / "._000.png")  # a macOS resource fork's name
    folder = finetune.datasets.ImageFolder(root, size=16)
    assert folder.classes == ["ant", "bee", "cat"] and len(folder) == 39
    assert sorted(int(n) for n in np.bincount(folder.targets)) == [12, 12, 15]
    assert len(finetune.datasets.ImageFiles(root, size=16)) == 39  # predict reads the same images


def test_a_16_bit_grayscale_png_reads_as_its_8_bit_self(tmp_path):
    """Pillow's convert("L") clips a 16-bit value above 255 to white: a 16-bit digit read as black and white."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (20, 24)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "eight.png")
    Image.fromarray(pixels.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")
    with Image.open(tmp_path / "sixteen.png") as sixteen:
        assert sixteen.mode.startswith("I")
    for mode in ("L", "RGB"):
        eight = finetune.datasets.read_image(tmp_path / "eight.png", (20, 24), mode)
        np.testing.assert_array_equal(finetune.datasets.read_image(tmp_path / "sixteen.png", (20, 24), mode), eight)


def test_frozen_features_are_computed_once_from_a_map_or_an_unaugmented_folder(split, tmp_path):
    """A frozen body over streamed data that reads the same every epoch runs once per example, in memory after:
    the same weights as the uncached streamed run and as the cached run on the arrays."""
    x, y, vx, vy = split
    mapped = _mapped(x, tmp_path / "x.npy")
    torch.manual_seed(0)
    start = mlp()
    settings = dict(SETTINGS, freeze=["0"])
    runs = {}
    for name, data, cache in [("arrays", (x, y), "auto"), ("map", (mapped, y), "auto"), ("map, uncached", (mapped, y), False)]:
        model = copy.deepcopy(start)
        runs[name] = (model, finetune.train(model, data, (vx, vy), cache_frozen=cache, **settings))
    assert runs["map"][1].cache_frozen["used"] and not runs["map, uncached"][1].cache_frozen["used"]
    assert _max_difference(runs["map"][0], runs["arrays"][0]) <= 1e-6
    assert _max_difference(runs["map"][0], runs["map, uncached"][0]) <= 1e-5
    # a dataset of one's own may transform randomly: not cached, and True says why
    with pytest.raises(ValueError, match=r"cache_frozen=True, but .* Digits, whose items may differ"):
        finetune.train(copy.deepcopy(start), Digits(x, y), cache_frozen=True, **settings)
    # an image folder without augmentation is cached; with it, not
    root = _image_folder(tmp_path / "images")
    cnn = _small_cnn()
    plain = finetune.train(copy.deepcopy(cnn), finetune.datasets.ImageFolder(root, size=16), freeze=["0"],
                           **IMAGE_SETTINGS)
    augmented = finetune.train(copy.deepcopy(cnn), finetune.datasets.ImageFolder(root, size=16, augment=True),
                               freeze=["0"], **IMAGE_SETTINGS)
    assert plain.cache_frozen["used"], plain.cache_frozen
    assert augmented.cache_frozen == {"used": False, "reason": "the dataset augments each training read (augment=True)"}


def test_a_slice_of_a_memory_map_reads_its_own_rows(split, tmp_path):
    """numpy keeps the parent's `offset` on a slice of a memmap: the rows are found from the shared map instead."""
    x, y, _, _ = split
    mapped = _mapped(x, tmp_path / "x.npy")
    for part in (mapped[1000:], mapped[3:10], mapped[100:][5:50]):
        rows = streams.MappedRows.memmap(part, "X")
        assert torch.equal(rows.rows_at(list(range(len(part)))), torch.from_numpy(np.array(part)))
    model = mlp()
    finetune.train(model, (x[:1000], y[:1000]), **SETTINGS)
    assert (finetune.predict(model, mapped[1000:]) == finetune.predict(model, x[1000:])).all()
    with pytest.raises(IndexError):
        streams.MappedRows.memmap(mapped, "X")[len(x)]


def test_the_recipe_with_workers_reads_its_cached_head_phase_in_memory(split, tmp_path):
    x, y, _, _ = split
    mapped = _mapped(x, tmp_path / "x.npy")
    torch.manual_seed(0)
    pretrained = mlp()
    finetune.train(pretrained, (x[:200], y[:200]), epochs=2, progress=False)
    streamed, in_memory = copy.deepcopy(pretrained), copy.deepcopy(pretrained)
    result = finetune.train(streamed, (mapped, y), num_workers=2, progress=False)
    finetune.train(in_memory, (x, y), progress=False)
    assert result.recipe[0]["value"] == "auto" and result.cache_frozen["used"]
    assert _max_difference(streamed, in_memory) <= 1e-6


def test_dataset_mistakes_are_one_line_errors_naming_the_example(split, tmp_path):
    x, y, _, _ = split

    class Items(torch.utils.data.Dataset):
        def __init__(self, item):
            self.item, self.targets = item, y

        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return self.item(i)

    cases = [
        (lambda i: (torch.from_numpy(x[i][: 63 if i == 300 else 64]), int(y[i])),
         r"train_data\[300\]'s input 0 has shape \(63,\) but train_data\[\d+\]'s has \(64,\)"),
        (lambda i: (object(), int(y[i])), r"train_data\[\d+\]'s input 0 is a object; an input must be a tensor"),
        (lambda i: (torch.from_numpy(x[i]), None), r"train_data\[\d+\]'s label is None"),
        (lambda i: (_ for _ in ()).throw(RuntimeError("cannot open\nthe database")),
         r"^train_data\[\d+\]: RuntimeError: cannot open the database$"),
    ]
    for item, message in cases:
        with pytest.raises((ValueError, TypeError), match=message) as error:
            finetune.train(mlp(), Items(item), **dict(SETTINGS, sample_fraction=1.0))
        assert "\n" not in str(error.value)
    # a list of numbers is one input
    finetune.train(mlp(), Items(lambda i: (x[i].tolist(), int(y[i]))), **SETTINGS)

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter([])

    with pytest.raises(TypeError, match=r"Stream is an IterableDataset; finetune reads map-style datasets"):
        finetune.train(mlp(), Stream(), labels=y, **SETTINGS)


def test_a_validation_folder_with_other_classes_is_an_error(tmp_path):
    root = _image_folder(tmp_path / "train")
    shutil.copytree(root / "bee", tmp_path / "val" / "bee")
    shutil.copytree(root / "cat", tmp_path / "val" / "cat")
    train = finetune.datasets.ImageFolder(root, size=16)
    with pytest.raises(ValueError, match=r"val's classes \['bee', 'cat'\] differ from train_data's \['ant', 'bee', 'cat'\]"):
        finetune.train(_small_cnn(), train, val=finetune.datasets.ImageFolder(tmp_path / "val", size=16),
                       **IMAGE_SETTINGS)
    finetune.train(_small_cnn(), train, val=finetune.datasets.ImageFolder(tmp_path / "val", size=16,
                                                                          classes=train.classes), **IMAGE_SETTINGS)


def test_images_read_at_another_scale_than_training_are_an_error(tmp_path):
    """The model remembers its ImageFolder's mean and std (saved with it): evaluate and predict on images read
    with other values, or without them, are an error naming both, not a silent shift of every pixel."""
    root = _image_folder(tmp_path / "images")
    train = finetune.datasets.ImageFolder(root, size=(12, 10), mode="L", mean=0.3, std=0.4)
    model = finetune.train("cnn", train, channels=[4], **IMAGE_SETTINGS).model
    same = finetune.datasets.ImageFolder(root, size=(12, 10), mode="L", mean=[0.3], std=[0.4])
    assert finetune.evaluate(model, same)["accuracy"] == finetune.evaluate(model, train)["accuracy"]
    finetune.save(model, tmp_path / "m.safetensors")
    for trained in (model, finetune.load(tmp_path / "m.safetensors")):
        for read in (finetune.datasets.ImageFolder(root, size=(12, 10), mode="L"),
                     finetune.datasets.ImageFiles(root, size=(12, 10), mode="L", mean=0.5, std=0.4)):
            with pytest.raises(ValueError, match=r"is read with .* and the model trained on images read with "
                                                 r"mean=\[0.3\], std=\[0.4\]: pass the same mean= and std="):
                (finetune.evaluate if isinstance(read, finetune.datasets.ImageFolder) else finetune.predict)(
                    trained, read)


def test_arrays_for_a_model_trained_on_a_normalised_folder_are_checked_for_its_pixel_scale(caplog):
    """A run on an image folder keeps the scale its pixels were read at: arrays of uint8 pixels are an error, and
    values all in [0, 1] where training normalised them to MNIST's mean a warning; normalised ones pass quietly."""
    from finetune import training

    scale = training.pixel_scale([0.1307], [0.3081])
    images = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    with pytest.raises(ValueError, match=r"^X holds uint8 pixels \(0 to 255\), and the model trained on images read "
                                         r"as \(pixel / 255 - mean\) / std, mean=\[0.1307\], std=\[0.3081\]"):
        training._check_pixels((images * 255).astype(np.uint8), scale, "X")
    with caplog.at_level("WARNING", logger="finetune"):
        training._check_pixels((images - 0.1307) / 0.3081, scale, "X")
        assert caplog.text == ""
        training._check_pixels(images, scale, "X")
    assert "X's values are all in [0, 1], and the model trained on images read as (pixel / 255 - mean) / std" in \
        caplog.text
