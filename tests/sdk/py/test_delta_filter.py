"""Fossil delta compression and publication tags filters with centrifuge-python (JSON and
Protobuf): the SDK applies the deltas with its own fossil decoder."""

import json
import time
import urllib.request

import pytest
from cent import Client as Cent, PublishRequest
from centrifuge import Client, DeltaType, Filter

from conftest import API_KEY, Server, SubEvents, config, data_of, token, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def delta_filter_config():
    cfg = config()
    history = {"history_size": 100, "history_ttl": "300s", "force_recovery": True, "allow_subscribe_for_client": True}
    cfg["channel"]["namespaces"] += [
        {"name": "delta", **history, "allowed_delta_types": ["fossil"], "delta_publish": True},
        {"name": "deltaapi", **history, "allowed_delta_types": ["fossil"]},
        {"name": "tags", **history, "allow_history_for_subscriber": True, "allow_tags_filter": True},
    ]
    return cfg


@pytest.fixture(scope="module")
def dserver():
    s = Server(delta_filter_config())
    yield s
    s.stop()


def document(version):
    """About 10 KB of JSON; a new version changes about 1 % of it."""
    rows = [{"id": i, "name": f"row-{i}", "value": version if i % 10 == version % 10 else i * 7, "note": "lorem ipsum dolor sit amet"} for i in range(100)]
    return {"version": version, "rows": rows}


def api(server, method, params):
    req = urllib.request.Request(
        f"{server.api_url}/{method}", data=json.dumps(params).encode(), headers={"X-API-Key": API_KEY, "Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def queued_deliveries(server):
    """`wshub_delivery_queue_jobs`: publications accepted and not yet handed to subscribers."""
    base = server.api_url.rsplit("/api", 1)[0]
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("wshub_delivery_queue_jobs "):
                return float(line.split()[1])
    return 0.0


async def all_delivered(server):
    """The API answers a publish before delivery: wait until the node has delivered them all."""
    await wait_for(lambda: queued_deliveries(server) == 0, what="every accepted publication delivered")


async def connected(server, user, protobuf):
    c = Client(server.url, token=token({"sub": user, "exp": int(time.time()) + 3600}), use_protobuf=protobuf)
    await c.connect()
    return c


async def subscribed(c, channel, **kw):
    ev = SubEvents()
    sub = c.new_subscription(channel, events=ev, **kw)
    await sub.subscribe()
    await wait_for(lambda: ev.subscribed, what="subscribed")
    return sub, ev


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
async def test_delta_successive_and_across_recovery(dserver, protobuf):
    cent = Cent(dserver.api_url, API_KEY)
    c = await connected(dserver, "pd", protobuf)
    ch = f"delta:py-{'pb' if protobuf else 'json'}"
    _, ev = await subscribed(c, ch, delta=DeltaType.FOSSIL)
    assert ev.subscribed[0].recoverable
    for v in (1, 2, 3):
        cent.publish(PublishRequest(channel=ch, data=document(v)))
    await wait_for(lambda: len(ev.publications) == 3, what="three publications")
    assert [data_of(p, protobuf) for p in ev.publications] == [document(v) for v in (1, 2, 3)]
    assert [p.delta for p in ev.publications] == [False, True, True], "first whole, then deltas"

    await c.disconnect()
    for v in (4, 5):
        cent.publish(PublishRequest(channel=ch, data=document(v)))
    await c.connect()
    await wait_for(lambda: len(ev.subscribed) == 2, what="resubscribed")
    assert ev.subscribed[1].recovered
    await wait_for(lambda: len(ev.publications) == 5, what="recovered publications")
    cent.publish(PublishRequest(channel=ch, data=document(6)))
    await wait_for(lambda: len(ev.publications) == 6, what="live after recovery")
    assert [data_of(p, protobuf) for p in ev.publications] == [document(v) for v in range(1, 7)]
    assert [p.delta for p in ev.publications[3:]] == [False, True, True], "recovered chain, then live delta"
    await c.disconnect()


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
async def test_api_delta_flag(dserver, protobuf):
    c = await connected(dserver, "pa", protobuf)
    ch = f"deltaapi:py-{'pb' if protobuf else 'json'}"
    _, ev = await subscribed(c, ch, delta=DeltaType.FOSSIL)
    api(dserver, "publish", {"channel": ch, "data": document(1)})
    api(dserver, "publish", {"channel": ch, "data": document(2)})
    api(dserver, "publish", {"channel": ch, "data": document(3), "delta": True})
    await wait_for(lambda: len(ev.publications) == 3, what="three publications")
    assert [data_of(p, protobuf) for p in ev.publications] == [document(v) for v in (1, 2, 3)]
    assert [p.delta for p in ev.publications] == [False, False, True], "only the one published with delta"
    await c.disconnect()


PUBS = [
    {"ticker": "AAPL", "price": "101.5", "src": "NASDAQ"},
    {"ticker": "MSFT", "price": "99", "src": "NYSE"},
    {"ticker": "GOOG", "src": "LSE"},
    {},
]
CASES = [
    ("eq", Filter.eq("ticker", "AAPL"), [0]),
    ("neq", Filter.neq("ticker", "AAPL"), [1, 2, 3]),
    ("in", Filter.is_in("src", ["NYSE", "LSE"]), [1, 2]),
    ("nin", Filter.not_in("src", ["NYSE"]), [0, 2, 3]),
    ("ex", Filter.exists("price"), [0, 1]),
    ("nex", Filter.not_exists("price"), [2, 3]),
    ("sw", Filter.starts_with("ticker", "GO"), [2]),
    ("ew", Filter.ends_with("ticker", "FT"), [1]),
    ("ct", Filter.contains("ticker", "AP"), [0]),
    ("gt", Filter.gt("price", "100"), [0]),
    ("gte", Filter.gte("price", "99"), [0, 1]),
    ("lt", Filter.lt("price", "100"), [1]),
    ("lte", Filter.lte("price", "101.5"), [0, 1]),
    ("and", Filter.all(Filter.exists("price"), Filter.neq("ticker", "MSFT")), [0]),
    ("or", Filter.any(Filter.eq("ticker", "GOOG"), Filter.lt("price", "100")), [1, 2]),
    ("not", Filter.negate(Filter.exists("ticker")), [3]),
    ("nothing", Filter.eq("ticker", "NONE"), []),
]


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
async def test_tags_filters(dserver, protobuf):
    cent = Cent(dserver.api_url, API_KEY)
    c = await connected(dserver, "pf", protobuf)
    fmt = "pb" if protobuf else "json"
    subs = []
    for op, f, _ in CASES:
        subs.append(await subscribed(c, f"tags:py-{op}-{fmt}", tags_filter=f))
    for op, _, _ in CASES:
        for i, tags in enumerate(PUBS):
            cent.publish(PublishRequest(channel=f"tags:py-{op}-{fmt}", data={"i": i}, tags=tags))
    # Once the node has delivered every accepted publication, a later reply arrives after
    # their pushes.
    await all_delivered(dserver)
    for sub, _ in subs:
        await sub.history(limit=0)
    for (op, _, expected), (_, ev) in zip(CASES, subs):
        assert [data_of(p, protobuf)["i"] for p in ev.publications] == expected, op

    # A filter change applies at the next subscribe (recovering from the last offset seen).
    sub, ev = subs[0]
    await sub.unsubscribe()
    sub.set_tags_filter(Filter.eq("ticker", "GOOG"))
    await sub.subscribe()
    await wait_for(lambda: len(ev.subscribed) == 2, what="resubscribed")
    cent.publish(PublishRequest(channel=f"tags:py-eq-{fmt}", data={"i": 9}, tags=PUBS[2]))
    cent.publish(PublishRequest(channel=f"tags:py-eq-{fmt}", data={"i": 10}, tags=PUBS[0]))
    await all_delivered(dserver)
    await sub.history(limit=0)
    assert [data_of(p, protobuf)["i"] for p in ev.publications] == [0, 2, 9]

    # Not allowed in the namespace: 107.
    bad_ev = SubEvents()
    bad = c.new_subscription("chat:py-nofilter", events=bad_ev, tags_filter=Filter.eq("a", "b"))
    await bad.subscribe()
    await wait_for(lambda: bad_ev.unsubscribed, what="refused subscription")
    assert bad_ev.unsubscribed[0].code == 107
    await c.disconnect()
