"""Hub: model card, push, download and their errors, with the real huggingface_hub client talking to the
Hub-protocol server of tests/hub_server.py on 127.0.0.1 (issue: Hub: model cards, calibration reports,
push and download).

huggingface_hub reads HF_ENDPOINT / HF_HOME / HF_HUB_OFFLINE once, at import, so everything that talks to
the server runs in a subprocess with those set; the server, its recorded requests and the checks stay here.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hub_server import FakeHub, closed_port_url

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "recipes" / "train.py"
PUSH = ROOT / "recipes" / "push_to_hub.py"
TOKEN = "hf_test_secret_token_9f3c"
from conftest import TINY_RUN_ARGS as TINY


def _copy_run(run: Path, dst: Path, checkpoints: bool = True) -> Path:
    shutil.copytree(run, dst, ignore=None if checkpoints else shutil.ignore_patterns("checkpoints"))
    return dst


# ---- the server and the client's environment -----------------------------------------------------------
@pytest.fixture(scope="module")
def hub():
    with FakeHub(token=TOKEN, user="user") as server:
        yield server


def hub_env(endpoint: str, hf_home: Path, *, xet: bool = False) -> dict:
    """Environment of a client process: our endpoint, an empty HF home (no saved token), online."""
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HOME=str(hf_home), HF_HUB_CACHE=str(hf_home / "hub"),
               HF_HUB_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               OMP_NUM_THREADS="2", PYTHONHASHSEED="0")
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_DISABLE_XET"):
        env.pop(k, None)
    if not xet:
        env["HF_HUB_DISABLE_XET"] = "1"  # no Xet storage: every file goes through the NDJSON commit
    return env


def run_python(code: str, env: dict, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


ROUND_TRIP = r"""
import json, sys
import torch, timm
import lt_registry  # registers resnet20_cifar with timm
from safetensors.torch import load_file, save_file
from lt_registry.hub import from_pretrained, push_to_hub

run, out, token = sys.argv[1:4]
url = push_to_hub(run, "user/tiny", token=token)
x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
ref = timm.create_model("resnet20_cifar", num_classes=10).eval()
ref.load_state_dict(load_file(f"{run}/model.safetensors"))   # the original run folder's weights
via_timm = timm.create_model("hf-hub:user/tiny", pretrained=True).eval()
via_lt, prior = from_pretrained("hf-hub:user/tiny")
with torch.no_grad():
    save_file({"ref": ref(x), "timm": via_timm(x), "lt": via_lt(x)}, f"{out}/logits.safetensors")
json.dump({"url": url, "counts": prior.raw_counts.tolist(), "lt_training": via_lt.training,
           "hf_hub_id": via_timm.pretrained_cfg.get("hf_hub_id")}, open(f"{out}/result.json", "w"))
"""


@pytest.fixture(scope="module")
def pushed(hub, tiny_run, tmp_path_factory):
    """Push a copy of the tiny run (checkpoints/ included) to user/tiny and download it two ways."""
    base = tmp_path_factory.mktemp("round_trip")
    run = _copy_run(tiny_run, base / "run")
    home = base / "hf_home"
    p = run_python(ROUND_TRIP, hub_env(hub.url, home), run, base, TOKEN)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return {"run": run, "home": home, "base": base, "result": json.loads((base / "result.json").read_text())}


# ---- round trip ----------------------------------------------------------------------------------------
def test_push_then_download_gives_identical_logits_and_prior(pushed, hub, tiny_run):
    from safetensors.torch import load_file

    logits = load_file(pushed["base"] / "logits.safetensors")
    assert torch.equal(logits["timm"], logits["ref"])  # timm.create_model("hf-hub:user/tiny", pretrained=True)
    assert torch.equal(logits["lt"], logits["ref"])  # lt_registry.hub.from_pretrained("hf-hub:user/tiny")
    assert not torch.equal(logits["ref"][0], logits["ref"][1])  # not a constant model
    res = pushed["result"]
    cfg = json.loads((tiny_run / "config.json").read_text())
    assert res["counts"] == cfg["lt"]["class_counts"] == [124, 96, 74, 57, 44, 34, 26, 20, 16, 12]
    assert res["lt_training"] is False and res["hf_hub_id"] == "user/tiny"
    assert res["url"] == f"{hub.url}/user/tiny"
    # the bytes on the server are the run folder's, and the client went through the cache we gave it
    assert hub.files("user/tiny")["model.safetensors"] == (tiny_run / "model.safetensors").read_bytes()
    snapshots = list((pushed["home"] / "hub" / "models--user--tiny" / "snapshots").iterdir())
    weights = (tiny_run / "model.safetensors").read_bytes()
    assert snapshots and (snapshots[0] / "model.safetensors").read_bytes() == weights
    # only the Hub API this server implements was used, without Xet
    assert hub.unhandled == []
    assert not any(k.startswith("x-xet") for r in hub.requests for k in r.headers)
    paths = hub.request_paths()
    for needed in ("POST /api/repos/create", "POST /api/models/user/tiny/preupload/main",
                   "POST /api/models/user/tiny/commit/main", "HEAD /user/tiny/resolve/main/config.json",
                   "GET /user/tiny/resolve/main/model.safetensors", "GET /api/models/user/tiny/revision/main"):
        assert needed in paths, (needed, paths)


def test_model_card_metadata_parses_back_into_the_run_metrics(pushed, hub):
    from huggingface_hub import ModelCard

    final = json.loads((pushed["run"] / "metrics.json").read_text())["final"]
    readme = hub.files("user/tiny")["README.md"].decode()
    assert readme == (pushed["run"] / "README.md").read_text()
    card = ModelCard(readme)
    got = {r.metric_type: r.metric_value for r in card.data.eval_results}
    expected = {"accuracy": final["top1"], "ece": final["ece"], "mce": final["mce"],
                "accuracy_many": final["many"], "accuracy_medium": final["medium"], "accuracy_few": final["few"]}
    for k, v in expected.items():
        assert got[k] == v, k
    r0 = card.data.eval_results[0]
    assert r0.dataset_type == "digits_lt" and r0.dataset_split == "test" and r0.task_type == "image-classification"
    assert card.data.library_name == "timm" and card.data.model_name == "tiny"
    assert 'timm.create_model("hf-hub:user/tiny", pretrained=True)' in card.text
    assert "calibration/reliability.png" in card.text and "<user>/<repo>" not in card.text
    info_card = ModelCard((pushed["run"] / "README.md").read_text())  # ModelCard.load's parse of a file
    assert [r.metric_value for r in info_card.data.eval_results] == [r.metric_value for r in card.data.eval_results]


def test_card_usage_snippet_follows_the_loss(tiny_run, tmp_path):
    from huggingface_hub import ModelCard

    from lt_registry.card import build_model_card
    from lt_registry.losses import assumed_test_prior

    assert [assumed_test_prior(n) for n in ("bayias", "la", "balanced_softmax", "ce", "ldam", None)] == \
        ["uniform", "uniform", "uniform", "train", "train", "train"]
    bayias = build_model_card(tiny_run, "user/tiny")
    assert "shifted = adapt_logits_to_prior(logits, new_prior)  #" in bayias.text
    run = _copy_run(tiny_run, tmp_path / "run", checkpoints=False)
    cfg = json.loads((run / "config.json").read_text())
    cfg["lt"].update(loss="ce", mixer="unimix")
    (run / "config.json").write_text(json.dumps(cfg))
    ce = ModelCard(str(build_model_card(run, "user/ce")))  # through text, as the Hub reads it
    assert "adapt_logits_to_prior(logits, new_prior, assumed_prior=prior)" in ce.text
    assert "using the **UniMix** mixer and the **CE** loss" in ce.text
    assert "loss-ce" in ce.data.tags and ce.data.model_name == "ce"


def test_card_names_the_training_data_source(tiny_run, tmp_path):
    import yaml
    from huggingface_hub import ModelCard

    from lt_registry.card import build_model_card

    run = _copy_run(tiny_run, tmp_path / "run", checkpoints=False)
    cfg = json.loads((run / "config.json").read_text())
    cfg["lt"].update(dataset="cifar10_lt")
    (run / "config.json").write_text(json.dumps(cfg))
    args_path = run / "train_args.yaml"
    args = yaml.safe_load(args_path.read_text())
    args["data_dir"] = None  # downloaded from the Hub: the card's metadata names that dataset
    args_path.write_text(yaml.safe_dump(args))
    hub_card = ModelCard(str(build_model_card(run, "user/c10")))
    assert hub_card.data.datasets == ["uoft-cs/cifar10"]
    assert "| training data | Hub dataset uoft-cs/cifar10 |" in hub_card.text
    # a local copy (here the JPEG q75 one): the folder's name, never its full path, and no Hub dataset claimed
    args["data_dir"] = "/home/someone/private/cifar10-jpeg75"
    args_path.write_text(yaml.safe_dump(args))
    local_card = ModelCard(str(build_model_card(run, "user/c10")))
    assert local_card.data.datasets is None and "uoft-cs/cifar10" not in local_card.text
    assert "| training data | local files `cifar10-jpeg75` (--data-dir) |" in local_card.text
    assert "not downloaded from the Hub" in local_card.text and "/home/someone" not in local_card.text


def test_push_writes_the_token_nowhere_and_leaves_checkpoints_out(pushed, hub):
    secret = TOKEN.encode()
    # the token was used (as a header) ...
    writes = [r for r in hub.requests if r.method == "POST"]
    assert writes and all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in writes)
    # ... but is in no request body, no uploaded file, no file of the run folder, no file of the HF cache
    assert not [r.path for r in hub.requests if secret in r.body]
    uploaded = [(path, content) for repo, path, content in hub.uploads if repo == "user/tiny"]
    assert uploaded and not [p for p, c in uploaded if secret in c]
    on_disk = [f for d in (pushed["run"], pushed["home"]) for f in d.rglob("*") if f.is_file()]
    assert len(on_disk) > 10
    assert not [str(f) for f in on_disk if secret in f.read_bytes()]
    # checkpoints/ existed locally and stayed there
    assert (pushed["run"] / "checkpoints" / "latest").is_file()
    files = set(hub.files("user/tiny"))
    assert not [p for p, _ in uploaded if p.startswith("checkpoints")]
    assert {"config.json", "model.safetensors", "metrics.json", "README.md", "train_args.yaml", "confusion.png",
            "calibration/reliability.png", "calibration/bins.csv"} <= files
    assert not [f for f in files if f.startswith("checkpoints")]
    # the uploaded options name no path of this machine (the run was trained under pytest's temp folder, outside
    # the repository: its output folder goes up as PATH/TO/<name>); the local file keeps the real one
    local = (pushed["run"] / "train_args.yaml").read_text()
    up = hub.files("user/tiny")["train_args.yaml"].decode()
    assert "pytest-" in local and "pytest-" not in up and "\noutput: PATH/TO/" in up
    assert yaml.safe_load(up).keys() == yaml.safe_load(local).keys()


def test_push_recipe_with_the_default_client_path(hub, tiny_run, tmp_path):
    # Xet left enabled (what a user gets): the server answers "regular" for every file, so the client's
    # pipelined upload still commits everything through the NDJSON endpoint
    run = _copy_run(tiny_run, tmp_path / "run")
    env = hub_env(hub.url, tmp_path / "hf_home", xet=True)
    env["HF_TOKEN"] = TOKEN
    p = subprocess.run([sys.executable, str(PUSH), str(run), "user/tiny-cli", "--private"], capture_output=True,
                       text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert f"{hub.url}/user/tiny-cli" in p.stdout
    assert hub.repos["user/tiny-cli"].private
    files = hub.files("user/tiny-cli")
    assert files["model.safetensors"] == (tiny_run / "model.safetensors").read_bytes()
    assert not [f for f in files if f.startswith("checkpoints")]
    assert hub.unhandled == []


# ---- errors: one HubError with one clear message each --------------------------------------------------
ERRORS = r"""
import json, sys
from lt_registry.hub import HubError, from_pretrained, push_to_hub

run, token, cases = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
calls = {
    "download": lambda: from_pretrained("hf-hub:user/tiny"),
    "download_missing_repo": lambda: from_pretrained("hf-hub:user/does-not-exist"),
    "download_missing_revision": lambda: from_pretrained("hf-hub:user/tiny@v9"),
    "push": lambda: push_to_hub(run, "user/err", token=token),
    "push_without_token": lambda: push_to_hub(run, "user/err"),
    "push_wrong_token": lambda: push_to_hub(run, "user/err", token="hf_not_the_token"),
    "push_other_namespace": lambda: push_to_hub(run, "someone-else/err", token=token),
}
out = {}
for case in cases:
    try:
        calls[case]()
        out[case] = "NO ERROR"
    except HubError as e:
        out[case] = "HubError: " + str(e)
    except Exception as e:
        out[case] = f"{type(e).__module__}.{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def _errors(env: dict, run: Path, *cases: str) -> dict:
    p = run_python(ERRORS, env, run, TOKEN, ",".join(cases))
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_hub_unreachable_and_missing_token(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "run", checkpoints=False)
    got = _errors(hub_env(closed_port_url(), tmp_path / "hf_home"), run,
                  "download", "push", "push_without_token")
    assert got["download"].startswith("HubError: Hub unreachable at http://127.0.0.1:"), got
    assert "while downloading 'user/tiny'" in got["download"]
    assert got["push"].startswith("HubError: Hub unreachable at http://127.0.0.1:"), got
    assert "nothing was pushed" in got["push"]
    assert got["push_without_token"].startswith("HubError: no Hub token for the push"), got
    assert "HF_TOKEN" in got["push_without_token"]


def test_missing_repo_revision_and_refused_pushes(pushed, hub, tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "run", checkpoints=False)
    got = _errors(hub_env(hub.url, tmp_path / "hf_home"), run, "download_missing_repo", "download_missing_revision",
                  "push_wrong_token", "push_other_namespace")
    assert got["download_missing_repo"].startswith("HubError: Hub repo 'user/does-not-exist' not found at"), got
    assert got["download_missing_revision"] == "HubError: revision 'v9' of Hub repo 'user/tiny' not found", got
    assert got["push_wrong_token"].startswith("HubError: the Hub at") and "rejected the token (HTTP 401)" in \
        got["push_wrong_token"], got
    assert got["push_other_namespace"].startswith("HubError: the token has no write access to 'someone-else' "
                                                  "(HTTP 403)"), got
    assert "user/err" not in hub.repos and "someone-else/err" not in hub.repos


# -- run folders that are wrong: no network involved, checked in this process ---------------------------
def _not_a_run(d: Path) -> None:
    for name in ("config.json", "model.safetensors"):
        (d / name).unlink()


def _num_classes_everywhere(d: Path) -> None:  # config says 7 classes, the weights have 10
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_classes"] = cfg["model_args"]["num_classes"] = cfg["pretrained_cfg"]["num_classes"] = 7
    cfg["lt"]["class_counts"] = cfg["lt"]["class_counts"][:7]
    (d / "config.json").write_text(json.dumps(cfg))


def _num_classes_top_level(d: Path) -> None:  # only the top-level number edited: the model still has 10 outputs
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_classes"] = 7
    cfg["lt"]["class_counts"] = cfg["lt"]["class_counts"][:7]
    (d / "config.json").write_text(json.dumps(cfg))


def _num_classes_vs_counts(d: Path) -> None:
    cfg = json.loads((d / "config.json").read_text())
    cfg["num_classes"] = 7
    (d / "config.json").write_text(json.dumps(cfg))


def _other_models_weights(d: Path) -> None:
    import timm
    from safetensors.torch import save_file

    import lt_registry  # noqa: F401

    save_file(timm.create_model("resnet32_cifar", num_classes=10).state_dict(), str(d / "model.safetensors"))


def _truncated_weights(d: Path) -> None:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


BAD_FOLDERS = {
    "not a run folder": (_not_a_run, r"is not a run folder: missing config\.json, model\.safetensors"),
    "config num_classes (all fields)": (_num_classes_everywhere,
                                        r"the weights in model\.safetensors do not match config\.json "
                                        r"\(resnet20_cifar, 7 classes\): 2 shape mismatch\(es\), e\.g\. fc\."),
    "config num_classes (top level)": (_num_classes_top_level, r"do not match config\.json .* has 10 outputs"),
    "config num_classes vs class counts": (_num_classes_vs_counts,
                                           r"num_classes=7 but its lt block has 10 class counts"),
    "another model's weights": (_other_models_weights, r"the weights in model\.safetensors do not match config\.json "
                                r"\(resnet20_cifar, 10 classes\): \d+ unexpected tensor\(s\)"),
    "truncated weights": (_truncated_weights, r"model\.safetensors is corrupt or not a safetensors file"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_bad_run_folder_fails_load_and_push_with_one_message(case, tiny_run, tmp_path, monkeypatch):
    from lt_registry.hub import HubError, from_pretrained, push_to_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    damage, message = BAD_FOLDERS[case]
    run = _copy_run(tiny_run, tmp_path / "run", checkpoints=False)
    damage(run)
    for load in (lambda: from_pretrained(run), lambda: from_pretrained(f"local-dir:{run}")):
        with pytest.raises(HubError, match=message) as e:
            load()
        assert "\n" not in str(e.value)
    # a push checks the folder before anything goes out (the endpoint is never contacted)
    with pytest.raises(HubError, match=message):
        push_to_hub(run, "user/bad", token=TOKEN)


def test_local_dir_loads_the_same_model(tiny_run):
    import timm

    import lt_registry  # noqa: F401
    from lt_registry.hub import from_pretrained

    a = timm.create_model(f"local-dir:{tiny_run}", pretrained=True).eval()
    b, prior = from_pretrained(tiny_run)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert prior.raw_counts.tolist() == json.loads((tiny_run / "config.json").read_text())["lt"]["class_counts"]


# ---- the recipes that talk to the Hub ------------------------------------------------------------------
def test_evaluate_recipe_reads_a_hub_checkpoint(pushed, hub, tmp_path):
    out = tmp_path / "eval"
    cmd = [sys.executable, str(ROOT / "recipes" / "evaluate.py"), "hf-hub:user/tiny", "--output", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=hub_env(hub.url, tmp_path / "hf_home"), cwd=ROOT,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    got = json.loads((out / "metrics.json").read_text())
    ref = json.loads((pushed["run"] / "metrics.json").read_text())["final"]
    assert got["final"]["top1"] == ref["top1"] and got["final"]["per_class_accuracy"] == ref["per_class_accuracy"]
    assert got["evaluation"]["checkpoint"] == "hf-hub:user/tiny"


def test_train_recipe_pushes_when_asked(hub, tmp_path):
    env = hub_env(hub.url, tmp_path / "hf_home")
    env["HF_TOKEN"] = TOKEN
    cmd = [sys.executable, str(TRAIN), "--output", str(tmp_path), "--experiment", "pushed", *TINY, "--epochs", "1",
           "--push-to-hub", "--hub-model-id", "user/from-train"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert f"pushed to {hub.url}/user/from-train" in p.stdout
    files = hub.files("user/from-train")
    assert files["model.safetensors"] == (tmp_path / "pushed" / "model.safetensors").read_bytes()
    assert 'hf-hub:user/from-train' in files["README.md"].decode()
    assert not [f for f in files if f.startswith("checkpoints")]
    assert not [f for f in (tmp_path / "pushed").rglob("*") if f.is_file() and TOKEN.encode() in f.read_bytes()]


def test_card_template_found_after_a_regular_install(tmp_path, monkeypatch):
    """Outside a clone (site-packages/lt_registry), the template comes from <prefix>/share (setup.cfg data_files)."""
    import sys

    from lt_registry import card

    assert card.CARD_TEMPLATE.is_file()
    site = tmp_path / "site-packages" / "lt_registry"
    site.mkdir(parents=True)
    monkeypatch.setattr(card, "__file__", str(site / "card.py"))
    shared = tmp_path / "prefix" / "share" / "lt_registry" / "model_cards" / "lt_model_card.md"
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "prefix"))
    assert card._card_template() == site.parent / "model_cards" / "lt_model_card.md"  # neither exists: the first
    shared.parent.mkdir(parents=True)
    shared.write_text(card.CARD_TEMPLATE.read_text())
    assert card._card_template() == shared
