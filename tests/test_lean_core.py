"""The core installs and runs without napari: a headless worker never imports it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "napari_samrefine" / "data"
GUI_PACKAGES = ("napari", "magicgui", "npe2", "qtpy", "superqt", "vispy", "PyQt5", "PySide2", "PyQt6")

# Runs in a fresh interpreter where the GUI packages cannot be imported at all:
# any import of them by the core raises, and the script reports what was loaded.
BLOCKED = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    """
)


def _run_blocked(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = BLOCKED.format(blocked=GUI_PACKAGES) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )


def test_core_dependencies_leave_napari_to_an_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {dep.split(">")[0].split("=")[0].split("[")[0].strip().lower() for dep in project["dependencies"]}
    assert not core & {p.lower() for p in GUI_PACKAGES}
    extra = {dep.split(">")[0].strip().lower() for dep in project["optional-dependencies"]["napari"]}
    assert {"napari", "magicgui", "npe2", "qtpy"} <= extra


def test_command_line_refines_without_napari(tmp_path, checkpoint):
    out = tmp_path / "refined.tif"
    done = _run_blocked(
        f"""
        from napari_samrefine.cli import main

        rc = main(["refine", {str(SAMPLE / "nuclei.png")!r}, {str(SAMPLE / "nuclei_coarse.tif")!r},
                   "-o", {str(out)!r}, "--checkpoint", {str(checkpoint)!r}, "--iterations", "1"])
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        print("rc", rc, "loaded", loaded)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "rc 0 loaded []" in done.stdout, done.stdout + done.stderr
    import tifffile

    assert tifffile.imread(out).shape == tifffile.imread(SAMPLE / "nuclei_coarse.tif").shape


@pytest.mark.parametrize("module", ["napari_samrefine._napari.refine_widget", "napari_samrefine._napari"])
def test_widgets_without_napari_name_the_extra_in_one_line(tmp_path, module):
    done = _run_blocked(
        f"""
        try:
            import {module}
        except ImportError as err:
            print("MESSAGE:", err)
        """,
        tmp_path,
    )
    message = done.stdout.split("MESSAGE:", 1)[-1].strip()
    assert done.returncode == 0 and "MESSAGE:" in done.stdout, done.stdout + done.stderr
    assert "\n" not in message
    assert "pip install 'napari-samrefine[qt]'" in message and "napari" in message


LEAN_ENV = "NAPARI_SAMREFINE_LEAN_PYTHON"


@pytest.mark.skipif(
    LEAN_ENV not in os.environ,
    reason=f"needs a venv made by `pip install .` without extras; .ci/run makes one and sets {LEAN_ENV}",
)
def test_plain_pip_install_refines_without_napari(tmp_path, checkpoint):
    """`pip install .` (no extras) into an empty venv, then the command line, as a cluster node has it."""
    python = Path(os.environ[LEAN_ENV])
    find = f"import importlib.util as u; print([p for p in {GUI_PACKAGES!r} if u.find_spec(p)])"
    probe = subprocess.run(
        [str(python), "-c", find],
        capture_output=True, text=True, timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "[]", f"the plain install pulled in GUI packages: {probe.stdout}"
    out = tmp_path / "refined.tif"
    command = python.parent / "napari-samrefine"
    done = subprocess.run(
        [str(command), "refine", str(SAMPLE / "nuclei.png"), str(SAMPLE / "nuclei_coarse.tif"),
         "-o", str(out), "--checkpoint", str(checkpoint), "--iterations", "1"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    import tifffile

    assert tifffile.imread(out).shape == tifffile.imread(SAMPLE / "nuclei_coarse.tif").shape
