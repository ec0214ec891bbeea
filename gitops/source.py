"""Where an application's files come from, and which revision they are at.

The only module that imports ``git`` (GitPython). For a local directory
inside a git repository the revision is the last commit that touched that
directory (so a monorepo rebuilds only what changed), with a marker and a
content digest when the directory has uncommitted changes; outside git it
is a content hash.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from gitops.errors import SourceError
from gitops.spec import SourceSpec

_SKIP_DIRS = {".git"}


@dataclass(frozen=True)
class Revision:
    """The resolved state of a source: what the build will copy and where it came from."""

    revision: str  # commit SHA (+ "+dirty.<digest>") or "content:<digest>"
    path: Path | None = None  # directory to copy into the image
    commit_hash: str | None = None
    commit_message: str | None = None
    branch: str | None = None

    @property
    def short(self) -> str:
        """Seven characters are what people quote (``a1b2c3d``)."""
        if self.revision.startswith("content:"):
            return self.revision[len("content:"):][:7]
        head, _, dirty = self.revision.partition("+")
        return head[:7] + ("+dirty" if dirty else "")


NO_SOURCE = Revision(revision="")


def short_revision(revision: str) -> str:
    """Display form of a stored revision string."""
    return Revision(revision).short if revision else "none"


def resolve(spec: SourceSpec | None, workspace: Path) -> Revision:
    """Resolve a source to a revision; SourceError when it cannot be read."""
    if spec is None:
        return NO_SOURCE
    if spec.repo:
        raise SourceError(f"git source {spec.repo!r}: git repositories as sources are not supported yet; "
                          "clone it into the workspace and use `source: {path: ...}`")
    path = (workspace / spec.path).resolve()
    if not path.is_dir():
        raise SourceError(f"source directory {path} not found: create it or fix source.path")
    git = _git_revision(path)
    if git:
        return git
    return Revision(revision=f"content:{content_hash(path)}", path=path)


def content_hash(path: Path) -> str:
    """Digest of every file's relative path, mode bit and content under ``path``."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in sorted(files):
            full = Path(root, name)
            rel = full.relative_to(path).as_posix()
            digest.update(rel.encode() + b"\0")
            try:
                if full.is_symlink():
                    digest.update(b"L" + os.readlink(full).encode())
                else:
                    digest.update(b"X" if os.access(full, os.X_OK) else b"F")
                    with open(full, "rb") as handle:
                        for block in iter(lambda: handle.read(1 << 16), b""):
                            digest.update(block)
            except OSError as exc:
                raise SourceError(f"cannot read {full}: {exc.strerror}: fix its permissions or remove it") from None
            digest.update(b"\0")
    return digest.hexdigest()[:16]




def _inside_git(path: Path) -> bool:
    return any((parent / ".git").exists() for parent in (path, *path.parents))


def _git_revision(path: Path) -> Revision | None:
    if not _inside_git(path):
        return None
    # Imported here: GitPython costs ~0.1 s to import and plain directories need none of it.
    try:
        import git
    except ImportError:  # pragma: no cover - git binary missing
        return None
    try:
        repo = git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    except git.GitCommandError:
        return None
    root = Path(repo.working_tree_dir).resolve()
    rel = path.relative_to(root).as_posix() or "."
    try:
        sha = repo.git.rev_list("-1", "HEAD", "--", rel).strip()
    except git.GitCommandError:
        return None  # a repository without commits: treat as plain files
    if not sha:
        return None  # nothing committed under this path yet
    commit = repo.commit(sha)
    dirty = repo.git.status("--porcelain", "--", rel).strip()
    revision = sha if not dirty else f"{sha}+dirty.{content_hash(path)[:10]}"
    try:
        branch = repo.active_branch.name
    except TypeError:  # detached HEAD
        branch = None
    message = commit.message.strip().splitlines()[0] if commit.message.strip() else ""
    return Revision(revision=revision, path=path, commit_hash=sha, commit_message=message, branch=branch)
