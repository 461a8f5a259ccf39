"""commit_docs: a path-limited git commit of docs/ in a temporary repository."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from flows.docs_commit import DocsCommitError, commit_docs, commit_message, work_tree_root

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "--quiet", "--initial-branch=main")
    git(root, "config", "user.name", "Test User")
    git(root, "config", "user.email", "test@example.invalid")
    git(root, "config", "commit.gpgsign", "false")
    (root / "README.md").write_text("readme\n")
    git(root, "add", "README.md")
    git(root, "commit", "--quiet", "-m", "initial")
    (root / "docs").mkdir()
    return root


def committed_files(repo: Path, rev: str = "HEAD") -> set[str]:
    out = git(repo, "show", "--name-only", "--pretty=format:", rev)
    return {line for line in out.splitlines() if line}


def test_commits_only_docs_and_leaves_other_staged_changes_staged(repo: Path) -> None:
    (repo / "docs" / "index.md").write_text("# index\n")
    (repo / "docs" / "sub").mkdir()
    (repo / "docs" / "sub" / "chart.svg").write_text("<svg/>\n")
    (repo / "notes.txt").write_text("not a report\n")
    git(repo, "add", "notes.txt")
    (repo / "README.md").write_text("changed, unstaged\n")

    sha = commit_docs(repo / "docs", run_date="2026-11-01")

    assert sha == git(repo, "rev-parse", "HEAD")
    assert committed_files(repo) == {"docs/index.md", "docs/sub/chart.svg"}
    assert git(repo, "log", "-1", "--pretty=%s") == "docs: discovery reports for 2026-11-01"
    # The file staged outside docs/ is still staged, not committed; the unstaged change is untouched.
    assert git(repo, "diff", "--cached", "--name-only") == "notes.txt"
    assert git(repo, "diff", "--name-only") == "README.md"


def test_deleted_and_changed_reports_are_committed(repo: Path) -> None:
    (repo / "docs" / "old.md").write_text("old\n")
    (repo / "docs" / "kept.md").write_text("v1\n")
    first = commit_docs(repo / "docs", run_date="2026-10-01")
    assert first is not None
    (repo / "docs" / "old.md").unlink()
    (repo / "docs" / "kept.md").write_text("v2\n")

    second = commit_docs(repo / "docs", run_date="2026-11-01")

    assert second is not None and second != first
    assert git(repo, "ls-files", "docs") == "docs/kept.md"
    assert git(repo, "show", "HEAD:docs/kept.md") == "v2"


def test_nothing_changed_returns_none_and_makes_no_commit(repo: Path) -> None:
    (repo / "docs" / "index.md").write_text("# index\n")
    assert commit_docs(repo / "docs", run_date="2026-11-01") is not None
    head = git(repo, "rev-parse", "HEAD")

    assert commit_docs(repo / "docs", run_date="2026-11-02") is None
    assert git(repo, "rev-parse", "HEAD") == head


def test_outside_a_work_tree_returns_none(tmp_path: Path) -> None:
    docs = tmp_path / "plain" / "docs"
    docs.mkdir(parents=True)
    (docs / "index.md").write_text("# index\n")

    assert work_tree_root(docs) is None
    assert commit_docs(docs, run_date="2026-11-01") is None


def test_missing_docs_folder_returns_none(tmp_path: Path) -> None:
    assert commit_docs(tmp_path / "absent", run_date="2026-11-01") is None


def test_repository_root_as_docs_dir_is_refused(repo: Path) -> None:
    (repo / "notes.txt").write_text("would be swept in\n")
    with pytest.raises(DocsCommitError, match="repository root"):
        commit_docs(repo, run_date="2026-11-01")
    assert git(repo, "log", "--oneline").count("\n") == 0  # still only the initial commit


def test_git_refusal_is_a_clear_error(repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n")
    hook.chmod(0o755)
    (repo / "docs" / "index.md").write_text("# index\n")

    with pytest.raises(DocsCommitError, match="hook says no"):
        commit_docs(repo / "docs", run_date="2026-11-01")


def test_commit_message_names_the_run_date() -> None:
    assert commit_message("2026-12-01") == "docs: discovery reports for 2026-12-01"
