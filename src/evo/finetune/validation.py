"""A fine-tuning job's validation file, checked by what it says, not by its id.

Every upload of the same bytes gets a new file id, so comparing ids let the training file, uploaded
twice, choose its own checkpoint. A validation record that asks a question of the training file or of
a test part of the lineage (any user turn, compared by the split's question key,
`evo.data.store.question_key`: case and spacing folded, end punctuation dropped) would let checkpoint choice see
what the job trains on or what is reported: such records are left out where the job reads its
validation file (`job_validation`, with a job event saying how many), and a validation file with
nothing left beside its training file is refused when the job is created (`check_validation_file`,
a 400 on `validation_file`).

Not near-copies (`evo.nearcopy`): a delta's own val part is drawn from its templates as its train
part is, so one word apart is the norm between them; the same question is what must not be on both
sides, the same key the split divides by.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from evo.config import EvoConfig
from evo.data.ingest import ingest_bytes
from evo.data.records import Record
from evo.data.store import questions
from evo.finetune.files import FileStore
from evo.lineage.root import Lineage
from evo.openai_api import APIError


def file_records(files: FileStore, fid: str, owner: Optional[str] = None) -> list[Record]:
    """File `fid`'s records, as ingest reads them (an upload was checked when it came)."""
    obj = files.get(fid, owner)
    return ingest_bytes(files.content(fid, owner), obj["filename"], max_chars=files.max_chars).records


@dataclass
class KeptApart:
    """A job's validation records with what it shares with the training file and the test parts left out."""

    kept: list[Record]
    in_training: int  # left out: it asks a question of the training file
    in_tests: int  # left out: it asks a question of a test part of the lineage

    def event(self) -> str:
        """The job event that says what was left out ("" when nothing was)."""
        if not self.in_training and not self.in_tests:
            return ""
        n = self.in_training + self.in_tests
        return (f"validation file: {n} of {n + len(self.kept)} records left out, {self.in_training} in the training "
                f"file and {self.in_tests} in a test part of the lineage (the same question); "
                f"{len(self.kept)} left to choose the checkpoint")


def question_keys(records: list[Record]) -> set[str]:
    """The questions the records ask, as the split tells them apart (`evo.data.store.questions`: every
    user turn of a chat; case and spacing folded, end punctuation dropped): the same key that puts a
    question in one part of a delta."""
    return {q for r in records for q in questions(r)}


def validation_apart(val: list[Record], train: list[Record], tests: list[Record] = ()) -> KeptApart:
    """`val` less each record that asks a question of `train` or of `tests` (`question_keys`)."""
    trained, tested = question_keys(train), question_keys(tests)
    kept, in_training, in_tests = [], 0, 0
    for r in val:
        asks = question_keys([r])
        if asks & trained:
            in_training += 1
        elif asks & tested:
            in_tests += 1
        else:
            kept.append(r)
    return KeptApart(kept, in_training, in_tests)


def check_validation_file(files: FileStore, training_file: str, validation_file: str, owner: Optional[str]) -> None:
    """At job creation: a validation file every record of which is in the training file (the same
    bytes uploaded twice, or the same questions) would choose the checkpoint on the data the job
    trains on; refused with a 400 naming `validation_file`."""
    val = file_records(files, validation_file, owner)
    if not validation_apart(val, file_records(files, training_file, owner)).kept:
        raise APIError(400, f"validation_file {validation_file}: all {len(val)} of its records are in the training file "
                            f"{training_file} (the same questions); the validation file chooses "
                            "the checkpoint, so it must hold records the job does not train on", "validation_file")


class ValidationFileError(ValueError):
    """A job's validation file has nothing left once its training data and the test parts are left out."""


def job_validation(root: str | Path, cfg: EvoConfig, train: list[Record], val: list[Record],
                   say: Callable[[str], None]) -> list[Record]:
    """Where a job reads its validation records: those apart from its training file and from every
    test part of the lineage (each generation's, divided as recorded when its delta was ingested:
    `Lineage.test_parts`; `cfg`'s fractions only for a delta of an older root); what was left out is said
    (`say`: a job event). Nothing left: ValidationFileError."""
    lin = Lineage(root)
    tests = [r for part in lin.test_parts(cfg.data.val_fraction, cfg.data.test_fraction) for r in part]
    apart = validation_apart(val, train, tests)
    if apart.event():
        say(apart.event())
    if not apart.kept:
        raise ValidationFileError(f"validation_file: none of its {len(val)} records is apart from the training file and "
                                  "the lineage's test parts, so nothing is left to choose the checkpoint on")
    return apart.kept
