"""evo's floors hold: every import of an evo module points to its own floor or below, rooms import
each other one way only, and an evo import inside a function says why (docs/architecture.md, "Floors")."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# The floors, from the bottom. A room is a package under evo/ or a module at its top.
# Keep this table and the one in docs/architecture.md the same.
FLOORS: dict[int, tuple[str, ...]] = {
    1: ("config", "errors", "atomic", "storage", "numbers", "progress", "answers", "nearcopy", "openai_api", "ray_start",
        "ray_waits", "testing", "data", "tracking"),
    2: ("model",),
    3: ("lineage",),
    4: ("train",),
    5: ("healing", "evals", "gate"),
    6: ("curation", "inputs"),
    7: ("driver", "tune", "experiment", "compare", "report", "finetune", "ab", "inference"),
    8: ("http",),
    9: ("cli", "ab_round"),
}
FLOOR = {room: n for n, rooms in FLOORS.items() for room in rooms}


@dataclass(frozen=True)
class Import:
    path: Path
    line: int
    source: str  # the importing module, dotted
    target: str  # the imported evo module, dotted
    in_function: bool
    commented: bool  # the import's line carries a comment (why it sits in a function)


def module_of(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _is_module(src: Path, dotted: str) -> bool:
    path = src.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or path.is_dir()


def imports_of(path: Path, src: Path = SRC) -> list[Import]:
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    module = module_of(path, src)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    in_function = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            # `from evo.data import self_replay` imports the module evo.data.self_replay
            targets = [f"{base}.{a.name}" if _is_module(src, f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        for target in targets:
            if target == "evo" or target.startswith("evo."):
                found.append(Import(path, node.lineno, module, target, id(node) in in_function,
                                    "#" in lines[node.lineno - 1]))
    return found


def every_import(src: Path = SRC) -> list[Import]:
    return [i for p in sorted((src / "evo").rglob("*.py")) for i in imports_of(p, src)]


def upward(imports: list[Import]) -> list[str]:
    """'file:line: a -> b' for each import that points to a higher floor (or to a room with no floor)."""
    bad = []
    for i in imports:
        a, b = room_of(i.source), room_of(i.target)
        if a not in FLOOR or b not in FLOOR:
            bad.append(f"{i.path}:{i.line}: {i.source} -> {i.target} (room {a if a not in FLOOR else b} has no floor)")
        elif FLOOR[b] > FLOOR[a]:
            bad.append(f"{i.path}:{i.line}: {i.source} (floor {FLOOR[a]}) imports {i.target} (floor {FLOOR[b]})")
    return bad


def room_cycles(imports: list[Import]) -> list[str]:
    """Pairs of rooms that import each other, directly or through others on their floor."""
    edges: dict[str, set[str]] = {}
    for i in imports:
        a, b = room_of(i.source), room_of(i.target)
        if a != b:
            edges.setdefault(a, set()).add(b)

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            r = todo.pop()
            if r == goal:
                return True
            if r not in seen:
                seen.add(r)
                todo.extend(edges.get(r, ()))
        return False

    return sorted({" <-> ".join(sorted((a, b))) for a, bs in edges.items() for b in bs if reaches(b, a)})


def hidden(imports: list[Import]) -> list[str]:
    return [f"{i.path}:{i.line}: {i.source} imports {i.target} inside a function without a comment that says why"
            for i in imports if i.in_function and not i.commented]


def test_every_import_points_down():
    assert upward(every_import()) == []


def test_rooms_import_each_other_one_way():
    assert room_cycles(every_import()) == []


def test_an_evo_import_inside_a_function_says_why():
    assert hidden(every_import()) == []


def test_every_room_has_a_floor():
    rooms = {room_of(module_of(p)) for p in (SRC / "evo").rglob("*.py") if p.name != "__init__.py" or p.parent.name != "evo"}
    assert sorted(rooms - set(FLOOR)) == []


def test_the_floor_table_is_the_architecture_pages_table():
    page = (SRC.parent / "docs" / "architecture.md").read_text()
    for n, rooms in FLOORS.items():
        row = next((line for line in page.splitlines() if line.startswith(f"| {n} |")), None)
        assert row is not None, f"docs/architecture.md has no row for floor {n}"
        assert all(f"`{r}`" in row for r in rooms), f"floor {n}: {row}"


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_the_checks_catch_an_upward_import_a_cycle_and_a_hidden_import(tmp_path):
    _write(tmp_path, "evo/__init__.py", "")
    _write(tmp_path, "evo/data/__init__.py", "")
    _write(tmp_path, "evo/data/records.py", "from evo.driver import run\n")
    _write(tmp_path, "evo/driver.py", "def f():\n    from evo.data import records\n")
    _write(tmp_path, "evo/model/__init__.py", "")
    _write(tmp_path, "evo/model/a.py", "def f():\n    from evo.data.records import x  # lazy: heavy\n")
    found = every_import(tmp_path)
    assert [s.split(": ", 1)[1] for s in upward(found)] == ["evo.data.records (floor 1) imports evo.driver (floor 7)"]
    assert room_cycles(found) == ["data <-> driver"]
    assert [s.split(": ", 1)[1] for s in hidden(found)] == [
        "evo.driver imports evo.data.records inside a function without a comment that says why"]
