"""Small modules with one job each: no module of the package grows past 400 lines."""

from __future__ import annotations

from pathlib import Path

import remat

MAX_LINES = 400


def test_no_module_is_over_400_lines():
    root = Path(remat.__file__).resolve().parent
    sizes = {str(p.relative_to(root)): len(p.read_text().splitlines()) for p in root.rglob("*.py")}
    big = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not big, f"split these modules: {big}"
