"""Logins for the page and the API: `user:password` pairs from the command line (`--auth`), the environment
(SEMANTICDRAW_AUTH) or a file (`--auth-file`), checked at start.

    --auth alice:secret,bob:other         several pairs comma-separated (visible in `ps`: prefer the two below)
    SEMANTICDRAW_AUTH=alice:secret        the same form, from the environment (a Space's secret)
    --auth-file logins.txt                one user:password a line; blank lines and lines starting with # are skipped

All the pairs given are accepted. The user ends at the first colon (a password may hold colons; in the comma form it
cannot hold commas). A malformed pair (no colon, an empty user or password, a user given twice) or a missing file
stops the start with one line naming where it is (never the password): AuthError, a SystemExit.
"""
from __future__ import annotations

import os
from pathlib import Path

AUTH_ENV = "SEMANTICDRAW_AUTH"
MAX_AUTH_FILE_BYTES = 1 << 20


class AuthError(SystemExit):
    """A malformed login setting: its message is the one line printed at start."""


def parse_pair(text: str, where: str) -> tuple[str, str]:
    """'user:password' -> (user, password), or AuthError naming `where` (not the password)."""
    text = text.strip()
    if ":" not in text:
        raise AuthError(f"{where}: expected user:password, got a value without a colon.")
    user, _, password = text.partition(":")
    user = user.strip()
    if not user:
        raise AuthError(f"{where}: the user name before the colon is empty (expected user:password).")
    if not password:
        raise AuthError(f"{where}: the password of user {user!r} is empty (expected user:password).")
    return user, password


def parse_auth(value: str, where: str) -> list[tuple[str, str]]:
    """The pairs of a comma-separated 'user:password,user:password' value."""
    parts = value.split(",")
    if not value.strip():
        raise AuthError(f"{where} is empty; give user:password (several comma-separated).")
    return [parse_pair(part, f"{where}, pair {i}" if len(parts) > 1 else where)
            for i, part in enumerate(parts, start=1)]


def read_auth_file(path: str) -> list[tuple[str, str]]:
    """The pairs of an auth file: one user:password a line, # comments and blank lines skipped."""
    where = f"--auth-file {path}"
    file = Path(path)
    try:
        if not file.is_file():
            raise AuthError(f"{where}: no such file." if not file.exists() else f"{where}: not a regular file.")
        if file.stat().st_size > MAX_AUTH_FILE_BYTES:
            raise AuthError(f"{where}: larger than {MAX_AUTH_FILE_BYTES >> 20} MiB; is it the right file?")
        text = file.read_text(encoding="utf-8")
    except AuthError:
        raise
    except UnicodeDecodeError:
        raise AuthError(f"{where}: not a UTF-8 text file.") from None
    except OSError as e:
        raise AuthError(f"{where}: cannot be read ({e.strerror or e}).") from None
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            pairs.append(parse_pair(line, f"{where}, line {number}"))
    if not pairs:
        raise AuthError(f"{where}: holds no user:password line.")
    return pairs


def auth_pairs(cli: str | None = None, file: str | None = None,
               environ: dict | None = None) -> list[tuple[str, str]] | None:
    """Every login given by --auth, --auth-file and SEMANTICDRAW_AUTH together (None: no login required)."""
    environ = os.environ if environ is None else environ
    pairs = []
    if cli is not None:
        pairs += parse_auth(cli, "--auth")
    if environ.get(AUTH_ENV) is not None:
        pairs += parse_auth(environ[AUTH_ENV], AUTH_ENV)
    if file is not None:
        pairs += read_auth_file(file)
    if not pairs:
        return None
    users = [user for user, _ in pairs]
    twice = sorted({u for u in users if users.count(u) > 1})
    if twice:
        raise AuthError(f"The user {', '.join(map(repr, twice))} is given more than once (--auth, --auth-file, "
                        f"{AUTH_ENV}); give each user one password.")
    return pairs
