"""Any torchvision classification model as an encoder (`encoder=torchvision encoder.name=resnet18`).

The model is built without weights (nothing is downloaded). Then:
- `weights=<file>` loads a local state dict of that model: torchvision's own published files (e.g.
  `resnet18-f37072fd.pth`, saved by `torch.save(model.state_dict(), f)`) fit, as does any file saved from
  `torchvision.models.get_model(name).state_dict()`. It is read with `torch.load(weights_only=True)`, which
  never runs pickled code;
- its last `nn.Linear` (the classifier: `fc` of ResNets, the last layer of `classifier` of DenseNet, VGG,
  MobileNet, ...) becomes `nn.Identity`, so the output is the penultimate features (512-d for resnet18);
- the first convolution is adapted to `in_channels` when that is not 3: for pretrained weights its kernel
  is summed over RGB (1 channel) or tiled over the new channels and scaled by 3 / in_channels (as in timm),
  so a grey image gives the response of the equivalent RGB image;
- `out_dim` adds a linear projection to that many dimensions;
- `normalize` standardises the [0, 1] pixels with the ImageNet mean and std (the statistics the published
  weights were trained with; by default on exactly when `weights` is set).

A model that cannot embed the run's images (ViT's fixed 224 px, a too-small input for Inception) fails at
build time with one line, from a forward pass on two dummy images of `image_size` px.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from omegaconf import II
from torch import nn

from fewshot_exp.encoders.base import EncoderConfig
from fewshot_exp.errors import UserError
from fewshot_exp.plugins import register


@register("encoder", "torchvision")
@dataclass
class TorchvisionConfig(EncoderConfig):
    _target_: str = "fewshot_exp.encoders.torchvision_backbone.TorchvisionBackbone"
    name: str = "resnet18"  # any of torchvision.models.list_models(module=torchvision.models) with a linear classifier
    out_dim: int | None = None  # a linear projection to this size; None = the penultimate features (512 for resnet18)
    weights: str | None = None  # path to a local state dict of that model (nothing is downloaded)
    normalize: bool | None = None  # ImageNet mean/std on the [0, 1] pixels; None = on when weights is set
    image_size: int = II("dataset.image_size")  # to check at build time that the model can embed the run's images
    channels_last: bool = True


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Auxiliary classifiers are not built (aux_logits=False), so their keys in a published file are skipped.
AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")
# torchvision's DenseNet files use the old key names (norm.1 for norm1), which torchvision renames on load.
DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def classification_models() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def build_model(name: str) -> nn.Module:
    models = classification_models()
    if name not in models:
        close = difflib.get_close_matches(name, models, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(
            f"encoder.name={name!r} is not a torchvision classification model; {hint}"
            "torchvision.models.list_models(module=torchvision.models) lists them"
        )
    config = {"aux_logits": False, "init_weights": False} if name in ("googlenet", "inception_v3") else {}
    return torchvision.models.get_model(name, weights=None, **config)


def load_weights(model: nn.Module, path: str, name: str) -> None:
    """Load a local state dict of the torchvision model `name` into `model`; one-line UserError otherwise."""
    file = Path(path).expanduser()
    if not file.is_file():
        problem = "is a directory, not a" if file.is_dir() else "does not exist: give a"
        raise UserError(f"encoder.weights={path} {problem} state-dict file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupted, or a pickle that weights_only refuses
        raise UserError(
            f"encoder.weights={path} is unreadable or not a safe tensor file ({type(e).__name__})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"encoder.weights={path} is not a state dict (a dict of tensors)")
    state = {DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items() if not k.startswith(AUX_PREFIXES)}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in state if k in own and state[k].shape != own[k].shape]
    problems = [
        (what, keys)
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", wrong_shape))
        if keys
    ]
    if problems:
        detail = "; ".join(f"{len(keys)} keys {what} (e.g. {keys[0]})" for what, keys in problems)
        raise UserError(f"encoder.weights={path} does not hold torchvision {name} weights: {detail}")
    model.load_state_dict(state, strict=False)


def replace(model: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def remove_classifier(model: nn.Module, name: str) -> int:
    """Replace the last nn.Linear by nn.Identity; returns its input size (the embedding size)."""
    linears = [(path, m) for path, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError(f"encoder.name={name}: the model has no linear classifier to remove; pick another model")
    path, last = linears[-1]
    replace(model, path, nn.Identity())
    return last.in_features


def adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Give the first convolution `in_channels` inputs, its kernel summed (1) or tiled and rescaled (> 1)."""
    path, conv = next((p, m) for p, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_channels:
        return
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    with torch.no_grad():
        w = conv.weight
        if in_channels == 1:
            new.weight.copy_(w.sum(1, keepdim=True))
        else:
            repeats = -(-in_channels // w.shape[1])
            new.weight.copy_(w.repeat(1, repeats, 1, 1)[:, :in_channels] * (w.shape[1] / in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    replace(model, path, new)


class TorchvisionBackbone(nn.Module):
    """A torchvision model without its classifier: x [B, C, H, W] -> embeddings [B, out_dim] (module docstring)."""

    def __init__(
        self,
        name: str = "resnet18",
        in_channels: int = 3,
        out_dim: int | None = None,
        weights: str | None = None,
        normalize: bool | None = None,
        image_size: int = 84,
        channels_last: bool = True,
    ):
        super().__init__()
        if out_dim is not None and out_dim < 1:
            raise UserError(f"encoder.out_dim must be positive or null, got {out_dim}")
        self.model = build_model(name)
        if weights is not None:
            load_weights(self.model, weights, name)
        features = remove_classifier(self.model, name)
        adapt_first_conv(self.model, in_channels)
        self.projection = nn.Identity() if out_dim is None else nn.Linear(features, out_dim)
        self.out_dim = out_dim or features
        normalize = weights is not None if normalize is None else normalize
        mean = torch.tensor(IMAGENET_MEAN if in_channels == 3 else [sum(IMAGENET_MEAN) / 3] * in_channels)
        std = torch.tensor(IMAGENET_STD if in_channels == 3 else [sum(IMAGENET_STD) / 3] * in_channels)
        self.normalize = normalize
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1), persistent=False)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last)
        self.check_input(name, in_channels, image_size)

    def check_input(self, name: str, in_channels: int, image_size: int) -> None:
        """Fail now, in one line, if the model cannot embed the run's images."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                self(torch.zeros(2, in_channels, image_size, image_size))
        except (RuntimeError, ValueError, AssertionError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"encoder.name={name} cannot embed {in_channels}-channel {image_size} px images: {reason}"
            ) from None
        finally:
            self.train(was_training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.projection(self.model(x))
