"""prepare-dataset --engine ray: the data steps' work units as Ray tasks give the local engine's
bytes, on a local Ray started for the run and on a cluster simulated on this machine
(ray.cluster_utils.Cluster: a head and worker nodes of 1 CPU each, one per module), whatever
order the tasks finish in, through retried failures and a node removed mid-run; a user error
is never retried; without Ray the engine is a one-line error.

The tasks' behaviour is changed by wrapping mypt.ray_engine.run_task in the driver: the
wrappers are closures, which Ray pickles by value to the workers, where they call the
worker's own (unwrapped) run_task."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path, PurePath

import pytest
from conftest import tree_bytes
from test_prepare import make_corpus, prepare

import mypt.ray_engine
import mypt.text
from mypt.ray_engine import EngineError, has_relative_path, run_task

BLOCK = 2048  # bytes a block: dozens of tasks a step, so nodes really share the work
FLAGS = ("--tokens_per_shard", "3000", "--dedup_min_chars", "8")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_corpus(tmp_path_factory.mktemp("ray") / "corpus")


@pytest.fixture(scope="module")
def local_bytes(corpus, tmp_path_factory):
    """{tokenization: the local engine's dataset, as tree_bytes}, made when first asked."""
    made: dict[str, dict[str, bytes]] = {}

    def get(tokenization: str) -> dict[str, bytes]:
        if tokenization not in made:
            out = tmp_path_factory.mktemp("local") / "ds"
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(mypt.text, "BLOCK_BYTES", BLOCK)
                prepare("--input_files", str(corpus), "--out_dir", str(out), "--workers", "1",
                        "--tokenization", tokenization, *FLAGS)
            made[tokenization] = tree_bytes(out)
        return made[tokenization]

    return get


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    # The tasks' wrappers below call this module's helpers: sent by value, as the workers
    # cannot import a test module.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield c
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    c.shutdown()


def prepare_ray(corpus: Path, out: Path, tokenization: str, *extra: str, expect_ok: bool = True):
    import ray

    result = prepare("--input_files", str(corpus), "--out_dir", str(out), "--engine", "ray",
                     "--tokenization", tokenization, *FLAGS, *extra, expect_ok=expect_ok)
    assert not ray.is_initialized()  # the run's connection (or local Ray) is closed
    return result


@pytest.mark.slow
def test_a_local_ray_for_the_run_gives_the_local_bytes(corpus, tmp_path):
    pytest.importorskip("ray")
    prepare_ray(corpus, tmp_path / "ray", "gpt2", "--workers", "2")
    prepare("--input_files", str(corpus), "--out_dir", str(tmp_path / "local"), "--workers", "1", *FLAGS)
    assert tree_bytes(tmp_path / "ray") == tree_bytes(tmp_path / "local")


def _paths(obj, depth: int = 3) -> list[PurePath]:
    if isinstance(obj, PurePath):
        return [obj]
    if depth == 0 or isinstance(obj, (str, bytes, type)):
        return []
    items = obj if isinstance(obj, (tuple, list)) else getattr(obj, "__dict__", {}).values()
    return [p for item in items for p in _paths(item, depth - 1)]


@pytest.mark.slow
def test_shuffled_completion_and_transient_errors_give_the_local_bytes(cluster, corpus, tmp_path, monkeypatch):
    """Tasks finish after a delay drawn from their content, and a third of them fail once
    with an OSError before Ray retries them: the bytes are the local engine's. Paths are
    relative: the nodes' workers started in this process' directory, and read them against
    the driver's (tmp_path); prepare-dataset's work directory is absolute."""
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", BLOCK)
    (tmp_path / "corpus").symlink_to(corpus, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    log, failed = tmp_path / "log", tmp_path / "failed"
    failed.mkdir()

    def shuffled(fn, task, cwd):
        import errno
        import zlib

        from mypt.ray_engine import run_task  # the worker's own

        paths = [str(p) for p in _paths(task)]
        key = zlib.crc32(repr(paths + [x for x in task if isinstance(x, int)]).encode())
        start = time.monotonic_ns()
        # A quarter of the tasks long enough that the other node finishes one started later even
        # on a loaded machine (0 to 80 ms each by key left them in order in one CI run).
        time.sleep(0.4 if key % 4 == 0 else 0.0)
        if key % 3 == 0 and not (failed / str(key)).exists():
            (failed / str(key)).touch()
            raise OSError(errno.EIO, "a transient failure", str(key))
        result = run_task(fn, task, cwd)
        with open(log, "a") as f:
            f.write(json.dumps([start, time.monotonic_ns(), cwd, paths]) + "\n")
        return result

    monkeypatch.setattr(mypt.ray_engine, "run_task", shuffled)
    prepare_ray(Path("corpus"), Path("ds"), "gpt2", "--ray_address", cluster.address)
    # The sources' names in the metadata are relative to the working directory: the local
    # engine's from the same place.
    prepare("--input_files", "corpus", "--out_dir", "local", "--workers", "1", "--tokenization", "gpt2", *FLAGS)
    assert tree_bytes(tmp_path / "ds") == tree_bytes(tmp_path / "local")
    assert len(list(failed.iterdir())) > 3
    done = [json.loads(line) for line in log.read_text().splitlines()]
    spans = sorted((start, end) for start, end, _, _ in done)
    assert any(a[1] > b[1] for a, b in zip(spans, spans[1:])), "a task that started later finished first"
    assert {cwd for _, _, cwd, _ in done} == {str(tmp_path)}
    written = {p for _, _, _, paths in done for p in paths if ".ds.work" in p}
    assert written and all(Path(p).is_absolute() for p in written)


@pytest.mark.slow
def test_a_node_removed_mid_run_gives_the_local_bytes(cluster, corpus, local_bytes, tmp_path, monkeypatch):
    """Tasks on the doomed node wait until it is removed: they die with it, and Ray runs them
    again on the other nodes."""
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", BLOCK)
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    doomed, started = node.node_id, tmp_path / "started"

    def on_doomed_node(fn, task, cwd):
        import ray

        from mypt.ray_engine import run_task

        if ray.get_runtime_context().get_node_id() == doomed:
            started.touch()
            time.sleep(120)  # killed with the node long before
        return run_task(fn, task, cwd)

    def remove_when_started():
        deadline = time.monotonic() + 120
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        cluster.remove_node(node)

    monkeypatch.setattr(mypt.ray_engine, "run_task", on_doomed_node)
    remover = threading.Thread(target=remove_when_started)
    remover.start()
    try:
        prepare_ray(corpus, tmp_path / "ds", "char", "--ray_address", cluster.address)
    finally:
        remover.join()
    assert started.exists(), "a task ran on the doomed node"
    assert tree_bytes(tmp_path / "ds") == local_bytes("char")


@pytest.mark.slow
def test_a_user_error_in_a_task_is_one_line_and_never_retried(cluster, tmp_path, monkeypatch):
    (tmp_path / "docs.jsonl").write_text('{"text": "A first good document."}\nnot json\n')
    attempts = tmp_path / "attempts"

    def counted(fn, task, cwd):
        from mypt.ray_engine import run_task

        with open(attempts, "a") as f:
            f.write("attempt\n")
        return run_task(fn, task, cwd)

    monkeypatch.setattr(mypt.ray_engine, "run_task", counted)
    out = tmp_path / "ds"
    result = prepare_ray(tmp_path / "docs.jsonl", out, "char", "--strict", "--ray_address", cluster.address,
                         expect_ok=False)
    assert result.exit_code == 1, result.output
    assert "docs.jsonl:2" in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert attempts.read_text().count("attempt") == 1
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["attempts", "docs.jsonl"]


@pytest.mark.slow
def test_a_killed_driver_leaves_no_dataset_and_a_rerun_gives_the_local_bytes(cluster, corpus, local_bytes, tmp_path,
                                                                            monkeypatch):
    out = tmp_path / "ds"
    driver = subprocess.Popen([sys.executable, "-m", "mypt.cli", "prepare-dataset", "--input_files", str(corpus),
                               "--out_dir", str(out), "--engine", "ray", "--ray_address", cluster.address,
                               "--tokenization", "char", *FLAGS], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    hashed = tmp_path / ".ds.work" / "hashed"
    deadline = time.monotonic() + 120
    while driver.poll() is None and not any(hashed.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    driver.kill()  # while the clean step's tasks run
    assert driver.wait() == -signal.SIGKILL
    assert not (out / "dataset_metadata.json").exists()
    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", BLOCK)
    prepare_ray(corpus, out, "char", "--ray_address", cluster.address)
    assert tree_bytes(out) == local_bytes("char")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


@pytest.mark.slow
def test_a_tasks_arguments_carry_no_tokenizer_state(cluster, corpus, local_bytes, tmp_path, monkeypatch):
    """The tokenizer's state (MBs for an hf tokenizer.json) is put in the object store once for
    the tokenize step, and each worker gets it from there: no task's function or arguments
    hold it (Ray pickled it into every task), and the bytes are the local engine's."""
    from test_tokenizer_once import big_tokenizer_json

    monkeypatch.setattr(mypt.text, "BLOCK_BYTES", BLOCK)
    size = len(big_tokenizer_json(tmp_path / "tok.json", 20, 60_000).tokenizer_json)
    log = tmp_path / "sizes"

    def measured(fn, task, cwd):
        import ray

        from mypt.ray_engine import run_task

        with open(log, "a") as f:
            f.write(f"{len(ray.cloudpickle.dumps((fn, task)))}\n")
        return run_task(fn, task, cwd)

    monkeypatch.setattr(mypt.ray_engine, "run_task", measured)
    prepare_ray(corpus, tmp_path / "ds", f"hf:{tmp_path / 'tok.json'}", "--ray_address", cluster.address)
    sizes = [int(line) for line in log.read_text().split()]
    assert len(sizes) > 10 and max(sizes) < size / 100, (len(sizes), max(sizes), size)
    monkeypatch.undo()  # (local_bytes sets the block size itself)
    assert tree_bytes(tmp_path / "ds") == local_bytes(f"hf:{tmp_path / 'tok.json'}")


def test_an_address_where_no_cluster_answers_is_a_one_line_error(tmp_path):
    pytest.importorskip("ray")
    (tmp_path / "a.txt").write_text("Some text to prepare.\n")
    # Bound and never listening: a connection is refused, and no other test's process (the tests
    # run in parallel) can take the port meanwhile.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        result = prepare("--input_files", str(tmp_path / "a.txt"), "--out_dir", str(tmp_path / "ds"), "--engine",
                         "ray", "--ray_address", f"127.0.0.1:{port}", expect_ok=False)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        f"Error: --ray_address 127.0.0.1:{port}: no Ray cluster answers there (Connection refused); start one with "
        "`ray start --head` on its head node, or leave --ray_address out to start a local Ray for the run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_an_address_where_another_server_listens_is_a_one_line_error(tmp_path):
    """A web server's port (a typo, another service): ray.init retried for minutes."""
    import http.server
    import threading

    pytest.importorskip("ray")
    (tmp_path / "a.txt").write_text("Some text to prepare.\n")
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # (its log goes to stderr, which the test reads)
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet) as web:
        threading.Thread(target=web.serve_forever, daemon=True).start()
        address = f"127.0.0.1:{web.server_address[1]}"
        result = prepare("--input_files", str(tmp_path / "a.txt"), "--out_dir", str(tmp_path / "ds"), "--engine",
                         "ray", "--ray_address", address, expect_ok=False)
        web.shutdown()
    assert result.output.strip().splitlines() == [
        f"Error: --ray_address {address}: no Ray cluster answers there (a server listens there, but it does not "
        "speak gRPC as Ray's does); start one with `ray start --head` on its head node, or leave --ray_address out "
        "to start a local Ray for the run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


@pytest.mark.parametrize("family, host, shown", [(socket.AF_INET, "127.0.0.1", "127.0.0.1"),
                                                  (socket.AF_INET6, "::1", "[::1]")])
def test_an_address_where_a_server_says_nothing_is_told_apart(tmp_path, monkeypatch, family, host, shown):
    """A server that accepts and stays silent (a head that hangs, a port whose service waits
    for the client) is said to be silent, not to speak another protocol; an IPv6 address in
    brackets is probed like any other."""
    from mypt import ray_engine

    pytest.importorskip("ray")
    monkeypatch.setattr(ray_engine, "CONNECT_TIMEOUT_S", 0.5)
    (tmp_path / "a.txt").write_text("Some text to prepare.\n")
    try:
        silent = socket.socket(family)
        silent.bind((host, 0))
    except OSError:
        pytest.skip(f"no {host} here")
    with silent:
        silent.listen(1)  # accepted by the kernel, never answered
        address = f"{shown}:{silent.getsockname()[1]}"
        result = prepare("--input_files", str(tmp_path / "a.txt"), "--out_dir", str(tmp_path / "ds"), "--engine",
                         "ray", "--ray_address", address, expect_ok=False)
    assert result.output.strip().splitlines() == [
        f"Error: --ray_address {address}: no Ray cluster answers there (a server accepted the connection but sent "
        "nothing in 0.5 s, where Ray's answers at once); start one with `ray start --head` on its head node, or "
        "leave --ray_address out to start a local Ray for the run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_without_ray_the_engine_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    (tmp_path / "a.txt").write_text("Some text to prepare.\n")
    out = tmp_path / "ds"
    result = prepare("--input_files", str(tmp_path / "a.txt"), "--out_dir", str(out), "--engine", "ray",
                     expect_ok=False)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.output.strip().splitlines() == [
        "Error: --engine ray needs Ray, which is not installed: pip install 'mypt[ray]' (or pass --engine local)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_task_with_relative_paths_needs_the_drivers_directory_on_its_node(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.txt").write_text("text")
    task = (Path("a.txt"), 0, 4)
    assert has_relative_path(task) and not has_relative_path((tmp_path / "a.txt", 0, 4))
    reader = type("Reader", (), {})()
    reader.path = Path("a.txt")
    assert has_relative_path((reader, 0, 4)) and not has_relative_path(("a.txt", 0, 4))
    assert run_task(_read, task, str(tmp_path)) == "text"
    with pytest.raises(EngineError, match=f"has no directory {tmp_path / 'gone'}, .* storage every node sees"):
        run_task(_read, task, str(tmp_path / "gone"))


def _read(task) -> str:
    path, start, end = task
    return path.read_text()[start:end]
