"""The gRPC rows' client: `tritonclient.grpc` as a program would use it, driven by `load.measure_calls` (the
threads, warm-up, shared request count and summary every HTTP row has)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

from inference.benchmarking.load import Measurement, measure_calls


@dataclass(frozen=True)
class GrpcTarget:
    url: str  # host:port
    model: str  # owner/name
    inputs: dict[str, np.ndarray]
    headers: dict[str, str] = field(default_factory=dict)  # gRPC metadata, e.g. authorization: Bearer …

    def connect(self):
        # gRPC shares one TCP connection among channels with the same arguments; a local subchannel pool gives
        # each thread's client a connection of its own, as each HTTP thread has (the options are otherwise
        # tritonclient's defaults).
        options = [
            ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
            ("grpc.use_local_subchannel_pool", 1),
        ]
        return grpcclient.InferenceServerClient(url=self.url, channel_args=options)


def grpc_unreachable(url: str, timeout: float = 5.0) -> str:
    """Why nothing serves gRPC at `url`, or "" when a server answers ServerLive."""
    client = grpcclient.InferenceServerClient(url=url)
    try:
        if client.is_server_live(client_timeout=timeout):
            return ""
        return f"the gRPC server at {url} says it is not live"
    except InferenceServerException as exc:
        return f"nothing answers gRPC at {url} ({exc.status()}: {exc.message()})"
    finally:
        client.close()


class GrpcCaller:
    """One `InferenceServerClient` (one channel) calling ModelInfer with the same inputs each time."""

    def __init__(self, target: GrpcTarget, timeout: float):
        self.target, self.timeout = target, timeout
        self.client = target.connect()
        self.inputs = []
        for name, array in target.inputs.items():
            tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            tensor.set_data_from_numpy(array)
            self.inputs.append(tensor)

    def call(self) -> str | None:
        try:
            self.client.infer(
                self.target.model, self.inputs, headers=self.target.headers, client_timeout=self.timeout
            )
        except InferenceServerException as exc:
            return f"{exc.status()}: {(exc.message() or '')[:200]}"
        return None

    def close(self) -> None:
        self.client.close()


def measure_grpc(
    target: GrpcTarget,
    *,
    requests: int,
    concurrency: int,
    warmup: int = 100,
    max_seconds: float = 60.0,
    timeout: float = 70.0,
) -> Measurement:
    """ModelInfer `requests` times from `concurrency` threads, a client each (stopping after max_seconds)."""
    return measure_calls(
        lambda: GrpcCaller(target, timeout),
        requests=requests,
        concurrency=concurrency,
        warmup=warmup,
        max_seconds=max_seconds,
    )
