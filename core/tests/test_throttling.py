"""Rate limits of the auth endpoints: the client address only comes from X-Forwarded-For when
TRUSTED_PROXY_COUNT says a proxy sets it, refresh has its own bucket, and failed logins are also
limited per account: from one client (which locks out only that client) and in total (which only
many clients reach), never touching other accounts; an IPv6 client is its /64. The admin login is
locked by django-axes per username and address."""

import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.test import Client

from accounts.apis import tokens_for
from tests.support.fixtures import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def login(api, email, password, **meta):
    return api.post("/api/auth/token", {"email": email, "password": password}, format="json", **meta)


@pytest.fixture
def trusted_proxies(settings):
    """trusted_proxies(n): the app as configured with TRUSTED_PROXY_COUNT=n."""

    def configure(count: int) -> None:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": count}  # DRF reloads on change

    return configure


def test_rotating_x_forwarded_for_does_not_escape_the_login_limit(api, make_user, throttle_rates):
    make_user("frank@example.com")
    throttle_rates(auth="10/min", login_account="1000/min")
    statuses = [
        login(api, "frank@example.com", f"wrong-{i}", HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code
        for i in range(30)
    ]
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429] * 20


def test_forged_forwarded_for_does_not_escape_registration_limit(api, plans, throttle_rates):
    throttle_rates(register="2/min")
    statuses = [
        api.post("/api/auth/register", {"email": f"u{i}@example.com", "password": PASSWORD}, format="json",
                 HTTP_X_FORWARDED_FOR=f"198.51.100.{i}").status_code
        for i in range(4)
    ]
    assert statuses == [201, 201, 429, 429]


def test_behind_one_trusted_proxy_each_client_address_has_its_own_bucket(api, make_user, throttle_rates,
                                                                         trusted_proxies):
    make_user("frank@example.com")
    throttle_rates(auth="5/min", login_account="1000/min")
    trusted_proxies(1)
    # The proxy connects from 127.0.0.1 and appends the address it saw; whatever the client put in
    # front of it is not trusted.
    def attempt(client_address, forged="203.0.113.99"):
        return login(api, "frank@example.com", "wrong-pass-1", REMOTE_ADDR="127.0.0.1",
                     HTTP_X_FORWARDED_FOR=f"{forged}, {client_address}").status_code

    assert [attempt("192.0.2.1", forged=f"10.0.0.{i}") for i in range(7)] == [401] * 5 + [429] * 2
    assert attempt("192.0.2.2") == 401  # another client behind the same proxy
    assert login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="127.0.0.1",
                 HTTP_X_FORWARDED_FOR="192.0.2.3").status_code == 200


def test_failed_logins_of_an_account_from_one_client_lock_out_that_client_only(api, make_user, throttle_rates):
    make_user("frank@example.com")
    make_user("grace@example.com")
    throttle_rates(auth="1000/min", login_account="5/min")
    attacker = "198.51.100.7"
    statuses = [login(api, "frank@example.com", f"wrong-{i}", REMOTE_ADDR=attacker).status_code for i in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    # That client waits for this account, the right password and another spelling of it included...
    locked = login(api, " FRANK@Example.com", PASSWORD, REMOTE_ADDR=attacker)
    assert locked.status_code == 429 and "Retry-After" in locked.headers
    # ... but it cannot lock the owner out: from the owner's own address the right password works,
    assert login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="192.0.2.50").status_code == 200
    # and another account, from the very address the attack used, is not affected.
    assert login(api, "grace@example.com", PASSWORD, REMOTE_ADDR=attacker).status_code == 200
    assert login(api, "grace@example.com", "wrong-again-1", REMOTE_ADDR=attacker).status_code == 401


def test_failed_logins_of_an_account_are_limited_in_total_from_any_address(api, make_user, throttle_rates):
    make_user("frank@example.com")
    make_user("grace@example.com")
    throttle_rates(auth="1000/min", login_account="5/min", login_account_total="8/min")
    # Rotating addresses does not buy more guesses than the total...
    statuses = [login(api, "frank@example.com", f"wrong-{i}", REMOTE_ADDR=f"198.51.100.{i}").status_code
                for i in range(10)]
    assert statuses == [401] * 8 + [429] * 2
    # ... which only many clients reach: then the account waits, the owner too; other accounts do not.
    assert login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="192.0.2.50").status_code == 429
    assert login(api, "grace@example.com", PASSWORD, REMOTE_ADDR="198.51.100.1").status_code == 200


def test_an_ipv6_client_is_counted_as_its_64_prefix(api, make_user, throttle_rates):
    make_user("frank@example.com")
    throttle_rates(auth="3/min", login_account="1000/min")
    # Every address of one /64 is the same client: walking through it buys no new bucket.
    statuses = [login(api, "frank@example.com", "wrong-pass-1", REMOTE_ADDR=f"2001:db8:0:1::{i:x}").status_code
                for i in range(1, 6)]
    assert statuses == [401] * 3 + [429] * 2
    assert login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="2001:db8:0:2::1").status_code == 200  # another /64
    throttle_rates(auth="1000/min", login_account="2/min")
    statuses = [login(api, "frank@example.com", "wrong-pass-1", REMOTE_ADDR=f"2001:db8:0:3:{i:x}::1").status_code
                for i in range(1, 5)]
    assert statuses == [401] * 2 + [429] * 2
    assert login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="2001:db8:0:4::1").status_code == 200


def test_client_ident():
    from django.test import RequestFactory

    from core.http.throttling import client_ident

    def ident(address):
        return client_ident(RequestFactory().get("/", REMOTE_ADDR=address))

    assert ident("192.0.2.1") == "192.0.2.1"
    assert ident("2001:db8:0:1:aaaa:bbbb:cccc:dddd") == ident("2001:db8:0:1::1") == "2001:db8:0:1::/64"
    assert ident("::ffff:192.0.2.1") == "192.0.2.1"


def test_a_login_from_a_server_that_gives_no_client_address_is_answered_not_a_500(api, make_user):
    # Schemathesis found it: a WSGI server over a Unix socket may send no REMOTE_ADDR at all.
    make_user("heidi@example.com")
    assert login(api, "heidi@example.com", "wrong-password", REMOTE_ADDR=None).status_code == 401
    assert login(api, "heidi@example.com", PASSWORD, REMOTE_ADDR=None).status_code == 200


def test_successful_logins_do_not_count_against_the_account(api, make_user, throttle_rates):
    make_user("frank@example.com")
    throttle_rates(auth="1000/min", login_account="3/min")
    assert [login(api, "frank@example.com", PASSWORD).status_code for _ in range(6)] == [200] * 6


def test_refresh_has_a_bucket_of_its_own(api, make_user, throttle_rates):
    user = make_user("frank@example.com")
    refresh = tokens_for(user)["refresh"]
    throttle_rates(auth="3/min", refresh="2/min")
    assert [login(api, "frank@example.com", "wrong-pass-1").status_code for _ in range(4)] == [401] * 3 + [429]
    refreshed = [api.post("/api/auth/token/refresh", {"refresh": refresh}, format="json").status_code
                 for _ in range(3)]
    assert refreshed == [200, 200, 429]


def test_trusted_proxy_count_setting_drives_drf_and_defaults_to_none_trusted():
    assert django_settings.REST_FRAMEWORK["NUM_PROXIES"] == 0
    code = "import config.settings.base as s; print(s.REST_FRAMEWORK['NUM_PROXIES'])"
    result = subprocess.run([sys.executable, "-c", code], cwd=django_settings.BASE_DIR, capture_output=True,
                            text=True, check=True, env={**os.environ, "TRUSTED_PROXY_COUNT": "1"})
    assert result.stdout.strip() == "1"


ADMIN_LOGIN = "/admin/login/?next=/admin/"


@pytest.fixture
def admin_user(make_user):
    from accounts.models import User

    user = make_user("root@example.com")
    User.objects.filter(pk=user.pk).update(is_staff=True, is_superuser=True)
    return user


def admin_login(client, password, username="root@example.com", **meta):
    return client.post(ADMIN_LOGIN, {"username": username, "password": password}, **meta)


def test_admin_login_is_locked_after_repeated_failures_even_with_the_right_password(client, admin_user):
    statuses = [admin_login(client, f"wrong-{i}").status_code for i in range(30)]
    assert statuses[0] == 200  # the form again, with an error
    assert statuses[-1] == 429
    right = admin_login(client, PASSWORD)
    assert right.status_code == 429
    assert admin_login(client, PASSWORD, username=" ROOT@example.com").status_code == 429  # same account
    assert "_auth_user_id" not in client.session
    # Locked per username and address: the same admin from another address gets in.
    other = Client(REMOTE_ADDR="192.0.2.9")
    assert admin_login(other, PASSWORD).status_code == 302
    assert other.get("/admin/").status_code == 200


def test_admin_lockout_counts_the_address_nginx_forwarded(client, admin_user, trusted_proxies):
    trusted_proxies(1)
    for i in range(6):
        admin_login(client, f"wrong-{i}", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}, 192.0.2.1")
    assert admin_login(client, PASSWORD, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="192.0.2.1").status_code == 429
    assert admin_login(Client(), PASSWORD, REMOTE_ADDR="127.0.0.1",
                       HTTP_X_FORWARDED_FOR="192.0.2.2").status_code == 302


def test_api_logins_are_left_to_the_throttles(api, admin_user):
    from axes.models import AccessAttempt

    for i in range(8):
        assert login(api, "root@example.com", f"wrong-{i}").status_code == 401
    assert login(api, "root@example.com", PASSWORD).status_code == 200
    assert not AccessAttempt.objects.exists()


def test_a_stranger_reaching_the_total_cannot_lock_the_owner_out_of_their_known_clients(api, make_user,
                                                                                        throttle_rates):
    make_user("frank@example.com")
    throttle_rates(auth="1000/min", login_account="5/min", login_account_total="8/min")
    # The owner logged in before from home (an IPv4 address) and from a phone (an IPv6 /64).
    assert login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="192.0.2.50").status_code == 200
    assert login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="2001:db8:1:2::1").status_code == 200
    statuses = [login(api, "frank@example.com", f"wrong-{i}", REMOTE_ADDR=f"2001:db8:9:{i:x}::1").status_code
                for i in range(12)]
    assert statuses == [401] * 8 + [429] * 4  # separate /64s: the total holds them all
    # Strangers (and the owner on a network never used) wait; the owner's known clients do not.
    assert login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="198.51.100.77").status_code == 429
    assert login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="192.0.2.50").status_code == 200
    assert login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="2001:db8:1:2:ffff::9").status_code == 200


@pytest.mark.slow
def test_concurrent_failures_all_count(make_user, throttle_rates):
    from rest_framework.test import APIClient

    from tests.support.harness import run_concurrently

    make_user("frank@example.com")
    throttle_rates(auth="10000/min", login_account="10000/min", login_account_total="100/hour")
    device = login(APIClient(), "frank@example.com", PASSWORD, REMOTE_ADDR="192.0.2.9").json()["device"]

    def guess(thread: int) -> list[int]:
        client = APIClient()
        return [login(client, "frank@example.com", f"wrong-{thread}-{i}",
                      REMOTE_ADDR=f"198.51.{thread}.{i}").status_code for i in range(30)]

    results = run_concurrently(4, guess)
    assert not [r for r in results if isinstance(r, Exception)], results
    statuses = [status for result in results for status in result]
    # Exactly the total's worth of passwords were checked, however the threads interleaved.
    assert statuses.count(401) == 100 and statuses.count(429) == 20
    assert login(APIClient(), "frank@example.com", PASSWORD, REMOTE_ADDR="192.0.2.50").status_code == 429
    # The owner's own device still gets in from that clean address, as from the one it knew.
    assert login(APIClient(), "frank@example.com", PASSWORD, REMOTE_ADDR="192.0.2.50",
                 HTTP_LOGIN_DEVICE=device).status_code == 200
    assert login(APIClient(), "frank@example.com", PASSWORD, REMOTE_ADDR="192.0.2.9").status_code == 200


def test_rotating_addresses_in_a_64_does_not_escape_the_admin_lockout(admin_user, trusted_proxies):
    trusted_proxies(1)

    def attempt(address, password):
        return admin_login(Client(), password, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=address).status_code

    assert [attempt(f"2001:db8:5:6::{i:x}", f"wrong-{i}") for i in range(1, 13)][-1] == 429
    assert attempt("2001:db8:5:6::ff", PASSWORD) == 429  # the same /64
    assert attempt("2001:db8:5:7::1", PASSWORD) == 302  # another client


def test_the_admin_shares_the_account_total_without_locking_out_the_owner(admin_user, throttle_rates):
    throttle_rates(login_account_total="8/hour")
    assert admin_login(Client(REMOTE_ADDR="192.0.2.50"), PASSWORD).status_code == 302  # the owner's own address
    for i in range(8):  # one failure each: below the per-address lockout
        assert admin_login(Client(REMOTE_ADDR=f"198.51.100.{i}"), f"wrong-{i}").status_code == 200
    assert admin_login(Client(REMOTE_ADDR="198.51.100.99"), PASSWORD).status_code == 429
    assert admin_login(Client(REMOTE_ADDR="192.0.2.50"), PASSWORD).status_code == 302


def test_the_owners_device_logs_in_from_a_never_used_address_while_strangers_wait(api, make_user, throttle_rates):
    make_user("frank@example.com")
    make_user("grace@example.com")
    throttle_rates(auth="1000/min", login_account="5/min", login_account_total="8/min")
    # The owner's app logged in once and keeps the device token it was given.
    device = login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="192.0.2.50").json()["device"]
    other_device = login(api, "grace@example.com", PASSWORD, REMOTE_ADDR="192.0.2.51").json()["device"]
    statuses = [login(api, "frank@example.com", f"wrong-{i}", REMOTE_ADDR=f"198.51.100.{i}").status_code
                for i in range(10)]
    assert statuses == [401] * 8 + [429] * 2
    # On a network never used, the right password with that token gets in; without it, or with a
    # token of another account or a forged one, it waits like a stranger.
    assert login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="203.0.113.9").status_code == 429
    for token in (other_device, device[:-2] + "xx", "junk", "a" * 5000):
        assert login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="203.0.113.9",
                     HTTP_LOGIN_DEVICE=token).status_code == 429
    response = login(api, "frank@example.com", PASSWORD, REMOTE_ADDR="203.0.113.10", HTTP_LOGIN_DEVICE=device)
    assert response.status_code == 200 and response.json()["device"]
    # A stolen token buys one client's guesses, however many addresses it comes from.
    statuses = [login(api, "frank@example.com", f"guess-{i}", REMOTE_ADDR=f"203.0.113.{100 + i}",
                      HTTP_LOGIN_DEVICE=device).status_code for i in range(7)]
    assert statuses == [401] * 5 + [429] * 2
