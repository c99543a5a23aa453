#!/usr/bin/env python3
"""pellucid end to end on the embedded server, using only the public SDK.

Run with `make demo`. State lives in $PELLUCID_HOME (default ~/.pellucid); the demo
can be run again and again.
"""

from __future__ import annotations

import sys
import time

from pellucid.client.user import User
from pellucid.errors import InvalidArgument, NotFound, PartialFailure

APP_ID = "demo"


def step(text: str) -> None:
    print(f"\n== {text}")


def main() -> int:
    started = time.perf_counter()
    user = User()  # no configuration: the embedded `local` target and its first user
    step(f"connected to {user.base_url} as {user.get_user_info().id!r}")

    step("start from a clean slate (and handle the error if there is nothing to delete)")
    try:
        user.delete_app(APP_ID)
        print(f"deleted the app {APP_ID!r} left by an earlier run")
    except NotFound as exc:
        print(f"nothing to delete: {exc.code.name}: {exc.message}")

    step("create an app")
    app = user.create_app(APP_ID, name="Demo app", description="made by scripts/demo.py", metadata={"source": "demo"})
    print(f"created {app!r}: name={app.app_info.name!r} metadata={dict(app.app_info.metadata)}")

    step("create concepts")
    animals = ["cat", "dog", "bird", "fish", "horse", "cow", "sheep", "goat", "duck", "frog",
               "bear", "wolf", "fox", "deer", "owl", "bee", "ant", "crab", "seal", "lion"]
    created = app.create_concepts(animals, labels=[a.title() for a in animals])
    print(f"created {len(created)} concepts")

    step("list them with paging")
    first = [c.id for c in app.list_concepts(page_no=1, per_page=8)]
    second = [c.id for c in app.list_concepts(page_no=2, per_page=8)]
    print(f"page 1 (8 per page): {first}")
    print(f"page 2 (8 per page): {second}")
    everything = [c.id for c in app.list_concepts(per_page=6)]
    print(f"all {len(everything)}, fetched 6 per request by page token: {everything}")

    step("errors are typed and say what to fix")
    try:
        user.create_app("not a valid id!")
    except InvalidArgument as exc:
        print(f"{type(exc).__name__}: {exc.message} [field={exc.details.get('field')}]")
    try:
        app.create_concepts(["zebra", "cat", "bad label!"])
    except PartialFailure as exc:
        print(f"{exc}")
        print(f"  stored anyway: {[c.id for c in exc.succeeded]}")

    step("apps of this user")
    for listed in user.list_apps():
        print(f"- {listed.id} ({listed.app_info.name})")

    print(f"\ndemo finished in {time.perf_counter() - started:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
