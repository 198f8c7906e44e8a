"""The status line of the dock widgets: wrapped, a few lines long, the whole text on demand.

A long message (an offline-download error runs to 900 characters, with URLs and
paths that have no spaces) must not widen the dock or the window: the line wraps,
long words get invisible break points, and only the first lines are shown. The
whole text is in the tooltip, behind a "Show all" button (a window with the exact
text, to read or copy), and in ``StatusLine.value`` for scripts and tests.
"""

from __future__ import annotations

import html
import re

from magicgui.widgets import Container, Label, PushButton
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QSizePolicy

__all__ = ["StatusLine", "shorten", "breakable", "MAX_CHARS", "MAX_LINES", "BREAK_AFTER"]

MAX_CHARS = 240  # a status line shows at most this many characters ...
MAX_LINES = 4  # ... and this many lines of the message; the rest is behind "Show all"
BREAK_AFTER = 20  # a word longer than this may wrap (after / _ . - and the like, or anywhere)
ELLIPSIS = " …"

_ZWSP = "\u200b"  # zero-width space: a place where Qt may wrap a line, invisible otherwise
_LONG_WORD = re.compile(rf"\S{{{BREAK_AFTER + 1},}}")
_SOFT = re.compile(r"([/\\_.,:;=&?\-)\]}>])")


def breakable(text: str, every: int = BREAK_AFTER) -> str:
    """``text`` with invisible break points in words longer than ``every`` characters.

    Qt wraps lines only at spaces; a URL or a path would keep its whole width.
    Breaks go after punctuation (``/ _ . - ...``) and, failing that, every
    ``every`` characters.
    """

    def split(match: re.Match) -> str:
        parts = _SOFT.sub(r"\1" + _ZWSP, match.group(0)).split(_ZWSP)
        out = []
        for part in parts:
            out.extend(part[i : i + every] for i in range(0, len(part), every))
        return _ZWSP.join(out)

    return _LONG_WORD.sub(split, text)


def shorten(text: str, max_chars: int = MAX_CHARS, max_lines: int = MAX_LINES) -> str:
    """The first ``max_lines`` lines and ``max_chars`` characters of ``text``, "…" if cut."""
    lines = text.splitlines()
    short = "\n".join(lines[:max_lines])
    if len(short) > max_chars:
        short = short[:max_chars]
        space = short.rfind(" ")
        if space > max_chars * 2 // 3:  # cut at a word boundary when there is one nearby
            short = short[:space]
    if short == text:
        return text
    return short.rstrip() + ELLIPSIS


class StatusLine(Container):
    """A wrapped status line that shows a short form of long messages.

    ``value`` is the whole message; ``text_shown`` what the line shows (the whole
    message when it is short); ``show_details()`` opens a window with the
    whole text (the "Show all" button).
    """

    def __init__(self):
        super().__init__(labels=False, label="")
        self.margins = (0, 0, 0, 0)
        self._text = self.text_shown = ""
        self._line = Label(value="")
        label = self._line.native
        label.setWordWrap(True)
        label.setTextFormat(Qt.TextFormat.PlainText)  # "<urllib3...>" is text, not markup
        # magicgui's labels are Fixed: as wide as their text, whatever the dock
        label.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Preferred)
        self.details_button = PushButton(text="Show all")
        self.details_button.tooltip = "the whole message, in a window (to read or copy)"
        self.details_button.visible = False
        self.details_button.changed.connect(self.show_details)
        self.extend([self._line, self.details_button])
        self._dialog = None

    @property
    def value(self) -> str:
        """The whole message."""
        return self._text

    @value.setter
    def value(self, text) -> None:
        text = "" if text is None else str(text)
        self._text = text
        self.text_shown = shorten(text)
        self._line.value = breakable(self.text_shown)
        cut = self.text_shown != text
        self.details_button.visible = cut
        self.tooltip = _rich(text) if cut else ""
        if self._dialog is not None and self._dialog.isVisible():
            self._set_dialog_text(text)

    def show_details(self, *_):
        """Show the whole message in a window (text selectable, with a Copy button); returns it."""
        from qtpy.QtWidgets import (
            QApplication,
            QDialog,
            QDialogButtonBox,
            QPlainTextEdit,
            QVBoxLayout,
        )

        if self._dialog is None:
            dialog = QDialog(self.native)
            dialog.setWindowTitle("Status message")
            view = QPlainTextEdit(dialog)
            view.setReadOnly(True)
            buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, dialog)
            copy = buttons.addButton("Copy", QDialogButtonBox.ButtonRole.ActionRole)
            copy.clicked.connect(lambda: QApplication.clipboard().setText(self._text))
            buttons.rejected.connect(dialog.close)
            layout = QVBoxLayout(dialog)
            layout.addWidget(view)
            layout.addWidget(buttons)
            dialog.resize(560, 320)
            self._dialog, self._view = dialog, view
        self._set_dialog_text(self._text)
        self._dialog.show()
        self._dialog.raise_()
        return self._dialog

    def _set_dialog_text(self, text: str) -> None:
        self._view.setPlainText(text)  # wraps anywhere; copies exactly (no break marks)


def _rich(text: str) -> str:
    """A tooltip that wraps (Qt wraps rich-text tooltips, not plain ones)."""
    return "<qt>" + html.escape(breakable(text)).replace("\n", "<br>") + "</qt>"
