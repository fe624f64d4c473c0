"""Console passwords: scrypt hashes in one self-describing string, and the CONSOLE_USERS list. Pure.

The format ``scrypt$N$r$p$<salt>$<hash>`` (URL-safe base64, no padding) carries its own cost
parameters, so a hash made today still checks after the defaults are raised, and it contains no
``:`` or ``,``, the separators of CONSOLE_USERS.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

SCHEME = "scrypt"
COST_N = 2**14
"""16 MiB and some 50 ms per check: slow for a guesser, quick enough for a person signing in."""
BLOCK_R = 8
PARALLEL_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MAX_COST_N = 2**20
USER_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


class PasswordFormatError(ValueError):
    """A configured hash or user entry that cannot be used; the message names the entry."""


@dataclass(frozen=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def encoded(self) -> str:
        return "$".join([SCHEME, str(self.n), str(self.r), str(self.p), _b64(self.salt), _b64(self.digest)])


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _derive(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES, maxmem=132 * n * r * p + 1_048_576
    )


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A new hash of ``password`` with a random salt (or ``salt``, for tests)."""
    if not password:
        raise PasswordFormatError("the password is empty")
    used = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    return PasswordHash(
        COST_N, BLOCK_R, PARALLEL_P, used, _derive(password, used, COST_N, BLOCK_R, PARALLEL_P)
    ).encoded()


def parse_hash(encoded: str) -> PasswordHash:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise PasswordFormatError("not scrypt$N$r$p$salt$hash (make one with ticket-tools console-user)")
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except ValueError:
        raise PasswordFormatError("the cost parameters, salt or hash cannot be read") from None
    if not (2 <= n <= MAX_COST_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        raise PasswordFormatError(f"cost parameters out of range (N a power of 2 up to {MAX_COST_N})")
    if len(salt) < 8 or len(digest) != KEY_BYTES:
        raise PasswordFormatError("the salt or the hash has the wrong length")
    return PasswordHash(n, r, p, salt, digest)


def check_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches; compared in constant time."""
    known = parse_hash(encoded)
    candidate = _derive(password, known.salt, known.n, known.r, known.p)
    return hmac.compare_digest(candidate, known.digest)


DUMMY_HASH = hash_password("no such user", salt=b"console-dummy-salt")
"""Checked for unknown users, so a wrong name costs the same time as a wrong password."""


def check_user(users: dict[str, str], name: str, password: str) -> bool:
    """Whether ``name`` is a configured user and ``password`` is theirs."""
    encoded = users.get(name)
    matched = check_password(password, encoded if encoded is not None else DUMMY_HASH)
    return matched and encoded is not None


def parse_users(text: str) -> dict[str, str]:
    """``name:hash,name:hash`` (CONSOLE_USERS) to name → hash, each hash checked; errors name the entry."""
    users: dict[str, str] = {}
    for index, entry in enumerate(part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, colon, encoded = entry.partition(":")
        where = f"entry {index + 1}"
        if not colon or not encoded:
            raise PasswordFormatError(f"{where}: expected name:hash")
        if not USER_NAME.match(name):
            raise PasswordFormatError(f"{where}: user name must be 1-64 of letters, digits, . _ @ -")
        if name in users:
            raise PasswordFormatError(f"{where}: user {name!r} is listed twice")
        try:
            parse_hash(encoded)
        except PasswordFormatError as exc:
            raise PasswordFormatError(f"{where} ({name}): {exc}") from None
        users[name] = encoded
    return users
