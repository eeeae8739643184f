"""Paths in files written for others (docs/method.md §5.2): published copies name only paths inside the
repository; option comparisons follow links."""
from __future__ import annotations

import json
import re
import shutil
import warnings

import pytest
import yaml

from conftest import ROOT, fake_grid
from lt_registry.config import changed_options
from lt_registry.grid.results import publish
from lt_registry.paths import published_path, repository_root, run_paths, same_path, scrub_file, scrub_paths

#: a path leaving the repository, or an absolute path of a machine
OUTSIDE = re.compile(r"(?<![\w.])\.\./|(?<![\w.:/-])/(?:home|work|tmp|root|Users|mnt|var|private|data)\b/")


def test_published_path_inside_outside_and_hub(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    monkeypatch.chdir(repo)
    assert published_path("output/runs/a", repo) == "output/runs/a"
    assert published_path(repo / "output" / "runs" / "a", repo) == "output/runs/a"
    assert published_path(repo, repo) == "."
    assert published_path("../shared/data/cifar10-jpeg75", repo) == "data/cifar10-jpeg75"
    assert published_path(tmp_path / "elsewhere" / "cifar10", repo) == "data/cifar10"
    assert published_path("../ckpt/model.safetensors", repo, data=False) == "PATH/TO/model.safetensors"
    assert published_path("hf-hub:user/model@v1", repo) == "hf-hub:user/model@v1"
    assert published_path(f"local-dir:{tmp_path}/runs/a", repo, data=False) == "local-dir:PATH/TO/a"
    # a dataset linked into the repository keeps the name it has there (links are not followed)
    (tmp_path / "real").mkdir()
    (repo / "data" / "cifar").symlink_to(tmp_path / "real")
    assert published_path("data/cifar", repo) == "data/cifar"


def test_scrub_paths_rewrites_every_form_and_only_whole_paths(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    monkeypatch.chdir(repo)  # relative paths are read from the working directory, as the runs read them
    outside = str(tmp_path / "shared" / "data" / "cifar10-jpeg75")
    text = (f"--data-dir ../shared/data/cifar10-jpeg75 --x ../shared/data/cifar10-jpeg75x\n"
            f"abs: {outside}\nrun: {repo}/output/runs/a\n\"data_dir\": \"../shared/data/cifar10-jpeg75/\"\n"
            f"ckpt: /opt/w/m.pt\n")
    out = scrub_paths(text, [("../shared/data/cifar10-jpeg75", True), ("/opt/w/m.pt", False)], repo)
    assert out.splitlines() == ["--data-dir data/cifar10-jpeg75 --x ../shared/data/cifar10-jpeg75x",
                                "abs: data/cifar10-jpeg75", "run: output/runs/a",
                                "\"data_dir\": \"data/cifar10-jpeg75/\"", "ckpt: PATH/TO/m.pt"]


def test_scrub_paths_longest_first_nested_data_unknown_paths_and_the_root(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    places, model = tmp_path / "places", tmp_path / "w"
    known = [(str(places), True), (f"{places}/lists/train.txt", True), (str(model), False),
             (f"{model}/best/m.pt", False)]
    text = (f"{places}/lists/train.txt {places} {model}/best/m.pt {model}/ "
            f"--data-dir {tmp_path}/other/c100 --out {tmp_path}/o cwd {repo} 45 s /epoch 1/2 http://h/x\n")
    out = scrub_paths(text, known, repo)
    assert out == ("data/places/lists/train.txt data/places PATH/TO/m.pt PATH/TO/w/ "
                   "--data-dir data/c100 --out PATH/TO/o cwd . 45 s /epoch 1/2 http://h/x\n")


def test_scrub_paths_warns_when_two_outside_folders_publish_under_one_name(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    a, b = tmp_path / "a" / "cifar", tmp_path / "b" / "cifar"
    with pytest.warns(UserWarning, match=r"one name 'data/cifar'.*a/cifar.*b/cifar"):
        scrub_paths(f"{a} {b}", [(str(a), True), (str(b), True)], repo)
    # one folder under two spellings, or a list file inside a published folder, is no clash
    b.mkdir(parents=True)
    (tmp_path / "link").symlink_to(b)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = scrub_paths(f"{b} {tmp_path}/link", [(str(b), True), (str(tmp_path / "link"), True),
                                                    (f"{b}/lists/cifar", True)], repo)
    assert out == "data/cifar data/link"


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_scrub_file_sees_escaped_strings_in_yaml_and_json(tmp_path, suffix):
    repo = tmp_path / "repo"
    repo.mkdir()
    data = {"data_dir": str(tmp_path / "café data" / "x"), "seed": 0,
            "cmd": ["train.py", "--data-dir", str(tmp_path / "café data"), "--lr", "0.1"]}
    src = tmp_path / f"a{suffix}"
    src.write_text(yaml.safe_dump(data, width=20) if suffix == ".yaml" else json.dumps(data))
    assert "café" not in src.read_text() or suffix == ".yaml"  # escaped or wrapped as the writers do
    assert scrub_file(src, tmp_path / f"b{suffix}", [], repo)
    got = (yaml.safe_load if suffix == ".yaml" else json.loads)((tmp_path / f"b{suffix}").read_text())
    assert got == {"data_dir": "data/café data/x", "seed": 0, "cmd": ["train.py", "--data-dir", "data/café data",
                                                              "--lr", "0.1"]}
    # nothing to rewrite: the bytes are kept
    (tmp_path / "c.csv").write_bytes(b"a,b\r\n1,2\r\n")
    assert not scrub_file(tmp_path / "c.csv", tmp_path / "d.csv", [], repo)
    assert (tmp_path / "d.csv").read_bytes() == b"a,b\r\n1,2\r\n"


def test_repository_root_is_the_git_work_tree(tmp_path):
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "a" / "b").mkdir(parents=True)
    assert repository_root(tmp_path / "repo" / "a" / "b") == tmp_path / "repo"
    assert repository_root(tmp_path / "loose") == tmp_path / "loose"


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


def test_publish_names_only_paths_inside_the_repository(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    out = repo / "output" / "ablation" / "g"
    cells, runs, _ = fake_grid(out)
    monkeypatch.chdir(tmp_path)  # published from outside the repository
    data = tmp_path / "datasets" / "cifar10-jpeg75"
    for d in runs.iterdir():
        (d / "train_args.yaml").write_text(yaml.safe_dump({"data_dir": str(data), "output": str(runs), "seed": 0}))
        (d / "README.md").write_text(f"trained on `{data}` into {d}\n")
        (d / "model.safetensors").write_bytes(f"{data}".encode())  # binary files are copied as they are
    c100 = tmp_path / "datasets" / "c100"  # a failed cell's own data folder: only in grid.json's commands
    (out / "grid.json").write_text(json.dumps({"out": str(out), "cells": {
        "x": {"command": f"--data-dir {data}"}, "y": {"args": ["--data-dir", str(c100), "--seed", "1"]}}}))
    assert publish(out, repo / "results" / "g", cells, models=True, root=repo) == 7
    pub = repo / "results" / "g"
    texts = {f: f.read_text() for f in pub.rglob("*") if f.suffix in (".md", ".json", ".yaml")}
    assert texts and not [f for f, t in texts.items() if str(tmp_path) in t or OUTSIDE.search(t)]
    args = yaml.safe_load(next(pub.rglob("train_args.yaml")).read_text())
    assert args["data_dir"] == "data/cifar10-jpeg75" and args["output"] == "output/ablation/g/runs"
    grid = json.loads((pub / "grid.json").read_text())
    assert grid["cells"]["x"]["command"] == "--data-dir data/cifar10-jpeg75"
    assert grid["cells"]["y"]["args"] == ["--data-dir", "data/c100", "--seed", "1"]
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


def test_push_uploads_train_args_naming_only_paths_inside_the_repository(tiny_run, tmp_path, monkeypatch):
    from lt_registry.hub import _push_operations

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    args = yaml.safe_load((run / "train_args.yaml").read_text())
    args.update(data_dir=str(tmp_path / "datasets" / "digits"), output=str(tmp_path / "runs"))
    (run / "train_args.yaml").write_text(yaml.safe_dump(args, sort_keys=True))
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "repo" / "sub")  # pushed from a subfolder of a repository
    ops = {op.path_in_repo: op for op in _push_operations(run)}
    assert "train_args.yaml" in ops and not [p for p in ops if p.startswith("checkpoints")]
    up = yaml.safe_load(ops["train_args.yaml"].path_or_fileobj.decode())
    assert up["data_dir"] == "data/digits" and up["output"] == "PATH/TO/runs"
    assert yaml.safe_load((run / "train_args.yaml").read_text())["data_dir"] == str(tmp_path / "datasets" / "digits")
