"""The Open Inference Protocol over gRPC (KServe's and Triton's `inference.GRPCInferenceService`), served by
grpcio's asyncio server.

A thin adapter, as the data plane's `/v2/…/infer` is for HTTP (`inference.dataplane.oip`): the same look-up
(`target_find`), admission and pipeline (`prediction_submit`), codec and outcome table, so keys, scopes,
visibility, quotas, records and the ledger are the same whichever protocol a client speaks. As there, the
steps that may touch the database run in threads, and the wait for the answer of a runner pool on this host
holds none (`services.prediction_wait_async`). The client's deadline bounds that wait; a call its client
cancels, or whose deadline passes, is canceled and costs nothing (grpcio cancels the call's task).

Only the translation to protobuf messages and gRPC status codes lives here. The message classes and the
servicer base are generated from the published proto and ship with `tritonclient[grpc]`; nothing here is
hand-written protobuf.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from concurrent.futures import Executor, ThreadPoolExecutor

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
)
from portal.outages import log_outage, outage_of
from portal.quotas import QuotaExceeded, QuotaUnavailable, RequestQuotaState, current_request_state

from ..codec import BinaryBody, TensorError, decode_oip_tensors, encode_outputs_oip
from ..models import Prediction
from ..outcomes import Kind, message_of, retry_headers
from ..runtimes import platform_of
from ..scheduling import queue
from ..services import (
    GateClosed,
    Submission,
    Target,
    VersionNotFound,
    VersionValidating,
    prediction_give_up,
    prediction_submit,
    prediction_wait_async,
    target_find,
)
from ..text import TextError, oip_text_request, with_text_outputs
from .oip import (
    SERVER_NAME,
    SERVER_VERSION,
    _arrays_from_json,
    _broker_reachable,
    _database_reachable,
    infer_wait_seconds,
    oip_output_names,
)

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

    @classmethod
    def of(cls, kind: Kind, message: str) -> RpcError:
        """An outcome's answer, as the outcome table gives it (Retry-After as `retry-after` trailers)."""
        trailers = tuple((name.lower(), value) for name, value in retry_headers(kind).items())
        return cls(getattr(grpc.StatusCode, kind.answer.grpc), message, trailers)


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
    grpc.StatusCode.CANCELLED: "canceled",
}


class Call:
    """One RPC on its way: its request id and log record, its quota state, and the threads in which its steps
    that may touch the database run, in the call's context (as the data plane's `Exchange`)."""

    def __init__(self, threads: Executor, context: grpc.aio.ServicerContext):
        self.threads = threads
        self.metadata = dict(context.invocation_metadata() or ())
        self.record = RequestRecord(id=request_id_from(self.metadata.get("x-request-id")))
        self.context = contextvars.copy_context()
        self.context.run(current_request.set, self.record)
        self.context.run(current_request_state.set, RequestQuotaState())

    @property
    def authorization(self) -> str:
        return self.metadata.get("authorization", "")

    def in_thread(self, function, *args):
        """Run `function(*args)` in a thread, in this call's context; an awaitable of its result."""
        # A copy each time: a step the caller stopped awaiting (it left) may still be running in the first.
        return asyncio.get_running_loop().run_in_executor(
            self.threads, self.context.copy().run, _with_connections, function, *args
        )


def _with_connections(function, *args):
    """What Django does around each request: connections that broke or outlived CONN_MAX_AGE are closed."""
    close_old_connections()
    try:
        return function(*args)
    finally:
        close_old_connections()


def rpc(method):
    """Runs one call the way Django runs a request (`Call`): quota state, errors mapped to status codes, a
    request id and one log line (and, for ModelInfer, the request metrics). `method(self, request, context,
    call)` is a coroutine."""

    async def handler(self, request, context):
        call = Call(self.threads, context)
        code = grpc.StatusCode.OK
        try:
            return await method(self, request, context, call)
        except RpcError as exc:
            code = exc.code
            await context.abort(exc.code, str(exc), exc.trailers)
        except QuotaExceeded as exc:
            code = grpc.StatusCode.RESOURCE_EXHAUSTED
            await context.abort(code, exc.message, (("retry-after", str(exc.retry_after)),))
        except QuotaUnavailable as exc:
            code = grpc.StatusCode.UNAVAILABLE
            await context.abort(code, str(exc.detail), (("retry-after", "5"),))
        except (queue.Unavailable, queue.ModelBusy) as exc:
            refused = RpcError.of(Kind.UNAVAILABLE, str(exc))
            code = refused.code
            await context.abort(refused.code, str(refused), refused.trailers)
        except asyncio.CancelledError:
            # The client canceled, or its deadline passed: grpcio cancels the call's task.
            code = deadline_or_cancel(context)
            raise
        except Exception as exc:
            outage = outage_of(exc)
            if outage is None:
                code = grpc.StatusCode.UNKNOWN
                raise
            # PostgreSQL, Redis or the broker is down: retryable, as the HTTP APIs' 503 + Retry-After.
            log_outage(outage, exc, method.__name__)
            code = grpc.StatusCode.UNAVAILABLE
            await context.abort(code, outage.message, (("retry-after", str(outage.retry_after)),))
        finally:
            extra = {"method": method.__name__}
            prefix = key_prefix_of(call.authorization)
            if prefix:
                extra["key_prefix"] = prefix
            call.record.fields.setdefault("outcome", GRPC_OUTCOMES.get(code, "error"))
            request_finished(
                record=call.record,
                protocol="grpc" if method.__name__ == "ModelInfer" else None,
                status=code.name,
                extra=extra,
            )

    handler.__name__ = method.__name__
    handler.__doc__ = method.__doc__
    return handler


def deadline_or_cancel(context) -> grpc.StatusCode:
    """What the client saw when it left: its deadline passed, or it canceled."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED


def caller(authorization: str, *, scope: str, key_required: bool):
    """The key's user and key from `authorization: Bearer …` metadata; (None, None) without one, when none is
    required. A key sent must have `scope`."""
    if not authorization:
        if key_required:
            raise RpcError(
                grpc.StatusCode.UNAUTHENTICATED,
                "This call needs an API key: metadata authorization: Bearer <key>.",
            )
        return None, None
    try:
        key = authenticate_bearer(authorization)
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


def find(authorization: str, name: str, version: str, *, to_run: bool = False, infer: bool = False):
    """The caller, and the ready version of `owner/name` if they may see it (else NOT_FOUND) and, `to_run`,
    run it (else PERMISSION_DENIED, as the 403 of /v2). As on /v2: metadata and ready need no key, but a key
    sent needs `read`; inference needs a key with `predict`."""
    user, key = caller(authorization, scope="predict" if infer else "read", key_required=infer)
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


def infer_admit(request, authorization: str) -> tuple[Target, object, list | None, Submission]:
    """Check the caller, the model and the request, and admit and send the call (in a thread: the look-up,
    the key and the quota may query the database): (target, its text request, the outputs asked for, the
    submission)."""
    name, version = request.model_name, request.model_version
    user, key, target = find(authorization, name, version, to_run=True, infer=True)
    try:
        described, binary = request_inputs(request)
        text = oip_text_request(described, binary, target)
        tensors = text.tensors if text else decode_oip_tensors(described, target.signature, binary)
        requested = requested_outputs(request, oip_output_names(target, text))
    except (TensorError, TextError) as exc:
        raise RpcError.of(Kind.INVALID_INPUT, str(exc)) from None
    submission = prediction_submit(
        user=user,
        api_key=key,
        target=target,
        inputs=tensors,
        source=Prediction.Source.GRPC,
        bytes_in=request.ByteSize(),
    )
    return target, text, requested, submission


class InferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, threads: Executor):
        self.threads = threads

    @rpc
    async def ServerLive(self, request, context, call):
        return service_pb2.ServerLiveResponse(live=True)

    @rpc
    async def ServerReady(self, request, context, call):
        ready = await call.in_thread(lambda: _database_reachable() and _broker_reachable())
        return service_pb2.ServerReadyResponse(ready=ready)

    @rpc
    async def ServerMetadata(self, request, context, call):
        return service_pb2.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=["binary_tensor_data"]
        )

    @rpc
    async def ModelReady(self, request, context, call):
        def ready() -> bool:
            _, _, target = find(call.authorization, request.name, request.version, to_run=True)
            return not queue.enabled() or queue.serving(target.queue)

        return service_pb2.ModelReadyResponse(ready=await call.in_thread(ready))

    @rpc
    async def ModelMetadata(self, request, context, call):
        _, _, target = await call.in_thread(find, call.authorization, request.name, request.version)
        signature = target.signature
        return service_pb2.ModelMetadataResponse(
            name=target.slug,
            versions=[str(n) for n in target.versions] if not request.version else [request.version],
            platform=platform_of(target.format),
            inputs=tensor_metadata(signature.get("inputs", [])),
            outputs=tensor_metadata(signature.get("outputs", [])),
        )

    @rpc
    async def ModelInfer(self, request, context, call):
        admitting = call.in_thread(infer_admit, request, call.authorization)
        try:
            target, text, requested, submission = await asyncio.shield(admitting)
        except asyncio.CancelledError:  # the client left as its call was admitted: given up once it is
            admitting.add_done_callback(functools.partial(_give_up_admitted, call))
            raise
        # Not past the client's own deadline: nobody would be there to take the answer. A call still
        # unanswered then, or when the client cancels, is canceled and costs nothing.
        remaining, wait = context.time_remaining(), infer_wait_seconds()
        outcome = await prediction_wait_async(
            submission=submission,
            timeout=wait if remaining is None else max(0.0, min(wait, remaining)),
            in_thread=call.in_thread,
            caller_gone_at_timeout=remaining is not None and remaining < wait,
        )
        call.record.fields["outcome"] = outcome.kind.value
        if outcome.kind is Kind.CANCELED:
            raise RpcError(deadline_or_cancel(context), message_of(outcome))  # as the client saw it
        if outcome.kind is not Kind.SUCCEEDED:
            raise RpcError.of(outcome.kind, message_of(outcome))
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


def _give_up_admitted(call: Call, admitting: asyncio.Future) -> None:
    if not admitting.cancelled() and admitting.exception() is None:
        submission = admitting.result()[3]
        call.in_thread(functools.partial(prediction_give_up, submission, kind=Kind.CANCELED))


async def server_start(*, address: str, threads: int) -> tuple[grpc.aio.Server, int]:
    """Start a gRPC server with the servicer on the running event loop, bound to `address` (host:port; port 0
    picks one): (server, port). `threads` run the calls' steps that may touch the database; the waits for
    answers hold none."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", settings.DATA_UPLOAD_MAX_MEMORY_SIZE),
            ("grpc.max_send_message_length", -1),
        ],
    )
    executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc")
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(executor), server)
    port = server.add_insecure_port(address)
    await server.start()
    return server, port
