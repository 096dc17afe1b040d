"""Every bad input raises a clear ValueError/TypeError naming the argument and the value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import finetune

from helpers import mlp

rng = np.random.default_rng(0)
X = rng.random((40, 64), dtype=np.float32)
Y = np.arange(40) % 4


def with_nan(value: float) -> np.ndarray:
    x = X.copy()
    x[3, 5] = value
    return x


class Unscriptable(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def forward(self, *inputs):  # neither scriptable (*args) nor traceable (returns no tensor)
        return np.asarray(inputs[0])


def categories(values):
    import pandas as pd

    return pd.Series(values, dtype="category")


def series(values):
    import pandas as pd

    return pd.Series(values)


def pd_objects(values):
    """A pandas column of dtype object holding numbers (read from a file as text, or built from a mixed list)."""
    import pandas as pd

    return pd.Series(values, dtype=object)


def frame(**columns):
    """X as a pandas DataFrame, with the given columns beside two numeric ones."""
    import pandas as pd

    return pd.DataFrame({"a": X[:, 0], "b": X[:, 1], **columns})


def train(model="mlp", data=(X, Y), **kw):
    kw.setdefault("progress", False)
    kw.setdefault("epochs", 1)
    return finetune.train(model, data, **kw)


CASES = [
    # data
    ("lengths differ", lambda: train(data=(X, Y[:-1])), ValueError, r"y has 39 rows but the features have 40"),
    ("empty X", lambda: train(data=(X[:0], Y[:0])), ValueError, r"X is empty"),
    ("scalar X", lambda: train(data=(np.float32(1), Y)), ValueError, r"X must have a first"),
    ("NaN in X", lambda: train(model=mlp(), data=(with_nan(np.nan), Y)), ValueError, r"X contains NaN \(the first non-finite value: row 3, column 5\); fill them or drop those rows \(model 'mlp' fills missing values itself\)$"),
    ("inf in X", lambda: train(data=(with_nan(np.inf), Y)), ValueError, r"X contains inf \(the first non-finite value: row 3, column 5\)"),
    ("string X", lambda: train(data=(np.array([["a"]] * 40), Y)), TypeError, r"X must hold numbers, got .*<U1"),
    ("ragged X", lambda: train(data=([[1.0, 2.0], [1.0]], [0, 1])), ValueError, r"X could not be converted"),
    ("X is None", lambda: train(data=(None, Y)), TypeError, r"X must be an array \(numpy, a torch tensor, a pandas DataFrame or Series, a list\), got NoneType"),
    ("y a column's name", lambda: train(data=(X, "label")), TypeError, r"y is the string 'label': pass the labels themselves \(a DataFrame's column: df\['label'\], with X = df.drop\(columns='label'\)\), not a column's name$"),
    ("data not a pair", lambda: train(data=X), TypeError, r"train_data must be a tuple \(X, y\), got ndarray"),
    ("data triple", lambda: train(data=(X, Y, Y)), TypeError, r"train_data must be a tuple \(X, y\), got tuple of length 3"),
    ("negative label", lambda: train(data=(X, Y - 1)), ValueError, r"y must be class ids 0..K-1, got -1: encode the labels"),
    ("fractional label", lambda: train(data=(X, Y + 0.5)), ValueError, r"y must be integer class ids .* such as 0.5"),
    ("NaN label", lambda: train(data=(X, np.where(Y == 0, np.nan, Y))), ValueError, r"y must be integer class ids"),
    ("one class", lambda: train(data=(X, np.zeros(40, np.int64))), ValueError, r"y holds one class \(0\) in all 40 rows: classification needs at least two \(for a value to predict, pass task='regression'\)"),
    ("two sample sizes", lambda: train(sample_size=30, sample_fraction=0.9), ValueError, r"sample_size=30 and sample_fraction=0.9 both choose the sample's size: pass one of them"),
    ("label smoothing for a value", lambda: train(data=(X, X[:, 0]), task="regression", label_smoothing=0.1), ValueError, r"label_smoothing applies to task='classification' only, got label_smoothing=0.1 with task='regression'"),
    ("callback not callable", lambda: train(callback=3), TypeError, r"callback must be a callable \(kind, info\) -> bool \| None, got 3 \(int\)"),
    ("a quantity as classes", lambda: train(data=(X, np.arange(40) * 3.0)), ValueError, r"y has 40 distinct values among 40 rows, most of them seen once or twice: a value to predict\? pass task='regression'"),
    ("codes as class ids", lambda: train(data=(X, (Y % 2) * 1_000_000), task="classification"), ValueError, r"y's class ids reach 1000000 with 2 distinct labels: class ids are 0..K-1"),
    ("labels from 1", lambda: train(data=(X, Y % 2 + 1)), ValueError, r"y's labels are not the class ids 0..K-1: 2 distinct labels \(1, 2\) reach 2, so 1 of the 3 ids never occur; encode them, one mapping for every split \(classes, y = np.unique\(y, return_inverse=True\); y_val = np.searchsorted\(classes, y_val\)\), pass task='regression' for a value to predict, or task='classification' to keep them as given"),
    ("labels with gaps", lambda: train(data=(X, np.array([0, 1, 2, 3, 7, 12, 0, 1] * 5))), ValueError, r"6 distinct labels \(0, 1, 2, 3, 7, 12\) reach 12, so 7 of the 13 ids never occur"),
    ("whole prices", lambda: train(data=(X, 900.0 + 50 * (np.arange(40) % 8))), ValueError, r"8 distinct labels \(900, 950, .*1250\) reach 1250, so 1243 of the 1251 ids never occur"),
    ("labels for regression", lambda: train(data=(X, Y.astype(str)), task="regression"), TypeError, r"^y holds labels such as '0', and task='regression' needs numbers$"),
    ("a label missing among strings", lambda: train(data=(X, np.array(["cat", None] * 20, dtype=object))), ValueError, r"^y row 1 is missing \(None\) among labels such as 'cat': every label must be a string \(drop the rows without one, or fill them\)$"),
    ("a label missing in a Series", lambda: train(data=(X, series(["cat", None] * 20))), ValueError, r"^y row 1 is missing \(nan\) among labels such as 'cat'"),
    ("a label missing in a split Series", lambda: train(data=(X, series(["cat", None] * 20).set_axis(range(100, 140)))), ValueError, r"^y row 1 \(index 101\) is missing \(nan\) among labels such as 'cat'"),
    ("labels as bytes", lambda: train(data=(X, np.array([b"cat", b"dog"] * 20))), TypeError, r"^y holds bytes such as b'cat': decode them to str labels \(y.astype\(str\)\)$"),
    ("a validation label training lacks", lambda: train(data=(X, np.array(["cat", "dog"] * 20)), val=(X, np.array(["cat", "cow"] * 20))), ValueError, r"^y_val holds label\(s\) \['cow'\] that the training y does not \(its classes: \['cat', 'dog'\]\)$"),
    ("validation ids beside training labels", lambda: train(data=(X, np.array(["cat", "dog"] * 20)), val=(X, Y % 2)), ValueError, r"^y_val holds class ids, and the model's classes are labels \['cat', 'dog'\]: pass y_val as labels$"),
    ("2-D labels", lambda: train(data=(X, np.stack([Y, Y], 1))), ValueError, r"y must be a 1-D array of class ids, got shape \(40, 2\)"),
    ("NaN regression target", lambda: train(data=(X, np.where(np.arange(40) == 7, np.nan, 1.0)), task="regression"), ValueError, r"y contains NaN \(the first non-finite value: row 7; drop those rows or fill them\)"),
    ("val lengths differ", lambda: train(val=(X, Y[:5])), ValueError, r"y_val has 5 rows but the features have 40"),
    ("val width differs", lambda: train(val=(X[:, :10], Y)), ValueError, r"X_val has examples of shape \(10,\) but X has \(64,\)"),
    ("val label y never has", lambda: train(val=(X[:8], np.arange(8) % 5)), ValueError, r"y_val holds label\(s\) \[4\] beyond y's largest, 3: model 'mlp' is built with y's 4 classes"),
    ("y shuffled apart from X", lambda: train(data=(frame(), series(Y).sample(frac=1.0, random_state=0))), ValueError, r"X and y have different pandas indexes \(row 0: X's 0, y's \d+\) and rows pair by position: they hold the same labels in another order; align them \(y = y.loc\[X.index\]\), or pass y.to_numpy\(\) if the positions match"),
    ("val NaN", lambda: train(model=mlp(), val=(with_nan(np.nan), Y)), ValueError, r"X_val contains NaN"),
    ("val inf for mlp", lambda: train(val=(with_nan(np.inf), Y)), ValueError, r"^X_val contains inf \(the first non-finite value: row 3, column 5\)$"),
    # config fields
    ("sample_fraction 0", lambda: train(sample_fraction=0.0), ValueError, r"sample_fraction must be in \(0, 1\], got 0"),
    ("sample_fraction 1.5", lambda: train(sample_fraction=1.5), ValueError, r"sample_fraction must be in \(0, 1\], got 1.5"),
    ("sample_size too big", lambda: train(sample_size=41), ValueError, r"sample_size must be <= the number of training examples \(40\), got 41"),
    ("sample_size 0", lambda: train(sample_size=0), ValueError, r"sample_size must be a positive integer or None, got 0"),
    ("unknown optimizer", lambda: train(optimizer="lion"), ValueError, r"optimizer must be one of \['adam', 'adamw', 'rmsprop', 'sgd'\], got 'lion'"),
    ("unknown task", lambda: train(task="rank"), ValueError, r"task must be one of \['classification', 'regression', 'ranking'\], got 'rank'"),
    ("batch_size 0", lambda: train(batch_size=0), ValueError, r"batch_size must be a positive integer or 'full', got 0"),
    ("batch_size word", lambda: train(batch_size="half"), ValueError, r"batch_size must be a positive integer or 'full', got 'half'"),
    ("batch_size float", lambda: train(batch_size=3.5), TypeError, r"batch_size must be int or str, got 3.5"),
    ("negative lr", lambda: train(lr=-0.1), ValueError, r"lr must be a finite number > 0, got -0.1"),
    ("NaN lr", lambda: train(lr=float("nan")), ValueError, r"lr must be a finite number > 0, got nan"),
    ("lr as string", lambda: train(lr="0.1"), TypeError, r"lr must be float, got '0.1'"),
    ("momentum 1", lambda: train(momentum=1.0), ValueError, r"momentum must be in \[0, 1\), got 1"),
    ("nesterov without momentum", lambda: train(nesterov=True, momentum=0.0), ValueError, r"nesterov=True needs momentum > 0"),
    ("negative weight_decay", lambda: train(weight_decay=-1.0), ValueError, r"weight_decay must be a finite number >= 0, got -1"),
    ("negative epochs", lambda: train(epochs=-1), ValueError, r"epochs must be >= 1, got -1"),
    ("wrong width, recipe", lambda: finetune.train(torch.nn.Sequential(torch.nn.Linear(10, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)), (X, Y), progress=False), ValueError, r"model forward\(\) failed on training inputs of shape \[\d+, 64\] \(dtype float32\): mat1 and mat2 shapes cannot be multiplied"),
    ("integer X, recipe", lambda: finetune.train(torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2)), (X.astype(np.int64), Y % 2), progress=False), ValueError, r"\(dtype int64\): .* X.astype\('float32'\)"),
    ("no epochs", lambda: train(epochs=0), ValueError, r"epochs must be >= 1, got 0"),
    ("negative seed", lambda: train(seed=-1), ValueError, r"seed must be >= 0, got -1"),
    ("negative seed, recipe", lambda: finetune.train("mlp", (X, Y), seed=-1, progress=False), ValueError, r"seed must be >= 0, got -1"),
    ("predict given (X, y)", lambda: finetune.predict(train(mlp()).model, (X, Y)), ValueError, r"^predict\(model, X\) takes X alone, and X is a tuple of 2: for \(X, y\) use finetune.evaluate"),
    ("unknown device", lambda: train(device="tpu"), ValueError, r"device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    ("unknown device, a module", lambda: train(torch.nn.Sequential(torch.nn.Linear(64, 10)), device="tpu"), ValueError, r"device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    ("cuda absent, a module", lambda: train(torch.nn.Sequential(torch.nn.Linear(64, 10)), device="cuda") if not torch.cuda.is_available() else (_ for _ in ()).throw(ValueError("CUDA is not available")), ValueError, r"CUDA is not available"),
    ("cuda absent", lambda: train(device="cuda") if not torch.cuda.is_available() else (_ for _ in ()).throw(ValueError("CUDA is not available")), ValueError, r"CUDA is not available"),
    ("unknown setting", lambda: train(epoch=3), TypeError, r"^unknown setting\(s\) \['epoch'\] \(did you mean 'epochs'\?\); known settings: \['task', "),
    ("another library's name for a setting", lambda: train(learning_rate=0.1, patience=3), TypeError, r"^unknown setting\(s\) \['learning_rate', 'patience'\] \(did you mean 'lr', 'early_stopping'\?\)"),
    ("config not a TrainConfig", lambda: train(config={"lr": 1}), TypeError, r"config must be a finetune.TrainConfig, got dict"),
    # models
    ("unknown model name", lambda: train(model="resnet"), ValueError, r"model must be an nn.Module or one of \['cnn', 'digit_cnn', 'mf', 'minilm', 'mlp', 'ncf'\], got 'resnet'"),
    ("unknown model option", lambda: train(model="mlp", hiden=[3]), TypeError, r"unknown setting\(s\) \['hiden'\]"),
    ("model option wrong type", lambda: finetune.build("mlp", hidden="wide"), TypeError, r"model option hidden='wide' has the wrong type"),
    ("model options on a module", lambda: train(model=mlp(), in_features=3), TypeError, r"unknown setting\(s\) \['in_features'\]"),
    ("model not a module", lambda: train(model=42), TypeError, r"model must be an nn.Module, a NativeModel or one of .* got int"),
    # neither scripted nor traced: it runs in Python (runner="auto"), where its output is checked
    ("unscriptable, untraceable", lambda: train(model=Unscriptable()), ValueError, r"model forward\(\) failed on training inputs .*: TypeError: model forward\(\) must return a tensor, got ndarray"),
    ("too few classes in head", lambda: train(model=mlp(out=3), head="keep"), ValueError, r"model outputs 3 classes but the labels need 4 \(largest label 3\)"),
    ("wrong input width", lambda: train(model=mlp(in_features=10)), ValueError, r"model forward\(\) failed on training inputs of shape \[32, 64\]"),
    ("regression head too wide", lambda: train(model=mlp(out=2), data=(X, Y.astype(np.float32)), task="regression"), ValueError, r"model output has shape \[32, 2\] but task='regression' targets have shape \[32\]"),
    ("mlp on one flat feature", lambda: train(data=(X[:, 0], Y)), ValueError, r"model 'mlp' needs X shaped \(rows, features\), got X of shape \(40,\): one feature is a column, X.reshape\(-1, 1\)"),
    ("a DataFrame column of strings, nn.Module", lambda: train(model=mlp(in_features=3), data=(frame(sex=["m", "f"] * 20), Y)), TypeError, r"X column 'sex' holds \w+ values \(e.g. 'm'\), not a numeric dtype: encode it first \(pd.get_dummies\(...\) for categories, .* model 'mlp' one-hot encodes them itself\)"),
    ("a DataFrame column of strings, mlp built without categories", lambda: train(model=finetune.build("mlp", in_features=3, num_classes=4), data=(frame(sex=["m", "f"] * 20), Y)), ValueError, r"^X column 'sex' holds categories \(e.g. 'm'\), and the model was built with none"),
    ("a DataFrame column of numbers as objects, nn.Module", lambda: train(model=mlp(in_features=3), data=(frame(glu=pd_objects([86, 90] * 20)), Y)), TypeError, r"X column 'glu' holds object values \(e.g. 86\), not a numeric dtype: they read as numbers: df\['glu'\] = pd.to_numeric\(df\['glu'\]\)"),
    ("a DataFrame column of strings, names repeated", lambda: train(data=(frame(sex=["m", "f"] * 20).set_axis(["a", "a", "a"], axis=1), Y)), TypeError, r"^X has the column name\(s\) 'a' more than once: its category columns are found by name"),
    ("string labels as a regression target", lambda: train(data=(X, np.array(["1.5", "2"] * 20, dtype=object)), task="regression"), TypeError, r"^y holds labels such as '1.5', and task='regression' needs numbers$"),
    ("NaN in a DataFrame indexed by numpy integers (df.sample's)", lambda: train(model=mlp(in_features=3), data=(frame(c=with_nan(np.nan)[:, 5]).iloc[::-1].set_axis(np.arange(39, -1, -1)), Y)), ValueError, r"^X contains NaN \(the first non-finite value: row 36 \(index label 3\), column 'c'\); fill them or drop those rows \(model 'mlp' fills missing values itself\)$"),
    ("NaN in a shuffled DataFrame", lambda: train(model=mlp(in_features=3), data=(frame(c=with_nan(np.nan)[:, 5]).iloc[::-1], Y)), ValueError, r"^X contains NaN \(the first non-finite value: row 36 \(index label 3\), column 'c'\); fill them or drop those rows \(model 'mlp' fills missing values itself\)$"),
    ("cnn on flat data", lambda: train(model="cnn"), ValueError, r"model 'cnn' needs images shaped \(N, channels, height, width\), got X of shape \(40, 64\)"),
    ("no trainable parameters", lambda: train(model=mlp().requires_grad_(False)), ValueError, r"model has no trainable parameters"),
    # evaluate / predict
    ("evaluate empty", lambda: finetune.evaluate(mlp(), (X[:0], Y[:0])), ValueError, r"X is empty"),
    ("evaluate model name", lambda: finetune.evaluate("mlp", (X, Y)), TypeError, r"model must be an nn.Module"),
    ("values of a classifier", lambda: finetune.predict(finetune.train("mlp", (X, Y), epochs=1, progress=False).model, X, output="values"), ValueError, r"output='values' \(task='classification'\) reads a regression model's values, and this model was trained for classification: output='logits' gives its class scores"),
    ("predict unknown output", lambda: finetune.predict(mlp(), X, output="scores"), ValueError, r"output must be one of \['classes', 'probabilities', 'logits', 'values'\], got 'scores'"),
    ("predict wrong width", lambda: finetune.predict(mlp(in_features=10), X), ValueError, r"model forward\(\) failed on evaluation inputs of shape \[40, 64\]"),
    ("predict wrong width, native mlp", lambda: finetune.predict(finetune.build("mlp", in_features=10, num_classes=4), X), ValueError, r"model forward\(\) failed on evaluation inputs of shape \[40, 64\] \(dtype Float\): mlp takes 10 features per example \(in_features\), got 64$"),
    ("predict NaN", lambda: finetune.predict(mlp(), with_nan(np.nan)), ValueError, r"X contains NaN"),
    ("predict one example as X", lambda: finetune.predict(train(model=mlp()).model, X[0]), ValueError, r"^X has the shape of one training example, \(64,\); X holds a batch of them: X.reshape\(1, 64\) for one example$"),
    ("predict a DataFrame's row as X", lambda: finetune.predict(train(data=(frame(), Y)).model, frame().iloc[0]), ValueError, r"^X is a pandas Series of 2 values, the shape of one training example; X holds a batch of them: a one-row DataFrame \(df.iloc\[\[i\]\], not df.iloc\[i\]\) for one example$"),
    ("predict other width than trained", lambda: finetune.predict(train().model, X[:, :10]), ValueError, r"^X's examples are shaped \(10,\) \(X of shape \(40, 10\)\), and the model was trained on examples shaped \(64,\)$"),
    ("evaluate batch_size 0", lambda: finetune.evaluate(mlp(), (X, Y), batch_size=0), ValueError, r"^batch_size must be a positive integer, got 0$"),
    ("embed batch_size 0", lambda: finetune.embed(mlp(), X, batch_size=0), ValueError, r"^batch_size must be a positive integer, got 0$"),
    ("read_idx missing file", lambda: finetune._C.read_idx("/nonexistent/file.idx"), RuntimeError, r"cannot open IDX file '/nonexistent/file.idx'"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_case_count():
    assert len(CASES) >= 40


# Every TrainConfig field with a bad value: (value, exception, what the message must say).
BAD_FIELDS = {
    "task": ("rank", ValueError, r"task must be one of .* got 'rank'"),
    "epochs": (0, ValueError, r"epochs must be >= 1, got 0"),
    "batch_size": (0, ValueError, r"batch_size must be a positive integer or 'full', got 0"),
    "eval_batch_size": (0, ValueError, r"eval_batch_size must be >= 1, got 0"),
    "optimizer": ("lion", ValueError, r"optimizer must be one of .* got 'lion'"),
    "lr": (-1.0, ValueError, r"lr must be a finite number > 0, got -1"),
    "momentum": (1.5, ValueError, r"momentum must be in \[0, 1\), got 1.5"),
    "nesterov": ("yes", TypeError, r"nesterov must be bool, got 'yes'"),
    "weight_decay": (-0.1, ValueError, r"weight_decay must be a finite number >= 0, got -0.1"),
    "decay_norm_and_bias": (1, TypeError, r"decay_norm_and_bias must be bool, got 1"),
    "beta1": (1.0, ValueError, r"beta1 must be in \[0, 1\), got 1"),
    "beta2": (-0.1, ValueError, r"beta2 must be in \[0, 1\), got -0.1"),
    "eps": (0.0, ValueError, r"eps must be > 0, got 0"),
    "alpha": (1.0, ValueError, r"alpha must be in \[0, 1\), got 1"),
    "schedule": ("exp", ValueError, r"schedule must be one of .* got 'exp'"),
    "warmup": (-1.0, ValueError, r"warmup must be >= 0 .* got -1"),
    "step_size": (-1, ValueError, r"step_size must be >= 0 .* got -1"),
    "gamma": (0.0, ValueError, r"gamma must be in \(0, 1\], got 0"),
    "min_lr": (1.0, ValueError, r"min_lr must be in \[0, lr\], got 1"),
    "pct_start": (0.0, ValueError, r"pct_start must be in \(0, 1\), got 0"),
    "cycle_momentum": ("yes", TypeError, r"cycle_momentum must be bool, got 'yes'"),
    "base_momentum": (1.0, ValueError, r"base_momentum must be in \[0, 1\), got 1"),
    "max_momentum": (0.5, ValueError, r"max_momentum must be in \[base_momentum, 1\) = \[0.85, 1\), got 0.5"),
    "freeze": ("body", TypeError, r"freeze must be list\[str\] or Callable.* got 'body'"),
    "unfreeze_at": ({"1": ["body"]}, TypeError, r"unfreeze_at keys must be epochs \(int\), got '1'"),
    "lr_groups": ({"head": -1.0}, ValueError, r"lr_groups\['head'\] must be a finite multiplier >= 0, got -1"),
    "layer_decay": (0.0, ValueError, r"layer_decay must be in \(0, 1\], got 0"),
    "clip_grad_norm": (-1.0, ValueError, r"clip_grad_norm must be >= 0 .* got -1"),
    "accumulate": (0, ValueError, r"accumulate must be >= 1, got 0"),
    "class_weights": ("inverse", ValueError, r"class_weights must be 'balanced', a list of weights or None, got 'inverse'"),
    "label_smoothing": (1.0, ValueError, r"label_smoothing must be in \[0, 1\), got 1"),
    "augment_crop": (-1, ValueError, r"augment_crop must be >= 0 .* got -1"),
    "augment_flip": ("yes", TypeError, r"augment_flip must be bool, got 'yes'"),
    "sampler": ("random", ValueError, r"sampler must be one of \['shuffle', 'balanced'\], got 'random'"),
    "early_stopping": (-1, ValueError, r"early_stopping must be >= 0 .* got -1"),
    "monitor": ("val_auc", ValueError, r"monitor must be one of .* got 'val_auc'"),
    "restore_best": ("yes", TypeError, r"restore_best must be bool, got 'yes'"),
    "ema": (1.0, ValueError, r"ema must be in \[0, 1\) \(0 = off\), got 1"),
    "precision": ("fp16", ValueError, r"precision must be one of \['fp32', 'bf16'\], got 'fp16'"),
    "on_nan": ("ignore", ValueError, r"on_nan must be one of \['stop', 'skip'\], got 'ignore'"),
    "checkpoint_dir": (5, TypeError, r"checkpoint_dir must be str or None, got 5"),
    "checkpoint_every": (0, ValueError, r"checkpoint_every must be a positive number of steps or 'epoch', got 0"),
    "keep_last": (-1, ValueError, r"keep_last must be >= 0 .* got -1"),
    "distributed": ("mpi", ValueError, r"distributed must be one of \['auto', 'off'\], got 'mpi'"),
    "bucket_mb": (0.0, ValueError, r"bucket_mb must be > 0, got 0"),
    "dist_timeout": (-1.0, ValueError, r"dist_timeout must be > 0 seconds, got -1"),
    "sample_fraction": (2.0, ValueError, r"sample_fraction must be in \(0, 1\], got 2"),
    "sample_size": (0, ValueError, r"sample_size must be a positive integer or None, got 0"),
    "stratify": ("no", TypeError, r"stratify must be bool, got 'no'"),
    "shuffle": (None, TypeError, r"shuffle must be bool, got None"),
    "drop_last": (1, TypeError, r"drop_last must be bool, got 1"),
    "seed": (1.5, TypeError, r"seed must be int, got 1.5"),
    "device": ("tpu", ValueError, r"device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    "trim_padding": ("yes", ValueError, r"trim_padding must be 'auto', True or False, got 'yes'"),
    "group_by_length": ("yes", TypeError, r"group_by_length must be bool, got 'yes'"),
    "cache_frozen": ("yes", ValueError, r"cache_frozen must be 'auto', True or False, got 'yes'"),
    "cache_frozen_gb": (0.0, ValueError, r"cache_frozen_gb must be > 0, got 0"),
    "num_workers": (-1, ValueError, r"num_workers must be >= 0 \(0 = read in the training process\), got -1"),
    "prefetch": (0, ValueError, r"prefetch must be >= 1 \(batches each worker reads ahead\), got 0"),
    "output_key": ("", ValueError, r"output_key must be a non-empty name or None, got ''"),
    "runner": ("jit", ValueError, r"runner must be one of \['auto', 'script', 'trace', 'python'\], got 'jit'"),
    "topk": (0, ValueError, r"topk must be >= 1, got 0"),
    "progress": ("no", TypeError, r"progress must be bool, got 'no'"),
}


def test_every_config_field_has_a_bad_value_case():
    assert sorted(BAD_FIELDS) == sorted(finetune.TrainConfig.__dataclass_fields__)


@pytest.mark.parametrize("field", sorted(BAD_FIELDS))
def test_bad_config_field_raises_naming_field_and_value(field):
    value, error, message = BAD_FIELDS[field]
    with pytest.raises(error, match=message):
        train(val=(X, Y), **{field: value})


def test_bad_regex_in_freeze_names_the_pattern():
    with pytest.raises(ValueError, match=r"freeze pattern '\(' is not a valid regular expression"):
        train(model=mlp(), freeze=["("])


def test_a_models_own_head_may_have_classes_the_labels_lack():
    """Labels {1, 3} for a 4-class model passed in: its head keeps them (no gap error: the model, not y, says
    what the classes are); a built-in model would be sized by them, and is an error."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    finetune.train(model, (X, np.where(Y % 2 == 0, 1, 3)), epochs=1, progress=False)
    with pytest.raises(ValueError, match="2 distinct labels \\(1, 3\\) reach 3"):
        train(data=(X, np.where(Y % 2 == 0, 1, 3)))


def test_an_index_reset_on_one_side_is_a_warning_not_an_error(caplog):
    """X rebuilt from a transform (its index 0..n-1) beside y keeping a split's labels: the rows likely pair by
    position as meant, so the run goes on and the log says how to align them if not."""
    import logging

    import pandas as pd

    y = pd.Series(Y, index=np.arange(40) * 3 + 100)  # a split's rows of a larger table
    with caplog.at_level(logging.WARNING, logger="finetune"):
        train(data=(frame(), y))
    assert "different pandas indexes (row 0: X's 0, y's 100)" in caplog.text and "y.loc[X.index]" in caplog.text


def test_a_forward_that_fails_on_examples_of_another_shape_says_the_training_shape():
    """Image sizes are not checked before the forward pass (a model may take other sizes); where it fails, the
    error says both shapes after the model's own (channels last, another size)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:200, None] / 16).astype(np.float32)
    model = finetune.train("cnn", (x, digits.target[:200]), recipe="none", epochs=1, progress=False).model
    for bad, shape in ((x[:4, :, :6, :6], r"\(1, 6, 6\)"), (x[:4].transpose(0, 2, 3, 1), r"\(8, 8, 1\)")):
        with pytest.raises(ValueError, match=rf"^model forward\(\) failed .* -- X's examples are shaped {shape}, and "
                                             r"the model was trained on examples shaped \(1, 8, 8\)$"):
            finetune.predict(model, bad)
