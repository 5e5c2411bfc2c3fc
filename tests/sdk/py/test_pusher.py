"""The Pusher dialect with Pusher's Python server SDK (`pusher` on PyPI): signed API calls
and auth signatures, against a Pusher WebSocket client and a centrifuge-python client on
the same channel."""

import asyncio
import json

import pusher
import pytest
import websockets
from centrifuge import Client

from conftest import Server, SubEvents, config, token, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

APP = {"app_id": "4242", "key": "py-key", "secret": "py-secret"}


@pytest.fixture(scope="module")
def pserver():
    cfg = config()
    cfg["pusher"] = {"apps": [{"id": APP["app_id"], "key": APP["key"], "secret": APP["secret"], "enable_client_messages": True}]}
    s = Server(cfg)
    yield s
    s.stop()


def sdk(port, secret=APP["secret"]):
    return pusher.Pusher(app_id=APP["app_id"], key=APP["key"], secret=secret, host="127.0.0.1", port=port, ssl=False)


async def recv_event(ws, event, timeout=10.0, skipped=None):
    """The next message `event`; the others before it go to `skipped`."""
    async def loop():
        while True:
            m = json.loads(await ws.recv())
            if m["event"] == event:
                return m
            if skipped is not None:
                skipped.append(m["event"])
    return await asyncio.wait_for(loop(), timeout)


async def pusher_socket(port):
    ws = await websockets.connect(f"ws://127.0.0.1:{port}/app/{APP['key']}?protocol=7&client=py&version=1")
    est = await recv_event(ws, "pusher:connection_established")
    return ws, json.loads(est["data"])["socket_id"]


async def test_sdk_signatures_and_events_reach_both_dialects(pserver):
    port = pserver.port
    p = sdk(port)
    ws, socket_id = await pusher_socket(port)
    # The SDK's channel auth is what the server checks.
    auth = p.authenticate(channel="private-py", socket_id=socket_id)
    await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "private-py", "auth": auth["auth"]}}))
    await recv_event(ws, "pusher_internal:subscription_succeeded")
    bad = sdk(port, secret="wrong").authenticate(channel="private-other", socket_id=socket_id)
    await ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": "private-other", "auth": bad["auth"]}}))
    err = await recv_event(ws, "pusher:subscription_error")
    assert err["data"]["status"] == 401

    events = SubEvents()
    c = Client(pserver.url, token=token({"sub": "py", "exp": 2_000_000_000}))
    sub = c.new_subscription("private-py", events)
    await c.connect()
    await sub.subscribe()
    await wait_for(lambda: events.subscribed, what="centrifuge subscribed")

    p.trigger("private-py", "py-event", {"n": 1})
    m = await recv_event(ws, "py-event")
    assert json.loads(m["data"]) == {"n": 1}
    assert m["channel"] == "private-py"
    await wait_for(lambda: events.publications, what="centrifuge publication")
    assert events.publications[0].data == {"n": 1}
    assert events.publications[0].tags["event"] == "py-event"

    # Excluding the socket: the Pusher socket does not get it, the Centrifugo client does.
    p.trigger("private-py", "not-for-you", {"n": 2}, socket_id=socket_id)
    p.trigger("private-py", "after", {"n": 3})
    skipped = []
    await recv_event(ws, "after", skipped=skipped)
    assert "not-for-you" not in skipped
    await wait_for(lambda: len(events.publications) == 3, what="three publications")

    info = p.channel_info("private-py", ["subscription_count"])
    assert info == {"occupied": True, "subscription_count": 2}
    assert "private-py" in p.channels_info()["channels"]
    with pytest.raises(pusher.errors.PusherBadAuth):
        sdk(port, secret="wrong").trigger("private-py", "x", {})
    await c.disconnect()
    await ws.close()
