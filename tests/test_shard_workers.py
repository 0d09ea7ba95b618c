# Copyright 2026 The trl-presafety developers. Licensed under the Apache License, Version 2.0.
"""Several workers over one folder (`trl_presafety.shards`): claims, and `trl-presafety label` run by real processes.

The end-to-end tests run the `label` command in fresh interpreters with the tiny model (transformers backend) through
`WORKER`, a driver that only observes: it logs which prompts each process starts generating for, waits for a "go" file
before the shards are taken (so that workers start together), and sleeps in each shard (so that a kill lands mid-shard).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import torch

from trl_presafety import shards
from trl_presafety.generation import GenerationArguments
from trl_presafety.labeling import label_dataset, load_labeled_dataset
from trl_presafety.shards import CLAIMS_DIR, ShardedJob, ShardWorkerArguments, claim_shard

from .test_classifier import build_tiny_classifier
from .test_generation import perturbed_tiny_model
from .test_labeling import EVAL_PROMPTS, prompts_dataset


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    """A tiny Qwen3-style model whose answers vary with the prompt, saved for `from_pretrained`."""
    path = tmp_path_factory.mktemp("lrm")
    model, tokenizer = perturbed_tiny_model("qwen3")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def classifier_path(tmp_path_factory) -> str:
    return build_tiny_classifier(tmp_path_factory.mktemp("classifier"), seed=1)


# --- claims, in this process and across processes --------------------------------------------------------------------
def test_a_live_claim_is_kept_and_a_dead_one_taken_over(tmp_path):
    path = tmp_path / CLAIMS_DIR / "train-00000.claim"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # A claim of a live process on this host stays, whatever its age, until claim_timeout
        path.parent.mkdir()
        path.write_text(json.dumps({"owner": "x", "host": shards._HOST, "pid": sleeper.pid}))
        assert claim_shard(path, claim_timeout=60) is None
        # ...unless the rerun says the other workers are gone
        taken = claim_shard(path, claim_timeout=60, take_over=True)
        assert taken is not None and taken.held() and json.loads(path.read_text())["pid"] == os.getpid()
        taken.release()
        assert not path.exists()
        # A live-looking claim from another host counts as dead once untouched for claim_timeout
        path.write_text(json.dumps({"owner": "y", "host": "another-node", "pid": sleeper.pid}))
        assert claim_shard(path, claim_timeout=60) is None
        os.utime(path, (time.time() - 120, time.time() - 120))
        taken = claim_shard(path, claim_timeout=60)
        assert taken is not None and taken.held()
        assert claim_shard(path, claim_timeout=60) is None  # now this live process holds it
        taken.release()
    finally:
        sleeper.kill()
        sleeper.wait()
    # The sleeper is dead now: its claim is taken over at once, with no timeout to wait
    path.write_text(json.dumps({"owner": "z", "host": shards._HOST, "pid": sleeper.pid}))
    taken = claim_shard(path, claim_timeout=3600)
    assert taken is not None
    taken.release()


def test_heartbeat_touches_the_claim(tmp_path):
    claim = claim_shard(tmp_path / "a.claim", claim_timeout=0.5)  # touched every 0.05 s
    os.utime(claim.path, (0, 0))
    time.sleep(0.3)
    assert time.time() - claim.path.stat().st_mtime < 0.3
    # Taken over by another worker (it judged the owner dead): the owner sees it before writing
    claim.path.write_text(json.dumps({"owner": "someone else"}))
    assert not claim.held()
    claim.release()
    assert claim.path.exists()  # the new owner's claim is not removed


RACE = """
import os, sys, time
from pathlib import Path
from trl_presafety.shards import claim_shard
folder = Path(sys.argv[1])
(folder / f"ready-{os.getpid()}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
claim = claim_shard(folder / "s.claim", claim_timeout=60)
print("won" if claim is not None else "lost", flush=True)
time.sleep(2.0)
"""


def test_of_racing_processes_exactly_one_claims(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path)], stdout=subprocess.PIPE) for _ in range(4)]
    _release_when_ready(tmp_path, procs)  # every process spins on the "go" file, then claims at the same instant
    results = [p.communicate(timeout=120)[0].decode().strip() for p in procs]
    assert sorted(results) == ["lost", "lost", "lost", "won"]


def _rows(n: int) -> object:
    from datasets import Dataset

    return Dataset.from_dict({"i": list(range(n))})


def test_workers_take_disjoint_shards_and_the_last_one_finishes(tmp_path):
    def job(index: int, num_workers: int = 2) -> ShardedJob:
        return ShardedJob({"rows": tmp_path}, {"command": "test"}, ("command",), num_rows=7, shard_size=2,
                          num_workers=num_workers, worker_index=index)  # fmt: skip

    computed = []

    def process(index, rows):
        computed.append(index)
        return {"rows": _rows(len(rows))}, None

    first = job(1)
    assert first.shards() == [1, 3]
    first.run(process)
    assert computed == [1, 3] and not first.all_done() and "1 of 2" in first.pending_message()
    assert json.loads((tmp_path / shards.STATE_FILE).read_text())["complete"] is False
    second = job(0)
    second.run(process)
    assert computed == [1, 3, 0, 2] and second.all_done()
    second.finish()
    assert not (tmp_path / CLAIMS_DIR).exists()
    assert json.loads((tmp_path / shards.STATE_FILE).read_text())["complete"] is True
    # A late worker changes nothing on a finished folder: the state stays complete while it looks
    late = job(1)
    assert json.loads((tmp_path / shards.STATE_FILE).read_text())["complete"] is True
    late.run(process)
    assert computed == [1, 3, 0, 2]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_workers": 0}, r"Invalid `num_workers`: 0. Use the number of workers sharing the job, >= 1."),
        ({"num_workers": 4, "worker_index": 4}, r"Invalid `worker_index`: 4. Use an index in \[0, 4\)"),
        ({"worker_index": -1}, r"Invalid `worker_index`: -1"),
        ({"claim_timeout": 0}, r"Invalid `claim_timeout`: 0. Use a number of seconds > 0"),
    ],
)
def test_bad_worker_settings_fail_clearly(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShardWorkerArguments(**kwargs)


def test_overwrite_is_refused_where_it_would_delete_other_workers_shards(tmp_path):
    with pytest.raises(ValueError, match=r"`overwrite_output_dir` with `num_workers: 2`: each worker would delete"):
        ShardedJob({"rows": tmp_path}, {}, (), num_rows=4, shard_size=2, overwrite=True, num_workers=2)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a worker at work
    try:
        (tmp_path / CLAIMS_DIR).mkdir()
        claim = {"owner": "x", "host": shards._HOST, "pid": sleeper.pid}
        (tmp_path / CLAIMS_DIR / "train-00000.claim").write_text(json.dumps(claim))
        with pytest.raises(ValueError, match=r"while 1 other worker\(s\) compute shards there"):
            ShardedJob({"rows": tmp_path}, {}, (), num_rows=4, shard_size=2, overwrite=True)
    finally:
        sleeper.kill()
        sleeper.wait()
    ShardedJob({"rows": tmp_path}, {}, (), num_rows=4, shard_size=2, overwrite=True)  # its owner is gone
    assert not (tmp_path / CLAIMS_DIR).exists()


# --- `trl-presafety label` by several real processes -----------------------------------------------------------------
WORKER = """
import json, os, sys, time
from pathlib import Path

from trl_presafety import shards
from trl_presafety.labeling import pipeline
from trl_presafety.scripts import label

log, go, pause = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
real_generate, real_run = pipeline.generate_responses, shards.ShardedJob.run


def logged_generate(model, tokenizer, prompts, **kwargs):
    with log.open("a") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "prompts": list(prompts)}) + "\\n")
    time.sleep(pause)  # a kill now lands mid-shard: claimed, not written
    return real_generate(model, tokenizer, prompts, **kwargs)


def run_after_go(self, *args, **kwargs):
    go.parent.joinpath(f"ready-{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.01)
    return real_run(self, *args, **kwargs)


pipeline.generate_responses = logged_generate
shards.ShardedJob.run = run_after_go
label.main(sys.argv[4:])
"""
GENERATION = GenerationArguments(backend="transformers", max_new_tokens=8, generation_batch_size=4)


def _label_command(tmp_path, model_dir, classifier_path, out, num_rows, pause, *extra) -> list[str]:
    driver = tmp_path / "worker.py"
    driver.write_text(WORKER)
    command = [sys.executable, str(driver), str(tmp_path / "log.jsonl"), str(tmp_path / "go"), str(pause)]
    command += ["--model_name_or_path", model_dir, "--classifier_name_or_path", classifier_path]
    command += ["--dataset_name", str(EVAL_PROMPTS), "--max_samples", str(num_rows), "--output_dir", str(out)]
    command += ["--shard_size", "2", "--backend", "transformers", "--max_new_tokens", "8"]
    return command + ["--generation_batch_size", "4", "--dtype", "float32", *extra]


def _start(command) -> subprocess.Popen:
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _release_when_ready(tmp_path, procs, timeout=240) -> None:
    deadline = time.monotonic() + timeout
    while len(list(tmp_path.glob("ready-*"))) < len(procs):
        for proc in procs:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the workers did not get ready"
        time.sleep(0.05)
    (tmp_path / "go").touch()


def _log(tmp_path) -> list[dict]:
    path = tmp_path / "log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _reference(model_dir, classifier_path, num_rows):
    """The same labels from one uninterrupted worker, in this process, on one thread like the subprocesses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return label_dataset(prompts_dataset(num_rows).remove_columns("id"), model_dir, None, classifier_path,
                             generation=GENERATION, shard_size=2, show_progress=False)  # fmt: skip
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow  # ~35 s of CPU: three `label` processes and a reference run
def test_two_workers_share_a_job_and_a_killed_ones_shards_are_finished_by_a_rerun(
    model_dir, classifier_path, tmp_path
):
    out, num_rows = tmp_path / "labels", 8  # 4 shards: worker 0 takes 0 and 2, worker 1 takes 1 and 3
    workers = [
        _start(
            _label_command(
                tmp_path,
                model_dir,
                classifier_path,
                out,
                num_rows,
                1.5,
                "--num_workers",
                "2",
                "--worker_index",
                str(i),
            )
        )  # fmt: skip
        for i in (0, 1)
    ]
    _release_when_ready(tmp_path, workers)
    # Kill worker 1 with SIGKILL once it has started its second shard (3): no chance to clean up
    deadline = time.monotonic() + 240
    while sum(entry["pid"] == workers[1].pid for entry in _log(tmp_path)) < 2:
        assert workers[1].poll() is None, workers[1].communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    workers[1].send_signal(signal.SIGKILL)
    workers[1].wait()
    stdout, stderr = workers[0].communicate(timeout=240)
    assert workers[0].returncode == 0, stderr[-3000:]
    assert "Worker 0 of 2: its shards are in" in stdout
    written = sorted(p.name for p in (out / "data").glob("*.parquet"))
    assert written == [f"train-0000{i}-of-00004.parquet" for i in (0, 1, 2)]  # shard 3 died mid-way
    assert [p.name for p in (out / CLAIMS_DIR).iterdir()] == ["train-00003.claim"]  # the dead worker's claim
    assert json.loads((out / shards.STATE_FILE).read_text())["complete"] is False
    before = {name: (out / "data" / name).read_bytes() for name in written}

    # The rerun (one worker for the whole job) takes over the dead claim and computes only shard 3
    rerun = _start(_label_command(tmp_path, model_dir, classifier_path, out, num_rows, 0.0))
    _release_when_ready(tmp_path, [rerun])
    stdout, stderr = rerun.communicate(timeout=240)
    assert rerun.returncode == 0, stderr[-3000:]
    assert f"Labeled {num_rows} of {num_rows} prompts" in stdout  # every row labeled, none left blank
    prompts = [json.loads(line)["prompt"] for line in EVAL_PROMPTS.read_text().splitlines()[:num_rows]]
    computed = [(entry["pid"], entry["prompts"]) for entry in _log(tmp_path)]
    by_worker = {pid: [p for q, ps in computed if q == pid for p in ps] for pid, _ in computed}
    assert by_worker[workers[0].pid] == prompts[0:2] + prompts[4:6]
    assert by_worker[workers[1].pid] == prompts[2:4] + prompts[6:8]  # killed during the second one
    assert by_worker[rerun.pid] == prompts[6:8]
    assert {name: (out / "data" / name).read_bytes() for name in written} == before  # finished shards kept
    assert not (out / CLAIMS_DIR).exists()

    # No row lost or duplicated: row by row, the labels of one uninterrupted worker
    labeled = load_labeled_dataset(out)
    reference = _reference(model_dir, classifier_path, num_rows)
    assert labeled["prompt"] == prompts
    for column in ("safe_response", "safety_label"):
        assert labeled[column] == reference[column]
    assert labeled["safety_label_prob"] == pytest.approx(reference["safety_label_prob"], abs=1e-6)


JOB = """
import json, os, sys, time
from pathlib import Path
from datasets import Dataset
from trl_presafety.shards import ShardedJob

folder = Path(sys.argv[1])
job = ShardedJob({"rows": folder / "out"}, {"command": "test"}, ("command",), num_rows=3, shard_size=3)
(folder / f"ready-{os.getpid()}").touch()
while not (folder / "go").exists():
    time.sleep(0.005)


def process(index, rows):
    with (folder / "log.jsonl").open("a") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "shard": index}) + "\\n")
    time.sleep(2.0)
    return {"rows": Dataset.from_dict({"row": list(rows), "pid": [os.getpid()] * len(rows)})}, None


job.run(process)
print(json.dumps({"written": job.written, "held_by_others": job.held_by_others, "all_done": job.all_done()}))
"""


def test_two_workers_started_on_the_same_shard_do_not_both_write_it(tmp_path):
    # One shard, two processes released at the same instant on it
    workers = [
        subprocess.Popen([sys.executable, "-c", JOB, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    _release_when_ready(tmp_path, workers)
    results = []
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=240)
        assert worker.returncode == 0, stderr.decode()[-3000:]
        results.append(json.loads(stdout.decode().splitlines()[-1]))
    # Exactly one computed and wrote it; the other found it claimed by a live worker and left it
    assert sorted(r["written"] for r in results) == [[], [0]]
    assert sorted(r["held_by_others"] for r in results) == [[], [0]]
    assert [entry["shard"] for entry in _log(tmp_path)] == [0]
    winner = next(w.pid for w, r in zip(workers, results, strict=True) if r["written"])
    assert _log(tmp_path)[0]["pid"] == winner
    written = pq.read_table(tmp_path / "out" / "data" / "train-00000-of-00001.parquet").to_pydict()
    assert written == {"row": [0, 1, 2], "pid": [winner] * 3}


# --- `trl-presafety build-sft` by two workers (two folders per shard, per-shard samples, statistics at the end) ------
def test_build_sft_workers_split_the_job_and_the_last_one_finishes_it(tiny_model_dirs, tmp_path, capsys):
    from datasets import load_dataset

    from trl_presafety.labeling.state import IncompleteLabelsError, check_label_folder
    from trl_presafety.scripts import build_sft as build_sft_script

    from .test_build_sft import args_for

    split = tmp_path / "split"
    assert build_sft_script.main(args_for(tiny_model_dirs["qwen3"], split, "--num_workers", "2")) == {}
    assert "Worker 0 of 2 finished its part (2 shard(s) written); 2 of 3 shards" in capsys.readouterr().out
    for folder in ("sft", "pairs"):  # both folders stay refused until the other worker is done
        with pytest.raises(IncompleteLabelsError, match=r"2 of 3 shards done"):
            check_label_folder(split / folder)
    stats = build_sft_script.main(
        args_for(tiny_model_dirs["qwen3"], split, "--num_workers", "2", "--worker_index", "1")
    )
    assert "build-sft acceptance (12 prompts, k=2 draws each)" in capsys.readouterr().out
    # Every row once, as one uninterrupted worker writes them, with the statistics of the whole job
    single = tmp_path / "single"
    assert build_sft_script.main(args_for(tiny_model_dirs["qwen3"], single)) == stats
    for folder in ("sft", "pairs"):
        assert check_label_folder(split / folder) == split / folder
        rows = load_dataset(str(split / folder), split="train").to_list()
        assert rows == load_dataset(str(single / folder), split="train").to_list()
    assert json.loads((split / "sft" / "build_sft_stats.json").read_text())["acceptance"] == stats
