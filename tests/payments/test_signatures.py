"""The signature check of CONTRACT.md, as a unit."""

import time

import pytest

from payments.exceptions import WebhookRejected
from payments.signatures import parse_event, sign, verify

BODY = b'{"id":"evt_1","object":"event","type":"x","data":{"object":{}}}'
SECRET = "whsec_test"


def test_a_correct_signature_passes():
    verify(body=BODY, header=sign(BODY, SECRET), secrets=[SECRET])


def test_any_matching_v1_is_accepted():
    timestamp = int(time.time())
    good = sign(BODY, SECRET, timestamp).split("v1=")[1]
    header = f"t={timestamp},v1={'0' * 64},v1={good}"

    verify(body=BODY, header=header, secrets=[SECRET])


def test_an_old_secret_still_passes_during_rotation():
    verify(body=BODY, header=sign(BODY, "whsec_old"), secrets=["whsec_new", "whsec_old"])


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "v1=abc",
        "t=notanumber,v1=abc",
        "t=123",
    ],
)
def test_malformed_headers_are_rejected(header):
    with pytest.raises(WebhookRejected):
        verify(body=BODY, header=header, secrets=[SECRET])


def test_a_wrong_secret_is_rejected():
    with pytest.raises(WebhookRejected):
        verify(body=BODY, header=sign(BODY, "whsec_other"), secrets=[SECRET])


def test_a_changed_body_is_rejected():
    with pytest.raises(WebhookRejected):
        verify(body=BODY + b" ", header=sign(BODY, SECRET), secrets=[SECRET])


@pytest.mark.parametrize("offset", [-301, 301, -10_000, 10_000])
def test_timestamps_beyond_300_seconds_either_way_are_rejected(offset):
    now = time.time()
    header = sign(BODY, SECRET, int(now) + offset)

    with pytest.raises(WebhookRejected):
        verify(body=BODY, header=header, secrets=[SECRET], now=now)


@pytest.mark.parametrize("offset", [-299, 0, 299])
def test_timestamps_within_300_seconds_pass(offset):
    now = time.time()
    verify(body=BODY, header=sign(BODY, SECRET, int(now) + offset), secrets=[SECRET], now=now)


def test_no_configured_secret_rejects_everything():
    with pytest.raises(WebhookRejected):
        verify(body=BODY, header=sign(BODY, ""), secrets=[])


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'"a string"',
        b"{}",
        b'{"id": 5, "type": "x", "data": {"object": {}}}',
        b'{"id": "evt_1", "data": {"object": {}}}',
        b'{"id": "evt_1", "type": "x"}',
        b'{"id": "evt_1", "type": "x", "data": {"object": []}}',
        b'{"id": "evt_1", "type": "x", "object": "charge", "data": {"object": {}}}',
        b"\xff\xfe",
    ],
)
def test_bodies_that_are_not_json_events_are_rejected(body):
    with pytest.raises(WebhookRejected):
        parse_event(body)
