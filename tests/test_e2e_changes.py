"""End to end, changing things: each test takes its own copy of the small pipeline reproduced once
(conftest.small_reproduced), changes params, code or the worker count, and reruns it through DVC.
A module of its own so that xdist runs it beside test_e2e.py's checks of the reproduced outputs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import (
    SMALL_PARAMS,
    dvc,
    git,
    read_metrics,
    reproducible_lock,
    set_params,
    small_reproduced,
)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("mnist_available")]

RATES = SMALL_PARAMS["sweep"]["rates"]


@pytest.fixture(scope="module")
def small_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline reproduced once with small params, results committed."""
    return small_reproduced(tmp_path_factory, "changed")


@pytest.fixture
def clone(small_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the reproduced repository (git history and DVC cache included)."""
    return Path(shutil.copytree(small_repo, tmp_path / "repo", symlinks=True))


def test_param_change_shows_in_metrics_diff(clone: Path) -> None:
    """A train param reruns train and what it feeds (here one of those, as a target)."""
    set_params(clone, {"train": {"epochs": 3}})
    out = dvc(clone, "repro", "prune@magnitude").stdout
    assert "Running stage 'train'" in out and "Running stage 'prune@magnitude'" in out
    assert "Running stage 'download'" not in out and "Running stage 'split'" not in out

    params = json.loads(dvc(clone, "params", "diff", "--json").stdout)
    assert params["params.yaml"]["train.epochs"] == {"old": 2, "new": 3, "diff": 1}
    diff = json.loads(dvc(clone, "metrics", "diff", "--json").stdout)
    train_diff = diff["metrics/train.json"]
    assert train_diff["iterations"] == {"old": 64, "new": 96, "diff": 32}
    assert train_diff["test_accuracy"]["new"] != train_diff["test_accuracy"]["old"]
    assert "metrics/prune/magnitude.json" in diff


def stages_run(repo: Path) -> set[str]:
    out = dvc(repo, "repro").stdout
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def test_one_method_param_reruns_only_that_method(clone: Path) -> None:
    """Each method keeps its own params section: changing one reruns its prune@ stage and the report,
    and compress too when it prunes with that method (compress.method: gradual), then export, which
    converts the file compress wrote."""
    set_params(clone, {"prune_random": {"seeds": [0, 1, 2]}})
    assert stages_run(clone) == {"prune@random", "report"}
    set_params(clone, {"prune_gradual": {"steps": 1}})
    assert stages_run(clone) == {"prune@gradual", "report", "compress", "export"}
    params = json.loads(dvc(clone, "params", "diff", "--json").stdout)
    assert params["params.yaml"]["prune_gradual.steps"] == {"old": 2, "new": 1, "diff": -1}


NEW_METHOD = '''"""Global random pruning without retraining: the test's method, added through the interface alone."""

from nncompress.prune.masks import unstructured
from nncompress.prune.registry import Context, MethodConfig, register
from nncompress.prune.schedule import Method, one_shot
from nncompress.schema import Seeds


@register("global_random")
class GlobalRandom(MethodConfig):
    seeds: Seeds

    def build(self, ctx: Context) -> Method:
        return one_shot(unstructured("random", "global"))

    def budget(self, ctx: Context) -> int:
        return 0
'''


def test_a_new_method_is_one_module_one_section_one_list_entry(clone: Path, tmp_path: Path) -> None:
    (clone / "nncompress/prune/methods/global_random.py").write_text(NEW_METHOD)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["sweep"]["methods"].append("global_random")
    params["prune_global_random"] = {"seeds": [0, 1]}
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "global_random" in dvc(clone, "stage", "list").stdout
    # Every stage depends on the package, so all would rerun: the new method's stage and the report
    # (which reads every method's table) show it.
    dvc(clone, "repro", "--single-item", "prune@global_random", "report")
    summary = json.loads((clone / "metrics/prune/global_random.json").read_text())
    assert summary["seeds"] == 2 and summary["finetune_epochs"] == 0
    table = pd.read_csv(clone / "plots/prune/global_random.csv")
    assert table["sparsity"].tolist() == pytest.approx(RATES, abs=1e-5)
    assert "global_random" in pd.read_csv(clone / "plots/accuracy_vs_rate.csv").columns
    shown = json.loads(dvc(clone, "metrics", "show", "--json").stdout)
    assert "metrics/prune/global_random.json" in next(iter(shown.values()))["data"]
    dvc(clone, "plots", "show", "-o", str(tmp_path / "html"))
    assert '"field": "global_random"' in (tmp_path / "html/index.html").read_text()


def test_the_worker_count_is_not_a_dependency_and_does_not_change_results(clone: Path) -> None:
    """sweep.workers only says how many processes share the work: no stage reruns for it, and a
    forced rerun on one process writes the same metrics as the committed run on every core."""
    before = read_metrics(clone)
    set_params(clone, {"sweep": {"workers": 1}})
    assert "up to date" in dvc(clone, "status").stdout
    dvc(clone, "repro", "--force", "--single-item", "prune@random", "prune@gradual", "compress")
    assert read_metrics(clone) == before


def test_same_params_and_seed_give_the_same_outputs(clone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every stage rerun from scratch: metrics, tables, and the hashes of the data, checkpoint and
    model files that dvc.lock records, are all identical. Only the export stage's latencies, which
    measure this machine's speed, may change (metrics/export.json, and its hash in dvc.lock).
    The rerun is cold (every stage its own fresh process), the first was warm (nncompress/warm.py)."""
    monkeypatch.setenv("NNCOMPRESS_WARM", "0")
    before = read_metrics(clone)
    export_before = without_latencies(json.loads((clone / "metrics/export.json").read_text()))
    dvc(clone, "repro", "--force")
    assert read_metrics(clone) == before
    assert without_latencies(json.loads((clone / "metrics/export.json").read_text())) == export_before
    assert reproducible_lock((clone / "dvc.lock").read_text()) == reproducible_lock(
        git(clone, "show", "HEAD:dvc.lock").stdout
    )
    changed = set(git(clone, "status", "--porcelain").stdout.splitlines())
    assert changed <= {" M dvc.lock", " M metrics/export.json"}, f"a forced rerun changed committed outputs: {changed}"


def without_latencies(metrics: dict) -> dict:
    return {name: {k: v for k, v in values.items() if "latency" not in k} for name, values in metrics.items()}


def test_bad_param_fails_clearly_and_keeps_earlier_outputs(clone: Path) -> None:
    kept = {p: (clone / p).read_bytes() for p in ("metrics/train.json", "models/model.pt")}
    set_params(clone, {"train": {"epochs": -1}})
    proc = dvc(clone, "repro", check=False)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: params.yaml: train.epochs must be >= 0, got -1"]
    assert "Traceback" not in proc.stderr
    for path, content in kept.items():
        assert (clone / path).read_bytes() == content, f"{path} was changed by a failed run"


def test_experiment_run_and_show(clone: Path) -> None:
    dvc(clone, "exp", "run", "-n", "seed1", "-S", "prune_random.seeds=[1]")
    shown = dvc(clone, "exp", "show", "--csv").stdout
    assert "seed1" in shown
    table = pd.read_csv(clone / "plots/prune/random.csv")
    assert table["seeds"].tolist() == [1] * len(RATES)
