"""Failure class 6: every file of a run folder is untrusted input. config.json and the checkpoint state are
schema-checked (one line naming the file and the field), non-finite weights are refused, nesting depth is
bounded, nothing that is not a regular file is opened, and a state that does not fit the model is one line."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from learnloop.engine.checkpoint import load_module_state, load_optimizer_state, load_state, save_state
from learnloop.engine.run import RunFolder
from learnloop.engine.schema import TRAINING_STATE_KEYS
from learnloop.errors import CorruptFileError
from learnloop.utils.io import MAX_JSON_BYTES, read_json
from learnloop.utils.seed import rng_state

from hardening_helpers import (
    REPO,
    assert_ends_with_error_line,
    assert_one_error_line,
    child_env,
    copy_run,
    read_tree,
    run_cli,
    state_files,
    write_tree,
)


@pytest.fixture
def run(source_run, tmp_path):
    return copy_run(source_run, tmp_path)


def _cli_child(*args, timeout=180):
    """The CLI in a child with a timeout: a regression that blocks (a FIFO, a loop from epoch -1e9) fails
    the test instead of hanging the suite."""
    return subprocess.run([sys.executable, "-m", "learnloop.cli", *map(str, args)], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


# --- config.json -----------------------------------------------------------------------------------------
def _edit(key, value=None, delete=False):
    def fn(path):
        data = json.loads(path.read_text())
        if delete:
            del data[key]
        else:
            data[key] = value
        path.write_text(json.dumps(data))
    return fn


def _raw(content: bytes):
    return lambda path: path.write_bytes(content)


CONFIG_CASES = {
    "a list instead of an object": (_raw(b"[1, 2]"), "must hold a JSON object, got array"),
    "a string instead of an object": (_raw(b'"hello"'), "must hold a JSON object, got string"),
    "recipe missing": (_edit("recipe", delete=True), "recipe: missing"),
    "recipe not a string": (_edit("recipe", 3), "recipe: must be a non-empty string, got integer"),
    "recipe empty": (_edit("recipe", ""), "recipe: must be a non-empty string"),
    "seed missing": (_edit("seed", delete=True), "seed: missing"),
    "seed a string": (_edit("seed", "0"), "seed: must be an integer in [0, 2**63-1], got string"),
    "seed a boolean": (_edit("seed", True), "seed: must be an integer"),
    "seed a float": (_edit("seed", 1.5), "seed: must be an integer"),
    "seed negative": (_edit("seed", -1), "got -1"),
    "seed beyond 63 bits": (_edit("seed", 2 ** 64), "seed: must be an integer in [0, 2**63-1]"),
    "config missing": (_edit("config", delete=True), "config: missing"),
    "config a list": (_edit("config", [1]), "config: must be an object, got array"),
    "device a number": (_edit("device", 0), "device: must be a string, got integer"),
    "track a list": (_edit("track", []), "track: must be a string or null"),
    "not UTF-8": (_raw(b'{"recipe": "mlp-\xff\xfe"}'), "not UTF-8 text (byte 0xff at offset 16)"),
    "nested 100000 deep": (_raw(b"[" * 100_000 + b"]" * 100_000), "nested deeper than 64 levels"),
    "nested object 100000 deep": (_raw(b'{"a":' * 100_000 + b"1" + b"}" * 100_000), "nested deeper than 64"),
    "empty": (_raw(b""), "not valid JSON"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:40]), "not valid JSON"),
    "a 5000-digit number": (_raw(b'{"seed": 1' + b"0" * 5000 + b"}"), "a number too long to read"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_corrupt_config_json_is_one_line_naming_file_and_field(capsys, run, case):
    damage, fragment = CONFIG_CASES[case]
    damage(run / "config.json")
    with pytest.raises(CorruptFileError) as e:
        RunFolder.open(run).config()
    assert str(run / "config.json") in str(e.value) and fragment in str(e.value)
    before = state_files(run)
    for command in ("resume", "eval"):
        code, out, err = run_cli(capsys, command, run)
        assert code == 2, err
        assert_one_error_line(err, str(run / "config.json"), fragment)
    assert state_files(run) == before                     # refused before anything was written


def test_config_json_larger_than_the_bound_is_refused_unread(run):
    with open(run / "config.json", "wb") as f:            # sparse: no disk used
        f.truncate(MAX_JSON_BYTES + 1)
    with pytest.raises(CorruptFileError, match=f"larger than {MAX_JSON_BYTES} bytes"):
        RunFolder.open(run).config()


# --- files that are not regular files --------------------------------------------------------------------
def _fifo(path):
    if path.exists():
        path.unlink()
    os.mkfifo(path)


def _symlink_to_fifo(path):
    target = path.parent / "elsewhere.fifo"
    os.mkfifo(target)
    path.unlink(missing_ok=True)
    path.symlink_to(target)


def _symlink_to_device(path):
    path.unlink(missing_ok=True)
    path.symlink_to("/dev/zero")


def _folder(path):
    path.unlink(missing_ok=True)
    path.mkdir()


SPECIAL = {"a FIFO": _fifo, "a symlink to a FIFO": _symlink_to_fifo, "a symlink to /dev/zero": _symlink_to_device,
           "a folder": _folder}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("case", list(SPECIAL))
def test_special_files_are_never_opened(run, case):
    rf = RunFolder(run)
    for name, read in (("config.json", rf.config), ("metrics.json", rf.metrics), ("eval.json", rf.eval_metrics),
                       ("metrics.jsonl", rf.history), ("log.txt", lambda: rf.log("hello"))):
        path = run / name
        SPECIAL[case](path)
        with pytest.raises(CorruptFileError, match="not a regular file|is a folder") as e:
            read()
        assert name in str(e.value)
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            path.rmdir()
        for extra in run.glob("elsewhere.fifo"):
            extra.unlink()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_cli_with_a_fifo_log_does_not_block(run):
    _fifo(run / "log.txt")
    done = _cli_child("resume", run, timeout=120)
    assert done.returncode == 2, done.stderr
    assert_ends_with_error_line(done.stderr, "log.txt", "FIFO")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_cli_with_a_fifo_config_does_not_block(run):
    _fifo(run / "config.json")
    done = _cli_child("eval", run, timeout=120)
    assert done.returncode == 2, done.stderr
    assert_one_error_line(done.stderr, "config.json", "FIFO")


# --- metrics.jsonl: skipped lines, never a failure --------------------------------------------------------
def test_metrics_log_keeps_only_sound_rows(tmp_path):
    rf = RunFolder.create(tmp_path, "r", {})
    rf.append_metrics({"epoch": 1, "loss": 0.5})
    with open(rf.metrics_log, "ab") as f:
        f.write(b'{"epoch": 2, "loss": 0.4')                       # cut by a crash (no newline)
    rf.append_metrics({"epoch": 3, "loss": 0.3})                    # must not be glued to the cut line
    with open(rf.metrics_log, "ab") as f:
        f.write(b"[1, 2]\n" + b'"text"\n' + b'{"epoch": "x"}\n' + b'{"epoch": \xff}\n' + b"[" * 5000 + b"]" * 5000 +
                b"\n" + b"\n")
    assert rf.history() == [{"epoch": 1, "loss": 0.5}, {"epoch": 3, "loss": 0.3}]


# --- checkpoints ------------------------------------------------------------------------------------------
def _ckpt(run):
    return run / "checkpoints" / "last.safetensors"


def _edit_tree(fn):
    def damage(path):
        tensors, tree = read_tree(path)
        fn(tensors, tree)
        write_tree(path, tensors, tree)
    return damage


def _set(key, value):
    return _edit_tree(lambda t, tree: tree.__setitem__(key, value))


def _first_weight(tree):
    model = tree["modules"]["model"]
    key = next(iter(model))
    return model, key


def _nan_weights(tensors, tree):
    model, key = _first_weight(tree)
    tensors[model[key]["$t"]] = torch.full_like(tensors[model[key]["$t"]], math.nan)


def _one_inf(tensors, tree):
    model, key = _first_weight(tree)
    t = tensors[model[key]["$t"]].clone()
    t.view(-1)[0] = math.inf
    tensors[model[key]["$t"]] = t


def _missing_tensor(tensors, tree):
    model, key = _first_weight(tree)
    model[key] = {"$t": "no/such/tensor"}


def _weight_a_number(tensors, tree):
    model, key = _first_weight(tree)
    model[key] = 3


def _rng_torch_short(tensors, tree):
    tensors[tree["rng"]["torch"]["$t"]] = torch.zeros(10, dtype=torch.uint8)


def _raw_tree(text):
    def damage(path):
        tensors, _ = read_tree(path)
        write_tree(path, tensors, None, raw_tree=text)
    return damage


CHECKPOINT_CASES = {
    "epoch a huge negative float": (_set("epoch", -1e9), "epoch: must be an integer in [0, 10000000], got -1000000000.0"),
    "epoch negative": (_set("epoch", -1), "epoch: must be an integer in [0, 10000000], got -1"),
    "epoch huge": (_set("epoch", 10 ** 12), "epoch: must be an integer"),
    "epoch a string": (_set("epoch", "3"), "epoch: must be an integer"),
    "step negative": (_set("step", -5), "step: must be an integer in [0, 10000000000000]"),
    "history an object": (_set("history", {}), "history: must be a list of objects, got object"),
    "history rows not objects": (_set("history", [1, 2]), "history[0]: must be an object, got integer"),
    "best a string": (_set("best", "low"), "best: must be a number or null"),
    "modules a list": (_set("modules", []), "modules: must be a JSON object, got array"),
    "a weight that is a number": (_edit_tree(_weight_a_number), "must be a tensor, got integer"),
    "all-NaN weights": (_edit_tree(_nan_weights), "values are NaN or infinite"),
    "one infinite weight": (_edit_tree(_one_inf), "1 of"),
    "a reference to a missing tensor": (_edit_tree(_missing_tensor), "refers to a tensor the file does not hold"),
    "a malformed $f": (_set("best", {"$f": "huge"}), "malformed {\"$f\""),
    "a malformed $d": (_set("optimizers", {"$d": [[1]]}), "malformed {\"$d\""),
    "rng of another size": (_edit_tree(_rng_torch_short), "rng.torch: must be a uint8 tensor"),
    "python rng not a state": (_set("rng", {"python": [3, [1, 2], None]}), "rng.python"),
    "tree nested 50000 deep": (_raw_tree("[" * 50_000 + "]" * 50_000), "nested deeper than 64"),
    "tree not JSON": (_raw_tree("{"), "not valid JSON"),
    "tree not an object": (_raw_tree("[1, 2]"), "must hold a JSON object, got array"),
    "truncated file": (lambda p: p.write_bytes(p.read_bytes()[:1000]), "not a learnloop checkpoint or truncated"),
    "no tree": (lambda p: save_file(read_tree(p)[0], str(p)), "no state tree"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_CASES))
def test_corrupt_checkpoint_is_one_line_naming_file_and_field(run, case):
    damage, fragment = CHECKPOINT_CASES[case]
    path = _ckpt(run)
    damage(path)
    with pytest.raises(CorruptFileError) as e:
        load_state(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and fragment in message and "\n" not in message, message


def test_nan_weights_and_bad_epoch_refused_by_resume_through_the_cli(capsys, run):
    _edit_tree(_nan_weights)(_ckpt(run))
    code, _, err = run_cli(capsys, "resume", run)
    assert code == 2
    assert_ends_with_error_line(err, "last.safetensors", "modules.model.", "NaN or infinite")


@pytest.mark.parametrize("epoch", [-1_000_000_000, -1e9, 10 ** 15])
def test_resume_from_an_impossible_epoch_is_refused_not_looped(run, epoch):
    _set("epoch", epoch)(_ckpt(run))
    done = _cli_child("resume", run, timeout=180)
    assert done.returncode == 2, done.stderr[-2000:]
    assert_ends_with_error_line(done.stderr, "last.safetensors", "epoch: must be an integer")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_checkpoint_that_is_not_a_regular_file(tmp_path):
    for name, make in (("fifo", os.mkfifo), ("zero", lambda p: os.symlink("/dev/zero", p)), ("dir", os.mkdir)):
        path = tmp_path / f"{name}.safetensors"
        make(path)
        with pytest.raises(CorruptFileError, match=f"{name}.safetensors: not a regular file"):
            load_state(path)


def test_required_training_keys(tmp_path):
    path = tmp_path / "c.safetensors"
    save_state(path, {"modules": {"model": {"w": torch.zeros(2)}}, "epoch": 1})
    assert load_state(path)["epoch"] == 1                           # a partial state is fine by default
    with pytest.raises(CorruptFileError, match="optimizers: missing"):
        load_state(path, require=TRAINING_STATE_KEYS)


def test_a_real_training_state_passes_the_schema(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"modules": {"model": model.state_dict()}, "optimizers": {"main": opt.state_dict()}, "schedules": {},
             "scaler": {}, "task": {}, "callbacks": {}, "rng": rng_state(), "epoch": 3, "step": 30, "best": math.inf,
             "history": [{"epoch": 1, "val_loss": math.nan}], "stop_reason": None, "improved": True}
    save_state(tmp_path / "s.safetensors", state)
    back = load_state(tmp_path / "s.safetensors", require=TRAINING_STATE_KEYS)
    assert back["epoch"] == 3 and back["best"] == math.inf and math.isnan(back["history"][0]["val_loss"])


# --- a state that does not fit the model ------------------------------------------------------------------
def test_load_module_state_refuses_what_does_not_fit(tmp_path):
    f = tmp_path / "w.safetensors"
    small = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    other = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    with pytest.raises(CorruptFileError, match=r"w.safetensors: model.0.weight: weights do not fit this model "
                                               r"\(shape \(4, 3\) in the file, \(5, 3\) in the model"):
        load_module_state(other, small.state_dict(), f)
    with pytest.raises(CorruptFileError, match="missing 2.weight, 2.bias"):
        load_module_state(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
                          {k: v for k, v in small.state_dict().items() if k.startswith("0.")}, f)
    with pytest.raises(CorruptFileError, match="unexpected extra"):
        load_module_state(small, {**small.state_dict(), "extra": torch.zeros(1)}, f)
    with pytest.raises(CorruptFileError, match="must be a state dict"):
        load_module_state(small, [1, 2], f)
    bad = {k: v.clone() for k, v in small.state_dict().items()}
    bad["2.bias"][1] = math.nan
    with pytest.raises(CorruptFileError, match=r"model.2.bias: 1 of 2 values are NaN"):
        load_module_state(small, bad, f)
    target = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    load_module_state(target, small.state_dict(), f)                # what fits loads, exactly
    for a, b in zip(target.state_dict().values(), small.state_dict().values()):
        assert torch.equal(a, b)


def test_load_optimizer_state_refuses_another_shape(tmp_path):
    f = tmp_path / "c.safetensors"

    def trained(model):
        opt = torch.optim.Adam(model.parameters())
        model(torch.randn(2, 3)).sum().backward()
        opt.step()
        return opt

    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 4)
    with pytest.raises(CorruptFileError, match=r"optimizer.state.0.exp_avg: has shape \(2, 3\), the parameter has "
                                               r"\(4, 3\)"):
        load_optimizer_state(torch.optim.Adam(b.parameters()), trained(a).state_dict(), f)
    two_groups = torch.optim.Adam([{"params": [a.weight]}, {"params": [a.bias]}])
    with pytest.raises(CorruptFileError, match="parameter groups do not match"):
        load_optimizer_state(two_groups, trained(torch.nn.Linear(3, 2)).state_dict(), f)
    with pytest.raises(CorruptFileError, match="must be an optimizer state dict"):
        load_optimizer_state(torch.optim.Adam(a.parameters()), {"state": []}, f)
    ref = trained(torch.nn.Linear(3, 2))
    mine = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    load_optimizer_state(mine, ref.state_dict(), f)
    assert torch.equal(mine.state_dict()["state"][0]["exp_avg"], ref.state_dict()["state"][0]["exp_avg"])


def test_read_json_accepts_symlinks_to_regular_files(tmp_path):
    (tmp_path / "real.json").write_text('{"a": 1}')
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    assert read_json(tmp_path / "link.json") == {"a": 1}
