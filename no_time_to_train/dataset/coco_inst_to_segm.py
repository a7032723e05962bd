"""Semantic mIoU of instance predictions (``python no_time_to_train/dataset/coco_inst_to_segm.py``).

Kept at the path the reference implementation's README uses; the code lives in ``no_time_to_train.evaluation.semantic_miou``.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file: import this package from the repository, not sibling files of this folder.
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from no_time_to_train.evaluation.semantic_miou import *  # noqa: E402,F403
from no_time_to_train.evaluation.semantic_miou import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
