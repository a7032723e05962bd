"""One-image command (``python -m no_time_to_train.segment_image``).

Kept at the path the reference implementation's README uses; the code lives in ``no_time_to_train.cli.segment_image``.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file: import this package from the repository, not sibling files of this folder.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from no_time_to_train.cli.segment_image import *  # noqa: E402,F403
from no_time_to_train.cli.segment_image import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
