"""Stage-1 step time with the item text projected per history position against once per distinct item.

``RPORec.item_text_part(items)`` gives the text part of every item of a batch of histories. Projecting it at every
position (the code before session 39) runs LayerNorm and the Linear on ``batch x MAX_ITEM_LIST_LENGTH`` rows, most
of them padding or repeats; projecting each distinct item once and spreading the rows gives the same numbers. This
script builds a model with a comparison row's settings, takes real training batches and times a training step
(``calculate_loss``, backward, under the trainer's bf16 autocast) both ways, alternating, in one process:

    python benchmarks/item_text_step.py --dataset=Beauty --config_files=benchmarks/compare-beauty/data.yaml \
        --collaborative_item_text=True --contrastive_weight=0.1 --collaborative_item_text_in_scoring=by_popularity \
        --batches=6 --repeats=5 [--output=benchmarks/item_text_step_beauty.json]

It prints the median seconds per step of each way, their ratio, how many distinct items a batch holds, and the
largest difference between the two ways' losses and gradients (a gradient's relative to its largest entry:
the two ways sum in different orders, so bf16 rounding differs).
"""
import argparse
import json
import statistics
import sys
import time

import torch
import yaml


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="Beauty")
    parser.add_argument("--config_files", default="")
    parser.add_argument("--batches", type=int, default=6, help="training batches timed (the first ones)")
    parser.add_argument("--repeats", type=int, default=5, help="passes over those batches, each way")
    parser.add_argument("--output", default="")
    known, rest = parser.parse_known_args(argv)
    overrides = {}
    for arg in rest:  # --key=value, as the runner takes them (values parsed as YAML: True, 0.1, by_popularity)
        key, _, value = arg.lstrip("-").partition("=")
        overrides[key] = yaml.safe_load(value)
    return known, overrides


def build(args, overrides):
    """Config, model (train mode) and the first ``args.batches`` training batches."""
    from recbole.utils import init_seed

    from rporec_recbole.config import Config
    from rporec_recbole.quick_start import load_data
    from rporec_recbole.registry import get_model

    config_dict = {"use_gpu": False, "rl": False, "use_semantic": False, **overrides}
    config = Config(model="RPORec", dataset=args.dataset,
                    config_file_list=args.config_files.split(",") if args.config_files else None,
                    config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    _, (train_data, _, _) = load_data(config)
    model = get_model("RPORec")(config, train_data._dataset)
    model.train()
    batches = []
    for interaction in train_data:
        batches.append(interaction)
        if len(batches) == args.batches:
            break
    return config, model, batches


def per_position(model):
    """The text part of ``items`` projected at every position: the code before session 39."""
    return lambda items=None: model._project_item_text(items)


def step(model, interaction, seed, amp):
    """One training step's loss and gradients (no optimizer update), with a fixed seed for dropout and sampling."""
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    with torch.autocast(device_type="cpu", enabled=amp):
        loss = model.calculate_loss(interaction)
    loss.backward()
    return loss.detach().float(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def relative_gap(gradients, reference):
    """The largest difference of two gradient sets, each parameter's relative to its largest reference entry."""
    tiny = torch.finfo(torch.float32).tiny  # all-zero in both: 0; zero in one only: a huge gap, as it should be
    return max(float((gradients[n] - reference[n]).abs().max() / reference[n].abs().max().clamp_min(tiny))
               for n in reference)


def main(argv=None):
    args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    config, model, batches = build(args, overrides)
    if not model.collaborative_item_text:
        raise SystemExit("set --collaborative_item_text=True: without text-aware items there is nothing to compare")
    amp = bool(config["enable_amp"])
    distinct_way = model.item_text_part
    ways = {"per_position": per_position(model), "distinct": distinct_way}
    seconds = {way: [] for way in ways}
    for seed, interaction in enumerate(batches):  # untimed warm-up pass of each way
        for way, function in ways.items():
            model.item_text_part = function
            step(model, interaction, seed, amp)
    for _ in range(args.repeats):
        for seed, interaction in enumerate(batches):
            for way, function in ways.items():
                model.item_text_part = function
                start = time.perf_counter()
                step(model, interaction, seed, amp)
                seconds[way].append(time.perf_counter() - start)
    largest_loss_gap, largest_grad_gap = 0.0, 0.0
    for seed, interaction in enumerate(batches):
        results = {}
        for way, function in ways.items():
            model.item_text_part = function
            results[way] = step(model, interaction, seed, amp)
        (loss_a, grads_a), (loss_b, grads_b) = results.values()
        largest_loss_gap = max(largest_loss_gap, float((loss_a - loss_b).abs()))
        largest_grad_gap = max(largest_grad_gap, relative_gap(grads_a, grads_b))
    seq = batches[0][model.ITEM_SEQ]
    result = {
        "command": "python benchmarks/item_text_step.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": _device(),
        "threads": torch.get_num_threads(),
        "bf16_autocast": amp,
        "batch_positions": seq.numel(),
        "batch_distinct_items": int(seq.unique().numel()),
        "median_step_seconds": {way: statistics.median(s) for way, s in seconds.items()},
        "largest_loss_gap": largest_loss_gap,
        "largest_gradient_gap_relative": largest_grad_gap,  # of a parameter's largest gradient entry
    }
    medians = result["median_step_seconds"]
    result["per_position_over_distinct"] = medians["per_position"] / medians["distinct"]
    print(json.dumps(result, indent=1))
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(result, handle, indent=1)
            handle.write("\n")


def _device():
    from rporec_recbole.quick_start import describe_device

    return describe_device(torch.device("cpu"))


if __name__ == "__main__":
    main()
