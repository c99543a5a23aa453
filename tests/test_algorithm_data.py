"""Hosted data from inside an algorithm call, against a real server and runner: the ACL matrix
(owner, the owner's algorithm during a call, another user, a forged call id) and data://.algo."""

from __future__ import annotations

from typing import Any

import pytest

from pellucid.acl import ReadAcl
from pellucid.client._transport import MetadataConnection
from pellucid.client.algo import ALGORITHM_CALL_HEADER, AlgoClient
from pellucid.client.runner import function_runner
from pellucid.client.user import User
from pellucid.errors import DataInvalidArgument, DataNotFound, DataPermissionDenied
from tests.test_algorithms import algo_client, start_runner

LEVELS = ("private", "my_algos", "public")


def probe(input: dict) -> dict:
    """An algorithm: which of `input["read"]` it can read and which collections it lists; writes to data://.algo/."""
    import pellucid
    from pellucid.errors import DataApiError

    client = pellucid.client()  # the runner's credentials (its owner's token), naming this call
    readable = {}
    for path in input["read"]:
        try:
            readable[path] = client.file(path).getString()
        except DataApiError as exc:
            readable[path] = type(exc).__name__
    client.file("data://.algo/results/out.txt").put("written by the algorithm")
    listed = sorted(d.path.rsplit("/", 1)[-1] for d in client.dir(input["owner_root"]).dirs())
    return {"readable": readable, "listed": listed}


def read_all(user: User | AlgoClient, paths: list[str]) -> list[str]:
    outcome = []
    for path in paths:
        try:
            outcome.append(user.file(path).getString())
        except DataNotFound:
            outcome.append("DataNotFound")
    return outcome


def test_an_algorithm_reads_my_algos_and_public_but_not_private(alice: User, bob: User, unique: str) -> None:
    owner = alice.user_id
    paths = []
    for level in LEVELS:
        alice.dir(f"data://.my/{level}-{unique}").create(getattr(ReadAcl, level))
        alice.file(f"data://.my/{level}-{unique}/f.txt").put(level)
        paths.append(f"data://{owner}/{level}-{unique}/f.txt")
    label = f"probe-{unique}"
    model = alice.create_app(f"probe-{unique}").create_model("probe", runner_labels=[label])
    runner, thread = start_runner(alice, f"probe-{unique}", label, function_runner(probe))
    try:
        model.publish_algorithm(name=f"probe-{unique}", version="1.0.0", public=True)
        request: dict[str, Any] = {"read": paths, "owner_root": f"data://{owner}/"}
        # the owner reads every level; another user only public, the rest as if missing
        assert read_all(alice, paths) == ["private", "my_algos", "public"]
        assert read_all(bob, paths) == ["DataNotFound", "DataNotFound", "public"]
        # the owner's algorithm, called by the owner or by another user: my_algos and public, not private
        for caller in (alice, bob):
            response = algo_client(caller).algo(f"{owner}/probe-{unique}").pipe(request)
            readable = response.result["readable"]
            assert [readable[p] for p in paths] == ["DataNotFound", "my_algos", "public"]
            assert f"private-{unique}" not in response.result["listed"]
            assert f"my_algos-{unique}" in response.result["listed"]
        # data://.algo/ is the algorithm's own folder, in the owner's collection .algo
        out = f"data://{owner}/.algo/probe-{unique}/results/out.txt"
        assert alice.file(out).getString() == "written by the algorithm"
        assert alice.dir(f"data://{owner}/.algo").get_permissions() == ReadAcl.my_algos

        # bob knows the id of his call of alice's algorithm; with his own token it is refused
        call_id = response.metadata.call_id
        forged = AlgoClient(
            _connection=MetadataConnection(bob._connection, ((ALGORITHM_CALL_HEADER, call_id),))  # type: ignore[arg-type]
        )
        with pytest.raises(DataPermissionDenied, match="not a call in progress of one of your algorithms"):
            forged.file(paths[2]).getString()
        with pytest.raises(DataPermissionDenied):
            forged.file("data://.algo/x.txt").put("x")
        # alice's own scripts naming the call read as the algorithm: they only lose access
        as_algorithm = AlgoClient(
            _connection=MetadataConnection(alice._connection, ((ALGORITHM_CALL_HEADER, call_id),))  # type: ignore[arg-type]
        )
        assert read_all(as_algorithm, paths) == ["DataNotFound", "my_algos", "public"]
        with pytest.raises(DataNotFound):  # nor write there
            as_algorithm.file(f"data://{owner}/private-{unique}/g.txt").put("x")
        with pytest.raises(DataPermissionDenied, match="its owner does"):
            as_algorithm.dir(f"data://{owner}/my_algos-{unique}").update_permissions(ReadAcl.public)
        with pytest.raises(DataPermissionDenied):  # an id no call has
            AlgoClient(
                _connection=MetadataConnection(alice._connection, ((ALGORITHM_CALL_HEADER, "nosuchcall"),))  # type: ignore[arg-type]
            ).file(paths[2]).getString()
    finally:
        runner.stop(drain=False)
        thread.join(10)
    # outside a call data://.algo/ is refused, saying where the folder lives
    with pytest.raises(DataInvalidArgument, match=r"works only inside an algorithm.*data://<owner>/\.algo/<algorithm>"):
        alice.file("data://.algo/results/out.txt").getString()
