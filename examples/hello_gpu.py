"""A first gpuvfs program: a GPU thread greets you, asks your name (read from this process's
stdin), tells the time, writes hello.txt and reads it back. The kernel is hello_gpu.cu.

    python examples/hello_gpu.py                    # GPU if there is one, else the cpu backend
    echo Ada | python examples/hello_gpu.py --backend cpu --dir /tmp

All of its output comes from the kernel (gvfs_printf); the file is <dir>/hello.txt, where
<dir> (default: the current directory) is what the kernel sees as "/".
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:
    import gpuvfs
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import gpuvfs

from gpuvfs.errors import GvfsError

KERNEL = Path(__file__).with_name("hello_gpu.cu")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="auto", choices=["auto", "cuda", "cpu"])
    p.add_argument("--dir", default=".", help="the directory the kernel sees as / (hello.txt goes there)")
    args = p.parse_args(argv)
    try:
        with gpuvfs.Runtime(root=args.dir, backend=args.backend) as rt:
            kernel = rt.compile(KERNEL.read_text()).get_function("hello")
            status = rt.zeros(1, "int32")
            kernel((1,), (1,), (rt.ctx, status))  # one GPU thread
            rt.synchronize()
            code = int(rt.asnumpy(status)[0])
    except (GvfsError, OSError) as e:
        print(f"hello_gpu: {e}", file=sys.stderr)
        return 1
    if code:
        print(f"hello_gpu: the kernel reported failure {code}", file=sys.stderr)
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
