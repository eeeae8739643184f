"""Paths in files written for others (docs/method.md §5.2): published copies name only paths inside the
repository; option comparisons follow links."""
from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import ROOT, fake_grid
from lt_registry.config import changed_options
from lt_registry.grid.results import publish
from lt_registry.paths import published_path, run_paths, same_path, scrub_paths

#: a path leaving the repository, or an absolute path of a machine
OUTSIDE = re.compile(r"(?<![\w.])\.\./|(?<![\w.:/-])/(?:home|work|tmp|root|Users|mnt|var|private|data)\b/")


def test_published_path_inside_outside_and_hub(tmp_path):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    assert published_path("output/runs/a", repo) == "output/runs/a"
    assert published_path(repo / "output" / "runs" / "a", repo) == "output/runs/a"
    assert published_path(repo, repo) == "."
    assert published_path("../shared/data/cifar10-jpeg75", repo) == "data/cifar10-jpeg75"
    assert published_path(tmp_path / "elsewhere" / "cifar10", repo) == "data/cifar10"
    assert published_path("../ckpt/model.safetensors", repo, data=False) == "PATH/TO/model.safetensors"
    assert published_path("hf-hub:user/model@v1", repo) == "hf-hub:user/model@v1"
    # a dataset linked into the repository keeps the name it has there (links are not followed)
    (tmp_path / "real").mkdir()
    (repo / "data" / "cifar").symlink_to(tmp_path / "real")
    assert published_path("data/cifar", repo) == "data/cifar"


def test_scrub_paths_rewrites_every_form_and_only_whole_paths(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    outside = str(tmp_path / "shared" / "data" / "cifar10-jpeg75")
    text = (f"--data-dir ../shared/data/cifar10-jpeg75 --x ../shared/data/cifar10-jpeg75x\n"
            f"abs: {outside}\nrun: {repo}/output/runs/a\n\"data_dir\": \"../shared/data/cifar10-jpeg75/\"\n"
            f"ckpt: /opt/w/m.pt\n")
    out = scrub_paths(text, [("../shared/data/cifar10-jpeg75", True), ("/opt/w/m.pt", False)], repo)
    assert out.splitlines() == ["--data-dir data/cifar10-jpeg75 --x ../shared/data/cifar10-jpeg75x",
                                "abs: data/cifar10-jpeg75", "run: output/runs/a",
                                "\"data_dir\": \"data/cifar10-jpeg75/\"", "ckpt: PATH/TO/m.pt"]


def test_run_paths_lists_path_options_and_a_local_hf_dataset(tmp_path):
    args = {"data_dir": "/d/cifar", "train_list": None, "initial_checkpoint": "/w/init.safetensors",
            "output": "output/train", "dataset": f"hfds/{tmp_path}", "lr": 0.1}
    assert sorted(run_paths(args)) == sorted([("/d/cifar", True), ("/w/init.safetensors", False),
                                              ("output/train", False), (str(tmp_path), True)])
    assert run_paths({"dataset": "hfds/user/name"}) == []  # a Hub id, not a folder


def test_changed_options_compares_the_files_paths_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shared" / "cifar").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cifar").symlink_to(tmp_path / "shared" / "cifar")
    saved = {"data_dir": "shared/cifar", "seed": 0}
    assert same_path("data/cifar", str(tmp_path / "shared" / "cifar"))
    assert changed_options(saved, {"data_dir": "data/cifar", "seed": 0}) == []
    assert changed_options(saved, {"data_dir": "other", "seed": 0}) == ["data_dir: 'shared/cifar' -> 'other'"]
    assert changed_options({"data_dir": None}, {"data_dir": "other"}) == ["data_dir: None -> 'other'"]


def test_publish_names_only_paths_inside_the_repository(tmp_path):
    repo = tmp_path / "repo"
    out = repo / "output" / "ablation" / "g"
    cells, runs, _ = fake_grid(out)
    data = tmp_path / "datasets" / "cifar10-jpeg75"
    for d in runs.iterdir():
        (d / "train_args.yaml").write_text(yaml.safe_dump({"data_dir": str(data), "output": str(runs), "seed": 0}))
        (d / "README.md").write_text(f"trained on `{data}` into {d}\n")
        (d / "model.safetensors").write_bytes(f"{data}".encode())  # binary files are copied as they are
    (out / "grid.json").write_text(json.dumps({"out": str(out), "cells": {"x": {"command": f"--data-dir {data}"}}}))
    assert publish(out, repo / "results" / "g", cells, models=True, root=repo) == 7
    pub = repo / "results" / "g"
    texts = {f: f.read_text() for f in pub.rglob("*") if f.suffix in (".md", ".json", ".yaml")}
    assert texts and not [f for f, t in texts.items() if str(tmp_path) in t or OUTSIDE.search(t)]
    args = yaml.safe_load(next(pub.rglob("train_args.yaml")).read_text())
    assert args["data_dir"] == "data/cifar10-jpeg75" and args["output"] == "output/ablation/g/runs"
    assert json.loads((pub / "grid.json").read_text())["cells"]["x"]["command"] == "--data-dir data/cifar10-jpeg75"
    assert next(pub.rglob("model.safetensors")).read_bytes() == str(data).encode()


def test_committed_results_name_only_paths_inside_the_repository():
    """Everything under results/ (and the model cards) is for readers elsewhere: no machine's absolute paths, no
    path out of the repository (a dataset is named by its place in data/)."""
    bad = []
    for folder in ("results", "model_cards"):
        for f in (ROOT / folder).rglob("*"):
            if f.is_file() and f.suffix in (".md", ".csv", ".json", ".yaml", ".txt"):
                bad += [f"{f.relative_to(ROOT)}: {m.group(0)!r}" for m in OUTSIDE.finditer(f.read_text())]
    assert not bad, bad


@pytest.mark.parametrize("text", ["../shared/x", "see /home/u/run", "'/tmp/a/b'", "/work/main/out"])
def test_the_outside_pattern_would_catch(text):
    assert OUTSIDE.search(text)
