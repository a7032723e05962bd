"""The README's custom example (``python scripts/make_custom_dataset.py``).

Kept at the path the reference implementation's README uses; the code lives in ``no_time_to_train.tools.make_custom_dataset``.
"""

import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    # Run as a file: import this package from the repository, not sibling files of this folder.
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from no_time_to_train.tools.make_custom_dataset import *  # noqa: E402,F403
from no_time_to_train.tools.make_custom_dataset import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
