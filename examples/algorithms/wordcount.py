"""An algorithm served by a plain function that reads hosted data and writes its answer there.

    pellucid runner start examples/algorithms/wordcount.py:apply --labels wordcount

`apply({"read": "data://.my/inbox/reviews", "write": "data://.algo/counts.json"})` counts the
words of every file in the `read` directory, stores the counts as JSON at `write` and returns a
summary. Inside the call `pellucid.client()` uses the runner's connection and names the call,
so the server reads as the algorithm: its owner's my_algos and public collections, and
`data://.algo/` is its own folder, `data://<owner>/.algo/wordcount/`.
"""

from __future__ import annotations

from typing import Any


def apply(input: dict[str, str]) -> dict[str, Any]:
    import pellucid

    client = pellucid.client()
    counts = {f.name: len(f.getString().split()) for f in client.dir(input["read"]).files()}
    client.file(input["write"]).putJson(counts)
    return {"files": len(counts), "words": sum(counts.values()), "written": input["write"]}
