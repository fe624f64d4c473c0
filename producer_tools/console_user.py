"""``ticket-tools console-user NAME``: a CONSOLE_USERS entry (``NAME:<scrypt hash>``) for the triage console.

The password is read from the terminal, twice and unechoed, or as one line from standard input when
that is not a terminal (``printf '%s\\n' "$PW" | ticket-tools console-user ana``); never from a flag,
which would end up in shell history and ``ps``. Only the hash is printed.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any, TextIO

from consumer.console.passwords import USER_NAME, hash_password
from consumer.errors import UserError

MIN_PASSWORD_CHARS = 10


def read_password(stdin: TextIO, interactive: bool) -> str:
    """The new password; one line of ``stdin`` unless ``interactive``, where it is asked twice."""
    if not interactive:
        return stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise UserError("the two passwords differ; nothing was printed")
    return first


def user_entry(name: str, password: str) -> str:
    """``NAME:hash``, after checking the name and the password's length. Pure but for the salt."""
    if not USER_NAME.match(name):
        raise UserError(f"NAME {name!r}: 1-64 of letters, digits, '.', '_', '@', '-'")
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")
    return f"{name}:{hash_password(password)}"


def handle(args: argparse.Namespace) -> int:
    entry = user_entry(args.name, read_password(sys.stdin, sys.stdin.isatty()))
    print(entry)
    return 0


def add_parser(subcommands: Any) -> None:
    parser = subcommands.add_parser(
        "console-user",
        help="make a CONSOLE_USERS entry (name:hash) for the triage console",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("name", metavar="NAME", help="the user name people sign in with")
    parser.set_defaults(handler=handle)
