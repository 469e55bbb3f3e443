"""Password hashing and API tokens, with the standard library only.

Passwords (API.md improvement 13: the client sends the plain password; use TLS for a remote
master) are stored as ``scrypt$<n>$<r>$<p>$<salt>$<hash>`` with a random 16-byte salt per
password and base64 fields; the parameters travel with the hash, so they can be raised later
without invalidating stored ones. The empty password is hashed like any other.

Every verification costs one scrypt derivation with the current parameters, whatever is
stored, so that a login's time tells nothing about the user (issue 13: users with an empty
password answered in 15 ms, others in 200 ms):

- a stored hash: one derivation with its own parameters;
- NULL, the empty-password marker of databases made before this rule (the initial
  migration's ``admin`` and ``determined``): one derivation of the given password with
  ``DUMMY_HASH``'s salt, then a constant-time comparison with the empty string;
- a malformed stored hash, or no user at all (``verify_nothing``): one derivation against
  ``DUMMY_HASH``, which matches no password.

``needs_rehash(stored)`` says when a login that succeeded should store a fresh hash: for the
NULL marker, and for hashes made with other parameters than today's (so that every user's
login costs the same again).

A token is 32 random bytes (``secrets.token_urlsafe``); the database keeps only its sha256, so
reading the tokens table grants nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = [
    "DUMMY_HASH",
    "hash_password",
    "hash_token",
    "needs_rehash",
    "new_token",
    "verify_nothing",
    "verify_password",
]

SCRYPT_N = 2**14  # ~16 MiB and a few tens of milliseconds per hash: slow for guessing
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32
SALT_BYTES = 16
_PREFIX = "scrypt"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _format(n: int, r: int, p: int, salt: bytes, digest: bytes) -> str:
    return f"{_PREFIX}${n}${r}${p}${_b64(salt)}${_b64(digest)}"


_DUMMY_SALT = hashlib.sha256(b"detlite: dummy salt").digest()[:SALT_BYTES]
# Fixed bytes, not the output of a derivation: no password derives to them.
_DUMMY_DIGEST = hashlib.sha256(b"detlite: no password derives to this").digest()[:SCRYPT_DKLEN]
#: A well-formed hash with today's parameters that matches no password, built without
#: deriving anything: verifying against it costs exactly what verifying a real hash costs.
DUMMY_HASH = _format(SCRYPT_N, SCRYPT_R, SCRYPT_P, _DUMMY_SALT, _DUMMY_DIGEST)


def _encode(password: str) -> bytes:
    # Request validation already refuses strings that are not valid Unicode (lone surrogates).
    return password.encode("utf-8")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    """The one place a derivation happens (tests count the calls)."""
    return hashlib.scrypt(
        _encode(password), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * n * r + 2**20
    )


def hash_password(password: str) -> str:
    """The stored form of ``password`` (the empty one too): a salted scrypt hash."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    return _format(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt, digest)


def _parse(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    """``(n, r, p, salt, digest)`` of a stored hash; None if it is not one of ours."""
    try:
        prefix, n, r, p, salt, expected = stored.split("$")
        if prefix != _PREFIX:
            return None
        return (
            int(n),
            int(r),
            int(p),
            base64.b64decode(salt, validate=True),
            base64.b64decode(expected, validate=True),
        )
    except ValueError:
        return None


def verify_password(password: str, stored: str | None) -> bool:
    """Whether ``password`` matches the stored hash; always one derivation (module docstring)."""
    if stored is None:  # the legacy empty-password marker
        verify_nothing(password)
        return hmac.compare_digest(_encode(password), b"")
    parsed = _parse(stored)
    if parsed is not None:
        n, r, p, salt, expected = parsed
        try:
            digest = _scrypt(password, salt, n, r, p, len(expected))
        except ValueError:  # parameters scrypt refuses (it checks them before any work)
            pass
        else:
            return hmac.compare_digest(digest, expected)
    verify_nothing(password)  # a malformed hash matches nothing, after the same work
    return False


def verify_nothing(password: str) -> None:
    """Spend the work of one verification, so unknown usernames answer as slowly as known ones."""
    _scrypt(password, _DUMMY_SALT, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)


def needs_rehash(stored: str | None) -> bool:
    """Whether a matching ``stored`` should be replaced by a fresh ``hash_password``: the
    NULL marker, or parameters other than today's."""
    if stored is None:
        return True
    parsed = _parse(stored)
    return parsed is None or parsed[:3] != (SCRYPT_N, SCRYPT_R, SCRYPT_P)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The sha256 (hex) under which a token is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
