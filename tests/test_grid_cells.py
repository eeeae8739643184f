"""lt_registry.grid.cells and .gridfile: axis specs, cells, expansion, the status vocabulary, the grid-file schema."""
import dataclasses
import json

import pytest

from lt_registry import LOSSES, MIXERS
from lt_registry.grid import cells as C
from lt_registry.grid.cells import (Cell, GridError, LossSpec, MixSpec, canonical_order, cell_from_run_dir,
                                    cell_matches, expand_grid, make_cell)
from lt_registry.grid.gridfile import GRID_FILE_HELP, GRID_KEYS, load_grid_file, plan_grid, resolve_grid


def test_specs_expand_to_train_flags():
    assert MixSpec.parse("unimix:official").train_flags() == ["--mix", "unimix", "--preset", "official"]
    assert MixSpec.parse("unimix").train_flags() == ["--mix", "unimix", "--preset", "official"]  # train.py's default
    assert MixSpec.parse("unimix:paper").train_flags() == ["--mix", "unimix", "--preset", "paper"]
    assert MixSpec.parse("unimix:official") == MixSpec.parse("unimix")
    # folder names leave out the 'paper' preset only, so a name always says which preset trained it
    assert MixSpec.parse("unimix:paper").token == "unimix" and MixSpec.parse("unimix").token == "unimix.official"
    assert MixSpec.parse("unimix:paper").spec == "unimix:paper" and MixSpec.parse("unimix:paper").label == "UniMix (paper)"
    assert MixSpec.parse("mixup").train_flags() == ["--mix", "mixup"]
    assert LossSpec.parse("ldam+drw").train_flags() == ["--loss", "ldam", "--drw"]
    assert LossSpec.parse("bayias").train_flags() == ["--loss", "bayias"]
    assert MixSpec.parse("unimix:official").label == "UniMix (official)" and LossSpec.parse("ldam+drw").label == "LDAM+DRW"
    for bad, msg in (("mixup:official", "unimix only"), ("unimix:fast", "unknown UniMix preset")):
        with pytest.raises(GridError, match=msg):
            MixSpec.parse(bad)
    for bad in ("ldam+foo", "ldam+drw+drw", "+drw"):
        with pytest.raises(ValueError, match="NAME\\+drw"):  # GridError is a ValueError
            LossSpec.parse(bad)
    c = make_cell("cifar10_lt", 100, "unimix:official", "ldam+drw", 1)
    assert c.name == "cifar10_lt-r100-unimix.official-ldam+drw-s1"
    assert Cell.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    with pytest.raises(GridError, match="variant name"):
        make_cell("d", None, "none", "ce", 0, variant="a b")


def test_labels_and_presets_come_from_the_components():
    from lt_registry import UNIMIX_PRESETS

    for name in MIXERS.list():
        assert MixSpec.parse(name).label.startswith(MIXERS.label(name))
    assert LossSpec.parse("bayias").label == LOSSES.label("bayias") == "Bayias"
    for preset in UNIMIX_PRESETS:
        assert MixSpec.parse(f"unimix:{preset}").preset == preset


def test_cell_matching_by_bare_name_and_spec():
    uo = make_cell("d", None, "unimix:official", "ldam+drw", 0)
    assert cell_matches(uo, {"mix": "unimix"}) and cell_matches(uo, {"loss": "ldam"})
    assert cell_matches(uo, {"mix": "unimix:official", "loss": "ldam+drw"})
    assert not cell_matches(uo, {"mix": "unimix:paper"}) and not cell_matches(uo, {"loss": ["ce", "bayias"]})
    assert not cell_matches(make_cell("d", None, "unimix", "ldam", 0), {"loss": "ldam+drw"})
    with pytest.raises(GridError, match="unknown match key 'mixer'"):
        cell_matches(uo, {"mixer": "none"})


def test_expansion_order_variants_overrides_and_canonical_names():
    cells = expand_grid(["none", "identity"], ["cross_entropy"], ["digits_lt"], seed=[0],
                        variants=[{"name": "v", "mix": "unimix", "loss": "ce", "train_args": {"epochs": 3}}],
                        cells=[{"mix": "none", "train_args": ["--lr", "0.05"]}])
    # alias = the same cell; bare `unimix` is train.py's default preset ('official'), named in the folder
    assert [c.name for c in cells] == ["digits_lt-none-ce-s0", "digits_lt-unimix.official-ce-s0-v"]
    assert cells[0].args[-2:] == ("--lr", "0.05") and cells[1].args[-2:] == ("--epochs", "3")
    assert cells[1].mix.spec == "unimix:official" and ("--preset", "official") in zip(cells[1].args, cells[1].args[1:])
    assert expand_grid(["none"], ["ce", "la"], ["digits_lt"], cells=[{"loss": "la", "skip": True}])[0].loss.name == "ce"
    for kwargs, msg in (({"mix": ["unimx"]}, "Unknown mixer 'unimx'. Did you mean 'unimix'"),
                        ({"dataset": ["cifar11_lt"]}, "Unknown dataset 'cifar11_lt'"),
                        ({"common_args": ["--drw"]}, "use a loss spec such as 'ldam\\+drw'"),
                        ({"variants": [{"mixer": "none"}]}, "unknown keys \\['mixer'\\]"),
                        ({"cells": [{"skip": True}]}, "names no cell")):
        args = {"mix": ["none"], "loss": ["ce"], "dataset": ["digits_lt"], **kwargs}
        with pytest.raises(GridError, match=msg):
            expand_grid(args.pop("mix"), args.pop("loss"), args.pop("dataset"), **args)


def test_one_status_vocabulary(tmp_path):
    assert C.STATUSES == ("ok", "failed", "interrupted", "incomplete", "running", "pending")
    run = tmp_path / "cell"
    assert C.folder_status(run) == C.PENDING
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "latest").write_text("epoch_0001")
    assert C.folder_status(run) == C.INCOMPLETE
    assert C.cell_status(run, {"status": "failed"}) == C.FAILED        # the runner's record wins over the folder
    assert C.cell_status(run, {"status": "running"}) == C.INCOMPLETE   # a stale 'running' does not
    (run / "metrics.json").write_text("{}")
    assert C.folder_status(run) == C.cell_status(run, {"status": "failed"}) == C.OK


def test_cells_from_run_folders_in_the_registries_order(tmp_path):
    for mix, preset, loss in (("unimix", "official", "ce"), ("none", None, "bayias"), ("unimix", "paper", "ce"),
                              ("none", None, "ce"), ("mixup", None, "la")):
        d = tmp_path / f"{mix}-{preset}-{loss}"
        d.mkdir()
        (d / "train_args.yaml").write_text(f"dataset: cifar10_lt\nimb_factor: 100.0\nmix: {mix}\npreset: {preset or 'paper'}"
                                           f"\nloss: {loss}\ndrw: false\ndrw_epoch: null\nseed: 0\nepochs: 200\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "train_args.yaml").write_text("mix: [unclosed\n")
    assert cell_from_run_dir(tmp_path / "broken") is None and cell_from_run_dir(tmp_path / "nothing") is None
    cells = canonical_order(filter(None, map(cell_from_run_dir, sorted(tmp_path.iterdir()))))
    assert [(c.mix.spec, c.loss.spec) for c in cells] == [
        ("none", "ce"), ("none", "bayias"), ("mixup", "la"), ("unimix:paper", "ce"), ("unimix:official", "ce")]
    assert [c.mix.token for c in cells[3:]] == ["unimix", "unimix.official"]  # folder names leave out 'paper' only


def test_a_component_registered_outside_sorts_and_labels_itself(outside_components):
    cells = expand_grid(["unimix", "outside_mix", "none"], ["bayias", "outside_ce", "ce"], ["digits_lt"])
    ordered = canonical_order(cells)
    assert [c.mix.label for c in ordered][::3] == ["None", "OutsideMix", "UniMix (official)"]  # bare = the default
    assert [c.loss.label for c in ordered][:3] == ["CE", "OutsideCE", "Bayias"]


# ---- the grid file ----------------------------------------------------------------------------------------
def test_grid_file_schema_and_flags_over_the_file(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text("mix: none\nloss: [ce]\nimb-factor: 100\ntrain_config: paper\njobs: 3\n"
                    "train_args: {epochs: 2, no-progress: true}\n")
    assert load_grid_file(grid)["imb_factor"] == 100
    s = resolve_grid({"seed": [4, 5], "jobs": None}, str(grid), ["--lr", "0.1"], paper_configs="cfg")
    assert (s.name, s.out.as_posix(), s.mix, s.seed, s.imb_factor, s.jobs) == ("g", "output/ablation/g", ["none"],
                                                                             [4, 5], [100.0], 3)
    assert s.train_config == "cfg/{dataset}_r{imb_factor}.yaml"
    assert s.train_args == ["--epochs", "2", "--no-progress", "--lr", "0.1"]
    assert resolve_grid({"dataset": ["cifar10_lt"], "imb_factor": [100.0, 50.0]}).name == "cifar10_lt-r100+50"
    assert all(k in GRID_FILE_HELP for k in GRID_KEYS)
    for text, msg in (("losses: [ce]\n", "unknown keys \\['losses'\\]"), ("- a\n", "must hold a mapping"),
                      ("cells: {mix: none}\n", "'cells' must be a list"), ("name: 'a b'\n", "grid name 'a b'")):
        grid.write_text(text)
        with pytest.raises(GridError, match=msg):
            resolve_grid({}, str(grid))
    with pytest.raises(GridError, match="--jobs must be >= 1"):
        resolve_grid({"jobs": 0})


def test_plan_resolves_train_options_and_flags_schedules_outside_the_run(tmp_path):
    s = resolve_grid({"mix": ["none"], "loss": ["ce", "bayias"], "out": str(tmp_path)}, None,
                     ["--epochs", "4", "--decay-milestones", "2", "9", "--model", "resnet20_cifar"])
    done = tmp_path / "runs" / "digits_lt-none-ce-s0"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    (done / "train_args.yaml").write_text("epochs: 4\nlr: 0.2\nworkers: 7\n")
    plan = plan_grid(s)
    assert [c.epochs for c in plan.cells] == [4, 4] and plan.options[plan.cells[0].name]["model"] == "resnet20_cifar"
    assert plan.status == {"digits_lt-none-ce-s0": "ok", "digits_lt-none-bayias-s0": "pending"}
    assert plan.drift == {"digits_lt-none-ce-s0": ["lr: 0.2 -> 0.1"]}  # workers do not change a result
    assert plan.warnings == ["--decay-milestones [9] >= --epochs 4: that LR decay never happens (2 cell(s): "
                             "digits_lt-none-ce-s0, digits_lt-none-bayias-s0)"]
    cmd = dataclasses.replace(s, launcher="accelerate", launcher_args=["--num_processes=2"], jobs=2).command(
        plan.cells[0], "train.py", tmp_path / "runs", resume=True, slot=1)
    assert cmd[cmd.index("--main_process_port") + 1] == "29507" and cmd[cmd.index("--resume") + 1] == str(done)
