"""The schema every encoder option extends."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING


@dataclass
class EncoderConfig:
    """An encoder option: the class `_target_` built with `in_channels` and the option's other keys. The class may
    say `min_image_size` (the smallest input it can embed) and `check_config(cfg)` (UserError on a bad setting),
    which `fewshot_exp.config.validate` asks before any work."""

    _target_: str = MISSING


#: the class paths that checkpoints of earlier versions name, before the encoders became this package: resume
#: reads a saved config's `encoder._target_` through it (`fewshot_exp.resume.config_differences`)
MOVED_TARGETS = {
    "fewshot_exp.encoders.Conv4": "fewshot_exp.encoders.conv4.Conv4",
    "fewshot_exp.resnet12.ResNet12": "fewshot_exp.encoders.resnet12.ResNet12",
    "fewshot_exp.torchvision_backbone.TorchvisionBackbone": (
        "fewshot_exp.encoders.torchvision_backbone.TorchvisionBackbone"
    ),
}
