"""``python -m napari_samrefine.cli``: the same as the ``napari-samrefine`` command."""

import sys

from . import main

sys.exit(main())
