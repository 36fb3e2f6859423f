#!/usr/bin/env python
"""``hf-iia audit`` as a script, for ``accelerate launch``: every process audits its share of the batches.

Example, two CPU processes on one machine (Accelerate's ``--multi_gpu`` launcher is what
starts several local processes; with no GPU they join over gloo)::

    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no \\
        --dynamo_backend no scripts/audit.py CHECKPOINT --dataset synthetic-shortcut --out OUT

Arguments are those of ``hf-iia audit`` (see ``hf-iia audit --help``).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from hf_iia.tools.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["audit", *sys.argv[1:]]))
