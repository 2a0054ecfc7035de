import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("LEARNLOOP_TEST_THREADS", "1")))

FASHION = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


@pytest.fixture
def needs_fashion():
    if not os.path.exists(FASHION):
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
