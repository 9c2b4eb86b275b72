"""The RecHead's semantic vector s under both answer fusions, and a stage-1 run that learns to use the answers."""
import pytest
import torch

from rporec_recbole.checkpoint import load_checkpoint
from rporec_recbole.rec_head import RecHead
from conftest import mini_config

DIM = 8


def _inputs(rows=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    prompt, reasoning, answer = torch.randn(3, rows, DIM, generator=generator).unbind(0)
    return prompt, reasoning, answer


def test_replace_fusion_is_the_papers_switch():
    head = RecHead(DIM, 1, 2, answer_fusion="replace")
    e_x, _, e_z = _inputs()
    f = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    s = head.semantic_vector(e_x, e_z, f)
    assert torch.equal(s[[0, 2]], e_z[[0, 2]]) and torch.equal(s[[1, 3]], e_x[[1, 3]])


def test_add_fusion_keeps_the_prompt_and_starts_without_the_answer():
    head = RecHead(DIM, 1, 2, answer_fusion="add")
    e_x, _, e_z = _inputs()
    f = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    assert torch.equal(head.semantic_vector(e_x, e_z, f), e_x)  # W = 0 at the start
    with torch.no_grad():
        head.answer_weight.weight.copy_(torch.eye(DIM))
    s = head.semantic_vector(e_x, e_z, f)
    assert torch.allclose(s[[0, 2]], e_x[[0, 2]] + e_z[[0, 2]]) and torch.equal(s[[1, 3]], e_x[[1, 3]])


@pytest.mark.parametrize("fusion", ["replace", "add"])
def test_unparsed_outputs_ignore_the_answer(fusion):
    head = RecHead(DIM, 1, 2, dropout=0.0, answer_fusion=fusion).eval()
    if fusion == "add":  # a trained W: at its zero init "add" ignores every answer, parsed or not
        with torch.no_grad():
            head.answer_weight.weight.copy_(torch.eye(DIM))
            head.answer_weight.bias.fill_(0.5)
    prompt, reasoning, answer = _inputs()
    flags = torch.zeros(4, dtype=torch.long)
    assert torch.allclose(head(prompt, reasoning, answer, flags), head(prompt, reasoning, -answer, flags))
    parsed = torch.ones(4, dtype=torch.long)  # control: the same answers count once parsed
    assert not torch.allclose(head(prompt, reasoning, answer, parsed), head(prompt, reasoning, -answer, parsed))


def test_add_fusion_learns_from_the_answer():
    """W starts at zero but its gradient does not vanish: one step makes a parsed answer change the user vector."""
    torch.manual_seed(0)
    head = RecHead(DIM, 1, 2, dropout=0.0, answer_fusion="add")
    prompt, reasoning, answer = _inputs()
    flags = torch.ones(4, dtype=torch.long)
    before = head(prompt, reasoning, answer, flags).detach()
    assert torch.allclose(before, head(prompt, reasoning, torch.zeros_like(answer), flags).detach())
    loss = -(head(prompt, reasoning, answer, flags) * answer).sum()  # pull u towards the answer
    loss.backward()
    torch.optim.SGD(head.parameters(), lr=0.1).step()
    assert head.answer_weight.weight.abs().sum() > 0
    assert not torch.allclose(head(prompt, reasoning, answer, flags), head(prompt, reasoning, 0 * answer, flags))


def test_a_stage1_run_with_added_answers_trains_their_weight(mini_movielens, tmp_path):
    """Forced, item-constrained answers all parse (f = 1), so stage 1 trains W, and the checkpoint holds it."""
    from rporec_recbole.quick_start import run_recbole_rporec

    config = mini_config(mini_movielens, tmp_path, force_answer=True, constrain_answer=True, answer_fusion="add")
    result = run_recbole_rporec("RPORec", "ml-mini", config_dict=config)
    state = load_checkpoint(result["checkpoint"])[0]
    assert state["rec_head.answer_weight.weight"].abs().sum() > 0
    assert all(0.0 <= v <= 1.0 for v in result["test_result"].values())
