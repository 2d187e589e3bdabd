"""The fine-tuning job queue cannot stall and no tenant can hold it: OpenAI's n_epochs bounds and the
config's steps cap, round robin over tenants, jobs whose runner or Ray job is gone (or never was)
marked failed with an event that says why. Real JobStore over real files; the Jobs API's answers are
Ray's own records (`JobDetails`), of a cluster that does not know some of the jobs."""

import json
import threading
import time

import pytest
from ray.job_submission import JobDetails, JobStatus, JobType

from evo.atomic import atomic_write_json
from evo.config import EvoConfig
from evo.finetune.files import FileStore
from evo.finetune.jobs import JobStore, fair_order
from evo.finetune.run_job import JobFailed, _wait_turn, execute, fit_workers, run_lock, runner_lock
from evo.finetune.submit import JobService, RayJobs
from evo.openai_api import APIError

GOOD = b'{"prompt": "a", "completion": "b"}\n{"text": "c d"}\n'


def resolve(name):
    return "gen-1", "a" * 64


@pytest.fixture
def stores(tmp_path):
    files = FileStore(tmp_path)
    fids = {k: files.create(GOOD, "t.jsonl", "fine-tune", k)["id"] for k in ("k1", "k2")}
    return tmp_path, files, JobStore(tmp_path), fids


def create(stores, owner, **hp):
    _, files, jobs, fids = stores
    body = {"model": "gen-1", "training_file": fids[owner]}
    if hp:
        body["hyperparameters"] = hp
    return jobs.create(body, owner, owner, files, resolve)


@pytest.mark.parametrize("n", [51, 1_000_000_000])
def test_n_epochs_outside_openais_1_to_50_is_a_400_naming_it(stores, n):
    with pytest.raises(APIError) as e:
        create(stores, "k1", n_epochs=n)
    assert e.value.status == 400 and e.value.param == "hyperparameters.n_epochs"
    body = e.value.body()["error"]
    assert body["type"] == "invalid_request_error" and "n_epochs" in body["message"]
    assert stores[2].all() == []
    assert create(stores, "k1", n_epochs=50)["hyperparameters"] == {"n_epochs": 50}


def test_steps_over_the_configs_cap_are_refused_at_create_and_epochs_over_it_fail_the_job(stores):
    root, files, jobs, _ = stores
    atomic_write_json(root / "run_config.json", EvoConfig(data={"base": "b.jsonl"}, jobs={"max_steps": 3})
                      .model_dump(mode="json"))
    with pytest.raises(APIError, match="over this server's limit of 3 steps") as e:
        create(stores, "k1", steps=4)
    assert e.value.status == 400 and e.value.param == "hyperparameters.steps"
    assert create(stores, "k1", steps=3)["status"] == "validating_files"
    job = create(stores, "k1", n_epochs=50, batch_size=2)  # 50 x 2 records / 2 = 50 steps
    assert execute(root, job["id"], run_generation=None) == 1
    job = jobs.raw(job["id"])
    assert job["status"] == "failed" and job["error"]["param"] == "hyperparameters.n_epochs"
    assert "is 50 steps, over this server's limit of 3" in job["error"]["message"]
    assert not any("queued" in e["message"] for e in jobs.events(job["id"])["data"])  # failed before the queue


def waiter(jobs, root, jid, went):
    """A runner waiting its turn: it holds its runner lock, as `execute` does."""
    def run():
        with runner_lock(root, jid):
            jobs.update(jid, status="queued")
            _wait_turn(jobs, jid, 0.05)
            went.append(jid)
            while jobs.raw(jid)["status"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.05)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_one_tenants_long_queue_does_not_delay_another_tenants_first_job(stores):
    root, _, jobs, _ = stores
    a1, a2, a3 = (create(stores, "k1")["id"] for _ in range(3))
    b1 = create(stores, "k2")["id"]  # submitted after all of k1's
    went: list[str] = []
    with runner_lock(root, a1):
        jobs.update(a1, status="running")
        for jid in (a2, a3, b1):
            waiter(jobs, root, jid, went)
        assert until(lambda: all(jobs.raw(j)["status"] == "queued" for j in (a2, a3, b1)))
        assert [j["id"] for j in fair_order(jobs.all())] == [b1, a2, a3]
        time.sleep(0.3)
        assert went == []  # a1 still runs
        jobs.update(a1, status="succeeded")
    assert until(lambda: went == [b1])
    time.sleep(0.3)
    assert went == [b1]  # k1's second job waits for k2's first
    jobs.update(b1, status="running")
    jobs.update(b1, status="succeeded")
    assert until(lambda: went == [b1, a2])
    jobs.update(a2, status="succeeded")
    assert until(lambda: went == [b1, a2, a3])


def test_a_job_whose_runner_died_is_failed_and_holds_nobody(stores):
    root, _, jobs, _ = stores
    dead_running, dead_queued = create(stores, "k1")["id"], create(stores, "k2")["id"]
    jobs.update(dead_running, status="running", submission_id="evo-dead1")  # no runner holds its lock
    jobs.update(dead_queued, status="queued")
    stuck = create(stores, "k2")["id"]  # still validating its files: not in the queue, holds no other tenant
    me = create(stores, "k1")["id"]
    went: list[str] = []
    waiter(jobs, root, me, went)
    assert until(lambda: went == [me])
    for jid in (dead_running, dead_queued):
        job = jobs.raw(jid)
        assert job["status"] == "failed" and job["error"]["code"] == "runner_gone"
        assert "died while the job was" in jobs.events(jid)["data"][0]["message"]
    assert jobs.raw(stuck)["status"] == "validating_files"
    jobs.update(me, status="succeeded")


def test_a_tenants_jobs_run_in_submission_order_whichever_validates_first(stores):
    """Two jobs of one tenant submitted a moment apart: the second's files validate first. It still
    waits for the first (before: it ran first, and the first waited behind it); another tenant's job
    does not wait for either's validation."""
    root, _, jobs, _ = stores
    first, second = create(stores, "k1")["id"], create(stores, "k1")["id"]
    other = create(stores, "k2")["id"]
    went: list[str] = []
    waiter(jobs, root, second, went)  # queued while `first` is still validating_files
    waiter(jobs, root, other, went)
    assert until(lambda: went == [other])
    jobs.update(other, status="succeeded")
    time.sleep(0.3)
    assert went == [other] and jobs.raw(first)["status"] == "validating_files"
    waiter(jobs, root, first, went)
    assert until(lambda: went == [other, first])
    jobs.update(first, status="succeeded")
    assert until(lambda: went == [other, first, second])
    jobs.update(second, status="succeeded")


class KnownJobs(RayJobs):
    """The Jobs API of a cluster that knows only `records`: Ray's own JobDetails."""

    def __init__(self, root, records):
        super().__init__(root, "http://127.0.0.1:1")
        self.records, self.asked = records, 0

    def client(self):
        outer = self

        class Client:
            def list_jobs(self):
                outer.asked += 1
                return outer.records
        return Client()


def details(sid, status, message=""):
    return JobDetails(type=JobType.SUBMISSION, submission_id=sid, entrypoint="evo run-job", status=status,
                      message=message)


def test_stale_jobs_are_failed_at_start_up_and_when_listed(stores):
    root, _, jobs, _ = stores
    never, gone, alive, ended, fresh = (create(stores, "k1")["id"] for _ in range(5))
    jobs.update(never, created_ns=time.time_ns() - int(600e9))  # the server stopped before it submitted it
    jobs.update(gone, submission_id="evo-gone", status="running")  # Ray restarted since
    jobs.update(alive, submission_id="evo-alive", status="queued")
    jobs.update(ended, submission_id="evo-ended")
    ray = KnownJobs(root, [details("evo-alive", JobStatus.RUNNING), details("evo-ended", JobStatus.FAILED, "OOM"),
                           details("evo-other", JobStatus.SUCCEEDED)])
    service = JobService(root, ray, sweep_every_s=30, submit_grace_s=120)  # its start-up sweep, on a thread
    try:
        # the sweep writes a job's status, then its event: wait for both
        assert until(lambda: all(jobs.raw(j)["status"] == "failed" and jobs.events(j)["data"][0]["message"].startswith("failed")
                                 for j in (never, gone, ended)))
        want = {never: ("never_submitted", "never submitted as a Ray job"),
                gone: ("ray_job_gone", "Ray job evo-gone is not known to the cluster"),
                ended: ("ray_job_ended", "Ray job evo-ended ended (FAILED) before the fine-tuning job did: OOM")}
        for jid, (code, text) in want.items():
            job = jobs.raw(jid)
            assert job["error"]["code"] == code and text in job["error"]["message"], job["error"]
            # the event is written just after the status (JobService._fail): on a busy machine, a moment later
            assert until(lambda jid=jid, text=text: text in jobs.events(jid)["data"][0]["message"]), jobs.events(jid)
        assert jobs.raw(alive)["status"] == "queued" and jobs.raw(fresh)["status"] == "validating_files"
    finally:
        service.close()
    # when jobs are read: one ask of the Jobs API for a whole page, not one per job
    more = [create(stores, "k2")["id"] for _ in range(3)]
    for i, jid in enumerate(more):
        jobs.update(jid, submission_id=f"evo-more{i}")
        ray.records.append(details(f"evo-more{i}", JobStatus.PENDING))
    time.sleep(1.1)
    ray.asked = 0
    for job in jobs.all():
        service.settle(job)
    assert ray.asked == 1 and all(jobs.raw(j)["status"] == "validating_files" for j in more)
    ray.records = []  # the cluster restarted
    time.sleep(1.1)
    for job in jobs.all():
        service.settle(job)
    assert jobs.raw(alive)["status"] == "failed" and jobs.raw(alive)["error"]["code"] == "ray_job_gone"
    assert all(jobs.raw(j)["error"]["code"] == "ray_job_gone" for j in more)
    assert json.loads(json.dumps(jobs.get(alive)))["error"]["message"].startswith("Ray job evo-alive")


def test_a_job_fits_its_workers_to_what_the_cluster_can_ever_give_or_fails_naming_both():
    cfg = EvoConfig(data={"base": "b.jsonl"}, train={"num_workers": 2, "cpus_per_worker": 1.0})
    two_cpus = {"total": 2.0, "serve": 0.5, "autoscaled": False}  # `evo serve` on 2 CPUs: its replica holds 0.5
    said = fit_workers(cfg, two_cpus)
    assert cfg.train.num_workers == 1
    assert said == ("fitted to the cluster: 1 Ray Train worker(s) of 1 CPU instead of 2 (2 CPUs asked, the cluster "
                    "can give 1.5 CPUs (2 in all, 0.5 held by Serve's replicas, no autoscaler))")
    roomy = EvoConfig(data={"base": "b.jsonl"}, train={"num_workers": 2})
    assert fit_workers(roomy, {"total": 4.0, "serve": 0.5, "autoscaled": False}) is None
    assert fit_workers(roomy, {"total": 1.0, "serve": 0.5, "autoscaled": True}) is None  # it can add nodes
    assert roomy.train.num_workers == 2
    strict = EvoConfig(data={"base": "b.jsonl"}, train={"num_workers": 2}, jobs={"min_workers": 2})
    with pytest.raises(JobFailed) as e:
        fit_workers(strict, two_cpus)
    assert e.value.error["code"] == "insufficient_resources"
    assert "needs 2 CPUs (2 Ray Train workers x 1 CPU) and the cluster can give 1.5 CPUs" in str(e.value)
    with pytest.raises(JobFailed, match="the cluster can give 0 CPUs .0.5 in all, 0.5 held by Serve"):
        fit_workers(EvoConfig(data={"base": "b.jsonl"}), {"total": 0.5, "serve": 0.5, "autoscaled": False})


def test_a_job_cancelled_while_queued_ends_its_runner_without_waiting_for_the_running_job(stores):
    root, _, jobs, _ = stores
    atomic_write_json(root / "run_config.json", EvoConfig(data={"base": "b.jsonl"}).model_dump(mode="json"))
    running, queued = create(stores, "k1")["id"], create(stores, "k2")["id"]
    done: list[int] = []
    with runner_lock(root, running), run_lock(root):  # the running job's runner lives and trains
        jobs.update(running, status="running")
        t = threading.Thread(target=lambda: done.append(execute(root, queued, run_generation=None)), daemon=True)
        t.start()
        assert until(lambda: jobs.raw(queued)["status"] == "queued")
        jobs.update(queued, status="cancelled")
        t.join(5)
        assert done == [0]  # its runner ended while the other job still held the run lock


def test_the_store_reads_only_job_ids_never_a_side_file_or_a_path(stores):
    """What the routes check, the store checks too: a job's side file (`<id>.checkpoints.json`) or a path
    is never read as a job, whoever calls. Before: the side file was read as a job (and broke on it)."""
    root, _, jobs, _ = stores
    job = create(stores, "k1")
    (jobs.dir / f"{job['id']}.checkpoints.json").write_text("[]")
    for jid in (f"{job['id']}.checkpoints", "ftjob-../keys", "ftjob-a/b", "file-abc", "ftjob-"):
        with pytest.raises(APIError) as e:
            jobs.raw(jid)
        assert e.value.status == 404, jid
    assert jobs.raw(job["id"])["id"] == job["id"]


def test_only_a_running_job_pauses_and_only_a_paused_one_resumes_and_no_runner_undoes_a_pause(stores):
    """The states OpenAI's pause and resume move a job through (issue 30, item 4), kept by the store:
    every wrong move is a 409 naming the job and its status; a runner that had not seen the pause
    cannot make the job queued or running again; one still finishing it may end it."""
    root, _, jobs, _ = stores
    jid = create(stores, "k1")["id"]
    for status in ("validating_files", "queued"):
        jobs.update(jid, status=status)
        with pytest.raises(APIError) as e:
            jobs.pause(jid)
        assert e.value.status == 409 and e.value.param == "fine_tuning_job_id"
        assert f"{jid} cannot be paused: it is {status}" in e.value.message
    with pytest.raises(APIError) as e:
        jobs.pause(jid, owner="k2")  # another tenant's job is not there
    assert e.value.status == 404
    jobs.update(jid, status="running", submission_id="evo-x")
    assert jobs.pause(jid)["status"] == "paused" and jobs.pause_path(jid).exists()
    with pytest.raises(APIError, match=f"{jid} cannot be paused: it is paused") as e:
        jobs.pause(jid)
    assert e.value.status == 409
    for runner_says in ("queued", "running"):  # a runner that did not see the pause
        assert jobs.update(jid, status=runner_says)["status"] == "paused"
    assert jobs.get(jid)["status"] == "paused" and "resumes" not in jobs.get(jid)
    again = jobs.reopen(jid)
    assert again["status"] == "validating_files" and again["submission_id"] is None and again["resumes"] == 1
    assert not jobs.pause_path(jid).exists()
    with pytest.raises(APIError, match=f"{jid} cannot be resumed: it is validating_files") as e:
        jobs.reopen(jid)
    assert e.value.status == 409
    jobs.update(jid, status="running")
    jobs.pause(jid)
    assert jobs.update(jid, status="succeeded")["status"] == "succeeded"  # the pause came after training ended
    with pytest.raises(APIError, match="it is succeeded"):
        jobs.pause(jid)
    with pytest.raises(APIError, match="it is succeeded"):
        jobs.reopen(jid)


def test_a_sweep_is_not_paused(stores):
    _, _, jobs, _ = stores
    jid = create(stores, "k1", learning_rate_multiplier="auto")["id"]
    jobs.update(jid, status="running")
    with pytest.raises(APIError, match="Ray Tune searches its learning_rate_multiplier") as e:
        jobs.pause(jid)
    assert e.value.status == 400 and jobs.raw(jid)["status"] == "running" and not jobs.pause_path(jid).exists()


def test_a_paused_job_holds_no_queue_and_is_never_failed_for_having_no_runner(stores):
    """What evo chose for a paused job and the queue: it frees the run lock and is not in the queue, so
    the next job takes its turn; its runner and its Ray job are gone by design, so neither a waiting
    runner (`fail_dead_runners`) nor the service's sweep (`settle`) fails it, at start-up or later."""
    root, _, jobs, _ = stores
    paused, other = create(stores, "k1")["id"], create(stores, "k2")["id"]
    went: list[str] = []
    with runner_lock(root, paused):  # its runner trains
        jobs.update(paused, status="running", submission_id="evo-paused")
        waiter(jobs, root, other, went)
        assert until(lambda: jobs.raw(other)["status"] == "queued")
        time.sleep(0.3)
        assert went == []
        jobs.pause(paused)
        assert jobs.raw(paused)["paused_step"] is None
        jobs.update(paused, paused_step=3)  # what its runner records when training has stopped, before it ends
    assert until(lambda: went == [other])  # its runner ended at the pause: the queue goes on
    assert jobs.raw(paused)["status"] == "paused"
    ray = KnownJobs(root, [details("evo-paused", JobStatus.SUCCEEDED)])  # its Ray job ended when it paused
    service = JobService(root, ray, sweep_every_s=None)
    assert service.sweep() == [] and service.settle(jobs.raw(paused))["status"] == "paused"
    ray.records = []  # Ray restarted: the job is still paused, to be resumed on the new cluster
    assert service.settle(jobs.raw(paused))["status"] == "paused"
    jobs.update(other, status="succeeded")
    # a pause that came after training ended: the runner goes on to the end, so it is alive only while its
    # Ray job is; one that died first leaves a job failed, not paused for ever
    late = create(stores, "k1")["id"]
    jobs.update(late, status="running", submission_id="evo-late")
    jobs.pause(late)
    ray.records = [details("evo-late", JobStatus.RUNNING)]
    assert service.settle(jobs.raw(late))["status"] == "paused"  # its runner goes on
    ray.records = [details("evo-late", JobStatus.FAILED)]
    assert JobService(root, ray, sweep_every_s=None).settle(jobs.raw(late))["status"] == "failed"  # asked afresh
