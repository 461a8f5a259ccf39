"""Commit the generated reports in ``docs/`` with git — only ``docs/``, never a push.

Used when a run is started with ``commit_docs=True`` (``discovery run --commit-docs``, or the deployment
parameter). Git is called with explicit argument lists, from inside the docs folder, with the pathspec
``.`` so every command is limited to that folder:

* ``git rev-parse --is-inside-work-tree`` — outside a work tree nothing happens;
* ``git add --all -- .`` — new, changed and deleted reports;
* ``git commit -m "docs: discovery reports for <date>" -- .`` — a path-limited commit: whatever else the
  user has staged elsewhere in the repository stays staged and is not part of the commit.

The docs folder must be a sub-folder of the work tree: a docs folder that *is* the repository root is
refused, since "only docs/" would then mean everything.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from freemodels.errors import DiscoveryError

GIT_TIMEOUT_S = 60.0


class DocsCommitError(DiscoveryError):
    """The reports could not be committed with git."""


def commit_message(run_date: str) -> str:
    """The commit message for a run started on ``run_date`` (ISO date)."""
    return f"docs: discovery reports for {run_date}"


def _git(docs_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=docs_dir,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise DocsCommitError("cannot commit docs/: git is not installed") from None
    except subprocess.TimeoutExpired:
        raise DocsCommitError(f"git {args[0]} did not finish within {GIT_TIMEOUT_S:.0f} s") from None


def _checked(docs_dir: Path, *args: str) -> str:
    done = _git(docs_dir, *args)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip() or f"exit code {done.returncode}"
        raise DocsCommitError(f"git {args[0]} failed in {docs_dir}: {detail}")
    return done.stdout.strip()


def work_tree_root(path: Path) -> Path | None:
    """The top of the git work tree that contains ``path``, or None when it is not in one."""
    if not path.is_dir():
        return None
    done = _git(path, "rev-parse", "--is-inside-work-tree")
    if done.returncode != 0 or done.stdout.strip() != "true":
        return None
    return Path(_checked(path, "rev-parse", "--show-toplevel")).resolve()


def commit_docs(docs_dir: Path, *, run_date: str) -> str | None:
    """Commit the reports under ``docs_dir``; return the new commit's hash.

    Returns None when ``docs_dir`` is not inside a git work tree or nothing in it changed. Raises
    :class:`DocsCommitError` when git is missing or refuses (no identity configured, a failing hook).
    Never pushes.
    """
    folder = Path(docs_dir).resolve()
    root = work_tree_root(folder)
    if root is None:
        return None
    if folder == root:
        raise DocsCommitError(f"{folder} is the repository root; commit_docs only commits a docs sub-folder")
    _checked(folder, "add", "--all", "--", ".")
    staged = _git(folder, "diff", "--cached", "--quiet", "--", ".")
    if staged.returncode == 0:
        return None
    if staged.returncode != 1:
        raise DocsCommitError(f"git diff failed in {folder}: {staged.stderr.strip()}")
    _checked(folder, "commit", "--quiet", "-m", commit_message(run_date), "--", ".")
    return _checked(folder, "rev-parse", "HEAD")
