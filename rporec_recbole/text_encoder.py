"""Text encoders for the RecHead: static bag-of-token-embeddings, initialised from the LLM's own embeddings.

The paper uses static-embedding sentence encoders (``tomaarsen/static-retrieval-mrl-en-v1``) whose token tables
are trained. Offline, the default here pools the LLM's input embeddings. Training a vocabulary-by-dimension table
per encoder would update ~28M parameters per step on CPU, so the token table stays frozen: texts are pooled once
(when they become known) and each encoder learns a linear map on top, identity at the start. That keeps a
training step independent of text length, and every token, including ones first seen at test time, is defined.
``ItemTokenBag`` is the exception that stays cheap: learned vectors for just the tokens of the item texts, narrow (the
collaborative branch's width), for the collaborative items.
"""
import torch
from torch import nn


def tokenize_texts(tokenizer, texts, max_tokens=None):
    """Token ids of each text, without special tokens, cut to ``max_tokens``; a blank text has none."""
    return [tokenizer(t, add_special_tokens=False).input_ids[:max_tokens] if t else [] for t in texts]


def split_words(texts, max_words=None):
    """Whitespace-separated words of each text, cut to ``max_words``: how RecBole splits a ``token_seq`` field such
    as Beauty's titles, i.e. the units whose embeddings SASRecF learns."""
    return [(t or "").split()[:max_words] for t in texts]


def token_sums(token_table, token_lists, chunk=512):
    """Sum of token embeddings and token count of each text: ``(N, d)`` and ``(N,)`` float tensors."""
    sums = torch.zeros(len(token_lists), token_table.shape[1])
    counts = torch.tensor([float(len(tokens)) for tokens in token_lists])
    for start in range(0, len(token_lists), chunk):
        for row, tokens in enumerate(token_lists[start:start + chunk], start):
            if tokens:
                sums[row] = token_table[torch.as_tensor(tokens)].sum(0)
    return sums, counts


def mean_of_sums(sums, counts):
    """Mean embedding from sums and counts; an empty text gives the zero vector."""
    return sums / counts.clamp_min(1).unsqueeze(-1)


class StaticTextEncoder(nn.Module):
    """A learned linear map over a pooled (mean) token embedding, identity at initialisation."""

    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        nn.init.eye_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, pooled):
        return self.proj(pooled)


class ItemTokenBag(nn.Module):
    """Learned token vectors pooled per item: the mean over an item's text tokens (LLM token ids or words), the way
    SASRecF learns word embeddings for a text feature. Only tokens that occur in some item's text get a row
    (thousands: 8,171 LLM tokens or ~16,500 words on Beauty, not the LLM's whole vocabulary), and rows start at zero,
    so a model with the bag starts as the model without it."""

    def __init__(self, token_lists, dim):
        super().__init__()
        vocabulary = {token: row for row, token in enumerate(sorted({t for ts in token_lists for t in ts}), 1)}
        width = max([len(tokens) for tokens in token_lists] + [1])
        ids = torch.zeros(len(token_lists), width, dtype=torch.long)  # 0: padding, left out of the mean
        for item, tokens in enumerate(token_lists):
            ids[item, :len(tokens)] = torch.tensor([vocabulary[t] for t in tokens], dtype=torch.long)
        self.register_buffer("token_ids", ids, persistent=False)  # rebuilt from the item texts at load time
        self.bag = nn.EmbeddingBag(len(vocabulary) + 1, dim, mode="mean", padding_idx=0)
        nn.init.zeros_(self.bag.weight)

    def forward(self, items=None):
        """The pooled vector of each item in ``items`` (any shape), or of every item; a textless item gives zeros."""
        ids = self.token_ids if items is None else self.token_ids[items.reshape(-1)]
        pooled = self.bag(ids)
        return pooled if items is None else pooled.reshape(*items.shape, -1)
