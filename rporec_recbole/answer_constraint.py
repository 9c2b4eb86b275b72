"""Answers constrained to the dataset's items: the forced answer is decoded under a prefix tree of item texts.

With answer forcing alone the embedded 135M model answers with text that is mostly not an item ("I do not have
the answer", invented titles), so the answer branch of the RecHead (s = (1 - f) prompt + f answer) reads noise
(``benchmarks/comparison_record.md``, session 9). Constrained decoding, as in generative recommenders that ground
an LLM's output in the catalogue, restricts every answer token to those that continue some item's text, then
``</answer>``: each answer is the text of an item exactly as the prompt renders it, and what the policy chooses is
which item. The paper's answers are free text; this is an option (``constrain_answer``), off by default.

The masked tokens are not in GRPO's loss either way: the loss reads the policy's unconstrained log-probabilities
of the sampled tokens, as TRL's GRPO trainer does with guided decoding.
"""
from rporec_recbole.parsing import ANSWER_CLOSE


class ItemAnswerTrie:
    """Prefix tree over the token ids of ``item text + </answer>`` for every item with a text."""

    def __init__(self, tokenizer, item_texts):
        closer = tokenizer(ANSWER_CLOSE, add_special_tokens=False).input_ids
        self.root = {}
        self.max_length = 0
        for text in dict.fromkeys(t for t in item_texts[1:] if t and t.strip()):  # index 0 is padding
            ids = tokenizer(text, add_special_tokens=False).input_ids + closer
            self.max_length = max(self.max_length, len(ids))
            node = self.root
            for token in ids:
                node = node.setdefault(token, {})
        if not self.root:
            raise ValueError("constrain_answer needs item texts: no item has one")

    def allowed(self, completion):
        """Token ids that may follow ``completion`` (the answer's tokens so far), or None when it left the tree
        or is complete: then nothing is left to constrain."""
        node = self.root
        for token in completion:
            node = node.get(token)
            if node is None:
                return None
        return list(node) or None
