"""Random secrets with a recognisable prefix, and the hash they are stored as."""

from __future__ import annotations

import hashlib
import secrets

INGEST_KEY_PREFIX = "clik_"
API_TOKEN_PREFIX = "clat_"  # noqa: S105 - a prefix, not a secret
GATEWAY_KEY_PREFIX = "clgk_"
DISPLAY_PREFIX_LENGTH = 12


def new_secret(kind_prefix: str) -> str:
    """A fresh secret: the kind prefix plus 256 random bits, URL-safe."""
    return kind_prefix + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_prefix(secret: str) -> str:
    return secret[:DISPLAY_PREFIX_LENGTH]
