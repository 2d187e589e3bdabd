"""The library never imports jobs/ or serve/ (they are thin shells around it)."""

import ast
import subprocess
import sys
from pathlib import Path

import evo

SRC = Path(evo.__file__).parent


def test_no_source_file_imports_jobs_or_serve():
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for n in names:
                assert n.split(".")[0] not in ("jobs", "serve"), f"{path} imports {n}"


def test_importing_every_module_loads_neither():
    code = (
        "import importlib, pkgutil, sys, evo\n"
        "for m in pkgutil.walk_packages(evo.__path__, 'evo.'): importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('jobs', 'serve')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def _imports(path: Path) -> list[str]:
    """Every absolute module a source file imports, at module level or inside a function."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            out += [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
    return out


def test_only_the_demo_imports_the_driver():
    """The driver is the top of the library: what it uses never reaches back into it. Its own verbs
    (run, sweep, run-job, compare-bases) live in it, and the CLI names them ("evo.driver:cmd_run"),
    importing the driver only when one runs. The one module that imports it is `ab_round` (floor 9),
    for `evo demo`: the demo runs the driver's generations and then an A/B round, which sits on a
    floor above the driver, so the demo cannot live in the driver."""
    for path in SRC.rglob("*.py"):
        if path.name in ("driver.py", "ab_round.py") and path.parent == SRC:
            continue
        bad = [n for n in _imports(path) if n == "evo.driver" or n.startswith("evo.driver.")]
        assert not bad, f"{path.relative_to(SRC.parent)} imports {bad[0]}"


def test_only_lineage_decisions_moves_an_alias_or_writes_a_verdict():
    """Registry.move / set_status and Ledger.append / update are called from evo.lineage.decisions only."""
    calls = ("move", "set_status", "append", "update")
    for path in SRC.rglob("*.py"):
        if path.parent.name == "lineage":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in calls:
                owner = ast.unparse(node.func.value)
                assert not any(w in owner for w in ("registry", "ledger", "reg", "Registry(", "Ledger(")), \
                    f"{path.relative_to(SRC.parent)}:{node.lineno}: {owner}.{node.func.attr}(...)"
