"""Per-segment provenance of a training run: every process lifetime that trained it (fresh start or resume) with
its span, library commit, machine and wall time, kept in the checkpoints (so a killed segment stays on record),
written to metrics.json, shown in the model card and in the grid report."""
import json

import torch
from conftest import fake_grid

from lt_registry.engine import TrainState
from lt_registry.grid.results import collect_results, results_markdown
from lt_registry.provenance import describe_segments, run_segment


def _segment(commit, started="2026-12-03T07:34:30+0000"):
    return {"started": started, "resumed_from": None, "git_commit": commit, "git_dirty": False,
            "machine": "1 process(es) on cpu; 2 CPUs; torch 2.14.1"}


def test_segments_follow_the_run_through_checkpoints_and_resumes():
    first = TrainState()
    seg = run_segment(torch.device("cpu"))
    assert seg["resumed_from"] is None and "on cpu" in seg["machine"] and "CPUs" in seg["machine"]
    assert "/" not in seg["machine"]                     # no paths
    first.begin_segment(seg)
    first.epoch = 50
    first.end_segment_here(3000.0)                      # what the epoch-50 checkpoint holds
    saved = first.state_dict()

    second = TrainState()                               # a new process resumes from that checkpoint
    second.load_state_dict(saved)
    resumed = {"checkpoint": "epoch_0049", "epoch": 50, "step": 0}
    second.begin_segment(dict(_segment("def5678", "2026-12-03T11:56:41+0000"), resumed_from=resumed))
    second.epoch, second.step = 120, 7
    second.end_segment_here(4200.0)
    a, b = second.segments
    assert (a["from_epoch"], a["to_epoch"], a["wall_s"]) == (0, 50, 3000.0)
    assert (b["from_epoch"], b["from_step"], b["to_epoch"], b["to_step"], b["wall_s"]) == (50, 0, 120, 7, 4200.0)
    assert second.resumes == [resumed]
    text = describe_segments(second.segments)
    assert text.startswith("epoch 1 to epoch 50 at ")
    assert "; epoch 51 to epoch 121 batch 7 at def5678 (1 process(es) on cpu; 2 CPUs; torch 2.14.1, 1h10m00s, " \
           "started 2026-12-03T11:56:41+0000)" in text


def test_checkpoints_from_before_segments_keep_their_resume_points():
    legacy = TrainState().state_dict()
    del legacy["segments"]
    legacy["resumes"] = json.dumps([{"checkpoint": "epoch_0049", "epoch": 50, "step": 0}])
    state = TrainState()
    state.load_state_dict(legacy)
    assert state.resumes == [{"checkpoint": "epoch_0049", "epoch": 50, "step": 0}]
    assert describe_segments(state.segments).count("written before segments were recorded") == 2


def test_grid_report_names_every_commit_and_segment_of_a_run(tmp_path):
    cells, runs, records = fake_grid(tmp_path)
    name = "cifar10_lt-r100-none-ce-s0"
    m = json.loads((runs / name / "metrics.json").read_text())
    m["segments"] = [dict(_segment("aaa1111"), from_epoch=0, from_step=0, to_epoch=50, to_step=0, wall_s=7200.0),
                     dict(_segment("bbb2222"), from_epoch=50, from_step=0, to_epoch=200, to_step=0, wall_s=7000.0)]
    (runs / name / "metrics.json").write_text(json.dumps(m))
    rows = {r["name"]: r for r in collect_results(cells, runs, records)}
    assert rows[name]["commit"] == "aaa1111+bbb2222"
    assert rows["cifar10_lt-r100-none-ce-s1"]["commit"] == "abc" and rows["cifar10_lt-r100-none-ce-s1"]["trained_in"] is None
    md = results_markdown(list(rows.values()))
    section = md[md.index("## Provenance"):md.index("## Failed cells")]
    assert f"- `{name}`: epoch 1 to epoch 50 at aaa1111" in section and "epoch 51 to epoch 200 at bbb2222" in section
    assert "- `cifar10_lt-r100-none-ce-s1`: commit abc (the run predates per-segment records)" in section
    assert "cifar10_lt-r100-unimix-ce-s1" not in section  # failed cells are listed under their own heading
