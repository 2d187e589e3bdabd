"""API keys: shown once and stored hashed, scopes nest, tenants are separate, revocation and rate limits hold."""

import pytest

from evo.http.keys import OPEN, Authenticator, KeysError, KeyStore
from evo.openai_api import APIError


def refused(auth, header, need, status, match):
    with pytest.raises(APIError, match=match) as e:
        auth.caller(header, need)
    assert e.value.status == status


def test_without_keys_loopback_is_open_and_any_other_address_is_closed(tmp_path):
    assert Authenticator(tmp_path, loopback=True).caller(None, "admin") == OPEN
    refused(Authenticator(tmp_path, loopback=False), None, "inference", 401, "has no API keys yet: create one with `evo keys")


def test_revoking_every_key_closes_a_loopback_server_for_good(tmp_path):
    """Open mode is for a root that never had a key: revoking the last one leaves a 401, not an open door."""
    store, auth = KeyStore(tmp_path), Authenticator(tmp_path, loopback=True)
    assert auth.open
    store.create("admin", "boss")
    store.revoke("boss")
    assert not auth.open
    refused(auth, None, "inference", 401, "every key it had is revoked: create one with `evo keys create`")
    refused(auth, "Bearer ", "inference", 401, "needs 'Authorization: Bearer <key>'")


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000", "::1"])
def test_an_open_server_takes_loopback_hosts(host):
    Authenticator.open_request(host, "GET", "/v1/models", None)
    Authenticator.open_request(host, "POST", "/v1/chat/completions", "application/json; charset=utf-8")
    Authenticator.open_request(host, "POST", "/v1/files", "multipart/form-data; boundary=x")


@pytest.mark.parametrize("host, method, path, ctype, status", [
    ("evil.example:8000", "GET", "/v1/files", None, 403),  # DNS rebinding
    ("127.0.0.1.evil.example", "GET", "/v1/files", None, 403),
    (None, "GET", "/v1/files", None, 403),
    ("127.0.0.1:8000", "POST", "/v1/chat/completions", "text/plain", 415),  # a cross-site form
    ("127.0.0.1:8000", "POST", "/v1/fine_tuning/jobs/ftjob-1/cancel", None, 415),  # a no-cors fetch
    ("127.0.0.1:8000", "POST", "/v1/feedback", "multipart/form-data; boundary=x", 415),
])
def test_an_open_server_refuses_what_a_web_page_could_forge(host, method, path, ctype, status):
    with pytest.raises(APIError) as e:
        Authenticator.open_request(host, method, path, ctype)
    assert e.value.status == status


def test_keys_scopes_tenants_and_revocation(tmp_path):
    store, auth = KeyStore(tmp_path), Authenticator(tmp_path)
    ask, reader = store.create("inference", "reader")
    tune, row = store.create("fine-tune", "alice")
    boss, _ = store.create("admin")
    assert ask not in store.path.read_text() and row["sha256"] in store.path.read_text()  # only the hash is kept
    with pytest.raises(KeysError, match="already named 'alice'"):
        store.create("inference", "alice")
    with pytest.raises(KeysError, match="scope 'root'"):
        store.create("root")
    # once a key exists, every request needs one, even on loopback
    refused(auth, None, "inference", 401, "needs 'Authorization: Bearer <key>'")
    refused(auth, "Bearer evo-not-a-key", "inference", 401, "not valid")
    refused(auth, f"Bearer {ask}", "fine-tune", 403, "scope 'inference'; this needs 'fine-tune'")
    assert auth.caller(f"Bearer {ask}", "inference").owner == reader["id"]
    alice = auth.caller(f"Bearer {tune}", "inference")  # fine-tune includes inference
    assert alice.owner == row["id"] and alice.can("fine-tune") and not alice.can("admin")
    assert auth.caller(f"Bearer {boss}", "fine-tune").owner is None  # admin sees every tenant
    store.revoke("alice")
    refused(auth, f"Bearer {tune}", "inference", 401, "not valid")
    with pytest.raises(KeysError, match="no live key"):
        store.revoke("alice")


def test_a_key_over_its_rate_gets_429_and_others_are_not_slowed(tmp_path):
    store = KeyStore(tmp_path)
    a, _ = store.create("inference", "a")
    b, _ = store.create("inference", "b")
    auth = Authenticator(tmp_path, rate_per_minute=3)
    for _ in range(3):
        auth.caller(f"Bearer {a}", "inference")
    refused(auth, f"Bearer {a}", "inference", 429, r"over its limit of 3 requests a minute; retry in \d+\.\d s")
    auth.caller(f"Bearer {b}", "inference")


def test_an_address_that_guesses_keys_is_refused_before_its_next_key_is_checked(tmp_path):
    """Keys that are not valid (guesses, a revoked key) are counted per address: past the rate within a
    minute, that address gets 429 with Retry-After before anything it sends is compared, even a valid
    key (so guessing costs a minute a try), while other addresses are not slowed; a key over its own
    rate gets 429 with Retry-After too."""
    store = KeyStore(tmp_path)
    good, _ = store.create("admin", "boss")
    auth = Authenticator(tmp_path, rate_per_minute=3)
    for i in range(3):
        with pytest.raises(APIError, match="not valid") as e:
            auth.caller(f"Bearer evo-guess-{i}", "admin", "10.0.0.9")
        assert e.value.status == 401
    for key in ("evo-guess-3", good):
        with pytest.raises(APIError, match="not valid came from this address") as e:
            auth.caller(f"Bearer {key}", "admin", "10.0.0.9")
        assert e.value.status == 429 and 1 <= int(e.value.headers["Retry-After"]) <= 20
    assert auth.caller(f"Bearer {good}", "admin", "10.0.0.7").scope == "admin"  # another address
    for _ in range(2):
        auth.caller(f"Bearer {good}", "admin", "10.0.0.7")
    with pytest.raises(APIError, match="over its limit") as e:
        auth.caller(f"Bearer {good}", "admin", "10.0.0.7")
    assert e.value.status == 429 and int(e.value.headers["Retry-After"]) >= 1
