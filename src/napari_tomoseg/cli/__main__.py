"""``python -m napari_tomoseg.cli``: the ``tomoseg`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
