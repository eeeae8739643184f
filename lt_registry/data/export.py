"""Write a built long-tailed set as an image folder (and CSV lists): an offline example of "your own data".

    python -m lt_registry.data.export digits OUT_DIR                      # digits_lt at rho 10 (embedded)
    python -m lt_registry.data.export digits OUT_DIR --imb-factor 10 --format png --val-per-class 10
    python -m lt_registry.data.export cifar10_lt OUT_DIR --data-dir ~/data/cifar10 --imb-factor 100

writes (docs/method.md §4.3 layout)::

    OUT_DIR/train/<class>/<index>.png     the long-tailed training set (the builder's selection, same counts)
    OUT_DIR/val/<class>/<index>.png       with --val-per-class K > 0: up to K images per class that the
                                          selection left out (never a training image, so the head class,
                                          which keeps all of its images, may have fewer)
    OUT_DIR/test/<class>/<index>.png      the balanced test set
    OUT_DIR/train.csv, val.csv, test.csv  the same files as path,label lists (class names), for the csv builder

Class folders are ``<index>_<name>`` (``0_zero`` ... ``9_nine`` for the digits), so their natural order is the
class order; ``<index>`` in a file name is the image's position in the source split. The digits are grey, so
they are written as 8-bit grey PNGs (the folder reader turns them back into the same RGB arrays). Without
``--val-per-class`` there is no ``val/`` folder and the ``folder`` builder holds out a validation split itself.
The embedded digits at rho 10 (503 + 500 images) take under a second to write (plus the imports: torch,
scikit-learn), on a busy 2-core machine.

Works for every registered builder whose splits hold uint8 arrays (``digits_lt``, ``cifar10_lt``,
``cifar100_lt``).
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

__all__ = ["export_image_folder", "main", "DIGIT_WORDS"]

PathLike = Union[str, os.PathLike]
DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FORMATS = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "bmp": ".bmp", "webp": ".webp", "tiff": ".tif"}
_OUTPUTS = ("train", "val", "test", "train.csv", "val.csv", "test.csv")


def _folder_names(name: str, class_names: Sequence[str]) -> List[str]:
    if name == "digits_lt":
        return [f"{c}_{DIGIT_WORDS[c]}" for c in range(len(class_names))]
    width = len(str(len(class_names) - 1))
    safe = [str(n).replace("/", "_").replace(os.sep, "_").strip() or str(c) for c, n in enumerate(class_names)]
    return [f"{c:0{width}d}_{n}" if n != str(c) else f"{c:0{width}d}" for c, n in enumerate(safe)]


def _write_split(out: Path, split: str, images: np.ndarray, labels: np.ndarray, ids: np.ndarray,
                 folders: List[str], ext: str, rows: List[List[str]]) -> None:
    from PIL import Image

    for f in folders:
        (out / split / f).mkdir(parents=True, exist_ok=True)
    grey = images.shape[-1] == 3 and bool(np.all(images[..., 0] == images[..., 1])) \
        and bool(np.all(images[..., 1] == images[..., 2]))
    width = max(4, len(str(int(ids.max())))) if ids.size else 4
    opts: Dict[str, Any] = {"quality": 95} if ext in (".jpg", ".webp") else {}
    for img, y, i in zip(images, labels.tolist(), ids.tolist()):
        rel = f"{split}/{folders[y]}/{i:0{width}d}{ext}"
        Image.fromarray(img[..., 0] if grey else img).save(out / rel, **opts)
        rows.append([rel, folders[y]])


def export_image_folder(name: str, out_dir: PathLike, *, data_dir: Optional[PathLike] = None,
                        imb_factor: Optional[float] = None, val_per_class: int = 0, fmt: str = "png",
                        seed: int = 0, overwrite: bool = False, write_csv: bool = True) -> Dict[str, Any]:
    """Write ``name`` (built with ``imb_factor``, ``seed``) under ``out_dir``; returns ``{split: counts}`` and the
    class folder names. Refuses to write into existing outputs unless ``overwrite`` (which removes only the
    ``train/``, ``val/``, ``test/`` folders and CSV lists it would write)."""
    from .builder import build_dataset
    from .holdout import left_out_validation

    if fmt.lower() not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}.")
    if isinstance(val_per_class, bool) or not isinstance(val_per_class, int) or val_per_class < 0:
        raise ValueError(f"val_per_class must be an integer >= 0, got {val_per_class!r}.")
    ext = FORMATS[fmt.lower()]
    out = Path(out_dir).expanduser()
    existing = [p for p in _OUTPUTS if (out / p).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{str(out)!r} already holds {existing}; choose another folder or pass --overwrite "
                              f"(removes those only).")
    kwargs: Dict[str, Any] = {"imb_factor": imb_factor, "seed": seed, "val_per_class": 0}
    if data_dir is not None:
        kwargs["data_dir"] = data_dir
    ds = build_dataset(name, **kwargs)
    from .arrays import TensorImageDataset

    if not isinstance(ds.train, TensorImageDataset) or not isinstance(ds.test, TensorImageDataset):
        raise ValueError(f"{name!r} does not hold its images as arrays; export works for digits_lt, cifar10_lt, "
                         f"cifar100_lt.")
    for p in existing:
        shutil.rmtree(out / p) if (out / p).is_dir() else (out / p).unlink()
    out.mkdir(parents=True, exist_ok=True)
    name = ds.name
    folders = _folder_names(name, ds.class_names)
    C = ds.num_classes
    train_idx = np.asarray(ds.meta["train_indices"], dtype=np.int64)
    rows: Dict[str, List[List[str]]] = {"train": [], "val": [], "test": []}
    _write_split(out, "train", ds.train.images.numpy(), ds.train.labels, train_idx, folders, ext, rows["train"])
    counts = {"train": ds.class_counts}
    if val_per_class > 0:
        # the pool the selection drew from: rebuild it from the builder's own data (no re-selection)
        pool = _pool(name, data_dir)
        v_idx, _ = left_out_validation(pool.labels, train_idx, val_per_class, C, seed, overlap=False)
        _write_split(out, "val", pool.images[v_idx], pool.labels[v_idx], v_idx, folders, ext, rows["val"])
        counts["val"] = np.bincount(pool.labels[v_idx], minlength=C).tolist()
    _write_split(out, "test", ds.test.images.numpy(), ds.test.labels, np.arange(len(ds.test)), folders, ext,
                 rows["test"])
    counts["test"] = ds.test.class_counts
    if write_csv:
        for split, r in rows.items():
            if r:
                with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
                    w = csv.writer(f)
                    w.writerow(["path", "label"])
                    w.writerows(r)
    return {"counts": counts, "class_folders": folders, "imb_factor": ds.imb_factor}


def _pool(name: str, data_dir: Optional[PathLike]) -> Any:
    if name == "digits_lt":
        from .embedded import load_digits_arrays

        return load_digits_arrays("train")
    from .cifar_lt import load_cifar

    return load_cifar(name, data_dir, "train")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lt_registry.data.export",
                                 description="Write a long-tailed set as OUT_DIR/{train,val,test}/<class>/<image> "
                                             "(docs/method.md §4.3).")
    ap.add_argument("dataset", help="digits (embedded), cifar10_lt or cifar100_lt (with --data-dir)")
    ap.add_argument("out_dir", help="folder to write (created)")
    ap.add_argument("--imb-factor", type=float, default=None, help="rho (default: the builder's: 10 for digits)")
    ap.add_argument("--val-per-class", type=int, default=0,
                    help="write val/ with up to K left-out images per class (default 0: no val/ folder)")
    ap.add_argument("--format", default="png", choices=sorted(FORMATS), help="image format (default png)")
    ap.add_argument("--data-dir", default=None, help="the CIFAR source (see cifar10_lt)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the selection and of the val draw (default 0)")
    ap.add_argument("--overwrite", action="store_true", help="replace train/ val/ test/ and the CSVs in OUT_DIR")
    ap.add_argument("--no-csv", action="store_true", help="do not write train.csv / val.csv / test.csv")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        info = export_image_folder(args.dataset, args.out_dir, data_dir=args.data_dir, imb_factor=args.imb_factor,
                                   val_per_class=args.val_per_class, fmt=args.format, seed=args.seed,
                                   overwrite=args.overwrite, write_csv=not args.no_csv)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    c = info["counts"]
    parts = [f"{k} {sum(v)} ({min(v)}..{max(v)} per class)" for k, v in c.items()]
    print(f"wrote {', '.join(parts)} to {args.out_dir} in {time.perf_counter() - t0:.2f} s; class folders "
          f"{info['class_folders'][0]} .. {info['class_folders'][-1]}. Train on it with --dataset folder "
          f"--data-dir {args.out_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
