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
    "UploadDataFilesPacked",
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


def test_the_pins_start_where_the_generated_code_does() -> None:
    """The generated code asks for the oldest protobuf and grpcio it runs on (scripts/gen_protos.py
    lowers grpcio-tools' stamps); pyproject.toml's pins and `make check-oldest-protobuf` start
    at exactly those, so what CI tests as the oldest is what users may install."""
    import re

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for requirement in dependencies:
        found = re.fullmatch(r"(protobuf|grpcio|grpcio-health-checking|grpcio-reflection)>=([\d.]+),<\d+", requirement)
        if found:
            floors[found.group(1)] = found.group(2)
    assert floors["grpcio-health-checking"] == floors["grpcio-reflection"] == floors["grpcio"]
    makefile = (ROOT / "Makefile").read_text()
    oldest = dict(re.findall(r"([\w-]+)==([\d.]+)", re.search(r"OLDEST_PINS := (.*)", makefile).group(1)))  # type: ignore[union-attr]
    assert oldest == floors
    generated = sorted((ROOT / "src" / "pellucid" / "api").glob("*/*_pb2*.py"))
    assert any(p.parent.name == "oip" for p in generated)
    for path in generated:
        code = path.read_text()
        if path.name.endswith("_pb2_grpc.py"):
            assert f"GRPC_GENERATED_VERSION = '{floors['grpcio']}'" in code, path
        else:
            stamp = re.search(r"Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),", code)
            assert stamp is not None and ".".join(stamp.groups()) == floors["protobuf"], path
