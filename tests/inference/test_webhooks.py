"""Webhooks without the worker: URLs aimed inside the network are refused (at request and delivery time), the
secret API, the signature, and one delivery attempt recorded."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import math
import ssl
import subprocess
import threading

import pytest
from django.utils import timezone

from inference import ledger, webhooks
from inference.models import Prediction, WebhookDelivery
from portal.models import ApiKey

from . import builders
from .conftest import post_json

pytestmark = pytest.mark.django_db

URL = "/api/v1/models/alice/mixed/predict"


def body(**extra) -> dict:
    inputs = builders.mixed_inputs(batch=1)
    return {
        "inputs": {
            name: [v.decode() for v in a.ravel()] if a.dtype == object else a.tolist()
            for name, a in inputs.items()
        },
        **extra,
    }


@pytest.mark.parametrize(
    "url, kind",
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("https://127.0.0.1/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://localhost:8443/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://[::ffff:10.0.0.7]/hook", "private"),
        ("https://10.1.2.3/hook", "private"),
        ("https://192.168.0.10/hook", "private"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://100.64.0.1/hook", "not globally routable"),
    ],
)
def test_it_refuses_webhooks_aimed_inside_the_network_with_400(client, alice_key, mixed, settings, url, kind):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = post_json(client, URL, body(webhook=url), alice_key)
    assert response.status_code == 400, response.content
    message = response.json()["webhook"][0]
    assert kind in message and "public address" in message
    assert not Prediction.objects.exists()  # refused before anything was admitted or queued


@pytest.mark.parametrize(
    "extra, field, words",
    [
        ({"webhook": "ftp://example.com/x"}, "webhook", "https URL"),
        ({"webhook": "https://user:pw@example.com/x"}, "webhook", "user name or password"),
        ({"webhook": 7}, "webhook", "https URL"),
        ({"webhook": "https://example.invalid/x"}, "webhook", "does not resolve"),
        (
            {"webhook": "https://example.com/x", "webhook_events_filter": ["done"]},
            "webhook_events_filter",
            "start",
        ),
        ({"webhook": "https://example.com/x", "webhook_events_filter": []}, "webhook_events_filter", "start"),
        ({"webhook_events_filter": ["completed"]}, "webhook_events_filter", "webhook"),
    ],
)
def test_it_names_the_problem_of_a_bad_webhook(client, alice_key, mixed, settings, extra, field, words):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = post_json(client, URL, body(**extra), alice_key)
    assert response.status_code == 400, response.content
    assert words in response.json()[field][0]


def test_plain_http_to_a_public_address_is_refused(client, alice_key, mixed, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = post_json(client, URL, body(webhook="http://93.184.215.14/hook"), alice_key)
    assert response.status_code == 400 and "https" in response.json()["webhook"][0]


def test_addresses_that_carry_a_private_ipv4_address_are_refused():
    for address in ("::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1", "fe80::1", "fd00::1"):
        assert webhooks.address_kind(address) is not None, address
    for address in ("93.184.215.14", "2606:4700::1111"):
        assert webhooks.address_kind(address) is None, address


# --- the secret ---------------------------------------------------------------------------------------------


def test_the_secret_is_a_whsec_key_that_post_rotates(client, alice):
    key = ApiKey.issue(user=alice, name="k", scopes=["predict"])[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    first = client.get("/api/v1/webhooks/secret", **auth).json()["key"]
    assert first.startswith("whsec_") and len(base64.b64decode(first.removeprefix("whsec_"))) == 32
    assert client.get("/api/v1/webhooks/secret", **auth).json()["key"] == first
    rotated = client.post("/api/v1/webhooks/secret", **auth)
    assert rotated.status_code == 200
    assert rotated.json()["key"] != first
    assert client.get("/api/v1/webhooks/secret", **auth).json()["key"] == rotated.json()["key"]


def test_the_secret_needs_a_key_with_the_predict_scope(client, alice):
    read_only = ApiKey.issue(user=alice, name="k", scopes=["read"])[1]
    assert client.get("/api/v1/webhooks/secret", HTTP_AUTHORIZATION=f"Bearer {read_only}").status_code == 403
    assert client.get("/api/v1/webhooks/secret").status_code in (401, 403)


def test_the_signature_is_the_standard_webhooks_one():
    # The specification's algorithm, written out here: HMAC-SHA256 keyed with the base64-decoded secret over
    # "{id}.{timestamp}.{body}", base64, prefixed with "v1,".
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    payload = b'{"id":"x"}'
    expected = hmac.new(b"k" * 32, b"msg_1.1700000000." + payload, hashlib.sha256).digest()
    signature = webhooks.sign(secret=secret, message_id="msg_1", timestamp=1700000000, body=payload)
    assert signature == "v1," + base64.b64encode(expected).decode()


# --- one delivery attempt -----------------------------------------------------------------------------------


class Receiver:
    """A real HTTP server on a free loopback port, in a thread, answering each POST with the next status."""

    def __init__(self, statuses=(204,)):
        self.received: list[tuple[dict, bytes]] = []
        self.statuses = list(statuses)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                receiver.received.append(
                    ({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                )
                status = receiver.statuses.pop(0) if len(receiver.statuses) > 1 else receiver.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    receivers = []

    def start(statuses=(204,)):
        receivers.append(Receiver(statuses))
        return receivers[-1]

    yield start
    for item in receivers:
        item.close()


def ended_prediction(user, version, url: str) -> Prediction:
    return Prediction.objects.create(
        user=user,
        version=version,
        created_at=timezone.now(),
        status="succeeded",
        finished_at=timezone.now(),
        outputs=[{"name": "y", "datatype": "FP32", "shape": [1], "data": [float("nan")]}],
        webhook=url,
        webhook_events_filter=["completed"],
    )


def test_a_delivery_is_signed_recorded_and_carries_the_record(alice, mixed, settings, receiver):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    hook = receiver()
    prediction = ended_prediction(alice, mixed, hook.url)
    result, _ = webhooks.delivery_attempt(
        prediction_id=str(prediction.id), event="completed", message_id="msg_abc", body=None, attempt=1
    )
    assert result.delivered and result.status_code == 204
    headers, payload = hook.received[0]
    assert headers["webhook-id"] == "msg_abc"
    secret = webhooks.secret_get(alice).key
    signed = f"msg_abc.{headers['webhook-timestamp']}.".encode() + payload
    digest = hmac.new(base64.b64decode(secret.removeprefix("whsec_")), signed, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()
    record = json.loads(payload)
    assert record["id"] == str(prediction.id) and record["status"] == "succeeded"
    assert record["model"] == "alice/mixed" and record["url"] == f"/api/v1/predictions/{prediction.id}"
    assert math.isnan(record["outputs"][0]["data"][0])  # NaN travels as the JSON literal, as on the API
    row = WebhookDelivery.objects.get()
    assert (row.event, row.attempt, row.status_code, row.message_id) == ("completed", 1, 204, "msg_abc")


def test_a_delivery_checks_the_address_again_and_sends_nothing_inside(alice, mixed, settings, receiver):
    # The URL was accepted when the prediction was made; now it resolves to loopback (DNS changed).
    hook = receiver()
    prediction = ended_prediction(alice, mixed, hook.url)
    settings.WEBHOOK_ALLOW_PRIVATE = False
    result, _ = webhooks.delivery_attempt(
        prediction_id=str(prediction.id), event="completed", message_id="msg_x", body=None, attempt=1
    )
    assert not result.delivered and not result.retry
    assert hook.received == []
    row = WebhookDelivery.objects.get()
    assert row.status_code is None and "loopback" in row.error


def test_redirects_are_not_followed(alice, mixed, settings, receiver):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    hook = receiver(statuses=(302,))
    prediction = ended_prediction(alice, mixed, hook.url)
    result, _ = webhooks.delivery_attempt(
        prediction_id=str(prediction.id), event="completed", message_id="msg_r", body=None, attempt=1
    )
    assert result.status_code == 302 and result.retry and len(hook.received) == 1


@pytest.mark.parametrize("url, queued", [("", 0), ("https://example.com/hook", 1)])
def test_only_predictions_with_a_webhook_queue_a_delivery_as_they_end(
    alice, mixed, django_capture_on_commit_callbacks, url, queued
):
    prediction = Prediction.objects.create(
        user=alice,
        version=mixed,
        created_at=timezone.now(),
        inputs=ledger.inputs_to_json({}),
        webhook=url,
        webhook_events_filter=["start", "output", "completed"] if url else [],
    )
    with django_capture_on_commit_callbacks() as callbacks:
        ledger.cancel(prediction)
    assert sum("events_enqueue" in callback.__qualname__ for callback in callbacks) == queued


def test_the_owner_sees_recent_deliveries_and_nobody_elses(client, alice, bob, mixed, settings, receiver):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    hook = receiver(statuses=(503,))
    prediction = ended_prediction(alice, mixed, hook.url)
    webhooks.delivery_attempt(
        prediction_id=str(prediction.id), event="completed", message_id="msg_1", body=None, attempt=1
    )
    alice_key = ApiKey.issue(user=alice, name="k", scopes=["read"])[1]
    bob_key = ApiKey.issue(user=bob, name="k", scopes=["read"])[1]
    seen = client.get("/api/v1/webhooks/deliveries", HTTP_AUTHORIZATION=f"Bearer {alice_key}").json()
    assert [(d["prediction"], d["event"], d["attempt"], d["status_code"]) for d in seen] == [
        (str(prediction.id), "completed", 1, 503)
    ]
    assert client.get("/api/v1/webhooks/deliveries", HTTP_AUTHORIZATION=f"Bearer {bob_key}").json() == []
    bad = client.get("/api/v1/webhooks/deliveries?prediction=nope", HTTP_AUTHORIZATION=f"Bearer {alice_key}")
    assert bad.status_code == 400


def test_a_host_name_that_is_not_a_name_is_a_400(client, alice_key, mixed, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = post_json(client, URL, body(webhook="https://" + "a" * 70 + ".example/x"), alice_key)
    assert response.status_code == 400 and "does not resolve" in response.json()["webhook"][0]


# --- https: connected to the checked address, the certificate verified for the host name -------------------


def openssl(*args, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def tls_receiver(tmp_path):
    """An https receiver on loopback with a certificate for `localhost` from a certificate authority of its
    own (made with the openssl command): (receiver, its URL, the authority's PEM file)."""
    authority = "basicConstraints=critical,CA:TRUE"
    openssl(
        *(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
        ),
        *("-subj", "/CN=Webhook test CA", "-addext", authority, "-addext", "keyUsage=critical,keyCertSign"),
        cwd=tmp_path,
    )
    openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "leaf.key", "-out", "leaf.csr"),
        *("-subj", "/CN=localhost"),
        cwd=tmp_path,
    )
    (tmp_path / "leaf.ext").write_text(
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        *("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"),
        *("-out", "leaf.pem", "-days", "2", "-extfile", "leaf.ext"),
        cwd=tmp_path,
    )
    hook = Receiver()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "leaf.pem", tmp_path / "leaf.key")
    hook.server.socket = context.wrap_socket(hook.server.socket, server_side=True)
    port = hook.server.server_address[1]
    yield hook, f"https://localhost:{port}/hook", str(tmp_path / "ca.pem")
    hook.close()


def test_an_https_delivery_verifies_the_certificate_for_the_host_name(alice, mixed, settings, tls_receiver):
    hook, url, authority = tls_receiver
    settings.WEBHOOK_ALLOW_PRIVATE = True
    prediction = ended_prediction(alice, mixed, url)

    settings.WEBHOOK_CA_BUNDLE = ""  # the system's authorities do not know this certificate
    refused, _ = webhooks.delivery_attempt(
        prediction_id=str(prediction.id), event="completed", message_id="msg_t", body=None, attempt=1
    )
    assert refused.status_code is None and refused.retry and "CERTIFICATE_VERIFY_FAILED" in refused.error
    assert hook.received == []

    settings.WEBHOOK_CA_BUNDLE = authority
    delivered, _ = webhooks.delivery_attempt(
        prediction_id=str(prediction.id), event="completed", message_id="msg_t", body=None, attempt=2
    )
    assert delivered.delivered, delivered.error
    headers, payload = hook.received[0]
    assert headers["host"] == url.split("/")[2] and json.loads(payload)["id"] == str(prediction.id)


@pytest.mark.parametrize(
    "status, wanted",
    [("succeeded", ["output", "completed"]), ("failed", ["completed"]), ("canceled", ["completed"])],
)
def test_an_ending_sends_output_only_when_there_are_outputs(status, wanted):
    assert webhooks.events_of_ending(status=status, events=list(webhooks.EVENTS)) == wanted
    assert webhooks.events_of_ending(status=status, events=["start"]) == []


def test_a_url_with_spaces_is_a_400(client, alice_key, mixed):
    response = post_json(client, URL, body(webhook="https://example.com/a b"), alice_key)
    assert response.status_code == 400 and "spaces" in response.json()["webhook"][0]
