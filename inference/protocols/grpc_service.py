"""The Open Inference Protocol over gRPC (KServe's and Triton's `inference.GRPCInferenceService`).

A thin adapter, as `v2.model_infer` is for HTTP: the same look-up (`target_find`), admission and
pipeline (`prediction_submit`, `prediction_wait`) and codec, so keys, scopes, visibility, quotas, records
and the ledger are the same whichever protocol a client speaks. Only the translation to protobuf messages
and gRPC status codes lives here. The message classes and the servicer base are generated from the
published proto and ship with `tritonclient[grpc]`; nothing here is hand-written protobuf.
"""

from __future__ import annotations

import functools
import logging
from concurrent import futures

import grpc
from django.conf import settings
from django.db import close_old_connections
from rest_framework.exceptions import AuthenticationFailed
from tritonclient.grpc import service_pb2, service_pb2_grpc

from portal.authentication import authenticate_bearer
from portal.logs import (
    RequestRecord,
    current_request,
    key_prefix_of,
    request_finished,
    request_id_from,
    request_note,
)
from portal.outages import log_outage, outage_of
from portal.quotas import QuotaExceeded, QuotaUnavailable, RequestQuotaState, current_request_state

from ..codec import BinaryBody, TensorError, decode_oip_tensors, encode_outputs_oip
from ..models import Prediction
from ..runtimes import platform_of
from ..scheduling import queue
from ..services import (
    GateClosed,
    VersionNotFound,
    VersionValidating,
    caller_left,
    prediction_submit,
    prediction_wait,
    target_find,
)
from ..text import TextError, oip_text_request, with_text_outputs
from .oip import (
    SERVER_NAME,
    SERVER_VERSION,
    _arrays_from_json,
    _broker_reachable,
    _database_reachable,
    oip_output_names,
)
from .outcomes import GRPC_CODE, Ending, ending_of, message_of, retry_headers

logger = logging.getLogger(__name__)

# InferTensorContents fields by OIP datatype, for clients that send typed contents instead of raw bytes.
CONTENTS_FIELDS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class RpcError(Exception):
    """An answer other than OK: a gRPC status code and a message naming the problem."""

    def __init__(self, code: grpc.StatusCode, message: str, trailers: tuple = ()):
        super().__init__(message)
        self.code = code
        self.trailers = trailers


# A call's outcome label by its status code (as `portal.logs.outcome_of` does for HTTP).
GRPC_OUTCOMES = {
    grpc.StatusCode.OK: "succeeded",
    grpc.StatusCode.UNAUTHENTICATED: "denied",
    grpc.StatusCode.PERMISSION_DENIED: "denied",
    grpc.StatusCode.NOT_FOUND: "not_found",
    grpc.StatusCode.INVALID_ARGUMENT: "invalid",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "refused",
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "canceled",
}


def rpc(method):
    """Runs one call the way Django runs a request: fresh database connections, quota state, errors mapped,
    a request id and one log line (and, for ModelInfer, the request metrics)."""

    def handler(self, request, context):
        close_old_connections()
        token = current_request_state.set(RequestQuotaState())
        metadata = dict(context.invocation_metadata())
        record = RequestRecord(id=request_id_from(metadata.get("x-request-id")))
        record_token = current_request.set(record)
        code = grpc.StatusCode.OK
        try:
            return method(self, request, context)
        except RpcError as exc:
            code = exc.code
            if exc.trailers:
                context.set_trailing_metadata(exc.trailers)
            context.abort(exc.code, str(exc))
        except QuotaExceeded as exc:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            context.set_trailing_metadata((("retry-after", str(exc.retry_after)),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.message)
        except QuotaUnavailable as exc:
            code = grpc.StatusCode.UNAVAILABLE
            context.set_trailing_metadata((("retry-after", "5"),))
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc.detail))
        except (queue.Unavailable, queue.ModelBusy) as exc:
            code = grpc.StatusCode.UNAVAILABLE
            context.set_trailing_metadata((("retry-after", "1"),))
            context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception as exc:
            outage = outage_of(exc)
            if outage is None:
                code = grpc.StatusCode.UNKNOWN
                raise
            # PostgreSQL, Redis or the broker is down: retryable, as the HTTP APIs' 503 + Retry-After.
            log_outage(outage, exc, method.__name__)
            code = grpc.StatusCode.UNAVAILABLE
            context.set_trailing_metadata((("retry-after", str(outage.retry_after)),))
            context.abort(grpc.StatusCode.UNAVAILABLE, outage.message)
        finally:
            current_request_state.reset(token)
            current_request.reset(record_token)
            extra = {"method": method.__name__}
            prefix = key_prefix_of(metadata.get("authorization", ""))
            if prefix:
                extra["key_prefix"] = prefix
            record.fields.setdefault("outcome", GRPC_OUTCOMES.get(code, "error"))
            request_finished(
                record=record,
                protocol="grpc" if method.__name__ == "ModelInfer" else None,
                status=code.name,
                extra=extra,
            )
            close_old_connections()

    handler.__name__ = method.__name__
    handler.__doc__ = method.__doc__
    return handler


def caller(context, *, scope: str, key_required: bool):
    """The key's user and key from `authorization: Bearer …` metadata; (None, None) without one, when none is
    required. A key sent must have `scope`."""
    header = next((value for key, value in context.invocation_metadata() if key == "authorization"), "")
    if not header:
        if key_required:
            raise RpcError(
                grpc.StatusCode.UNAUTHENTICATED,
                "This call needs an API key: metadata authorization: Bearer <key>.",
            )
        return None, None
    try:
        key = authenticate_bearer(header)
    except AuthenticationFailed as exc:
        raise RpcError(grpc.StatusCode.UNAUTHENTICATED, str(exc.detail)) from None
    if not key.has_scope(scope):
        raise RpcError(grpc.StatusCode.PERMISSION_DENIED, f"This API key lacks the '{scope}' scope.")
    return key.user, key


def version_number(version: str) -> int | None:
    if not version:
        return None
    try:
        number = int(version)
    except ValueError:
        raise RpcError(
            grpc.StatusCode.INVALID_ARGUMENT, f"The model version {version!r} is not a number."
        ) from None
    if number < 1:
        raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, "Model versions are numbered from 1.")
    return number


def find(context, name: str, version: str, *, to_run: bool = False, infer: bool = False):
    """The caller, and the ready version of `owner/name` if they may see it (else NOT_FOUND) and, `to_run`,
    run it (else PERMISSION_DENIED, as the 403 of /v2). As on /v2: metadata and ready need no key, but a key
    sent needs `read`; inference needs a key with `predict`."""
    user, key = caller(context, scope="predict" if infer else "read", key_required=infer)
    owner, _, model = name.partition("/")
    if not owner or not model or "/" in model:
        raise RpcError(grpc.StatusCode.NOT_FOUND, f"No model {name!r}: model names are <owner>/<name>.")
    try:
        target = target_find(
            owner=owner, name=model, number=version_number(version), user=user, to_run=to_run
        )
    except VersionValidating as exc:
        trailers = (("retry-after", str(exc.retry_after)),)
        raise RpcError(grpc.StatusCode.UNAVAILABLE, str(exc), trailers) from None
    except VersionNotFound as exc:
        raise RpcError(grpc.StatusCode.NOT_FOUND, str(exc)) from None
    except GateClosed as exc:
        raise RpcError(grpc.StatusCode.PERMISSION_DENIED, str(exc)) from None
    return user, key, target


def tensor_metadata(specs: list[dict]) -> list:
    return [
        service_pb2.ModelMetadataResponse.TensorMetadata(
            name=spec["name"], datatype=spec["datatype"], shape=spec.get("shape", [])
        )
        for spec in specs
    ]


def request_inputs(request) -> tuple[list[dict], BinaryBody | None]:
    """The request's tensors in the HTTP JSON form the codec checks, raw contents as its binary extension."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise TensorError(f"the request has {len(request.inputs)} inputs but {len(raw)} raw_input_contents")
    described = []
    for position, tensor in enumerate(request.inputs):
        entry = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape)}
        if raw:
            entry["parameters"] = {"binary_data_size": len(raw[position])}
        else:
            field = CONTENTS_FIELDS.get(tensor.datatype)
            if field is None:
                raise TensorError(
                    f"input {tensor.name!r} ({tensor.datatype}) must be sent in raw_input_contents"
                )
            entry["data"] = list(getattr(tensor.contents, field))
        described.append(entry)
    return described, BinaryBody(b"".join(raw)) if raw else None


def requested_outputs(request, output_names: list[str]) -> list[dict] | None:
    requested = []
    for output in request.outputs:
        if output.name not in output_names:
            raise TensorError(f"unknown output {output.name!r}: the model's outputs are {output_names}")
        requested.append({"name": output.name, "parameters": {"binary_data": True}})
    return requested or None


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    @rpc
    def ServerLive(self, request, context):
        return service_pb2.ServerLiveResponse(live=True)

    @rpc
    def ServerReady(self, request, context):
        return service_pb2.ServerReadyResponse(ready=_database_reachable() and _broker_reachable())

    @rpc
    def ServerMetadata(self, request, context):
        return service_pb2.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=["binary_tensor_data"]
        )

    @rpc
    def ModelReady(self, request, context):
        _, _, target = find(context, request.name, request.version, to_run=True)
        if queue.enabled() and not queue.serving(target.queue):
            return service_pb2.ModelReadyResponse(ready=False)
        return service_pb2.ModelReadyResponse(ready=True)

    @rpc
    def ModelMetadata(self, request, context):
        _, _, target = find(context, request.name, request.version)
        signature = target.signature
        return service_pb2.ModelMetadataResponse(
            name=target.slug,
            versions=[str(n) for n in target.versions] if not request.version else [request.version],
            platform=platform_of(target.format),
            inputs=tensor_metadata(signature.get("inputs", [])),
            outputs=tensor_metadata(signature.get("outputs", [])),
        )

    @rpc
    def ModelInfer(self, request, context):
        user, key, target = find(context, request.model_name, request.model_version, to_run=True, infer=True)
        try:
            described, binary = request_inputs(request)
            text = oip_text_request(described, binary, target)
            tensors = text.tensors if text else decode_oip_tensors(described, target.signature, binary)
            requested = requested_outputs(request, oip_output_names(target, text))
        except (TensorError, TextError) as exc:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        submission = prediction_submit(
            user=user,
            api_key=key,
            target=target,
            inputs=tensors,
            source=Prediction.Source.GRPC,
            bytes_in=request.ByteSize(),
        )
        # Not past the client's own deadline, nor after it cancels: nobody would be there to take the
        # answer. A call still unanswered then is canceled and costs nothing (a queued one is not run).
        context.add_callback(functools.partial(caller_left, submission))
        remaining = context.time_remaining()
        timeout = settings.PREDICTION_TIME_LIMIT + 5
        outcome = prediction_wait(
            submission=submission,
            timeout=timeout if remaining is None else max(0.0, min(timeout, remaining)),
            fall_back_to_job=False,
            user=user,
            api_key=key,
            caller_gone_at_timeout=remaining is not None and remaining < timeout,
        )
        ending = ending_of(outcome)
        request_note(outcome=ending.value)
        if ending is not Ending.SUCCEEDED:
            trailers = tuple((name.lower(), value) for name, value in retry_headers(ending).items())
            raise RpcError(GRPC_CODE[ending], message_of(outcome), trailers)
        outputs = outcome.outputs if outcome.outputs is not None else _arrays_from_json(outcome.outputs_json)
        if text is not None:
            outputs = with_text_outputs(target, text, outputs)
        try:
            entries, chunks = encode_outputs_oip(outputs, requested, binary_default=True)
        except TensorError as exc:
            raise RpcError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        return service_pb2.ModelInferResponse(
            model_name=target.slug,
            model_version=str(target.number),
            id=request.id or str(submission.id),
            outputs=[
                service_pb2.ModelInferResponse.InferOutputTensor(
                    name=entry["name"], datatype=entry["datatype"], shape=entry["shape"]
                )
                for entry in entries
            ],
            raw_output_contents=chunks,
        )


def server_create(*, address: str, threads: int) -> tuple[grpc.Server, int]:
    """A gRPC server with the servicer, bound to `address` (host:port; port 0 picks one): (server, port)."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", settings.DATA_UPLOAD_MAX_MEMORY_SIZE),
            ("grpc.max_send_message_length", -1),
        ],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(), server)
    port = server.add_insecure_port(address)
    return server, port
