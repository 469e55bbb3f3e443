"""Password hashing and API tokens, with the standard library only.

Passwords (API.md improvement 13: the client sends the plain password; use TLS for a remote
master) are stored as ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` with a random 16-byte salt per
password and base64 fields; the parameters travel with the hash, so they can be raised later
without invalidating stored ones. The empty password is stored as NULL, as the reference's
default users were; it matches only the empty string. Comparisons are constant-time.

A token is 32 random bytes (``secrets.token_urlsafe``); the database keeps only its sha256, so
reading the tokens table grants nothing.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

__all__ = ["hash_password", "hash_token", "new_token", "verify_nothing", "verify_password"]

SCRYPT_N = 2**14  # ~16 MiB and a few tens of milliseconds per hash: slow for guessing
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32
SALT_BYTES = 16
_PREFIX = "scrypt"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _encode(password: str) -> bytes:
    # Request validation already refuses strings that are not valid Unicode (lone surrogates).
    return password.encode("utf-8")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        _encode(password), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * n * r + 2**20
    )


def hash_password(password: str) -> str | None:
    """The stored form of ``password``: a salted scrypt hash, or None for the empty password."""
    if password == "":
        return None
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    return f"{_PREFIX}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches the stored hash (constant-time in the hash comparison)."""
    if stored is None:
        return hmac.compare_digest(_encode(password), b"")
    try:
        prefix, n, r, p, salt, expected = stored.split("$")
        if prefix != _PREFIX:
            return False
        salt_raw = base64.b64decode(salt, validate=True)
        expected_raw = base64.b64decode(expected, validate=True)
        digest = _scrypt(password, salt_raw, int(n), int(r), int(p), len(expected_raw))
    except ValueError:  # a malformed stored hash matches nothing
        return False
    return hmac.compare_digest(digest, expected_raw)


@functools.cache
def _dummy_hash() -> str | None:
    return hash_password("detlite: no such user")


def verify_nothing(password: str) -> None:
    """Spend the time of one verification, so unknown usernames answer as slowly as known ones."""
    verify_password(password, _dummy_hash())


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The sha256 (hex) under which a token is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
