"""core.cache.registry: the eight families, their templates, TTL settings, and key separation."""

import os
import subprocess
import sys
from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st

from accounts.cache import USER_COINS, USER_EMAIL
from characters.cache import CHARACTER, CHARACTERS_LIST
from chat.cache import CHAT_HISTORY
from core.cache.registry import FAMILIES, family_of

CONTRACT = {
    "subscription:user": ("subscription:user:{user_id}", "CACHE_TTL_SUBSCRIPTION_USER", 300),
    "subscription:stats": ("subscription:stats:{user_id}", "CACHE_TTL_SUBSCRIPTION_STATS", 300),
    "user:email": ("user:email:{email}", "CACHE_TTL_USER_EMAIL", 120),
    "user:coins": ("user:coins:{user_id}", "CACHE_TTL_USER_COINS", 60),
    "characters:list": ("characters:list", "CACHE_TTL_CHARACTERS_LIST", 1800),
    "character": ("character:{name}", "CACHE_TTL_CHARACTER", 1800),
    "generation:settings": ("generation:settings", "CACHE_TTL_GENERATION_SETTINGS", 3600),
    "generation:status": ("generation:status:{user_id}:{generation_id}", "CACHE_TTL_GENERATION_STATUS", 300),
    "chat:history": ("chat:history:{user_id}:{character}:{session}", "CACHE_TTL_CHAT_HISTORY", 600),
}

SAMPLE_PARTS = {
    "subscription:user": {"user_id": 7},
    "subscription:stats": {"user_id": 7},
    "user:email": {"email": "a@b.c", "user_id": 7},
    "user:coins": {"user_id": 7},
    "characters:list": {},
    "character": {"name": "luna"},
    "generation:settings": {},
    "generation:status": {"user_id": 7, "generation_id": 42},
    "chat:history": {"user_id": 7, "character": "luna", "session": "s1"},
}


def test_the_registry_holds_exactly_the_contract():
    assert {name: (f.template, f.ttl_setting, f.default_ttl) for name, f in FAMILIES.items()} == CONTRACT


@pytest.mark.parametrize("name", CONTRACT)
def test_default_ttls_are_the_contracts(name):
    assert FAMILIES[name].ttl == CONTRACT[name][2]


def test_ttl_follows_the_setting(settings):
    settings.CACHE_TTL_USER_COINS = 7
    assert USER_COINS.ttl == 7


@pytest.mark.slow
def test_ttls_come_from_the_environment():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test",
           "CACHE_TTL_USER_COINS": "11", "CACHE_TTL_CHAT_HISTORY": "22", "CHAT_HISTORY_CACHED_MESSAGES": "33"}
    code = ("import django; django.setup(); from accounts.cache import USER_COINS; from chat.cache import CHAT_HISTORY; "
            "from django.conf import settings; "
            "print(USER_COINS.ttl, CHAT_HISTORY.ttl, settings.CHAT_HISTORY_CACHED_MESSAGES)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.stdout.split() == ["11", "22", "33"]


@pytest.mark.parametrize("name", CONTRACT)
def test_each_key_belongs_to_its_family_and_only_matches_its_own_pattern(name):
    key = FAMILIES[name].key(**SAMPLE_PARTS[name])
    assert family_of(key) is FAMILIES[name]
    matching = [f.name for f in FAMILIES.values() if fnmatchcase(key, f.pattern)]
    assert matching == [name]


def test_keys_read_like_the_contract():
    assert USER_COINS.key(user_id=1) == "user:coins:1"
    assert USER_EMAIL.key(email="a@b.c", user_id=1) == "user:email:a@b.c"  # the id only places cluster keys
    assert CHAT_HISTORY.key(user_id=1, character="luna", session="s-1") == "chat:history:1:luna:s-1"
    assert CHARACTERS_LIST.key() == "characters:list"


def test_key_requires_exactly_the_templates_fields():
    with pytest.raises(TypeError):
        USER_COINS.key()
    with pytest.raises(TypeError):
        USER_COINS.key(user_id=1, email="x")


def test_a_loader_must_take_exactly_the_keys_parts():
    """fetch() calls the loader with the key's parts: a mismatch is refused when the family is
    declared (the app's cache.py is imported at start-up), not on the first miss."""
    from core.cache.family import KeyFamily

    def by_id(*, user_id: int) -> dict:
        return {}

    declared = dict(name="t", ttl_setting="T", default_ttl=1, holds="t")
    assert KeyFamily(template="t:{user_id}", loader=by_id, **declared).fields == ("user_id",)
    for template in ("t:{id}", "t:{user_id}:{name}", "t"):
        with pytest.raises(TypeError, match="does not take exactly the key's parts"):
            KeyFamily(template=template, loader=by_id, **declared)
    with pytest.raises(TypeError):  # the parts are keywords, as fetch passes them
        KeyFamily(template="t:{user_id}", loader=lambda user_id, /: {}, **declared)


def test_lease_keys_belong_to_no_family():
    assert family_of("lease:user:coins:1") is None
    assert not any(fnmatchcase("lease:user:coins:1", f.pattern) for f in FAMILIES.values())


@pytest.mark.parametrize("email", [
    "*", "user:coins:1", "x:user:coins:1", "a@b.c:1", "*@example.com", "a?b@c", "[ab]@c", "a b@c", "é@example.com",
])
def test_a_hostile_email_stays_in_its_family(email):
    key = USER_EMAIL.key(email=email, user_id=1)
    assert family_of(key) is USER_EMAIL
    assert USER_EMAIL.parts_of(key)["email"].startswith("~")
    assert not any(c in key for c in "*?[] ")
    assert key.count(":") == 2


def user_input_parts(character, session, email):
    """The families whose key parts come from user input, with these parts."""
    return (
        (CHAT_HISTORY, {"user_id": 1, "character": character, "session": session}),
        (USER_EMAIL, {"email": email, "user_id": 1}),
        (CHARACTER, {"name": character}),
    )


@given(st.text(), st.text(), st.text())
def test_hostile_parts_never_reach_another_family(character, session, email):
    for family, parts in user_input_parts(character, session, email):
        key = family.key(**parts)
        assert family_of(key) is family
        assert [f for f in FAMILIES.values() if fnmatchcase(key, f.pattern)] == [family]
        assert key.isascii() and not any(c in key for c in "*?[] \\")


@given(st.text(), st.text())
def test_distinct_history_parts_never_share_a_key(a, b):
    if a != b:
        k1 = CHAT_HISTORY.key(user_id=1, character=a, session="s")
        k2 = CHAT_HISTORY.key(user_id=1, character=b, session="s")
        assert k1 != k2
        assert CHAT_HISTORY.key(user_id=1, character="c", session=a) != CHAT_HISTORY.key(
            user_id=1, character="c", session=b
        )


def test_parts_of_reverses_key():
    key = CHAT_HISTORY.key(user_id=3, character="luna", session="a:b")
    parts = CHAT_HISTORY.parts_of(key)
    assert parts["user_id"] == "3" and parts["character"] == "luna" and parts["session"].startswith("~")
    assert CHAT_HISTORY.parts_of("user:coins:1") is None


def test_each_app_cache_module_names_its_families():
    for family in FAMILIES.values():
        module = sys.modules[family.loader.__module__]
        assert module.__name__.endswith(".cache")
        assert f"``{family.template}``" in module.__doc__


# --- Redis Cluster key forms (the cache on a cluster) ---------------------------------------------

CLUSTER_FORMS = {
    "subscription:user": "subscription:user:{{user_id}}",
    "subscription:stats": "subscription:stats:{{user_id}}",
    "user:email": "user:email:{{user_id}}:{email}",
    "user:coins": "user:coins:{{user_id}}",
    "characters:list": "{characters:list}",
    "character": "character:{{name}}",
    "generation:settings": "{generation:settings}",
    "generation:status": "generation:status:{{user_id}}:{generation_id}",
    "chat:history": "chat:history:{{user_id}}:{character}:{session}",
}


def on_a_cluster(caches: dict, nodes: tuple[str, ...] = ("127.0.0.1:1",)) -> dict:
    """CACHES with the default cache on a cluster (only the key spelling reads it here)."""
    from core.cache.topology import cluster_options

    default = caches["default"]
    return {**caches, "default": {**default, "OPTIONS": cluster_options(default["OPTIONS"], nodes=list(nodes))}}


@pytest.fixture
def cluster_keys(settings):
    settings.CACHES = on_a_cluster(settings.CACHES)


def test_each_family_names_its_cluster_form():
    assert {name: family.cluster_form for name, family in FAMILIES.items()} == CLUSTER_FORMS


def test_single_instance_keys_keep_the_contracts_literal_names():
    assert USER_COINS.key(user_id=7) == "user:coins:7"
    assert CHARACTERS_LIST.key() == "characters:list"


def test_cluster_keys_carry_hash_tags(cluster_keys):
    assert USER_COINS.key(user_id=7) == "user:coins:{7}"
    assert USER_EMAIL.key(email="a@b.c", user_id=7) == "user:email:{7}:a@b.c"
    assert CHAT_HISTORY.key(user_id=7, character="luna", session="s1") == "chat:history:{7}:luna:s1"
    assert CHARACTERS_LIST.key() == "{characters:list}"
    assert CHARACTER.key(name="luna") == "character:{luna}"


def test_a_users_keys_share_one_slot_and_so_do_their_leases(cluster_keys):
    from redis.crc import key_slot

    from core.cache.client import lease_key

    keys = [FAMILIES[name].key(**{**SAMPLE_PARTS[name], "user_id": 123})
            for name in CONTRACT if not FAMILIES[name].shared]
    assert len({key_slot(k.encode()) for k in keys}) == 1, keys
    for key in [*keys, CHARACTERS_LIST.key(), CHARACTER.key(name="luna")]:
        assert key_slot(lease_key(key).encode()) == key_slot(key.encode())


@pytest.mark.parametrize("hostile", ["{1}", "}{", "a{b}c", "{", "x}@y", "{7}@example.com"])
def test_user_input_never_sets_a_hash_tag(cluster_keys, hostile):
    from redis.crc import key_slot

    for family, parts in (
        (USER_EMAIL, {"email": hostile, "user_id": 123}),
        (CHAT_HISTORY, {"user_id": 123, "character": hostile, "session": hostile}),
    ):
        key = family.key(**parts)
        assert key.count("{") == 1 and key.count("}") == 1  # only the tag's own braces
        assert key_slot(key.encode()) == key_slot(b"{123}")
    assert CHARACTER.key(name=hostile).count("{") == 1


@given(st.text(), st.text(), st.text())
def test_hostile_parts_stay_in_their_family_in_cluster_form(character, session, email):
    from django.conf import settings
    from django.test import override_settings

    with override_settings(CACHES=on_a_cluster(settings.CACHES)):
        for family, parts in user_input_parts(character, session, email):
            key = family.key(**parts)
            assert family_of(key) is family
            assert [f for f in FAMILIES.values() if fnmatchcase(key, f.pattern)] == [family]
            if "user_id" in parts:
                assert family.parts_of(key)["user_id"] == "1"


@pytest.mark.parametrize("name", CONTRACT)
def test_cluster_keys_belong_to_their_family_only(cluster_keys, name):
    key = FAMILIES[name].key(**SAMPLE_PARTS[name])
    assert family_of(key) is FAMILIES[name]
    assert [f.name for f in FAMILIES.values() if fnmatchcase(key, f.pattern)] == [name]


def test_a_remembered_key_is_the_key_built_from_its_parts():
    """key() remembers the keys it built; the memo never hands one input another's key."""
    first = CHAT_HISTORY.key(user_id=7, character="luna", session="s1")
    assert CHAT_HISTORY.key(user_id=7, character="luna", session="s1") == first
    assert CHAT_HISTORY.key(user_id=7, character="luna", session="s2") == "chat:history:7:luna:s2"
    assert USER_COINS.key(user_id=1) == "user:coins:1"
    assert USER_COINS.key(user_id=True) == "user:coins:True"  # True == 1, but not the same part
    assert USER_COINS.key(user_id="1") == "user:coins:1"
    with pytest.raises(TypeError):
        USER_COINS.key(user_id=1, extra=2)  # a remembered key does not skip the parts check
    with pytest.raises(TypeError):
        CHAT_HISTORY.key(user_id=7, character="luna")


def test_the_memo_follows_a_switch_to_cluster_keys(settings):
    plain = USER_COINS.key(user_id=5)
    settings.CACHES = on_a_cluster(settings.CACHES, ("127.0.0.1:7000",))
    assert USER_COINS.key(user_id=5) == "user:coins:{5}" != plain


def test_ttl_defaults_are_declared_by_their_family_alone():
    """Settings only carry a TTL the environment overrides; the default is the family's."""
    from django.conf import settings as live

    overridden = sorted(name for name in os.environ if name.startswith("CACHE_TTL_"))
    assert sorted(name for name in dir(live._wrapped) if name.startswith("CACHE_TTL_")) == overridden
