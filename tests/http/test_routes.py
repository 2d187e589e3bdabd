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
