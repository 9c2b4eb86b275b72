"""Checks of RPORec's config keys: a wrong type or range stops the run with one message naming the key."""

# key: (accepted types, predicate, what the predicate means)
_RULES = {
    "history_window": (int, lambda v: v >= 1, "an integer >= 1"),
    "max_new_tokens": (int, lambda v: v >= 1, "an integer >= 1"),
    "generation_batch_size": (int, lambda v: v >= 1, "an integer >= 1"),
    "reasoning_train_per_user": (int, lambda v: v >= 0, "an integer >= 0"),
    "max_prompt_tokens": (int, lambda v: v >= 64, "an integer >= 64"),
    "max_reasoning_tokens": (int, lambda v: v >= 1, "an integer >= 1"),
    "max_answer_tokens": (int, lambda v: v >= 1, "an integer >= 1"),
    "top_p": ((int, float), lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "temperature": ((int, float), lambda v: v > 0, "a number > 0"),
    "max_nonfinite_steps": (int, lambda v: v >= 1, "an integer >= 1"),
    "head_layers": (int, lambda v: v >= 1, "an integer >= 1"),
    "head_heads": (int, lambda v: v >= 1, "an integer >= 1"),
    "use_semantic": (bool, lambda v: True, "true or false"),
    "use_reasoning": (bool, lambda v: True, "true or false"),
    "use_collaborative": (bool, lambda v: True, "true or false"),
    "collaborative_item_text": (bool, lambda v: True, "true or false"),
    "learned_item_text_tokens": ((bool, str), lambda v: v in (True, False, "words"),
                                 "true (the LLM tokenizer's tokens), words (whitespace-separated words) or false"),
    "collaborative_item_text_in_scoring": ((bool, str), lambda v: v in (True, False, "by_popularity"),
                                           "true, false or by_popularity"),
    "collaborative_item_text_fusion": (str, lambda v: v in ("sum", "concat"),
                                       "sum (ID plus text) or concat (a learned map of both, as SASRecF)"),
    "item_text_share_on_valid": (bool, lambda v: True, "true or false"),
    "contrastive_weight": ((int, float), lambda v: 0 <= v < float("inf"), "a finite number >= 0 (0: off)"),
    "contrastive_temperature": ((int, float), lambda v: v > 0, "a number > 0"),
    "collaborative_initializer_range": ((int, float, type(None)), lambda v: v is None or v > 0,
                                        "a number > 0 (SASRec's initialisation), or ~ (PyTorch's)"),
    "do_sample": (bool, lambda v: True, "true or false"),
    "reasoning_seed": ((int, type(None)), lambda v: v is None or v >= 0, "an integer >= 0, or ~ (the run's seed)"),
    "force_answer": (bool, lambda v: True, "true or false"),
    "answer_max_new_tokens": (int, lambda v: v >= 1, "an integer >= 1"),
    "constrain_answer": (bool, lambda v: True, "true or false"),
    "answer_fusion": (str, lambda v: v in ("replace", "add"), "'replace' (the paper) or 'add'"),
    "loss_type": (str, lambda v: v in ("sampled_softmax", "CE"), "'sampled_softmax' or 'CE'"),
    "rl_steps": (int, lambda v: v >= 0, "an integer >= 0"),
    "rl_prompts_per_step": (int, lambda v: v >= 1, "an integer >= 1"),
    "rl_num_generations": (int, lambda v: v >= 2, "an integer >= 2 (GRPO compares completions within a group)"),
    "rl_max_completion_length": (int, lambda v: v >= 1, "an integer >= 1"),
    "rl_temperature": ((int, float), lambda v: v > 0, "a number > 0"),
    "rl_top_p": ((int, float), lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "rl_learning_rate": ((int, float), lambda v: v > 0, "a number > 0"),
    "rl_beta": ((int, float), lambda v: v >= 0, "a number >= 0"),
    "rl_epsilon": ((int, float), lambda v: v > 0, "a number > 0"),
    "rl_num_iterations": (int, lambda v: v >= 1, "an integer >= 1"),
    "rl_top_entropy_quantile": ((int, float), lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "rl_gradient_accumulation_steps": (int, lambda v: v >= 1, "an integer >= 1"),
    "rl_save_step": (int, lambda v: v >= 1, "an integer >= 1"),
    "rl_trim_heap_mb": ((int, float, type(None)), lambda v: v is None or v >= 0, "a number of MB >= 0, or ~ (never)"),
    "rl_loss_type": (str, lambda v: v in ("grpo", "dapo", "dr_grpo"), "grpo, dapo or dr_grpo"),
    "rl_scale_rewards": (str, lambda v: v in ("group", "none"), "group or none"),
    "rl_rank_over": (str, lambda v: v in ("sampled", "full"), "sampled or full"),
    "rl_mixed_precision": (str, lambda v: v in ("no", "bf16"), "'no' or 'bf16'"),
    "text_embedder": (str, lambda v: bool(v.strip()), "'llm', 'embedded:all-minilm-l6-v2', a hub id or a folder"),
    "llm_dtype": (str, lambda v: v in ("bfloat16", "float32", "float16"), "bfloat16, float32 or float16"),
}


class ConfigValueError(ValueError):
    """A config key has a wrong type or an out-of-range value."""


def check_value(key, value, types, predicate, meaning):
    # bool is an int in Python: an integer key must not accept True/False silently
    accepts_bool = bool in (types if isinstance(types, tuple) else (types,))
    wrong_type = not isinstance(value, types) or (isinstance(value, bool) and not accepts_bool)
    if wrong_type or not predicate(value):
        raise ConfigValueError(f"config key {key}={value!r} is invalid: expected {meaning} "
                               f"(set it in a yaml or as --{key}=...)")


def validate_config(config, extra_rules=None):
    """Raise :class:`ConfigValueError` for the first key that breaks its rule; absent keys are skipped."""
    for key, (types, predicate, meaning) in {**_RULES, **(extra_rules or {})}.items():
        if key in config.final_config_dict:
            check_value(key, config[key], types, predicate, meaning)
    if config["history_window"] > config["MAX_ITEM_LIST_LENGTH"]:
        raise ConfigValueError(f"history_window={config['history_window']} exceeds MAX_ITEM_LIST_LENGTH="
                               f"{config['MAX_ITEM_LIST_LENGTH']}: RecBole keeps only that many items per sample")
    if config["constrain_answer"] and not config["force_answer"]:
        raise ConfigValueError("constrain_answer=True needs force_answer=True: the constraint applies to the answer "
                               "that forcing asks for")
