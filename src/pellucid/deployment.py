"""Call a deployment over plain HTTP, sidekick-style:

    from pellucid.deployment import Deployment

    client = Deployment(url=<URL>, token=<token>)
    print(client.feature_specs_in, client.feature_specs_out)
    client.predict(Type="animal", Sound="Miaow", Size=0.26)
    client.predict_many([{"Type": "animal", "Sound": "Miaow", "Size": 0.26}, ...])

Rows are dicts of feature values: numbers, strings (texts and categories), numpy arrays and PIL
images (encoded for you), or already-encoded JSON values (a data URI, {"shape", "data"}).
Outputs come back decoded: numbers, {label: probability} dicts, strings, numpy arrays and PIL
images. `predict_many` sends batches concurrently over one connection pool, keeps at most a few
batches in memory, returns results in order and shows a tqdm bar when it runs long;
`predict_lazy` yields them as they come. Only httpx (and numpy) is needed: no gRPC.
"""

from __future__ import annotations

import base64
import io
import itertools
import ssl
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np

from pellucid.errors import PellucidError

DEFAULT_BATCH_SIZE = 64
DEFAULT_CONCURRENCY = 4
DEFAULT_TIMEOUT = 60.0
PROGRESS_DELAY_SECONDS = 2.0  # a bar appears only for calls that run longer
MAX_RETRIES_WHEN_BUSY = 5


class DeploymentError(PellucidError):
    """The deployment refused or failed a call: `status` (HTTP), `reason`, and for rows at fault
    `row` (the index in what you passed), `feature`, and `rows` (every bad row the server named)."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        reason: str = "",
        row: int | None = None,
        feature: str = "",
        rows: list[dict[str, Any]] | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.reason = reason
        self.row = row
        self.feature = feature
        self.rows = rows or []
        self.limit = limit

    def __str__(self) -> str:
        return f"HTTP {self.status}: {self.message}" if self.status else self.message


class InvalidRows(DeploymentError):
    """400: rows that do not match the feature specs (each named in `rows`), or a malformed body."""


class Unauthorized(DeploymentError):
    """401: no token, or not a valid one."""


class Forbidden(DeploymentError):
    """403: the deployment is disabled, or the token is another deployment's."""


class DeploymentNotFound(DeploymentError):
    """404: no such deployment (or not yours)."""


class PayloadTooLarge(DeploymentError):
    """413: the body exceeds the server's limit (`limit`, bytes): use a smaller batch_size."""


class TooManyRequests(DeploymentError):
    """429: too many calls in flight (retried for you a few times first)."""


class ModelFailed(DeploymentError):
    """502: the model raised on a row (`row`)."""


class ServiceUnavailable(DeploymentError):
    """503: no runner serves the deployment's model."""


class GatewayTimeout(DeploymentError):
    """504: the model did not answer in time."""


_ERRORS: dict[int, type[DeploymentError]] = {
    400: InvalidRows,
    401: Unauthorized,
    403: Forbidden,
    404: DeploymentNotFound,
    413: PayloadTooLarge,
    429: TooManyRequests,
    502: ModelFailed,
    503: ServiceUnavailable,
    504: GatewayTimeout,
}


def _pil_image_class() -> Any:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - Pillow is optional for callers
        return None
    return Image.Image


def _image_mime(data: bytes) -> str:
    for magic, mime in ((b"\x89PNG", "image/png"), (b"\xff\xd8", "image/jpeg"), (b"GIF8", "image/gif")):
        if data.startswith(magic):
            return mime
    return "image/webp" if data[8:12] == b"WEBP" else "application/octet-stream"


def encode_value(value: Any) -> Any:
    """A feature value as the endpoint's JSON: numpy arrays as {"shape", "data"}, PIL images and
    image bytes as data URIs, numpy scalars as numbers; JSON values as they are."""
    if isinstance(value, np.ndarray):
        return {"shape": list(value.shape), "data": value.ravel().tolist()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return f"data:{_image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"
    image_class = _pil_image_class()
    if image_class is not None and isinstance(value, image_class):
        buffer = io.BytesIO()
        value.save(buffer, format="PNG")
        return f"data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
    return value


def encode_row(row: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(row, Mapping):
        raise TypeError(f"a row must be a dict of feature values, got {type(row).__name__}")
    return {str(name): encode_value(value) for name, value in row.items()}


def decode_value(value: Any, spec: Mapping[str, Any] | None) -> Any:
    """An output value as Python: {"shape", "data"} as a numpy array (of the spec's dtype), an
    image data URI as a PIL image (bytes without Pillow); numbers, texts and dicts as they are."""
    kind = (spec or {}).get("type", "")
    if isinstance(value, Mapping) and set(value) == {"shape", "data"} and kind in ("array", ""):
        dtype = (spec or {}).get("dtype") or None
        return np.asarray(value["data"], dtype=dtype).reshape(value["shape"])
    if isinstance(value, str) and value.startswith("data:image/") and kind in ("image", ""):
        data = base64.b64decode(value.partition(",")[2])
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow is optional for callers
            return data
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    return value


class Deployment:
    """A deployment's HTTP client: `url` is the deployment's URL (…/v1/deployments/<id>/forward,
    as the deployment reports it; …/v1/deployments/<id> works too), `token` a deployment token
    (or a PAT of its owner). `batch_size` rows go in each request, `concurrency` requests at once;
    `verify` False skips checking an https server's certificate, a path trusts that CA file."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout: float = DEFAULT_TIMEOUT,
        verify: bool | str = True,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"url {url!r} must be the deployment's http(s) URL")
        if batch_size < 1 or concurrency < 1:
            raise ValueError("batch_size and concurrency must be at least 1")
        base = url.rstrip("/")
        self.url = base if base.endswith("/forward") else base + "/forward"
        self.info_url = self.url[: -len("/forward")]
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.timeout = timeout
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            timeout=httpx.Timeout(timeout + 5.0, connect=10.0),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            # a CA file's path: that CA's certificates only (a server with its own CA)
            verify=ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify,
        )
        self._info: dict[str, Any] | None = None
        self._info_lock = threading.Lock()

    # metadata

    @property
    def info(self) -> dict[str, Any]:
        """The deployment's description (id, enabled, url, feature specs), fetched once."""
        with self._info_lock:
            if self._info is None:
                response = self._http.get(self.info_url)
                if response.status_code != 200:
                    raise _error(response, 0)
                self._info = response.json()
            return self._info

    @property
    def feature_specs_in(self) -> list[dict[str, Any]]:
        """The input features: name, type, required, and categories / size / dtype and shape."""
        return list(self.info["feature_specs_in"])

    @property
    def feature_specs_out(self) -> list[dict[str, Any]]:
        return list(self.info["feature_specs_out"])

    # predictions

    def predict(self, **features: Any) -> dict[str, Any]:
        """One row, given as keyword arguments: its outputs."""
        return self._post([encode_row(features)], 0)[0]

    def predict_many(self, rows: Iterable[Mapping[str, Any]], progress: bool | None = None) -> list[dict[str, Any]]:
        """The outputs of every row, in order (see predict_lazy)."""
        return list(self.predict_lazy(rows, progress))

    def predict_lazy(self, rows: Iterable[Mapping[str, Any]], progress: bool | None = None) -> Iterator[dict[str, Any]]:
        """Yield each row's outputs in order, as batches are answered. Batches go `concurrency`
        at a time; rows are read from `rows` only as batches are sent (at most 2 x concurrency
        batches held), so a generator of any length works in bounded memory. `progress`: a tqdm
        bar (None: one appears when the call runs longer than a couple of seconds)."""
        total = len(rows) if hasattr(rows, "__len__") else None  # type: ignore[arg-type]
        bar = self._bar(total, progress)
        batches = self._batches(iter(rows))
        window = 2 * self.concurrency
        pending: deque[Future[list[dict[str, Any]]]] = deque()
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="pellucid-deploy") as pool:
            try:
                for offset, batch in itertools.islice(batches, window):
                    pending.append(pool.submit(self._post, batch, offset))
                while pending:
                    outputs = pending.popleft().result()
                    following = next(batches, None)
                    if following is not None:
                        pending.append(pool.submit(self._post, following[1], following[0]))
                    if bar is not None:
                        bar.update(len(outputs))
                    yield from outputs
            finally:
                for future in pending:
                    future.cancel()
                if bar is not None:
                    bar.close()

    def _batches(self, rows: Iterator[Mapping[str, Any]]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        offset = 0
        while True:
            batch = [encode_row(r) for r in itertools.islice(rows, self.batch_size)]
            if not batch:
                return
            yield offset, batch
            offset += len(batch)

    @staticmethod
    def _bar(total: int | None, progress: bool | None) -> Any:
        if progress is False:
            return None
        from tqdm.auto import tqdm

        delay = 0.0 if progress else PROGRESS_DELAY_SECONDS
        return tqdm(total=total, unit="row", desc="predict", delay=delay, leave=False)

    def _post(self, rows: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
        """One request; its outputs decoded. Errors name rows by their index in the whole call."""
        for attempt in itertools.count():
            response = self._http.post(self.url, json={"rows": rows}, params={"timeout": self.timeout})
            if response.status_code == 429 and attempt < MAX_RETRIES_WHEN_BUSY:
                time.sleep(min(float(response.headers.get("retry-after", "1")), 2**attempt * 0.05))
                continue
            break
        if response.status_code != 200:
            raise _error(response, offset)
        outputs = response.json()["rows"]
        specs = {s["name"]: s for s in self._output_specs()}
        return [{name: decode_value(value, specs.get(name)) for name, value in row.items()} for row in outputs]

    def _output_specs(self) -> list[dict[str, Any]]:
        try:
            return self.feature_specs_out
        except DeploymentError:  # the description may be refused where calls are not: decode by shape
            return []

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Deployment(url={self.url!r})"


def _error(response: httpx.Response, offset: int) -> DeploymentError:
    """The typed error of a failed response; row indexes shifted by the batch's `offset`."""
    try:
        body = response.json().get("error", {})
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("message") or response.text[:500] or response.reason_phrase)
    rows = [{**r, "row": r["row"] + offset} for r in body.get("rows") or [] if isinstance(r, dict) and "row" in r]
    row = rows[0]["row"] if rows else None
    if rows and offset:
        message = "; ".join(
            f"row {r['row']}" + (f", feature {r['feature']!r}" if r.get("feature") else "") + f": {r['message']}"
            for r in rows[:5]
        )
    field = str(body.get("field", ""))
    if row is None and field.startswith("rows[") and "]" in field:
        row = int(field[5 : field.index("]")]) + offset
    cls = _ERRORS.get(response.status_code, DeploymentError)
    return cls(
        message,
        status=response.status_code,
        reason=str(body.get("reason", "")),
        row=row,
        feature=rows[0].get("feature", "") if rows else "",
        rows=rows,
        limit=body.get("limit"),
    )


__all__ = [
    "Deployment",
    "DeploymentError",
    "DeploymentNotFound",
    "Forbidden",
    "GatewayTimeout",
    "InvalidRows",
    "ModelFailed",
    "PayloadTooLarge",
    "ServiceUnavailable",
    "TooManyRequests",
    "Unauthorized",
    "decode_value",
    "encode_row",
    "encode_value",
]
