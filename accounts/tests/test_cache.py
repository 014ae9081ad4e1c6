"""The accounts' bulk loaders (warm-up) give every key exactly what its loader gives it."""

import pytest

from accounts.cache import USER_COINS, USER_EMAIL
from tests.support.harness import loaded_both_ways

pytestmark = pytest.mark.django_db(transaction=True)


def test_user_email_bulk_is_the_loader(make_user):
    from accounts.models import User

    alice = make_user("alice@example.com", display_name="Alice")
    bob = make_user("bob@example.com")
    User.objects.filter(pk=bob.pk).update(is_active=False, is_staff=True)
    parts = [
        {"email": "bob@example.com", "user_id": bob.id},
        {"email": "nobody@example.com", "user_id": 999_999},  # None, and None is what gets cached
        {"email": " Alice@Example.COM ", "user_id": alice.id},  # the loader normalizes the address
        {"email": "alice@example.com", "user_id": alice.id},
    ]
    bulk, single = loaded_both_ways(USER_EMAIL, parts)
    assert bulk == single
    assert set(bulk) == {0, 1, 2, 3}
    assert bulk[1] == b"null"
    assert b'"is_active":false' in bulk[0] and b'"display_name":"Alice"' in bulk[2]


def test_user_coins_bulk_is_the_loader(make_user):
    rich, broke = make_user(coins=40), make_user(coins=0)
    parts = [{"user_id": broke.id}, {"user_id": 999_999}, {"user_id": rich.id}, {"user_id": rich.id}]
    bulk, single = loaded_both_ways(USER_COINS, parts)
    assert bulk == single
    assert bulk == {0: b'{"balance":0}', 1: b'{"balance":0}', 2: b'{"balance":40}', 3: b'{"balance":40}'}
