"""The cache_reads system check: a view cannot name a key whose parts its URL does not have."""

from django.test import override_settings
from django.urls import path
from rest_framework.views import APIView

from characters.cache import CHARACTER
from chat.cache import CHAT_HISTORY
from core.cache.readahead import check_cache_reads


class MissingSession(APIView):
    cache_reads = (CHAT_HISTORY,)


class Renamed(APIView):
    cache_reads = (CHARACTER.read_as(name="character"), CHAT_HISTORY)


urlpatterns = [
    path("bad/<slug:character>", MissingSession.as_view()),
    path("good/<slug:character>/<slug:session>", Renamed.as_view()),
]


@override_settings(ROOT_URLCONF=__name__)
def test_a_family_part_missing_from_the_url_is_an_error():
    errors = check_cache_reads()
    assert [error.id for error in errors] == ["core.E001"]
    assert "MissingSession" in errors[0].msg and "session" in errors[0].msg


def test_the_project_urls_pass():
    assert check_cache_reads() == []
