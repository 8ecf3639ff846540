"""The interactive consumer: `python -m inference.consumer --name NAME`, started and watched by the worker.

It drains the per-model queues in Redis, runs one batched call per model and replies to each caller. The
finished calls go onto the `records` list, which the worker's supervisor writes to the database in bulk
(`predictions_record`). See `inference.interactive` for the keys.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time

import numpy as np

logger = logging.getLogger("inference.consumer")

WAKE_DRAIN = 256


def run_batch(runtime, signature: dict, batch: list[dict[str, np.ndarray]], seconds: float | None) -> list:
    """One call for the batch when every input's dim 0 is dynamic and the rest agree, else one call each.

    Returns, per request, its outputs or the RuntimeFailure it met.
    """
    from .runtimes import RuntimeFailure

    if len(batch) > 1 and _concatenable(signature, batch):
        sizes = [next(iter(tensors.values())).shape[0] for tensors in batch]
        joined = {name: np.concatenate([tensors[name] for tensors in batch]) for name in batch[0]}
        try:
            outputs = runtime.run_with_limit(joined, seconds)
        except RuntimeFailure as exc:
            if exc.timed_out:
                return [exc] * len(batch)
            outputs = None  # one bad request must not fail the others: run them one by one
        if outputs is not None and all(o.ndim and o.shape[0] == sum(sizes) for o in outputs.values()):
            cuts = np.cumsum(sizes)[:-1]
            split = {name: np.split(array, cuts) for name, array in outputs.items()}
            return [{name: parts[i] for name, parts in split.items()} for i in range(len(batch))]
    results = []
    for tensors in batch:
        try:
            results.append(runtime.run_with_limit(tensors, seconds))
        except RuntimeFailure as exc:
            results.append(exc)
    return results


def _concatenable(signature: dict, batch: list[dict[str, np.ndarray]]) -> bool:
    specs = signature.get("inputs", [])
    if not specs or any(not spec["shape"] or spec["shape"][0] != -1 for spec in specs):
        return False
    for tensors in batch:
        if len({array.shape[0] for array in tensors.values()}) != 1:
            return False
    first = batch[0]
    return all(
        tensors[name].shape[1:] == first[name].shape[1:] and tensors[name].dtype == first[name].dtype
        for tensors in batch[1:]
        for name in first
    )


def serve_batch(items: list[bytes], consumer: str) -> None:
    from django.conf import settings
    from django.db import close_old_connections

    from . import interactive
    from .runtimes import RuntimeFailure, runtime_for
    from .services import version_ref_cached

    requests = [interactive.unpack_tensors(item) for item in items]
    headers = [header for header, _ in requests]
    redis = interactive.client()
    redis.set(
        interactive.key("inflight", consumer),
        json.dumps({"started": time.time(), "headers": headers}),
        ex=3600,
    )
    started_at = time.time()
    started = time.perf_counter()
    close_old_connections()  # only a version seen for the first time queries the database
    try:
        ref = version_ref_cached(version_id=headers[0]["version_id"])
        runtime = runtime_for(ref)
        results = run_batch(
            runtime, ref.signature, [t for _, t in requests], settings.CELERY_TASK_SOFT_TIME_LIMIT
        )
    except RuntimeFailure as exc:
        results = [exc] * len(requests)
    compute_ms = (time.perf_counter() - started) * 1000 / len(requests)
    finished_at = time.time()
    pipe = redis.pipeline(transaction=False)
    for header, result in zip(headers, results, strict=True):
        record = {
            **header,
            "status": "succeeded",
            "error": "",
            "started_at": started_at,
            "finished_at": finished_at,
            "queue_ms": max(0.0, (started_at - header["created_at"]) * 1000),
            "compute_ms": compute_ms,
        }
        if isinstance(result, RuntimeFailure):
            record["status"], record["error"] = "failed", str(result)
            # A timeout is the server's limit, not the caller's mistake: /v2 answers 503 for it.
            interactive.reply(
                pipe,
                header["id"],
                {"status": "failed", "error": str(result), "unavailable": result.timed_out},
            )
            result = {}
        else:
            interactive.reply(pipe, header["id"], {"status": "succeeded", "compute_ms": compute_ms}, result)
        # The worker's supervisor writes these to the database in bulk: the serving loop never waits on it.
        pipe.rpush(interactive.key("records"), interactive.pack_tensors(record, result))
    pipe.delete(interactive.key("inflight", consumer))
    pipe.execute()


def consume(consumer: str) -> None:
    from . import interactive

    redis = interactive.client()
    parent = os.getppid()
    wake_key = interactive.key("wake")
    from django.conf import settings

    batch_size = settings.INFERENCE_MAX_BATCH
    logger.info("interactive consumer %s serving", consumer)
    while os.getppid() == parent:  # the worker that started us is gone: so are we
        item = redis.blpop([wake_key], timeout=1)
        if item is None:
            continue
        # Every request's wake-up is pushed after the request, and popped here before its queue is read: no
        # request is left behind without a wake-up to find it.
        first = item[1]
        pipe = redis.pipeline(transaction=False)
        pipe.lpop(wake_key, WAKE_DRAIN)
        pipe.lpop(interactive.key("q", first.decode()), batch_size)
        more, items = pipe.execute()
        for model_queue in dict.fromkeys([first, *(more or [])]):
            if items is None:
                items = redis.lpop(interactive.key("q", model_queue.decode()), batch_size)
            while items:
                try:
                    serve_batch(items, consumer)
                except Exception:
                    logger.exception("interactive batch failed")
                    fail_batch(items, "The worker could not run this request.")
                if len(items) < batch_size:
                    break
                items = redis.lpop(interactive.key("q", model_queue.decode()), batch_size)
            items = None


def fail_batch(items: list[bytes], error: str) -> None:
    from . import interactive

    pipe = interactive.client().pipeline(transaction=False)
    for item in items:
        header, _ = interactive.unpack_tensors(item)
        interactive.reply(pipe, header["id"], {"status": "failed", "error": error, "unavailable": True})
    pipe.execute()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    consume(args.name)


if __name__ == "__main__":
    main()
