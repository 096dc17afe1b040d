"""Category columns for "mlp" (finetune.categories): one-hot as pandas' get_dummies and scikit-learn's
OneHotEncoder give it, a model on the table the same as on the table encoded by hand, and one-line errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.preprocessing import OneHotEncoder

import finetune
from finetune import categories

SETTINGS = {"epochs": 3, "progress": False, "seed": 0}


def table(rows: int = 120, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A table a user brings: numbers (one with missing values), a word column, a pandas category column; its
    label depends on all of them."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "age": rng.normal(40, 10, rows).round(),
        "city": rng.choice(["Lyon", "Oslo", "Bern", "Pune"], rows),
        "income": np.where(rng.random(rows) < 0.1, np.nan, rng.lognormal(10, 0.5, rows)),
        "plan": pd.Categorical(rng.choice(["basic", "pro", "team"], rows), categories=["team", "pro", "basic"]),
    })
    y = ((frame["city"].isin(["Oslo", "Bern"])).to_numpy() ^ (frame["plan"] == "pro").to_numpy()
         ^ (frame["age"] > 40).to_numpy()).astype(np.int64)
    return frame, y


def test_one_hot_is_pandas_get_dummies_layout():
    frame, _ = table()
    options = categories.choose(frame, {})
    encoded = categories.encode(frame, options)
    reference = pd.get_dummies(frame, dtype=float).to_numpy(np.float32)
    np.testing.assert_array_equal(encoded, reference)  # NaN where income is missing, in both
    assert [c["column"] for c in options["categories"]] == ["city", "plan"]
    assert options["categories"][1]["levels"] == ["team", "pro", "basic"]  # the categories' own order


def test_missing_rare_and_unseen_levels_are_scikit_learns_infrequent_if_exist():
    rng = np.random.default_rng(1)
    common = rng.choice(["a", "b", "c"], 200).astype(object)
    common[:5] = None  # missing: a level of its own, as OneHotEncoder's NaN category (sorted last)
    common[5], common[6], common[7] = "rare1", "rare2", "rare3"  # one row each: the "other" column
    frame = pd.DataFrame({"word": common})
    options = categories.choose(frame, {})
    assert options["categories"] == [{"column": "word", "levels": ["a", "b", "c", None], "other": 3 / 200}]
    encoder = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=categories.MIN_ROWS,
                            sparse_output=False).fit(frame)
    later = pd.DataFrame({"word": ["a", None, "rare2", "never seen", "c"]})
    np.testing.assert_array_equal(categories.encode(later, options), encoder.transform(later))
    np.testing.assert_array_equal(categories.encode(frame, options), encoder.transform(frame))


def test_a_level_never_seen_without_an_other_column_is_no_level_as_handle_unknown_ignore():
    frame = pd.DataFrame({"word": ["x", "y"] * 10})
    options = categories.choose(frame, {})
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False).fit(frame)
    later = pd.DataFrame({"word": ["y", "z"]})
    np.testing.assert_array_equal(categories.encode(later, options), encoder.transform(later))


def test_booleans_in_a_column_of_words_are_an_error_not_an_unseen_level():
    """True would read as level "1", which no word is: the column would read as nothing, so it is refused."""
    frame = pd.DataFrame({"records": ["yes", "no"] * 10, "n": np.arange(20.0)})
    options = categories.choose(frame, {})
    later = pd.DataFrame({"records": [True, False], "n": [1.0, 2.0]})
    with pytest.raises(TypeError, match=r"^X column 'records' holds booleans \(e.g. True\), and the model was trained "
                                        r"with it as words \['no', 'yes'\]: pass its words"):
        categories.encode(later, options)
    numbered = categories.choose(pd.DataFrame({"grade": pd.Series(["0", "1", "2"] * 7, dtype="category")}), {})
    # levels "0", "1", "2": True is level "1", as the encoding always read it
    assert categories.encode(pd.DataFrame({"grade": [True]}), numbered).tolist() == [[0.0, 1.0, 0.0]]


def test_at_most_max_levels_of_a_column_get_their_own_column(monkeypatch):
    monkeypatch.setattr(categories, "MAX_LEVELS", 3)
    words = ["a"] * 9 + ["b"] * 8 + ["c"] * 7 + ["d"] * 6 + ["e"] * 5
    options = categories.choose(pd.DataFrame({"w": words}), {})
    assert options["categories"] == [{"column": "w", "levels": ["a", "b", "c"], "other": 11 / 35}]
    encoder = OneHotEncoder(max_categories=4, sparse_output=False, handle_unknown="infrequent_if_exist")
    frame = pd.DataFrame({"w": words})
    np.testing.assert_array_equal(categories.encode(frame, options), encoder.fit_transform(frame))


def test_mlp_on_the_table_is_the_mlp_on_get_dummies():
    """The same inputs, in the same order: the same seeded run, prediction for prediction."""
    frame, y = table()
    by_hand = finetune.train("mlp", (pd.get_dummies(frame, dtype=float), y), **SETTINGS)
    on_table = finetune.train("mlp", (frame, y), **SETTINGS)
    assert on_table.model_options["in_features"] == by_hand.model_options["in_features"] == 9
    later, _ = table(30, seed=5)
    np.testing.assert_array_equal(finetune.predict(on_table.model, later, output="probabilities"),
                                  finetune.predict(by_hand.model, pd.get_dummies(later, dtype=float).reindex(
                                      columns=pd.get_dummies(frame, dtype=float).columns, fill_value=0.0),
                                      output="probabilities"))


def test_category_columns_learn_what_numbers_alone_cannot():
    frame, y = table(400)
    result = finetune.train("mlp", (frame.iloc[:300], y[:300]), progress=False)
    accuracy = finetune.evaluate(result.model, (frame.iloc[300:], y[300:]))["accuracy"]
    numbers = finetune.train("mlp", (frame[["age", "income"]].iloc[:300], y[:300]), progress=False)
    without = finetune.evaluate(numbers.model, (frame[["age", "income"]].iloc[300:], y[300:]))["accuracy"]
    assert accuracy > without + 0.2, (accuracy, without)  # the label is a parity of the words and the age


def test_the_recipe_records_the_category_columns_and_val_tables_are_encoded_alike():
    frame, y = table(200)
    result = finetune.train("mlp", (frame.iloc[:150], y[:150]), val=(frame.iloc[150:], y[150:]), progress=False)
    noted = {d["what"]: d["value"] for d in result.recipe}
    assert noted["inputs.categories"] == {"city": 4, "plan": 3}
    assert result.metrics["accuracy"] == finetune.evaluate(result.model, (frame.iloc[150:], y[150:]))["accuracy"]


def test_saved_and_loaded_model_encodes_a_later_table_alike(tmp_path):
    frame, y = table()
    result = finetune.train("mlp", (frame, y), **SETTINGS)
    finetune.save(result.model, tmp_path / "model.safetensors")
    loaded = finetune.load(tmp_path / "model.safetensors")
    later, _ = table(20, seed=3)
    later.loc[0, "city"] = "Quito"  # a level training never saw: no level of "city"
    np.testing.assert_array_equal(finetune.predict(loaded, later, output="probabilities"),
                                  finetune.predict(result.model, later, output="probabilities"))
    assert loaded.options["categories"] == result.model_options["categories"]


def test_words_training_never_saw_in_most_rows_are_a_warning_naming_the_column(caplog):
    frame, y = table()
    model = finetune.train("mlp", (frame, y), **SETTINGS).model
    later, _ = table(10, seed=4)
    with caplog.at_level("WARNING", logger="finetune"):
        upper = finetune.predict(model, later.assign(city=later["city"].str.upper()), output="probabilities")
    assert re.search(r"X column 'city': 10 of 10 rows hold a value training did not have as a level \(e\.g\. "
                     r"'[A-Z]+'.*\): they read as none of its levels \(all of its inputs 0\)$", caplog.text.strip()), \
        caplog.text
    unseen = later.assign(city="Quito")  # no level of city: the same inputs as any other unseen word
    np.testing.assert_array_equal(upper, finetune.predict(model, unseen, output="probabilities"))
    caplog.clear()
    with caplog.at_level("WARNING", logger="finetune"):
        finetune.predict(model, later)  # the words it knows: nothing said
    assert caplog.text == ""
    assert model.options["categories"][0]["other"] == 0  # every city of training was a level: no "other" input
    with caplog.at_level("WARNING", logger="finetune"):
        finetune.predict(model, later.iloc[:1].assign(city="Quito"))  # one row of one new word: said too
    assert "X column 'city': 1 of 1 rows hold a value training did not have as a level (e.g. 'Quito'" in caplog.text


def test_a_column_of_names_mostly_other_from_the_start_is_no_unseen_level_warning(caplog):
    """(training warns that such a column tells the model nothing; predict does not warn again of its new names)"""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"x": rng.normal(size=60), "name": [f"person {i}" for i in range(60)]})  # all "other"
    y = (frame["x"] > 0).to_numpy().astype(np.int64)
    with caplog.at_level("WARNING", logger="finetune"):
        model = finetune.train("mlp", (frame, y), **SETTINGS).model
        finetune.predict(model, frame.assign(name="someone new"))
    assert model.options["categories"] == [{"column": "name", "levels": [], "other": 1.0}]
    assert "did not have as a level" not in caplog.text


def test_a_column_of_distinct_words_warns_that_it_tells_the_model_nothing(caplog):
    """Names, ids: no value is held by MIN_ROWS rows, so the whole column is one "other" input, said once; a column
    of dates written as text, declared categories, stays categories (a few survey waves)."""
    frame, y = table()
    with caplog.at_level("WARNING", logger="finetune"):
        options = categories.choose(frame.assign(name=[f"person {i}" for i in range(len(frame))]), {})
    assert caplog.text.count("X column 'name': no value of it is held by 2 or more training rows (") == 1
    assert options["categories"][-1] == {"column": "name", "levels": [], "other": 1.0}
    waves = pd.Series(np.where(np.arange(len(frame)) % 2, "2020-01-01", "2021-01-01"), dtype="category")
    assert categories.choose(frame.assign(wave=waves), {})["categories"][-1]["levels"] == ["2020-01-01", "2021-01-01"]


def test_a_number_column_as_objects_reads_none_as_missing_and_a_word_as_an_error():
    frame, y = table()
    model = finetune.train("mlp", (frame, y), **SETTINGS).model
    row = pd.DataFrame([{"age": None, "city": "Oslo", "income": 5e4, "plan": "pro"}])  # age: an object column
    expected = finetune.predict(model, row.astype({"age": float}), output="probabilities")
    np.testing.assert_array_equal(finetune.predict(model, row, output="probabilities"), expected)
    with pytest.raises(TypeError, match=r"^X column 'age' holds 'old' \(row 0\), and the model reads it as numbers "
                                        r"\(as the column held in training: numbers, or booleans read as 0 / 1\)"):
        finetune.predict(model, row.assign(age="old"))
    with pytest.raises(ValueError, match=r"^X is empty \(0 examples\)$"):
        finetune.predict(model, frame[:0])


def test_a_table_without_words_reads_its_object_columns_of_numbers_as_a_table_with_words_does():
    """An object column of numbers (a mixed list, None for a missing one) is numbers for "mlp" whether or not the
    table holds words: the same inputs as the column cast to float."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"x": rng.normal(size=80), "glu": pd.Series([86, None, 90, 101] * 20, dtype=object)})
    y = (frame["x"] > 0).to_numpy().astype(np.int64)
    as_objects = finetune.train("mlp", (frame, y), **SETTINGS).model
    as_floats = finetune.train("mlp", (frame.astype({"glu": float}), y), **SETTINGS).model
    np.testing.assert_array_equal(finetune.predict(as_objects, frame, output="probabilities"),
                                  finetune.predict(as_floats, frame.astype({"glu": float}), output="probabilities"))
    with pytest.raises(ValueError, match=r"^X column 'glu' holds categories \(e.g. 'high'\), and the model was built "
                                         r"with none"):
        finetune.predict(as_objects, frame.assign(glu=pd.Series([86, "high"] * 40, dtype=object)))


def test_an_empty_word_is_a_missing_one_as_a_csvs_empty_cell_is():
    options = categories.choose(pd.DataFrame({"w": ["a", "", None, "b", " "] * 4}), {})
    assert options["categories"] == [{"column": "w", "levels": ["a", "b", None], "other": 0.0}]


def test_a_csv_column_of_mostly_numbers_read_as_words_is_said(tmp_path, caplog):
    from finetune import datasets

    (tmp_path / "t.csv").write_text("age,city,label\n" + "".join(f"{20 + i},Oslo,{i % 2}\n" for i in range(9))
                                    + "unknown,Bern,1\n")
    with caplog.at_level("WARNING", logger="finetune"):
        x, _ = datasets.load_file(tmp_path / "t.csv", missing=True, words=True)
    assert x.dtype == object and x[0, 0] == "20" and x[9, 0] == "unknown"  # as written: categories, as read
    assert "column 'age' is read as words (categories): 1 cell(s) such as 'unknown' (row 11) are not numbers, " \
           "and 9 are" in caplog.text
    assert "'city'" not in caplog.text  # a column of words: nothing to say


def test_a_csv_column_of_dates_is_an_error_naming_it(tmp_path):
    """A CLI user's CSV: each date would be a level of its own (economics' monthly rows: all "other")."""
    from finetune import datasets

    (tmp_path / "t.csv").write_text("date,pce,label\n" + "".join(f"1967-{m:02d}-01,{500 + m},{m % 2}\n"
                                                                  for m in range(1, 13)))
    with pytest.raises(ValueError, match=r"^'.*t.csv' column 'date' holds dates \(e.g. '1967-01-01', row 2\), and a "
                                         r"model reads numbers: put numbers in their place"):
        datasets.load_file(tmp_path / "t.csv", missing=True, words=True)


def test_object_array_columns_by_position():
    frame, y = table()
    array = frame.astype(object).to_numpy()
    array[:, 3] = frame["plan"].astype(str).to_numpy()
    options = categories.choose(array, {})
    assert [c["column"] for c in options["categories"]] == [1, 3]
    result = finetune.train("mlp", (array, y), **SETTINGS)
    assert result.model_options["in_features"] == 9
    assert finetune.predict(result.model, array[:5]).shape == (5,)


@pytest.mark.parametrize("call, error, message", [
    (lambda m, f: finetune.predict(m, f[["age", "income"]].to_numpy(np.float32)), ValueError,
     r"^X's examples are shaped \(2,\) .*trained on examples shaped \(4,\)"),
    (lambda m, f: finetune.predict(m, f[["age", "income"]].to_numpy(np.float32).repeat(2, 1)), ValueError,
     r"^model 'mlp' reads category columns \['city', 'plan'\]: pass X as the table it trained on"),
    (lambda m, f: finetune.predict(m, f.rename(columns={"city": "town"})), ValueError,
     r"^X's columns differ from the ones the model was trained on"),
    (lambda m, f: categories.encode(f.rename(columns={"city": "town"}), m.options), ValueError,
     r"^X lacks the category column\(s\) \['city'\] the model was trained on \(it has \['age', 'town', "),
    (lambda m, f: finetune.train("mlp", (f[["age", "income"]].to_numpy(np.float32), np.arange(len(f)) % 2),
                                 categories=m.options["categories"], progress=False), ValueError,
     r"^model 'mlp' reads category columns \['city', 'plan'\]: pass X as the table it trained on"),
    (lambda m, f: finetune.train("mlp", (f, np.arange(len(f)) % 2), categories="city", progress=False), TypeError,
     r"^model option categories='city' has the wrong type"),
    (lambda m, f: finetune.train("mlp", (f.assign(age=f["age"].astype(str)), np.zeros(len(f), int) + 1)),
     TypeError, r"^X column 'age' holds numbers as text \(e.g. '\d+\.0'\): say which they are -- numbers "
     r"\(df\['age'\] = "
     r"pd.to_numeric\(df\['age'\]\)\) or categories \(df\['age'\] = df\['age'\].astype\('category'\)\)$"),
    (lambda m, f: finetune.train("mlp", (f.assign(age=np.where(np.arange(len(f)) == 3, "unknown", f["age"].astype(str))),
                                         np.arange(len(f)) % 2)),
     TypeError, r"^X column 'age' holds numbers as text \(e.g. '\d+\.0'\) and 1 value\(s\) that are not "
     r"\(\['unknown'\]\): say which they are -- numbers \(df\['age'\] = pd.to_numeric\(df\['age'\], errors='coerce'\): "
     r"those become missing values\) or categories"),
    (lambda m, f: finetune.train("mlp", (f.assign(day=pd.Timestamp("2020-01-01") + pd.to_timedelta(np.arange(len(f)), "D")),
                                         np.arange(len(f)) % 2)),
     TypeError, r"^X column 'day' holds dates \(e.g. Timestamp\('2020-01-01 00:00:00'\), row 0\): turn them into "
     r"numbers first -- days since the first"),
    (lambda m, f: finetune.train("mlp", (f[["age"]].assign(wait=pd.to_timedelta(np.arange(len(f)), "h")),
                                         np.arange(len(f)) % 2)),
     TypeError, r"^X column 'wait' holds durations \(e.g. Timedelta\('0 days 00:00:00'\), row 0\): turn them into "
     r"numbers first, e.g. df\['wait'\].dt.total_seconds\(\) / 3600 \(hours\)$"),
    (lambda m, f: finetune.train("mlp", (f.assign(day=[f"2020-01-{1 + i % 28:02d}" for i in range(len(f))]),
                                         np.arange(len(f)) % 2)),
     TypeError, r"^X column 'day' holds dates as text \(e.g. '2020-01-01'\): turn them into numbers first"),
    (lambda m, f: finetune.build("mlp", in_features=3, num_classes=2, categories=[{"column": "a"}]), TypeError,
     r"^model option categories=\[\{'column': 'a'\}\] has the wrong type"),
    (lambda m, f: finetune.train(finetune.build("mlp", in_features=10, num_classes=2), (f, np.arange(len(f)) % 2),
                                 epochs=1, progress=False), ValueError,
     r"^X column 'city' holds categories \(e.g. '\w+'\), and the model was built with none"),
])
def test_bad_category_input_is_a_one_line_error(call, error, message):
    frame, y = table()
    model = finetune.train("mlp", (frame, y), **SETTINGS).model
    with pytest.raises(error, match=message) as raised:
        call(model, frame)
    assert "\n" not in str(raised.value)


def test_cli_trains_and_predicts_a_csv_with_word_columns(tmp_path):
    """A CSV's columns of words are categories for "mlp": the run reads their levels off its training rows, keeps
    them with the weights (not in config.toml), and predict reads a later file's words by them (an empty cell as
    the missing level); a cell that is not a number in a number column is an error naming that column."""
    frame, y = table(400)  # at 200 rows this three-way XOR scored 0.50 to 0.95 over data seeds 0-4: too few to check
    frame.assign(label=np.where(y == 1, "yes", "no")).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "train.csv"}"\n[model]\nname = "mlp"\n')
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "finetune", "train", str(tmp_path / "run.toml"), "--out", str(run),
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "categories" not in (run / "config.toml").read_text()
    model = finetune.load(run)
    assert [c["column"] for c in model.options["categories"]] == [1, 3]  # the feature columns' positions
    recipe = {d["what"]: d["value"] for d in json.loads((run / "metrics.json").read_text())["recipe"]}
    assert recipe["inputs.categories"] == {"city": 4, "plan": 3}  # by the CSV's names
    later, _ = table(10, seed=9)
    later.loc[0, "city"] = None  # an empty cell
    later.to_csv(tmp_path / "new.csv", index=False)
    done = subprocess.run([sys.executable, "-m", "finetune", "predict", str(run), "--input", str(tmp_path / "new.csv"),
                           "--output", str(tmp_path / "predictions.csv")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    predictions = pd.read_csv(tmp_path / "predictions.csv")["prediction"].tolist()
    rows = later.astype(object).where(later.notna(), None).to_numpy()
    rows[:, 3] = later["plan"].astype(str).to_numpy()
    assert predictions == finetune.predict(model, rows).tolist()
    # In Python the run's model reads the file as pandas does, as the model finetune.train gave reads its table
    # (a run recorded the width its words are one-hot encoded to, and refused the table itself)
    read = pd.read_csv(tmp_path / "new.csv")
    assert predictions == finetune.predict(model, read).tolist()
    assert finetune.embed(model, read).shape == (10, 128)
    assert finetune.evaluate(model, (read, finetune.predict(model, read)))["accuracy"] == 1.0
    # A run directory written before this: its file records the one-hot width; it loads as the table's
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        meta = f.metadata()
    trained = json.loads(meta["trained_for"])
    assert trained["example_shape"] == [4]  # the CSV's feature columns
    trained["example_shape"] = [model.options["in_features"]]
    save_file(load_file(str(run / "model.safetensors")), str(run / "model.safetensors"),
              {**meta, "trained_for": json.dumps(trained)})
    assert predictions == finetune.predict(finetune.load(run), read).tolist()
    test = json.loads((run / "metrics.json").read_text())["test"]["accuracy"]
    assert test > 0.7, test
    later = later.astype({"income": object})
    later.loc[1, "income"] = "lots"  # after a word in the same row: the number column is named
    later.to_csv(tmp_path / "bad.csv", index=False)
    done = subprocess.run([sys.executable, "-m", "finetune", "predict", str(run), "--input", str(tmp_path / "bad.csv"),
                           "--output", str(tmp_path / "p.csv")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "row 3, column 'income': 'lots' is not a number" in done.stderr, done.stderr


def test_the_benchmark_runs_and_the_table_as_it_is_scores_as_get_dummies():
    """benchmarks/categories.py (the README's table), on one table and two splits: its two "mlp" columns agree."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "categories.py"
    done = subprocess.run([sys.executable, str(script), "--seeds", "2", "--tables", "TeachingRatings"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    row = next(line for line in done.stdout.splitlines() if line.startswith("| AER TeachingRatings"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[3] == cells[5] and cells[-1] == "+0.00 (0.00)", row  # the table as it is, pd.get_dummies


def test_cli_tune_on_word_columns_writes_a_best_config_without_the_levels(tmp_path):
    """The levels are read off the data again by the run best.toml makes (a missing level, None, has no TOML)."""
    frame, y = table(200)
    frame.loc[3, "city"] = None
    frame.assign(label=np.where(y == 1, "yes", "no")).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "run.toml").write_text(f'[data]\npath = "{tmp_path / "train.csv"}"\n[model]\nname = "mlp"\n'
                                       '[train]\nepochs = 2\n[tune]\ntrials = 2\nlr = {low = 1e-3, high = 1e-1}\n')
    done = subprocess.run([sys.executable, "-m", "finetune", "tune", str(tmp_path / "run.toml"), "--out",
                           str(tmp_path / "tuned")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    best = (tmp_path / "tuned" / "best.toml").read_text()
    assert "categories" not in best and "lr = " in best
