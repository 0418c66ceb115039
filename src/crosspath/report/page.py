"""One self-contained HTML page for a run directory, readable offline.

    inference run  (results.jsonl / summary.json)  -> summary, plots, influence, per-question paths
    training run   (metrics.jsonl)                 -> curves vs step, checkpoints, samples, config

Everything is inline: CSS, a few lines of JS, plots as base64 PNG. A Content-Security-Policy
(meta tag) allows only that inline style and script (by hash) and data: images, so the page
cannot load anything from the network, and text that slipped past escaping could not run.
Reading never modifies the run directory (a run may be writing to it right now).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import warnings
from pathlib import Path
from typing import Callable

from .. import jsonl
from .markup import esc, strip_machine_paths
from .rows import SkippedLineWarning, read_results

MAX_QUESTIONS = 50

CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--amber:#9a6700;--line:#d0d7de;--soft:#f6f8fa;--ink:#1f2328;--mute:#59636e}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Arial,sans-serif;color:var(--ink);
 margin:0 auto;padding:16px 24px 48px;max-width:1600px}
h1{font-size:22px;margin:4px 0}h2{font-size:18px;border-bottom:1px solid var(--line);padding-bottom:4px;margin-top:28px}
h3{font-size:15px;margin:0 0 6px}code,pre{font:12px/1.4 ui-monospace,"DejaVu Sans Mono",Menlo,Consolas,monospace}
pre{white-space:pre-wrap;word-break:break-word;background:var(--soft);border:1px solid var(--line);border-radius:4px;
 padding:6px 8px;margin:4px 0;max-height:420px;overflow:auto}
code{background:var(--soft);border-radius:3px;padding:0 3px}
.meta,.note,small,.tok,.qmeta{color:var(--mute)}.note{font-style:italic}
table{border-collapse:collapse}th,td{text-align:left;vertical-align:top}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}
.card{border:1px solid var(--line);border-radius:6px;padding:6px 12px;min-width:120px;background:var(--soft)}
.card .v{font-size:20px;font-weight:700}.card .k{font-size:12px;color:var(--mute)}
dl.cfg{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:2px 20px;margin:0}
dl.cfg div{display:flex;gap:8px;min-width:0}dl.cfg dt{font-weight:600}dl.cfg dd{margin:0;word-break:break-all}
dl.cfg code{background:none}
table.grid th,table.grid td{border:1px solid var(--line);padding:3px 8px}table.grid th{background:var(--soft)}
.figs{display:flex;flex-wrap:wrap;gap:16px}figure{margin:0}figure img{max-width:100%;border:1px solid var(--line)}
figcaption{color:var(--mute);font-size:12px}
.mark{font-weight:700}.mark.ok{color:var(--ok)}.mark.bad{color:var(--bad)}.mark.na{color:var(--mute)}
.none{color:var(--mute);font-style:italic}
.question{border:1px solid var(--line);border-radius:6px;padding:10px 12px;margin:14px 0}
.qtext pre{background:#fff;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;max-height:200px}
.scroll{overflow-x:auto}
table.paths{width:100%;table-layout:fixed;margin-top:8px}
table.paths th,table.paths td{border:1px solid var(--line);padding:6px}
table.paths thead th{background:var(--soft);min-width:220px}table.paths thead th:first-child,
table.paths tbody th{width:84px;background:var(--soft);font-weight:600}
td.cell{min-width:220px}td.empty{color:var(--mute);background:repeating-linear-gradient(45deg,#fff,#fff 6px,var(--soft) 6px,var(--soft) 12px)}
td.final{background:#fbfcfd}
td.changed.up{background:#dafbe1}td.changed.down{background:#ffebe9}td.changed.side{background:#fff8c5}
.change{font-weight:600;margin:2px 0}.change.up{color:var(--ok)}.change.down{color:var(--bad)}.change.side{color:var(--amber)}
.summary{background:#ddf4ff;border-left:3px solid #54aeff;padding:3px 6px;margin:4px 0;font-size:13px;
 white-space:pre-wrap;word-break:break-word;max-height:160px;overflow:auto}
.summary .label{display:block;font-size:11px;color:var(--mute)}
.peers{font-size:12px;margin-top:3px}.peer{font-weight:700;color:#0969da}.sent .peer{color:#8250df}
details.text>summary{cursor:pointer;color:#0969da;font-size:12px}
ol.qindex{columns:4 220px;font-size:13px;padding-left:28px}
.tools button{font:inherit;font-size:12px;padding:2px 8px;cursor:pointer}
.skipped{border-left:3px solid var(--amber);padding:2px 10px;margin:8px 0}.skipped ul{margin:2px 0;font-size:13px}
@media print{details{display:block}pre{max-height:none}}
"""

# Runs first: flags any later script error on <html>, where the browser test looks for it.
JS_HEAD = ("window.addEventListener('error',function(e){document.documentElement.setAttribute("
           "'data-js-error',String(e.message||'error'));});")

JS_BODY = """(function(){
var root=document.documentElement;
document.querySelectorAll('button[data-toggle]').forEach(function(b){
 b.addEventListener('click',function(){var open=b.getAttribute('data-toggle')==='open';
  document.querySelectorAll('#questions details').forEach(function(d){d.open=open;});});});
function done(){var ok=0,bad=0;for(var i=0;i<document.images.length;i++){var im=document.images[i];
 if(im.complete&&im.naturalWidth>0){ok++;}else{bad++;}}
 root.setAttribute('data-images-ok',ok);root.setAttribute('data-images-broken',bad);root.setAttribute('data-js','ok');}
if(document.readyState==='complete'){done();}else{window.addEventListener('load',done);}
})();"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def page(title: str, subtitle: str, body: str) -> str:
    csp = (f"default-src 'none'; img-src data:; style-src {_sha256(CSS)}; "
           f"script-src {_sha256(JS_HEAD)} {_sha256(JS_BODY)}; base-uri 'none'; form-action 'none'")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style><script>{JS_HEAD}</script></head>"
            f'<body><header><h1>{esc(title)}</h1><p class="meta">{subtitle}</p></header>{body}'
            f"<script>{JS_BODY}</script></body></html>\n")


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSONL file; lines that do not parse (half-written) are skipped, the file is untouched."""
    return [row for row in jsonl.read_jsonl(path, skip_bad=True) if isinstance(row, dict)]


def _read_yaml(path: Path) -> tuple[dict | None, str | None]:
    if not path.exists():
        return None, None
    text = path.read_text(errors="replace")
    try:
        import yaml

        data = yaml.safe_load(text)
    except Exception:  # a config we cannot parse is still shown as text
        data = None
    return (data if isinstance(data, dict) else None), text


def kind(run_dir: Path) -> list[str]:
    """Which sections a directory supports: 'training' and/or 'inference'."""
    kinds = []
    if (run_dir / "metrics.jsonl").exists():
        kinds.append("training")
    if (run_dir / "results.jsonl").exists() or (run_dir / "summary.json").exists():
        kinds.append("inference")
    return kinds


def render(run_dir: str | Path, max_questions: int = MAX_QUESTIONS, title: str | None = None,
           warn: Callable[[str], None] | None = None) -> str:
    """The report of `run_dir` as an HTML string.

    A line of results.jsonl the report cannot use (not JSON, a field of the wrong type) is skipped:
    `warn` gets "<run_dir>/results.jsonl:LINE: field '...' should be ...; line skipped" (default:
    warnings.warn with SkippedLineWarning) and the page lists it. The page names the run directory
    by its name only: no absolute path of this machine goes into it (nor into the config shown).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    kinds = kind(run_dir)
    if not kinds:
        raise ValueError(f"{run_dir}: neither results.jsonl/summary.json (inference run) nor metrics.jsonl "
                         "(training run) found")
    config, config_text = _read_yaml(run_dir / "config.yaml")
    config = strip_machine_paths(config, run_dir)
    for root in {str(run_dir.resolve()), str(run_dir.absolute())}:
        config_text = config_text.replace(root, run_dir.resolve().name) if config_text else config_text
    parts, label = [], []
    if "training" in kinds:
        from .training import section

        metrics = read_jsonl(run_dir / "metrics.jsonl")
        parts.append(section(run_dir, metrics, config, config_text))
        algo = (config or {}).get("algo") or (config or {}).get("method") or "training"
        steps = [m["step"] for m in metrics if isinstance(m.get("step"), (int, float))]
        label.append(f"{algo} run, at step {max(steps) if steps else '?'}")
    if "inference" in kinds:
        from .inference import section

        rows, skipped = read_results(run_dir / "results.jsonl")
        for line, problem in skipped:
            (warn or _warn)(f"{run_dir / 'results.jsonl'}:{line}: {problem}; line skipped")
        summary = strip_machine_paths(_inference_summary(run_dir, rows, config), run_dir)
        parts.append(section(rows, summary, max_questions, [(f"results.jsonl:{n}", p) for n, p in skipped]))
        label.append(f"{summary.get('method', 'inference')} on {summary.get('task', '?')}, {len(rows)} question{'' if len(rows) == 1 else 's'}")
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    sub = f"{esc(run_dir.resolve().name)} · {esc('; '.join(label))} · report made {esc(now)}"
    return page(title or f"crosspath report: {run_dir.resolve().name}", sub, "".join(parts))


def _warn(message: str) -> None:
    warnings.warn(message, SkippedLineWarning, stacklevel=3)


def _inference_summary(run_dir: Path, rows: list[dict], config: dict | None) -> dict:
    """summary.json, or the same numbers from the rows when the run has not written it yet."""
    path = run_dir / "summary.json"
    summary: dict = {}
    if path.exists():
        try:
            summary = json.loads(path.read_text())
        except ValueError:
            summary = {}
        summary = summary if isinstance(summary, dict) else {}
    if not summary or summary.get("questions") != len(rows):
        from ..tasks.metrics import summarize

        fresh = summarize(rows) if rows and all("pass_at_1" in r and "cons_correct" in r for r in rows) else {}
        wall = sum(float(r.get("wall_seconds") or 0) for r in rows)
        if fresh:
            fresh.update(wall_seconds=round(wall, 2), tokens_per_second=round(fresh["tokens"] / max(wall, 1e-9), 1))
        summary = {**summary, **fresh}
    cfg = summary.get("config") if isinstance(summary.get("config"), dict) else config or {}
    for k in ("method", "task", "model", "backend", "paths"):
        if k not in summary and k in cfg:
            summary[k] = cfg[k]
    summary["config"] = cfg
    return summary


def build_report(run_dir: str | Path, out: str | Path | None = None, max_questions: int = MAX_QUESTIONS,
                 title: str | None = None, warn: Callable[[str], None] | None = None) -> Path:
    """Write the report of `run_dir` (default: RUN_DIR/report.html) and return its path."""
    out = Path(out) if out else Path(run_dir) / "report.html"
    text = render(run_dir, max_questions=max_questions, title=title, warn=warn)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out
