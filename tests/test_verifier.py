"""The worker pool that runs checks of model output: time limit, sandbox, reuse, lazy imports.

The handler module is written into a temporary folder put on sys.path, so the workers (which get
the caller's sys.path) import it: `check(req)` runs in the sandboxed child what the request names.
"""

import os
import sys
import textwrap
import threading

import pytest

from crosspath.tasks.verifier import TimedOut, WorkerPool

HANDLER = textwrap.dedent('''
    import os, time

    def handle(req):
        kind, arg = req["kind"], req.get("arg")
        if kind == "value":
            return lambda: arg
        if kind == "sleep":
            return lambda: time.sleep(arg) or "woke"
        if kind == "spin":
            return lambda: sum(range(10 ** 12))
        if kind == "eval":  # what an unsafe scorer does with an answer
            return lambda: eval(arg)
        if kind == "pid":
            return lambda: os.getppid()  # the worker that forked this child
        raise ValueError(kind)
''')


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    folder = tmp_path_factory.mktemp("handler")
    (folder / "verifier_probe.py").write_text(HANDLER)
    sys.path.insert(0, str(folder))
    p = WorkerPool("verifier_probe:handle")
    yield p
    p.close()
    sys.path.remove(str(folder))


def test_results_come_back_and_failures_are_none(pool):
    assert pool.call({"kind": "value", "arg": [1, "a"]}, timeout=10) == [1, "a"]
    assert pool.call({"kind": "eval", "arg": "1/0"}, timeout=10) is None  # the check raised
    assert pool.call({"kind": "nonsense"}, timeout=10) is None  # the handler refused the request


def test_a_slow_check_is_killed_and_the_worker_stays(pool):
    worker = pool.call({"kind": "pid"}, timeout=10)
    for kind, arg in (("sleep", 60), ("spin", None)):
        with pytest.raises(TimedOut):
            pool.call({"kind": kind, "arg": arg}, timeout=1.0)
    assert pool.call({"kind": "sleep", "arg": 0.01}, timeout=10) == "woke"
    assert pool.call({"kind": "pid"}, timeout=10) == worker  # no restart: the child died, not the worker


def test_the_sandbox_runs_no_process_and_writes_no_file(pool, tmp_path):
    target = tmp_path / "FILE"
    payloads = [f"__import__('os').system('touch {target}')",
                f"__import__('subprocess').run(['touch', '{target}'])",
                f"open('{target}', 'w').write('x')",
                f"__import__('pathlib').Path('{target}').touch()",
                "open('relative-file', 'w').write('x')"]
    results = [pool.call({"kind": "eval", "arg": payload}, timeout=10) for payload in payloads]
    assert not target.exists()
    assert results[0] not in (None, 0)  # os.system ran in the child and failed to start a shell
    assert os.listdir(pool.workdir) == []  # the check's working directory stays empty


def test_a_lazy_import_is_loaded_by_the_worker_and_the_check_rerun(pool):
    # json is loaded in the worker, json.tool is not: the sandbox cannot read its file, the
    # worker imports it and reruns the check
    assert pool.call({"kind": "eval", "arg": "__import__('json.tool').tool.__name__"}, timeout=10) == "json.tool"
    # a module outside what the worker has loaded is not imported for the check
    assert pool.call({"kind": "eval", "arg": "__import__('colorsys').__name__"}, timeout=10) is None


def test_calls_from_many_threads(pool):
    out = {}

    def work(i):
        out[i] = pool.call({"kind": "value", "arg": i}, timeout=30)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert out == {i: i for i in range(8)}
