import os

import pytest
import torch

from rporec_recbole.checkpoint import CorruptCheckpointError, claim_checkpoint_folder, load_checkpoint, \
    save_checkpoint


def test_round_trip_restores_model_and_optimizer(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path, model.state_dict(), optimizer, {"epoch": 4})
    state, optimizer_state, meta = load_checkpoint(tmp_path)
    assert meta["epoch"] == 4
    assert torch.equal(state["weight"], model.weight)
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    fresh.load_state_dict(optimizer_state)
    assert fresh.param_groups[0]["lr"] == 0.1
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])


def test_torn_or_incomplete_checkpoint_is_refused(tmp_path):
    save_checkpoint(tmp_path, {"w": torch.ones(4)}, None, {"epoch": 0})
    with open(tmp_path / "model.safetensors", "r+b") as handle:
        handle.truncate(20)
    with pytest.raises(CorruptCheckpointError, match="does not match"):
        load_checkpoint(tmp_path)
    with pytest.raises(CorruptCheckpointError, match="not a complete checkpoint"):
        load_checkpoint(tmp_path / "missing")


def test_runs_started_in_the_same_second_get_their_own_checkpoint_folders(tmp_path):
    # regression: RecBole names folders <Model>-<time to the second>; parallel comparison rows overwrote and
    # reloaded each other's weights (seen as a shape error only when the datasets differed)
    base = str(tmp_path / "saved" / "GRU4Rec-Nov-26-2026_01-07-54")
    folders = [claim_checkpoint_folder(base) for _ in range(3)]
    assert folders == [base, base + "-2", base + "-3"]
    assert all(os.path.isdir(f) for f in folders)
