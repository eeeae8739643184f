#!/usr/bin/env python
"""Predict classes for image files with a trained run (its stored calibrator and a chosen deployment prior).

    python recipes/predict.py output/train/<run> photos/ --output preds.csv
    python recipes/predict.py hf-hub:<user>/<repo> a.jpg b.png --output preds.jsonl --format jsonl --topk 3
    python recipes/predict.py output/train/<run> photos/ --output preds.csv --test-prior estimate

IMAGES_OR_FOLDER: image files and folders (walked recursively; files with an image extension only). One output
row per readable image: ``path,label_1,prob_1,...,label_K,prob_K`` (CSV) or ``{"path", "labels", "probs"}`` (JSON
lines). An unreadable image is named on stderr (one line each) and counted in the summary; it never stops the run.

``--test-prior``: ``uniform`` (default, the balanced prior), ``train`` (the training prior), ``estimate`` (the
prior ``prior_em`` estimates from all given images, printed; needs ``recipes/calibrate.py``'s validation fit), or
a FILE of C probabilities or counts (a JSON list, a JSON object class name -> value, or numbers separated by
commas / whitespace). Everything else is :func:`lt_registry.load_classifier`'s ``predict_proba``.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path
from typing import Any, List, Optional, Tuple

import torch

parser = argparse.ArgumentParser(description="predict image classes with an lt_registry run",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
parser.add_argument("source", help="run folder, local-dir:<path> or hf-hub:<user>/<repo>[@rev]")
parser.add_argument("inputs", nargs="+", metavar="IMAGES_OR_FOLDER", help="image files and/or folders")
parser.add_argument("--output", required=True, help="the predictions file to write")
parser.add_argument("--topk", type=int, default=5, help="classes per row (at most the number of classes)")
parser.add_argument("--test-prior", default="uniform", help="uniform, train, estimate or a FILE of C probabilities")
parser.add_argument("--format", default=None, choices=["csv", "jsonl"],
                    help="output format (default: from --output's extension, csv otherwise)")
parser.add_argument("-b", "--batch-size", type=int, default=64)
parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
parser.add_argument("--no-progress", action="store_true", help="no progress bar")


class PredictCLIError(Exception):
    """A user-facing problem: printed as one line, exit code 2."""


def list_images(inputs: List[str]) -> Tuple[List[Path], List[str]]:
    """Image files named or found under the folders (recursively, sorted; image extensions only), and the inputs
    that do not exist."""
    from lt_registry.data import IMAGE_EXTENSIONS

    files: List[Path] = []
    missing: List[str] = []
    for raw in inputs:
        p = Path(raw).expanduser()
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS))
        elif p.is_file():
            files.append(p)
        else:
            missing.append(raw)
    return files, missing


def read_prior_file(path: str, class_names: List[str]) -> List[float]:
    f = Path(path)
    if not f.is_file():
        raise PredictCLIError(f"--test-prior {path!r} is not uniform, train, estimate or an existing file")
    text = f.read_text().strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = [float(v) for v in text.replace(",", " ").split()]
        except ValueError:
            raise PredictCLIError(f"--test-prior {path}: expected a JSON list or object, or numbers separated by "
                                  "commas or whitespace") from None
    if isinstance(data, dict):
        unknown = sorted(set(data) - set(class_names))
        if unknown:
            raise PredictCLIError(f"--test-prior {path}: unknown classes {unknown[:5]}; the model's classes are "
                                  f"{class_names[:10]}")
        data = [float(data.get(c, 0.0)) for c in class_names]
    if not isinstance(data, list) or not all(isinstance(v, (int, float)) for v in data):
        raise PredictCLIError(f"--test-prior {path}: expected {len(class_names)} numbers")
    return [float(v) for v in data]


def predict(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from lt_registry.data import load_rgb
    from lt_registry.predict import load_classifier

    if args.topk < 1:
        raise PredictCLIError(f"--topk must be >= 1, got {args.topk}")
    if args.batch_size < 1:
        raise PredictCLIError(f"--batch-size must be >= 1, got {args.batch_size}")
    fmt = args.format or ("jsonl" if str(args.output).endswith((".jsonl", ".json")) else "csv")
    files, missing = list_images(args.inputs)
    if missing:
        raise PredictCLIError(f"no such file or folder: {', '.join(missing)}")
    if not files:
        raise PredictCLIError(f"no image files (extensions .jpg, .png, ...) in {', '.join(args.inputs)}")
    clf = load_classifier(args.source, revision=args.revision, device=args.device)
    prior: Any = args.test_prior
    if prior.strip().lower() not in ("uniform", "train", "estimate"):
        prior = read_prior_file(prior, clf.class_names)
    # check the prior before the (long) pass over the images
    from lt_registry.predict import parse_test_prior
    parsed = parse_test_prior(prior, clf.num_classes)
    if isinstance(parsed, str) and parsed == "estimate" and clf.prior_em is None:
        clf.estimate_prior(torch.zeros(1, clf.num_classes))  # raises the message saying what is needed

    readable: List[Path] = []
    bad: List[str] = []
    logits: List[torch.Tensor] = []
    bar = tqdm(total=len(files), unit="img", desc="predict", file=sys.stderr,
               disable=args.no_progress or len(files) <= args.batch_size)
    for i in range(0, len(files), args.batch_size):
        batch, paths = [], []
        for f in files[i:i + args.batch_size]:
            try:
                batch.append(clf.transform(load_rgb(f)))
                paths.append(f)
            except Exception as e:  # noqa: BLE001 - any decoder failure: report the file, keep going
                msg = ("not an image file PIL can identify" if type(e).__name__ == "UnidentifiedImageError"
                       else " ".join(str(e).split()) or type(e).__name__)
                bad.append(str(f))
                print(f"unreadable image {f}: {msg}", file=sys.stderr)
        if batch:
            logits.append(clf.logits(torch.stack(batch), batch_size=args.batch_size))
            readable.extend(paths)
        bar.update(min(args.batch_size, len(files) - i))
    bar.close()
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    k = min(args.topk, clf.num_classes)
    rows: List[Tuple[str, List[str], List[float]]] = []
    if readable:
        probs = clf.proba_from_logits(torch.cat(logits), prior)
        top_p, top_i = probs.topk(k, dim=1)
        rows = [(str(p), [clf.class_names[j] for j in ti.tolist()], tp.tolist())
                for p, ti, tp in zip(readable, top_i, top_p)]
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        if fmt == "csv":
            w = csv.writer(fh)
            w.writerow(["path"] + [c for j in range(1, k + 1) for c in (f"label_{j}", f"prob_{j}")])
            for path, labels, ps in rows:
                w.writerow([path] + [v for lab, p in zip(labels, ps) for v in (lab, f"{p:.6f}")])
        else:
            for path, labels, ps in rows:
                fh.write(json.dumps({"path": path, "labels": labels, "probs": [round(p, 6) for p in ps]}) + "\n")
    os.replace(tmp, out)
    if isinstance(parsed, str) and parsed == "estimate" and clf.estimated_prior is not None:
        est = ", ".join(f"{n}={float(p):.4f}" for n, p in zip(clf.class_names, clf.estimated_prior))
        print(f"estimated prior (prior_em over {len(readable)} images): {est}")
    print(f"{len(readable)} images predicted, {len(bad)} unreadable (listed above)" if bad else
          f"{len(readable)} images predicted, 0 unreadable")
    print(f"predictions: {out} ({fmt}, top-{k}, test prior {args.test_prior})")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = parser.parse_args(argv)
    from lt_registry.hub import HubError

    try:
        return predict(args)
    except (PredictCLIError, HubError, ValueError, FileNotFoundError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
