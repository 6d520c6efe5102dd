"""Credentials never reach a log line, a manifest or an error message.

botocore's own messages do not contain secrets, but endpoint URLs can carry `user:password@`, and
whatever a caller passes as lineage ends up in a manifest that every consumer reads. So every text
we emit goes through `redact`, which removes the credential values this process knows about.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

REDACTED = "[redacted]"
_ENV_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
# Real AWS key ids have 20 characters and secret keys 40. Shorter values are placeholders ("demo",
# "testing"), and removing them from every text would mangle ordinary words.
MIN_SECRET = 8
_registered: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember a credential passed explicitly (not through the environment) so it is redacted too."""
    if value and len(value) >= MIN_SECRET:
        with _lock:
            _registered.add(value)


def client_secrets(client: Any) -> list[str]:
    """The credentials a boto3 client signs with (an Airflow connection's, for example)."""
    try:
        creds = client._request_signer._credentials  # private, but the only way to learn them
        frozen = creds.get_frozen_credentials() if creds is not None else None
    except Exception:
        return []
    if frozen is None:
        return []
    return [v for v in (frozen.access_key, frozen.secret_key, frozen.token) if v]


def known_secrets(client: Any = None) -> list[str]:
    values = {os.environ.get(name) for name in _ENV_SECRETS} | set(_registered)
    if client is not None:
        values |= set(client_secrets(client))
    # Longest first, so a secret that contains another is removed whole.
    return sorted((v for v in values if v and len(v) >= MIN_SECRET), key=len, reverse=True)


def redact(text: str, client: Any = None) -> str:
    text = _USERINFO.sub(lambda m: m.group("scheme") + REDACTED + "@", text)
    for secret in known_secrets(client):
        text = text.replace(secret, REDACTED)
    return text


def redact_obj(value: Any, client: Any = None) -> Any:
    """`redact` applied to every string inside a JSON-like value (keys included)."""
    if isinstance(value, str):
        return redact(value, client)
    if isinstance(value, dict):
        return {redact_obj(k, client): redact_obj(v, client) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v, client) for v in value]
    return value
