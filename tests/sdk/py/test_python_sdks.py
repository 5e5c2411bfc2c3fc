"""wshub against centrifuge-python (client, JSON and Protobuf) and cent (HTTP API)."""

import asyncio
import json
import time

import pytest
from cent import (
    BatchRequest, BroadcastRequest, ChannelsRequest, Client as Cent, DisconnectRequest, HistoryRequest,
    HistoryRemoveRequest, InfoRequest, PresenceRequest, PresenceStatsRequest, PublishRequest, UnsubscribeRequest,
)
from cent.dto import Disconnect
from cent.exceptions import CentApiResponseError, CentUnauthorizedError
from centrifuge import Client, ClientEventHandler, StreamPosition
from centrifuge.exceptions import ReplyError

from conftest import API_KEY, SubEvents, data_of, token, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


class Events(ClientEventHandler):
    def __init__(self):
        self.connected = []
        self.disconnected = []

    async def on_connected(self, ctx):
        self.connected.append(ctx)

    async def on_disconnected(self, ctx):
        self.disconnected.append(ctx)


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
async def test_client_flow(server, protobuf):
    cent = Cent(server.api_url, API_KEY)
    ev = Events()
    c = Client(server.url, events=ev, token=token({"sub": "py", "exp": int(time.time()) + 3600}), use_protobuf=protobuf)
    await c.connect()
    await wait_for(lambda: ev.connected, what="connected")
    sev = SubEvents()
    channel = f"chat:py-{'protobuf' if protobuf else 'json'}"
    sub = c.new_subscription(channel, events=sev, join_leave=True)
    await sub.subscribe()
    await wait_for(lambda: sev.subscribed, what="subscribed")
    assert sev.subscribed[0].recoverable

    r = cent.publish(PublishRequest(channel=channel, data={"n": 1}))
    assert r.offset >= 1 and r.epoch
    await wait_for(lambda: len(sev.publications) == 1, what="publication")
    assert data_of(sev.publications[0], protobuf) == {"n": 1}
    await sub.publish(json.dumps({"n": 2}).encode() if protobuf else {"n": 2})
    await wait_for(lambda: len(sev.publications) == 2, what="client publication")

    stats = await sub.presence_stats()
    assert (stats.num_clients, stats.num_users) == (1, 1)
    pres = await sub.presence()
    assert [i.user for i in pres.clients.values()] == ["py"]
    hist = await sub.history(limit=-1)
    assert [data_of(p, protobuf)["n"] for p in hist.publications] == [1, 2]
    rev = await sub.history(limit=1, reverse=True)
    assert [data_of(p, protobuf)["n"] for p in rev.publications] == [2]
    since = await sub.history(limit=-1, since=StreamPosition(offset=hist.publications[0].offset, epoch=hist.epoch))
    assert [data_of(p, protobuf)["n"] for p in since.publications] == [2]

    # Recovery: away while two publications are made, then back with both, in order.
    await c.disconnect()
    for n in (3, 4):
        cent.publish(PublishRequest(channel=channel, data={"n": n}))
    await c.connect()
    await wait_for(lambda: len(sev.subscribed) == 2, what="resubscribed")
    assert sev.subscribed[1].recovered and sev.subscribed[1].was_recovering
    await wait_for(lambda: len(sev.publications) == 4, what="recovered publications")
    assert [data_of(p, protobuf)["n"] for p in sev.publications] == [1, 2, 3, 4]

    with pytest.raises(ReplyError) as e:
        await c.history("news", limit=-1)
    assert e.value.code == 108

    bad_ev = SubEvents()
    bad = c.new_subscription("nope:x", events=bad_ev)
    await bad.subscribe()
    await wait_for(lambda: bad_ev.unsubscribed, what="refused subscription")
    assert bad_ev.unsubscribed[0].code == 102
    denied_ev = SubEvents()
    denied = c.new_subscription("private:other#7", events=denied_ev)
    await denied.subscribe()
    await wait_for(lambda: denied_ev.unsubscribed, what="denied subscription")
    assert denied_ev.unsubscribed[0].code == 103
    await c.disconnect()


async def test_invalid_token_stops_the_client(server):
    ev = Events()
    c = Client(server.url, events=ev, token=token({"sub": "x"}, secret="wrong"))
    await c.connect()
    await wait_for(lambda: ev.disconnected, what="disconnected")
    assert ev.disconnected[-1].code == 3500
    await asyncio.sleep(0)  # let the state settle; the client is not reconnecting
    assert c.state.value == "disconnected"


async def test_cent_api(server):
    cent = Cent(server.api_url, API_KEY)
    ev = Events()
    sev = SubEvents()
    c = Client(server.url, events=ev, token=token({"sub": "apiuser"}))
    sub = c.new_subscription("chat:api", events=sev)
    await c.connect()
    await sub.subscribe()
    await wait_for(lambda: sev.subscribed, what="subscribed")

    b = cent.broadcast(BroadcastRequest(channels=["chat:api", "news"], data={"b": 1}))
    assert len(b.responses) == 2
    await wait_for(lambda: len(sev.publications) == 1)
    h = cent.history(HistoryRequest(channel="chat:api", limit=-1))
    assert len(h.publications) == 1 and h.epoch and h.offset == 1
    assert cent.presence_stats(PresenceStatsRequest(channel="chat:api")).num_clients == 1
    assert list(cent.presence(PresenceRequest(channel="chat:api")).presence.values())[0].user == "apiuser"
    chans = cent.channels(ChannelsRequest(pattern="chat:*"))
    assert "chat:api" in chans.channels
    info = cent.info(InfoRequest())
    assert info.nodes[0].num_clients >= 1
    batch = cent.batch(BatchRequest(requests=[PublishRequest(channel="chat:api", data={"b": 2}), PresenceStatsRequest(channel="chat:api")]))
    assert len(batch.replies) == 2
    cent.history_remove(HistoryRemoveRequest(channel="chat:api"))
    assert cent.history(HistoryRequest(channel="chat:api", limit=-1)).publications == []

    with pytest.raises(CentApiResponseError) as e:
        cent.publish(PublishRequest(channel="nope:x", data={}))
    assert e.value.code == 102
    with pytest.raises(CentUnauthorizedError):
        Cent(server.api_url, "wrong-key").info(InfoRequest())

    cent.unsubscribe(UnsubscribeRequest(user="apiuser", channel="chat:api"))
    await wait_for(lambda: sev.unsubscribed, what="server unsubscribe")
    cent.disconnect(DisconnectRequest(user="apiuser", disconnect=Disconnect(code=3503, reason="bye")))
    await wait_for(lambda: ev.disconnected, what="server disconnect")
    assert ev.disconnected[-1].code == 3503
