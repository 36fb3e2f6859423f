"""Attribution audits: faithfulness, localisation and spurious-cue indicators of a classifier on a dataset.

:func:`run_audit` explains ``n`` rows of a dataset with IIA and one comparison method and
measures, per row and method:

* faithfulness: deletion and insertion AUC (:mod:`hf_iia.metrics`, ``perturbation_steps``
  steps; lower deletion / higher insertion is better),
* localisation, when the dataset has object masks: mask average precision, pointing game
  and the share of the map's mass on the object (energy pointing game),
* spurious-cue indicators: the share of the map's mass (the sum of its ``[0, 1]`` values)
  in the border band and in the most-attributed corner square, and off the object.

Verdict (per class and method, from the class means; all shares are of map mass):

=========== ================================================================================
flag        raised when (constants in :class:`Thresholds`)
=========== ================================================================================
corner      one corner square (side ``corner_fraction`` = 1/8 of the image side, 1.6% of the
            image) holds at least ``corner_lift`` = 3x its area share of the mass (4.7%)
border      the border band (``border_fraction`` = 1/8 of the side wide, 44% of the image)
            holds at least ``border_lift`` = 1.6x its area share (70%)
off-object  with masks: the object holds at most ``object_lift`` = 1x its area share of the
            mass, i.e. the maps point at the object no better than a uniform map would
=========== ================================================================================

A uniform map gives every lift 1; a flag says the class's maps concentrate off-object.
Calibration (synthetic shapes, 64 px, 120 images): a ResNet trained with the corner patch
puts 10-13% of its stage-3 maps' mass in that corner (lift 7-8) and 40-75% of its object
share; the same ResNet trained on clean images at most 1.8% (lift 1.15) and 150-230%. Maps
coarser than the corner square blur a corner cue into its quadrant: from the same model's
last stage (2x2) the patch shows as 3.7-4.9% (lift 2.4-3.1), so audit such models at an
earlier ``layer``.
The spread of every indicator across classes (standard deviation and range of the class
means) is reported too: a cue used for some classes only shows up as a large spread.

Resumable and multi-process. The rows are cut into batches of ``batch_size``; batch ``k``
is written to ``OUT/raw/batches/batch-<k>.parquet`` through a temporary file and an atomic
rename, so a batch file exists only complete. A run first lists the missing batches, then
(after a barrier) every process takes its share of them (Accelerate's
``split_between_processes``) and writes their files; the main process then reads all
batch files in order and writes the outputs. Killed at any moment and started again with
the same command, an audit redoes only the batches whose files are missing: no row is
lost or written twice. ``OUT/raw/manifest.json`` holds the settings; a different command
on the same folder is refused. Under ``accelerate launch`` the processes must share
``OUT`` (one machine, or a shared file system).

Outputs in ``OUT``: ``README.md`` (the model-card section, :mod:`hf_iia.tools.audit.cards`),
``audit_grid.png`` (overlays), ``summary.json`` (settings, tables, verdicts: a few KB),
``results.json`` (the same plus per-row metrics) and ``results.parquet`` (one row per image
and method, maps included as float16 ``[H, W]`` tensors). Nothing is written elsewhere, except the Hugging Face download cache
when the model or dataset is a Hub id.

Modules: :mod:`.config` (settings, thresholds), :mod:`.data` (rows and batches),
:mod:`.indicators` (region shares, masks), :mod:`.auditor` (per-batch measurements),
:mod:`.files` (manifest, batch files, outputs), :mod:`.summary` (tables, flags, verdicts),
:mod:`.grid` (overlay grid), :mod:`.cards` (model card), :mod:`.run` (the driver).
"""

from ...errors import AuditError
from .config import AuditConfig, Thresholds
from .data import SYNTHETIC_DATASETS, load_audit_dataset
from .files import gather, read_maps
from .indicators import CORNERS, region_shares
from .run import run_audit
from .summary import summarise

__all__ = [
    "CORNERS",
    "SYNTHETIC_DATASETS",
    "AuditConfig",
    "AuditError",
    "Thresholds",
    "gather",
    "load_audit_dataset",
    "read_maps",
    "region_shares",
    "run_audit",
    "summarise",
]
