"""RPORecTrainer: RecBole's Trainer plus reasoning preparation (and, with ``rl: true``, the GRPO stage).

Stage 1 is RecBole's own training loop (early stopping on the valid metric, RecBole's evaluator); before it,
and before any evaluation, the trainer makes sure every sample that needs reasoning has it in the store.
"""
import logging
import os

import numpy as np
import torch
from recbole.trainer import Trainer
from tqdm import tqdm

from rporec_recbole.checkpoint import SafeCheckpointMixin
from rporec_recbole.reasoning_store import ReasoningStore

logger = logging.getLogger(__name__)


def last_k_per_user(user_ids, lengths, k):
    """Row indices of each user's ``k`` samples with the longest history (the latest ones)."""
    order = np.lexsort((-lengths, user_ids))  # by user, latest first
    sorted_users = user_ids[order]
    first_of_user = np.r_[0, np.flatnonzero(np.diff(sorted_users)) + 1]
    rank_in_user = np.arange(len(order)) - np.repeat(first_of_user, np.diff(np.r_[first_of_user, len(order)]))
    return np.sort(order[rank_in_user < k])


class RPORecTrainer(SafeCheckpointMixin, Trainer):
    def __init__(self, config, model):
        super().__init__(config, model)
        self.show_progress = config["show_progress"]
        self._engine = None

    # ----- reasoning -------------------------------------------------------------------------------------
    def reasoning_store(self):
        prompts = self.model.prompts
        settings = {
            "llm_path": self.model.backbone.llm_path, "llm_dtype": self.config["llm_dtype"],
            "llm_seed": self.config["seed"], "template": prompts.template_hash,
            "max_new_tokens": self.config["max_new_tokens"], "top_p": self.config["top_p"],
            "temperature": self.config["temperature"], "do_sample": self.config["do_sample"], "policy": "initial",
        }
        return ReasoningStore(os.path.join(self.config["reasoning_dir"], self.config["dataset"]), settings)

    def _generate(self, prompts):
        if self._engine is None:
            from rporec_recbole.generation import GenerationEngine

            self._engine = GenerationEngine(self.model.backbone.model, self.model.backbone.tokenizer,
                                            max_batch_size=self.config["generation_batch_size"])
            self._generator = torch.Generator().manual_seed(self.config["seed"])
        return self._engine.generate(prompts, max_new_tokens=self.config["max_new_tokens"],
                                     do_sample=self.config["do_sample"], temperature=self.config["temperature"],
                                     top_p=self.config["top_p"], generator=self._generator)

    def ensure_reasoning(self, item_seq, item_seq_len, what):
        """Generate (or read from the store) the reasoning of every given sample, and hand it to the model."""
        if not self.model.use_reasoning:
            return
        windows = self.model.windows(item_seq, item_seq_len)
        todo = [w for w in dict.fromkeys(windows) if w not in self.model.reasoning.rows]
        if not todo:
            return
        store = self.reasoning_store()
        prompts = [self.model.prompts.build(w) for w in todo]
        missing = len(store.missing(prompts))
        progress = tqdm(total=missing, desc=f"Reasoning ({what})", ncols=100, disable=not self.show_progress)
        store.fill(prompts, self._generate, self.config["generation_batch_size"], progress)
        progress.close()
        self.model.add_reasoning(todo, [store.get(p) for p in prompts])
        self.logger.info(f"reasoning for {what}: {len(todo)} prompts ({missing} generated, "
                         f"{len(todo) - missing} from {store.folder})")

    def _dataset_samples(self, data, rows=None):
        feat = data._dataset.inter_feat
        seq, seq_len = feat[self.model.ITEM_SEQ], feat[self.model.ITEM_SEQ_LEN]
        return (seq, seq_len) if rows is None else (seq[rows], seq_len[rows])

    def prepare_training_reasoning(self, train_data):
        """Reasoning for the latest ``reasoning_train_per_user`` training samples of each user."""
        feat = train_data._dataset.inter_feat
        rows = last_k_per_user(feat[train_data._dataset.uid_field].numpy(),
                               feat[self.model.ITEM_SEQ_LEN].numpy(), self.config["reasoning_train_per_user"])
        self.ensure_reasoning(*self._dataset_samples(train_data, torch.as_tensor(rows)), "train")

    # ----- RecBole hooks ---------------------------------------------------------------------------------
    def fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False, callback_fn=None):
        self.prepare_training_reasoning(train_data)
        if valid_data:
            self.ensure_reasoning(*self._dataset_samples(valid_data), "valid")
        return super().fit(train_data, valid_data, verbose, saved, show_progress, callback_fn)

    @torch.no_grad()
    def evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        if eval_data:
            self.ensure_reasoning(*self._dataset_samples(eval_data), "evaluation")
        return super().evaluate(eval_data, load_best_model, model_file, show_progress)
