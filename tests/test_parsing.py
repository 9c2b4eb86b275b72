import pytest

from rporec_recbole.parsing import ParsedOutput, parse_output


def test_well_formed_output_splits_into_its_five_parts():
    parsed = parse_output("Sure. <think> likes jazz </think>\n<answer> Kind of Blue </answer> Bye")
    assert parsed == ParsedOutput(
        prefix="Sure. ",
        reasoning="likes jazz",
        between="\n",
        answer="Kind of Blue",
        suffix=" Bye",
        format_ok=True,
    )


def test_without_surrounding_text_prefix_between_and_suffix_are_empty():
    parsed = parse_output("<think>r</think><answer>a</answer>")
    parts = (parsed.prefix, parsed.reasoning, parsed.between, parsed.answer, parsed.suffix)
    assert parts == ("", "r", "", "a", "")
    assert parsed.format_ok


def test_prefix_and_suffix_are_kept_verbatim_for_the_length_reward():
    parsed = parse_output("  \n<think>r</think><answer>a</answer>\n\n")
    assert parsed.prefix == "  \n"
    assert parsed.suffix == "\n\n"


def test_multiline_reasoning_and_answer_are_stripped_but_keep_inner_newlines():
    parsed = parse_output("<think>\nline one\nline two\n</think><answer>\nTitle: X\nYear: 1990\n</answer>")
    assert parsed.reasoning == "line one\nline two"
    assert parsed.answer == "Title: X\nYear: 1990"


def _assert_malformed(text):
    parsed = parse_output(text)
    assert parsed == ParsedOutput(
        prefix="", reasoning=text.strip(), between="", answer="", suffix="", format_ok=False
    )


@pytest.mark.parametrize(
    "text",
    [
        "  just some text without tags  ",
        "",
        "<think>reasoning only</think>",
        "<answer>answer only</answer>",
        "<think>r</think> no answer tags at all",
        "<think>r <answer>a</answer>",  # </think> missing
        "r</think><answer>a</answer>",  # <think> missing
        "<think>r</think><answer>a",  # </answer> missing
    ],
)
def test_missing_tags_make_the_whole_output_the_reasoning(text):
    _assert_malformed(text)


def test_output_truncated_inside_the_answer_is_malformed():
    _assert_malformed("<think>she buys vinyl</think><answer>Abbey Ro")


def test_output_truncated_inside_the_reasoning_is_malformed():
    _assert_malformed("<think>she buys vinyl and")


@pytest.mark.parametrize(
    "text",
    [
        "<think>a</think><think>b</think><answer>x</answer>",
        "<think>a</think><answer>x</answer><answer>y</answer>",
        "<think>a <think>b</think> c</think><answer>x</answer>",
        "<think>a</think><answer>x <answer>y</answer></answer>",
        "<think>a</think><answer>x</answer> <think>b</think><answer>y</answer>",
    ],
)
def test_repeated_or_nested_tags_are_malformed(text):
    _assert_malformed(text)


def test_answer_inside_reasoning_is_malformed():
    _assert_malformed("<think>r <answer>x</answer></think> done")


def test_tags_in_the_wrong_order_are_malformed():
    _assert_malformed("<answer>x</answer><think>r</think>")
    _assert_malformed("</think>r<think><answer>x</answer>")


@pytest.mark.parametrize("reasoning", ["", "   ", "\n\n"])
def test_blank_reasoning_is_malformed(reasoning):
    _assert_malformed(f"<think>{reasoning}</think><answer>Kind of Blue</answer>")


def test_blank_answer_is_malformed():
    _assert_malformed("<think>likes jazz</think><answer> </answer>")


def test_tags_are_case_sensitive():
    _assert_malformed("<THINK>r</THINK><ANSWER>a</ANSWER>")
