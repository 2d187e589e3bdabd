"""The app's routes without Ray: every admin route refuses a request without the admin token before
it touches the gateway (the state is a stand-in; the real server is tested in test_serving.py)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from evo.http import admin_routes
from evo.http.app import api
from evo.http.state import server_state
from evo.openai_api import APIError

ADMIN_ROUTES = sorted(r.path for r in admin_routes.router.routes)


class Gateway:
    def __init__(self):
        self.calls: list[str] = []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append(name)
            return {"aliases": {}}
        return call


class StandIn:
    """What a route sees of its replica: the admin check, the gateway, going live."""

    def __init__(self):
        self.gw = Gateway()

    def admin(self, request) -> None:
        if request.headers.get("authorization") != "Bearer admin":
            raise APIError(401, "admin token needed")

    async def go_live(self, data):
        return data


@pytest.fixture
def client():
    state = StandIn()
    api.dependency_overrides[server_state] = lambda: state
    yield TestClient(api), state
    api.dependency_overrides.clear()


def test_the_admin_routes_are_these():
    assert ADMIN_ROUTES == ["/admin/promote", "/admin/reject", "/admin/reload", "/admin/revert", "/admin/split"]


@pytest.mark.parametrize("path", ADMIN_ROUTES)
def test_an_admin_route_needs_the_token_before_it_acts(client, path):
    http, state = client
    refused = http.post(path, json={"to": "gen-1"})
    assert refused.status_code == 401 and refused.json()["error"]["message"] == "admin token needed"
    assert state.gw.calls == []
    assert http.post(path, json={"to": "gen-1"}, headers={"authorization": "Bearer admin"}).status_code == 200
    assert len(state.gw.calls) == 1


def test_a_query_parameter_a_route_does_not_take_is_a_400_naming_it(client):
    """`?limt=5` is refused, not answered as if it were not there; what a route takes still works."""
    http, _ = client
    for url in ("/v1/models?limt=5", "/health?verbose=1", "/v1/fine_tuning/jobs?afterr=x", "/v1/files?purpose=x&x=1"):
        got = http.get(url)
        param = url.rsplit("&", 1)[-1].split("?")[-1].split("=")[0]
        assert got.status_code == 400, url
        assert got.json()["error"]["param"] == param and "is not a query parameter of GET" in got.json()["error"]["message"]
    for url in ("/v1/fine_tuning/jobs?limit=3&after=x&metadata[team]=search", "/v1/fine_tuning/jobs?metadata=null"):
        got = TestClient(api, raise_server_exceptions=False).get(url)  # past the check (the stand-in has no jobs)
        assert "is not a query parameter" not in got.text, url
