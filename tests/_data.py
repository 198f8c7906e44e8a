"""Where the test data lives: tests/data, shipped with the repository (see tests/data/README.md).

Test modules import these paths (``from _data import DSB2018``): pytest puts the
tests folder on ``sys.path`` when it loads tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
DSB2018 = DATA / "dsb2018"
STARDIST = DATA / "stardist"
