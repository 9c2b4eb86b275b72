import pytest

from rporec_recbole import Config
from rporec_recbole.validation import ConfigValueError, validate_config


@pytest.mark.parametrize("key,value,message", [
    ("top_p", 1.5, r"top_p=1.5 is invalid: expected a number in \(0, 1\]"),
    ("top_p", 0, "top_p=0 is invalid"),
    ("history_window", -3, "history_window=-3 is invalid: expected an integer >= 1"),
    ("history_window", True, "history_window=True is invalid"),
    ("max_new_tokens", "many", "max_new_tokens='many' is invalid"),
    ("loss_type", "BPR", "loss_type='BPR' is invalid: expected 'sampled_softmax' or 'CE'"),
    ("history_window", 80, "history_window=80 exceeds MAX_ITEM_LIST_LENGTH=20"),
])
def test_bad_values_are_named_with_the_rule(key, value, message):
    config = Config(model="RPORec", dataset="ml-100k", config_dict={key: value})
    with pytest.raises(ConfigValueError, match=message):
        validate_config(config)


def test_defaults_are_valid():
    validate_config(Config(model="RPORec", dataset="ml-100k"))
