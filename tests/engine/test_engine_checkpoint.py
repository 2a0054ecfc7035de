import math
import os

import pytest
import torch

from learnloop.engine.checkpoint import load_state, load_weights, save_state, save_weights
from learnloop.errors import CorruptFileError
from learnloop.utils import io


def test_roundtrip_nested_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"opt": opt.state_dict(), "t": (1, 2.5, "x"), "inf": math.inf, "none": None, "list": [torch.ones(2), 3]}
    save_state(tmp_path / "c.safetensors", state)
    back = load_state(tmp_path / "c.safetensors")
    assert back["t"] == (1, 2.5, "x") and back["inf"] == math.inf and back["none"] is None
    assert set(back["opt"]["state"]) == {0, 1}          # int keys survive
    opt2 = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    opt2.load_state_dict(back["opt"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


def test_tied_weights_are_stored(tmp_path):
    emb = torch.nn.Embedding(5, 3)
    head = torch.nn.Linear(3, 5, bias=False)
    head.weight = emb.weight
    m = torch.nn.ModuleDict({"emb": emb, "head": head})
    save_weights(tmp_path / "w.safetensors", m)
    m2 = torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 3), "head": torch.nn.Linear(3, 5, bias=False)})
    load_weights(tmp_path / "w.safetensors", m2)
    assert torch.equal(m2["head"].weight, emb.weight)


def test_crash_during_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    save_state(path, {"x": torch.zeros(3)})

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        save_state(path, {"x": torch.ones(3)})
    monkeypatch.undo()
    assert torch.equal(load_state(path)["x"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.safetensors"]     # no temp files left behind


def test_truncated_or_foreign_checkpoint(tmp_path):
    path = tmp_path / "c.safetensors"
    save_state(path, {"x": torch.zeros(100)})
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(CorruptFileError, match="c.safetensors"):
        load_state(path)
    other = tmp_path / "pickle.pt"
    torch.save({"x": 1}, other)
    with pytest.raises(CorruptFileError):
        load_state(other)
    with pytest.raises(CorruptFileError, match="not found"):
        load_state(tmp_path / "missing.safetensors")


def test_weights_that_do_not_fit(tmp_path):
    save_weights(tmp_path / "w.safetensors", torch.nn.Linear(3, 2))
    with pytest.raises(CorruptFileError, match="do not fit"):
        load_weights(tmp_path / "w.safetensors", torch.nn.Linear(4, 2))


def test_atomic_json(tmp_path):
    io.write_json(tmp_path / "a.json", {"a": torch.tensor(1.5), "b": (1, 2)})
    assert io.read_json(tmp_path / "a.json") == {"a": 1.5, "b": [1, 2]}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CorruptFileError, match="bad.json"):
        io.read_json(tmp_path / "bad.json")


def test_weights_with_nan_are_refused_naming_the_tensor(tmp_path):
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.bias[0] = math.nan
    save_weights(tmp_path / "w.safetensors", model)
    with pytest.raises(CorruptFileError, match=r"w.safetensors: model.bias: 1 of 2 values are NaN or infinite"):
        load_weights(tmp_path / "w.safetensors", torch.nn.Linear(3, 2))


def test_weights_file_without_model(tmp_path):
    save_state(tmp_path / "s.safetensors", {"x": torch.zeros(2)})
    with pytest.raises(CorruptFileError, match="holds no 'model' weights"):
        load_weights(tmp_path / "s.safetensors", torch.nn.Linear(3, 2))


def test_checkpoint_files_get_the_umask_mode_not_0600(tmp_path):
    ref = tmp_path / "ref"
    ref.write_text("x")
    save_state(tmp_path / "c.safetensors", {"x": torch.zeros(3)})
    assert os.stat(tmp_path / "c.safetensors").st_mode & 0o777 == os.stat(ref).st_mode & 0o777
