"""The offline page for `dvc plots show`: the project's default template, with Vega, Vega-Lite and
Vega-Embed inlined at the major versions dvc-render loads, their licences kept, and no network
request left in it. (tests/test_export_e2e.py opens a real page in headless Chromium.)"""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from dvc_render.html import HTML
from dvc_render.vega import VegaRenderer

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "templates/offline_plots.html"
PACKAGES = ("vega", "vega-lite", "vega-embed")


def test_it_is_the_projects_default_template() -> None:
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc/config")
    # dvc plots show reads a relative path from the .dvc directory (dvc/commands/plots.py)
    assert (ROOT / ".dvc" / config["plots"]["html_template"]).resolve() == TEMPLATE


def test_the_inlined_packages_are_the_majors_dvc_render_loads() -> None:
    cdn = dict(re.findall(r"npm/([a-z-]+)@(\d+)\.", VegaRenderer.SCRIPTS))
    inlined = dict(re.findall(r'<script data-package="([a-z-]+)@(\d+)\.\d+\.\d+">', TEMPLATE.read_text()))
    assert set(cdn) == set(inlined) == set(PACKAGES)
    assert inlined == cdn


def test_licences_are_kept() -> None:
    html = TEMPLATE.read_text()
    for package in PACKAGES:
        licence = (ROOT / f"templates/licenses/{package}.txt").read_text()
        assert "Redistribution and use in source and binary forms" in licence
        header = re.search(rf"/\*! {package} \d+\.\d+\.\d+ \| BSD-3-Clause \| (Copyright [^|]+) \|", html)
        assert header and header.group(1).strip() in licence, package


def test_the_page_loads_nothing_from_the_network() -> None:
    """No script or stylesheet by URL, and no scripts placeholder, through which dvc-render would add its CDN links."""
    html = TEMPLATE.read_text()
    assert not [tag for tag in re.findall(r"<script\b[^>]*>", html) if "src=" in tag]
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", html, flags=re.DOTALL)  # the page, without the code
    assert not re.search(r"\b(src|href)=", markup)
    assert "{scripts}" not in html and "sourceMappingURL" not in html
    page = HTML(html).with_scripts(VegaRenderer.SCRIPTS).with_element('<div id="chart"></div>').embed()
    assert "cdn.jsdelivr.net" not in page and '<div id="chart"></div>' in page
    assert page.count("<script") == html.count("<script")
