"""l3net.lab.errors: the lab's one error type (a user mistake or a step that cannot go on)."""

from __future__ import annotations


class LabError(RuntimeError):
    """A lab operation that cannot go on; the message says what to do."""
