"""The local source directories `kalpana watch` watches, and which deployments a saved file rebuilds.

Pure: built from the loaded deployments, no file watching here (that is the
triggers' thread, the only user of ``watchfiles``). A deployment whose
``source.path`` contains a saved file is rebuilt, and only that one; a file
under a dependency, VCS or cache directory (``node_modules``, ``.git``, ...),
an editor's swap file or Kalpana's own state directory triggers nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gitops.source import CACHE_DIRS, JUNK_FILE
from gitops.spec import Desired

# Directories whose churn is not an edit: VCS metadata and caches (the content hash skips them too), and
# dependencies and build output a package manager or dev server rewrites by the thousand (those still
# count in the hash: the next apply, save or push picks such a change up).
DEPENDENCY_DIRS = frozenset({"node_modules", "bower_components", ".venv", "venv", ".tox", ".nox", ".gradle",
                             ".next", ".nuxt", ".svelte-kit"})
IGNORED_DIRS = frozenset({".git", ".hg", ".svn"}) | CACHE_DIRS | DEPENDENCY_DIRS
_IGNORED_NAMES = JUNK_FILE


class SourceDirs:
    """The enabled deployments' local source directories (resolved), each with the deployments built from it.

    ``ignore`` are directories whose files never count (the state directory: history and build
    logs change on every build, and a ``source: .`` contains them).
    """

    def __init__(self, owners: dict[Path, frozenset[str]], ignore: Iterable[Path] = ()):
        self.owners = dict(owners)
        self.ignore = tuple(ignore)

    @classmethod
    def of(cls, desired: Iterable[Desired], workspace: Path, state: Path) -> "SourceDirs":
        """The source directories of ``desired`` (``source.path`` is relative to ``workspace``)."""
        state = state.resolve()
        owners: dict[Path, set[str]] = {}
        for d in desired:
            source = d.spec.source
            if not d.spec.enabled or source is None or not source.path:
                continue
            path = (workspace / source.path).resolve()
            if path.is_relative_to(state):
                # Inside the config repository's checkout: only a sync changes it, and a sync applies anyway.
                continue
            owners.setdefault(path, set()).add(d.name)
        return cls({path: frozenset(names) for path, names in owners.items()}, [state])

    def roots(self) -> frozenset[Path]:
        """The directories to watch recursively: a source inside another one is covered by it."""
        existing = [path for path in self.owners if path.is_dir()]
        return frozenset(path for path in existing
                         if not any(other != path and path.is_relative_to(other) for other in existing))

    def relevant(self, path: Path) -> bool:
        """Is a change of ``path`` (absolute) an edit of some source?"""
        if any(path == ignored or path.is_relative_to(ignored) for ignored in self.ignore):
            return False
        containing = [root for root in self.owners if path.is_relative_to(root)]
        if not containing:
            return False
        if _IGNORED_NAMES.search(path.name):
            return False
        # Relative to the outermost source: the parts above it (the user's home, say) may be anything.
        parts = path.relative_to(min(containing, key=lambda root: len(root.parts))).parts
        return not any(part in IGNORED_DIRS for part in parts)

    def owners_of(self, paths: Iterable[Path]) -> set[str]:
        """The deployments whose sources contain any of ``paths`` (the relevant ones)."""
        names: set[str] = set()
        for path in paths:
            if self.relevant(path):
                for root, owned in self.owners.items():
                    if path.is_relative_to(root):
                        names |= owned
        return names

    def describe(self, paths: Iterable[Path]) -> str:
        """A few of the relevant ``paths``, relative to their source, for the daemon's log."""
        shown = []
        for path in sorted(p for p in paths if self.relevant(p)):
            root = max((r for r in self.owners if path.is_relative_to(r)), key=lambda r: len(r.parts))
            shown.append(path.relative_to(root).as_posix() or path.name)
        more = f" and {len(shown) - 3} more" if len(shown) > 3 else ""
        return ", ".join(shown[:3]) + more
