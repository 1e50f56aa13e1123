"""The layers point one way, stated once and checked on every import in the source (lazy ones too).

    cli  ->  stages (train, export, parity, bench, deploy)  ->  runtime, data, backbones  ->  contract

deploy and bench read artifacts, never training or export code; the runtime never reaches torch;
the contract (run directory, sidecar, preprocessing, backend table) imports nothing of edgetl's
stages. A shortcut fails here, in CI, rather than in a reviewer's head.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "edgetl"
STAGES = ("train", "export", "parity", "bench", "deploy")
LOWER = ("runtime", "data", "backbones")
FORBIDDEN = {
    "contract": ("cli", *STAGES, *LOWER, "demo", "torch", "torchvision", "timm"),
    "runtime": ("cli", *STAGES, "backbones", "demo", "torch", "torchvision", "timm"),
    "data": ("cli", *STAGES, "runtime", "demo"),  # decoding lives in the contract (contract/images.py)
    "backbones": ("cli", *STAGES, "demo"),
    "deploy": ("cli", "train", "export", "parity", "demo", "torch"),
    "bench": ("cli", "train", "export", "parity", "deploy", "demo", "torch"),
    "parity": ("cli", "deploy", "bench", "demo"),
    "export": ("cli", "deploy", "bench", "parity", "demo"),
    "train": ("cli", "export", "deploy", "bench", "parity", "demo"),
}


def _imports(path: Path, text: str | None = None) -> set[str]:
    """Every module a file imports, relative imports resolved, inside functions too."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if text is None else text, str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _layer_of(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] == "edgetl":
        return parts[1] if len(parts) > 1 else None
    return parts[0] if parts[0] in ("torch", "torchvision", "timm") else None


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports_only_what_lies_below_it(layer):
    folder = PACKAGE / layer
    files = sorted(folder.rglob("*.py")) if folder.is_dir() else []
    assert files or layer == "contract", f"edgetl/{layer} is missing"
    violations = []
    for path in files:
        for name in sorted(_imports(path)):
            target = _layer_of(name)
            if target in FORBIDDEN[layer] and target != layer:
                violations.append(f"{path.relative_to(PACKAGE.parent)} imports {name}")
    assert not violations, "\n".join(violations)


def test_the_checker_sees_lazy_and_relative_imports():
    """The rule above can fail: a lazy `from edgetl.export import ...` inside a function is found."""
    found = _imports(PACKAGE / "deploy" / "probe.py",
                     "def f():\n    from edgetl.export.pipeline import export_run\n    from ..train import run_dir\n")
    assert "edgetl.export.pipeline" in found and "edgetl.train" in found
    assert _layer_of("edgetl.train") in FORBIDDEN["deploy"]


@pytest.mark.parametrize("layer", ["deploy", "bench", "runtime", "contract"])
def test_importing_a_device_side_layer_loads_no_torch_training_or_export(layer):
    """What a device imports, measured in a fresh interpreter: every module of the layer, and what
    they pull in at import time (the AST check above also covers imports inside functions)."""
    modules = sorted(".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
                     for p in (PACKAGE / layer).rglob("*.py"))
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'timm')\n"
            "             or m.startswith(('edgetl.train', 'edgetl.export'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"importing edgetl.{layer} loaded {result.stdout.strip()}"
