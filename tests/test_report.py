"""Tests for lt_registry.report: figures (valid, non-trivial PNGs that show what they claim) and the per-bin
CSV. The numbers drawn (confusion counts, ECE/MCE from bins) are tested in test_metrics.py.

Image checks decode the written PNG with matplotlib.image.imread and look for the colours the figure promises
(e.g. the over-confident gap tint covers a large area only for an over-confident model), so a blank or
mis-coloured figure fails.
"""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from lt_registry.metrics import calibration_errors_from_bins, calibration_metrics, confusion_matrix, evaluate_predictions
from lt_registry.metrics.table import metric
from lt_registry.report import (
    BINS_TABLE_COLUMNS,
    _GAP_OVER,
    _GAP_UNDER,
    _confusion_figure,
    _per_class_figure,
    _reliability_figure,
    _side_by_side_figure,
    plot_confusion,
    plot_per_class_accuracy,
    read_bins_table,
    reliability_diagram,
    reliability_diagrams_side_by_side,
    write_bins_table,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _synthetic(temperature, n=3000, c=10, signal=3.2, seed=0):
    """Balanced test labels, logits biased to head classes; temperature > 1 sharpens (over-confident)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(c).repeat_interleave(n // c)
    counts = torch.tensor([5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50][:c], dtype=torch.float64)
    logits = torch.randn(labels.numel(), c, generator=g, dtype=torch.float64)
    logits[torch.arange(labels.numel()), labels] += signal
    logits += (counts / counts.sum()).log()
    return logits * temperature, labels, counts.long().tolist()


@pytest.fixture(scope="module")
def over_metrics():
    logits, labels, counts = _synthetic(temperature=2.2)
    m = evaluate_predictions(logits, labels, counts)
    assert m["ece"] > 0.1 and m["bins"]["count"][-1] > 0  # clearly over-confident
    return m


@pytest.fixture(scope="module")
def under_metrics():
    logits, labels, counts = _synthetic(temperature=0.6)
    m = calibration_metrics(torch.softmax(logits, dim=1), labels)
    assert all(a >= c for a, c, n in zip(m["bins"]["accuracy"], m["bins"]["confidence"], m["bins"]["count"]) if n)
    return m


def _read_png(path):
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_SIGNATURE
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    return img


def _assert_non_trivial(img, min_h=300, min_w=300):
    h, w = img.shape[:2]
    assert h >= min_h and w >= min_w, img.shape
    rgb = (img[..., :3] * 255).round().astype(np.int64)
    colours = np.unique(rgb[..., 0] * 65536 + rgb[..., 1] * 256 + rgb[..., 2])  # packed: fast unique
    assert len(colours) > 20, "image is (nearly) a single colour"
    assert float(img[..., :3].std()) > 0.05


def _pixels_of(img, hex_colour, tol=6):
    """How many pixels are (nearly) exactly this colour."""
    target = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    rgb = (img[..., :3] * 255).round().astype(np.int64)
    return int((np.abs(rgb - target).max(axis=-1) <= tol).sum())


# ---- reliability diagrams -----------------------------------------------------------------------------

def test_reliability_diagram_png_shows_over_confidence(tmp_path, over_metrics):
    out = reliability_diagram(over_metrics["bins"], tmp_path / "sub" / "rel.png", title="None-CE",
                              ece=over_metrics["ece"], mce=over_metrics["mce"])
    assert out == tmp_path / "sub" / "rel.png" and out.is_file()
    img = _read_png(out)
    _assert_non_trivial(img, min_h=800, min_w=650)  # 5 x 6.2 in at 150 dpi
    over_px, under_px = _pixels_of(img, _GAP_OVER[0]), _pixels_of(img, _GAP_UNDER[0])
    # the gap area is thousands of pixels; a legend swatch is a few hundred
    assert over_px > 5000, over_px
    assert under_px < 1500, under_px


def test_reliability_diagram_under_confidence_uses_other_colour(tmp_path, under_metrics):
    assert under_metrics["bins"]["accuracy"][-1] > under_metrics["bins"]["confidence"][-1]
    img = _read_png(reliability_diagram(under_metrics["bins"], tmp_path / "rel.png"))
    assert _pixels_of(img, _GAP_UNDER[0]) > 3000
    assert _pixels_of(img, _GAP_UNDER[0]) > 3 * _pixels_of(img, _GAP_OVER[0])


def test_reliability_title_carries_ece_mce_in_percent(over_metrics):
    fig = _reliability_figure(over_metrics["bins"], "None-CE", over_metrics["ece"], over_metrics["mce"])
    ax = fig.axes[0]
    title = ax.get_title()
    assert title.startswith("None-CE\n")
    assert f"ECE = {100 * over_metrics['ece']:.2f}%" in title
    assert f"MCE = {100 * over_metrics['mce']:.2f}%" in title
    assert ax.get_xlim() == (0.0, 1.0) and ax.get_ylim() == (0.0, 1.0)
    assert fig.axes[1].get_xlabel().startswith("Confidence") and ax.get_ylabel() == "Accuracy"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert {"Gap: over-confident", "Gap: under-confident", "Perfect calibration"} <= set(legend)
    # without ece/mce, they are computed from the bins with the docs/method.md §6 formulas
    computed = _reliability_figure(over_metrics["bins"], None, None, None).axes[0].get_title()
    assert computed == f"ECE = {100 * over_metrics['ece']:.2f}%   MCE = {100 * over_metrics['mce']:.2f}%"


def test_reliability_hand_bins():
    bins = {"edges": [0.0, 0.5, 1.0], "count": [2, 6], "accuracy": [0.5, 0.5], "confidence": [0.25, 0.75]}
    title = _reliability_figure(bins, None, None, None).axes[0].get_title()
    # ECE = 2/8 * 0.25 + 6/8 * 0.25 = 25%; MCE = 25%
    assert title == "ECE = 25.00%   MCE = 25.00%"


def test_missing_ece_mce_come_from_the_bins(over_metrics, under_metrics):
    """ECE/MCE not passed are those of lt_registry.metrics.calibration_errors_from_bins, per panel and value."""
    ece_b, mce_b = calibration_errors_from_bins(under_metrics["bins"])
    mce_a = calibration_errors_from_bins(over_metrics["bins"])[1]
    fig = _side_by_side_figure([("a", over_metrics["bins"], over_metrics["ece"], None),
                                ("b", under_metrics["bins"], None, None)], None)
    top = [ax.get_title() for ax in fig.axes[:2]]  # row-major: the two reliability panels come first
    assert top[0] == f"a\nECE = {100 * over_metrics['ece']:.2f}%   MCE = {100 * mce_a:.2f}%"
    assert top[1] == f"b\nECE = {100 * ece_b:.2f}%   MCE = {100 * mce_b:.2f}%"
    # the labels are those of the metric table
    assert f"{metric('ece').label} = " in top[1] and f"{metric('mce').label} = " in top[1]


def test_reliability_rejects_bad_inputs(tmp_path, over_metrics):
    with pytest.raises(ValueError, match="fraction"):
        reliability_diagram(over_metrics["bins"], tmp_path / "r.png", ece=21.7)  # percent passed by mistake
    with pytest.raises(ValueError, match="missing"):
        reliability_diagram({"edges": [0, 1]}, tmp_path / "r.png")
    with pytest.raises(ValueError, match="edges"):
        reliability_diagram({"edges": [0, 1], "count": [1, 1], "accuracy": [1, 1], "confidence": [1, 1]},
                            tmp_path / "r.png")
    with pytest.raises(ValueError, match=r"\.png"):
        reliability_diagram(over_metrics["bins"], tmp_path / "r.jpg")


def test_side_by_side(tmp_path, over_metrics, under_metrics):
    out = reliability_diagrams_side_by_side(
        [("None-CE", over_metrics["bins"], over_metrics["ece"], over_metrics["mce"]),
         ("UniMix-Bayias", under_metrics["bins"], None, None)], tmp_path / "cmp.png", title="CIFAR-10-LT")
    img = _read_png(out)
    _assert_non_trivial(img)
    single = _read_png(reliability_diagram(over_metrics["bins"], tmp_path / "one.png"))
    assert img.shape[1] > 1.6 * single.shape[1]  # two panels wide
    assert _pixels_of(img, _GAP_OVER[0]) > 5000 and _pixels_of(img, _GAP_UNDER[0]) > 3000
    with pytest.raises(ValueError):
        reliability_diagrams_side_by_side([], tmp_path / "x.png")
    with pytest.raises(ValueError):
        reliability_diagrams_side_by_side([("a", over_metrics["bins"])], tmp_path / "x.png")


def test_compare_calibration_recipe_reads_run_folders(tmp_path, over_metrics, under_metrics, capsys):
    """recipes/compare_calibration.py: panels from folders holding metrics.json + calibration/bins.csv."""
    import json

    from conftest import load_recipe

    mod = load_recipe("compare_calibration")
    for name, m, lt in (("a", over_metrics, {"mixer": "none", "loss": "ce"}),
                        ("b", under_metrics, {"mixer": "unimix", "loss": "bayias"})):
        write_bins_table(m["bins"], tmp_path / name / "calibration" / "bins.csv")
        final = {"top1": 50.0, "ece": 100 * m["ece"], "mce": 100 * m["mce"]}
        (tmp_path / name / "metrics.json").write_text(json.dumps({"final": final, "lt": lt}))
    label, bins, ece, mce = mod.panel(tmp_path / "b", None)
    assert label == "unimix-bayias (top-1 50.00%)" and ece == pytest.approx(under_metrics["ece"])
    assert mce == pytest.approx(under_metrics["mce"]) and list(bins["count"]) == list(under_metrics["bins"]["count"])
    out = tmp_path / "cmp.png"
    assert mod.main([f"{tmp_path / 'a'}=None-CE", str(tmp_path / "b"), "--output", str(out)]) == 0
    img = _read_png(out)
    _assert_non_trivial(img)
    assert _pixels_of(img, _GAP_OVER[0]) > 5000 and _pixels_of(img, _GAP_UNDER[0]) > 3000  # both panels drawn
    capsys.readouterr()
    assert mod.main([str(tmp_path / "missing"), "--output", str(out)]) == 2
    assert "has no metrics.json" in capsys.readouterr().err


# ---- per-bin CSV ---------------------------------------------------------------------------------------

def _same(a, b):
    return all((math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b)) and len(a) == len(b)


def test_bins_csv_round_trip(tmp_path, over_metrics):
    bins = over_metrics["bins"]
    assert any(c == 0 for c in bins["count"])  # empty bins (NaN accuracy) are part of the round trip
    path = write_bins_table(bins, tmp_path / "calibration" / "bins.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(BINS_TABLE_COLUMNS)
    assert len(lines) == 1 + 15
    back = read_bins_table(path)
    assert _same(back["edges"], bins["edges"])
    assert back["count"] == bins["count"]
    assert _same(back["accuracy"], bins["accuracy"])
    assert _same(back["confidence"], bins["confidence"])
    n = sum(bins["count"])
    assert _same(back["fraction"], [c / n for c in bins["count"]])
    assert _same(back["gap"], [a - c for a, c in zip(bins["accuracy"], bins["confidence"])])
    assert sum(back["fraction"]) == pytest.approx(1.0)
    # what is read back draws again
    _assert_non_trivial(_read_png(reliability_diagram(back, tmp_path / "again.png")))


def test_bins_csv_hand_rows(tmp_path):
    bins = {"edges": [0.0, 0.5, 1.0], "count": [0, 4], "accuracy": [float("nan"), 0.75],
            "confidence": [float("nan"), 0.875]}
    rows = write_bins_table(bins, tmp_path / "b.csv").read_text().splitlines()
    assert rows[1] == "0,0.0,0.5,0,0.0,,,"
    assert rows[2] == "1,0.5,1.0,4,1.0,0.75,0.875,-0.125"


def test_read_bins_table_rejects_other_csv(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        read_bins_table(p)


# ---- confusion matrix -----------------------------------------------------------------------------------

def test_plot_confusion_small_with_names(tmp_path):
    logits, labels, _ = _synthetic(temperature=2.0)
    cm = confusion_matrix(logits, labels, 10)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    img = _read_png(plot_confusion(cm, tmp_path / "confusion.png", class_names=names))
    _assert_non_trivial(img)
    assert _pixels_of(img, "#EDEDED") > 1000  # zero cells are masked (grey), not a colour of the log scale
    fig = _confusion_figure(cm, names, None, None)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert ax.get_xlabel() == "Predicted class" and ax.get_ylabel() == "True class"
    # every non-zero cell annotated with its count; row = true class (imshow row t -> y = t)
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    nz = (cm > 0).nonzero().tolist()
    assert len(texts) == len(nz)
    assert all(texts[(i, j)] == str(int(cm[i, j])) for i, j in nz)
    assert "log" in fig.axes[1].get_ylabel().lower()  # the colourbar is labelled
    im = ax.get_images()[0]
    assert type(im.norm).__name__ == "LogNorm"


@pytest.mark.parametrize("c", [100, 1000])
def test_plot_confusion_many_classes_sparse_ticks(tmp_path, c):
    g = torch.Generator().manual_seed(c)
    labels = torch.arange(c).repeat_interleave(3)
    preds = torch.where(torch.rand(labels.numel(), generator=g) < 0.7, labels,
                        torch.randint(0, c, (labels.numel(),), generator=g))
    cm = confusion_matrix(preds, labels, c)
    fig = _confusion_figure(cm, None, None, None)
    ax = fig.axes[0]
    ticks = ax.get_xticks()
    assert 5 <= len(ticks) <= 11 and ticks[0] == 0 and len(ax.texts) == 0
    _assert_non_trivial(_read_png(plot_confusion(cm, tmp_path / f"cm{c}.png")))


# ---- per-class accuracy -----------------------------------------------------------------------------

def test_plot_per_class_accuracy(tmp_path, over_metrics, lt_counts):
    acc = list(over_metrics["per_class_accuracy"])
    acc[5] = float("nan")  # a class absent from the test set gets no bar
    img = _read_png(plot_per_class_accuracy(acc, lt_counts, tmp_path / "pc.png", title="per class"))
    _assert_non_trivial(img)
    shuffled = [lt_counts[i] for i in (3, 0, 9, 1, 2, 4, 5, 6, 7, 8)]
    fig = _per_class_figure([0.1 * i for i in range(10)], shuffled, None, 100, 20, False, None)
    ax, ax2 = fig.axes[0], fig.axes[1]
    # classes ordered by training count, descending: the tick labels are the class indices in that order
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "3", "4", "0", "5", "6", "7", "8", "9", "2"]
    assert ax2.get_yscale() == "log"
    assert list(ax2.lines[0].get_ydata()) == sorted(shuffled, reverse=True)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [f"{metric('many').label} (> 100)", f"{metric('medium').label} (20-100)",
                      f"{metric('few').label} (< 20)", "Training count"]
    with pytest.raises(ValueError, match="percent"):
        plot_per_class_accuracy([50.0] * 10, lt_counts, tmp_path / "x.png")
    _read_png(plot_per_class_accuracy([50.0] * 10, lt_counts, tmp_path / "pct.png", percent=True))


# ---- no pyplot, no global backend switch ----------------------------------------------------------------

def test_report_does_not_use_pyplot(tmp_path):
    # rcParams are compared raw (dict.__getitem__): reading rcParams["backend"] would itself resolve the
    # "auto" backend sentinel, and an unresolved sentinel afterwards proves no backend was selected.
    code = (
        "import sys, torch, matplotlib\n"
        "raw = lambda: {k: dict.__getitem__(matplotlib.rcParams, k) for k in dict.keys(matplotlib.rcParams)}\n"
        "before = raw()\n"
        "from lt_registry.metrics import confusion_matrix\n"
        "from lt_registry.report import reliability_diagram, plot_confusion\n"
        "b = {'edges': [0, .5, 1], 'count': [1, 3], 'accuracy': [0., 1.], 'confidence': [.4, .9]}\n"
        f"reliability_diagram(b, r'{tmp_path / 'r.png'}')\n"
        "cm = confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 0]), 2)\n"
        f"plot_confusion(cm, r'{tmp_path / 'c.png'}')\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
        "after = raw()\n"
        "changed = [k for k in before if before[k] is not after[k] and before[k] != after[k]]\n"
        "assert not changed, f'rcParams changed: {changed}'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout == ""  # no prints
    assert (tmp_path / "r.png").is_file() and (tmp_path / "c.png").is_file()
