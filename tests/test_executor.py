"""The executors (pacverify.executor): local and Ray give identical results; a killed worker's task is retried with the
same result; a wrong Ray address fails within seconds (InputError, exit 2). One local Ray instance (2 CPUs) for the
whole module."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_nets import random_mlp
from verify_nets import network_to_onnx

from pacverify.errors import InputError
from pacverify.executor import LocalExecutor, chunk_ranges, chunk_seed, get_executor
from pacverify.verify import api

ray = pytest.importorskip("ray")

CHUNK = 64  # several chunks on a few hundred points: exercises the splitting without a slow test


@pytest.fixture(scope="module")
def ray_instance():
    """One local Ray instance with 2 CPUs, started once and shut down at the end of the module."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def net():
    return random_mlp([8, 32, 32, 4], 3)


@pytest.fixture(scope="module")
def points():
    return np.random.default_rng(1).random((300, 8))


def _same(a, b) -> None:
    """Two results agree exactly on everything but the time and the executor's own stats."""
    assert a.verdicts == b.verdicts
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.radius, b.radius)
    assert np.array_equal(a.lower_bounds, b.lower_bounds)
    assert a.counterexamples.keys() == b.counterexamples.keys()
    for i in a.counterexamples:
        assert np.array_equal(a.counterexamples[i], b.counterexamples[i])
    if a.radius_upper is not None:
        assert np.array_equal(a.radius_upper, b.radius_upper)


def test_chunks_and_seeds_depend_on_the_count_and_index_only():
    assert chunk_ranges(5, 2) == [(0, 0, 2), (1, 2, 4), (2, 4, 5)]
    assert chunk_ranges(3, 10) == [(0, 0, 3)]
    assert chunk_seed(7, 0) == 7 and chunk_seed(7, 3) == chunk_seed(7, 3) != chunk_seed(7, 4)
    assert 0 <= chunk_seed(2**63 - 1, 5) < 2**63
    assert LocalExecutor().map_chunks(lambda p, c: p * c, 3, [1, 2, 4]) == [3, 6, 12]
    with pytest.raises(InputError, match="executor must be one of"):
        get_executor("dask")
    with pytest.raises(InputError, match="only applies with executor 'ray'"):
        get_executor("local", "127.0.0.1:6379")


def test_map_points_cuts_fixed_chunks_and_counts_points():
    """map_points: fn over chunk_ranges(n, size) in chunk order; progress in points, ending at (n, n)."""
    from pacverify.executor import map_points

    seen: list[tuple[int, int]] = []
    out = map_points(LocalExecutor(), lambda payload, c: (c, payload), "p", 10, size=4,
                     progress=lambda done, total: seen.append((done, total)))
    assert out == [((0, 0, 4), "p"), ((1, 4, 8), "p"), ((2, 8, 10), "p")]
    assert seen == [(4, 10), (8, 10), (10, 10)]
    assert map_points(LocalExecutor(), lambda payload, c: c, None, 0) == []


def test_missing_ray_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(InputError, match=r"pip install 'pacverify\[ray\]'"):
        get_executor("ray")


def test_one_chunk_is_the_unchunked_run(net, points):
    """With N <= the chunk size the chunked code path is the former single-batch run (chunk 0 keeps the seed)."""
    one = api.verify_points(net, points, 0.05, "inf")
    assert one.stats["chunks"] == 1
    _same(one, api.verify_points(net, points, 0.05, "inf", chunk_points=len(points)))


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_verify_points_ray_equals_local(ray_instance, net, points, norm):
    local = api.verify_points(net, points, 0.05, norm, chunk_points=CHUNK)
    remote = api.verify_points(net, points, 0.05, norm, chunk_points=CHUNK, executor="ray")
    assert local.count(api.PointVerdict.VERIFIED) and local.count(api.PointVerdict.FALSIFIED)  # both kinds occur
    _same(local, remote)
    assert remote.stats["executor"] == "ray" and remote.stats["cluster_cpus"] == 2.0
    assert remote.stats["cluster_nodes"] == 1 and remote.stats["chunks"] == 5
    assert local.stats["executor"] == "local"


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_certified_radius_ray_equals_local(ray_instance, net, points, norm):
    local = api.certified_radius(net, points, norm, chunk_points=CHUNK)
    remote = api.certified_radius(net, points, norm, chunk_points=CHUNK, executor="ray")
    assert (local.radius > 0).any() and np.isfinite(local.radius_upper).any()
    _same(local, remote)


def test_killed_worker_is_retried_with_the_same_result(ray_instance, net, points, tmp_path, monkeypatch):
    """Chunk 1's first attempt kills its own worker process; Ray runs the task again and the result is unchanged."""
    marker = tmp_path / "killed-once"
    original = api._verify_chunk

    def dies_once(job, chunk):
        if chunk[0] == 1 and not Path(marker).exists():
            Path(marker).write_text(str(os.getpid()))
            os._exit(1)
        return original(job, chunk)

    local = api.verify_points(net, points, 0.05, "inf", chunk_points=CHUNK)
    monkeypatch.setattr(api, "_verify_chunk", dies_once)
    remote = api.verify_points(net, points, 0.05, "inf", chunk_points=CHUNK, executor="ray")
    assert marker.exists()  # the worker did die once
    _same(local, remote)


def test_wrong_address_fails_within_seconds(ray_instance, net, points):
    start = time.perf_counter()
    with pytest.raises(InputError, match="cannot reach a Ray cluster at 127.0.0.1:1"):
        api.verify_points(net, points, 0.05, "inf", executor="ray", ray_address="127.0.0.1:1")
    with pytest.raises(InputError, match="HOST:PORT"):
        get_executor("ray", "no-port-here")
    assert time.perf_counter() - start < 15


def test_cli_wrong_address_exits_2_within_seconds(cli, net, tmp_path):
    model, points = tmp_path / "net.onnx", tmp_path / "points.npy"
    network_to_onnx(net, model)
    np.save(points, np.random.default_rng(2).random((10, 8)))
    start = time.perf_counter()
    proc = cli("verify", model, "--points", points, "--radius", "0.05", "--norm", "inf", "--executor", "ray",
               "--ray-address", "127.0.0.1:1", timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach a Ray cluster" in lines[0] and "Traceback" not in proc.stderr
    assert time.perf_counter() - start < 30  # interpreter, torch and ray imports included


def _main(argv) -> int:
    from pacverify.cli import main

    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_cli_ray_executor_matches_local(ray_instance, net, tmp_path, capsys):
    """The command in-process (it uses the module's Ray instance): same verdicts and radii as the local executor;
    --ray-address without --executor ray is a one-line error."""
    import json

    model, points = tmp_path / "net.onnx", tmp_path / "points.npy"
    network_to_onnx(net, model)
    np.save(points, np.random.default_rng(3).random((40, 8)))
    out = {}
    for executor in ("local", "ray"):
        code = _main(["verify", str(model), "--points", str(points), "--radius", "max", "--norm", "2",
                      "--executor", executor, "--json", str(tmp_path / f"{executor}.json")])
        assert code == 0, capsys.readouterr().err
        out[executor] = json.loads((tmp_path / f"{executor}.json").read_text())
    assert out["local"]["points"] == out["ray"]["points"]
    assert out["ray"]["summary"]["executor"] == "ray" and out["local"]["summary"]["executor"] == "local"
    assert "executor ray: 1 chunks on 1 node(s), 2 CPUs" in capsys.readouterr().out
    code = _main(["verify", str(model), "--points", str(points), "--radius", "0.05", "--norm", "inf",
                  "--ray-address", "auto"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "only applies with --executor ray" in err[0]


def test_certify_ray_equals_local_and_checks(ray_instance, tmp_path, monkeypatch):
    """certify with executor 'ray' (the student's verification and radii as Ray tasks, in other processes) writes
    the same certificate as the local executor (the second run reuses the cached student), and check confirms it."""
    from helpers_certify import TINY, onnx_teacher, robust_teacher

    from pacverify.pipeline.check import check_certificate
    from pacverify.pipeline.run import certify

    teacher = onnx_teacher(robust_teacher(), tmp_path / "teacher.onnx")
    local = certify(teacher, out=tmp_path / "run", delta=0.05, seed=0, **TINY)
    pids = tmp_path / "pids"
    pids.mkdir()
    from pacverify.pipeline import stages, teacher_check

    chunked = ((api, "_verify_chunk"), (api, "_radius_chunk"), (teacher_check, "_attack_batch"),
               (stages, "_logits_chunk"), (stages, "_margins_chunk"))
    _record_pids(monkeypatch, pids, chunked)
    remote = certify(teacher, out=tmp_path / "run", delta=0.05, seed=0, executor="ray", **TINY)
    monkeypatch.undo()
    # labelling (sample and coverage draws), verification, radii, ρ and the teacher attack ran as Ray tasks
    assert _ran_elsewhere(pids) == {name for _, name in chunked}

    def stable(body):
        return {k: v for k, v in body.items() if k not in ("timings", "integrity", "environment")}

    assert stable(remote.body) == stable(local.body)
    env, here = remote.record.environment, local.record.environment
    assert (env.executor, here.executor) == ("ray", "local") and env.cluster_nodes == 1 and env.cluster_cpus == 2
    for name, array in local.arrays.items():
        np.testing.assert_array_equal(remote.arrays[name], array, err_msg=name)
    assert check_certificate(tmp_path / "run", teacher=teacher).confirmed
    assert check_certificate(tmp_path / "run", teacher=teacher, executor="ray").confirmed
    with pytest.raises(InputError, match="only applies with --executor ray"):
        certify(teacher, out=tmp_path / "bad", delta=0.05, seed=0, ray_address="auto", **TINY)
    with pytest.raises(InputError, match="cannot reach a Ray cluster"):
        certify(teacher, out=tmp_path / "bad", delta=0.05, seed=0, executor="ray", ray_address="127.0.0.1:1", **TINY)
    assert not (tmp_path / "bad").exists()  # refused before anything was written


def _record_pids(monkeypatch, folder: Path, functions) -> None:
    """Wrap each (module, name) chunk function so that every call leaves ``folder/name-pid``."""
    for module, name in functions:
        original = getattr(module, name)

        def recorded(job, chunk, original=original, name=name):
            (folder / f"{name}-{os.getpid()}").touch()
            return original(job, chunk)
        monkeypatch.setattr(module, name, recorded)


def _ran_elsewhere(folder: Path) -> set[str]:
    """The chunk functions that ran in a process other than this one (a Ray worker)."""
    return {p.name.rsplit("-", 1)[0] for p in folder.iterdir() if int(p.name.rsplit("-", 1)[1]) != os.getpid()}


def test_mass_mode_ray_equals_local(ray_instance, tmp_path, monkeypatch):
    """Mass mode with the teacher oracle: the labelling, the teacher's lower radii, the attack's upper radii and the
    held-out labelling and attack as Ray tasks give the certificate of the local executor."""
    from helpers_certify import onnx_teacher, robust_teacher

    from pacverify.pipeline import mass, stages
    from pacverify.pipeline.run import certify

    teacher = onnx_teacher(robust_teacher(), tmp_path / "teacher.onnx")
    settings = dict(guarantee="mass", oracle="teacher", delta=0.05, eps=0.2, eta=0.1, synthetic="gaussians",
                    holdout=200, seed=0)
    local = certify(teacher, out=tmp_path / "local", **settings)
    pids = tmp_path / "pids"
    pids.mkdir()
    chunked = ((stages, "_logits_chunk"), (mass, "_lower_chunk"), (mass, "_upper_chunk"), (mass, "_holdout_chunk"))
    _record_pids(monkeypatch, pids, chunked)
    remote = certify(teacher, out=tmp_path / "remote", executor="ray", **settings)
    monkeypatch.undo()
    assert _ran_elsewhere(pids) == {name for _, name in chunked}
    assert remote.body["holdout"]["attacked"] > 0  # the held-out attack did run

    def stable(body):
        return {k: v for k, v in body.items() if k not in ("timings", "integrity", "environment")}

    assert stable(remote.body) == stable(local.body) and remote.record.environment.executor == "ray"
    for name, array in local.arrays.items():
        np.testing.assert_array_equal(remote.arrays[name], array, err_msg=name)


def _teacher_files(tmp_path):
    """One small teacher saved as TorchScript and as a torch.export program (formats with no pickle of their own)."""
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)).eval()
    torch.jit.save(torch.jit.script(module), str(tmp_path / "teacher.pt"))
    dims = ({0: torch.export.Dim("batch", min=1, max=4096)},)
    torch.export.save(torch.export.export(module, (torch.zeros(4, 2),), dynamic_shapes=dims),
                      str(tmp_path / "teacher.pt2"))
    return tmp_path / "teacher.pt", tmp_path / "teacher.pt2"


@pytest.mark.parametrize("kind", ["torchscript", "export"])
def test_torchscript_and_export_teachers_travel_to_workers(ray_instance, tmp_path, kind):
    """A TorchScript or torch.export teacher (which Ray's pickle cannot send as such) is sent as its archive: the
    teacher attack on Ray equals the local one, found the same counterexamples, and ran in the workers."""
    import pickle

    from pacverify.executor import RayExecutor, dumps_payload
    from pacverify.models import load_teacher
    from pacverify.pipeline.teacher_check import TeacherModel, attack_teacher

    path = _teacher_files(tmp_path)[0 if kind == "torchscript" else 1]
    teacher = TeacherModel(load_teacher(path, trust_pickle=True), (2,))
    x = np.random.default_rng(0).normal(size=(40, 2))
    copy = pickle.loads(dumps_payload(teacher))
    import torch

    np.testing.assert_array_equal(copy(torch.as_tensor(x)).numpy(), teacher(torch.as_tensor(x)).numpy())
    labels = teacher(torch.as_tensor(x)).argmax(1).numpy()
    kwargs = dict(n_classes=3, steps=10, restarts=2, random_samples=50, batch_size=16, seed=3)
    local = attack_teacher(teacher, x, labels, 0.5, "2", **kwargs)
    with RayExecutor() as runner:
        remote = attack_teacher(teacher, x, labels, 0.5, "2", executor=runner, **kwargs)
    assert local.found.any()
    np.testing.assert_array_equal(local.found, remote.found)
    np.testing.assert_array_equal(local.counterexamples, remote.counterexamples)


def test_ray_payload_and_task_errors_are_one_line_input_errors(ray_instance):
    """A payload that cannot be pickled, a GPU stage on a cluster without GPUs and bad input a task finds are
    InputErrors (exit 2 with one sentence), not Ray tracebacks."""
    import threading

    from pacverify.executor import RayExecutor, dumps_payload

    def _times(payload, chunk):  # defined here: Ray pickles it by value (the workers cannot import this test file)
        return payload * chunk

    def _refuses_two(payload, chunk):
        if chunk == 2:
            raise InputError("chunk 2 is bad")
        return chunk

    with pytest.raises(InputError, match="cannot be sent to Ray workers"):
        dumps_payload({"lock": threading.Lock()})
    with RayExecutor() as runner:
        seen: list[tuple[int, int]] = []
        assert runner.map_chunks(_times, 3, [1, 2, 4], on_done=lambda done, total: seen.append((done, total))) \
            == [3, 6, 12]
        assert seen == [(1, 3), (2, 3), (3, 3)]  # one progress tick per finished task, across the workers
        with pytest.raises(InputError, match="the Ray cluster has no GPUs"):
            runner.map_chunks(_times, 3, [1], gpu=True)
        with pytest.raises(InputError, match="^chunk 2 is bad$"):
            runner.map_chunks(_refuses_two, None, [1, 2])
    with pytest.raises(InputError, match="gpus_per_task"):
        RayExecutor(gpus_per_task=1.5)


def test_chunked_teacher_passes_equal_one_pass():
    """The teacher's logits and the margins over fixed chunks (3 chunks of 2048 here) are bit for bit those of one
    call over all points (a chunk is a whole number of the batches inside), as docs/scale.md says."""
    from types import SimpleNamespace

    import torch

    from pacverify.distill.margins import margin_alignment
    from pacverify.models import teacher_logits
    from pacverify.pipeline.stages import margins_over, teacher_logits_over

    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    student = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
    points = np.random.default_rng(0).normal(size=(5000, 6)).astype(np.float32)
    setup = SimpleNamespace(teacher=teacher, device=torch.device("cpu"), ticker=None, executor=None,
                            cfg=SimpleNamespace(norm="2"))
    whole = teacher_logits(teacher, points)
    assert torch.equal(teacher_logits_over(setup, points, "label"), whole)
    labels = whole.argmax(1).numpy()
    one, chunked = margin_alignment(teacher, student, points, labels, "2"), margins_over(setup, student, points,
                                                                                        labels, "rho")
    for name in ("g_teacher", "g_student", "grad_teacher", "grad_student", "cosine"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(one, name), err_msg=name)
