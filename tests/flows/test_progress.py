"""Task costs, Dask priorities, the task plan and the cost-weighted ETA of the evaluation flow."""

from __future__ import annotations

from pathlib import Path

from flows.evaluate import _Progress
from pipeline.config import RunConfig
from pipeline.plan import ChunkOutcome, Task, plan
from pipeline.run import Run
from ride.attacks import make_attack
from ride.defenders import make_defender
from storage.layout import RunLayout

PGD = make_attack("pgd")
BPDA = make_attack("bpda", iters=10)
BPDA_EOT = make_attack("bpda-eot", iters=10, eot=4)
MEDIAN = make_defender("median")
RIDE = make_defender("ride", iters=100, checkpoints=2)


def attack_chunk(attack: object, *defenders: object, start: int = 0, stop: int = 10) -> Task:
    return Task.attack_chunk(attack, start, stop, defenders)  # type: ignore[arg-type]


def defence_chunk(attack: object, defender: object, start: int = 0, stop: int = 10) -> Task:
    upstream = attack_chunk(attack, start=start, stop=stop)
    return Task.defence_chunk(attack, defender, start, stop, upstream)  # type: ignore[arg-type]


def white_box(attack: object, defender: object, start: int = 0, stop: int = 10) -> Task:
    return Task.defence_chunk(attack, defender, start, stop)  # type: ignore[arg-type]


def planned(settings: dict[str, object], n_images: int) -> list[Task]:
    cfg = RunConfig.from_mapping(settings)
    return plan(Run.of(RunLayout(Path("unused")), cfg, n_images))


def test_costs_count_attack_passes_defender_steps_classifications_and_images() -> None:
    # PGD: 10 forward+backward passes, 2 predictions, the median and its classification.
    assert attack_chunk(PGD, MEDIAN).cost == (2 * 10 + 2 + (1 + 1)) * 10
    assert defence_chunk(PGD, RIDE).cost == (200 + 2) * 10
    assert white_box(BPDA_EOT, RIDE, 0, 5).cost == (10 * 4 + 1) * (200 + 2) * 5
    assert white_box(BPDA, MEDIAN, 0, 5).cost == (10 + 1) * (1 + 2) * 5


def test_attack_chunks_run_first_then_the_costliest_defences() -> None:
    tasks = [defence_chunk(PGD, MEDIAN), attack_chunk(PGD), white_box(BPDA_EOT, RIDE)]
    ordered = sorted(tasks, key=lambda task: task.priority, reverse=True)
    assert ordered == [tasks[1], tasks[2], tasks[0]]


def test_the_plan_runs_filters_in_attack_chunks_and_ride_in_its_own_tasks() -> None:
    tasks = planned(
        {
            "limit": 60,
            "chunk_size": 16,
            "attacks": ["none", "pgd", "bpda"],
            "defenders": ["none", "median", "ride"],
        },
        60,
    )
    attack_chunks = [t for t in tasks if t.is_attack_chunk]
    assert {t.attack.id for t in attack_chunks} == {"none", PGD.id}  # gray-box and none only
    assert {d.id for t in attack_chunks for d in t.defenders} == {"none", MEDIAN.id}
    # Each (attack, defender) covers the 60 rows exactly once, in tasks of 16 rows.
    covered: dict[tuple[str, str], list[int]] = {}
    for task in tasks:
        for attack, defender, start, stop in task.results():
            covered.setdefault((attack.id, defender.id), []).extend(range(start, stop))
            assert stop - start == min(16, 60 - start)
    assert len(covered) == 3 * 3 and all(sorted(v) == list(range(60)) for v in covered.values())
    # A RIDE chunk of a gray-box attack waits for the attack chunk holding its rows; under
    # BPDA (white-box) it waits for nothing: it attacks inside.
    for task in tasks:
        if not task.is_attack_chunk and task.attack.adaptive:
            assert task.upstream is None
        elif not task.is_attack_chunk:
            assert task.upstream is not None and task.upstream.is_attack_chunk
            assert task.upstream.start <= task.start < task.stop <= task.upstream.stop


def test_eta_weighs_tasks_by_cost_and_ignores_stored_ones() -> None:
    cheap, costly = attack_chunk(PGD, MEDIAN, stop=5), defence_chunk(PGD, RIDE)
    later, stored = defence_chunk(PGD, RIDE, 10, 20), defence_chunk(PGD, RIDE, 20, 30)
    progress = _Progress([cheap, costly, later, stored])
    assert progress.total_cost == 120 + 3 * 2020
    [line] = progress.lines(stored, ChunkOutcome("skipped", 0.0))
    assert line.startswith("[1/4] ") and "already stored" in line and "eta ?" in line
    median = ChunkOutcome("ran", 1.0, 4, 5, defender_id=MEDIAN.id)
    [line] = progress.lines(cheap, ChunkOutcome("ran", 1.0, defences=(median,)))
    assert f"{PGD.id} x {MEDIAN.id} rows 0-5: 4/5 correct in 1.0 s" in line
    assert "eta ?" in line  # too little done to tell
    progress.began -= 100.0  # 100 s for 2140 units of work: 2020 more take about 94 s
    [line] = progress.lines(costly, ChunkOutcome("ran", 99.0, 5, 10))
    eta = float(line.rsplit("eta ", 1)[1].removesuffix(" s)"))
    assert 90 < eta < 99
    [line] = progress.lines(later, None)
    assert line.startswith("[4/4] ") and "FAILED" in line


def test_the_plan_leaves_out_the_pairs_an_attack_cannot_attack() -> None:
    """bpda-surrogate attacks the RIDE family only: no task for it against none or median;
    the other attacks keep every defender."""
    cfg = RunConfig.from_mapping(
        {
            "limit": 20,
            "chunk_size": 10,
            "attacks": ["none", "bpda-surrogate", "bpda"],
            "defenders": ["none", "median", "ride"],
        }
    )
    run = Run.of(RunLayout(Path("unused")), cfg, 20)
    pairs = {
        (attack.id.split("-eot")[0], defender.name)
        for task in plan(run)
        for attack, defender, _, _ in task.results()
    }
    assert pairs == {
        ("none", "none"), ("none", "median"), ("none", "ride"),
        ("bpda-eps0.1-step0.02-it10", "none"), ("bpda-eps0.1-step0.02-it10", "median"),
        ("bpda-eps0.1-step0.02-it10", "ride"), ("bpda-surrogate", "ride"),
    }  # fmt: skip
    assert [(a.name, d.name) for a, d in run.left_out_pairs()] == [
        ("bpda-surrogate", "none"),
        ("bpda-surrogate", "median"),
    ]
