"""The README's recipe blocks run as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def recipe_blocks() -> list[str]:
    text = README.read_text()
    section = text.split("## Recipes", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_recipes_run_in_order(tmp_path, capsys):
    pytest.importorskip("sklearn")
    blocks = recipe_blocks()
    assert len(blocks) >= 8
    # A real file, so that torch.jit.script can read the source of the classes the blocks define.
    script = tmp_path / "readme_recipes.py"
    script.write_text("\n".join(blocks))
    namespace = runpy.run_path(str(script))
    assert namespace["result"].model is namespace["model"]
    assert "suggested lr" in capsys.readouterr().out


def test_the_quality_plot_is_drawn_from_the_saved_runs(tmp_path):
    """docs/quality.png is drawn from docs/quality/*.json, the saved runs of quality.py's sections and of the
    anchors' side-by-side scripts (SetFit, fastai): each file names its command and CPU, and the README's command
    draws every table of every file (here into a scratch file)."""
    import json
    import subprocess
    import sys

    pytest.importorskip("matplotlib")
    root = README.parent
    saved = sorted((root / "docs" / "quality").glob("*.json"))
    assert saved and (root / "docs" / "quality.png").is_file()
    titles = set()  # a table in two files (a row run apart) is drawn once, its rows joined
    for path in saved:
        record = json.loads(path.read_text())
        assert re.match(r"python benchmarks/\w+\.py .*--save docs/quality/", record["command"]) and record["cpu"]
        for title, methods in record["panels"].items():  # as many figures a row as the title says: 3 seeds or more
            seeds = re.search(r"\((\d+) seed", title)
            count = int(seeds.group(1)) if seeds else 1
            assert (count >= 3 if seeds else "one split" in title), title
            assert all(len(values) == count for values in methods.values()), title
        titles |= set(record["panels"])
    out = subprocess.run([sys.executable, "benchmarks/quality.py", "--sections", "--load", *map(str, saved),
                          "--plot", str(tmp_path / "quality.png")], cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"Plot of {len(titles)} tables written to" in out.stdout and (tmp_path / "quality.png").stat().st_size > 10_000
