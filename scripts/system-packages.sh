#!/usr/bin/env bash
# The Debian packages the test suite needs that pip cannot install, installed by
# `make test` when missing:
#   chromium    - the browser that `descend serve`'s browser tests drive (Playwright
#                 never downloads one);
#   postgresql  - the server binaries (initdb, pg_ctl) of the search-storage test, which
#                 starts its own throwaway server on 127.0.0.1;
#   g++         - the compiler of PyTensor's C backend (the `pytensor` engine).
# Whatever is already present is left alone; nothing is asked of apt-get then.
# PG_LIB_DIR is where Debian puts the versioned PostgreSQL binaries (not on PATH).
set -euo pipefail
PG_LIB_DIR="${PG_LIB_DIR:-/usr/lib/postgresql}"

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "$PG_LIB_DIR/*/bin/initdb" >/dev/null; then
    missing+=(postgresql)
fi
command -v g++ >/dev/null 2>&1 || missing+=(g++)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "make test needs the packages ${missing[*]} and installs them with apt-get," \
         "which this system lacks: install them with its package manager, then run make test again" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ "$EUID" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo DEBIAN_FRONTEND=noninteractive)
else
    echo "make test needs the Debian packages ${missing[*]}, which only root can install:" \
         "run 'apt-get install ${missing[*]}' as root, then run make test again" >&2
    exit 1
fi
echo "installing the Debian packages the tests need: ${missing[*]}"
"${as_root[@]}" apt-get update -qq >/dev/null
"${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
