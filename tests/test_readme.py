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
