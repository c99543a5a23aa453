"""Assembles a grpc.Server: the servicers, the auth interceptor, health checking and reflection."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from pellucid.api import v1
from pellucid.server.engine import Engine
from pellucid.server.grpc.algorithms import AlgorithmServicer
from pellucid.server.grpc.apps import AppServicer
from pellucid.server.grpc.concepts import ConceptServicer
from pellucid.server.grpc.data import DataServicer, add_data_service
from pellucid.server.grpc.datasets import DatasetServicer
from pellucid.server.grpc.deployments import DeploymentServicer
from pellucid.server.grpc.evaluations import EvaluationServicer
from pellucid.server.grpc.inputs import InputServicer
from pellucid.server.grpc.interceptor import AuthInterceptor
from pellucid.server.grpc.limits import CallLimits
from pellucid.server.grpc.models import ModelServicer
from pellucid.server.grpc.modules import ModuleServicer
from pellucid.server.grpc.pool import HandlerPool
from pellucid.server.grpc.runners import RunnerServicer
from pellucid.server.grpc.search import SearchServicer
from pellucid.server.grpc.training import TrainingServicer
from pellucid.server.grpc.users import UserServicer
from pellucid.server.grpc.workflows import WorkflowServicer

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _add_oip(servicer: Any, server: grpc.Server) -> None:
    """The Open Inference Protocol's service, imported only when a server is built (grpc/oip.py)."""
    from pellucid.server.grpc import oip

    oip.add_to_server(servicer, server)


def _oip_servicer(engine: Engine) -> Any:
    from pellucid.server.grpc import oip

    return oip.InferenceServicer(engine)


SERVICES: list[tuple[Callable[[Any, grpc.Server], None], Callable[[Engine], Any], str]] = [
    (v1.add_UserServiceServicer_to_server, UserServicer, "UserService"),
    (v1.add_AppServiceServicer_to_server, AppServicer, "AppService"),
    (v1.add_ConceptServiceServicer_to_server, ConceptServicer, "ConceptService"),
    (v1.add_DatasetServiceServicer_to_server, DatasetServicer, "DatasetService"),
    (v1.add_InputServiceServicer_to_server, InputServicer, "InputService"),
    (v1.add_ModelServiceServicer_to_server, ModelServicer, "ModelService"),
    (v1.add_RunnerServiceServicer_to_server, RunnerServicer, "RunnerService"),
    (v1.add_SearchServiceServicer_to_server, SearchServicer, "SearchService"),
    (v1.add_ModuleServiceServicer_to_server, ModuleServicer, "ModuleService"),
    (v1.add_AlgorithmServiceServicer_to_server, AlgorithmServicer, "AlgorithmService"),
    (v1.add_TrainingServiceServicer_to_server, TrainingServicer, "TrainingService"),
    (v1.add_WorkflowServiceServicer_to_server, WorkflowServicer, "WorkflowService"),
    (v1.add_EvaluationServiceServicer_to_server, EvaluationServicer, "EvaluationService"),
    (_add_oip, _oip_servicer, "inference.GRPCInferenceService"),  # a full name: not pellucid.api.v1
    (add_data_service, DataServicer, "DataService"),  # DownloadDataFiles sends data chunks encoded
    (v1.add_DeploymentServiceServicer_to_server, DeploymentServicer, "DeploymentService"),
]


class BuiltServer(NamedTuple):
    server: grpc.Server
    port: int
    health: health.HealthServicer
    # the threads that run handlers: grpc's stop() cancels calls but does not wait for their
    # handlers to return, so whoever closes the stores afterwards drains this first
    executor: HandlerPool


def build_server(
    engine: Engine,
    host: str = "127.0.0.1",
    port: int = 0,
    max_workers: int = 256,
    limits: CallLimits | None = None,
    credentials: grpc.ServerCredentials | None = None,
) -> BuiltServer:
    """A server bound to host:port (0 = a port the OS picks), not yet started; returns the bound port.

    With `credentials` (grpc.ssl_server_credentials) the port speaks TLS only. Each call runs
    on one of `max_workers` threads; `limits` caps the long calls (streams, predicts) so that a
    quarter of them stay free for short calls (see grpc/limits.py). No
    `maximum_concurrent_rpcs`: past it gRPC refuses every call, health checks included.
    """
    limits = dataclasses.replace(limits or CallLimits(), max_workers=max_workers)
    executor = HandlerPool(max_workers, thread_name_prefix="pellucid-rpc")
    server = grpc.server(
        executor,  # type: ignore[arg-type]  # grpc takes any Executor; its stubs name ThreadPoolExecutor
        interceptors=[AuthInterceptor(engine, limits)],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    names = []
    for add, servicer, name in SERVICES:
        add(servicer(engine), server)
        names.append(name if "." in name else f"pellucid.api.v1.{name}")
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ["", *names]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    try:
        if credentials is None:
            bound = server.add_insecure_port(f"{host}:{port}")
        else:
            bound = server.add_secure_port(f"{host}:{port}", credentials)
    except RuntimeError as exc:  # newer grpcio raises instead of returning 0
        raise OSError(f"cannot listen on {host}:{port}: {exc}") from None
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    return BuiltServer(server, bound, health_servicer, executor)
