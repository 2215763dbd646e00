"""Rebuild templates/offline_plots.html, the page `dvc plots show` fills, with Vega inlined.

dvc-render's own page loads Vega, Vega-Lite and Vega-Embed from a CDN, so it draws nothing offline.
This one carries their published builds (the npm packages' minified UMD files, each behind its
licence header; full licences in templates/licenses/) and leaves out dvc-render's script
placeholder, so the page makes no network request. .dvc/config points `dvc plots show` at it
(plots.html_template). The versions are the newest of the major versions dvc-render 1.0 loads
(vega 5, vega-lite 5, vega-embed 6), whose Vega-Lite v5 specs they draw.

Usage: python templates/build_offline_plots.py   (needs npm: `npm pack` fetches the pinned packages)
"""

from __future__ import annotations

import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "offline_plots.html"
PACKAGES = {  # npm package: (version, its UMD build, its copyright line)
    "vega": ("5.33.1", "build/vega.min.js", "Copyright (c) 2015-2023, University of Washington Interactive Data Lab"),
    "vega-lite": (
        "5.23.0",
        "build/vega-lite.min.js",
        "Copyright (c) 2015, University of Washington Interactive Data Lab",
    ),
    "vega-embed": (
        "6.29.0",
        "build/vega-embed.min.js",
        "Copyright (c) 2015, University of Washington Interactive Data Lab",
    ),
}
# dvc-render replaces these in the template; none may occur inside the inlined code.
PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Offline page for `dvc plots show` (templates/build_offline_plots.py writes it): Vega, Vega-Lite
         and Vega-Embed are inlined below instead of loaded from a CDN. -->
SCRIPTS
    <script>
    // dvc-render calls vegaEmbed(id, spec) for each chart. Draw SVG (sharp at any zoom, its marks in
    // the DOM, where the project's browser test counts them) instead of the default canvas, and log
    // a chart that fails to the console.
    window.vegaEmbed = (function (embed) {
        function embedSvg(el, spec, opt) {
            var result = embed(el, spec, Object.assign({ renderer: "svg" }, opt));
            result.catch(function (error) { console.error("vegaEmbed " + el + ": " + error); });
            return result;
        }
        return Object.assign(embedSvg, embed);
    })(window.vegaEmbed);
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def fetch(name: str, version: str, workdir: Path) -> tarfile.TarFile:
    """The package's tarball from the npm registry (npm checks it against the registry's integrity hash)."""
    out = subprocess.run(
        ["npm", "pack", f"{name}@{version}", "--silent", "--pack-destination", str(workdir)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()[-1]
    return tarfile.open(workdir / out)


def inline(name: str, version: str, code: str, copyright_line: str) -> str:
    code = re.sub(r"\n?//# sourceMappingURL=\S+\s*$", "", code)  # no map ships with the page
    code = code.replace("</script", "<\\/script")  # cannot end the element early
    for placeholder in PLACEHOLDERS:
        if placeholder in code:
            raise SystemExit(f"{name}: its code contains {placeholder}, which dvc-render would replace")
    header = f"/*! {name} {version} | BSD-3-Clause | {copyright_line} | templates/licenses/{name}.txt */"
    return f'    <script data-package="{name}@{version}">\n{header}\n{code}\n    </script>'


def main() -> None:
    scripts = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (version, build, copyright_line) in PACKAGES.items():
            with fetch(name, version, Path(tmp)) as tar:
                code = tar.extractfile(f"package/{build}").read().decode()
                if "package/LICENSE" in tar.getnames():  # vega's package has none: its file is the repository's
                    (HERE / "licenses" / f"{name}.txt").write_bytes(tar.extractfile("package/LICENSE").read())
            scripts.append(inline(name, version, code, copyright_line))
    OUT.write_text(PAGE.replace("SCRIPTS", "\n".join(scripts)), encoding="utf-8")
    print(f"{OUT}: {OUT.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
