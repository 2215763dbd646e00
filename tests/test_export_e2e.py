"""End to end, on small params: the export stage's ONNX files and metrics, the CLI on the pipeline's
own files, the model registry's artifacts, and `dvc plots show`'s page drawn offline by a real browser.

The browser test needs Chromium (/usr/bin/chromium, Debian's `chromium`; .ci/run installs it) and
the playwright package: without them it fails under CI (CI is set) and is skipped elsewhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import SMALL_PARAMS, dvc, env, git, reproducible_lock, small_reproduced

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("mnist_available")]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RATE = SMALL_PARAMS["compress"]["sparsity"]  # 0.9, one of the small sweep's rates
LATENCIES = {f"{runtime}_latency_b{n}_us" for runtime in ("onnxruntime", "torch") for n in (1, 256)}
REPORTED = {"test_accuracy", "torch_test_accuracy", "max_logit_diff", "onnx_bytes", "parameters", "nonzero_weights"}


@pytest.fixture(scope="module")
def chromium() -> Path:
    """The browser, checked before the pipeline runs: missing, it fails under CI and skips elsewhere."""
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -r requirements.txt)")
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        message = "no browser for the offline plots test: missing " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pipeline reproduced once with small params (export included), results committed."""
    return small_reproduced(tmp_path_factory, "export")


def nncompress(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it in the repository (its own copy of the package first on the path)."""
    return subprocess.run(
        [sys.executable, "-m", "nncompress.cli", *args], cwd=repo, env=env(repo), capture_output=True, text=True
    )


def test_export_writes_checked_onnx_files_and_their_metrics(repo: Path) -> None:
    metrics = json.loads((repo / "metrics/export.json").read_text())
    compress = json.loads((repo / "metrics/compress.json").read_text())
    assert set(metrics) == {"model", "structured"}
    assert set(metrics["model"]) == REPORTED | LATENCIES | {"nnc_bytes"}
    assert set(metrics["structured"]) == REPORTED | LATENCIES | {"rate"}
    for name, path in (("model", "models/model.onnx"), ("structured", "models/structured.onnx")):
        m = metrics[name]
        assert m["onnx_bytes"] == (repo / path).stat().st_size
        assert m["test_accuracy"] == m["torch_test_accuracy"]  # every argmax equal (the stage checks it)
        assert 0 <= m["max_logit_diff"] <= 1e-4
        assert all(m[key] > 0 for key in LATENCIES)

    # The shipped model: the file compress wrote and measured, decoded.
    assert metrics["model"]["nnc_bytes"] == compress["compressed_bytes"] == (repo / "models/model.nnc").stat().st_size
    assert metrics["model"]["test_accuracy"] == pytest.approx(compress["test_accuracy"], abs=1e-9)
    assert metrics["model"]["parameters"] == 203_530
    # The structured network at the shipped rate: the prune@structured sweep's point at that rate.
    table = pd.read_csv(repo / "plots/prune/structured.csv")
    row = table[(table["compression_rate"] - RATE).abs() < 1e-9].iloc[0]
    assert metrics["structured"]["rate"] == RATE
    assert metrics["structured"]["test_accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-6)
    assert metrics["structured"]["parameters"] == row["parameters"] < metrics["model"]["parameters"]
    assert metrics["structured"]["onnx_bytes"] < metrics["model"]["onnx_bytes"]


def test_the_cli_reads_the_pipelines_files(repo: Path) -> None:
    from nncompress.compress import codec

    compress = json.loads((repo / "metrics/compress.json").read_text())
    info = nncompress(repo, "info", "models/model.nnc")
    assert info.returncode == 0 and info.stderr == "", info.stderr
    assert info.stdout.startswith(
        f"models/model.nnc: nncompress model file, format version {codec.VERSION}, "
        f"{compress['compressed_bytes']:,} bytes"
    )
    # the ratios compress reports: against 4 B per parameter, and torch.save's state_dict beside it
    assert f"dense fp32: {compress['dense_bytes']:,} bytes" in info.stdout
    assert f"{compress['ratio']:.1f}x this file" in info.stdout
    saved = f"as a torch.save state_dict: {compress['state_dict_bytes']:,} bytes, {compress['state_dict_ratio']:.1f}x"
    assert saved in info.stdout

    lines = {}
    for path in ("models/model.nnc", "models/model.onnx"):
        proc = nncompress(repo, "eval", path, "--split", "data/split")
        assert proc.returncode == 0, proc.stderr
        lines[path] = proc.stdout.split(": ", 1)[1]
    assert lines["models/model.nnc"] == lines["models/model.onnx"]
    assert lines["models/model.nnc"].startswith(f"test accuracy {compress['test_accuracy']:.4f} ")


def test_a_forced_rerun_writes_the_same_onnx_files(repo: Path) -> None:
    lock = reproducible_lock((repo / "dvc.lock").read_text())
    before = json.loads((repo / "metrics/export.json").read_text())
    dvc(repo, "repro", "--force", "--single-item", "export")
    assert reproducible_lock((repo / "dvc.lock").read_text()) == lock  # the ONNX files' hashes included
    after = json.loads((repo / "metrics/export.json").read_text())
    for name in before:  # latencies are measurements of the machine, the rest must not move
        assert {k: v for k, v in after[name].items() if k not in LATENCIES} == {
            k: v for k, v in before[name].items() if k not in LATENCIES
        }


def test_the_shipped_models_are_registered_artifacts(repo: Path, tmp_path: Path) -> None:
    """DVC's model registry: a version tag (as `gto register` writes it) makes `dvc artifacts get` fetch the file."""
    git(repo, "tag", "-a", "mnist-mlp-onnx@v0.1.0", "-m", "Registering artifact mnist-mlp-onnx version v0.1.0")
    dvc(repo, "artifacts", "get", ".", "mnist-mlp-onnx", "-o", str(tmp_path / "model.onnx"))
    assert (tmp_path / "model.onnx").read_bytes() == (repo / "models/model.onnx").read_bytes()


# --- the plots, offline, in a real browser -------------------------------------------------------

MARKS_JS = """(id) => {
    const div = document.getElementById(id);
    if (!div) return null;
    const lines = Array.from(div.querySelectorAll("g.mark-line.role-mark > path"))
        .map(p => (p.getAttribute("d") || "").split("L").length)
        .filter(points => points > 1);
    return {
        lines: lines,
        symbols: div.querySelectorAll("g.mark-symbol.role-mark > path").length,
        canvases: div.querySelectorAll("canvas").length,
    };
}"""
IMAGES_JS = """(id) => Array.from(document.querySelectorAll(`[id="${id}"] img`))
    .map(img => img.complete && img.naturalWidth > 0 && img.naturalHeight > 0)"""


def declared_plots(repo: Path) -> tuple[dict[str, dict], list[str]]:
    """dvc.yaml's plots: {title: definition} of the Vega plots (their ${...} fields resolved from
    params.yaml), and the image paths."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    vega, images = {}, []
    for plot in yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]:
        if isinstance(plot, str):
            images.append(plot)
            continue
        ((title, definition),) = plot.items()
        y = {}
        for csv, fields in definition["y"].items():
            if isinstance(fields, str) and fields.startswith("${"):
                fields = params
                for key in definition["y"][csv][2:-1].split("."):
                    fields = fields[key]
            y[csv] = [fields] if isinstance(fields, str) else list(fields)
        vega[title] = {**definition, "y": y}
    return vega, images


def test_plots_render_offline_in_a_browser(chromium: Path, repo: Path, tmp_path: Path) -> None:
    """`dvc plots show` writes a page (the project's template, .dvc/config) that draws every plot of
    dvc.yaml with no network: every request but file:// is blocked, and none may be attempted."""
    from dvc_render.base import Renderer
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    dvc(repo, "plots", "show", "-o", str(tmp_path / "html"))
    page_file = tmp_path / "html/index.html"
    vega, images = declared_plots(repo)
    assert vega and images

    blocked, errors = [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()

            def only_files(route) -> None:
                if route.request.url.startswith("file:"):
                    route.continue_()
                else:
                    blocked.append(route.request.url)
                    route.abort()

            page.route("**/*", only_files)
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(page_file.as_uri())
            ids = {title: Renderer.remove_special_chars(title) for title in vega}
            charts_drawn = "ids => ids.every(id => document.querySelector(`[id='${id}'] svg g.role-mark`))"
            try:
                page.wait_for_function(charts_drawn, arg=list(ids.values()), timeout=30_000)
                page.wait_for_function("() => Array.from(document.images).every(img => img.complete)", timeout=30_000)
            except PlaywrightTimeout:
                timed_out = True  # reported after the requests and errors, which say why
            else:
                timed_out = False
            marks = {title: page.evaluate(MARKS_JS, ids[title]) for title in vega}
            loaded = {path: page.evaluate(IMAGES_JS, Renderer.remove_special_chars(path)) for path in images}
        finally:
            browser.close()

    assert blocked == [], f"the page tried the network: {blocked}"
    assert errors == [], f"console errors: {errors}"
    assert not timed_out, f"the charts were not drawn within 30 s: {marks}"
    for title, definition in vega.items():
        ((csv, fields),) = definition["y"].items()
        rows = len(pd.read_csv(repo / csv))
        drawn = marks[title]
        assert drawn is not None, f"{title}: no chart on the page"
        assert drawn["canvases"] == 0  # the template draws SVG, whose marks can be counted
        if definition["template"] == "scatter":
            assert drawn["symbols"] >= rows, (title, drawn)
        else:  # one line per field, through every row
            assert len(drawn["lines"]) >= len(fields), (title, drawn)
            assert max(drawn["lines"]) == rows, (title, drawn)
    for path in images:
        assert loaded[path] == [True], f"{path}: image not drawn ({loaded[path]})"
