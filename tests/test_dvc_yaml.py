"""dvc.yaml stays honest: every stage depends on all the project code its script runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "nncompress"


def _local_imports(path: Path) -> set[str]:
    """Project modules (as file paths) imported by the file at `path`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.split(".")[0] != PACKAGE:
                continue
            candidate = ROOT / (name.replace(".", "/") + ".py")
            if candidate.is_file():
                found.add(candidate.relative_to(ROOT).as_posix())
    return found


def _transitive_imports(script: str) -> set[str]:
    seen: set[str] = set()
    todo = [script]
    while todo:
        for dep in _local_imports(ROOT / todo.pop()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_depends_on_all_code_it_runs(name: str) -> None:
    stage = STAGES[name]
    script = stage["cmd"].split()[1]
    deps = set(stage["deps"])
    assert script in deps
    missing = _transitive_imports(script) - deps
    assert not missing, f"stage {name} runs {sorted(missing)} but does not list them as deps"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_outputs_survive_a_failed_run(name: str) -> None:
    """persist: DVC must not delete the last good outputs before running a stage that may fail."""
    for out in STAGES[name].get("outs", []) + STAGES[name].get("metrics", []):
        assert isinstance(out, dict) and next(iter(out.values())).get("persist") is True, out


def _sections_read(script: str) -> set[str]:
    """Names of the params.yaml sections read with section(params, Cls, "name") by the script."""
    names = set()
    for path in [script, *_transitive_imports(script)]:
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "section":
                name = node.args[2]
                assert isinstance(name, ast.Constant), f"{path}: section name must be a literal"
                names.add(name.value)
    return names


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_exactly_the_params_it_reads(name: str) -> None:
    stage = STAGES[name]
    declared = {p.split(".")[0] for p in stage.get("params", [])}
    assert declared == _sections_read(stage["cmd"].split()[1])
