"""The README's key table, generated from the registry (``cache_keys_table``)."""

from __future__ import annotations

from ..registry import FAMILIES, versions

KEYS_START, KEYS_END = "<!-- keys:start -->", "<!-- keys:end -->"


def invalidated_by(family) -> str:
    """The family's receivers and explicit invalidations, "User saved, User deleted" folded to
    "User saved or deleted"."""
    events: dict[str, list[str]] = {}
    for what in family.invalidated_by:
        subject, _, verb = what.rpartition(" ")
        if subject and verb in ("saved", "deleted"):
            events.setdefault(subject, []).append(verb)
        else:
            events.setdefault(what, [])
    return ", ".join(f"{subject} {' or '.join(verbs)}" if verbs else subject for subject, verbs in events.items())


def keys_table_markdown() -> str:
    """The key and TTL table of the README, generated from the registry."""
    lines = [
        "| key in Redis | in Redis Cluster | holds | TTL (default) | setting | invalidated by |",
        "|---|---|---|---|---|---|",
    ]
    for family in FAMILIES.values():
        ttl = f"{family.default_ttl} s"
        if family.ttl_cap:
            # The cap's own docstring says why, so the README follows the code.
            doc = (family.ttl_cap.__doc__ or "").strip().splitlines()[0].rstrip(".")
            ttl += f"; capped: {doc[0].lower()}{doc[1:]}"
        lines.append(
            f"| `{family.template}` | `{family.cluster_form}` | {family.holds} | {ttl} | `{family.ttl_setting}` | {invalidated_by(family)} |"
        )
    for version in versions():
        users = ", ".join(f"`{family.name}`" for family in FAMILIES.values() if family.version is version)
        lines.append(
            f"| `{version.template}` | `{version.cluster_form}` | {version.holds}: a value of {users} counts only while "
            f"this key holds the version it was built under | none | | {invalidated_by(version)} |"
        )
    return "\n".join(lines)


def replace_keys_block(text: str) -> str:
    """``text`` with the block between the keys markers replaced by the generated table."""
    start, end = text.index(KEYS_START) + len(KEYS_START), text.index(KEYS_END)
    return text[:start] + "\n" + keys_table_markdown() + "\n" + text[end:]
