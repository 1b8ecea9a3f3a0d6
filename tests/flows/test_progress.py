"""Task costs, Dask priorities and the cost-weighted ETA of the evaluation flow."""

from __future__ import annotations

from flows.evaluate import _cost, _Job, _priority, _Progress
from pipeline.chunks import ChunkOutcome
from ride.attacks import make_attack
from ride.defenders import make_defender

PGD = make_attack("pgd")
BPDA = make_attack("bpda", iters=10)
BPDA_EOT = make_attack("bpda-eot", iters=10, eot=4)
MEDIAN = make_defender("median")
RIDE = make_defender("ride", iters=100, checkpoints=2)


def test_costs_count_defender_steps_and_images() -> None:
    assert _cost(_Job(PGD, MEDIAN, 0, 10)) == 10
    assert _cost(_Job(PGD, RIDE, 0, 10)) == 200 * 10
    assert _cost(_Job(BPDA_EOT, RIDE, 0, 5)) == (10 * 4 + 1) * 200 * 5
    assert _cost(_Job(BPDA, MEDIAN, 0, 5)) == (10 * 1 + 1) * 5


def test_defence_chunks_wait_for_their_gray_box_attack_chunk_only() -> None:
    none = make_attack("none")
    assert _Job(PGD, MEDIAN, 0, 10).upstream == _Job(PGD, None, 0, 10)
    assert _Job(PGD, None, 0, 10).upstream is None
    assert _Job(none, MEDIAN, 0, 10).upstream is None  # defends the clean images
    assert _Job(BPDA_EOT, RIDE, 0, 10).upstream is None  # attacks inside the defence task


def test_attack_chunks_run_first_then_the_costliest_defences() -> None:
    jobs = [_Job(PGD, MEDIAN, 0, 10), _Job(PGD, None, 0, 10), _Job(BPDA_EOT, RIDE, 0, 10)]
    ordered = sorted(jobs, key=_priority, reverse=True)
    assert [j.defender for j in ordered] == [None, RIDE, MEDIAN]


def test_eta_weighs_tasks_by_cost_and_ignores_stored_ones() -> None:
    cheap, costly = _Job(PGD, MEDIAN, 0, 10), _Job(PGD, RIDE, 0, 10)
    later, stored = _Job(PGD, RIDE, 10, 20), _Job(PGD, RIDE, 20, 30)
    progress = _Progress([cheap, costly, later, stored])
    assert progress.total_cost == 10 + 3 * 2000
    line = progress.line(stored, ChunkOutcome("skipped", 0.0))
    assert line.startswith("[1/4] ") and "already stored" in line and "eta ?" in line
    line = progress.line(cheap, ChunkOutcome("ran", 1.0, 9, 10))
    assert "9/10 correct in 1.0 s" in line and "eta ?" in line  # too little done to tell
    progress.began -= 100.0  # 100 s for 2010 units of work: 2000 more take about 100 s
    line = progress.line(costly, ChunkOutcome("ran", 99.0, 5, 10))
    eta = float(line.rsplit("eta ", 1)[1].removesuffix(" s)"))
    assert 95 < eta < 105
    assert progress.line(later, None).startswith("[4/4] ")
