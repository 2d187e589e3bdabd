"""What tests share besides fixtures: the tiny demo's settings, a config built from them, and copies of
the session's read-only lineage roots. Fixtures live in `tests/conftest.py` and use these."""

from __future__ import annotations

import shutil
from pathlib import Path

from evo.config import load_config

# A model small enough that a generation trains in about a second on 2 CPU cores.
TINY = [
    "model.tiny.hidden_size=64", "model.tiny.num_layers=2", "model.tiny.num_heads=2",
    "model.tiny.intermediate_size=128", "model.tiny.vocab_size=320", "model.max_length=48",
    "model.pretrain.steps=30", "model.pretrain.batch_size=16", "model.pretrain.lr=0.005",
    "train.steps=20", "train.checkpoint_every=10", "train.batch_size=8", "train.replay_k=20",
    "train.max_failures=1", "eval.max_items=24", "eval.max_new_tokens=12",
    "tracking.backend=off",  # the tests of evo.tracking turn it on where they read the MLflow view
]
LOOSE_GATE = ["gate.min_recall=null", "gate.min_generalization=null", "gate.max_style_drift=null",
              "gate.max_style_drift_rise=null"]
REPO = Path(__file__).resolve().parents[2]


def tiny_config(demo_dir: Path, *extra: str):
    return load_config(demo_dir / "demo.yaml", TINY + list(extra))


def ensure_base(demo_dir: Path, cache: dict) -> Path:
    """The session's tiny generation 0 (see the `base_root` fixture), built on the Ray cluster this
    process is connected to if it is not built yet."""
    from evo.driver import generation_zero  # torch and Ray: only the tests that train need them
    from evo.lineage.root import Lineage
    from evo.progress import Silent

    root = cache["folder"]
    if not cache.get("built"):
        generation_zero(tiny_config(demo_dir), Lineage(root), Silent())
        cache["built"] = True
    return root


def copy_root(base_root: Path, dest: Path) -> Path:
    """A lineage root of its own for a test: generation 0 copied from `base_root` to `dest`/lineage
    (a folder; for a URI root, copy to the folder the URI names)."""
    dst = dest / "lineage"
    shutil.copytree(base_root, dst)
    return dst


def headless_chromium():
    """A headless Chromium under Selenium (Debian's chromium and chromedriver, installed by
    scripts/setup-venv.sh). The caller quits it."""
    from selenium import webdriver

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    assert chromium and driver_path, "chromium and chromium-driver are missing: run scripts/setup-venv.sh as root"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        opts.add_argument(arg)
    return webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver_path))
