"""Paginated listing over any List RPC, yielding protos as they arrive."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from pellucid.errors import UserError

MAX_PER_PAGE = 1000
LIST_ALL_PAGE_SIZE = 500


class ListResponse(Protocol):
    """What every List RPC answers: one repeated field of items, and the next page's token."""

    @property
    def DESCRIPTOR(self) -> Descriptor: ...

    @property
    def next_page_token(self) -> str: ...


class Lister:
    """Mixin and helper for listing. `page_size` is the page size used when only `page_no` is given."""

    def __init__(self, page_size: int = 16) -> None:
        self.default_page_size = page_size

    def list_pages_generator(
        self,
        endpoint: Callable[[Message], ListResponse],
        proto_message: type[Message],
        request_data: dict[str, Any],
        page_no: int | None = None,
        per_page: int | None = None,
    ) -> Iterator[Any]:
        """Yield the items of a listing.

        - `page_no` alone: that page, with `per_page` = the default page size (16);
        - `page_no` and `per_page`: exactly that page;
        - `per_page` alone: everything, `per_page` items per request;
        - neither: everything, following `next_page_token` until the server says the last
          page was reached (no extra empty request at the end).

        Items are the response's repeated message field, as protos.
        """
        if page_no is not None and (not isinstance(page_no, int) or page_no < 1):
            raise UserError(f"page_no must be an integer >= 1, got {page_no!r}")
        if per_page is not None and (not isinstance(per_page, int) or not 1 <= per_page <= MAX_PER_PAGE):
            raise UserError(f"per_page must be an integer from 1 to {MAX_PER_PAGE}, got {per_page!r}")
        if page_no is not None:
            response = endpoint(
                proto_message(**request_data, page=page_no, page_size=per_page or self.default_page_size)
            )
            yield from _items(response)
            return
        token = ""
        while True:
            response = endpoint(
                proto_message(**request_data, page_size=per_page or LIST_ALL_PAGE_SIZE, page_token=token)
            )
            yield from _items(response)
            token = response.next_page_token
            if not token:
                return


def _items(response: ListResponse) -> list[Any]:
    """The one repeated message field of a List response (found by type, not by position)."""
    fields = [f for f in response.DESCRIPTOR.fields if f.is_repeated and f.type == FieldDescriptor.TYPE_MESSAGE]
    if len(fields) != 1:
        raise TypeError(f"{response.DESCRIPTOR.full_name} is not a List response with one repeated item field")
    return list(getattr(response, fields[0].name))
