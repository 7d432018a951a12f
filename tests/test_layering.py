"""Imports flow one way: the bottom layer (mmrl.config, mmrl.types, mmrl.policies.base) imports no torch; envs and
rewards import only that bottom layer of mmrl; the layers of mmrl never import a layer above them; nobody imports a
private name of another package. Read from the sources with ``ast`` (lazy and TYPE_CHECKING imports included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOTTOM = {"mmrl.config", "mmrl.types", "mmrl.policies.base"}
# a module of each layer may import the layers listed for it (and itself, the bottom layer, envs and rewards where said)
LAYERS = {
    "mmrl.algos": {"mmrl.algos"},
    "mmrl.models": {"mmrl.models", "mmrl.policies"},
    "mmrl.policies": {"mmrl.policies", "mmrl.models", "mmrl.algos", "rewards"},
    "mmrl.rollout": {"mmrl.rollout"},
    "mmrl.viz": {"mmrl.viz", "mmrl.trainer.logging", "rewards"},
    "mmrl.evaluation": {"mmrl.evaluation", "rewards"},
    "mmrl.trainer": {"mmrl", "envs", "rewards"},
    "mmrl.cli": {"mmrl", "rewards"},
    "envs": {"envs", "rewards"},
    "rewards": {"rewards"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, imported names)`` of every import statement in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.module, [alias.name for alias in node.names]))
    return out


def sources() -> list[Path]:
    return [p for package in ("mmrl", "envs", "rewards") for p in sorted((ROOT / package).rglob("*.py"))]


def top(name: str) -> str:
    return name.split(".")[0]


def within(name: str, prefixes: set[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_downward(path):
    me = module_name(path)
    layer = next((k for k in sorted(LAYERS, key=len, reverse=True) if within(me, {k})), None)
    for module, names in imports(path):
        if top(module) not in ("mmrl", "envs", "rewards"):
            continue
        if me in BOTTOM:
            assert within(module, BOTTOM), f"{me} (bottom layer) imports {module}"
            continue
        if layer is None or within(module, BOTTOM):
            continue
        assert within(module, LAYERS[layer]), f"{me} imports {module}: {layer} may import {sorted(LAYERS[layer])}"
        if top(module) != top(me):  # another package: only its public names
            assert not any(n.startswith("_") for n in names), f"{me} imports private names {names} of {module}"


def test_the_bottom_layer_imports_no_torch():
    code = "import sys, mmrl.config, mmrl.types, mmrl.policies.base, envs, rewards; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False"
