"""Failure class 3 (command-line part): out-of-range or impossible arguments are one line and exit code 2,
before any folder is made."""

import pytest
import torch

from learnloop.engine.schema import check_device, check_seed
from learnloop.errors import UserError

from hardening_helpers import QUICK, assert_one_error_line, run_cli

CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("args, fragment", [
    (["run", QUICK, "--seed", str(2 ** 64)], "--seed"),
    (["run", QUICK, "--seed", str(2 ** 63)], "--seed"),
    (["run", QUICK, "--seed", "-1"], "--seed"),
    (["run", QUICK, "--seed", "1e3"], "--seed"),
    (["run", QUICK, "--device", "banana"], "--device must be one of cpu, cuda, mps"),
    (["run", QUICK, "--device", ""], "--device must be one of"),
    (["run", QUICK, "--device", "meta"], "--device must be one of"),
    (["run", QUICK, "--device", "cuda:99"], "--device 'cuda:99'"),
    pytest.param(["run", QUICK, "--device", "cuda"], "CUDA is not available",
                 marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    (["run", ""], "unknown recipe ''"),
    (["run", "   "], "unknown recipe '   '"),
    (["run", QUICK, "--epochs", "0"], "--epochs must be >= 1"),
    (["run", QUICK, "--epochs", "-3"], "--epochs must be >= 1"),
    (["run", QUICK, "--epochs", str(10 ** 9)], "--epochs must be <= 100000"),
    (["run", QUICK, "--epochs", str(10 ** 30)], "--epochs must be <= 100000"),
    (["lr-find", QUICK, "--steps", "5"], "--steps"),
    (["lr-find", QUICK, "--steps", "-1"], "--steps"),
    (["lr-find", QUICK, "--steps", str(10 ** 9)], "--steps"),
    (["lr-find", ""], "unknown recipe ''"),
    (["show", ""], "unknown recipe ''"),
])
def test_bad_argument_is_one_line_exit_2_and_makes_nothing(capsys, tmp_path, args, fragment):
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, *args, "--out", out) if args[0] != "show" else run_cli(capsys, *args)
    assert code == 2, err
    assert_one_error_line(err, fragment)
    assert not out.exists()                    # checked before any folder is made


def test_run_without_recipe_is_still_the_quickstart_but_empty_is_not(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "", "--out", tmp_path)
    assert code == 2 and "unknown recipe ''" in err
    assert list(tmp_path.iterdir()) == []


def test_seed_and_device_checks_directly():
    from learnloop import cli
    from learnloop.engine import schema

    assert cli.MAX_SEED == schema.MAX_SEED == 2 ** 63 - 1        # the CLI keeps torch out of `--help`
    assert check_seed(0) == 0 and check_seed(2 ** 63 - 1) == 2 ** 63 - 1
    for bad in (-1, 2 ** 63, True, 1.0, "3"):
        with pytest.raises(UserError, match="must be an integer in"):
            check_seed(bad)
    assert check_device("cpu") == "cpu" and check_device(" cpu ") == "cpu"
    for bad in ("banana", "", "meta", "cpu:x", None, 3):
        with pytest.raises(UserError, match="must be one of cpu, cuda, mps"):
            check_device(bad)
    if not CUDA:
        with pytest.raises(UserError, match="CUDA is not available"):
            check_device("cuda:0")
