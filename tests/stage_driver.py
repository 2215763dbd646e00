"""Stage scripts run one after another in one process, each as `python <script> <args>` would run it
(`__main__`, its own folder, command line and warning filters): its exit code and everything written
to file descriptors 1 and 2 (Python's streams, C libraries, forked workers), as JSON in a file.
Unlike there, the script's module is not sys.modules['__main__'] (this driver is): what the stages
do not rely on (pickling a class of the script by reference), but what lets a stage end by returning.

For test_stage_errors: a process per case would import torch and the package again every time.

Usage: python tests/stage_driver.py CASES.json RESULTS.json   (CASES.json: {name: [folder, [script, args...]]})
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path


def run(folder: str, argv: list[str]) -> dict[str, object]:
    os.chdir(folder)
    sys.argv = list(argv)
    code: object = 0
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, warnings.catch_warnings():
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            # As __main__, but not in sys.modules: the script is not the program, so its stage ends
            # by returning here (runner.quick_exit would end this process).
            code_object = compile(Path(argv[0]).read_bytes(), argv[0], "exec", dont_inherit=True)
            module = {"__name__": "__main__", "__file__": argv[0], "__builtins__": builtins}
            exec(code_object, module | {"__spec__": None, "__package__": None, "__cached__": None})
        except SystemExit as exc:
            code = exc.code
        except BaseException:  # as the interpreter would: the traceback on stderr, exit 1
            traceback.print_exc()
            code = 1
        finally:
            if not isinstance(code, int):  # sys.exit("message") prints it and exits 1; sys.exit() is 0
                if code is not None:
                    print(code, file=sys.stderr)
                code = 0 if code is None else 1
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        return {"returncode": code, "stdout": out.read().decode(), "stderr": err.read().decode()}


def main() -> None:
    os.environ["NNCOMPRESS_WARM"] = "0"  # every case runs here, none in a warm stage server
    cases, outcome = (Path(arg).resolve() for arg in sys.argv[1:3])  # before a case replaces sys.argv
    results = {name: run(folder, argv) for name, (folder, argv) in json.loads(cases.read_text()).items()}
    outcome.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
