"""Signals characters sends for other apps to react to (characters imports none of them)."""

from django.dispatch import Signal

# Sent after a character's name changed, with ``character_id``, ``old_name`` and ``new_name``:
# keys of other apps that carry the name (chat histories) must go too.
character_renamed = Signal()
