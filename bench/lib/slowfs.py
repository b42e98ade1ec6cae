"""bench/lib/slowfs.py SOURCE MOUNTPOINT [--delay-ms 2]: a read-only FUSE
mirror of SOURCE that sleeps before every read, a disk whose reads are slow
for the cold-disk scenario (bench/README.md, "Cold disk").

Metadata is SOURCE's own, as lstat gives it (modes, sizes, mtimes to the
nanosecond, link counts, owners): a store server checks that every file of a
store path has mtime 1 and the size it expects. Only `read` is slowed;
lookups, attributes, directory listings and symlinks answer at once, as a
disk's metadata mostly comes from memory. Runs in the foreground until it is
unmounted (`fusermount -u MOUNTPOINT`); libfuse's multi-threaded loop serves
concurrent reads in parallel, so their delays run side by side (a network
volume's fixed latency, an SSD's deep queue), not one after another. Needs
fusepy (PyPI) and libfuse 2 (Debian's `libfuse2`, `fuse` for fusermount)."""

import argparse
import errno
import os
import sys
import time

import fuse

STAT_FIELDS = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
               "st_atime_ns", "st_mtime_ns", "st_ctime_ns")


class SlowMirror(fuse.Operations):
    use_ns = True  # fusepy takes times as integer nanoseconds, so none is rounded

    def __init__(self, source, delay):
        self.source = source
        self.delay = delay

    def _real(self, path):
        return os.path.join(self.source, path.lstrip("/"))

    def getattr(self, path, fh=None):
        try:
            st = os.lstat(self._real(path))
        except OSError as e:
            raise fuse.FuseOSError(e.errno) from e
        attrs = {k.removesuffix("_ns"): getattr(st, k) for k in STAT_FIELDS}
        attrs["st_blksize"] = st.st_blksize
        return attrs

    def readlink(self, path):
        return os.readlink(self._real(path))

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._real(path))

    def open(self, path, flags):
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise fuse.FuseOSError(errno.EROFS)
        return os.open(self._real(path), os.O_RDONLY)

    def read(self, path, size, offset, fh):
        time.sleep(self.delay)
        return os.pread(fh, size, offset)

    def release(self, path, fh):
        os.close(fh)
        return 0

    def statfs(self, path):
        st = os.statvfs(self._real(path))
        return {k: getattr(st, k) for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree",
                                            "f_bavail", "f_files", "f_ffree", "f_namemax")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("source")
    ap.add_argument("mountpoint")
    ap.add_argument("--delay-ms", type=float, default=2.0, help="sleep before every read")
    opts = ap.parse_args()
    if not os.path.isdir(opts.source):
        sys.exit(f"slowfs: {opts.source} is not a directory")
    # kernel_cache: pages stay cached across opens, as on a disk file system
    # (FUSE drops them at every open otherwise); the harness empties the page
    # cache itself before each server's turn.
    fuse.FUSE(SlowMirror(os.path.realpath(opts.source), opts.delay_ms / 1e3), opts.mountpoint,
              foreground=True, ro=True, kernel_cache=True, fsname="slowfs")


if __name__ == "__main__":
    main()
