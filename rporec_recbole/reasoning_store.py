"""Reasoning store: generated completions on disk, keyed so that stale text is never reused.

A store lives in ``<root>/<namespace>/``: the namespace hashes everything that changes the text (model, prompt
template, decoding settings, policy version), and each entry is keyed by the sha1 of its prompt. Entries are
appended as json lines and fsynced batch by batch, so an interrupted run resumes where it stopped; a line torn by
a crash is cut off when the store is reopened.
"""
import hashlib
import json
import logging
import os

from rporec_recbole.checkpoint import atomic_write_json

logger = logging.getLogger(__name__)

ENTRIES_FILE = "reasoning.jsonl"


def prompt_key(prompt):
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()


def namespace_of(settings):
    """A short stable hash of a json-able dict of generation settings."""
    return hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ReasoningStore:
    def __init__(self, root, settings):
        self.settings = dict(settings)
        self.folder = os.path.join(root, namespace_of(self.settings))
        self.path = os.path.join(self.folder, ENTRIES_FILE)
        os.makedirs(self.folder, exist_ok=True)
        atomic_write_json(os.path.join(self.folder, "settings.json"), self.settings)
        self._entries = self._load()

    def _load(self):
        """Read the entries; cut a torn final line so that later appends start on a fresh line."""
        entries = {}
        if not os.path.exists(self.path):
            return entries
        with open(self.path, "rb") as handle:
            data = handle.read()
        good_end = data.rfind(b"\n") + 1
        if good_end < len(data):
            logger.warning("reasoning store %s: dropping a torn last line (%d bytes)", self.path, len(data) - good_end)
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
        for line in data[:good_end].splitlines():
            try:
                entry = json.loads(line)
                entries[entry["key"]] = entry["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                logger.warning("reasoning store %s: skipping a damaged line", self.path)
        return entries

    def __len__(self):
        return len(self._entries)

    def __contains__(self, prompt):
        return prompt_key(prompt) in self._entries

    def get(self, prompt):
        return self._entries.get(prompt_key(prompt))

    def missing(self, prompts):
        """Distinct prompts without an entry, in first-seen order."""
        seen, out = set(), []
        for prompt in prompts:
            key = prompt_key(prompt)
            if key not in self._entries and key not in seen:
                seen.add(key)
                out.append(prompt)
        return out

    def add(self, prompts, texts):
        """Append a batch of entries durably (one write + fsync per batch)."""
        lines = []
        for prompt, text in zip(prompts, texts):
            key = prompt_key(prompt)
            if key not in self._entries:
                self._entries[key] = text
                lines.append(json.dumps({"key": key, "text": text}, ensure_ascii=False) + "\n")
        if lines:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write("".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
