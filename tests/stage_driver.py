"""Stage scripts run one after another in one process, each as `python <script> <args>` would run it
(`__main__`, its own folder and command line): its exit code, stdout and stderr, as JSON on stdout.

For test_stage_errors: a process per case would import torch and the package again every time.

Usage: python tests/stage_driver.py CASES.json   (CASES.json: {name: [folder, [script, args...]]})
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import sys
import traceback
from pathlib import Path


def run(folder: str, argv: list[str]) -> dict[str, object]:
    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    os.chdir(folder)
    sys.argv = list(argv)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_path(argv[0], run_name="__main__")
        except SystemExit as exc:
            code = exc.code
        except BaseException:  # as the interpreter would: the traceback on stderr, exit 1
            traceback.print_exc()
            code = 1
    if not isinstance(code, int):  # sys.exit("message") prints it and exits 1; sys.exit() is 0
        if code is not None:
            err.write(f"{code}\n")
        code = 0 if code is None else 1
    return {"returncode": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text())
    results = {name: run(folder, argv) for name, (folder, argv) in cases.items()}
    sys.stdout.write(json.dumps(results))


if __name__ == "__main__":
    main()
