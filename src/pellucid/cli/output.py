"""What the CLI prints and the exit codes it returns: one table from pellucid.errors to codes."""

from __future__ import annotations

import json
import sys
from typing import Any

from pellucid.errors import (
    ApiClientError,
    DeadlineExceeded,
    MissingCredentials,
    NotFound,
    PellucidError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    UserError,
)

OK = 0
OTHER = 1  # any other failure: the message says what happened
USAGE = 2  # bad arguments or configuration; nothing was sent (argparse also exits 2)
DENIED = 3  # not authenticated (no or bad token) or not allowed
NOT_FOUND = 4
UNREACHABLE = 5  # the server did not answer (down, wrong address, deadline passed)
INTERRUPTED = 130  # stopped at once by a second Ctrl-C

EXIT_CODES_DOC = """exit codes:
  0  ok
  1  other failure (the message says what happened), or `pellucid run`: the algorithm raised
  2  usage: bad arguments or configuration, nothing was sent
  3  not authenticated (no or bad token) or permission denied
  4  not found
  5  server unreachable (down, wrong address, or no answer before the deadline);
     `pellucid cp`: some files failed (each listed on stderr; with --json a summary
     on stdout). A cp that reached no server says "server unreachable, nothing was
     copied" instead (with --json an error of type ServerUnreachable on stderr)
  6  `pellucid server`: its port is in use (nothing was created)
  130  a runner stopped at once by a second Ctrl-C"""

# first match wins: subclasses before the classes they refine
_EXIT_CODES: tuple[tuple[type[PellucidError], int], ...] = (
    (MissingCredentials, DENIED),
    (UserError, USAGE),
    (Unauthenticated, DENIED),
    (PermissionDenied, DENIED),
    (NotFound, NOT_FOUND),
    (Unavailable, UNREACHABLE),
    (DeadlineExceeded, UNREACHABLE),
    (ApiClientError, UNREACHABLE),
)


def exit_code(error: PellucidError) -> int:
    """The documented exit code for an error."""
    for cls, code in _EXIT_CODES:
        if isinstance(error, cls):
            return code
    return OTHER


def emit(as_json: bool, data: Any, text: str) -> None:
    """Print `data` as one JSON document, or `text` for people (nothing if it is empty)."""
    if as_json:
        print(json.dumps(data, sort_keys=True), flush=True)
    elif text:
        print(text, flush=True)


def report_error(as_json: bool, error: PellucidError, code: int) -> None:
    """The error on stderr: one line for people, or a JSON object for scripts."""
    if as_json:
        body: dict[str, Any] = {"message": str(error), "type": type(error).__name__, "exit_code": code}
        for name in ("code", "request_id", "details"):
            value = getattr(error, name, None)
            if value:
                body[name] = value.name if name == "code" else value
        print(json.dumps({"error": body}, sort_keys=True), file=sys.stderr, flush=True)
    else:
        print(f"pellucid: {error}", file=sys.stderr, flush=True)
