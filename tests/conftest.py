"""Shared fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def _dataset_cache(tmp_path_factory):
    """Downloads and cached copies go to a per-session folder, never to ~/.cache."""
    old = os.environ.get("DESCEND_CACHE")
    os.environ["DESCEND_CACHE"] = str(tmp_path_factory.mktemp("descend-cache"))
    yield
    if old is None:
        os.environ.pop("DESCEND_CACHE", None)
    else:
        os.environ["DESCEND_CACHE"] = old


@pytest.fixture(scope="session")
def mirror_dir() -> Path:
    """The DESCEND_MIRROR folder with real data (``mnist/``, ``fer2013/``); CI sets it."""
    from descend.data.download import mirror_list

    for entry in mirror_list():
        path = Path(entry).expanduser()
        if not entry.startswith(("http://", "https://")) and path.is_dir():
            return path.resolve()
    pytest.fail("real-data tests need DESCEND_MIRROR set to a folder holding mnist/ and "
                "fer2013/ (a local copy of the files: <mirror>/mnist/..., <mirror>/fer2013/fer2013.csv.gz)")
