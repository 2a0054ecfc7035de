"""`learnloop predict RUN INPUT...`: a trained run applied to a user's files, one JSON line per input."""

import json
from pathlib import Path

import torch
from PIL import Image

from learnloop.cli import main


def test_predict_images_and_bad_inputs(capsys, tmp_path):
    assert main(["run", "--out", str(tmp_path), "--epochs", "2"]) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    pics = []
    for i in range(2):
        pics.append(tmp_path / f"p{i}.png")
        Image.fromarray(torch.randint(0, 255, (20, 30), dtype=torch.uint8).numpy()).save(pics[-1])
    assert main(["predict", str(folder), *map(str, pics)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["input"] for r in rows] == list(map(str, pics))
    assert all(r["class"] in [str(d) for d in range(10)] and 0 <= r["probability"] <= 1 for r in rows)
    for r in rows:
        probs = [t["probability"] for t in r["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-3 and len(probs) == 3
        assert r["top"][0] == {"class": r["class"], "probability": r["probability"]}

    (tmp_path / "not-an-image.png").write_text("hello")
    for args, message in ([str(folder)], "predict needs inputs: image files"),\
            ([str(folder), str(tmp_path / "missing.png")], "no such image file"),\
            ([str(folder), str(tmp_path / "not-an-image.png")], "not a readable image"),\
            ([str(folder), str(pics[0]), "--checkpoint", "worst"], "best, last"),\
            ([str(tmp_path), str(pics[0])], "not a run folder"):
        assert main(["predict", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)


def test_generate_refuses_recipes_that_do_not_generate_and_bad_options(capsys, tmp_path):
    assert main(["run", "--out", str(tmp_path), "--epochs", "1"]) == 0
    folder = Path(capsys.readouterr().out.strip().splitlines()[-1])
    for args, message in ([str(folder), "a sneaker"], "does not generate images"),\
            ([str(tmp_path), "a sneaker"], "not a run folder"),\
            ([str(folder), "a sneaker", "--n", "x"], "--n"):
        assert main(["generate", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)
