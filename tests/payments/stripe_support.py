"""Stripe adapter test support: localstripe on 127.0.0.1 (started per test session, stops with
it), and an HTTP client for the SDK that forwards to localstripe, answers Connect transfers
from recorded Stripe responses, and can lose a response after forwarding (a timeout whose
request did arrive). localstripe ignores Idempotency-Key, so the client replays the first
response for a repeated key, as Stripe does."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import stripe

RECORDINGS = Path(__file__).parent / "recordings"
SERVER = Path(__file__).parent / "localstripe_server.py"


class LocalStripe:
    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        line = self.process.stdout.readline().decode().strip()
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"localstripe did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line)}"

    def client(self, http_client=None) -> stripe.StripeClient:
        return stripe.StripeClient(
            "sk_test_localstripe",
            base_addresses={"api": self.url},
            max_network_retries=0,
            http_client=http_client or stripe.RequestsClient(timeout=10),
        )

    def register_webhook(self, url: str, secret: str, events=None) -> None:
        import requests

        data = [("url", url), ("secret", secret)]
        for event in events or []:
            data.append(("events[]", event))
        requests.post(f"{self.url}/_config/webhooks/tests", data=data, timeout=5)

    def disable_webhooks(self) -> None:
        self.register_webhook("http://127.0.0.1:9/", "none", events=["none.none"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()


class ProxyHTTPClient(stripe.HTTPClient):
    """Forward to localstripe; serve recorded responses for transfers; replay by key."""

    name = "test-proxy"

    def __init__(self):
        super().__init__()
        self.delegate = stripe.RequestsClient(timeout=10)
        self.requests: list[dict] = []
        self.transfer_responses: list[tuple[str, int]] = []
        self.lose_next: set[str] = set()  # paths whose next response is lost after forwarding
        self._by_key: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def request(self, method, url, headers, post_data=None):
        path = urlparse(url).path
        params = dict(parse_qsl(post_data or "", keep_blank_values=True))
        key = headers.get("Idempotency-Key")
        self.requests.append(
            {"method": method, "path": path, "params": params, "headers": dict(headers)}
        )
        with self._lock:
            if key and method == "post" and key in self._by_key:
                return self._by_key[key]
        if method == "post" and path == "/v1/transfers":
            response = self._transfer(params)
        else:
            response = self.delegate.request(method, url, headers, post_data)
        if key and method == "post" and response[1] < 500:
            with self._lock:
                self._by_key[key] = response
        if path in self.lose_next:
            self.lose_next.discard(path)
            raise stripe.APIConnectionError("Request timed out (response lost after sending)")
        return response

    def _transfer(self, params):
        name, status = (
            self.transfer_responses.pop(0) if self.transfer_responses else ("transfer_create", 200)
        )
        body = json.loads((RECORDINGS / f"{name}.json").read_text())
        if status == 200:
            body["amount"] = int(params["amount"])
            body["currency"] = params["currency"]
            body["destination"] = params["destination"]
            body["transfer_group"] = params.get("transfer_group")
            body["source_transaction"] = params.get("source_transaction")
            body["metadata"] = {
                k[len("metadata[") : -1]: v for k, v in params.items() if k.startswith("metadata[")
            }
        return json.dumps(body), status, {"request-id": "req_recorded"}

    def request_stream(self, method, url, headers, post_data=None):
        raise NotImplementedError

    def close(self):
        self.delegate.close()
