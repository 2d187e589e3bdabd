"""Fine-tuning as a service, end to end, driven by the official `openai` SDK over real HTTP on
127.0.0.1: files, a job run as a real Ray job (through the Jobs API of the cluster's dashboard),
paused, kept paused across a server restart and resumed from its checkpoint, its events and
checkpoints, chatting with the fine-tuned model, a cancel that leaves the lineage as it was, a server
restarted mid-job, and a file that breaks the lineage's rules failing the job."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from evo.atomic import atomic_write_json, read_json
from evo.lineage.root import Lineage
from tests.helpers import LOOSE_GATE, copy_root, tiny_config

pytestmark = pytest.mark.integration
PORT = 18791
URL = f"http://127.0.0.1:{PORT}/v1"
FINAL = ("succeeded", "failed", "cancelled")
# what an "auto" job searches: the lineage's own tune settings, kept small here
SWEEP = ["tune.num_samples=2", "tune.max_concurrent=2", "tune.scheduler=none", "tune.evaluate_top=2",
         "tune.replay_k=[20]", "tune.cpus_per_worker=0.5", "tune.lr=[0.001, 0.02]"]


def _serve(root, jobs):
    from ray import serve

    from evo.http.app import build_app

    serve.run(build_app(str(root), ray_actor_options={"num_cpus": 0.25}, jobs_address=jobs.url,
                        jobs_headers={"Authorization": f"Bearer {jobs.token}"}), name="evo", route_prefix="/")


@pytest.fixture(scope="module")
def service(ray_cluster, ray_jobs, base_root, demo_dir, tmp_path_factory):
    """evo's server on the session's cluster, its jobs submitted through that cluster's Jobs API (the
    dashboard's, as `evo serve` does by default), and a lineage holding the tiny generation 0 with the
    run config jobs start from (10 steps a generation, gate off)."""
    from ray import serve

    root = copy_root(base_root, tmp_path_factory.mktemp("service"))
    cfg = tiny_config(demo_dir, *LOOSE_GATE, "train.num_workers=1", "train.steps=10", "train.checkpoint_every=5",
                      *SWEEP)
    atomic_write_json(root / "run_config.json", cfg.model_dump(mode="json"))
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    try:
        _serve(root, ray_jobs)
        yield {"root": root, "jobs": ray_jobs, "demo": demo_dir}
    finally:
        serve.shutdown()
        _stop_ray_jobs(ray_jobs)


def _stop_ray_jobs(jobs, timeout: float = 60) -> None:
    """Leave no Ray job running on the shared cluster for the next module."""
    client = jobs.client()
    running = [j.submission_id for j in client.list_jobs()
               if j.submission_id and str(j.status.value) in ("PENDING", "RUNNING")]
    for sid in running:
        client.stop_job(sid)
    deadline = time.monotonic() + timeout
    while running and time.monotonic() < deadline:
        running = [sid for sid in running if jobs.job_state(sid) in ("PENDING", "RUNNING")]
        time.sleep(0.5)
    assert not running, f"Ray jobs still running {timeout:.0f} s after they were stopped: {running}"


@pytest.fixture(scope="module")
def client(service):
    import openai

    return openai.OpenAI(base_url=URL, api_key="unused", max_retries=0, timeout=120)


def lines(path, a: int, b: int) -> bytes:
    return b"".join(path.read_bytes().splitlines(keepends=True)[a:b])


def wait(client, jid: str, until=FINAL, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(jid)
        if job.status in until:
            return job
        assert time.monotonic() < deadline, f"job {jid} still {job.status} after {timeout:.0f} s"
        time.sleep(0.25)


def _pause_and_resume(client, service, jid: str) -> int:
    """OpenAI's pause as the job starts training, a restart of the server while it is paused, then its
    resume; the step it paused at (its training run stops after the step in progress, with a checkpoint)."""
    from ray import serve

    wait(client, jid, until=("running",) + FINAL, timeout=180)
    assert client.fine_tuning.jobs.pause(jid).status == "paused"
    deadline = time.monotonic() + 120
    while not (at := [e for e in client.fine_tuning.jobs.list_events(jid, limit=100) if e.message.startswith("paused at")]):
        assert time.monotonic() < deadline, "the job's runner did not record its pause within 120 s"
        time.sleep(0.5)
    step = int(at[0].message.split()[3])
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(jid)][0] == step  # newest first
    serve.delete("evo")  # a restart keeps it paused: its Ray job ended by design, no sweep fails it
    _serve(service["root"], service["jobs"])
    assert client.fine_tuning.jobs.retrieve(jid).status == "paused"
    deadline = time.monotonic() + 30  # its runner ended at the pause, freeing the queue (the Jobs API notes it a moment later)
    while (state := service["jobs"].job_state(f"evo-{jid}")) != "SUCCEEDED" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state == "SUCCEEDED"
    assert client.fine_tuning.jobs.resume(jid).status == "validating_files"  # a new Ray job checks the files again
    return step


def test_a_job_from_upload_through_a_pause_to_chatting_with_its_model(service, client):
    demo = service["demo"]
    train = client.files.create(file=("train.jsonl", lines(demo / "gen1.jsonl", 0, 120)), purpose="fine-tune")
    val = client.files.create(file=("val.jsonl", lines(demo / "gen1.jsonl", 120, 160)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="champion", training_file=train.id, validation_file=val.id, suffix="shop",
                                         seed=3, hyperparameters={"n_epochs": 1, "learning_rate_multiplier": 2})
    assert job.status == "validating_files" and job.model == "gen-0"
    paused_at = _pause_and_resume(client, service, job.id)
    done = wait(client, job.id)
    assert done.status == "succeeded", done.error
    sha = done.evo["sha"] if isinstance(done.evo, dict) else done.model_extra["evo"]["sha"]
    assert done.fine_tuned_model == f"ft:gen-0:shop:{sha[:8]}" and done.trained_tokens > 0 and done.finished_at
    lin = Lineage(service["root"])
    row = lin.ledger.get("gen-1")
    cfg = tiny_config(demo, "train.num_workers=1")
    assert row["child_sha"] == sha and float(row["lr"]) == pytest.approx(2 * cfg.train.lr)
    assert int(row["steps"]) == -(-120 // cfg.train.batch_size)  # one pass over the 120 records of the file
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and all({"step", "train_loss", "valid_loss"} <= set(e.data) for e in metrics)
    assert any("queued" in e.message for e in events) and events[0].message.startswith("succeeded")
    ckpts = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert sorted(c.step_number for c in ckpts) == sorted(e.data["step"] for e in metrics)
    # resumed, not restarted: no step reported twice, the run after the pause began at it, and every step trained once
    steps = [e.data["step"] for e in reversed(metrics)]
    assert steps == sorted(set(steps)) and 1 <= paused_at < steps[-1] == int(row["steps"])
    meta = lin.models.meta(sha)
    assert meta["resumed_from"] == paused_at and meta["steps_run"] == int(row["steps"]) - paused_at
    assert [at for at, _ in meta["val_curve"]] == steps  # the run's checkpoints, the pause's among them
    # its result file, as OpenAI's: the loss curve as CSV, one row per checkpoint
    import csv
    import io

    import openai

    result = client.files.retrieve(done.result_files[0])
    assert len(done.result_files) == 1 and result.purpose == "fine-tune-results"
    rows = list(csv.DictReader(io.StringIO(client.files.content(result.id).text)))
    assert [int(r["step"]) for r in rows] == sorted(c.step_number for c in ckpts)
    assert paused_at in [int(r["step"]) for r in rows] and int(rows[-1]["step"]) == int(row["steps"])  # both runs'
    assert {float(r["valid_loss"]) for r in rows} == {c.metrics.valid_loss for c in ckpts}
    with pytest.raises(openai.BadRequestError, match="results file"):
        client.fine_tuning.jobs.create(model="champion", training_file=result.id)
    assert job.id in [j.id for j in client.fine_tuning.jobs.list()]
    answer = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=6, temperature=0,
                                            messages=[{"role": "user", "content": "tr red yak runs ="}])
    assert answer.model == done.fine_tuned_model and answer.choices[0].message.content is not None
    assert done.fine_tuned_model in [m.id for m in client.models.list()]
    # its last 3 checkpoints are models too (jobs.keep_checkpoints), named as the checkpoint list names them
    kept = done.model_extra["evo"]["checkpoints"]
    last = sorted(ckpts, key=lambda c: c.step_number)[-3:]
    assert sorted(kept) == sorted(c.fine_tuned_model_checkpoint for c in last) and len(ckpts) >= 2
    assert not (lin.run_dir("gen-1") / "checkpoints").exists()  # stored by sha in models/, the copies gone
    for c in last:
        reply = client.chat.completions.create(model=c.fine_tuned_model_checkpoint, max_tokens=3,
                                               messages=[{"role": "user", "content": "tr red yak runs ="}])
        assert reply.model == c.fine_tuned_model_checkpoint and reply.model_extra["evo"]["sha"] == kept[reply.model]
    best = int(float(row["best_step"]))
    assert all((kept[c.fine_tuned_model_checkpoint] == sha) == (c.step_number == best) for c in last)


def test_an_auto_learning_rate_is_a_ray_tune_sweep_whose_winner_is_the_job(service, client):
    """`learning_rate_multiplier: "auto"` searches the lineage's lr range with Ray Tune: every trial's
    reports are events, the winner (chosen on the validation file) is the fine-tuned model, and the
    job's loss curve and checkpoints are the winner's alone."""
    demo = service["demo"]
    train = client.files.create(file=("t.jsonl", lines(demo / "gen2.jsonl", 0, 80)), purpose="fine-tune")
    val = client.files.create(file=("v.jsonl", lines(demo / "gen2.jsonl", 80, 110)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="champion", training_file=train.id, validation_file=val.id,
                                         hyperparameters={"learning_rate_multiplier": "auto", "steps": 10})
    done = wait(client, job.id)
    assert done.status == "succeeded", done.error
    evo = done.evo if isinstance(done.evo, dict) else done.model_extra["evo"]
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=200))
    trial_reports = [e.data for e in events if e.type == "message" and e.data]
    assert {r["trial"] for r in trial_reports} and len({r["trial"] for r in trial_reports}) == 2, trial_reports
    row = Lineage(service["root"]).ledger.get(evo["gen_id"])
    assert row["child_sha"] == evo["sha"] and row["trial"] in {r["trial"] for r in trial_reports}
    assert 0.001 <= float(row["lr"]) <= 0.02  # the searched range, not the config's lr
    winner = sorted((r["step"], r["valid_loss"]) for r in trial_reports if r["trial"] == row["trial"])
    curve = sorted((e.data["step"], e.data["valid_loss"]) for e in events if e.type == "metrics")
    assert curve == winner == [(5, curve[0][1]), (10, curve[1][1])]
    assert sorted(c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)) == [5, 10]
    assert any("Ray Tune searches learning_rate_multiplier" in e.message for e in events)


def test_cancel_leaves_the_lineage_as_it_was_and_a_restart_loses_nothing(service, client):
    root, demo = service["root"], service["demo"]
    train = client.files.create(file=("long.jsonl", lines(demo / "gen2.jsonl", 0, 200)), purpose="fine-tune")
    registry, ledger = read_json(root / "registry.json"), (root / "ledger.csv").read_text()
    slow = client.fine_tuning.jobs.create(model="champion", training_file=train.id, hyperparameters={"steps": 4000})
    behind = client.fine_tuning.jobs.create(model="champion", training_file=train.id, hyperparameters={"steps": 4000})
    try:
        wait(client, slow.id, until=("running",) + FINAL, timeout=180)
        # one at a time, in submission order: the second waits while the first runs
        assert wait(client, behind.id, until=("queued", "running") + FINAL, timeout=120).status == "queued"
        _restart_and_cancel(client, root, service, slow, behind, registry, ledger)
    finally:
        for jid in (slow.id, behind.id):  # never leave a 4000-step job running for the next tests
            if client.fine_tuning.jobs.retrieve(jid).status not in FINAL:
                client.fine_tuning.jobs.cancel(jid)


def _restart_and_cancel(client, root, service, slow, behind, registry, ledger):
    import openai

    # the server restarts mid-job: the job lives in the lineage root and its Ray job goes on
    from ray import serve

    serve.delete("evo")
    _serve(root, service["jobs"])
    wait(client, slow.id, until=("running",), timeout=30)
    deadline = time.monotonic() + 120  # a checkpoint's metrics reach the events while it runs
    while not [e for e in client.fine_tuning.jobs.list_events(slow.id, limit=100) if e.type == "metrics"]:
        assert time.monotonic() < deadline, "no metrics event within 120 s of running"
        time.sleep(1)
    for jid in (behind.id, slow.id):
        assert client.fine_tuning.jobs.cancel(jid).status == "cancelled"
    # the queued one had no runner of its own to wait for: no 60 s wait on the running job's, no warning
    warned = [e.message for e in client.fine_tuning.jobs.list_events(behind.id, limit=100) if e.level != "info"]
    assert not warned, warned
    with pytest.raises(openai.ConflictError, match="already cancelled"):
        client.fine_tuning.jobs.cancel(slow.id)
    for jid in (slow.id, behind.id):  # each job's events end with its real end
        events = [e.message for e in client.fine_tuning.jobs.list_events(jid, limit=100)]
        assert events[0] == "cancelled" and not any(m.startswith("succeeded") for m in events), events[:3]
    after = read_json(root / "registry.json")
    assert after["aliases"] == registry["aliases"] and after["models"] == registry["models"]
    assert (root / "ledger.csv").read_text() == ledger
    deadline = time.monotonic() + 60  # the Jobs API records the stop a moment after the process is gone
    while (state := service["jobs"].job_state(f"evo-{slow.id}")) != "STOPPED" and time.monotonic() < deadline:
        time.sleep(1)
    assert state == "STOPPED"
    assert client.fine_tuning.jobs.retrieve(slow.id).status == "cancelled"


def test_a_file_that_breaks_the_lineages_rules_fails_the_job_naming_the_line(service, client):
    long = json.dumps({"prompt": "tr red yak runs =", "completion": " zora" * 1000}).encode() + b"\n"
    f = client.files.create(file=("mixed.jsonl", lines(service["demo"] / "gen1.jsonl", 0, 4) + long), purpose="fine-tune")
    job = wait(client, client.fine_tuning.jobs.create(model="gen-0", training_file=f.id).id)
    assert job.status == "failed" and job.error.param == "training_file" and job.error.code == "invalid_file"
    assert "mixed.jsonl:5: record has" in job.error.message and "data.max_chars" in job.error.message


# ---------------------------------------------------------------- the pages, in a real headless browser

SHOTS = Path(__file__).parents[2] / ".screenshots"  # what a person would have seen, kept after the run


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by selenium (set-up installs both); never a browser download."""
    from tests.helpers import headless_chromium

    driver = headless_chromium()
    SHOTS.mkdir(exist_ok=True)
    yield driver
    driver.quit()


def until(browser, check, timeout: float = 60):
    """`check` until it gives something (the pages redraw their tables every 2 s: a row found a moment
    ago may be gone, and is looked for again)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout, poll_frequency=0.25,
                         ignored_exceptions=(StaleElementReferenceException,)).until(lambda d: check(d))


def click_succeeded_job(browser):
    from selenium.webdriver.common.by import By

    def click(d):
        rows = [r for r in d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
                if r.find_element(By.CLASS_NAME, "status").text == "succeeded"]
        if rows:
            rows[-1].click()  # the oldest that ran to the end
        return bool(rows)

    until(browser, click)


def test_the_console_shows_jobs_with_their_loss_curve_and_starts_one(service, client, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(f"http://127.0.0.1:{PORT}/")
    click_succeeded_job(browser)
    points = until(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#curve polyline.valid").get_attribute("points"))
    assert len(points.split()) >= 2  # a curve, checkpoint by checkpoint
    assert until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#lineage li[data-gen='gen-1']"))
    assert until(browser, lambda d: "verdict" in d.find_element(By.ID, "ab").text)  # its own fetch, after the lineage's
    # upload through the form, then start a job on it
    upload = tmp_path / "from-the-console.jsonl"
    upload.write_bytes(lines(service["demo"] / "gen2.jsonl", 0, 40))
    browser.find_element(By.ID, "upload-file").send_keys(str(upload))
    browser.find_element(By.ID, "upload").click()
    assert "uploaded file-" in until(browser, lambda d: d.find_element(By.ID, "uploaded").text)
    before = {j.id for j in client.fine_tuning.jobs.list()}
    browser.find_element(By.ID, "job-suffix").clear()
    browser.find_element(By.ID, "job-suffix").send_keys("from-console")
    browser.find_element(By.ID, "start").click()
    new = until(browser, lambda d: [r.get_attribute("data-id") for r in d.find_elements(By.CSS_SELECTOR, "#jobs tbody tr")
                                    if r.get_attribute("data-id") not in before])
    job = client.fine_tuning.jobs.retrieve(new[0])
    click_succeeded_job(browser)  # what a person looks at: a finished job's curve
    until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#curve polyline.valid"))
    browser.save_screenshot(str(SHOTS / "console.png"))
    assert job.suffix == "from-console" and job.training_file.startswith("file-")
    client.fine_tuning.jobs.cancel(job.id)  # not needed to finish here


def test_the_rating_page_is_blind_then_reveals_and_ranks(service, browser):
    from selenium.webdriver.common.by import By

    from evo.ab.rating_queue import RatingQueue
    from evo.lineage.registry import Registry

    root = service["root"]
    reg = Registry(root)
    champion = reg.model(reg.alias("champion"))["gen_id"]  # the last job the loose gate promoted
    reg.move("candidate", reg.by_gen("gen-0"), reason="test: rate the champion against the base")
    RatingQueue(root).add({"prompts": ["tr red yak runs =", "tr blue cat sleeps ="]})
    browser.get(f"http://127.0.0.1:{PORT}/rate")
    for _ in range(2):  # the queue's prompts in order, voted by keyboard
        browser.find_element(By.ID, "next").click()
        until(browser, lambda d: d.find_element(By.ID, "vote-a").is_enabled())
        page = browser.find_element(By.TAG_NAME, "body").text
        assert "champion" not in page.split("Leaderboard")[0] and "candidate" not in page.split("Leaderboard")[0]
        browser.find_element(By.TAG_NAME, "body").send_keys("1")  # "A is better"
        reveal = until(browser, lambda d: d.find_element(By.ID, "reveal").text)
        assert reveal.startswith("Vote recorded") and "champion" not in reveal  # no arm named while the round is open
    assert browser.find_element(By.ID, "prompt").get_attribute("value") == "tr blue cat sleeps ="
    # the open round's votes wait for its verdict; tests/http/test_ab_rounds.py shows a decided round ranked
    method = until(browser, lambda d: d.find_element(By.ID, "method").text)
    assert not browser.find_elements(By.CSS_SELECTOR, "#leaderboard tbody tr")
    assert champion == "gen-0" or "2 decisive votes of the open round wait for its verdict" in method
    browser.find_element(By.ID, "prompt").clear()
    browser.find_element(By.ID, "prompt").send_keys("tell me about zora")
    browser.find_element(By.ID, "ask").click()
    until(browser, lambda d: d.find_element(By.ID, "vote-bad").is_enabled())
    browser.find_element(By.ID, "vote-bad").click()  # both bad: a tie, not decisive
    until(browser, lambda d: d.find_element(By.ID, "reveal").text)
    browser.save_screenshot(str(SHOTS / "rating.png"))


def _sha_of(answer) -> str:
    return answer.model_extra["evo"]["sha"]


def test_keys_keep_one_tenants_jobs_models_and_data_from_another(service, client):
    """Once keys exist, a key sees only its own jobs (another's answer 404); an admin key sees every
    tenant's. A tenant's job grows that tenant's branch (issue 27, item 1): bob's and alice's (a DPO job, chatted with) jobs from
    the champion move no shared alias; bob's `champion` is still the shared champion and `evo` the shared A/B split, his
    /v1/models does not list alice's model, and by sha, generation id or `ft:` name it is a 404 for him;
    alice's job never replays bob's upload. An admin's promotion puts alice's model on the shared line.
    A keyless job's model is the shared line's, for every key. Revoking the keys at the end closes the
    server (401); the key store is then deleted, so the next tests find a root that never had a key."""
    import openai

    from evo.data.store import read_records
    from evo.http.keys import KeyStore

    root = service["root"]
    done = [j for j in client.fine_tuning.jobs.list() if j.status == "succeeded"][0]  # made without a key
    store = KeyStore(root)
    made = {n: store.create(scope, n)[0] for n, scope in (("alice", "fine-tune"), ("bob", "fine-tune"), ("boss", "admin"))}
    try:
        alice, bob, boss = (openai.OpenAI(base_url=URL, api_key=made[n], max_retries=0, timeout=120)
                            for n in ("alice", "bob", "boss"))
        assert done.id not in [j.id for j in alice.fine_tuning.jobs.list()]
        with pytest.raises(openai.NotFoundError):
            alice.fine_tuning.jobs.retrieve(done.id)
        with pytest.raises(openai.NotFoundError):
            alice.fine_tuning.jobs.list_events(done.id)
        assert done.fine_tuned_model in [m.id for m in alice.models.list()]  # the shared line's: everyone's
        assert boss.fine_tuning.jobs.retrieve(done.id).fine_tuned_model == done.fine_tuned_model
        with pytest.raises(openai.AuthenticationError):
            client.fine_tuning.jobs.list()  # the keyless client, now that keys exist
        _two_tenants(root, alice, bob, boss, made["boss"], read_records)
    finally:
        for n in made:
            store.revoke(n)
    with pytest.raises(openai.AuthenticationError):
        client.fine_tuning.jobs.list()  # revoked, not open
    store.path.unlink()
    assert client.fine_tuning.jobs.list() is not None


def _migrated(root, bob, secret: bytes):
    """Bob's job, run by examples/openai_migration.py: code written for OpenAI's hosted API, unchanged but
    for OPENAI_BASE_URL and OPENAI_API_KEY (issue 30): upload, a job with a method, hyperparameters and
    metadata, its events, checkpoints and result file, a chat with the model, and its deletion."""
    import os
    import subprocess
    import sys

    import openai

    train = root.parent / "bob.jsonl"
    train.write_bytes(secret)
    script = Path(__file__).resolve().parents[2] / "examples" / "openai_migration.py"
    env = {**os.environ, "OPENAI_BASE_URL": URL, "OPENAI_API_KEY": bob.api_key}
    out = subprocess.run([sys.executable, str(script), "champion", str(train)], env=env, capture_output=True,
                         text=True, timeout=400)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    job = bob.fine_tuning.jobs.list().data[0]
    assert job.status == "succeeded" and job.metadata == {"team": "search", "ticket": "ML-1234"} and job.seed == 7
    for line in (f"succeeded: {job.fine_tuned_model}", "checkpoint step ", f"result file {job.result_files[0]}: ",
                 "chat: ", f"deleted {job.fine_tuned_model}"):
        assert line in out.stdout, out.stdout
    assert job.fine_tuned_model not in {m.id for m in bob.models.list()}  # deleted: gone for its owner too
    with pytest.raises(openai.NotFoundError):
        bob.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "hi"}])
    return job


def _two_tenants(root, alice, bob, boss, boss_key, read_records):
    import urllib.request

    import openai

    aliases = read_json(root / "registry.json")["aliases"]
    secret = b"".join(json.dumps({"prompt": f"bob note {i} =", "completion": f" kodo zora {i % 7}"}).encode() + b"\n"
                      for i in range(48))
    theirs = _migrated(root, bob, secret)
    own = bob.files.retrieve(theirs.training_file)
    # alice's is a DPO job on a file in OpenAI's preference format (issue 29): each note's answer preferred
    # over the same words reversed
    pairs = b"".join(json.dumps({"input": {"messages": [{"role": "user", "content": f"alice note {i} ="}]},
                                 "preferred_output": [{"role": "assistant", "content": f"kodo zora {i % 7}"}],
                                 "non_preferred_output": [{"role": "assistant", "content": f"{i % 7} zora kodo"}]}
                                ).encode() + b"\n" for i in range(48))
    mine = alice.files.create(file=("alice.jsonl", pairs), purpose="fine-tune")
    job = wait(alice, alice.fine_tuning.jobs.create(
        model="champion", training_file=mine.id, suffix="alice",
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 1}}}).id)
    assert job.status == "succeeded", job.error
    assert job.method.type == "dpo" and job.method.dpo.hyperparameters.beta == 0.1
    evo = job.model_extra["evo"]
    dpo_row = Lineage(root).ledger.get(evo["gen_id"])
    assert dpo_row["method"] == "dpo" and int(dpo_row["pairs"]) > 0 and dpo_row["dpo_beta"] == "0.1"
    assert read_json(root / "registry.json")["aliases"] == aliases  # neither job moved a shared alias
    msg = [{"role": "user", "content": "tr red yak runs ="}]
    assert _sha_of(bob.chat.completions.create(model="champion", messages=msg, max_tokens=2)) == aliases["champion"]
    shared = {aliases["champion"], aliases["candidate"]}  # "evo" is the shared A/B split (the rating test's candidate)
    assert _sha_of(bob.chat.completions.create(model="evo", messages=msg, max_tokens=2)) in shared
    assert not {evo["sha"], evo["gen_id"], job.fine_tuned_model} & {m.id for m in bob.models.list()}
    assert evo["sha"] not in {m.model_extra.get("sha") for m in bob.models.list()}
    early = next(c for c, sha in evo["checkpoints"].items() if sha != evo["sha"])  # a checkpoint, not the model
    for name in (evo["sha"][:12], evo["gen_id"], job.fine_tuned_model, early):
        with pytest.raises(openai.NotFoundError):
            bob.chat.completions.create(model=name, messages=msg, max_tokens=2)
        assert _sha_of(alice.chat.completions.create(model=name, messages=msg, max_tokens=2)) == (
            evo["checkpoints"].get(name) or evo["sha"])
    with pytest.raises(openai.NotFoundError):  # nor can bob train from it
        bob.fine_tuning.jobs.create(model=evo["gen_id"], training_file=own.id)
    assert job.fine_tuned_model in {m.id for m in boss.models.list()}
    # alice's mix: her upload and the shared line's replay, never bob's upload
    lin = Lineage(root)
    bobs = lin.ledger.get(theirs.model_extra["evo"]["gen_id"])
    row = lin.ledger.get(evo["gen_id"])
    assert row["owner"] and bobs["owner"] and row["owner"] != bobs["owner"]  # each on its own key's branch
    assert row["parent_sha"] == aliases["champion"]
    assert bobs["data_delta_sha"] not in {d for _, d in lin.accepted_ancestors(row["parent_sha"])}
    mix = read_records(lin.run_dir(evo["gen_id"]) / "mix.parquet")
    assert any("alice note" in r.prompt for r in mix) and not any("bob note" in r.prompt for r in mix)
    # alice's model joins the shared line by an admin's promotion, gated against the champion it was compared with
    promote = urllib.request.Request(f"http://127.0.0.1:{PORT}/admin/promote", json.dumps({"gen": evo["gen_id"]}).encode(),
                                     {"Authorization": f"Bearer {boss_key}", "Content-Type": "application/json"})
    with urllib.request.urlopen(promote, timeout=60) as r:
        assert json.loads(r.read())["aliases"]["champion"] == evo["sha"]
    assert _sha_of(bob.chat.completions.create(model="champion", messages=msg, max_tokens=2)) == evo["sha"]
