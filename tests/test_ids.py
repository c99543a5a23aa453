import pytest

from pellucid.server.engine.errors import InvalidArgument
from pellucid.server.engine.ids import MAX_ID_LENGTH, new_id, validate_id


@pytest.mark.parametrize("good", ["a", "A1", "my-app", "my_app_2", "0abc", "x" * MAX_ID_LENGTH])
def test_valid_ids_pass(good: str) -> None:
    assert validate_id(good, "app_id") == good


@pytest.mark.parametrize(
    "bad", ["", "-leading", "_leading", "has space", "dots.in.it", "slash/", "ü", "x" * (MAX_ID_LENGTH + 1)]
)
def test_invalid_ids_name_the_allowed_form(bad: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate_id(bad, "app_id")
    assert "app_id" in info.value.message
    assert "A-Z a-z 0-9 _ -" in info.value.message
    assert info.value.field == "app_id"


def test_generated_ids_are_unique_and_sort_in_creation_order() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    validate_id(ids[0], "id")


def test_every_engine_error_has_a_status_code() -> None:
    import grpc

    from pellucid.server.engine import errors
    from pellucid.server.grpc.errors import status_code

    for cls in errors.EngineError.__subclasses__():
        assert status_code(cls("x")) != grpc.StatusCode.UNKNOWN, cls.__name__
