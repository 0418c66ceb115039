"""benchmarks/readme_commands.py: README.md's commands are found as written, run, timed and recorded."""

import doctest
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import readme_commands as rc  # noqa: E402


def test_docstring_examples():
    assert doctest.testmod(rc).failed == 0


def test_the_readme_commands_are_found_and_the_unrunnable_ones_named():
    commands = rc.readme_commands((ROOT / "README.md").read_text())
    assert commands[0] == "make demo" and "make test" not in commands
    assert any(c.startswith("crosspath train --algo m3po") and c.endswith("--resume") for c in commands)
    assert all("#" not in c for c in commands)  # the comments after them are dropped
    serve = [c for c in commands if c.startswith("crosspath serve")]
    assert serve and rc.why_not(serve[0]) == "a server (runs until stopped)"
    assert rc.why_not("crosspath report RUN_DIR") == "has a placeholder"
    assert rc.why_not("crosspath run --task-options '{\"min_terms\": 2}' --limit 2") is None


def test_commands_run_in_order_are_recorded_and_a_rerun_skips_them(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("```bash\ncrosspath run --help   # one\ncrosspath serve --port 1\n"
                      "crosspath train --out runs/t \\\n    --steps 0\n```\n")
    results, work = tmp_path / "r.jsonl", tmp_path / "work"
    argv = ["--readme", str(readme), "--results", str(results), "--workdir", str(work), "--threads", "1"]
    assert rc.main(argv) == 1  # --steps 0 is refused by crosspath train: the run says which command failed
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    assert [r["command"] for r in rows] == ["crosspath run --help", "crosspath train --out runs/t --steps 0"]
    assert rows[0]["rc"] == 0 and rows[0]["cpu_s"] > 0 and rows[1]["rc"] == 2
    assert "`crosspath serve --port 1` | | | | not run: a server" in capsys.readouterr().out
    assert rc.main(argv) == 1 and len(results.read_text().splitlines()) == 2  # recorded: not run again
    assert "| 0 | yes |" in rc.table(rows, 300) and "| 2 | failed |" in rc.table(rows, 300)
