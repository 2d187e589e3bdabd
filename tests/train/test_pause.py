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
