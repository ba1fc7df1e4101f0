"""Import an Octo checkpoint (octo-models/octo 1.0 / 1.5 format) as an `OctoBackbone`, without the
`octo` package.

An Octo checkpoint directory holds `config.json` (the model as ModuleSpec dicts: treated as data,
only the known module names are accepted), `dataset_statistics.json`, `example_batch.msgpack` and
`<step>/default/` (the parameter tree saved by orbax; the largest step is used). `import_octo`
maps its parameters onto `OctoBackbone` and refuses a checkpoint with an unknown parameter or a
shape that does not fit, naming the Octo key and both shapes. Used: the image stems and
projections, the language projection, every position embedding and the transformer. Ignored: the
T5 language encoder (`hf_model`: instructions come in as precomputed T5 states) and Octo's action
heads (replaced by the consistency head).

The imported directory (`save_import`) holds `backbone.msgpack` (our parameter names),
`backbone_config.json` (the `BackboneConfig`), Octo's `dataset_statistics.json` and
`import_summary.txt`; `load_import` reads it back for SFT (`--backbone_from=DIR`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil

import flax
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vlarft.agents.config import BackboneConfig
from vlarft.agents.networks.backbone import load_backbone_params, save_backbone_params
from vlarft.agents.networks.octo_backbone import OctoBackbone

IMAGE_TOKENIZER = ("octo.model.components.tokenizers", "ImageTokenizer")
STEM = ("octo.model.components.vit_encoders", "SmallStem16")
LANGUAGE_TOKENIZER = ("octo.model.components.tokenizers", "LanguageTokenizer")
STEM_DEFAULTS = {"features": (32, 96, 192, 384), "num_features": 512}

# Octo parameter path (under octo_transformer/) -> ours; \1 etc. are the pattern's groups.
RENAMES = [
    (r"BlockTransformer_0/Transformer_0/encoderblock_(\d+)/LayerNorm_0/(.+)", r"block\1/norm1/\2"),
    (r"BlockTransformer_0/Transformer_0/encoderblock_(\d+)/LayerNorm_1/(.+)", r"block\1/norm2/\2"),
    (r"BlockTransformer_0/Transformer_0/encoderblock_(\d+)/MultiHeadDotProductAttention_0/(.+)",
     r"block\1/attention/\2"),
    (r"BlockTransformer_0/Transformer_0/encoderblock_(\d+)/MlpBlock_0/Dense_0/(.+)", r"block\1/mlp1/\2"),
    (r"BlockTransformer_0/Transformer_0/encoderblock_(\d+)/MlpBlock_0/Dense_1/(.+)", r"block\1/mlp2/\2"),
    (r"BlockTransformer_0/Transformer_0/encoder_norm/(.+)", r"final_norm/\1"),
    (r"observation_tokenizers_(\w+?)/SmallStem16_0/(.+)", r"image_\1/\2"),
    (r"((?:obs_\w+|task_language|readout_action)_(?:projection|pos_embedding)(?:/.+)?)", r"\1"),
]
IGNORED = [
    (r"octo_transformer/task_tokenizers_language/hf_model/.+",
     "T5 language encoder: instructions come in as precomputed T5 states (language_embedding)"),
    (r"heads_\w+/.+", "Octo's action head: replaced by the consistency head"),
]


# Octo's `common_transformer_sizes` "vit_s" / "vit_b": (width, heads); 12 blocks, MLP 4x width.
RELEASED = {"small": (384, 6), "base": (768, 12)}


def released_config(size: str) -> BackboneConfig:
    """The backbone of the released Octo-small/base 1.5 models (256 px primary, 128 px wrist,
    T5-base states), as `import_octo` derives it from their checkpoints."""
    width, heads = RELEASED[size]
    return BackboneConfig(architecture="octo", width=width, depth=12, heads=heads, mlp_ratio=4,
                          language_embedding_dim=768)


class OctoImportError(ValueError):
    """A checkpoint this importer does not accept (the message names the file and key)."""


@dataclasses.dataclass
class OctoImport:
    config: BackboneConfig
    params: dict  # OctoBackbone parameters (our names)
    used: list  # [(octo key, our key, shape)]
    ignored: list  # [(octo key, shape, why)]
    octo_parameters: int  # every parameter of the checkpoint
    source: str

    @property
    def parameters(self) -> int:
        return count(self.params)

    def summary(self) -> str:
        lines = [f"Octo checkpoint {self.source}: {self.octo_parameters:,} parameters",
                 f"backbone: {self.parameters:,} parameters (width {self.config.width}, {self.config.depth} blocks, "
                 f"{self.config.heads} heads, cameras {list(self.config.octo_cameras)} at "
                 f"{list(self.config.octo_image_sizes)} px, window {self.config.window})",
                 f"used {len(self.used)} arrays ({sum(math.prod(s) for *_, s in self.used):,} parameters):"]
        lines += [f"  {octo} -> {ours} {tuple(shape)}" for octo, ours, shape in self.used]
        reasons: dict[str, list] = {}
        for key, shape, why in self.ignored:
            reasons.setdefault(why, []).append(math.prod(shape))
        lines.append(f"ignored {len(self.ignored)} arrays:")
        lines += [f"  {len(sizes)} arrays, {sum(sizes):,} parameters: {why}" for why, sizes in reasons.items()]
        return "\n".join(lines)


def count(tree) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(tree)))


# ---------------------------------------------------------------- reading the checkpoint


def latest_step_dir(root: str) -> str:
    steps = [int(name) for name in os.listdir(root) if name.isdigit() and os.path.isdir(os.path.join(root, name))]
    if not steps:
        raise OctoImportError(f"{root}: no <step>/ parameter directory (an Octo checkpoint has e.g. 300000/default/)")
    return os.path.join(root, str(max(steps)), "default")


def read_params(root: str) -> dict:
    """The parameter tree (numpy) of the checkpoint's latest step: the inline msgpack file orbax
    writes by default, else orbax's own restore (sharded saves)."""
    step_dir = latest_step_dir(root)
    inline = os.path.join(step_dir, "checkpoint")
    try:
        with open(inline, "rb") as f:
            tree = flax.serialization.msgpack_restore(f.read())
    except (OSError, ValueError):
        import orbax.checkpoint as ocp

        tree = ocp.PyTreeCheckpointer().restore(step_dir)
    tree = jax.tree_util.tree_map(np.asarray, tree)
    if not isinstance(tree, dict) or "octo_transformer" not in tree:
        raise OctoImportError(f"{step_dir}: not an Octo parameter tree (no 'octo_transformer'; "
                              f"top-level keys {sorted(tree) if isinstance(tree, dict) else type(tree).__name__})")
    return tree


def _spec(value, where: str, allowed: tuple) -> dict:
    """A ModuleSpec dict, checked against the allowed (module, name) pairs."""
    if not isinstance(value, dict) or {"module", "name", "args", "kwargs"} - set(value):
        raise OctoImportError(f"{where}: expected a ModuleSpec dict (module, name, args, kwargs), got {value!r}")
    if (value["module"], value["name"]) not in allowed or value["args"]:
        raise OctoImportError(f"{where}: unsupported module {value['module']}.{value['name']} "
                              f"(supported: {', '.join(m + '.' + n for m, n in allowed)})")
    return value["kwargs"]


def backbone_config(octo_config: dict, params: dict, source: str, window: int = 2) -> BackboneConfig:
    """The `BackboneConfig` of an Octo model config (config.json's "model") and its parameters."""
    where = f"{source}/config.json"
    model = octo_config.get("model")
    if not isinstance(model, dict):
        raise OctoImportError(f"{where}: no 'model' section")
    stems, goals = [], []
    for name, spec in model.get("observation_tokenizers", {}).items():
        kwargs = _spec(spec, f"{where}: model.observation_tokenizers.{name}", (IMAGE_TOKENIZER,))
        goal = list(kwargs.get("task_stack_keys", []))
        if list(kwargs.get("obs_stack_keys", [])) != [f"image_{name}"] or goal not in ([], [f"image_{name}"]) \
                or kwargs.get("use_token_learner") or kwargs.get("task_film_keys") \
                or kwargs.get("conditioning_type", "none") != "none":
            raise OctoImportError(f"{where}: observation tokenizer {name!r} must stack exactly image_{name} (and its "
                                  f"goal image), without a token learner or FiLM, got {kwargs}")
        goals.append(bool(goal))
        stem = dict(STEM_DEFAULTS, **_spec(kwargs.get("encoder"), f"{where}: {name}.encoder", (STEM,)))
        if set(stem) - {"features", "num_features", "patch_size", "img_norm_type", "use_film"} \
                or stem.get("img_norm_type", "default") != "default" or stem.get("use_film") \
                or stem.get("patch_size", 16) != 16:
            raise OctoImportError(f"{where}: unsupported SmallStem16 options {stem}")
        stems.append((name, tuple(stem["features"]), int(stem["num_features"])))
    if not stems or len({s[1:] for s in stems}) != 1 or len(set(goals)) != 1:
        raise OctoImportError(f"{where}: need image tokenizers sharing one stem shape and goal stacking, got "
                              f"{stems}, goal images {goals}")
    tasks = model.get("task_tokenizers", {})
    if set(tasks) != {"language"}:
        raise OctoImportError(f"{where}: task tokenizers must be just 'language', got {sorted(tasks)}")
    _spec(tasks["language"], f"{where}: model.task_tokenizers.language", (LANGUAGE_TOKENIZER,))
    readouts = model.get("readouts", {})
    if set(readouts) != {"action"}:
        raise OctoImportError(f"{where}: readouts must be just 'action', got {readouts}")
    width = int(model["token_embedding_size"])
    transformer = model["transformer_kwargs"]
    if transformer.get("mlp_dim", 0) % width:
        raise OctoImportError(f"{where}: mlp_dim {transformer.get('mlp_dim')} is not a multiple of {width}")
    octo = params["octo_transformer"]
    sizes = []
    for name, *_ in stems:
        tokens = np.shape(octo.get(f"obs_{name}_pos_embedding", np.zeros((1, 1, 0, 0))))[2]
        side = int(round(math.sqrt(tokens))) * 16
        if side * side != tokens * 256 or tokens == 0:
            raise OctoImportError(f"{source}: obs_{name}_pos_embedding has {tokens} tokens per frame, not a square image")
        sizes.append(side)
    language = np.shape(octo.get("task_language_projection", {}).get("kernel", np.zeros((0, 0))))
    task_pos = np.shape(octo.get("task_language_pos_embedding", np.zeros((1, 0, 0))))
    return BackboneConfig(
        architecture="octo", width=width, depth=int(transformer["num_layers"]),
        heads=int(transformer["num_attention_heads"]), mlp_ratio=int(transformer["mlp_dim"]) // width,
        window=window, num_readouts=int(readouts["action"]), dropout=0.0,
        language_embedding_dim=int(language[0]), octo_task_tokens=int(task_pos[1]),
        octo_cameras=tuple(s[0] for s in stems), octo_image_sizes=tuple(sizes), octo_goal_images=goals[0],
        octo_stem_features=stems[0][1], octo_stem_out=stems[0][2], octo_max_horizon=int(model["max_horizon"]),
        octo_repeat_task_tokens=bool(model.get("repeat_task_tokens", False)),
        octo_correct_attention=bool(model.get("use_correct_attention", False)))


def backbone_shapes(config: BackboneConfig) -> dict:
    """{'/'-joined parameter path: shape} of an `OctoBackbone` of this config (no computation)."""
    module = OctoBackbone(config, tuple(config.octo_cameras), 1)
    images = {cam: jax.ShapeDtypeStruct((1, config.window, s, s, 3), jnp.uint8)
              for cam, s in zip(config.octo_cameras, config.octo_image_sizes)}
    state = jax.ShapeDtypeStruct((1, config.window, 1), jnp.float32)
    language = jax.ShapeDtypeStruct((1, config.octo_task_tokens, config.language_embedding_dim), jnp.float32)
    tree = jax.eval_shape(lambda i, s, l: module.init(jax.random.PRNGKey(0), i, s, language_embedding=l),
                          images, state, language)
    return {"/".join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(flax.core.unfreeze(tree["params"])).items()}


def map_params(params: dict, config: BackboneConfig, source: str) -> tuple[dict, list, list]:
    """(our parameter tree, used [(octo, ours, shape)], ignored [(octo, shape, why)]).

    Refuses (OctoImportError) an Octo key it has no rule for, a shape the backbone does not expect
    (naming the key and both shapes), or a backbone parameter the checkpoint lacks."""
    want = backbone_shapes(config)
    flat = {"/".join(k): v for k, v in traverse_util.flatten_dict(params).items()}
    used, ignored, out = [], [], {}
    for key, value in sorted(flat.items()):
        why = next((reason for pattern, reason in IGNORED if re.fullmatch(pattern, key)), None)
        if why is not None:
            ignored.append((key, np.shape(value), why))
            continue
        inner = key.removeprefix("octo_transformer/")
        ours = next((re.sub(p, r, inner) for p, r in RENAMES if re.fullmatch(p, inner)), None) \
            if inner != key else None
        if ours is None or ours not in want:
            raise OctoImportError(f"{source}: unknown parameter {key!r} {tuple(np.shape(value))} (no backbone "
                                  f"parameter of that name{'' if ours is None else ': ' + ours})")
        if tuple(np.shape(value)) != want[ours]:
            raise OctoImportError(f"{source}: parameter {key!r} has shape {tuple(np.shape(value))} in the "
                                  f"checkpoint, the backbone's {ours!r} expects {want[ours]}")
        out[ours] = np.asarray(value, np.float32)
        used.append((key, ours, np.shape(value)))
    missing = sorted(set(want) - set(out))
    if missing:
        raise OctoImportError(f"{source}: the checkpoint lacks backbone parameter {missing[0]!r} {want[missing[0]]} "
                              f"({len(missing)} missing)")
    return traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in out.items()}), used, ignored


def import_octo(root: str, window: int = 2) -> OctoImport:
    """Reads an Octo checkpoint directory and maps it onto an `OctoBackbone`."""
    root = os.fspath(root)
    path = os.path.join(root, "config.json")
    try:
        with open(path) as f:
            octo_config = json.load(f)
    except (OSError, ValueError) as e:
        raise OctoImportError(f"{path}: cannot read the Octo config ({e})") from None
    params = read_params(root)
    config = backbone_config(octo_config, params, root, window)
    ours, used, ignored = map_params(params, config, root)
    return OctoImport(config, ours, used, ignored, count(params), root)


# ---------------------------------------------------------------- the imported directory


def save_import(result: OctoImport, out: str) -> None:
    os.makedirs(out, exist_ok=True)
    save_backbone_params(result.params, os.path.join(out, "backbone.msgpack"))
    with open(os.path.join(out, "backbone_config.json"), "w") as f:
        json.dump(dataclasses.asdict(result.config), f, indent=1, sort_keys=True)
    statistics = os.path.join(result.source, "dataset_statistics.json")
    if os.path.exists(statistics):
        shutil.copyfile(statistics, os.path.join(out, "octo_dataset_statistics.json"))
    with open(os.path.join(out, "import_summary.txt"), "w") as f:
        f.write(result.summary() + "\n")


def load_import(directory: str) -> tuple[BackboneConfig, dict]:
    """(BackboneConfig, backbone params) of a directory written by `save_import`."""
    path = os.path.join(directory, "backbone_config.json")
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, ValueError) as e:
        raise OctoImportError(f"{path}: cannot read the imported backbone config ({e}); make the directory "
                              f"with tools/import_octo.py") from None
    known = {f.name for f in dataclasses.fields(BackboneConfig)}
    config = BackboneConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})
    return config, load_backbone_params(os.path.join(directory, "backbone.msgpack"))
