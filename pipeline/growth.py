"""A run that grows: ``ride run`` with a larger ``--limit`` on an existing run folder.

CPU verdicts take hours and a session's machine does not keep its run folders, so a run is
made to grow rather than be started over: the first ``limit`` images of a run are the first
images of any larger run of the same settings, and the defender's draws are seeded by the
image's index, not by the run's size (an attack that draws random points, APGD's later
restarts, draws one generator per chunk: its images depend on the task sizes, which a grown
run keeps). Growing a run from ``before`` to ``after`` images therefore keeps

- its **id**: ``run_id`` hashes ``limit`` as the run's first extent (``first_limit``), so
  the rows already stored stay the run's rows;
- its **tasks**: their sizes come from the first extent (:func:`pipeline.plan.sizing_images`),
  so each finished task is found again and only the new images make new tasks;
- its **arrays**, resized to hold the new images (:meth:`storage.images.ImageStore.ensure_array`).

``run.toml`` records the new ``limit``, the ``first_limit`` and one ``[[growth]]`` entry per
growth (:func:`storage.runconfig.record_growth`). A run is never shrunk (a smaller ``limit``
is refused in one line), and it grows only when its stored tasks are whole: each task size
must divide the images it holds (a run started at a power of two images always can).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pipeline.config import RunConfig
from pipeline.plan import task_sizes
from pipeline.run import Run
from storage.images import ImageStore
from storage.kept import restored_rows
from storage.layout import RunLayout
from storage.runconfig import RunConfigMismatch, check_same_run, read_run_config


@dataclass(frozen=True)
class Growth:
    """A run folder of ``before`` images asked for ``after``."""

    before: int
    after: int


def adopt_recorded(cfg: RunConfig, layout: RunLayout) -> tuple[RunConfig, Growth | None]:
    """``cfg`` as the run folder ``layout`` holds it: with the recorded ``first_limit`` of a
    run grown before, and with a :class:`Growth` when ``cfg`` asks for more images than the
    folder's run holds. :class:`~storage.runconfig.RunConfigMismatch` (one line) when it asks
    for fewer, or when anything else that identifies the run differs."""
    path = layout.run_toml
    if not path.exists() or cfg.first_limit is not None:
        return cfg, None
    recorded = read_run_config(path)
    before, first = recorded.get("limit"), recorded.get("first_limit")
    if not isinstance(before, int) or cfg.limit is None or cfg.limit == before:
        return (cfg if first is None else replace(cfg, first_limit=first)), None
    if cfg.limit < before:
        raise RunConfigMismatch(
            f"{layout.root} holds a run of limit {before}; a run grows but never shrinks: give "
            f"--limit {before} or more, or another run directory"
        )
    grown = replace(cfg, first_limit=first if isinstance(first, int) else before)
    check_same_run(path, grown.run_record(), grown.identity() - {"limit", "first_limit"})
    return grown, Growth(before, cfg.limit)


def growth_problem(run: Run) -> str | None:
    """Why ``run``, holding its ``n_images`` images, cannot grow: a task size that does not
    divide them (its last task would be cut in two; :func:`pipeline.plan.task_sizes`); None
    when every stored task stays whole."""
    held = run.n_images
    for what, rows in task_sizes(run).items():
        if held % rows:
            return (
                f"cannot grow a run of {held} images: its {what} take {rows} images each and "
                f"{held} is not a multiple of {rows}; start a run meant to grow at a multiple "
                "of its task sizes (a power of two images), or give --chunk-size"
            )
    return None


def held_images(layout: RunLayout) -> int | None:
    """The images the run in ``layout`` holds: its ``clean`` array's rows, or for a run
    restored from kept results (``storage.kept``) and not yet resumed, the rows restored;
    None before either exists."""
    held = ImageStore(layout).held_images()
    if held is None:
        held = restored_rows(layout) or None
    return held


def check_growth(cfg: RunConfig, growth: Growth | None, layout: RunLayout) -> None:
    """:class:`~storage.runconfig.RunConfigMismatch` when ``growth`` of the run in ``layout``
    cannot be made (:func:`growth_problem` on the images it holds)."""
    held = held_images(layout)
    if growth is None or held is None:
        return
    problem = growth_problem(Run.of(layout, cfg, held))
    if problem is not None:
        raise RunConfigMismatch(f"{layout.root}: {problem}")
