"""The verb table: each verb's function takes exactly its arguments, and the CLI imports no heavy library
until a verb runs (so `evo --help` stays fast)."""

from __future__ import annotations

import argparse
import inspect
import subprocess
import sys

from evo.cli import VERBS, function, parser


def test_each_verbs_function_takes_its_arguments_by_name():
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, verb in VERBS.items():
        dests = [a.dest for a in sub.choices[name]._actions if a.dest != "help"]
        assert list(inspect.signature(function(verb)).parameters) == dests, name


def test_the_cli_imports_no_heavy_library_before_a_verb_runs():
    code = ("import sys\nfrom evo.cli import parser\nparser().format_help()\n"
            "print(sorted({'torch', 'transformers', 'ray', 'pyarrow'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
