"""`pellucid run OWNER/NAME[/VERSION]`: call an algorithm from a shell.

The input is one of -d (text, or JSON if it parses), -j (JSON), -t (text), -b (binary: the
text's bytes), or the same read from a file with -D, -J, -T, -B ("-" reads stdin). The result
goes to stdout raw (text and JSON with a newline, binary as its bytes) or to -o FILE; the
"Completed in" line goes to stderr (-s drops it), so a pipe gets the result alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pellucid.cli.output import OK, USAGE
from pellucid.cli.session import call_timeout, client_options
from pellucid.client.algo import DEFAULT_ALGO_TIMEOUT, AlgoClient, AlgoResponse
from pellucid.errors import AlgoException, UserError


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}") from None


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UserError(f"{where} is not JSON: {exc}") from None


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{where} is not UTF-8 text: send it with -B (binary)") from None


def _auto(text: str) -> Any:
    """-d: JSON if it parses as JSON, else text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def algorithm_input(args: argparse.Namespace) -> Any:
    """The value to pipe, from whichever input option was given."""
    if args.data is not None:
        return _auto(args.data)
    if args.data_file is not None:
        raw = _read(args.data_file)
        try:
            return _auto(raw.decode("utf-8"))
        except UnicodeDecodeError:
            return raw
    if args.json_text is not None:
        return _json(args.json_text, "-j")
    if args.json_file is not None:
        return _json(_text(_read(args.json_file), args.json_file), args.json_file)
    if args.text is not None:
        return args.text
    if args.text_file is not None:
        return _text(_read(args.text_file), args.text_file)
    if args.binary is not None:
        return args.binary.encode("utf-8")
    return _read(args.binary_file)


def _result_bytes(response: AlgoResponse) -> bytes:
    result = response.result
    if response.metadata.content_type == "binary":
        return bytes(result)
    if response.metadata.content_type == "json":
        return (json.dumps(result) + "\n").encode()
    return (str(result) + "\n").encode()


def cmd_run(args: argparse.Namespace) -> int:
    value = algorithm_input(args)
    client = AlgoClient(args.pat or None, args.api or None, profile=args.profile)
    algo = client.algo(args.algorithm).set_options(timeout=call_timeout(args, DEFAULT_ALGO_TIMEOUT), stdout=args.debug)
    try:
        response = algo.pipe(value)
    except AlgoException as exc:
        if exc.stack_trace and not args.json:
            print(exc.stack_trace.rstrip("\n"), file=sys.stderr)
        raise
    if args.debug and response.metadata.stdout:
        sys.stderr.write(response.metadata.stdout)
    if args.response or args.json:
        body = (json.dumps(response.to_dict(), sort_keys=True) + "\n").encode()
    else:
        body = _result_bytes(response)
    if args.output:
        try:
            Path(args.output).write_bytes(body)
        except OSError as exc:
            raise UserError(f"cannot write {args.output}: {exc.strerror}") from None
    elif response.metadata.content_type == "binary" and sys.stdout.isatty() and not (args.response or args.json):
        print(
            f"pellucid: the result is {len(body)} bytes of binary: write it with -o FILE or pipe it",
            file=sys.stderr,
        )
    else:
        sys.stdout.buffer.write(body)
        sys.stdout.buffer.flush()
    if not args.silence:
        print(f"Completed in {response.metadata.duration:.3f} seconds", file=sys.stderr)
    return OK


def add_commands(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="call an algorithm: pellucid run OWNER/NAME[/VERSION] -d INPUT",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "algorithm", metavar="OWNER/NAME[/VERSION]", help="the version: a tag (1.0.2) or a model version id"
    )
    given = run.add_mutually_exclusive_group(required=True)
    given.add_argument("-d", "--data", metavar="TEXT", help="input: JSON if it parses as JSON, else text")
    given.add_argument("-D", "--data-file", metavar="FILE", help="input from FILE: JSON, text, else binary")
    given.add_argument("-j", "--json", dest="json_text", metavar="JSON", help="input: JSON")
    given.add_argument("-J", "--json-file", metavar="FILE", help="input: JSON read from FILE")
    given.add_argument("-t", "--text", metavar="TEXT", help="input: text")
    given.add_argument("-T", "--text-file", metavar="FILE", help="input: UTF-8 text read from FILE")
    given.add_argument("-b", "--binary", metavar="TEXT", help="input: binary, the bytes of TEXT")
    given.add_argument("-B", "--binary-file", metavar="FILE", help="input: binary, the bytes of FILE")
    run.add_argument("-o", "--output", metavar="FILE", help="write the result to FILE instead of stdout")
    run.add_argument("--debug", action="store_true", help="print what the algorithm printed to stderr (owner only)")
    run.add_argument("--response", action="store_true", help="print the whole response (result and metadata) as JSON")
    run.add_argument("-s", "--silence", action="store_true", help='no "Completed in" line on stderr')
    # --json here is the input (as the reference CLI's); `pellucid --json run ...` prints the response as JSON
    client_options(run, json_flag=False, timeout_default=DEFAULT_ALGO_TIMEOUT)
    run.set_defaults(run=cmd_run)


__all__ = ["USAGE", "add_commands", "algorithm_input", "cmd_run"]
