"""Class activation maps: ``Method(model, target_layer=None).attribute(images, target)``
returns an ``(N, 1, H, W)`` map per image on the images' device.

Gradient CAMs (one forward and one backward to the layer): :class:`GradCAM`,
:class:`GradCAMPlusPlus`, :class:`XGradCAM`, :class:`LayerCAM`, :class:`HiResCAM`.
One forward: :class:`CAM` (linear-classifier weights), :class:`EigenCAM` (first
principal component). Perturbation CAMs (batched masked forwards):
:class:`ScoreCAM`, :class:`AblationCAM`. ``target_layer=None`` locates the layer
(see :mod:`torchexplain.cam.locate`; the choice is logged on "torchexplain.cam");
:func:`vit_reshape_transform` lays vision-transformer tokens out as a feature map.
"""

from .activation import CAM, EigenCAM
from .base import BaseCAM
from .gradient import GradCAM, GradCAMPlusPlus, GradientCAM, HiResCAM, LayerCAM, XGradCAM
from .perturbation import AblationCAM, ScoreCAM
from .transforms import vit_reshape_transform

__all__ = [
    "AblationCAM",
    "BaseCAM",
    "CAM",
    "EigenCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "GradientCAM",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
    "vit_reshape_transform",
]
