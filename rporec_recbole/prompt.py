"""The RPORec prompt: instruction, answer-format example, then the user's last items as text."""
import hashlib
import logging

logger = logging.getLogger(__name__)

INSTRUCTION = (
    "Below is a user's history, oldest first. Analyse it briefly and recommend the one item the user is most "
    "likely to pick next. Keep your thoughts concise and put them inside <think></think>. Then put the guessed "
    "next item, with all its attributes, inside <answer></answer>. No polite filler.\n"
    "Answer format example: <answer>{example}</answer>\n\nHistory:\n{history}"
)
RESPONSE_PREFIX = "<think>"  # the completion starts inside the reasoning, as reasoning models do by themselves
_FALLBACK_TEMPLATE = "User: {message}\nAssistant: "


class PromptBuilder:
    """Renders prompts for histories of internal item ids; truncates from the oldest item when too long."""

    def __init__(self, tokenizer, item_texts, history_window=20, max_prompt_tokens=1024):
        self.tokenizer = tokenizer
        self.item_texts = item_texts
        self.history_window = history_window
        self.max_prompt_tokens = max_prompt_tokens
        self.example = next((t for t in item_texts[1:] if t), "item title")
        self.has_chat_template = bool(getattr(tokenizer, "chat_template", None))
        if not self.has_chat_template:
            logger.warning("tokenizer has no chat template; using a plain 'User:/Assistant:' prompt")

    @property
    def template_hash(self):
        """Changes whenever the wording or formatting of prompts changes (keys the reasoning store)."""
        probe = self._render([1, 2]) if len(self.item_texts) > 2 else self._render([])
        return hashlib.sha1((probe + str(self.history_window) + str(self.max_prompt_tokens)).encode()).hexdigest()[:12]

    def window(self, history):
        """The last ``history_window`` non-padding item ids of ``history`` (oldest first)."""
        items = [int(i) for i in history if int(i) > 0]
        return items[-self.history_window:]

    def _render(self, items):
        lines = "\n".join(f"{n}. {self.item_texts[i]}" for n, i in enumerate(items, 1))
        message = INSTRUCTION.format(example=self.example, history=lines)
        if self.has_chat_template:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                                      add_generation_prompt=True)
        else:
            text = _FALLBACK_TEMPLATE.format(message=message)
        return text + RESPONSE_PREFIX

    def build(self, history):
        """Prompt text for a history; drops the oldest items until it fits ``max_prompt_tokens``."""
        items = self.window(history)
        text = self._render(items)
        dropped = 0
        while len(items) > 1 and len(self.tokenizer(text, add_special_tokens=False).input_ids) > self.max_prompt_tokens:
            items = items[1:]
            dropped += 1
            text = self._render(items)
        if dropped:
            logger.info("prompt over %d tokens: dropped the %d oldest items", self.max_prompt_tokens, dropped)
        return text
