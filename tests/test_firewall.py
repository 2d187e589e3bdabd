"""The library never imports jobs/ or serve/ (they are thin shells around it)."""

import ast
import importlib
import pkgutil
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
