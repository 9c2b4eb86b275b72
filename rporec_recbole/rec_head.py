"""RecHead: turns (prompt, reasoning, answer) embeddings into a user vector (the paper's design).

    e_x = MLP_x(enc_x(prompt)), e_y = MLP_y(enc_y(reasoning)), e_z = enc_z(answer)
    s   = (1 - f) * e_x + f * e_z                  f = 1 when the output parsed as think/answer
    a   = TransformerEncoder([e_x, e_y, s])[-1]
    u   = s + 0.1 * sigmoid(MLP([s; a])) * a       gated residual

With ``answer_fusion="add"`` (not in the paper) the answer is added to the prompt instead of replacing it:
``s = e_x + f * W e_z`` with ``W`` starting at zero, so a well-formed answer never removes the user's history from
``s``, and the head starts out ranking as if there were no answer and learns how much of it to use.
"""
import torch
from torch import nn


def mlp_blocks(dim, num_blocks=3):
    """LayerNorm-Linear-LeakyReLU blocks; the last block has no activation."""
    layers = []
    for block in range(num_blocks):
        layers += [nn.LayerNorm(dim), nn.Linear(dim, dim)]
        if block < num_blocks - 1:
            layers.append(nn.LeakyReLU())
    return nn.Sequential(*layers)


class RecHead(nn.Module):
    def __init__(self, dim, num_layers=4, num_heads=8, gate_scale=0.1, dropout=0.1, answer_fusion="replace"):
        super().__init__()
        self.answer_fusion = answer_fusion
        if answer_fusion == "add":
            self.answer_weight = nn.Linear(dim, dim)
            nn.init.zeros_(self.answer_weight.weight)
            nn.init.zeros_(self.answer_weight.bias)
        self.prompt_mlp = mlp_blocks(dim)
        self.reasoning_mlp = mlp_blocks(dim)
        layer = nn.TransformerEncoderLayer(dim, num_heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True)
        self.fusion = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.gate = nn.Sequential(nn.Linear(2 * dim, dim), nn.LeakyReLU(), nn.Linear(dim, dim), nn.LeakyReLU(),
                                  nn.Linear(dim, 1))
        self.gate_scale = gate_scale

    def semantic_vector(self, e_x, e_z, f):
        """``s``: the prompt and, where the output parsed (``f = 1``), the answer."""
        if self.answer_fusion == "add":
            return e_x + f * self.answer_weight(e_z)
        return (1 - f) * e_x + f * e_z

    def forward(self, prompt_emb, reasoning_emb, answer_emb, format_flag):
        e_x = self.prompt_mlp(prompt_emb)
        e_y = self.reasoning_mlp(reasoning_emb)
        s = self.semantic_vector(e_x, answer_emb, format_flag.to(e_x.dtype).unsqueeze(-1))
        a = self.fusion(torch.stack([e_x, e_y, s], dim=1))[:, -1]
        g = self.gate_scale * torch.sigmoid(self.gate(torch.cat([s, a], dim=-1)))
        return s + g * a
