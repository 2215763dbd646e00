"""Protocols (nncompress.protocols): pipelines under protocols/<name>/ generated from dvc.yaml, run
by DVC on their own params beside the default pipeline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SMALL_PARAMS, dvc, make_repo, merge

from nncompress import protocols

PIPELINE = yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_a_protocol_runs_the_same_scripts_on_its_own_files():
    rendered = protocols.render(PIPELINE)
    assert set(rendered["stages"]) == set(PIPELINE["stages"]) - set(protocols.PROJECT_WIDE)
    for name, stage in rendered["stages"].items():
        original = PIPELINE["stages"][name]
        script = original["cmd"].split()[1]
        assert stage["cmd"].split()[1] == f"../../{script}"
        assert f"../../{script}" in stage["deps"] and "../../nncompress" in stage["deps"]
        # everything else (data, models, metrics, plots, params) is the protocol's own
        assert [d for d in stage["deps"] if not d.startswith("../../")] == [
            d for d in original["deps"] if d not in (script, "nncompress")
        ]
        for key in ("outs", "metrics", "params", "matrix"):
            assert stage.get(key) == original.get(key)
    assert rendered["plots"] == PIPELINE["plots"]
    assert "artifacts" not in rendered


def test_committed_protocols_are_up_to_date():
    proc = subprocess.run([sys.executable, "-m", "nncompress.protocols", "--check"], cwd=ROOT, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()


COMMITTED = sorted(p.parent.name for p in (ROOT / "protocols").glob("*/params.yaml"))
# The committed protocols' own params, made tiny: their networks, methods and grids, on little data.
TINY = {
    "split": {"train_size": 256, "val_size": 64, "test_size": 200},
    "train": {"epochs": 1, "log_every": 4},
    "sweep": {"rates": [0.0, 0.9], "workers": 1},
    "finetune": {"epochs": 1},
    "prune_random": {"seeds": [0]},
    "prune_gradual": {"steps": 2},
    "prune_lottery": {"epochs": 1, "rewind_iteration": 2},
    "compress": {
        "sparsity": 0.9,
        "bits": 3,
        "finetune_epochs": 1,
        "centroid": {"epochs": 1},
        "sweep_sparsities": [0.9],
        "sweep_bits": [3],
    },
}


@pytest.mark.e2e
@pytest.mark.usefixtures("mnist_available")
@pytest.mark.skipif(not COMMITTED, reason="no protocol is committed")
def test_every_committed_protocol_runs_with_tiny_params(tmp_path: Path) -> None:
    """Each committed protocol is a pipeline of its own: its stages run the project's scripts on its
    params and write its own files; the default pipeline, never run here, has written nothing."""
    repo = make_repo(tmp_path / "repo", SMALL_PARAMS)
    for name in COMMITTED:
        params = yaml.safe_load((ROOT / "protocols" / name / "params.yaml").read_text())
        merge(params, TINY)
        (repo / "protocols" / name).mkdir(parents=True)
        (repo / "protocols" / name / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([sys.executable, "-m", "nncompress.protocols"], cwd=repo, check=True, env={"PYTHONPATH": str(repo)})
    for name in COMMITTED:
        dvc(repo, "repro", f"protocols/{name}/dvc.yaml")
    shown = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    files = {path for rev in shown.values() for path in rev.get("data", {})}
    for name in COMMITTED:
        folder = repo / "protocols" / name
        assert f"protocols/{name}/metrics/compress.json" in files
        assert f"protocols/{name}/metrics/export.json" in files
        assert (folder / "models/model.nnc").is_file()
        params = yaml.safe_load((folder / "params.yaml").read_text())
        steps = params["train"]["epochs"] * -(-params["split"]["train_size"] // params["train"]["batch_size"])
        assert json.loads((folder / "metrics/train.json").read_text())["iterations"] == steps  # its params
    assert not (repo / "metrics").exists() and not (repo / "models").exists()
    status = json.loads(dvc(repo, "status", "--json").stdout)  # every pipeline: the default one has not run
    assert any(stage.startswith("prune@") for stage in status)
    assert not any(stage.startswith("protocols/") for stage in status)
