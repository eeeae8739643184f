"""How long the ``folder`` builder takes to count an image folder, and the header check per file.

Counting: ``lt_registry.data.folder.list_image_folder`` (the builder's listing: ``os.scandir`` of every class
folder, no image opened) on ``--classes`` x ``--per-class`` empty placeholder ``.jpg`` files (default 100 x 1,000 =
100,000), median of ``--repeats`` (3) runs; the files are created first, so the directory entries are in the
page cache (a cold cache on a network file system is slower: that is the file system's listing speed).

Header check (``--check N``, default 3,000; 0 skips it): ``ImageFileDataset.check_images('header')`` on N small
real images (32x32, half PNG, half JPEG), median of the repeats.

Measured on the 2-core machine the package was written on, both cores busy with training runs (load average
~4.5):

    $ python benchmarks/count_folder.py
    count 100,000 files (100 classes x 1,000): median 0.34 s of 3 (0.34, 0.35, 0.32)
    header check 3,000 files: median 0.47 s of 3 (0.156 ms per file)
    $ python benchmarks/count_folder.py --repeats 5
    count 100,000 files (100 classes x 1,000): median 0.32 s of 5 (0.34, 0.39, 0.32, 0.28, 0.28)
    header check 3,000 files: median 0.34 s of 5 (0.114 ms per file)
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def _timed(fn, repeats: int):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), times, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--per-class", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check", type=int, default=3000, help="files for the header-check timing (0: skip)")
    ap.add_argument("--dir", default=None, help="where to create the files (default: a temporary folder, removed)")
    args = ap.parse_args()

    import numpy as np
    from PIL import Image

    from lt_registry.data.files import ImageFileDataset
    from lt_registry.data.folder import list_image_folder

    base = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="count_folder_"))
    try:
        split = base / "train"
        for c in range(args.classes):
            d = split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(args.per_class):
                open(d / f"{i}.jpg", "wb").close()
        n = args.classes * args.per_class
        med, times, listing = _timed(lambda: list_image_folder(split), args.repeats)
        assert sum(listing.counts) == n
        print(f"count {n:,} files ({args.classes} classes x {args.per_class:,}): median {med:.2f} s of "
              f"{args.repeats} ({', '.join(f'{t:.2f}' for t in times)})")
        if args.check:
            rng = np.random.default_rng(0)
            paths = []
            d = base / "check"
            d.mkdir(exist_ok=True)
            for i in range(args.check):
                p = d / f"{i}.{'png' if i % 2 else 'jpg'}"
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
                paths.append(str(p))
            ds = ImageFileDataset(paths, [0] * len(paths))
            med, times, bad = _timed(lambda: ds.check_images("header"), args.repeats)
            assert bad == []
            print(f"header check {args.check:,} files: median {med:.2f} s of {args.repeats} "
                  f"({med / args.check * 1e3:.3f} ms per file)")
    finally:
        if not args.dir:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
