"""Connection secrets.

A connection names an environment variable or holds a value encrypted with Fernet under
the deployment's key (``CONNECTION_SECRET_KEYS``: the first encrypts, all decrypt, so a
key can be rotated; unset, a key is derived from ``SECRET_KEY``). ``reveal`` is called by
connectors only, at call time; nothing else turns a connection into its credential, and
errors name where the secret should be, never what it is.
"""

import base64
import hashlib
import os
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class SecretUnavailable(Exception):
    """The connection's secret cannot be had; the message is safe to show and record."""


@lru_cache(maxsize=4)
def _cipher(keys: tuple[str, ...], secret_key: str) -> MultiFernet:
    if not keys:
        derived = hashlib.sha256(b"controlplane.tools.connection-secrets:" + secret_key.encode()).digest()
        keys = (base64.urlsafe_b64encode(derived).decode(),)
    return MultiFernet([Fernet(key) for key in keys])


def cipher() -> MultiFernet:
    return _cipher(tuple(settings.CONNECTION_SECRET_KEYS), settings.SECRET_KEY)


def encrypt(value: str) -> str:
    return cipher().encrypt(value.encode()).decode()


def reveal(connection) -> str:
    """The credential of ``connection`` ('' when it has none). Connectors only."""
    if connection.secret_env_var:
        value = os.environ.get(connection.secret_env_var, "")
        if not value:
            raise SecretUnavailable(f"The environment variable {connection.secret_env_var} is not set.")
        return value
    if connection.secret_ciphertext:
        try:
            return cipher().decrypt(connection.secret_ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretUnavailable(
                "The stored secret cannot be decrypted with this deployment's key: set it again."
            ) from None
    return ""
