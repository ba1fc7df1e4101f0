"""Networks of the ConRFT agent: VLA backbone, consistency action head, critic ensemble, tokenizer."""

from vlarft.agents.networks.backbone import (VLABackbone, attention_mask, load_backbone_params,
                                            save_backbone_params, token_layout)
from vlarft.agents.networks.common import MLP, ProprioProjection
from vlarft.agents.networks.consistency import (ConsistencyHead, karras_sigmas, multistep_sigmas,
                                               sample_actions, scalings, time_features)
from vlarft.agents.networks.critic import (Critic, ResNet10Encoder, SpatialLearnedEmbeddings,
                                          load_encoder_params, random_crop, random_crop_observation,
                                          save_encoder_params)
from vlarft.agents.networks.octo_backbone import OctoBackbone
from vlarft.agents.networks.text import tokenize


def make_backbone(config, cameras: tuple[str, ...], state_dim: int):
    """The backbone module of a `BackboneConfig`: `VLABackbone`, or `OctoBackbone` when
    `config.architecture` is "octo" (same call, same output)."""
    if config.architecture == "octo":
        return OctoBackbone(config, tuple(cameras), state_dim)
    if config.architecture != "vlarft":
        raise ValueError(f"backbone.architecture must be 'vlarft' or 'octo', got {config.architecture!r}")
    return VLABackbone(config, tuple(cameras), state_dim)


__all__ = [
    "VLABackbone", "OctoBackbone", "make_backbone", "attention_mask", "load_backbone_params", "save_backbone_params", "token_layout",
    "MLP", "ProprioProjection",
    "ConsistencyHead", "karras_sigmas", "multistep_sigmas", "sample_actions", "scalings", "time_features",
    "Critic", "ResNet10Encoder", "SpatialLearnedEmbeddings", "load_encoder_params", "random_crop",
    "random_crop_observation", "save_encoder_params",
    "tokenize",
]
