import pytest

from pellucid.server.engine.errors import InvalidArgument
from pellucid.server.engine.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    PageRequest,
    next_token,
    to_query,
)
from pellucid.server.records import Page


def test_default_and_explicit_sizes() -> None:
    assert to_query(PageRequest(), "s").limit == DEFAULT_PAGE_SIZE
    assert to_query(PageRequest(page_size=7), "s").limit == 7


@pytest.mark.parametrize("size", [-1, MAX_PAGE_SIZE + 1])
def test_out_of_range_page_size(size: int) -> None:
    with pytest.raises(InvalidArgument, match="page_size"):
        to_query(PageRequest(page_size=size), "s")


def test_page_number_is_an_offset() -> None:
    query = to_query(PageRequest(page_size=10, page=3), "s")
    assert (query.offset, query.limit, query.after) == (20, 10, None)


def test_token_round_trip() -> None:
    token = next_token(Page(items=[1], next_after=41), "apps:alice")
    assert to_query(PageRequest(page_token=token), "apps:alice").after == 41
    assert next_token(Page(items=[1], next_after=None), "apps:alice") == ""


def test_token_of_another_listing_is_refused() -> None:
    token = next_token(Page(items=[1], next_after=41), "apps:alice")
    with pytest.raises(InvalidArgument, match="different listing"):
        to_query(PageRequest(page_token=token), "apps:bob")


@pytest.mark.parametrize("token", ["garbage", "eyJhIjoxfQ", "!!!"])
def test_malformed_token(token: str) -> None:
    with pytest.raises(InvalidArgument, match="next_page_token"):
        to_query(PageRequest(page_token=token), "s")


def test_page_and_token_together_are_refused() -> None:
    token = next_token(Page(items=[1], next_after=1), "s")
    with pytest.raises(InvalidArgument, match="either page or page_token"):
        to_query(PageRequest(page=2, page_token=token), "s")


def test_chunker() -> None:
    from pellucid.errors import UserError
    from pellucid.utils import Chunker

    assert Chunker(list(range(7)), 3).chunk() == [[0, 1, 2], [3, 4, 5], [6]]
    assert Chunker([], 3).chunk() == []
    with pytest.raises(UserError):
        Chunker([1], 0)
