"""Test support for revoked tokens: the three ways a token stops being valid, and a probe that
shows every app process (this test process and the gunicorns a test started, every worker of each)
refuses them."""

from __future__ import annotations

import http.client
import threading
import time

from tests.support.harness import Gunicorn

REFUSE_WITHIN = 2.0  # the revocation bound: every worker on every host refuses a revoked token within it


def _deactivate(user) -> None:
    user.is_active = False
    user.save()


def _change_password(user) -> None:
    from accounts.services import user_change_password
    from tests.support.fixtures import PASSWORD

    user_change_password(user_id=user.id, current_password=PASSWORD, new_password="a-brand-new-pass-42")


def _delete(user) -> None:
    user.delete()


# The three ways a token stops being valid (users made by the make_user fixture).
REVOCATIONS = {"deactivate": _deactivate, "password": _change_password, "delete": _delete}


class RevokedTokens:
    """Users whose bearer tokens a test revokes, and the app processes that must refuse them: this
    test process (its test client) and the gunicorns given, every worker of each (a round sends one
    request per worker at once: a worker busy with one leaves the next to another)."""

    def __init__(self, users: dict, gunicorns: list[Gunicorn], *, path: str = "/api/me") -> None:
        from accounts.apis import tokens_for

        self.users, self.gunicorns, self.path = users, gunicorns, path
        self.headers = {name: {"Authorization": f"Bearer {tokens_for(user)['access']}"} for name, user in users.items()}
        self.revoked_at: dict[str, float] = {}

    def _here(self, name: str) -> list[int]:
        from rest_framework.test import APIClient

        return [APIClient().get(self.path, HTTP_AUTHORIZATION=self.headers[name]["Authorization"]).status_code]

    def _there(self, server: Gunicorn, name: str) -> list[int]:
        workers = server.workers
        results: list = [None] * workers
        # Every connection is open (and taken by a sync worker, which then waits for its request)
        # before any request goes out: a warm answer takes a fraction of a millisecond, so requests
        # sent at once would otherwise all be answered by whichever worker accepted first.
        connected = threading.Barrier(workers)

        def one(i: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            try:
                connection.connect()
                connected.wait(timeout=10)
                time.sleep(0.02)  # each idle worker accepts one of them meanwhile
                connection.request("GET", self.path, headers=self.headers[name])
                response = connection.getresponse()
                response.read()
                results[i] = response.status
            except (OSError, threading.BrokenBarrierError) as exc:
                results[i] = exc
            finally:
                connection.close()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def senders(self, name: str) -> list[tuple[str, object]]:
        return [(f"{name} here", lambda: self._here(name))] + [
            (f"{name} on gunicorn :{server.port}", lambda server=server: self._there(server, name))
            for server in self.gunicorns]

    def warm(self, rounds: int = 8) -> None:
        """Every process, every worker has each user's profile cached (accepted: 200)."""
        for name in self.users:
            for label, send in self.senders(name):
                for _ in range(rounds):
                    assert set(send()) == {200}, label

    def revoke(self, name: str) -> None:
        REVOCATIONS[name](self.users[name])
        self.revoked_at[name] = time.monotonic()

    def refused(self, *, within: float = REFUSE_WITHIN, steady: float = 1.0, timeout: float = 60.0) -> dict[str, float]:
        """Send every revoked token to every process until each has refused it (401) for ``steady``
        seconds on end; a 200 to a request sent more than ``within`` seconds after its revocation
        fails, as does any status but 200 and 401. The clock starts when the request is sent, so a
        slow answer on a loaded machine is not counted against the bound. Returns each probe's time
        to refuse: from the revocation to the first request of its unbroken run of refusals."""
        probes = [(label, self.revoked_at[name], send) for name in self.revoked_at for label, send in self.senders(name)]
        refused_since: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while True:
            for label, revoked_at, send in probes:
                sent = time.monotonic()
                statuses = send()
                assert set(statuses) <= {200, 401}, (label, statuses)
                if 200 in statuses:
                    late = sent - revoked_at
                    assert late < within, f"{label}: a revoked token was accepted {late:.2f} s after its revocation"
                    refused_since.pop(label, None)
                else:
                    refused_since.setdefault(label, sent)
            now = time.monotonic()
            if len(refused_since) == len(probes) and all(now - since >= steady for since in refused_since.values()):
                return {label: round(max(0.0, refused_since[label] - revoked_at), 3) for label, revoked_at, _ in probes}
            assert now < deadline, f"not refused steadily after {timeout} s: {sorted(set(p[0] for p in probes) - set(refused_since))}"
            time.sleep(0.02)
