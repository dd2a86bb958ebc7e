"""Confinement of device paths to the Runtime's root.

A device path is absolute in the runtime's view ("/" is the root). It is resolved one
component at a time with directory file descriptors and O_NOFOLLOW, so nothing outside
the root is ever opened, created or removed, even if a component is replaced by a symlink
while we walk: `..` above the root and symlinks that lead out are refused with EACCES.
Symlinks that stay inside the root are followed (at most 40, then ELOOP).
"""
from __future__ import annotations

import errno
import os
import stat

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_SYMLINKS = 40


class PathError(OSError):
    """A path that cannot be resolved inside the root; `errno` says why."""

    def __init__(self, code: int, path: bytes) -> None:
        super().__init__(code, os.strerror(code), path)


class Confined:
    """Opens and removes files strictly beneath `root`."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.realpath(os.fspath(root))
        if not os.path.isdir(self.root):
            raise NotADirectoryError(errno.ENOTDIR, "root is not a directory", self.root)
        self._root_b = os.fsencode(self.root)

    def _resolve_parent(self, path: bytes, follow_last: bool = True) -> tuple[list[int], bytes]:
        """Walks to the directory that holds the last component of `path`.

        Returns the stack of directory fds (the caller closes them) and the last name
        (b"" for the root itself). Intermediate symlinks, and a last component that is a
        symlink, are followed inside the root.
        """
        if not path.startswith(b"/"):
            raise PathError(errno.EINVAL, path)
        todo = [p for p in path.split(b"/") if p not in (b"", b".")]
        fds = [os.open(self._root_b, _DIR_FLAGS)]
        links = 0
        try:
            while todo:
                name = todo.pop(0)
                if name == b"..":
                    if len(fds) == 1:
                        raise PathError(errno.EACCES, path)
                    os.close(fds.pop())
                    continue
                if len(name) > 255:
                    raise PathError(errno.ENAMETOOLONG, path)
                if not todo and not follow_last:
                    return fds, name
                try:
                    st = os.stat(name, dir_fd=fds[-1], follow_symlinks=False)
                except FileNotFoundError:
                    if todo:
                        raise PathError(errno.ENOENT, path) from None
                    return fds, name
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    if links > MAX_SYMLINKS:
                        raise PathError(errno.ELOOP, path)
                    try:
                        target = os.readlink(name, dir_fd=fds[-1])
                    except OSError as e:
                        if e.errno not in (errno.EINVAL, errno.ENOENT):
                            raise
                        todo.insert(0, name)  # replaced since the stat (no longer a link): look again
                        continue
                    if target.startswith(b"/"):
                        # An absolute link is followed only if it points back inside root.
                        if target != self._root_b and not target.startswith(self._root_b + b"/"):
                            raise PathError(errno.EACCES, path)
                        for fd in fds[1:]:
                            os.close(fd)
                        del fds[1:]
                        target = target[len(self._root_b):]
                    todo = [p for p in target.split(b"/") if p not in (b"", b".")] + todo
                    continue
                if not todo:
                    return fds, name
                if not stat.S_ISDIR(st.st_mode):
                    raise PathError(errno.ENOTDIR, path)
                fds.append(os.open(name, _DIR_FLAGS, dir_fd=fds[-1]))
            return fds, b""
        except BaseException:
            for fd in fds:
                os.close(fd)
            raise

    def open(self, path: bytes, flags: int, mode: int = 0o644) -> int:
        """Opens a regular file beneath the root; returns an OS fd or raises OSError."""
        fds, name = self._resolve_parent(path)
        try:
            if name == b"":
                raise PathError(errno.EISDIR, path)
            fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=fds[-1])
        except OSError as e:
            if e.errno == errno.ELOOP:  # the last component turned into a symlink under us
                raise PathError(errno.EACCES, path) from None
            raise
        finally:
            for d in fds:
                os.close(d)
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise PathError(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL, path)
        os.set_blocking(fd, True)
        return fd

    def unlink(self, path: bytes) -> None:
        fds, name = self._resolve_parent(path, follow_last=False)  # unlink removes a link itself
        try:
            if name == b"":
                raise PathError(errno.EISDIR, path)
            os.unlink(name, dir_fd=fds[-1])
        finally:
            for d in fds:
                os.close(d)
