"""``descend compare``: reproducible, multi-seed comparisons of training configurations."""

from descend.experiments.compare.run import RESULT_FILE, RunTask, execute
from descend.experiments.compare.build import build_study
from descend.experiments.compare.spec import COMPARE_DEFAULTS, PRESETS, RunDef, Study, build_run
from descend.experiments.compare.study import CompareResult, default_workers, load_study, plan, run_compare

__all__ = ["COMPARE_DEFAULTS", "PRESETS", "RESULT_FILE", "CompareResult", "RunDef", "RunTask", "Study", "build_run",
           "build_study", "default_workers", "execute", "load_study", "plan", "run_compare"]
