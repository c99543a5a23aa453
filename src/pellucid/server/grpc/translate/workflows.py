"""Workflows, their versions and runs: protos <-> engine types."""

from __future__ import annotations

from pellucid.api import v1
from pellucid.server.engine.predict import OutputCode
from pellucid.server.engine.workflow_runs import NodeOutput, WorkflowRunRequest, WorkflowRunResult
from pellucid.server.engine.workflows import NodeSpec, WorkflowSpec
from pellucid.server.grpc.convert import to_dict, to_struct, to_timestamp
from pellucid.server.grpc.translate.models import output_config_record, output_message, predict_input
from pellucid.server.records import WorkflowNodeRecord, WorkflowRecord, WorkflowVersionRecord

# Status.description of an output: a short name of its code, as the reference platform gives
DESCRIPTIONS = {
    OutputCode.OK: "Ok",
    OutputCode.INVALID_ARGUMENT: "Invalid input",
    OutputCode.DEADLINE_EXCEEDED: "Deadline exceeded",
    OutputCode.NOT_FOUND: "Model not found",
    OutputCode.FAILED_PRECONDITION: "Node not run",
    OutputCode.UNAVAILABLE: "No runner",
}


def node_spec(node: v1.WorkflowNode) -> NodeSpec:
    model = node.model
    return NodeSpec(
        id=node.id,
        model_id=model.id,
        model_user_id=model.user_id,
        model_app_id=model.app_id,
        model_version_id=model.model_version.id,
        model_type_id=model.model_type_id,
        params=to_dict(model.model_version.output_info.params),
        node_inputs=tuple(i.node_id for i in node.node_inputs),
    )


def workflow_spec(workflow: v1.Workflow) -> WorkflowSpec:
    """A workflow to create: its nodes (those of `workflow.version` if `nodes` is empty)."""
    nodes = workflow.nodes or workflow.version.nodes
    return WorkflowSpec(
        id=workflow.id,
        description=workflow.description,
        metadata=to_dict(workflow.metadata),
        nodes=tuple(node_spec(n) for n in nodes),
        version_id=workflow.version.id,
        version_description=workflow.version.description,
        version_metadata=to_dict(workflow.version.metadata),
    )


def version_spec(version: v1.WorkflowVersion) -> WorkflowSpec:
    return WorkflowSpec(
        nodes=tuple(node_spec(n) for n in version.nodes),
        version_id=version.id,
        version_description=version.description,
        version_metadata=to_dict(version.metadata),
    )


def node_message(node: WorkflowNodeRecord) -> v1.WorkflowNode:
    model = v1.Model(
        id=node.model_id,
        user_id=node.model_user_id,
        app_id=node.model_app_id,
        model_type_id=node.model_type_id,
        model_version=v1.ModelVersion(
            id=node.model_version_id,
            model_id=node.model_id,
            app_id=node.model_app_id,
            user_id=node.model_user_id,
            output_info=v1.OutputInfo(params=to_struct(node.params)),
        ),
    )
    return v1.WorkflowNode(id=node.id, model=model, node_inputs=[v1.NodeInput(node_id=p) for p in node.node_inputs])


def version_message(version: WorkflowVersionRecord) -> v1.WorkflowVersion:
    return v1.WorkflowVersion(
        id=version.id,
        workflow_id=version.workflow_id,
        app_id=version.app_id,
        user_id=version.user_id,
        description=version.description,
        nodes=[node_message(n) for n in version.nodes],
        deprecated=bool(version.deleted_pins),
        deprecated_reason="; ".join(f"node {node!r}: {why}" for node, why in version.deleted_pins),
        metadata=to_struct(version.metadata),
        created_at=to_timestamp(version.created_at),
    )


def workflow_message(workflow: WorkflowRecord, version: WorkflowVersionRecord | None) -> v1.Workflow:
    message = v1.Workflow(
        id=workflow.id,
        app_id=workflow.app_id,
        user_id=workflow.user_id,
        description=workflow.description,
        metadata=to_struct(workflow.metadata),
        created_at=to_timestamp(workflow.created_at),
        modified_at=to_timestamp(workflow.modified_at),
    )
    if version is not None:
        message.version.CopyFrom(version_message(version))
        message.nodes.extend(message.version.nodes)
    return message


def run_request(request: v1.PostWorkflowResultsRequest, deadline_seconds: float) -> WorkflowRunRequest:
    return WorkflowRunRequest(
        user_id=request.user_id,
        app_id=request.app_id,
        workflow_id=request.workflow_id,
        version_id=request.version_id,
        inputs=tuple(predict_input(i) for i in request.inputs),
        output_config=output_config_record(request.output_config) if request.HasField("output_config") else None,
        deadline_seconds=deadline_seconds,
    )


def _node_output(made: NodeOutput) -> v1.Output:
    output = made.output
    message = output_message(output)
    message.status.code = int(output.code)  # type: ignore[assignment]
    message.status.description = DESCRIPTIONS.get(output.code, "Failed")
    message.status.details = output.message
    node = made.node
    message.model.CopyFrom(
        v1.Model(
            id=node.model_id,
            user_id=node.model_user_id,
            app_id=node.model_app_id,
            model_type_id=node.model_type_id,
            model_version=v1.ModelVersion(id=node.model_version_id),
        )
    )
    message.id = node.id
    return message


def run_response(result: WorkflowRunResult) -> v1.PostWorkflowResultsResponse:
    results = []
    for item in result.results:
        failed = [o.output for o in item.outputs if o.output.code is not OutputCode.OK]
        status = v1.Status(code=v1.Status.OK, description="Ok")
        if failed:
            status = v1.Status(
                code=int(failed[0].code),  # type: ignore[arg-type]
                description="Some nodes failed",
                message=failed[0].message,
                details=f"{len(failed)} of {len(item.outputs)} nodes failed; the first: {failed[0].message}",
            )
        results.append(
            v1.WorkflowResult(
                id=item.input.id,
                status=status,
                input=v1.Input(id=item.input.id),
                outputs=[_node_output(o) for o in item.outputs],
            )
        )
    return v1.PostWorkflowResultsResponse(workflow_version=version_message(result.version), results=results)
