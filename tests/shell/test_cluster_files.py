"""Every file in cluster/ is loaded and checked: valid YAML, Ray versions and images that match
pyproject.toml, entrypoints that exist and parse, token auth chosen, GPU groups that scale from 0."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import tomllib
import yaml

REPO = Path(__file__).parents[2]
CLUSTER = REPO / "cluster"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
RAY_VERSION = next(re.search(r"==([\d.]+)", d).group(1) for d in PYPROJECT["project"]["dependencies"]
                   if d.startswith("ray["))
EVO_VERSION = PYPROJECT["project"]["version"]
CHECKED = {"README.md", "Dockerfile", "ray-cluster.yaml", "lineage-pvc.yaml", "kuberay-raycluster.yaml",
           "kuberay-rayjob.yaml", "kuberay-rayservice.yaml", "ray-token"}


def load(name: str) -> dict:
    docs = list(yaml.safe_load_all((CLUSTER / name).read_text()))
    assert len(docs) == 1 and isinstance(docs[0], dict), name
    return docs[0]


def images(tree) -> list[str]:
    found = []
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == "image" and isinstance(v, str):
                found.append(v)
            else:
                found += images(v)
    elif isinstance(tree, list):
        for v in tree:
            found += images(v)
    return found


def check_image(image: str) -> None:
    name, tag = image.rsplit(":", 1)
    if name == "rayproject/ray":
        assert tag.startswith(f"{RAY_VERSION}-"), f"{image}: Ray is pinned to {RAY_VERSION} in pyproject.toml"
    else:
        assert name.endswith("/evo") and tag == EVO_VERSION, f"{image}: evo's image is tagged with its version {EVO_VERSION}"


def check_evo_command(argv: list[str]) -> None:
    """`python jobs/X.py ARGS`: the script exists, and evo's CLI accepts ARGS for its verb."""
    from evo.cli import parser

    assert argv[0] == "python", argv
    script = REPO / argv[1]
    assert script.is_file(), f"{argv[1]} does not exist"
    verb = re.search(r'main\(\["(\w+)"', script.read_text()).group(1)
    args = parser().parse_args([verb, *argv[2:]])
    assert args.verb == verb
    if getattr(args, "config", None):
        assert (REPO / args.config).is_file(), f"{args.config} does not exist"
        from evo.config import load_config

        load_config(REPO / args.config)  # and it is a valid config


def test_every_file_in_cluster_is_checked():
    assert {p.name for p in CLUSTER.iterdir()} <= CHECKED


def test_dockerfile_builds_on_the_pinned_ray():
    lines = (CLUSTER / "Dockerfile").read_text().splitlines()
    base = next(line.split()[1] for line in lines if line.startswith("FROM "))
    check_image(base)
    assert any("pip install" in line and "/home/ray/evo" in line for line in lines)


def test_cluster_launcher_config():
    cfg = load("ray-cluster.yaml")
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    gpu = types["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1 and gpu["resources"]["GPU"] >= 1
    assert types[cfg["head_node_type"]]["resources"].get("GPU", 0) == 0  # nothing trains on the head
    assert cfg["idle_timeout_minutes"] > 0
    check_image(cfg["docker"]["image"])
    starts = cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=token" in c for c in starts)
    assert not any(re.search(r"\bray stop\b", c) for c in starts + cfg["setup_commands"])
    assert any("pip install" in c for c in cfg["setup_commands"])
    text = (CLUSTER / "ray-cluster.yaml").read_text()
    commands = re.findall(r"(python jobs/\S+ .*)", text)
    assert commands  # its header shows how to submit a job to it
    for cmd in commands:
        check_evo_command(shlex.split(cmd))


def _ray_cluster_spec(kind: str, tree: dict) -> dict:
    key = {"RayCluster": None, "RayJob": "rayClusterSpec", "RayService": "rayClusterConfig"}[kind]
    return tree["spec"] if key is None else tree["spec"][key]


@pytest.mark.parametrize("name,kind", [("kuberay-raycluster.yaml", "RayCluster"), ("kuberay-rayjob.yaml", "RayJob"),
                                       ("kuberay-rayservice.yaml", "RayService")])
def test_kuberay_manifests(name, kind):
    tree = load(name)
    assert tree["apiVersion"] == "ray.io/v1" and tree["kind"] == kind
    spec = _ray_cluster_spec(kind, tree)
    assert spec["rayVersion"] == RAY_VERSION
    assert spec["authOptions"]["mode"] == "token"
    assert spec.get("enableInTreeAutoscaling") is True
    for image in images(tree):
        check_image(image)
    gpu = spec["workerGroupSpecs"][0]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert str(limits["nvidia.com/gpu"]) == "1"
    if kind != "RayService":  # training groups scale from zero; serving keeps a replica warm
        assert gpu["minReplicas"] == 0
    mounts = [m["mountPath"] for c in [spec["headGroupSpec"]["template"]["spec"]["containers"][0],
                                       gpu["template"]["spec"]["containers"][0]] for m in c.get("volumeMounts", [])]
    assert mounts == ["/lineage", "/lineage"]  # every node sees the same lineage root
    if kind == "RayJob":
        check_evo_command(shlex.split(tree["spec"]["entrypoint"]))
    if kind == "RayService":
        serve_cfg = yaml.safe_load(tree["spec"]["serveConfigV2"])
        module, attr = serve_cfg["applications"][0]["import_path"].split(":")
        source = (REPO / (module.replace(".", "/") + ".py")).read_text()
        assert re.search(rf"^{attr} = ", source, re.M)
        assert serve_cfg["applications"][0]["runtime_env"]["env_vars"]["EVO_ROOT"] == "/lineage"


def test_pvc_is_shared_by_every_node():
    pvc = load("lineage-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("kuberay-raycluster.yaml", "kuberay-rayjob.yaml", "kuberay-rayservice.yaml"):
        assert pvc["metadata"]["name"] in (CLUSTER / name).read_text()


def test_readme_documents_every_file_and_the_commands():
    text = (CLUSTER / "README.md").read_text()
    for name in CHECKED - {"README.md", "ray-token"}:
        assert f"`{name}`" in text, name
    for cmd in ("ray up", "ray job submit", "kubectl apply"):
        assert cmd in text
    commands = re.findall(r"ray job submit .*?-- (python jobs/.*)", text)
    assert len(commands) >= 3
    for line in commands:
        check_evo_command(shlex.split(line))
