"""`evo compare-bases`: its inputs are checked before anything runs, and its table reads its results."""

import pytest

from evo.compare import BaseResult, compare_bases, table
from evo.config import ConfigError
from evo.data.shop import write_shop_data


def test_bases_are_checked_before_anything_runs(tmp_path):
    cfg = write_shop_data(tmp_path / "data", generations=1)
    with pytest.raises(ConfigError, match="two or more different bases"):
        compare_bases(str(cfg), ["smollm2"], tmp_path / "cmp", run=None)
    with pytest.raises(ConfigError, match="data.base: required when model.path is empty"):
        compare_bases(str(cfg), ["tiny", "smollm2"], tmp_path / "cmp", run=None)
    assert not (tmp_path / "cmp").exists() or not any((tmp_path / "cmp").iterdir())


def test_the_table_has_a_row_per_base_and_a_column_per_generation():
    def gens(acc):
        return [{"gen": "gen-0", "decision": "promoted", "generalization": None, "recall": None, "train_seconds": 9.0},
                {"gen": "gen-1", "decision": "promoted", "generalization": acc, "recall": 0.9, "train_seconds": 30.0}]

    rows = table([BaseResult("tiny", None, 500_000, gens(0.5), 60.0, "a", 12.0, 80.0),
                  BaseResult("smollm2", "package:x/y.gguf", 134_500_000, gens(0.75), 600.0, "b", 300.0, 20.0)])
    lines = rows.splitlines()
    assert "gen-1: test accuracy (decision)" in lines[0] and len(lines) == 4
    assert lines[2].startswith("| tiny | 0.5 M | 0.50 (promoted) | 0.90 | 30 | 60 | 12 | 80.0 |")
    assert lines[3].startswith("| smollm2 | 134.5 M | 0.75 (promoted) |")
