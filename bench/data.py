"""The benchmark's own database: dropped, recreated, migrated and bulk-loaded with COPY.

Users, one subscription each (a bench plan with limits no run can reach), a short coin ledger,
characters, one chat session per user with ~30 messages (300,000 at full scale), then one access
token per user for the load tool (no logins during the run).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

ADMIN_DSN = os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
BALANCE = 10_000_000


@dataclass(frozen=True)
class Scale:
    users: int
    characters: int
    messages_per_session: int  # average; varies 10..50 at full scale
    ledger_per_user: int


FULL = Scale(users=10_000, characters=50, messages_per_session=30, ledger_per_user=5)
QUICK = Scale(users=300, characters=12, messages_per_session=10, ledger_per_user=3)


def database_url(name: str) -> str:
    base = ADMIN_DSN.rsplit("/", 1)[0]
    return f"{base}/{name}"


def recreate_database(name: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def clone_database(template: str, name: str) -> None:
    """A file-level copy of a loaded database: seconds, where loading again would take half a minute."""
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def character_names(scale: Scale) -> list[str]:
    return [f"char-{i:02d}" for i in range(scale.characters)]


def user_email(i: int) -> str:
    return f"user{i}@bench.invalid"


def user_character(i: int, scale: Scale) -> str:
    """The character of bench user i's chat session (named ``main``)."""
    return character_names(scale)[i % scale.characters]


def load(dsn: str, scale: Scale) -> dict:
    """Bulk-load everything; returns row counts and the seconds it took."""
    started = time.perf_counter()
    now = datetime.now(UTC)
    past = now - timedelta(days=3)  # history from earlier days: today's limits start empty
    chars = character_names(scale)
    counts = {}
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(
            "INSERT INTO subscriptions_plan (code, name, price, coins_per_period, daily_generation_limit,"
            " daily_message_limit, includes_premium, is_active, sort_order)"
            " VALUES ('bench', 'Bench', 0, 0, 100000000, 100000000, true, false, 99) RETURNING id"
        )
        plan_id = cur.fetchone()[0]
        with cur.copy("COPY characters_character (id, name, display_name, description, greeting, persona_prompt,"
                      " avatar_url, is_premium, is_active, sort_order, updated_at) FROM STDIN") as copy:
            for i, name in enumerate(chars, 1):
                copy.write_row((i, name, f"Character {i}", f"Character {i} has a long description. " * 6,
                                f"Hello, I am character {i}.", f"You are character {i}. You are kind. You ask questions.",
                                f"https://avatars.invalid/{name}.png", i % 5 == 0, True, i, past))
        counts["characters"] = len(chars)
        with cur.copy("COPY accounts_user (id, password, is_superuser, email, display_name, is_active, is_staff,"
                      " date_joined, coin_balance, session_version) FROM STDIN") as copy:
            for i in range(1, scale.users + 1):
                # session_version 0: the version common.mint_tokens puts in every token
                copy.write_row((i, "!", False, user_email(i), f"User {i}", True, False, past, BALANCE, 0))
        counts["users"] = scale.users
        with cur.copy("COPY subscriptions_subscription (id, user_id, plan_id, status, current_period_start,"
                      " current_period_end, auto_renew, payment_failed, updated_at) FROM STDIN") as copy:
            for i in range(1, scale.users + 1):
                copy.write_row((i, i, plan_id, "active", past, now + timedelta(days=365), True, False, past))
        counts["subscriptions"] = scale.users
        ledger_id = 0
        with cur.copy("COPY accounts_coinledgerentry (id, user_id, amount, reason, reference, balance_after,"
                      " created_at) FROM STDIN") as copy:
            for i in range(1, scale.users + 1):
                spends = scale.ledger_per_user - 1
                balance = BALANCE + spends
                ledger_id += 1
                copy.write_row((ledger_id, i, balance, "grant", "bench", balance, past))
                for k in range(spends):
                    balance -= 1
                    ledger_id += 1
                    copy.write_row((ledger_id, i, -1, "spend", f"generation:old-{k}", balance, past))
        counts["ledger"] = ledger_id
        name_to_id = {name: i for i, name in enumerate(chars, 1)}
        message_id = 0
        lengths = {}
        with cur.copy("COPY chat_chatmessage (id, session_id, user_id, seq, role, content, created_at)"
                      " FROM STDIN") as copy:
            for i in range(1, scale.users + 1):
                # 10..50 messages (30 on average at full scale), always an even number.
                n = max(2, (scale.messages_per_session - 20 + (i * 7919) % 41) // 2 * 2)
                lengths[i] = n
                for seq in range(1, n + 1):
                    message_id += 1
                    role = "user" if seq % 2 else "assistant"
                    text = (f"Message {seq} in session of user {i}: tell me about the sea and the stars"
                            if role == "user" else f"Reply {seq}: the sea is deep and the stars are far, my friend.")
                    copy.write_row((message_id, i, i, seq, role, text, past + timedelta(seconds=seq)))
        counts["messages"] = message_id
        with cur.copy("COPY chat_chatsession (id, user_id, character_id, session_id, last_seq, created_at,"
                      " updated_at) FROM STDIN") as copy:
            for i in range(1, scale.users + 1):
                copy.write_row((i, i, name_to_id[user_character(i, scale)], "main", lengths[i], past, past))
        for table in ("characters_character", "accounts_user", "subscriptions_subscription",
                      "accounts_coinledgerentry", "chat_chatsession", "chat_chatmessage"):
            cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.commit()
        cur.execute("ANALYZE")
    counts["seconds"] = round(time.perf_counter() - started, 1)
    return counts

