"""`pellucid users create|list` (admins) and `pellucid whoami`."""

from __future__ import annotations

import argparse
from typing import Any

from pellucid.api import v1
from pellucid.cli.output import OK, emit
from pellucid.cli.session import client_options, user


def user_dict(info: v1.User) -> dict[str, Any]:
    return {"id": info.id, "is_admin": info.is_admin}


def cmd_users_create(args: argparse.Namespace) -> int:
    created = user(args).create_user(args.user_id, is_admin=args.admin)
    text = (
        f"created user {created.user.id}{' (admin)' if created.user.is_admin else ''}\n"
        f"PAT id {created.pat.token.id}; the token below is shown only once:\n{created.pat.secret}"
    )
    emit(args.json, {**user_dict(created.user), "pat_id": created.pat.token.id, "pat": created.pat.secret}, text)
    return OK


def cmd_users_list(args: argparse.Namespace) -> int:
    users = list(user(args).list_users())
    emit(
        args.json,
        [user_dict(u) for u in users],
        "\n".join(f"{u.id}\t{'admin' if u.is_admin else 'user'}" for u in users),
    )
    return OK


def cmd_whoami(args: argparse.Namespace) -> int:
    client = user(args)
    info = client.get_user_info()
    emit(args.json, {**user_dict(info), "api": client.base_url}, f"{info.id}{' (admin)' if info.is_admin else ''}")
    return OK


def add_commands(commands: Any) -> None:
    users = commands.add_parser("users", help="manage users (admins)").add_subparsers(
        dest="users_command", required=True
    )
    create = users.add_parser("create", help="create a user and print its first PAT (the last line printed)")
    create.add_argument("user_id")
    create.add_argument("--admin", action="store_true", help="make the new user an admin")
    client_options(create)
    create.set_defaults(run=cmd_users_create)
    listing = users.add_parser("list", help="list users")
    client_options(listing)
    listing.set_defaults(run=cmd_users_list)

    whoami = commands.add_parser("whoami", help="print the user the credentials belong to")
    client_options(whoami)
    whoami.set_defaults(run=cmd_whoami)
