"""bench/README.md is generated from bench/results/*.json; it must match what the generator writes now."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("make_readme", ROOT / "bench" / "make_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_readme_is_up_to_date():
    expected = _generator().render()
    current = (ROOT / "bench" / "README.md").read_text()
    assert current == expected, "bench/README.md is out of date: run python bench/make_readme.py"


def test_every_results_file_has_a_description_and_a_table():
    gen = _generator()
    text = gen.render()
    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        assert path.stem in gen.DESCRIPTIONS, f"describe {path.name} in bench/make_readme.py"
        assert f"## {path.stem}\n" in text
        assert f"`bench/results/{path.name}`" in text


def test_a_changed_number_changes_the_page(tmp_path):
    gen = _generator()
    (tmp_path / "ray.json").write_text(json.dumps({"results": {"scaling_2_vs_1": 1.44}}))
    before = gen.render(tmp_path)
    assert "| `results.scaling_2_vs_1` | 1.44 |" in before
    (tmp_path / "ray.json").write_text(json.dumps({"results": {"scaling_2_vs_1": 1.9}}))
    after = gen.render(tmp_path)
    assert after != before and "| `results.scaling_2_vs_1` | 1.9 |" in after
