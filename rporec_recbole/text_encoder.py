"""Text encoders for the RecHead: static bag-of-token-embeddings, initialised from the LLM's own embeddings.

The paper uses static-embedding sentence encoders (``tomaarsen/static-retrieval-mrl-en-v1``) whose token tables
are trained. Offline, the default here pools the LLM's input embeddings. Training a vocabulary-by-dimension table
per encoder would update ~28M parameters per step on CPU, so the token table stays frozen: texts are pooled once
(when they become known) and each encoder learns a linear map on top, identity at the start. That keeps a
training step independent of text length, and every token, including ones first seen at test time, is defined.
"""
import torch
from torch import nn


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
