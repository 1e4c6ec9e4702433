"""Imports run one way: core -> features -> training -> serving -> diamond (docs/architecture.md).

Every module of every stage is parsed (nothing is imported) and every import statement in it is checked,
wherever it stands: at the top, inside a function, under `if TYPE_CHECKING:`, in a try block; relative imports
are resolved, and `importlib.import_module("...")` / `__import__("...")` with a literal name count too.
A module may import its own stage and the stages before it, never one after it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("core", "features", "training", "serving", "diamond")  # each may import only those before it


def module_name(path: Path) -> str:
    """`features/datasets/cdnow.py` -> `features.datasets.cdnow`; a package's `__init__.py` -> the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of everything `source` (the text of `module`) imports, anywhere in it."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the package, one level up per extra dot
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
            else:
                yield node.lineno, node.module or ""
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """Every import in `source` of a stage that comes after `module`'s own stage, as 'line N: name'."""
    own = STAGES.index(module.split(".")[0])
    return [
        f"line {line}: {name}"
        for line, name in imported(source, module, is_package)
        if name.split(".")[0] in STAGES and STAGES.index(name.split(".")[0]) > own
    ]


def stage_modules() -> Iterator[tuple[Path, str]]:
    for stage in STAGES:
        for path in sorted((ROOT / stage).rglob("*.py")):
            yield path, module_name(path)


def test_every_stage_imports_only_itself_and_the_stages_before_it() -> None:
    modules = list(stage_modules())
    assert {name.split(".")[0] for _, name in modules} == set(STAGES)  # every stage was found and read
    found = [
        f"{path.relative_to(ROOT)} {hit} (a later stage)"
        for path, name in modules
        for hit in violations(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")
    ]
    assert found == [], "imports against core -> features -> training -> serving -> diamond:\n" + "\n".join(
        found
    )


LATER = [
    ("features.build", "import training.pipeline", "training.pipeline"),
    ("features.build", "from serving import store", "serving"),
    ("training.retrain", "def f():\n    from serving import monitoring, store\n", "serving"),
    ("training.retrain", "if TYPE_CHECKING:\n    from serving.batch import BatchResult\n", "serving.batch"),
    (
        "training.retrain",
        "try:\n    import serving.store as s\nexcept ImportError:\n    s = None\n",
        "serving.store",
    ),
    (
        "training.retrain",
        "import importlib\nm = importlib.import_module('serving.monitoring')\n",
        "serving.monitoring",
    ),
    ("core.clock", "x = __import__('features')\n", "features"),
    ("serving.batch", "class A:\n    def f(self):\n        import diamond.flows\n", "diamond.flows"),
]


@pytest.mark.parametrize(("module", "source", "target"), LATER)
def test_an_import_of_a_later_stage_is_caught_wherever_it_stands(
    module: str, source: str, target: str
) -> None:
    (hit,) = violations(source, module)
    assert hit.endswith(f": {target}")


def test_earlier_stages_the_own_stage_and_outside_packages_pass() -> None:
    source = (
        "import os\nimport pandas as pd\nfrom core.clock import utc_now\nfrom features import build\n"
        "def f():\n    from training.pipeline import train\n    from . import registry\n"
        "    from .artefact import ScoringArtefact\n"
    )
    assert violations(source, "training.retrain") == []
    assert violations("from serving import store\nimport diamond.flows\n", "diamond.cli") == []


def test_relative_imports_are_resolved_against_the_package() -> None:
    assert list(imported("from .. import build\nfrom . import cdnow\n", "features.datasets.synthetic")) == [
        (1, "features"),
        (2, "features.datasets"),
    ]
    assert list(imported("from .clock import utc_now\n", "core", is_package=True)) == [(1, "core.clock")]
