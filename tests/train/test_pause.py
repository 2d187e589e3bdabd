"""A training run's pause (`WorkerConfig.pause_file`, a fine-tuning job's pause): every worker stops at
the same step, even when only one of them sees the file, or the others would hang in the next
collective. Two real processes joined by torch.distributed (gloo), as Ray Train's workers are."""

from __future__ import annotations

import multiprocessing
import socket

from evo.train.pause import pause_asked


def _worker(rank: int, port: int, files: list[str], out) -> None:
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        out.put((rank, [pause_asked(f, 2, torch.device("cpu")) for f in files[rank]]))
    finally:
        dist.destroy_process_group()


def test_one_worker_seeing_the_pause_stops_them_all_at_the_same_step(tmp_path):
    seen = tmp_path / "ftjob-a.pause"
    seen.write_text("{}")
    missing = str(tmp_path / "nowhere.pause")
    # per rank, per step: step 0 neither sees a file, step 1 only rank 0 does, step 2 only rank 1
    files = [[missing, str(seen), missing], [missing, missing, str(seen)]]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(rank, port, files, out)) for rank in (0, 1)]
    for p in procs:
        p.start()
    got = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert got == {0: [False, True, True], 1: [False, True, True]}


def test_a_run_without_a_pause_file_is_never_paused_and_one_worker_stops_when_it_appears(tmp_path):
    pause = tmp_path / "ftjob-a.pause"
    assert pause_asked("", 1, None) is False and pause_asked(str(pause), 1, None) is False
    pause.write_text("{}")
    assert pause_asked(str(pause), 1, None) is True and pause_asked("", 1, None) is False


def test_a_checkpoint_is_continued_only_on_the_records_and_workers_it_was_trained_on(tmp_path):
    """A paused job resumed after a correction or a file deletion rebuilds its mix: its steps would then
    pick other examples (by index), training some twice and skipping others. Refused, naming why."""
    import pytest

    from evo.data.records import parse_record
    from evo.train.state import ResumeMismatch, TrainState, records_sha

    mix = [parse_record({"prompt": f"q{i} =", "completion": f" a{i}"}) for i in range(8)]
    state = TrainState(step=5, mix_sha=records_sha(mix), world=2)
    state.save(tmp_path)
    again = TrainState.load(tmp_path)
    again.continues(list(mix), 2, "mix.parquet")  # the same records and workers: continues
    TrainState().continues(mix[:3], 1, "mix.parquet")  # a run with no steps yet: nothing to continue
    for records, world in ((mix[:7], 2), (mix[1:] + mix[:1], 2), (mix, 1)):
        with pytest.raises(ResumeMismatch, match="checkpoint of step 5 was trained on other records or workers"):
            again.continues(records, world, "mix.parquet")
