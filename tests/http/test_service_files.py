"""The file store behind /v1/files: validated uploads, content-addressed bytes, owners, deletes."""

import json

import pytest

from evo.finetune.files import FileStore
from evo.openai_api import APIError

GOOD = b'{"prompt": "a", "completion": "b"}\n{"messages": [{"role": "user", "content": "hi"}, ' \
       b'{"role": "assistant", "content": "hello"}]}\n'


def refused(fn, status: int, match: str):
    with pytest.raises(APIError, match=match) as e:
        fn()
    assert e.value.status == status


def test_uploads_are_validated_kept_by_hash_listed_and_deleted(tmp_path):
    store = FileStore(tmp_path, max_bytes=1000)
    a = store.create(GOOD, "train.jsonl", "fine-tune", owner="k1")
    assert a["object"] == "file" and a["bytes"] == len(GOOD) and a["records"] == 2 and a["purpose"] == "fine-tune"
    assert "owner" not in a and a["id"].startswith("file-")
    b = store.create(b"\xef\xbb\xbf" + GOOD, "win.jsonl", "fine-tune", owner="k1")  # a BOM: Notepad's
    c = store.create(GOOD, "again.jsonl", "fine-tune", owner="k2")
    assert store.content(a["id"], "k1") == GOOD and store.path(c["id"]) == store.path(a["id"])  # one copy of the bytes
    assert [f["id"] for f in store.list("k1")["data"]] == sorted([a["id"], b["id"]], key=lambda i: i != b["id"])
    page = store.list("k1", limit=1)
    rest = store.list("k1", after=page["last_id"])
    assert page["has_more"] and not rest["has_more"] and [f["id"] for f in page["data"] + rest["data"]] == \
        [f["id"] for f in store.list("k1")["data"]]
    # another owner's file is not there for this one
    refused(lambda: store.get(a["id"], "k2"), 404, "no file")
    refused(lambda: store.delete(a["id"], "k2"), 404, "no file")
    assert store.delete(a["id"], "k1") == {"id": a["id"], "object": "file", "deleted": True}
    assert store.path(c["id"]).read_bytes() == GOOD  # still held by c
    store.delete(c["id"], "k2")
    assert not store.blob(a["sha256"]).exists()
    refused(lambda: store.get(a["id"], "k1"), 404, "no file")


@pytest.mark.parametrize("data,name,purpose,status,match", [
    (b"prompt,completion\na,b\n", "t.csv", "fine-tune", 400,
     r"t.csv: 2 invalid line\(s\); nothing ingested \(fix them and upload the file again\):\n  t.csv:1: not valid JSON"),
    (GOOD + b'{"prompt": "x"}\n', "t.jsonl", "fine-tune", 400, r"t.jsonl:3: .*completion"),
    (GOOD * 50, "big.jsonl", "fine-tune", 413, r"over this server's limit of 1000"),
    (GOOD, "t.jsonl", "assistants", 400, r"purpose 'assistants' is not supported"),
    (b"", "empty.jsonl", "fine-tune", 400, r"empty.jsonl: file is empty"),
])
def test_bad_uploads_are_refused_and_leave_nothing(tmp_path, data, name, purpose, status, match):
    store = FileStore(tmp_path, max_bytes=1000)
    refused(lambda: store.create(data, name, purpose), status, match)
    left = [p for p in (tmp_path / "service").rglob("*") if p.is_file() and ".locks" not in p.parts] \
        if (tmp_path / "service").exists() else []
    assert left == [] and store.list()["data"] == []


def test_a_file_object_is_what_openai_clients_parse(tmp_path):
    from openai.types import FileObject

    obj = FileStore(tmp_path).create(GOOD, "t.jsonl", "fine-tune")
    parsed = FileObject.model_validate(json.loads(json.dumps(obj)))
    assert parsed.id == obj["id"] and parsed.bytes == len(GOOD) and parsed.purpose == "fine-tune"


def test_a_deleted_upload_leaves_later_replay_pools_of_its_deleters_reach(tmp_path, demo_dir, monkeypatch):
    """DELETE /v1/files/{id} takes the file's records out of the replay of the mixes built after it:
    a tenant's deletion out of its own branch's replay only (a tenant deleting copies of records the
    shared line holds changes nothing there), an admin's out of every branch's; a second file with the
    same bytes keeps them until it goes too; and a generation's own delta is never filtered."""
    from evo.data.ingest import ingest_bytes, ingest_jsonl
    from evo.driver import prepare_mix
    from evo.lineage.root import Ancestry, Lineage
    from tests.helpers import tiny_config

    secret = b"".join(json.dumps({"prompt": f"acme secret {i} =", "completion": f" plan {i}"}).encode() + b"\n"
                      for i in range(20))
    store = FileStore(tmp_path)
    one = store.create(secret, "acme.jsonl", "fine-tune", owner="k1")
    two = store.create(secret, "copy.jsonl", "fine-tune", owner="k1")
    uploaded = ingest_bytes(secret, "acme.jsonl").records  # as a job ingests it: an ancestor's training part
    others = [r for r in ingest_jsonl(demo_dir / "gen2.jsonl").records][:20]
    cfg = tiny_config(demo_dir, "train.replay_k=100")
    delta = ingest_jsonl(demo_dir / "gen1.jsonl").records

    def replayed(branch: str, own: list = ()) -> tuple[int, int]:
        lin = Lineage(tmp_path, owner=branch)
        monkeypatch.setattr(lin, "ancestry", lambda *a: Ancestry(uploaded + others, {}, {}))
        mix = prepare_mix(cfg, lin, "gen-1", 1, delta + list(own), champion="").mix
        return sum(r.prompt.startswith("acme secret") for r in mix.records), mix.left_out.get("deleted", 0)

    assert replayed("k1") == (20, 0)
    store.delete(one["id"], "k1")
    assert replayed("k1") == (20, 0)  # the same bytes are still k1's other file
    store.delete(two["id"], "k1")
    assert replayed("k1") == (0, 20)  # k1's own branch replays them no more
    assert replayed("") == (20, 0) and replayed("k2") == (20, 0)  # a tenant's deletion reaches no one else's
    assert 0 < replayed("k1", own=uploaded[:5])[0] <= 5  # a job given them again trains on them (its delta's train part)
    shared = store.create(secret, "shared.jsonl", "fine-tune", owner="key-admin")
    store.delete(shared["id"], None)  # an admin's deletion: every branch
    assert replayed("") == (0, 20) and replayed("k2") == (0, 20)
    noted = json.loads((tmp_path / "data" / "deleted.json").read_text())["files"]
    assert [(n["file"], n["branch"], len(n["records"])) for n in noted] == [(two["id"], "k1", 20), (shared["id"], "", 20)]


def test_a_jobs_results_file_is_listed_read_and_never_training_data(tmp_path):
    """What a finished job leaves (purpose fine-tune-results, its job's owner's): listed and read as an
    upload is, filtered by purpose, not another key's, and never a job's training file."""
    from evo.finetune.jobs import JobStore

    store = FileStore(tmp_path)
    upload = store.create(GOOD, "train.jsonl", "fine-tune", owner="k1")
    made = store.put_result(b"step,train_loss,valid_loss\n1,2.0,2.5\n", "step_metrics.csv", owner="k1")
    assert made["purpose"] == "fine-tune-results" and "owner" not in made
    assert [f["id"] for f in store.list("k1", purpose="fine-tune-results")["data"]] == [made["id"]]
    assert store.content(made["id"], "k1").startswith(b"step,") and store.list("k2")["data"] == []
    refused(lambda: JobStore(tmp_path).create({"model": "gen-0", "training_file": made["id"]}, "k1", "k1", store,
                                              lambda name: ("gen-0", "a" * 64)), 400, "results file")
    store.delete(made["id"], "k1")
    assert [f["id"] for f in store.list("k1")["data"]] == [upload["id"]]
    assert not (tmp_path / "data" / "deleted.json").exists()  # a results file holds no records to take out
