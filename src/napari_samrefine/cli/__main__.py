"""``python -m napari_samrefine.cli``: the same as the ``napari-samrefine`` command."""

import sys

from napari_samrefine.cli import main

sys.exit(main())
