"""``python -m database_guard MODULE ARGS...``: run ``python -m MODULE ARGS...`` where a
rank other than 0 of a ``torchrun`` launch may not touch the harvest project's database.

An audit hook sees every ``sqlite3.connect`` and every file ``open``; on a rank other
than 0, connecting to any SQLite database or opening ``project.sqlite`` (or its
``-wal`` / ``-shm`` files) ends the process at once with status 97 and a line naming
the call, which no ``except`` in the code under test can swallow.
"""

from __future__ import annotations

import os
import runpy
import sys

#: Exit status of a rank that touched the database.
TOUCHED_THE_DATABASE = 97


def _refuse_the_database(event: str, args: tuple) -> None:
    path = args[0] if args else None
    named = isinstance(path, (str, bytes, os.PathLike)) and "project.sqlite" in os.fsdecode(path)
    if event == "sqlite3.connect" or (event == "open" and named):
        sys.stderr.write(f"rank {os.environ.get('RANK')} touched the database: {event} {path!r}\n")
        sys.stderr.flush()
        os._exit(TOUCHED_THE_DATABASE)


if __name__ == "__main__":
    if int(os.environ.get("RANK", "0")) != 0:
        sys.addaudithook(_refuse_the_database)
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
