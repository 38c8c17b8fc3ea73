"""Shared fixtures: a micro world and a micro θ0 (seconds, not the 10-minute default), from sena_fixtures.micro."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from sena_cli.config import Params, params_from_dict
from sena_fixtures import micro
from sena_fixtures.micro import MICRO, full_params_yaml  # noqa: F401 - tests import these from here

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESEARCH = Path(__file__).resolve().parents[1] / "research"


@pytest.fixture(scope="session")
def research():
    """research/NAME.py as a module (research/ is scripts run by path, not a package): research("probe")."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, RESEARCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(autouse=True)
def _default_limits():
    """Each test starts and ends with the default read limits: a CLI run in-process installs its
    params' limits (`load_params`), which must not leak into the next test."""
    from sena_cli import bounded

    bounded.configure(bounded.Limits())
    yield
    bounded.configure(bounded.Limits())


@pytest.fixture(scope="session")
def micro_dict() -> dict:
    return micro.micro_dict()


@pytest.fixture(scope="session")
def micro_params(micro_dict) -> Params:
    return params_from_dict(micro_dict)


@pytest.fixture(scope="session")
def micro_project(tmp_path_factory, micro_dict) -> Path:
    """A project folder with params.yaml, the micro world and a trained micro θ0 (models/iter0)."""
    return micro.build_micro_project(tmp_path_factory.mktemp("project"), micro_dict)


# ---------------------------------------------------------------- tiers and two workers (make test, make test-fast)

# Left out of `make test-fast` besides what is marked slow in its own file: one list, so the tiers are
# decided where they were measured (`pytest --durations=0`, one folder at a time, 2 cores shared with
# other work, 2026-12-02). A file, a test of a file (all its parameters), or one parameter of a test.
SLOW = {
    "tests/robustness/test_bounded.py::test_pope_eval_memory_does_not_grow_with_the_file": "sena eval on 11,000 "
    "scripted POPE questions under tracemalloc: 37 s",
    "tests/test_families.py": "three real-shaped families built and run through every stage: fixtures of "
                              "18-62 s, two torchrun qa runs of 35-39 s",
    "tests/test_travel.py::test_pool_add_links_refuses_in_one_line_and_is_idempotent": "11 dvc and sena commands "
    "in subprocesses: 13.7 s (2026-12-03, `make test-fast`)",
    "tests/test_tracked.py::test_a_run_id_changes_with_exactly_the_keys_the_stage_tracks": "4 stages, 18-22 s each",
    "tests/stages/test_base_pointer.py::test_a_hub_id_in_the_local_cache_is_stored_as_is": "21 s",
    "tests/stages/test_base_pointer.py::test_an_unreachable_hub_id_fails_fast_in_one_line": "19 s",
    "tests/stages/test_report.py::test_the_page_stays_small_for_big_photos[image]": "24 s",
    "tests/test_launch.py::test_stages_run_by_hand_and_under_a_launcher_leave_dvc_repro_nothing_to_rerun":
        "a DVC project on the micro world: 4 repros, 3 stages by hand: 53 s in `make test` (2026-12-03), "
        "155-270 s on a loaded machine",
    "tests/test_launch.py::test_a_real_torchrun_launcher_runs_qa_on_two_processes_as_one_would":
        "torchrun, 2 ranks: 21 s in `make test` (2026-12-03), 58-62 s on a loaded machine",
    "tests/test_travel.py::test_a_run_with_added_photos_pushed_to_s3_pulls_into_a_clone_elsewhere_with_nothing_to_rerun":
        "a one-iteration micro run, pushed to S3, cloned, pulled, repro'd: 127-138 s in `make test` (2026-12-03); "
        "218-313 s on a loaded machine (its `dvc repro` of 13 stages is mostly each stage's imports)",
    "tests/robustness/test_bounded.py::test_a_sampled_image_replaced_by_a_fifo_fails_at_once_instead_of_hanging":
        "`sena noise` in a subprocess (a hang must not hang the suite): 16-19 s alone, 27 s on a loaded machine",
    # 2026-12-04, `make test-fast` on a quiet machine (`--durations=0`): the fast tier's tests of 2 s or more
    # besides the benchmark scripts' tiny runs, which must stay in it
    "tests/stages/test_qa.py::test_killed_qa_resumes_without_redoing_finished_chunks": "`sena qa` in a "
    "subprocess, killed and rerun: 9.1 s",
    "tests/stages/test_report.py::test_report_is_self_contained_and_renders_in_headless_chromium": "a run of "
    "every stage, then Chromium: 6.5 s with its fixture",
    "tests/stages/test_report.py::test_the_page_stays_small_for_big_photos[pixel_values]": "2.1 s",
    "tests/test_cli.py::test_train_without_pairs_is_one_line_naming_the_missing_file": "`sena train` in a "
    "subprocess: 3.2 s",
    "tests/stages/test_train.py::test_checkpoints_are_removed_after_the_save_unless_kept": "2.9 s",
    "tests/test_deps.py::test_a_stage_s_code_changes_only_its_own_fingerprint": "2.9 s",
    "tests/test_deps.py::test_shared_code_changes_every_fingerprint_that_runs_it": "2.2 s",
    "tests/robustness/test_bounded.py::test_a_jsonl_file_is_streamed_not_held": "2.7 s",
    "tests/world/test_scenes.py::test_cooccurrence_is_graded_and_the_hard_tail_sits_among_partners": "2.4 s",
    "tests/stages/test_headlines.py::test_dvc_plots_draw_every_headline_of_the_run": "`dvc plots` in a "
    "subprocess: 2.0 s",
    # and of 1.4-1.8 s (`make test-fast` took 116-120 s in clean clones at cbad724 and f507de1)
    "tests/stages/test_train.py::test_theta_k_is_saved_in_the_base_dtype_unless_told": "1.8 s",
    "tests/test_tracked.py::test_the_read_finder_sees_through_aliases_and_sections": "1.8 s",
    "tests/robustness/test_bounded.py::test_a_trickling_judge_is_bounded_by_one_deadline_for_all_tries": "1.5 s",
    "tests/stages/test_train.py::test_an_interrupted_run_resumes_from_its_checkpoint": "1.5 s",
    "tests/test_ranks.py::test_a_wait_lasts_as_long_as_the_awaited_rank_is_alive": "1.5 s",
    "tests/stages/test_train.py::test_the_trainer_holds_no_second_model": "1.4 s",
}

# Files whose tests take minutes (the reduced pipeline run, ZeRO-2/3 under torchrun, the model families, the
# benchmark scripts' tiny runs): collected first, so that under `pytest -n 2` the workers start on them at once
# instead of one finding them left at the end.
LONG_FIRST = ("tests/test_pipeline.py", "tests/test_deepspeed.py", "tests/test_families.py",
              "tests/test_benchmark_scripts.py", "tests/robustness/test_interrupt.py", "tests/test_travel.py")


@pytest.hookimpl(tryfirst=True)  # before -m/-k deselect: the slow mark must be there when `-m "not slow"` looks
def pytest_collection_modifyitems(config, items):
    modules = {item.nodeid.split("::", 1)[0]: item.module for item in items if getattr(item, "module", None)}
    for key in SLOW:  # a renamed test must not slip into the fast tier unnoticed
        path, _, name = key.partition("::")
        if name and path in modules and not hasattr(modules[path], name.split("[", 1)[0]):
            raise pytest.UsageError(f"tests/conftest.py: SLOW names {key}, which no longer exists; update the list")
    for item in items:
        if {item.nodeid, item.nodeid.split("[", 1)[0], item.nodeid.split("::", 1)[0]} & SLOW.keys():
            item.add_marker(pytest.mark.slow)
    rank = {path: i for i, path in enumerate(LONG_FIRST)}
    order = {id(item): i for i, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(item.nodeid.split("::", 1)[0], len(rank)), order[id(item)]))


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's own, which would answer first
def pytest_xdist_make_scheduler(config, log):
    """Under `pytest -n N`: a file's tests stay on one worker, in file order (a module fixture such as the
    pipeline's reduced run is built once; test_pipeline.py's tests build on each other), except the benchmark
    scripts' tiny runs, each its own unit of work. Units go out in collection order (--no-loadscope-reorder)."""
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return nodeid if path.endswith("test_benchmark_scripts.py") else path

    return FileScheduling(config, log)
