"""The backend proxies with centrifuge-python: a real backend (stdlib http.server) on a free
loopback port; connect authenticated by a forwarded Cookie, RPC round trips (JSON and
Protobuf), the personal channel `#42` and a publication to it through the API."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cent import Client as Cent, PublishRequest
from centrifuge import Client
from centrifuge.exceptions import ReplyError

from conftest import API_KEY, Server, config, free_port, wait_for
from test_python_sdks import Events

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


class Backend:
    """Answers Centrifugo's proxy requests; records what it saw."""

    def __init__(self):
        self.calls = []
        backend = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                backend.calls.append((self.path, body, {k.lower(): v for k, v in self.headers.items()}))
                cookie = self.headers.get("Cookie", "")
                if self.path == "/connect":
                    user = cookie.split("session=", 1)[1].split(";")[0] if "session=" in cookie else ""
                    out = {"result": {"user": user, "data": {"hello": user}}} if user else {"error": {"code": 1401, "message": "no session"}}
                elif self.path == "/rpc":
                    if body.get("method") == "fail":
                        out = {"error": {"code": 1500, "message": "backend says no", "temporary": True}}
                    else:
                        data = body.get("data")
                        if data is None and "b64data" in body:
                            data = {"b64": body["b64data"]}
                        out = {"result": {"data": {"method": body["method"], "echo": data, "user": body["user"]}}}
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                raw = json.dumps(out).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def proxied():
    backend = Backend()
    cfg = config()
    cfg["client"]["proxy"] = {"connect": {"enabled": True, "endpoint": f"{backend.url}/connect", "http_headers": ["Cookie"]}}
    cfg["client"]["subscribe_to_user_personal_channel"] = {"enabled": True}
    cfg["rpc"] = {"proxy": {"endpoint": f"{backend.url}/rpc"}, "without_namespace": {"proxy_enabled": True}}
    server = Server(cfg)
    yield server, backend
    server.stop()
    backend.stop()


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
async def test_connect_proxy_rpc_and_personal_channel(proxied, protobuf):
    server, backend = proxied
    events = Events()
    client = Client(server.url, events=events, use_protobuf=protobuf, headers={"Cookie": "session=42"})
    server_pubs = []

    async def on_publication(ctx):
        server_pubs.append(ctx)

    events.on_publication = on_publication
    await client.connect()
    try:
        await wait_for(lambda: events.connected, what="connected")
        data = events.connected[0].data
        assert (json.loads(data) if protobuf else data) == {"hello": "42"}

        payload = {"id": 7}
        r = await client.rpc("getUser", json.dumps(payload).encode() if protobuf else payload)
        got = json.loads(r.data) if protobuf else r.data
        assert got == {"method": "getUser", "echo": payload, "user": "42"}
        with pytest.raises(ReplyError) as e:
            await client.rpc("fail", json.dumps({}).encode() if protobuf else {})
        assert e.value.code == 1500

        # The personal channel `#42` (centrifuge-python's test_server_side_subs uses it).
        cent = Cent(server.api_url, API_KEY)
        cent.publish(PublishRequest(channel="#42", data={"note": "for 42"}))
        await wait_for(lambda: server_pubs, what="publication on #42")
        assert server_pubs[0].channel == "#42"
        pub = server_pubs[0].pub
        assert (json.loads(pub.data) if protobuf else pub.data) == {"note": "for 42"}
    finally:
        await client.disconnect()
    connects = [c for c in backend.calls if c[0] == "/connect"]
    assert connects and connects[-1][2].get("cookie") == "session=42"
    assert connects[-1][1]["protocol"] == ("protobuf" if protobuf else "json")
