"""``make gpu-check DRY_RUN=1``: the GPU check's own script, tiny and on the CPU, so it cannot rot.

The dry run is run once (as ``make`` runs it: the script with ``--dry-run``
and an output directory) and its gpu-check.json and gpu-check.md are read
back: every section present, the CPU figures numbers, and on a machine without
an NVIDIA GPU every GPU measurement recorded as not available, with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from descend.engines import is_available, nvidia_gpu_present

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
ENGINES = ("jax", "torch", "tensorflow")
NOT_AVAILABLE = "not available on this machine"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"wrote {out / 'gpu-check.json'} and {out / 'gpu-check.md'}" in proc.stdout
    return json.loads((out / "gpu-check.json").read_text()), (out / "gpu-check.md").read_text()


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value >= 0


def check_gpu_entry(entry: dict) -> None:
    """Without a GPU: not available, with a reason. With one: measured, or not available to that engine."""
    if nvidia_gpu_present():
        assert entry["status"] == "ok" or entry["status"].startswith(NOT_AVAILABLE), entry
    else:
        assert entry["status"].startswith(NOT_AVAILABLE + ": ") and len(entry["status"]) > len(NOT_AVAILABLE) + 5


def check_rows(rows: list[dict], figures: tuple[str, ...]) -> list[dict]:
    """Check each engine's GPU entry and CPU figures; return the CPU rows of the installed engines."""
    assert [(r["engine"], r["device"]) for r in rows] == [(e, d) for e in ENGINES for d in ("cpu", "gpu")]
    for row in rows:
        if row["device"] == "gpu":
            check_gpu_entry(row)
    measured = [r for r in rows if r["device"] == "cpu" and is_available(r["engine"])]
    for row in measured:
        assert row["status"] == "ok", row
        assert all(is_number(row[k]) for k in figures), row
    return measured


def test_sections_are_all_there(dry_run):
    report, md = dry_run
    assert report["dry_run"] is True and "install" not in report  # a dry run installs nothing
    for key in ("machine", "gpu_tests", "bench", "curriculum"):
        assert key in report and not str(report[key].get("status", "")).startswith("error"), report[key]
    for heading in ("# GPU check (dry run", "## Machine and libraries", "## gpu-marked tests", "## descend bench",
                    "## The curriculum's configuration",
                    "| engine | CPU/GPU speedup (training s) | CPU/GPU speedup (s/epoch) |"):
        assert heading in md


def test_machine_records_gpu_and_library_versions(dry_run):
    machine = dry_run[0]["machine"]
    assert machine["cpus"] >= 1 and machine["descend"] == str(ROOT / "src")
    if not nvidia_gpu_present():
        assert machine["nvidia_smi"]["status"].startswith(NOT_AVAILABLE)
    for name in ENGINES:
        if is_available(name):
            info = machine[name]
            assert info["version"], info
            if not nvidia_gpu_present():
                assert info["gpu"].startswith(NOT_AVAILABLE), info


def test_gpu_marked_tests_were_run_and_counted(dry_run):
    tests = dry_run[0]["gpu_tests"]
    outcomes = [t["outcome"] for t in tests["tests"]]
    assert tests["failed"] == 0 and tests["exit_status"] == 0
    assert len(outcomes) == tests["passed"] + tests["skipped"] > 0
    assert sum(t["test"].startswith("tests.test_gpu_cpu_parity::") for t in tests["tests"]) == len(ENGINES)
    assert "tests/test_gpu_cpu_parity.py" in tests["command"] and "tests/test_gpu_check.py" not in tests["command"]
    if not nvidia_gpu_present():
        assert set(outcomes) == {"skipped"} and all(t["message"] for t in tests["tests"])
    assert f"{tests['passed']} passed, 0 failed, {tests['skipped']} skipped" in dry_run[1]


def test_bench_has_cpu_figures_and_gpu_entries(dry_run):
    report, md = dry_run
    bench = report["bench"]
    assert bench["command"].startswith("descend bench ") and "--devices cpu,gpu" in bench["command"]
    for row in check_rows(bench["rows"], ("compile_s", "epoch_s", "samples_per_s", "test_error", "ratio")):
        assert row["epoch_s"] > 0 and row["test_error"] <= 1 and row["ratio"] >= 1
        assert f"| {row['engine']} | cpu | {row['compile_s']:.2f} | {row['epoch_s']:.4f} |" in md
    jax_gpu = next(r for r in bench["rows"] if r["engine"] == "jax" and r["device"] == "gpu")
    if is_available("jax") and jax_gpu["status"] != "ok":
        assert 'pip install "descend[cuda]"' in jax_gpu["status"]


def test_curriculum_is_timed_on_every_engine_and_device(dry_run):
    report, md = dry_run
    cur = report["curriculum"]
    assert cur["config"] == {"hidden": [16], "activation": "relu", "optimizer": "sgd", "lr": 0.1, "batch_size": 20,
                             "epochs": 2, "normalize": "standardize", "train_rows": cur["config"]["train_rows"],
                             "features": 64, "dtype": "float32"}
    for run in check_rows(cur["runs"], ("train_s", "epoch_s", "first_epoch_extra_s", "final_cost", "test_error")):
        assert run["train_s"] >= run["epoch_s"] > 0
        assert f"| {run['engine']} | cpu | {run['train_s']:.2f} |" in md
    for speedup in cur["speedups"]:
        if not nvidia_gpu_present():
            assert speedup["status"].startswith(NOT_AVAILABLE) and "speedup" not in speedup
            assert f"| {speedup['engine']} | {NOT_AVAILABLE}" in md


def test_the_full_check_trains_the_curriculum_configuration():
    gpu_check = load_script()
    cfg = gpu_check.curriculum_config(gpu_check.FULL, gpu_check.FULL.dataset)
    assert (cfg.dataset, cfg.hidden, cfg.activation, cfg.optimizer, cfg.batch_size, cfg.epochs, cfg.normalize,
            cfg.schedule, cfg.early_stopping) == ("mnist", (300,), "relu", "sgd", 500, 20, "standardize", "constant",
                                                  "none")


def test_make_target_runs_the_script(tmp_path):
    dry = subprocess.run(["make", "-n", "gpu-check", "DRY_RUN=1", f"OUT={tmp_path}"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert f'benchmarks/gpu_check.py --dry-run --out "{tmp_path}"' in dry
    full = subprocess.run(["make", "-n", "gpu-check", f"OUT={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    assert f'.venv-gpu/bin/python benchmarks/gpu_check.py --install --wheels "wheels" --out "{tmp_path}"' in full


def test_gpu_measurements_render_in_the_markdown(dry_run):
    """The GPU branch of the report, which only a GPU machine reaches: CPU figures stand in for GPU ones."""
    gpu_check = load_script()
    report = json.loads(json.dumps(dry_run[0]))
    report["machine"]["nvidia_smi"] = {"status": "ok", "gpus": [{"name": "Some GPU", "driver_version": "1.2",
                                                                 "memory.total": "80 GiB", "compute_cap": "9.0"}]}
    for section in (report["bench"]["rows"], report["curriculum"]["runs"]):
        cpu = {r["engine"]: r for r in section if r["device"] == "cpu"}
        for row in section:
            if row["device"] == "gpu":
                row.update({k: v for k, v in cpu[row["engine"]].items() if k != "device"})
    runs = {(r["engine"], r["device"]): r for r in report["curriculum"]["runs"]}
    for s in report["curriculum"]["speedups"]:
        s.update(status="ok", speedup=runs[s["engine"], "cpu"]["train_s"] / runs[s["engine"], "gpu"]["train_s"],
                 epoch_speedup=1.0)
    md = gpu_check.markdown(report)
    assert "| GPU | Some GPU (driver 1.2, 80 GiB, compute 9.0) |" in md
    for row in report["bench"]["rows"]:
        assert f"| {row['engine']} | gpu | {row['compile_s']:.2f} | {row['epoch_s']:.4f} |" in md
    for engine in ENGINES:
        assert f"| {engine} | gpu | {runs[engine, 'gpu']['train_s']:.2f} |" in md
        assert f"| {engine} | 1.0x | 1.0x |" in md


def test_a_cpu_only_torch_counts_as_a_missing_gpu_build():
    missing = load_script().missing_gpu_builds()
    if is_available("torch"):
        import torch

        assert ("a CUDA build of torch" in missing) == (torch.version.cuda is None)
    else:
        assert "a CUDA build of torch" in missing


def test_install_uses_the_wheels_folder_alone_when_it_holds_wheels(tmp_path):
    gpu_check = load_script()
    online = gpu_check.install_command(tmp_path, replace_cpu_builds=False)
    assert "--no-index" not in online and "--ignore-installed" not in online
    assert online[:4] == [sys.executable, "-m", "pip", "install"]
    assert f"{ROOT}[cuda,torch]" in online and "tensorflow[and-cuda]>=2.16" in online
    (tmp_path / "jax-0.0-py3-none-any.whl").write_bytes(b"")
    offline = gpu_check.install_command(tmp_path, replace_cpu_builds=True)
    at = offline.index("--find-links")
    assert "--no-index" in offline and offline[at + 1] == str(tmp_path) and "--ignore-installed" in offline
    assert offline[-3:] == online[-3:]
