"""Webhooks: a prediction's record POSTed to the caller's URL as it starts and ends, signed per the Standard
Webhooks specification (https://www.standardwebhooks.com/) with the caller's secret.

    predict body `webhook`, `webhook_events_filter`  →  `target_check` (400 if it points inside the network)
    ledger transition (`ledger.job_start`, `ledger._account`)  →  `events_enqueue` at commit
    Celery task `inference.deliver_webhook`  →  `delivery_attempt`: resolve, check, connect to that address

Events are Replicate's: `start` (a worker took the prediction), `output` (its outputs exist: with our models,
once, as it succeeds) and `completed` (succeeded, failed or canceled).

Server-side request forgery: a URL must not reach loopback, private, link-local (cloud metadata at
169.254.169.254), unspecified, multicast or otherwise non-global addresses. It is checked when the prediction
is requested and again at every delivery; a delivery resolves the name once, checks every address, and
connects to the checked one (so a DNS answer that changes in between, "rebinding", cannot slip past), with a
short timeout and without following redirects. `WEBHOOK_ALLOW_PRIVATE=1` lifts the address check (and allows
plain http) for development and tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction

from portal.celery import app as celery_app

from .models import Prediction, WebhookDelivery, WebhookSecret
from .protocols.serializers import PredictionSerializer
from .task_names import DELIVER_WEBHOOK

logger = logging.getLogger(__name__)

EVENTS = ("start", "output", "completed")
URL_MAX_LENGTH = 2000
SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix the specification gives secrets


class WebhookRefused(ValueError):
    """A webhook URL or filter Modelport will not use; str(exc) names the problem (a 400 on `field`)."""

    def __init__(self, message: str, *, field: str = "webhook"):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Webhook:
    """A prediction's webhook, as the predict body gave it (checked)."""

    url: str
    events: list[str]


# --- the caller's signing secret ----------------------------------------------------------------------------


def _new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_get(user) -> WebhookSecret:
    """The user's signing secret, made on first use."""
    secret, _ = WebhookSecret.objects.get_or_create(user=user, defaults={"key": _new_secret()})
    return secret


def secret_rotate(user) -> WebhookSecret:
    """A new secret; deliveries from now on (retries too) are signed with it."""
    secret, created = WebhookSecret.objects.get_or_create(user=user, defaults={"key": _new_secret()})
    if not created:
        secret.key = _new_secret()
        secret.save(update_fields=["key", "created_at"])
    return secret


def sign(*, secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`, keyed with
    the secret's base64-decoded bytes (Standard Webhooks, "Signature scheme")."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# --- where a webhook may point ------------------------------------------------------------------------------


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), which is where it leads."""
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address.teredo:
        return address.teredo[1]
    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_kind(text: str) -> str | None:
    """Why a webhook may not reach this address ("loopback", "private"…), or None for a public one."""
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and (inner := _embedded_ipv4(address)) is not None:
        address = inner
    if address.is_loopback:
        return "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local (cloud metadata lives at 169.254.169.254)"
    if address.is_multicast:
        return "multicast"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "reserved, not globally routable"
    return None


def _parts(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an acceptable URL, or WebhookRefused."""
    if not isinstance(url, str) or not url:
        raise WebhookRefused("Must be an https URL.")
    if len(url) > URL_MAX_LENGTH:
        raise WebhookRefused(f"Must be at most {URL_MAX_LENGTH} characters.")
    if any(character.isspace() or ord(character) < 32 or ord(character) == 127 for character in url):
        raise WebhookRefused("Must not hold spaces or control characters (percent-encode them).")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"Not a valid URL: {exc}.") from None
    allowed = ("https", "http") if settings.WEBHOOK_ALLOW_PRIVATE else ("https",)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise WebhookRefused("Must be an https URL with a host name.")
    if parts.username or parts.password:
        raise WebhookRefused("Must not hold a user name or password.")
    scheme = parts.scheme
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname
    port = port or (443 if scheme == "https" else 80)
    if scheme not in allowed:
        # Checked after the address, so a URL aimed inside the network is refused for that reason first.
        _resolve_checked(host, port)
        raise WebhookRefused("Must be an https URL.")
    return scheme, host, port, path


def _resolve_checked(host: str, port: int) -> list[str]:
    """The addresses to connect to: every address `host` resolves to must be public (unless allowed)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:  # ValueError: names that are not names (too long, NUL, bad IDNA)
        raise WebhookRefused(f"The host {host!r} does not resolve ({exc}).") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise WebhookRefused(f"The host {host!r} does not resolve.")
    if not settings.WEBHOOK_ALLOW_PRIVATE:
        for address in addresses:
            kind = address_kind(address)
            if kind is not None:
                raise WebhookRefused(
                    f"{host} resolves to {address}, a {kind} address: webhooks must reach a public address."
                )
    return addresses


def target_check(url) -> str:
    """The URL, if a webhook may be sent there now; WebhookRefused (a 400) names what is wrong."""
    scheme, host, port, _ = _parts(url)
    _resolve_checked(host, port)
    return url


def webhook_from_body(data: dict) -> Webhook | None:
    """A predict body's `webhook` and `webhook_events_filter`, checked; None without a webhook."""
    url = data.get("webhook")
    events = data.get("webhook_events_filter")
    if url is None:
        if events is not None:
            raise WebhookRefused("Give a 'webhook' to send these events to.", field="webhook_events_filter")
        return None
    if events is None:
        events = list(EVENTS)
    if not isinstance(events, list) or not events or any(event not in EVENTS for event in events):
        raise WebhookRefused(f"Must be a list of {', '.join(EVENTS)}.", field="webhook_events_filter")
    return Webhook(url=target_check(url), events=list(dict.fromkeys(events)))


# --- from the ledger to the task ----------------------------------------------------------------------------


def events_enqueue(prediction_id, events: list[str], *, body: dict | None = None) -> None:
    """Queue one delivery per event, once the transaction that changed the prediction commits."""

    def send() -> None:
        for event in events:
            try:
                celery_app.send_task(
                    DELIVER_WEBHOOK,
                    kwargs={
                        "prediction_id": str(prediction_id),
                        "event": event,
                        "message_id": f"msg_{uuid.uuid4().hex}",
                        "body": _dumps(body) if body is not None else None,
                    },
                    queue=settings.WEBHOOK_QUEUE,
                )
            except Exception:  # the broker's errors vary by transport; the prediction itself is recorded
                logger.exception("could not queue the %s webhook of prediction %s", event, prediction_id)

    transaction.on_commit(send)


def events_of_ending(*, status: str, events: list[str]) -> list[str]:
    wanted = []
    if "output" in events and status == Prediction.Status.SUCCEEDED:
        wanted.append("output")
    if "completed" in events:
        wanted.append("completed")
    return wanted


def prediction_record(prediction: Prediction) -> dict:
    """The body: the prediction's record, as `GET /api/v1/predictions/<id>` returns it."""
    return PredictionSerializer(prediction).data


def _dumps(record: dict) -> str:
    # NaN and ±Infinity travel as JSON literals, as on the API (API.md).
    return json.dumps(record, separators=(",", ":"), default=str)


# --- one delivery attempt -----------------------------------------------------------------------------------


@dataclass
class Attempt:
    status_code: int | None
    error: str
    retry: bool

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def delivery_attempt(*, prediction_id: str, event: str, message_id: str, body: str | None, attempt: int):
    """POST the event once and record the attempt: (Attempt, body sent). `body` None: the record now."""
    prediction = (
        Prediction.objects.select_related("version__model__owner", "user").filter(id=prediction_id).first()
    )
    if prediction is None or not prediction.webhook:
        return Attempt(None, "The prediction is gone.", retry=False), body
    if body is None:
        body = _dumps(prediction_record(prediction))
    started = time.monotonic()
    try:
        status_code = _post(
            url=prediction.webhook,
            message_id=message_id,
            body=body.encode(),
            secret=secret_get(prediction.user).key,
        )
        result = Attempt(status_code, "", retry=not 200 <= status_code < 300)
    except WebhookRefused as exc:
        result = Attempt(None, f"Refused: {exc}", retry=False)
    except Exception as exc:  # network errors of every kind: the attempt failed, it is tried again
        result = Attempt(None, f"{type(exc).__name__}: {exc}"[:1000], retry=True)
    WebhookDelivery.objects.create(
        user_id=prediction.user_id,
        prediction_id=prediction.id,
        event=event,
        message_id=message_id,
        url=prediction.webhook,
        attempt=attempt,
        status_code=result.status_code,
        error=result.error,
        duration_ms=(time.monotonic() - started) * 1000,
    )
    return result, body


def _post(*, url: str, message_id: str, body: bytes, secret: str) -> int:
    """One POST to a checked address of `url`'s host (the next one if it cannot be reached): its status."""
    import urllib3

    scheme, host, port, path = _parts(url)
    addresses = _resolve_checked(host, port)
    timestamp = int(time.time())
    default_port = 443 if scheme == "https" else 80
    named = f"[{host}]" if ":" in host else host
    headers = {
        "Host": named if port == default_port else f"{named}:{port}",
        "Content-Type": "application/json",
        "User-Agent": "Modelport-Webhooks/1.0",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret=secret, message_id=message_id, timestamp=timestamp, body=body),
    }
    timeout = urllib3.Timeout(connect=settings.WEBHOOK_TIMEOUT_SECONDS, read=settings.WEBHOOK_TIMEOUT_SECONDS)
    for position, address in enumerate(addresses):
        if scheme == "https":
            # Connected to the checked address; the certificate is verified for the host name (sent as SNI).
            pool = urllib3.HTTPSConnectionPool(
                address,
                port,
                timeout=timeout,
                retries=False,
                maxsize=1,
                cert_reqs="CERT_REQUIRED",
                ca_certs=settings.WEBHOOK_CA_BUNDLE or None,
                server_hostname=host,
                assert_hostname=host,
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False, maxsize=1)
        try:
            response = pool.urlopen(
                "POST",
                path,
                body=body,
                headers=headers,
                redirect=False,
                retries=False,
                assert_same_host=False,
                preload_content=False,
            )
        except urllib3.exceptions.NewConnectionError:
            if position == len(addresses) - 1:
                raise
            continue  # nothing was sent: the host's next address
        finally:
            pool.close()
        # The answer's body is not read: only its status counts, and a receiver may not make us read much.
        status = response.status
        response.close()
        return status
    raise AssertionError("unreachable: the last address re-raises")


def retry_delay(attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: exponential backoff from WEBHOOK_RETRY_BASE_SECONDS, capped."""
    return min(settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** (attempt - 1), 3600.0)
