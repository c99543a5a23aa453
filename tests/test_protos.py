"""The generated code matches the protos, and the API surface follows the house rules."""

import importlib
import subprocess
import sys
from pathlib import Path

import pellucid.api.v1 as v1

ROOT = Path(__file__).resolve().parent.parent
MODULES = [
    importlib.import_module(f"pellucid.api.v1.{p.stem}")
    for p in sorted((ROOT / "src" / "pellucid" / "api" / "v1").glob("*_pb2.py"))
]
# Reads whose names say so less plainly (a prediction changes nothing), content-addressed uploads
# (the same bytes give the same blob), and the runner stream (not a call that is retried).
NATURALLY_IDEMPOTENT = {
    "DownloadInputs",
    "UploadBlob",
    "PostModelOutputs",
    "PostWorkflowResults",
    "PostInputsSearches",
    "Connect",
    "UploadDataFiles",  # a put overwrites: sending the same files again leaves the same state
    "DownloadDataFiles",
}
# a predict of the owner's model, but an algorithm may have effects: the SDK never resends it
NOT_RETRIED = {"CallAlgorithm"}


def test_generated_code_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_message_and_enum_is_exported_from_the_package() -> None:
    for module in MODULES:
        for name in list(module.DESCRIPTOR.message_types_by_name) + list(module.DESCRIPTOR.enum_types_by_name):
            assert getattr(v1, name) is getattr(module, name), name
    from pellucid.api.v1 import App, Concept, Status  # noqa: F401


def services() -> list:
    return [s for m in MODULES for s in m.DESCRIPTOR.services_by_name.values()]


def test_every_mutation_carries_a_request_id() -> None:
    """So every call is safe to retry: reads are idempotent, mutations are deduplicated."""
    for service in services():
        for method in service.methods:
            if method.name.startswith(("Get", "List")) or method.name in NATURALLY_IDEMPOTENT | NOT_RETRIED:
                continue
            assert "request_id" in method.input_type.fields_by_name, f"{service.name}.{method.name}"


def test_every_list_call_pages_by_token_and_number() -> None:
    for service in services():
        for method in service.methods:
            if method.name.startswith("List"):
                fields = method.input_type.fields_by_name
                assert {"page_size", "page_token", "page"} <= set(fields), method.name
                assert "next_page_token" in method.output_type.fields_by_name, method.name
