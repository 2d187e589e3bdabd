"""A fine-tuning workflow as a user of OpenAI's hosted API writes it, run unchanged against evo.

Only the environment differs: OPENAI_BASE_URL (evo serve's, e.g. http://127.0.0.1:8000/v1) and
OPENAI_API_KEY (a key from `evo keys create --scope fine-tune`), which the `openai` SDK reads itself;
and the base model's name, an argument here as it is in most such scripts ("champion" on evo).

    python examples/openai_migration.py champion train.jsonl [validation.jsonl]

It uploads the files, starts a job with a method, hyperparameters and metadata, follows its events
until it ends, lists its checkpoints, downloads its result file, chats with the fine-tuned model and
finally deletes it. Each step prints one line; any failure raises (exit status 1).
"""

from __future__ import annotations

import csv
import io
import sys
import time

from openai import OpenAI


def main(base_model: str, train_path: str, validation_path: str | None = None) -> None:
    client = OpenAI()
    with open(train_path, "rb") as f:
        training_file = client.files.create(file=f, purpose="fine-tune")
    print(f"uploaded {training_file.id} ({training_file.bytes} bytes)")
    validation_file = None
    if validation_path:
        with open(validation_path, "rb") as f:
            validation_file = client.files.create(file=f, purpose="fine-tune")
        print(f"uploaded {validation_file.id} ({validation_file.bytes} bytes)")

    job = client.fine_tuning.jobs.create(
        model=base_model,
        training_file=training_file.id,
        validation_file=validation_file.id if validation_file else None,
        suffix="migrated",
        seed=7,
        method={"type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": "auto", "learning_rate_multiplier": 1.0}}},
        metadata={"team": "search", "ticket": "ML-1234"},
    )
    print(f"created {job.id}: {job.status}")

    seen = set()
    while job.status not in ("succeeded", "failed", "cancelled"):
        time.sleep(1)
        job = client.fine_tuning.jobs.retrieve(job.id)
        for event in reversed(client.fine_tuning.jobs.list_events(fine_tuning_job_id=job.id, limit=10).data):
            if event.id not in seen:
                seen.add(event.id)
                print(f"  event: {event.message}")
    if job.status != "succeeded":
        raise SystemExit(f"{job.id} {job.status}: {job.error}")
    print(f"succeeded: {job.fine_tuned_model} (seed {job.seed}, {job.trained_tokens} tokens)")

    mine = client.fine_tuning.jobs.list(metadata={"team": "search"})
    assert job.id in [j.id for j in mine.data], "the job is not listed under its metadata"

    for ckpt in client.fine_tuning.jobs.checkpoints.list(job.id).data:
        print(f"checkpoint step {ckpt.step_number}: train loss {ckpt.metrics.train_loss:.4f}, "
              f"valid loss {ckpt.metrics.valid_loss:.4f}")

    content = client.files.content(job.result_files[0]).text
    steps = list(csv.DictReader(io.StringIO(content)))
    print(f"result file {job.result_files[0]}: {len(steps)} steps, last train loss {steps[-1]['train_loss']}")

    reply = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "Hello!"}])
    print(f"chat: {reply.choices[0].message.content!r}")

    deleted = client.models.delete(job.fine_tuned_model)
    assert deleted.deleted, deleted
    print(f"deleted {deleted.id}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
