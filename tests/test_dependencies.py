"""Dependencies: every module mpa imports is declared, the package holds ranges (no exact pins that clash with
a user's own clients), and constraints.txt pins exactly the versions CI and the CPU image install."""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SHIPPED = [p for top in ("src/mpa", "components", "pipelines") for p in (ROOT / top).rglob("*.py")
           if "tests" not in p.relative_to(ROOT).parts and p.name != "conftest.py"]


def _requirements() -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    return reqs + [Requirement(r) for extra in PROJECT["optional-dependencies"].values() for r in extra]


def _imported_top_modules() -> set[str]:
    mods: set[str] = set()
    for path in SHIPPED:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return mods - set(sys.stdlib_module_names) - {"mpa", "mpa_kfp", "__future__"}


def test_every_imported_module_is_declared():
    declared = {canonicalize_name(r.name) for r in _requirements()}
    dists = md.packages_distributions()
    missing = {}
    for mod in sorted(_imported_top_modules()):
        names = {canonicalize_name(d) for d in dists.get(mod, [])}
        if not names & declared:
            missing[mod] = sorted(names) or ["(not installed)"]
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_the_package_holds_ranges_and_true_floors():
    exact = [str(r) for r in _requirements() if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not exact, f"exact pins belong in constraints.txt, not in the package: {exact}"
    core = {canonicalize_name(r.name): r for r in map(Requirement, PROJECT["dependencies"])}
    assert not core["torch"].specifier.contains("2.5.1")  # FSDP2's public fully_shard came with 2.6
    assert "mlflow" in core  # tracking is on by default


def test_constraints_pin_exactly_and_satisfy_the_ranges():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            m = re.fullmatch(r"([A-Za-z0-9_.\-\[\]]+)==([^\s;]+)", line.strip())
            assert m, f"constraints.txt: not an exact pin: {line!r}"
            pins[canonicalize_name(m.group(1))] = m.group(2)
    for req in _requirements():
        name = canonicalize_name(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"
    for name in ("transformers", "mlflow", "kfp", "boto3", "pydantic", "accelerate"):
        assert name in pins, f"constraints.txt does not pin {name}"
    assert "torch" not in pins and "torchvision" not in pins  # the scripts pin the platform's build
    setup = (ROOT / "scripts" / "setup_env.sh").read_text()
    assert "-c constraints.txt" in setup
    assert "constraints.txt" in (ROOT / "images" / "cpu.Dockerfile").read_text()
