import pytest
from hardening_helpers import QUICK, main


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A finished quickstart run (one epoch) that tests copy and damage."""
    root = tmp_path_factory.mktemp("source")
    assert main(["run", QUICK, "--out", str(root), "--epochs", "1"]) == 0
    (folder,) = (root / QUICK).iterdir()
    return folder
