"""Splitting an LLM completion into prefix, reasoning, in-between text, answer and suffix.

The expected completion is ``PREFIX<think>REASONING</think>BETWEEN<answer>ANSWER</answer>SUFFIX``.
The format is ok only when each of the four tags occurs exactly once, in that order, and neither the
reasoning nor the answer is blank. Otherwise, as in the authors' code, the whole completion (stripped)
counts as reasoning and the answer is empty, so the RecHead still sees the text but none of it is taken
as the guessed item.

Decisions:
- Blank reasoning (``<think></think>`` or whitespace only) is NOT ok: RPORec is reasoning-augmented
  recommendation, the format reward should not pay for skipping the reasoning. A blank answer is not ok
  either: there is no guessed item.
- Repeated or nested tags are not ok: with two ``<answer>`` blocks there is no single guess.
- Tags are matched exactly (lower case, no attributes).
- ``reasoning`` and ``answer`` are stripped (they feed text encoders); ``prefix``, ``between`` and
  ``suffix`` are kept verbatim because the length reward counts their characters.
- If the chat template already opened ``<think>`` inside the prompt, prepend it to the completion before
  parsing.
"""
import re
from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

# Non-greedy groups are enough: the tag counts are checked before matching, so each tag is unique.
_PATTERN = re.compile(
    r"(.*?)<think>(.*?)</think>(.*?)<answer>(.*?)</answer>(.*)",
    re.DOTALL,
)


@dataclass(frozen=True)
class ParsedOutput:
    """The parts of one completion; see the module docstring for what each holds when the format fails."""

    prefix: str
    reasoning: str
    between: str
    answer: str
    suffix: str
    format_ok: bool


def _malformed(text):
    return ParsedOutput(prefix="", reasoning=text.strip(), between="", answer="", suffix="", format_ok=False)


def parse_output(text):
    """Parse one completion into a ``ParsedOutput``."""
    if any(text.count(tag) != 1 for tag in _TAGS):
        return _malformed(text)
    match = _PATTERN.fullmatch(text)
    if match is None:  # every tag once, but in the wrong order
        return _malformed(text)
    prefix, reasoning, between, answer, suffix = match.groups()
    if not reasoning.strip() or not answer.strip():
        return _malformed(text)
    return ParsedOutput(
        prefix=prefix,
        reasoning=reasoning.strip(),
        between=between,
        answer=answer.strip(),
        suffix=suffix,
        format_ok=True,
    )
