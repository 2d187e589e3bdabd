"""Fine-tuning job objects: request checks, hyperparameters in OpenAI's terms, statuses, events,
pagination, and a job whose file breaks the lineage's rules failing at validating_files."""

import json
import threading
import time

import pytest

from evo.atomic import atomic_write_json
from evo.config import EvoConfig
from evo.finetune.files import FileStore
from evo.finetune.jobs import JobStore, parse_hyperparameters, parse_method, plan_training, public
from evo.finetune.run_job import _wait_turn, execute, job_config, runner_lock
from evo.openai_api import APIError

GOOD = b'{"prompt": "a", "completion": "b"}\n{"text": "c d"}\n'


def resolve(name):
    if name != "gen-1":
        raise APIError(404, f"model '{name}' is not a model here", "model", "not_found_error")
    return "gen-1", "a" * 64


@pytest.fixture
def stores(tmp_path):
    files = FileStore(tmp_path)
    return tmp_path, files, JobStore(tmp_path), files.create(GOOD, "t.jsonl", "fine-tune", "k1")["id"]


def refused(fn, status, match):
    with pytest.raises(APIError, match=match) as e:
        fn()
    assert e.value.status == status


@pytest.mark.parametrize("body,status,match", [
    ({"training_file": "x"}, 400, "'model' is required"),
    ({"model": "gen-9", "training_file": "FID"}, 404, "gen-9"),
    ({"model": "gen-1", "training_file": "file-nope"}, 404, "no file"),
    ({"model": "gen-1", "training_file": "FID", "validation_file": "FID"}, 400, "must differ"),
    ({"model": "gen-1", "training_file": "FID", "suffix": "Bad Suffix"}, 400, "suffix"),
    ({"model": "gen-1", "training_file": "FID", "hyperparameters": {"n_epochs": 2, "steps": 5}}, 400, "not both"),
    ({"model": "gen-1", "training_file": "FID", "hyperparameters": {"batch_size": "big"}}, 400, "batch_size must be"),
    ({"model": "gen-1", "training_file": "FID", "hyperparameters": {"learning_rate_multiplier": -1}}, 400, "positive"),
    ({"model": "gen-1", "training_file": "FID", "hyperparameters": {"lr": 1}}, 400, "unknown hyperparameters"),
])
def test_bad_job_requests_name_the_field(stores, body, status, match):
    _, files, jobs, fid = stores
    body = json.loads(json.dumps(body).replace("FID", fid))
    refused(lambda: jobs.create(body, "k1", "k1", files, resolve), status, match)
    assert jobs.all() == []


def test_another_keys_file_cannot_be_trained_on(stores):
    _, files, jobs, fid = stores
    refused(lambda: jobs.create({"model": "gen-1", "training_file": fid}, "k2", "k2", files, resolve), 404, "no file")


def cfg0():
    return EvoConfig(data={"base": "b.jsonl"})


def test_hyperparameters_are_multipliers_epochs_and_auto():
    hp = parse_hyperparameters({"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 0.5})
    assert plan_training(hp, 2e-3, 100, 8, 10) == {"lr": 1e-3, "steps": 8, "batch_size": 4, "tune": []}  # ceil(3*10/4)
    assert plan_training(parse_hyperparameters({"steps": 7}), 2e-3, 100, 8, 10)["steps"] == 7
    auto = plan_training(parse_hyperparameters({"learning_rate_multiplier": "auto"}), 2e-3, 100, 8, 10)
    assert auto["tune"] == ["learning_rate_multiplier"] and auto["lr"] == 2e-3
    cfg, plan = job_config(cfg0(), {"hyperparameters": {"learning_rate_multiplier": "auto", "steps": 12}, "seed": 5}, 10)
    assert cfg.tune.steps == [12] and cfg.tune.lr != (plan["lr"], plan["lr"]) and cfg.train.seed == 5
    cfg, _ = job_config(cfg0(), {"hyperparameters": {"n_epochs": "auto", "learning_rate_multiplier": 2}, "seed": 0}, 10)
    assert cfg.tune.lr == (2 * cfg0().train.lr,) * 2 and cfg.tune.steps == cfg0().tune.steps


def test_job_objects_events_and_pages(stores):
    _, files, jobs, fid = stores
    made = [jobs.create({"model": "gen-1", "training_file": fid, "suffix": f"s{i}"}, "k1", "k1", files, resolve)
            for i in range(3)]
    job = public(made[0])
    assert job["object"] == "fine_tuning.job" and job["status"] == "validating_files" and "owner" not in job
    from openai.types.fine_tuning import FineTuningJob, FineTuningJobEvent

    FineTuningJob.model_validate(job)
    page = jobs.list("k1", limit=2)
    assert [j["id"] for j in page["data"]] == [made[2]["id"], made[1]["id"]] and page["has_more"]
    assert [j["id"] for j in jobs.list("k1", after=page["last_id"])["data"]] == [made[0]["id"]]
    assert jobs.list("k2")["data"] == []
    refused(lambda: jobs.get(made[0]["id"], "k2"), 404, "no fine-tuning job")
    jid = made[0]["id"]
    jobs.event(jid, "Step 1/2", data={"step": 1, "train_loss": 1.0, "valid_loss": 2.0})
    evs = jobs.events(jid, "k1")["data"]
    assert evs[0]["type"] == "metrics" and evs[1]["message"].startswith("job created")
    FineTuningJobEvent.model_validate(evs[0])
    jobs.add_checkpoint(jid, 5, {"step": 5, "train_loss": 1.0, "valid_loss": 2.0}, "ft:gen-1:s0:ckpt-step-5")
    jobs.add_checkpoint(jid, 5, {"step": 5, "train_loss": 1.0, "valid_loss": 2.0}, "ft:gen-1:s0:ckpt-step-5")  # once
    assert [c["step_number"] for c in jobs.checkpoints(jid)["data"]] == [5] and len(jobs.all()) == 3
    jobs.update(jid, status="cancelled")
    assert jobs.update(jid, status="running")["status"] == "cancelled"  # a final status stays
    assert jobs.get(jid)["finished_at"] is not None


def test_a_record_over_the_lineages_limit_fails_the_job_at_validating_files(stores):
    root, files, jobs, _ = stores
    cfg = EvoConfig(data={"base": "b.jsonl"})
    atomic_write_json(root / "run_config.json", cfg.model_dump(mode="json"))
    long = json.dumps({"prompt": "q", "completion": "x" * (cfg.data.max_chars + 1)}).encode()
    fid = files.create(GOOD + long + b"\n", "long.jsonl", "fine-tune", "k1")["id"]  # the upload's own limit is wider
    job = jobs.create({"model": "gen-1", "training_file": fid}, "k1", "k1", files, resolve)
    assert execute(root, job["id"], run_generation=None) == 1
    job = jobs.get(job["id"])
    assert job["status"] == "failed" and job["error"]["param"] == "training_file"
    assert f"long.jsonl:3: record has {cfg.data.max_chars + 2} characters, over the limit" in job["error"]["message"]


def test_jobs_wait_their_turn_in_submission_order(stores):
    root, files, jobs, fid = stores
    first, second = (jobs.create({"model": "gen-1", "training_file": fid}, "k1", "k1", files, resolve) for _ in range(2))
    with runner_lock(root, first["id"]):  # its runner lives
        jobs.update(first["id"], status="running")
        jobs.update(second["id"], status="queued")
        went = threading.Event()
        t = threading.Thread(target=lambda: (_wait_turn(jobs, second["id"], 0.05), went.set()), daemon=True)
        t.start()
        time.sleep(0.3)
        assert not went.is_set()  # the first is still running
        jobs.update(first["id"], status="succeeded")
        assert went.wait(5)


def test_a_validation_file_is_checked_by_what_it_says_not_by_its_id(stores):
    """The training file uploaded again (a new id, the same bytes) would choose the checkpoint on the
    data it trains on: refused at creation with a 400 on validation_file. A validation file that shares
    some questions with the training file or a test part of the lineage loses those records when the
    job reads it, and a job event says how many."""
    from evo.data.records import Record
    from evo.data.store import DataStore, delta_parts
    from evo.finetune.validation import file_records, job_validation
    from evo.lineage.ledger import Ledger

    root, files, jobs, fid = stores
    again = files.create(GOOD, "t-again.jsonl", "fine-tune", "k1")["id"]
    assert again != fid
    refused(lambda: jobs.create({"model": "gen-1", "training_file": fid, "validation_file": again}, "k1", "k1", files,
                                resolve), 400, f"validation_file {again}: all 2 of its records are in the training file")
    same_questions = files.create(b'{"prompt": "A", "completion": "another answer"}\n', "v.jsonl", "fine-tune", "k1")["id"]
    refused(lambda: jobs.create({"model": "gen-1", "training_file": fid, "validation_file": same_questions}, "k1", "k1",
                                files, resolve), 400, "in the training file")
    assert jobs.all() == []

    cfg = EvoConfig(data={"base": "b.jsonl"})
    delta = [Record("completion", f"question {i}?", f" answer {i}") for i in range(40)]
    Ledger(root).append({"GEN_ID": "gen-1", "data_delta_sha": DataStore(root).put(delta), "decision": "rejected",
                         "split": "v3"})
    tested = delta_parts(delta, cfg.data.val_fraction, cfg.data.test_fraction).test[0]
    train = file_records(files, fid)
    val = [Record("completion", "a", " b"), Record("completion", tested.prompt, " other"),
           Record("completion", "a fresh question?", " yes")]
    said = []
    assert job_validation(root, cfg, train, val, said.append) == val[2:]
    assert said == ["validation file: 2 of 3 records left out, 1 in the training file and 1 in a test part of the "
                    "lineage (the same question); 1 left to choose the checkpoint"]
    with pytest.raises(ValueError, match="none of its 2 records is apart"):
        job_validation(root, cfg, train, val[:2], said.append)
    ok = files.create(b'{"prompt": "a fresh question?", "completion": "yes"}\n', "ok.jsonl", "fine-tune", "k1")["id"]
    assert jobs.create({"model": "gen-1", "training_file": fid, "validation_file": ok}, "k1", "k1", files, resolve)


@pytest.mark.parametrize("method,param,match", [
    ({"type": "reinforcement"}, "method.type", "method.type must be one of 'supervised', 'dpo'"),
    ({"type": None}, "method.type", "method.type must be"),
    ("dpo", "method", "method must be an object"),
    ({"type": "dpo", "supervised": {}}, "method.supervised", "only its own settings"),
    ({"type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}}, "method.dpo.hyperparameters.beta", "positive number"),
    ({"type": "dpo", "dpo": {"beta": 0.1}}, "method.dpo", "only 'hyperparameters'"),
    ({"type": "supervised", "supervised": {"hyperparameters": {"beta": 0.1}}}, "method.supervised.hyperparameters",
     "beta only with method dpo"),
])
def test_a_bad_method_is_a_400_naming_its_field(stores, method, param, match):
    _, files, jobs, fid = stores
    with pytest.raises(APIError, match=match) as e:
        jobs.create({"model": "gen-1", "training_file": fid, "method": method}, "k1", "k1", files, resolve)
    assert (e.value.status, e.value.param) == (400, param)
    assert jobs.all() == []


def test_a_dpo_job_on_a_file_without_preference_records_is_a_400_naming_the_file(stores):
    _, files, jobs, fid = stores
    with pytest.raises(APIError, match=f"training_file {fid} holds no preference records") as e:
        jobs.create({"model": "gen-1", "training_file": fid, "method": {"type": "dpo"}}, "k1", "k1", files, resolve)
    assert (e.value.status, e.value.param) == (400, "training_file") and jobs.all() == []


def test_methods_in_openais_shape_and_what_the_job_trains_with(stores):
    """supervised stays the default; OpenAI's method shape is taken for both types (the top-level
    hyperparameters as before); a dpo job's beta reaches train.dpo.beta, and "auto" searches it."""
    _, files, jobs, fid = stores
    plain = jobs.create({"model": "gen-1", "training_file": fid, "hyperparameters": {"steps": 3}}, "k1", "k1", files,
                        resolve)
    shaped = jobs.create({"model": "gen-1", "training_file": fid, "method": {
        "type": "supervised", "supervised": {"hyperparameters": {"steps": 3}}}}, "k1", "k1", files, resolve)
    for job in (plain, shaped):
        assert job["method"] == {"type": "supervised", "supervised": {"hyperparameters": {"steps": 3}}}
        assert job["hyperparameters"] == {"steps": 3}
        assert job_config(cfg0(), job, 10)[0].train.method == "supervised"
    assert parse_method({"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.25, "n_epochs": 2}}}, None) == \
        ("dpo", {"beta": 0.25, "n_epochs": 2})
    assert parse_method({"type": "dpo"}, {"steps": 4}) == ("dpo", {"steps": 4})
    with pytest.raises(APIError, match="not also at the top level"):
        parse_method({"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}, {"steps": 4})
    dpo = {"method": {"type": "dpo"}, "hyperparameters": {"beta": 0.25, "steps": "auto"}, "seed": 0}
    cfg, plan = job_config(cfg0(), dpo, 10)
    assert (cfg.train.method, cfg.train.dpo.beta, plan["tune"], cfg.tune.beta) == ("dpo", 0.25, ["steps"], [0.25])
    cfg, plan = job_config(cfg0(), {**dpo, "hyperparameters": {"beta": "auto"}}, 10)
    assert plan["tune"] == ["beta"] and cfg.tune.beta == cfg0().tune.beta and cfg.train.method == "dpo"


def test_which_records_each_method_takes():
    from evo.data.records import Record
    from evo.train.method import method_problem

    pref = Record("preference", "user: hi\nassistant:", "hello", '[{"role": "user", "content": "hi"}]', rejected="go")
    plain = Record("completion", "a", "b")
    assert method_problem("dpo", [plain, pref], "f") is None and method_problem("supervised", [plain], "f") is None
    assert "f holds no preference records" in method_problem("dpo", [plain], "f")
    assert "f holds 1 preference record(s)" in method_problem("supervised", [plain, pref], "f")


def test_a_cancelled_jobs_generation_number_is_never_given_again(tmp_path):
    """A job cancelled mid-training registered nothing, but its run folder holds its checkpoints: the
    next job must not take its number (it would resume from the cancelled run's checkpoints)."""
    from evo.finetune.run_job import next_index
    from evo.lineage.root import Lineage

    lin = Lineage(tmp_path)
    lin.registry.add("a" * 64, "gen-0", "", "base")
    assert next_index(lin) == 1
    (lin.run_dir("gen-1") / "checkpoints").mkdir(parents=True)  # the cancelled job's, nothing registered
    assert next_index(lin) == 2
    jobs = JobStore(tmp_path)
    jobs.dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(jobs.dir / "ftjob-x.json", {"id": "ftjob-x", "created_ns": 1, "evo": {"gen_id": "gen-5"}})
    assert next_index(lin) == 6  # a job that named its generation, with no folder yet
