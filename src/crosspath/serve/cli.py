"""`crosspath serve`: the OpenAI-compatible server, from the command line."""

from __future__ import annotations

import argparse
import os
import sys

from ..config import add_arguments, from_args
from .config import ServeConfig, check_auth

DESCRIPTION = """\
An OpenAI-compatible HTTP server (/v1/models, /v1/chat/completions, /v1/completions, /health)
whose answers come from several reasoning paths: LeaP (paths exchange summaries every round) or
independent sampling, then a majority vote over the paths' answers. The reply is the consensus
path's text; `usage` counts the tokens of every path; an extra field `crosspath` holds each path's
answer, its summaries and peers per round, and the votes. stream=true sends a chunk per round.
A request may override options in its body: {"crosspath": {"paths": 4, "rounds": 2, ...}}
(keys: method, paths or n_paths, rounds, round_tokens, top_k, router, summary_tokens,
answer_tokens, wrap), within the limits below. See docs/serve.md."""

EPILOG = """\
examples:
  crosspath serve --model smollm2-135m --port 8000
  crosspath serve --model tiny-random --paths 2 --rounds 2 --round-tokens 32   # smoke test
  crosspath serve --backend openai --base-url http://gpu1:8000/v1 http://gpu2:8000/v1 \\
      --model Qwen/Qwen3-1.7B --workers 4 --api-key "$KEY"

  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \\
      -d '{"messages": [{"role": "user", "content": "What is 17 + 25?"}], "crosspath": {"paths": 4}}'
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("serve", help="OpenAI-compatible server answering with LeaP (or independent sampling)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file with any of the options below (flags win)")
    add_arguments(p, ServeConfig)
    p.set_defaults(func=_cmd_serve)
    return p


def _cmd_serve(args) -> int:
    from .app import serve

    cfg = from_args(ServeConfig, args, args.config)
    env = os.environ.get("CROSSPATH_API_KEY")
    if cfg.api_key is None and env is not None:
        if not env.strip():
            raise ValueError("$CROSSPATH_API_KEY is set but empty: give a key, or unset it to run without "
                             "authentication")
        cfg.api_key = env
    warning = check_auth(cfg)  # an empty --api-key is an error (exit 2), before the model loads
    if warning:
        print(f"crosspath serve: warning: {warning}", file=sys.stderr, flush=True)
    serve(cfg)
    return 0
