"""Which embedder an app's base workflow runs on which inputs, and where the vectors go.

Shared by indexing (engine/indexing.py writes vectors) and search (engine/search.py reads
them), so both name a vector space the same way.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from pellucid.server.engine.predict import OutputCode, PredictOutput
from pellucid.server.storage.vectors import vector_problem

# The built-in base workflows: input type -> built-in embedder ("text" or "image", see
# server/embedders). Any other base workflow value must be the id of a model in the app whose
# runner returns embeddings (it embeds the input types the model declares as its inputs), or of
# a workflow of the app (its first output with an embedding; the input types its root nodes read).
BUILTIN_WORKFLOWS: dict[str, dict[str, str]] = {
    "Empty": {},
    "Text": {"text": "text"},
    "Language-Understanding": {"text": "text"},
    "Universal": {"text": "text", "image": "image"},
}
DEFAULT_BASE_WORKFLOW = "Language-Understanding"  # the reference SDK's create_app default
MODEL_EMBEDDER_PREFIX = "model:"  # an embedder key naming a user's model: "model:<model id>"
WORKFLOW_EMBEDDER_PREFIX = "workflow:"  # one naming a workflow of the app: "workflow:<workflow id>"


def space_name(user_id: str, app_id: str, embedder_key: str) -> str:
    """The vector space of one embedder in one app ("alice/photos/text", "alice/photos/model:clip")."""
    return f"{user_id}/{app_id}/{embedder_key}"


def output_embedding(output: PredictOutput, of: str) -> tuple[npt.NDArray[np.float32] | None, str]:
    """The vector an embedding model's output for `of` ("the query", "this input") carries (its
    first embedding), or why it has none, said of the model ("failed on the query: ...")."""
    if output.code is not OutputCode.OK:
        return None, f"failed on {of}: {output.message or output.code.name}"
    if not output.data.embeddings or not output.data.embeddings[0]:
        return None, "returned no embedding: its runner must set output.data.embeddings (one Embedding with the vector)"
    vector = np.asarray(output.data.embeddings[0], dtype=np.float32)
    problem = vector_problem(vector)
    return (None, f"returned an embedding that cannot be used: {problem}") if problem else (vector, "")
