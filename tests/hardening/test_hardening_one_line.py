"""Failure class 9: a user value with a newline or another control character must not split the one-line
error. `cli.main` prints exactly one line whatever the message; values in our messages are quoted."""

import pytest

from learnloop.cli import one_line

from hardening_helpers import QUICK, assert_one_error_line, run_cli

NASTY = ["two\nlines", "carriage\rreturn", "esc\x1b[31mred", "nul\x00byte", "line\u2028separator",
         "para\u2029graph", "next\x85line", "bidi\u202eoverride", "tab\there", "bell\x07", "del\x7f"]


@pytest.mark.parametrize("value", NASTY)
def test_one_line_escapes_every_line_break_and_control_character(value):
    text = one_line(value)
    assert len(text.splitlines()) == 1 and text.isprintable(), repr(text)
    assert "\u202e" not in text


def test_one_line_keeps_ordinary_text():
    assert one_line("unknown recipe 'mlp-ä'; choose from: a, b") == "unknown recipe 'mlp-ä'; choose from: a, b"
    assert one_line("a\nb") == "a\\nb" and one_line("\x1b") == "\\x1b" and one_line("\u2028") == "\\u2028"


@pytest.mark.parametrize("value", NASTY)
@pytest.mark.parametrize("where", ["recipe", "set key", "set value", "seed", "device", "show", "resume", "runs"])
def test_cli_errors_with_control_characters_stay_one_line(capsys, tmp_path, value, where):
    args = {
        "recipe": ["run", value, "--out", tmp_path],
        "set key": ["run", QUICK, "--set", f"{value}=1", "--out", tmp_path],
        "set value": ["run", QUICK, "--set", f"nope{value}", "--out", tmp_path],
        "seed": ["run", QUICK, "--seed", value, "--out", tmp_path],
        "device": ["run", QUICK, "--device", value, "--out", tmp_path],
        "show": ["show", value],
        "resume": ["resume", tmp_path / value],
        "runs": ["runs", "--root", tmp_path / value],
    }[where]
    code, out, err = run_cli(capsys, *args)
    assert code == 2, err
    assert_one_error_line(err)
    assert list(tmp_path.iterdir()) == []


def test_quoted_values_in_messages(capsys, tmp_path):
    code, _, err = run_cli(capsys, "resume", tmp_path / "a b")
    assert_one_error_line(err, f"'{tmp_path / 'a b'}': no such file or folder")
    code, _, err = run_cli(capsys, "run", QUICK, "--device", "x y", "--out", tmp_path)
    assert_one_error_line(err, "got 'x y'")


@pytest.mark.parametrize("value", ["two\nlines", "esc\x1b[0m"])
def test_out_with_control_characters_is_refused(capsys, tmp_path, value):
    """`learnloop run` prints the run folder as its last stdout line: a folder name with a newline would
    break that, so --out must not contain one."""
    code, out, err = run_cli(capsys, "run", QUICK, "--out", tmp_path / value)
    assert code == 2 and out == ""
    assert_one_error_line(err, "--out", "control character")
    assert list(tmp_path.iterdir()) == []
