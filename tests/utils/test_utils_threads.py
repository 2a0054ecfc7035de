import time

import pytest
import torch

from learnloop.utils.threads import FastestThreads


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("slow_at", [1, 2])
def test_the_trial_keeps_the_faster_count_and_restores_the_callers(two_threads, slow_at):
    seen = []

    def step():
        n = torch.get_num_threads()
        seen.append(n)
        time.sleep(0.02 if n == slow_at else 0.001)
        return n

    with FastestThreads(trials=3) as run:
        results = [run(step) for _ in range(10)]
    assert results == seen
    assert sorted(seen[:6]) == [1, 1, 1, 2, 2, 2]            # the trial: 3 steps on each candidate
    fast = 3 - slow_at
    assert run.chosen == fast and seen[6:] == [fast] * 4
    assert torch.get_num_threads() == 2


def test_a_fixed_count_runs_every_step_on_it(two_threads):
    with FastestThreads(1) as run:
        assert [run(torch.get_num_threads) for _ in range(4)] == [1, 1, 1, 1]
    assert torch.get_num_threads() == 2


def test_one_thread_callers_have_nothing_to_try():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with FastestThreads() as run:
            assert run.chosen == 1 and run.candidates == (1,)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_thread_counts(bad):
    with pytest.raises(ValueError, match="threads"):
        FastestThreads(bad)
