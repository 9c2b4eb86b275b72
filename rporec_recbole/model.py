"""RPORec as a RecBole sequential model: RecHead over (prompt, reasoning, answer), plus a collaborative branch.

Scores are ``u_sem . E_text[i] + u_col . E_id[i]``: the semantic branch is the paper's RecHead scoring a frozen
table of item-text embeddings; the collaborative branch (beyond the paper) is a SASRec-style encoder of the same
history over learned item-ID embeddings. Each branch, and the use of reasoning, is switched by one config key.
With ``collaborative_item_text`` the collaborative items are text-aware, ``E_id[i] + W LayerNorm(E_text[i])``, in
the encoder's input and in scoring alike, so items with few interactions borrow from their text (with
``collaborative_item_text_fusion: concat`` the encoder's input is instead ``W_f [E_id[i]; text_i]``, as SASRecF
fuses an item's ID and feature vectors, while scoring keeps the sum); with ``learned_item_text_tokens`` they also
add a learned mean of their text's token vectors (``text_encoder.ItemTokenBag``, as SASRecF learns word embeddings
for a text feature; the LLM tokenizer's tokens, or with ``words`` the words).
``collaborative_item_text_in_scoring`` says how much of that text each item's scoring vector holds: all of it, none
(ID scoring, as SASRecF), or a learned share per popularity band of the item (``item_popularity``), which
``item_text_share_on_valid`` replaces after stage 1 by shares chosen on valid (``band_shares``; from 0 when training
scored by ID). With
``contrastive_weight`` the collaborative user vectors of samples sharing a target are pulled together (after DuoRec,
``rporec_recbole/contrastive.py``).
"""
import logging

import torch
import torch.nn.functional as F
from recbole.model.abstract_recommender import SequentialRecommender
from recbole.model.layers import TransformerEncoder
from recbole.utils import InputType
from torch import nn

from rporec_recbole.answer_constraint import ItemAnswerTrie
from rporec_recbole.contrastive import SameTargetSampler, same_target_info_nce
from rporec_recbole.item_popularity import POPULARITY_BANDS, popularity_bands, training_counts
from rporec_recbole.item_text import build_item_texts
from rporec_recbole.llm import Backbone, llm_seed
from rporec_recbole.parsing import THINK_OPEN, parse_output
from rporec_recbole.prompt import PromptBuilder
from rporec_recbole.rec_head import RecHead
from rporec_recbole.validation import validate_config
from rporec_recbole.text_embedder import load_text_embedder
from rporec_recbole.text_encoder import (ItemTokenBag, StaticTextEncoder, mean_of_sums, split_words,
                                         tokenize_texts)

logger = logging.getLogger(__name__)


class ReasoningTable:
    """Pooled reasoning/answer embeddings and the format flag of each prompt window; row 0 is "no reasoning"."""

    def __init__(self, embedder, max_reasoning_tokens, max_answer_tokens):
        self.embedder = embedder
        self.max_tokens = {"reasoning": max_reasoning_tokens, "answer": max_answer_tokens}
        dim = embedder.dim
        self.rows = {}
        self.reasoning = torch.zeros(1, dim)
        self.answers = torch.zeros(1, dim)
        self.flags = torch.zeros(1, dtype=torch.long)

    def __len__(self):
        return len(self.rows)

    def pool_texts(self, texts, max_tokens=None):
        """Frozen embedding of each text, in the space of the item-text table E."""
        return self.embedder.embed(texts, max_tokens)

    def encode(self, completions):
        """Parse completions and pool their reasoning and answer: ``(reasoning, answer, flags)``."""
        parsed = [parse_output(THINK_OPEN + c) for c in completions]
        reasoning = self.pool_texts([p.reasoning for p in parsed], self.max_tokens["reasoning"])
        answers = self.pool_texts([p.answer for p in parsed], self.max_tokens["answer"])
        return reasoning, answers, torch.tensor([int(p.format_ok) for p in parsed], dtype=torch.long)

    def add(self, windows, completions):
        """Store new completions; a window already present keeps its first reasoning."""
        new = {}
        for window, completion in zip(windows, completions):
            if window not in self.rows and window not in new:
                new[window] = completion
        if not new:
            return
        for row, window in enumerate(new, len(self.flags)):
            self.rows[window] = row
        reasoning, answers, flags = self.encode(list(new.values()))
        self.reasoning = torch.cat([self.reasoning, reasoning])
        self.answers = torch.cat([self.answers, answers])
        self.flags = torch.cat([self.flags, flags])

    def lookup(self, windows):
        rows = torch.tensor([self.rows.get(w, 0) for w in windows], dtype=torch.long)
        return self.reasoning[rows], self.answers[rows], self.flags[rows]


class MaskDropout(nn.Dropout):
    """``nn.Dropout`` with its mask drawn by ``rand_like`` instead of ``bernoulli_``: the same distribution, ~2x
    faster on CPU (measured: 1.0 vs 2.2 ms per 256x20x64 tensor), where dropout masks took ~20% of a stage-1 step."""

    def forward(self, x):
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        keep = torch.rand_like(x, dtype=torch.float32) >= self.p  # bf16 draws would round p to 1/256 steps
        return x * keep / (1 - self.p)


def init_like_sasrec(module, std):
    """RecBole SASRec's initialisation of ``module``: every Linear and Embedding weight drawn from normal(0, std),
    Linear biases zero, LayerNorms at weight 1 and bias 0."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Embedding)):
            nn.init.normal_(layer.weight, std=std)
        if isinstance(layer, nn.Linear) and layer.bias is not None:
            nn.init.zeros_(layer.bias)
        if isinstance(layer, nn.LayerNorm):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def use_mask_dropout(module):
    """Swap every ``nn.Dropout`` under ``module`` for a ``MaskDropout`` with the same rate."""
    for name, child in module.named_children():
        if type(child) is nn.Dropout:
            setattr(module, name, MaskDropout(child.p))
        else:
            use_mask_dropout(child)


class RPORec(SequentialRecommender):
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        validate_config(config)
        self.loss_type = config["loss_type"]
        self.use_semantic = config["use_semantic"]
        self.use_reasoning = config["use_reasoning"] and self.use_semantic
        self.use_collaborative = config["use_collaborative"]
        self.collaborative_item_text = config["collaborative_item_text"] and self.use_collaborative
        # True, False or "by_popularity" (False without text-aware items)
        self.item_text_in_scoring = self.collaborative_item_text and config["collaborative_item_text_in_scoring"]
        share_on_valid = config["item_text_share_on_valid"]
        if share_on_valid and (not self.collaborative_item_text or self.item_text_in_scoring is True):
            raise ValueError("item_text_share_on_valid chooses the text share of each popularity band: set "
                             "collaborative_item_text=True and collaborative_item_text_in_scoring=by_popularity "
                             "(shares learned, then chosen) or False (ID scoring in training, shares then chosen)")
        if share_on_valid and config["eval_args"]["mode"]["valid"] != "full":
            raise ValueError("item_text_share_on_valid ranks every item for each valid user: set eval_args "
                             f"mode valid: full (now {config['eval_args']['mode']['valid']!r})")
        # ID scoring in training, text shares added on valid after it: the shares exist but stay at 0 while training
        frozen_shares = share_on_valid and self.item_text_in_scoring is False
        if frozen_shares:
            self.item_text_in_scoring = "by_popularity"
        if config["learned_item_text_tokens"] and not self.collaborative_item_text:
            raise ValueError("learned_item_text_tokens adds to text-aware collaborative items: set "
                             "collaborative_item_text=True and use_collaborative=True")
        if not (self.use_semantic or self.use_collaborative):
            raise ValueError("RPORec needs at least one branch: set use_semantic or use_collaborative to True")
        self.contrastive_weight = config["contrastive_weight"]
        self.contrastive_temperature = config["contrastive_temperature"]
        if self.contrastive_weight and not self.use_collaborative:
            raise ValueError("contrastive_weight regularises the collaborative branch: set use_collaborative=True")
        self.num_negatives = config["train_neg_sample_args"].get("sample_num")

        self.backbone = Backbone(config["llm_path"], config["llm_dtype"], config["trust_remote_code"], llm_seed(config))
        tokenizer = self.backbone.tokenizer
        self.item_texts = build_item_texts(dataset, config["item_title_field"], config["item_text_fields"] or (),
                                           config["max_item_text_chars"])
        self.prompts = PromptBuilder(tokenizer, self.item_texts, config["history_window"], config["max_prompt_tokens"])
        self.answer_constraint = ItemAnswerTrie(tokenizer, self.item_texts) if config["constrain_answer"] else None
        embedder = load_text_embedder(config["text_embedder"], self.backbone)
        self.reasoning = ReasoningTable(embedder, config["max_reasoning_tokens"], config["max_answer_tokens"])

        if self.use_semantic or self.collaborative_item_text:
            sums, counts = embedder.item_sums(self.item_texts, config["max_item_text_tokens"])
            # Derived from frozen embeddings, so rebuilt at load time rather than saved:
            self.register_buffer("item_text_sums", sums, persistent=False)
            self.register_buffer("item_text_counts", counts, persistent=False)
            self.register_buffer("item_text_table", mean_of_sums(sums, counts), persistent=False)  # E
        if self.use_semantic:
            dim = embedder.dim
            self.prompt_encoder = StaticTextEncoder(dim)
            self.reasoning_encoder = StaticTextEncoder(dim)
            self.answer_encoder = StaticTextEncoder(dim)
            self.rec_head = RecHead(dim, config["head_layers"], config["head_heads"], dropout=config["dropout_prob"],
                                    answer_fusion=config["answer_fusion"])
        if self.use_collaborative:
            hidden = config["hidden_size"]
            self.item_embedding = nn.Embedding(self.n_items, hidden, padding_idx=0)
            self.position_embedding = nn.Embedding(self.max_seq_length, hidden)
            self.sequence_encoder = TransformerEncoder(
                n_layers=config["n_layers"], n_heads=config["n_heads"], hidden_size=hidden,
                inner_size=config["inner_size"], hidden_dropout_prob=config["dropout_prob"],
                attn_dropout_prob=config["dropout_prob"], hidden_act="gelu", layer_norm_eps=1e-12)
            self.sequence_norm = nn.LayerNorm(hidden, eps=1e-12)
            self.sequence_dropout = nn.Dropout(config["dropout_prob"])
            nn.init.normal_(self.item_embedding.weight, std=0.02)
            nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.item_text_fusion = None
        if self.collaborative_item_text:
            self.item_text_projection = nn.Sequential(nn.LayerNorm(embedder.dim), nn.Linear(embedder.dim, hidden))
            if config["collaborative_item_text_fusion"] == "concat":
                # SASRecF's concat_layer: the encoder reads a learned map of the ID vector, no longer the very
                # vector an item is scored by
                self.item_text_fusion = nn.Linear(2 * hidden, hidden)
        if self.use_collaborative and config["collaborative_initializer_range"] is not None:
            for part in self.collaborative_parts():
                init_like_sasrec(part, config["collaborative_initializer_range"])
        if self.item_text_in_scoring == "by_popularity":
            # `dataset` is the training split: an item's band counts its training interactions only. Derived from
            # the data, so rebuilt at load time; the shares start at 0, i.e. at ID scoring.
            bands = popularity_bands(training_counts(dataset))
            self.register_buffer("item_popularity_band", bands, persistent=False)
            self.item_text_score_share = nn.Parameter(torch.zeros(POPULARITY_BANDS), requires_grad=not frozen_shares)
        self.item_token_bag = None
        if config["learned_item_text_tokens"]:
            max_tokens = config["max_item_text_tokens"]
            tokens = (split_words(self.item_texts, max_tokens) if config["learned_item_text_tokens"] == "words"
                      else tokenize_texts(tokenizer, self.item_texts, max_tokens))
            self.item_token_bag = ItemTokenBag(tokens, hidden)
        if self.contrastive_weight:
            # `dataset` is the training split: partners come from training samples only
            feat = dataset.inter_feat
            self.same_target = SameTargetSampler(feat[self.ITEM_SEQ], feat[self.ITEM_SEQ_LEN], feat[self.ITEM_ID],
                                                 self.n_items)
        use_mask_dropout(self)

    def collaborative_parts(self):
        """The collaborative branch's modules (the learned token vectors, which start at zero, excepted)."""
        parts = [self.item_embedding, self.position_embedding, self.sequence_encoder, self.sequence_norm]
        if self.collaborative_item_text:
            parts.append(self.item_text_projection)
        if self.item_text_fusion is not None:
            parts.append(self.item_text_fusion)
        return parts

    # ----- prompts and reasoning -------------------------------------------------------------------------
    def windows(self, item_seq, item_seq_len):
        """The prompt window (tuple of item ids, oldest first) of every row."""
        seqs, lens = item_seq.tolist(), item_seq_len.tolist()
        return [tuple(self.prompts.window(seq[:n])) for seq, n in zip(seqs, lens)]

    def add_reasoning(self, windows, completions):
        self.reasoning.add([tuple(w) for w in windows], completions)

    def reasoning_coverage(self, windows):
        return sum(w in self.reasoning.rows for w in windows) / max(1, len(windows))

    # ----- branches --------------------------------------------------------------------------------------
    def pooled_prompt(self, item_seq, item_seq_len):
        """Mean embedding of the last ``history_window`` items' text (the prompt minus its fixed instruction),
        pooled from per-item sums and counts so that a step never runs an encoder or touches tokens."""
        window = self.prompts.history_window
        offsets = torch.arange(window, device=item_seq.device) - window
        positions = item_seq_len.unsqueeze(1) + offsets  # (B, W), negative where the history is shorter
        items = item_seq.gather(1, positions.clamp_min(0)) * (positions >= 0)  # item 0 is padding: zero sums
        return mean_of_sums(self.item_text_sums[items].sum(1), self.item_text_counts[items].sum(1))

    def _prompt_embedding(self, item_seq, item_seq_len):
        return self.prompt_encoder(self.pooled_prompt(item_seq, item_seq_len))

    def semantic_user(self, item_seq, item_seq_len):
        prompt_emb = self._prompt_embedding(item_seq, item_seq_len)
        windows = self.windows(item_seq, item_seq_len) if self.use_reasoning else [()] * len(item_seq)
        return self._head(prompt_emb, *self.reasoning.lookup(windows))

    def _head(self, prompt_emb, reasoning, answer, flags):
        device = prompt_emb.device
        return self.rec_head(prompt_emb, self.reasoning_encoder(reasoning.to(device)),
                             self.answer_encoder(answer.to(device)), flags.to(device))

    def collaborative_items(self):
        """The collaborative branch's item table ``(n_items, hidden)``: ID embeddings, plus their text part unless
        the text is read on the encoder's input side only; with ``by_popularity``, the text part times the learned
        share of the item's popularity band."""
        if not self.item_text_in_scoring:
            return self.item_embedding.weight
        text = self.item_text_part()
        if self.item_text_in_scoring == "by_popularity":
            text = self.item_text_score_share[self.item_popularity_band].unsqueeze(1) * text
        return self.item_embedding.weight + text

    def item_text_part(self, items=None):
        """The text part of each item (every item, or those in ``items``): its projected text embedding, plus its
        learned token vectors. One definition for the encoder's input and for scoring."""
        text = self.item_text_projection(self.item_text_table if items is None else self.item_text_table[items])
        return text if self.item_token_bag is None else text + self.item_token_bag(items)

    def sequence_input_items(self, item_seq):
        """The encoder's input vector of each history item: its ID embedding, plus (sum) or fused with (concat) its
        text part when items are text-aware."""
        items = self.item_embedding(item_seq)
        if not self.collaborative_item_text:
            return items
        text = self.item_text_part(item_seq)
        if self.item_text_fusion is None:
            return items + text
        return self.item_text_fusion(torch.cat([items, text], dim=-1))

    def collaborative_user(self, item_seq, item_seq_len):
        positions = torch.arange(item_seq.size(1), device=item_seq.device).unsqueeze(0)
        hidden = self.sequence_input_items(item_seq) + self.position_embedding(positions)
        hidden = self.sequence_dropout(self.sequence_norm(hidden))
        mask = self.get_attention_mask(item_seq)
        output = self.sequence_encoder(hidden, mask, output_all_encoded_layers=True)[-1]
        return self.gather_indexes(output, item_seq_len - 1)

    def forward(self, item_seq, item_seq_len):
        """User representations ``(u_sem, u_col)``; a switched-off branch gives ``None``."""
        u_sem = self.semantic_user(item_seq, item_seq_len) if self.use_semantic else None
        u_col = self.collaborative_user(item_seq, item_seq_len) if self.use_collaborative else None
        return u_sem, u_col

    def users_for_completions(self, item_seq, item_seq_len, completions):
        """``(u_sem, u_col)`` with the given completions in place of the stored reasoning (for RL rewards)."""
        u_sem = None
        if self.use_semantic:
            prompt_emb = self._prompt_embedding(item_seq, item_seq_len)
            u_sem = self._head(prompt_emb, *self.reasoning.encode(completions))
        u_col = self.collaborative_user(item_seq, item_seq_len) if self.use_collaborative else None
        return u_sem, u_col

    def score(self, users, items=None):
        """Scores ``(B, C)`` of candidate ``items`` for each user, or ``(B, n_items)`` when ``items`` is None."""
        u_sem, u_col = users
        score = 0
        for user, table in ((u_sem, lambda: self.item_text_table), (u_col, self.collaborative_items)):
            if user is None:
                continue
            weights = table()
            if items is None:
                score = score + user @ weights.T
            elif items.numel() >= len(weights):
                # more candidates than items: one matmul against the table beats gathering a (B, C, d) copy of it
                score = score + (user @ weights.T).gather(1, items)
            else:
                score = score + torch.einsum("bd,bcd->bc", user, weights[items])
        return score

    # ----- RecBole interface -----------------------------------------------------------------------------
    def contrastive_loss(self, u_col, targets):
        """The weighted same-target InfoNCE term (``rporec_recbole/contrastive.py``); 0 when switched off."""
        if not self.contrastive_weight:
            return 0
        partners = self.collaborative_user(*self.same_target.sample(targets))
        return self.contrastive_weight * same_target_info_nce(u_col, partners, targets, self.contrastive_temperature)

    def calculate_loss(self, interaction):
        item_seq, item_seq_len = interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]
        pos_items = interaction[self.POS_ITEM_ID]
        if self.loss_type == "CE":
            users = self(item_seq, item_seq_len)
            return F.cross_entropy(self.score(users), pos_items) + self.contrastive_loss(users[1], pos_items)
        # RecBole's pair-wise sampler tiles the batch once per negative: rows i, i+B, i+2B ... are one sample.
        batch = len(pos_items) // self.num_negatives
        negatives = interaction[self.NEG_ITEM_ID].view(self.num_negatives, batch).T
        candidates = torch.cat([pos_items[:batch].unsqueeze(1), negatives], dim=1)
        users = self(item_seq[:batch], item_seq_len[:batch])
        logits = self.score(users, candidates)
        loss = F.cross_entropy(logits, torch.zeros(batch, dtype=torch.long, device=logits.device))
        return loss + self.contrastive_loss(users[1], pos_items[:batch])

    def predict(self, interaction):
        users = self(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN])
        return self.score(users, interaction[self.ITEM_ID].unsqueeze(1)).squeeze(1)

    def full_sort_predict(self, interaction):
        return self.score(self(interaction[self.ITEM_SEQ], interaction[self.ITEM_SEQ_LEN]))
