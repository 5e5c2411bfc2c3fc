"""A real wshub process for the Python SDK tests, and small helpers."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from centrifuge import SubscriptionEventHandler

SECRET = "py-test-secret"
API_KEY = "py-test-api-key"
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
BIN = os.environ.get("TEST_WSHUB_BIN", os.path.join(ROOT, "target", "release", "wshub"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config():
    return {
        "http_api": {"key": API_KEY},
        "client": {"token": {"hmac_secret_key": SECRET}},
        "channel": {
            "without_namespace": {"allow_subscribe_for_client": True},
            "namespaces": [
                {
                    "name": "chat", "presence": True, "join_leave": True, "force_push_join_leave": True,
                    "history_size": 100, "history_ttl": "300s", "force_recovery": True,
                    "allow_subscribe_for_client": True, "allow_publish_for_subscriber": True,
                    "allow_presence_for_subscriber": True, "allow_history_for_subscriber": True,
                },
                {"name": "private", "allow_user_limited_channels": True},
            ],
        },
    }


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(claims: dict, secret: str = SECRET) -> str:
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


class Server:
    def __init__(self, cfg):
        if not os.path.exists(BIN):
            pytest.fail(f"wshub binary not found at {BIN}: build it with `cargo build --release -p wshub`")
        self.dir = tempfile.mkdtemp(prefix="wshub-py-")
        path = os.path.join(self.dir, "config.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.port = free_port()
        self.log = open(os.path.join(self.dir, "wshub.log"), "w+")
        self.proc = subprocess.Popen([BIN, "serve", "-c", path, "--port", str(self.port), "--address", "127.0.0.1"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while True:
            if self.proc.poll() is not None:
                self.log.seek(0)
                pytest.fail(f"wshub exited: {self.log.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline:
                    pytest.fail("wshub did not listen within 15 s")
                time.sleep(0.05)
        self.url = f"ws://127.0.0.1:{self.port}/connection/websocket"
        self.api_url = f"http://127.0.0.1:{self.port}/api"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


@pytest.fixture(scope="module")
def server():
    s = Server(config())
    yield s
    s.stop()


async def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class SubEvents(SubscriptionEventHandler):
    """What a subscription saw, in order."""

    def __init__(self):
        self.publications = []
        self.subscribed = []
        self.unsubscribed = []
        self.joins = []

    async def on_publication(self, ctx):
        self.publications.append(ctx.pub)

    async def on_subscribed(self, ctx):
        self.subscribed.append(ctx)

    async def on_unsubscribed(self, ctx):
        self.unsubscribed.append(ctx)

    async def on_join(self, ctx):
        self.joins.append(ctx)


def data_of(pub, protobuf):
    """A publication's data as JSON: the Protobuf client hands it over as bytes."""
    return json.loads(pub.data) if protobuf else pub.data
