"""The benchmarks `make bench` runs: the fine-tuning one, at a tiny size, still runs and reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_finetune_flops_runs_and_reports_every_figure(tmp_path):
    out = tmp_path / "flops.json"
    script = ROOT / "benchmarks/finetune_flops.py"
    subprocess.run([sys.executable, str(script), "--iterations", "3", "--lanes", "2", "--json", str(out)], check=True)
    results = json.loads(out.read_text())
    assert results["lanes"] == 2 and results["cores"] >= 1
    for key in ("gemm_peak_gflops_per_core", "finetune_gflops_one_network", "finetune_gflops_one_worker"):
        assert results[key] > 0, key
    assert results["finetune_gflops_all_workers"] > 0
