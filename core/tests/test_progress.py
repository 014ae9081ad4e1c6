from io import StringIO

import pytest
from django.core.management import call_command

from core.management.progress import progress_bar

pytestmark = pytest.mark.django_db(transaction=True)


class Terminal(StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_rich_progress_bar(characters, redis_raw):
    out = Terminal()
    call_command("cache_warm", stdout=out)
    text = out.getvalue()
    assert "\x1b[" in text  # rich drew (and then cleared) a live bar
    assert "5 key(s) written" in text
    assert redis_raw.exists("character:luna")


def test_a_pipe_gets_plain_text():
    out = StringIO()
    with progress_bar(out, "x", 10) as advance:
        advance(10)
    assert out.getvalue() == ""
