"""Write the JSON Schema of params.yaml (params.schema.json), which editors use to check the file."""

from __future__ import annotations

from nncompress.warm import delegate

delegate(__name__)  # run in a warm stage server if one is up (nncompress/warm.py), else cold

import json

from nncompress import config
from nncompress.fileio import write_text
from nncompress.runner import arguments, run_stage


def main() -> None:
    args = arguments(__doc__, checkpoint=False, out="params.schema.json").parse_args()
    write_text(args.out, json.dumps(config.json_schema(), indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_stage(main)
