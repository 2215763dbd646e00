"""End to end, at full size: the default pipeline, run from scratch, reproduces the committed metrics.

In a module of its own, so that pytest-xdist runs it beside the other end-to-end tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from conftest import METRIC_FILES, ROOT, dvc, make_repo, read_metrics

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("mnist_available")]

# Committed results must be what the committed code and params produce. On the same kind of
# machine the run is bit-identical; the tolerance (0.01 accuracy, i.e. 100 test images, and the
# same on AUCs) only absorbs float differences between CPU instruction sets, which can steer 5,120
# SGD steps apart slightly.
TOLERANCE = 0.01
# Sizes depend on the weights through the entropy coder: the same slight drift changes a few bytes.
SIZE_KEYS, SIZE_TOLERANCE = ("compressed_bytes", "ratio", "bits_per_weight"), 0.02


def test_default_pipeline_reproduces_committed_metrics(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    dvc(repo, "repro")
    fresh, committed = read_metrics(repo), read_metrics(ROOT)
    for name in METRIC_FILES:
        assert fresh[name].keys() == committed[name].keys(), name
        for key, value in committed[name].items():
            if name == "compress" and key in SIZE_KEYS:
                assert math.isclose(fresh[name][key], value, rel_tol=SIZE_TOLERANCE), (name, key)
            elif name == "compress" and key == "accuracy_drop":  # in points
                assert math.isclose(fresh[name][key], value, abs_tol=100 * TOLERANCE), (name, key)
            elif isinstance(value, float):
                assert math.isclose(fresh[name][key], value, abs_tol=TOLERANCE), (name, key)
            else:
                assert fresh[name][key] == value, (name, key)
