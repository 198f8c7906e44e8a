"""How the dock widgets lay out: fields that scroll inside the dock, docks that fit their fields.

A dock widget's fields sit in a scroll area (:func:`scroll_body`) that asks
for the width the fields need, up to :data:`MAX_HINT`; a dock added to a
column gets a usable share of it (:func:`fit_new_dock`); and when fields appear
later (ticking a box that shows more fields) the dock grows so that none is cut
off behind a horizontal scrollbar (:class:`GrowingScrollArea`).
"""

from __future__ import annotations

from magicgui.widgets import Container
from qtpy.QtCore import QEvent, QSize, Qt, QTimer
from qtpy.QtWidgets import (
    QBoxLayout,
    QDockWidget,
    QFrame,
    QMainWindow,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

__all__ = ["MAX_HINT", "GrowingScrollArea", "scroll_body", "shrinkable_choices", "dock_of", "fit_new_dock"]

MAX_HINT = (600, 800)  # px: the most a widget asks of its dock; beyond that its fields scroll


def dock_of(widget: QWidget) -> QDockWidget | None:
    """The dock ``widget`` lies in, or None."""
    dock = widget.parentWidget()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parentWidget()
    return dock


class GrowingScrollArea(QScrollArea):
    """A scroll area that asks for the width its fields need (up to ``MAX_HINT``).

    QScrollArea asks for at most 36 x 24 lines of text, narrower than the
    fields, which then scroll sideways; it can still be made as small as the user
    wants (its minimum size stays small), the fields scroll then.

    When fields appear (a box ticked shows more) and need more width than the
    dock has, the dock grows to fit them (up to ``MAX_HINT``), once: the user
    can make it narrower again.
    """

    def setWidget(self, widget: QWidget) -> None:
        super().setWidget(widget)
        widget.installEventFilter(self)

    def eventFilter(self, obj, event) -> bool:
        if obj is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()  # the dock asks for the new size hint
            QTimer.singleShot(0, self.fit_width)  # once the fields are laid out
        return False

    def missing_width(self) -> int:
        """How many pixels the fields lack to be shown whole (0 when none is cut off)."""
        body = self.widget()
        if body is None:
            return 0
        return max(0, body.minimumSizeHint().width() - self.viewport().width())

    def fit_width(self) -> None:
        """Widen the dock this area lies in so that no field is cut off (up to ``MAX_HINT``)."""
        missing = self.missing_width()
        if not missing or not self.isVisible():
            return
        dock = dock_of(self)
        window = None if dock is None else dock.parentWidget()
        if not isinstance(window, QMainWindow) or dock.isFloating():
            if dock is not None and dock.isFloating():
                dock.resize(min(dock.width() + missing, MAX_HINT[0]), dock.height())
            return
        width = min(dock.width() + missing, max(MAX_HINT[0], dock.width()))
        window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)

    def sizeHint(self) -> QSize:
        body = self.widget()
        if body is None:
            return super().sizeHint()
        hint = body.sizeHint().expandedTo(body.minimumSizeHint())
        frame = 2 * self.frameWidth()
        bar = self.verticalScrollBar().sizeHint().width()
        return QSize(min(hint.width() + bar + frame, MAX_HINT[0]), min(hint.height() + frame, MAX_HINT[1]))


def scroll_body(container: Container) -> QScrollArea | None:
    """Put the (still empty) ``container``'s fields in a scroll area inside its own widget.

    napari docks ``container.native`` as it is (a magicgui ``scrollable=True``
    container would be docked without its scroll area), so the scroll area goes
    inside: ``native`` holds only the scroll area, and the fields magicgui adds go
    into the scroll area's widget. The dock can then be made as small as the
    screen needs; the fields scroll. Returns the scroll area (None if the
    magicgui backend is not laid out as expected: the fields stay unscrolled).
    """
    backend = container._widget
    outer = getattr(backend, "_layout", None)
    if not isinstance(outer, QBoxLayout) or outer.count() or len(container):
        return None
    body = QWidget()
    inner = QVBoxLayout(body)
    inner.setContentsMargins(outer.contentsMargins())
    inner.setSpacing(outer.spacing())
    inner.addStretch(1)  # fields keep their height at the top; magicgui inserts before this
    scroll = GrowingScrollArea()
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    scroll.setWidget(body)
    outer.setContentsMargins(0, 0, 0, 0)
    outer.addWidget(scroll)
    backend._layout = inner
    return scroll


def shrinkable_choices(widget: QWidget, chars: int = 12) -> None:
    """Let the drop-downs under ``widget`` be narrower than their longest entry.

    A QComboBox is at least as wide as its longest item (a long layer or model
    name) by default, which forces the dock to scroll sideways; this way it
    shrinks to ``chars`` characters where space is short, and fills the width
    otherwise.
    """
    from qtpy.QtWidgets import QComboBox

    for combo in widget.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(chars)


def fit_new_dock(native: QWidget, scroll: QScrollArea) -> None:
    """Give a newly docked widget a usable share of its dock column.

    Qt gives a dock added later the width of those already in its column
    (often too narrow: the fields scroll sideways) and a few lines of height.
    This widens the column to what the fields need (``scroll``'s size hint), up
    to ``MAX_HINT`` and never narrower than it was, and shares the column's
    height evenly between its docks. The window does not grow: the canvas gives
    the room, down to its own minimum.
    """
    dock = dock_of(native)
    window = dock.parent() if dock is not None else None
    if not isinstance(window, QMainWindow) or dock.isFloating():
        return
    area = window.dockWidgetArea(dock)
    if area not in (Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea):
        return
    column = [
        d for d in window.findChildren(QDockWidget)
        if d is not dock and d.isVisible() and not d.isFloating()
        and window.dockWidgetArea(d) == area
    ]  # fmt: skip
    hint = scroll.sizeHint()
    width = max([hint.width(), *(d.width() for d in column)])
    window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)
    if column:  # Qt leaves a dock added last a few lines: the column's docks share its height
        docks = [*column, dock]
        share = sum(d.height() for d in docks) // len(docks)
        window.resizeDocks(docks, [share] * len(docks), Qt.Orientation.Vertical)
