"""What pip needs to build and install meshware is declared in pyproject.toml."""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_setuptools_floor_accepts_the_spdx_license_string() -> None:
    # `license = "MIT"` (PEP 639) is refused by setuptools before 77 ("project.license must be
    # valid exactly by one definition"), checked by building with 76.1.0 and 77.0.3.
    assert PYPROJECT["project"]["license"] == "MIT"
    (setuptools,) = [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    assert setuptools.name == "setuptools"
    floors = [Version(s.version) for s in setuptools.specifier if s.operator == ">="]
    assert floors
    assert min(floors) >= Version("77.0.3")


def _module_level_imports(path: Path) -> set[str]:
    """Top-level names imported when the module is imported (not inside functions)."""
    found: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body:  # module level only; `if TYPE_CHECKING:` blocks are skipped
        if isinstance(node, ast.Import):
            found.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


# Modules only imported when their extra is installed (the CLI imports them lazily).
OPTIONAL_MODULES = {"meshware/edge/serve.py": "proxy"}


def test_every_third_party_module_the_core_package_imports_is_a_dependency() -> None:
    core = {Requirement(r).name.lower() for r in PYPROJECT["project"]["dependencies"]}
    extras = PYPROJECT["project"]["optional-dependencies"]
    distributions = packages_distributions()
    package = ROOT / "meshware"
    missing = {}
    for path in package.rglob("*.py"):
        if "integrations" in path.parts:  # framework adapters: the flask/starlette extras
            continue
        declared = set(core)
        extra = OPTIONAL_MODULES.get(str(path.relative_to(ROOT)))
        if extra is not None:
            declared |= {Requirement(r).name.lower() for r in extras[extra]}
        for name in _module_level_imports(path):
            if name in sys.stdlib_module_names or name in ("meshware", "__future__"):
                continue
            dists = {d.lower() for d in distributions.get(name, [name])}
            if not dists & declared:
                missing.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not missing, f"imported at module level but not in [project] dependencies: {missing}"
