"""dvc.yaml stays honest and small: every stage runs one script over the package, and the method
list lives in one place (params.yaml's sweep.methods)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from nncompress import config
from nncompress.prune import METHODS

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "nncompress"
DVC_YAML = yaml.safe_load((ROOT / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())


def _imports_outside_the_package(script: Path) -> set[str]:
    """Project files a stage script imports that are not in the package (they would need deps of their own)."""
    found = set()
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = node.module.split(".")[0]
            if top != PACKAGE and (ROOT / f"{top}.py").is_file():
                found.add(top)
    return found


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_depends_on_its_script_and_the_package(name: str) -> None:
    stage = STAGES[name]
    script = stage["cmd"].split()[1]
    assert script.startswith("stages/") and (ROOT / script).is_file()
    assert script in stage["deps"]
    assert PACKAGE in stage["deps"]  # the directory: any change to the code reruns the stage
    assert not _imports_outside_the_package(ROOT / script)


def test_pycache_is_ignored_so_the_package_hash_is_stable() -> None:
    ignored = (ROOT / ".dvcignore").read_text().split()
    assert "__pycache__/" in ignored


@pytest.mark.parametrize("name", sorted(STAGES))
def test_outputs_survive_a_failed_run(name: str) -> None:
    """persist: DVC must not delete the last good outputs before running a stage that may fail."""
    for out in STAGES[name].get("outs", []) + STAGES[name].get("metrics", []):
        assert isinstance(out, dict) and next(iter(out.values())).get("persist") is True, out


@pytest.mark.parametrize("name", sorted(STAGES))
def test_declared_params_are_sections_of_the_schema(name: str) -> None:
    for param in STAGES[name].get("params", []):
        if "${" in param:  # a method's own section
            assert param in ("prune_${item.method}", "prune_${compress.method}"), param
            continue
        assert param.split(".")[0] in config.SECTIONS, param


def test_one_sweep_stage_over_the_method_list() -> None:
    """One matrix stage, prune@<method>, whose methods are sweep.methods; each reads its own section."""
    prune = STAGES["prune"]
    assert prune["matrix"] == {"method": "${sweep.methods}"}
    assert "prune_${item.method}" in prune["params"]
    assert prune["cmd"].startswith("python stages/prune.py ${item.method} ")
    assert not [name for name in STAGES if name.startswith("prune_")]


def test_every_registered_method_runs_in_the_default_pipeline() -> None:
    assert sorted(PARAMS["sweep"]["methods"]) == sorted(METHODS)
    for method in METHODS:
        assert f"prune_{method}" in PARAMS


def test_report_and_plots_take_the_same_method_list() -> None:
    assert STAGES["report"]["params"] == ["sweep.methods"]
    assert {"plots/prune", "metrics/prune"} <= set(STAGES["report"]["deps"])
    (curves,) = [p for p in DVC_YAML["plots"] if isinstance(p, dict) and "Accuracy vs compression rate" in p]
    assert curves["Accuracy vs compression rate"]["y"] == {"plots/accuracy_vs_rate.csv": "${sweep.methods}"}


def test_compress_reads_the_section_of_the_method_it_uses() -> None:
    assert "prune_${compress.method}" in STAGES["compress"]["params"]


def test_dvc_yaml_is_short() -> None:
    """Half of the 416 lines it had with one hand-written stage per method and per-module deps."""
    assert len((ROOT / "dvc.yaml").read_text().splitlines()) <= 208


def test_export_converts_the_shipped_file_after_compress() -> None:
    export = STAGES["export"]
    assert {"models/model.nnc", "models/model.pt", "data/split"} <= set(export["deps"])
    compress_outs = {path for out in STAGES["compress"]["outs"] for path in out}
    assert "models/model.nnc" in compress_outs  # so DVC runs export after compress
    assert [next(iter(out)) for out in export["outs"]] == ["models/model.onnx", "models/structured.onnx"]
    assert export["metrics"] == [{"metrics/export.json": {"cache": False, "persist": True}}]
    assert set(export["params"]) == {"model", "finetune", "compress.sparsity", "prune_structured"}


def test_the_shipped_models_are_artifacts_dvc_reads() -> None:
    """dvc.yaml's `artifacts:` (DVC's model registry): DVC parses them, their names are valid, and
    each is a model output of a stage, with a description and labels."""
    from dvc.repo import Repo
    from dvc.repo.artifacts import check_name_format

    with Repo(str(ROOT)) as repo:
        artifacts = repo.artifacts.read()["dvc.yaml"]
    outs = {path for stage in STAGES.values() for out in stage.get("outs", []) for path in out}
    for name, artifact in artifacts.items():
        check_name_format(name)
        assert artifact.type == "model", name
        assert artifact.desc and artifact.labels, name
        assert artifact.path in outs, name
    shipped = {"models/model.nnc", "models/model.onnx", "models/structured.onnx", "models/model.pt"}
    assert {artifact.path for artifact in artifacts.values()} == shipped
