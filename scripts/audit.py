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

from hf_iia.tools.cli import main

if __name__ == "__main__":
    sys.exit(main(["audit", *sys.argv[1:]]))
