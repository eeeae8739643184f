"""Prediction from a run folder, with its stored calibration and a chosen deployment prior (docs/method.md §2, §6.1).

    from lt_registry import load_classifier

    clf = load_classifier("hf-hub:<user>/<repo>")            # or a run folder, or local-dir:<path>
    probs = clf.predict_proba(["a.jpg", pil_image])           # [N, C], the balanced (uniform) prior
    probs = clf.predict_proba(images, test_prior="train")     # the training prior
    probs = clf.predict_proba(images, test_prior=[0.5, ...])  # a known deployment prior
    probs = clf.predict_proba(images, test_prior="estimate")  # EM estimate from these images (clf.estimated_prior)

The pipeline: the run's evaluation transform (timm's ``resolve_data_config(model=...)`` over ``config.json``'s
``pretrained_cfg``; already-transformed tensors ``[B, 3, H, W]`` pass as they are) -> model -> ``logit_scale``
(cosine heads) -> the calibrator ``recipes/calibrate.py`` stored (``calibrator.safetensors`` + ``lt.calibration``
in ``config.json``), if any -> the prior move ``z + log pi_target - log pi_assumed``, where ``pi_assumed`` is the
prior the logits encode (:func:`lt_registry.losses.assumed_test_prior`: uniform for ``prior_free`` losses such as
Bayias and LA, the training prior otherwise) -> softmax.

``test_prior="estimate"`` runs the ``prior_em`` calibrator (docs/method.md §6.1, Eq. C3 + C5) over the given
images' logits with the validation fit ``recipes/calibrate.py`` stored beside the calibrator; a run without
one is refused with what to run.

This module also reads and writes that stored calibration (:func:`save_run_calibration`,
:func:`load_run_calibration`); the tensors go to ``calibrator.safetensors`` (prefixed ``calibrator.`` and
``prior_em.``), the JSON-able rest (name, options, extra state) to ``config.json``'s ``lt.calibration``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

from .calibration import Calibrator, create_calibrator
from .hub import HubError, load_run
from .losses import adapt_logits_to_prior, assumed_test_prior
from .prior import ClassPrior

__all__ = ["load_classifier", "Classifier", "PredictError", "CALIBRATOR_FILE", "save_run_calibration",
           "load_run_calibration", "parse_test_prior", "TEST_PRIOR_CHOICES"]

PathLike = Union[str, os.PathLike]
CALIBRATOR_FILE = "calibrator.safetensors"
TEST_PRIOR_CHOICES = ("uniform", "train", "estimate")
_EXTRA = "_extra_state"


class PredictError(ValueError):
    """A user-facing problem with a prediction request (a bad prior, an input that is not an image, a run
    without what the request needs); the message says what to do."""


# ---- the stored calibration --------------------------------------------------------------------------------------
def _split_state(module: Calibrator, prefix: str) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    tensors, extra = {}, {}
    for k, v in module.state_dict().items():
        if k.endswith(_EXTRA):
            extra[k] = v
        else:
            tensors[f"{prefix}.{k}"] = v.detach().cpu().clone().contiguous()
    return tensors, extra


def save_run_calibration(folder: PathLike, calibrator: Calibrator, record: Dict[str, Any],
                         prior_em: Optional[Calibrator] = None) -> Dict[str, Any]:
    """Write ``calibrator.safetensors`` and ``config.json``'s ``lt.calibration`` block (both atomically);
    returns the block. ``record`` adds what the caller wants kept (split, sample count, weights file)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors, extra = _split_state(calibrator, "calibrator")
    block: Dict[str, Any] = {"calibrator": calibrator.name, "file": CALIBRATOR_FILE, "extra_state": extra,
                             **record}
    if prior_em is not None:
        em_tensors, em_extra = _split_state(prior_em, "prior_em")
        tensors.update(em_tensors)
        block["prior_em"] = {"calibrator": prior_em.name, "extra_state": em_extra}
    else:
        block.setdefault("prior_em", None)
    tmp = folder / (CALIBRATOR_FILE + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "calibrator": calibrator.name})
    os.replace(tmp, folder / CALIBRATOR_FILE)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.setdefault("lt", {})["calibration"] = block
    tmp = folder / "config.json.tmp"
    tmp.write_text(json.dumps(cfg, indent=2, allow_nan=False))
    os.replace(tmp, folder / "config.json")
    return block


def _rebuild(name: str, extra: Dict[str, Any], tensors: Dict[str, torch.Tensor], prefix: str) -> Calibrator:
    cal = create_calibrator(name)
    state: Dict[str, Any] = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
    state.update(extra)
    cal.load_state_dict(state)
    return cal.eval()


def load_run_calibration(folder: PathLike, config: Dict[str, Any]) -> Tuple[Optional[Calibrator],
                                                                            Optional[Calibrator]]:
    """``(calibrator, prior_em)`` stored by ``recipes/calibrate.py`` in a run folder (each ``None`` when absent)."""
    block = (config.get("lt") or {}).get("calibration")
    if not isinstance(block, dict):
        return None, None
    path = Path(folder) / block.get("file", CALIBRATOR_FILE)
    if not path.is_file():
        raise HubError(f"{folder}: config.json names a stored calibrator ({block.get('calibrator')}) but "
                       f"{path.name} is missing; rerun recipes/calibrate.py or download the file too")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise HubError(f"{path} is corrupt or not a safetensors file ({e}); rerun recipes/calibrate.py") from None
    try:
        cal = _rebuild(block["calibrator"], block.get("extra_state") or {}, tensors, "calibrator")
        em_block = block.get("prior_em")
        em = (_rebuild(em_block["calibrator"], em_block.get("extra_state") or {}, tensors, "prior_em")
              if isinstance(em_block, dict) else None)
    except (ValueError, KeyError, RuntimeError) as e:
        raise HubError(f"{path}: the stored calibrator does not load ({str(e).splitlines()[0]}); rerun "
                       "recipes/calibrate.py") from None
    return cal, em


# ---- priors ------------------------------------------------------------------------------------------------------
def parse_test_prior(value: Any, num_classes: int) -> Union[str, torch.Tensor]:
    """``None`` / ``"uniform"`` -> ``"uniform"``; ``"train"`` / ``"estimate"`` as they are; a sequence or tensor of
    ``num_classes`` non-negative numbers (probabilities or counts) -> normalised float64 probabilities."""
    if value is None:
        return "uniform"
    if isinstance(value, str):
        v = value.strip().lower()
        if v in TEST_PRIOR_CHOICES:
            return v
        raise PredictError(f"test_prior must be one of {', '.join(TEST_PRIOR_CHOICES)} or {num_classes} "
                           f"probabilities, got {value!r}")
    if isinstance(value, ClassPrior):
        value = value.probs
    try:
        p = torch.as_tensor(value, dtype=torch.float64).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise PredictError(f"test_prior must be 'uniform', 'train', 'estimate' or {num_classes} probabilities, "
                           f"got {type(value).__name__}") from None
    if p.numel() != num_classes:
        raise PredictError(f"test_prior has {p.numel()} values but the model has {num_classes} classes")
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or float(p.sum()) <= 0:
        raise PredictError("test_prior values must be finite, non-negative and not all zero")
    return p / p.sum()


# ---- the classifier ------------------------------------------------------------------------------------------------
class Classifier:
    """A loaded run ready to predict. Attributes: ``model`` (eval mode), ``class_names``, ``prior`` (the training
    :class:`ClassPrior`), ``config`` (config.json), ``folder``, ``transform`` (PIL image -> tensor), ``calibrator``
    and ``prior_em`` (stored by ``recipes/calibrate.py``, else ``None``), ``assumed_prior`` (``"uniform"`` or
    ``"train"``: the prior the logits encode), ``logit_scale``, ``device``, ``estimated_prior`` (the last
    ``"estimate"`` result, a float64 tensor [C], else ``None``)."""

    def __init__(self, model: torch.nn.Module, prior: ClassPrior, config: Dict[str, Any], folder: Path,
                 device: torch.device):
        from timm.data import create_transform, resolve_data_config

        self.model, self.prior, self.config, self.folder, self.device = model, prior, config, folder, device
        lt = config.get("lt") or {}
        self.class_names: List[str] = list(lt.get("class_names") or config.get("label_names")
                                           or [str(i) for i in range(prior.num_classes)])
        self.num_classes = prior.num_classes
        self.logit_scale = float(lt.get("logit_scale", 1.0) or 1.0)
        self.assumed_prior = assumed_test_prior(lt.get("loss"))
        self.data_config = resolve_data_config(model=model)
        self.transform = create_transform(**self.data_config, is_training=False)
        self.calibrator, self.prior_em = load_run_calibration(folder, config)
        self.estimated_prior: Optional[torch.Tensor] = None

    def __repr__(self) -> str:
        return (f"Classifier({self.config.get('architecture')}, {self.num_classes} classes, calibrator="
                f"{getattr(self.calibrator, 'name', None)}, logits assume the {self.assumed_prior} prior)")

    # inputs -> tensors ---------------------------------------------------------------------------------------------
    def to_tensor(self, images: Any) -> torch.Tensor:
        """A batch ``[B, 3, H, W]`` from PIL images, file paths, a tensor ``[3, H, W]`` / ``[B, 3, H, W]`` (already
        transformed: passed as it is), or a list of them. A path that is not a readable image raises
        :class:`PredictError` naming it."""
        from PIL import Image

        from .data.files import load_rgb

        if isinstance(images, torch.Tensor):
            return self._check_batch(images.unsqueeze(0) if images.ndim == 3 else images)
        items = [images] if isinstance(images, (str, os.PathLike, Image.Image)) else list(images)
        if not items:
            raise PredictError("no images given")
        out = []
        for item in items:
            if isinstance(item, torch.Tensor):
                out.append(self._check_batch(item.unsqueeze(0) if item.ndim == 3 else item))
                continue
            if isinstance(item, (str, os.PathLike)):
                try:
                    item = load_rgb(item)
                except (OSError, ValueError, SyntaxError) as e:
                    raise PredictError(f"{item}: not a readable image ({type(e).__name__}: {e})") from None
            if not isinstance(item, Image.Image):
                raise PredictError(f"inputs must be PIL images, file paths or tensors [B, 3, H, W], got "
                                   f"{type(item).__name__}")
            out.append(self.transform(item.convert("RGB")).unsqueeze(0))
        return torch.cat(out)

    def _check_batch(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or not x.is_floating_point():
            raise PredictError(f"a tensor input must be a transformed float batch [B, 3, H, W] (or one image "
                               f"[3, H, W]), got {x.dtype} {tuple(x.shape)}")
        return x

    # logits ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, images: Any, batch_size: int = 64) -> torch.Tensor:
        """Raw logits ``[N, C]`` (float32, CPU) times ``logit_scale``; neither calibrated nor prior-moved."""
        x = self.to_tensor(images)
        outs = [self.model(x[i:i + batch_size].to(self.device)).float().cpu() for i in range(0, len(x), batch_size)]
        return torch.cat(outs) * self.logit_scale

    def calibrated_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """The stored calibrator applied to raw (scaled) logits; the logits themselves without one."""
        return logits if self.calibrator is None else self.calibrator.transform(logits)

    def estimate_prior(self, logits: torch.Tensor) -> torch.Tensor:
        """The deployment prior of a set of images from their raw (scaled) logits ``[N, C]``, by ``prior_em`` with
        the run's stored validation fit; also kept in ``estimated_prior``."""
        if self.prior_em is None:
            raise PredictError(f"test_prior='estimate' needs the run's validation fit for prior_em, which "
                               f"{self.folder} does not have: run `python recipes/calibrate.py <run>` first (it "
                               "fits prior_em's calibration on the validation split), or pass a known prior")
        import copy

        em = copy.deepcopy(self.prior_em)
        em.fit(logits.double())
        self._em = em
        self.estimated_prior = em.test_prior.detach().cpu().double()
        return self.estimated_prior

    def proba_from_logits(self, logits: torch.Tensor, test_prior: Any = None) -> torch.Tensor:
        """Probabilities ``[N, C]`` from raw (scaled) logits under ``test_prior`` (see :meth:`predict_proba`)."""
        prior = parse_test_prior(test_prior, self.num_classes)
        if isinstance(prior, str) and prior == "estimate":
            self.estimate_prior(logits)
            return torch.softmax(self._em.transform(logits.double()), dim=-1).float()
        z = self.calibrated_logits(logits).double()
        assumed = None if self.assumed_prior == "uniform" else self.prior.probs
        target = None if isinstance(prior, str) and prior == "uniform" else (
            self.prior.probs if isinstance(prior, str) else prior)
        return torch.softmax(adapt_logits_to_prior(z, target, assumed_prior=assumed), dim=-1).float()

    def predict_proba(self, images: Any, test_prior: Any = None, batch_size: int = 64) -> torch.Tensor:
        """Class probabilities ``[N, C]`` for PIL images, file paths or transformed tensors ``[B, 3, H, W]``.

        ``test_prior``: ``None`` / ``"uniform"`` the balanced prior; ``"train"`` the training prior; a list,
        array or tensor of C probabilities (or counts); ``"estimate"`` the prior ``prior_em`` estimates from these
        images (needs the run's stored validation fit; the estimate is kept in ``estimated_prior``)."""
        return self.proba_from_logits(self.logits(images, batch_size=batch_size), test_prior)


def load_classifier(source: PathLike, *, revision: Optional[str] = None,
                    device: Union[str, torch.device, None] = None) -> Classifier:
    """A :class:`Classifier` for a run folder, ``local-dir:<path>`` or ``hf-hub:<id>[@rev]`` (with its stored
    calibrator, when ``recipes/calibrate.py`` wrote one). Problems raise :class:`lt_registry.hub.HubError`."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run = load_run(source, revision=revision, device=dev)
    return Classifier(run.model, run.prior, run.config, run.folder, dev)
