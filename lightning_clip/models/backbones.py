"""Adapters that turn timm image models and Hugging Face text models into feature trunks."""

import contextlib
import difflib
import functools
from pathlib import Path
from typing import Any, Literal

import safetensors.torch
import timm
import torch
from timm.models import group_parameters
from torch import Tensor, nn
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoTokenizer,
    PreTrainedTokenizerBase,
)

from ..errors import require


@contextlib.contextmanager
def _naming_failures(message: str):
    """Re-raise a loading failure as a ValueError that starts with `message`."""
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError) as error:
        reason = (str(error).splitlines() or [""])[0][:300]
        raise ValueError(f"{message} ({type(error).__name__}: {reason})") from error


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a `.safetensors` file or a `.pth`/`.pt`/`.bin` torch file (never unpickled)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return safetensors.torch.load_file(str(path))
    with _naming_failures(f"{path}: cannot read weights"):
        content = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(content, dict) and isinstance(content.get(key), dict):
            content = content[key]
    return content


def load_by_position(model: nn.Module, state_dict: dict[str, Tensor], source: str) -> None:
    """Load tensors in file order onto `model`'s parameters and buffers in its own order.

    For weights converted from another library, whose names differ but whose order and
    shapes match; every shape is checked so a wrong pairing fails loudly.
    """
    target = model.state_dict()
    if len(state_dict) != len(target):
        raise ValueError(
            f"{source}: {len(state_dict)} tensors, but {type(model).__name__} has "
            f"{len(target)}; loading by position needs the same number"
        )
    pairs = zip(target.items(), state_dict.items(), strict=True)
    for position, ((name, tensor), (file_name, file_tensor)) in enumerate(pairs):
        if tensor.shape != file_tensor.shape:
            raise ValueError(
                f"{source}: tensor {position} ({file_name}, {tuple(file_tensor.shape)}) does "
                f"not fit {name} {tuple(tensor.shape)}"
            )
    model.load_state_dict(dict(zip(target, state_dict.values(), strict=True)))


class TimmImageBackbone(nn.Module):
    """A timm model without its classifier: (B, 3, H, W) images -> (B, D) pooled features.

    The model is never downloaded: weights come from `pretrained_file` when given, and are
    random otherwise. `width` (D) is measured with a forward pass, never assumed.
    """

    def __init__(
        self,
        model_name: str,
        pretrained_file: str | None = None,
        image_size: int | None = None,
        model_kwargs: dict[str, Any] | None = None,
        pretrained_keys: Literal["name", "position"] = "name",
    ):
        super().__init__()
        if not timm.is_model(model_name):
            close = difflib.get_close_matches(model_name, timm.list_models(), n=5)
            raise ValueError(
                f"image_tower.model_name: unknown timm model {model_name!r}; "
                f"close matches: {close or 'none'} (see timm.list_models())"
            )
        require(
            image_size is None or image_size >= 1, "image_tower.image_size", image_size,
            "null or at least 1",
        )  # fmt: skip
        if pretrained_file is not None and not Path(pretrained_file).is_file():
            raise ValueError(f"image_tower.pretrained_file: no such file {pretrained_file!r}")

        require(
            pretrained_keys in ("name", "position"), "image_tower.pretrained_keys",
            pretrained_keys, "'name' or 'position'",
        )  # fmt: skip
        if pretrained_file is None:
            self.model = self._create(model_name, image_size, model_kwargs, num_classes=0)
        elif pretrained_keys == "name":
            # built with its classifier, timm loads strictly: a file that does not fit fails
            try:
                self.model = self._create(
                    model_name, image_size, model_kwargs,
                    pretrained=True, pretrained_cfg_overlay={"file": str(pretrained_file)},
                )  # fmt: skip
            except RuntimeError as error:
                reason = str(error).splitlines()[0][:200]
                raise ValueError(
                    f"image_tower.pretrained_file: {pretrained_file} does not match "
                    f"{model_name} by name ({reason}); for converted weights in the same "
                    "order set pretrained_keys: position"
                ) from error
            self.model.reset_classifier(0)
        else:
            # weights saved under another library's names: the classifier stays until loaded
            self.model = self._create(model_name, image_size, model_kwargs)
            load_by_position(self.model, read_state_dict(pretrained_file), pretrained_file)
            self.model.reset_classifier(0)

        # the backbone's own preprocessing, at the resolution the model was built for
        if image_size is None:
            image_size = self._built_image_size()
        overrides = {"input_size": (3, image_size, image_size)} if image_size else {}
        self.data_config = timm.data.resolve_data_config(overrides, model=self.model)
        self.width = self._measure_width()

    @staticmethod
    def _create(model_name, image_size, model_kwargs, **create_kwargs) -> nn.Module:
        kwargs = {**(model_kwargs or {}), **create_kwargs}
        create = functools.partial(timm.create_model, model_name)
        if image_size is None or "img_size" in kwargs:
            return create(**kwargs)
        try:
            # transformers fix their grid at build time; convolutional nets take any size
            return create(**kwargs, img_size=image_size)
        except TypeError as error:
            if "img_size" not in str(error):
                raise
            return create(**kwargs)

    def _built_image_size(self) -> int | None:
        patch_embed = getattr(self.model, "patch_embed", None)
        size = getattr(patch_embed, "img_size", None)
        if isinstance(size, (tuple, list)) and size and size[0] == size[-1]:
            return int(size[0])
        return None

    @torch.no_grad()
    def _measure_width(self) -> int:
        was_training = self.model.training
        self.model.eval()
        features = self.model(torch.zeros(1, *self.data_config["input_size"]))
        self.model.train(was_training)
        if features.ndim != 2:
            raise ValueError(
                f"image_tower: timm model returned features of shape {tuple(features.shape)}; "
                "expected (B, D). Keep its global pooling on (model_kwargs.global_pool)."
            )
        return features.shape[1]

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def layer_groups(self) -> list[list[str]]:
        """Parameter names from input to output, grouped as timm's coarse group_matcher does:
        the stem, then one group per block or stage."""
        groups = group_parameters(self.model, self.model.group_matcher(coarse=True))
        return [[f"model.{name}" for name in groups[key]] for key in sorted(groups)]

    def no_weight_decay(self) -> set[str]:
        """Names of parameters the model itself marks as exempt (positional embeddings...)."""
        names = getattr(self.model, "no_weight_decay", lambda: set())()
        return {f"model.{name}" for name in names}

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, D)."""
        return self.model(images)


def hf_layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names from input to output: the embeddings, then one group per transformer
    layer (the longest ModuleList); final norms and poolers join the last layer."""
    blocks = max(
        (m for m in model.modules() if isinstance(m, nn.ModuleList)), key=len, default=None
    )
    if blocks is None:
        return [[f"model.{name}" for name, _ in model.named_parameters()]]

    block_of = {id(p): i for i, block in enumerate(blocks) for p in block.parameters()}
    groups: list[list[str]] = [[] for _ in range(len(blocks) + 1)]
    seen_blocks = False
    for name, parameter in model.named_parameters():
        if id(parameter) in block_of:
            seen_blocks = True
            groups[block_of[id(parameter)] + 1].append(f"model.{name}")
        else:
            groups[-1 if seen_blocks else 0].append(f"model.{name}")
    return [group for group in groups if group]


def _require_one_source(pretrained_dir: str | None, model_type: str | None, key: str) -> None:
    if (pretrained_dir is None) == (model_type is None):
        raise ValueError(
            f"{key}: give exactly one of pretrained_dir (local weights) or model_type "
            f"(random weights); got pretrained_dir={pretrained_dir!r}, "
            f"model_type={model_type!r}"
        )


def _hf_model(pretrained_dir: str | None, model_type: str | None, config: dict, key: str):
    """A Hugging Face AutoModel from a local directory, or from a config with random weights."""
    _require_one_source(pretrained_dir, model_type, key)
    if pretrained_dir is not None:
        if not Path(pretrained_dir).is_dir():
            raise ValueError(f"{key}.pretrained_dir: no such directory {pretrained_dir!r}")
        with _naming_failures(f"{key}.pretrained_dir: cannot load {pretrained_dir}"):
            hf_config = AutoConfig.from_pretrained(pretrained_dir, local_files_only=True, **config)
            return AutoModel.from_pretrained(
                pretrained_dir, config=hf_config, local_files_only=True
            )
    try:
        hf_config = AutoConfig.for_model(model_type, **config)
    except ValueError as error:
        raise ValueError(f"{key}.model_type: {error}") from None
    return AutoModel.from_config(hf_config)


# PIL resampling codes, as Hugging Face image processors store them, to timm's names
_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class HFBackbone(nn.Module):
    """What Hugging Face backbones share: layer groups and activation checkpointing."""

    model: nn.Module

    def layer_groups(self) -> list[list[str]]:
        return hf_layer_groups(self.model)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.gradient_checkpointing_enable()
        else:
            self.model.gradient_checkpointing_disable()


class HFImageBackbone(HFBackbone):
    """A Hugging Face vision model (CLIP vision, SigLIP, DINOv2...): images -> (B, D) features.

    Pooling: ``pooler`` (the model's own: CLIP's class token, SigLIP's attention head,
    DINOv2's normalised class token), ``cls`` (first token) or ``mean`` (all tokens). The
    preprocessing comes from the directory's image processor when it has one.
    """

    def __init__(
        self,
        pretrained_dir: str | None = None,
        model_type: str | None = None,
        config: dict[str, Any] | None = None,
        image_size: int | None = None,
        pool: Literal["pooler", "cls", "mean"] = "pooler",
        image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, float, float] = (0.5, 0.5, 0.5),
    ):
        super().__init__()
        require(
            pool in ("pooler", "cls", "mean"), "image_tower.pool", pool,
            "'pooler', 'cls' or 'mean'",
        )  # fmt: skip
        require(
            image_size is None or image_size >= 1, "image_tower.image_size", image_size,
            "null or at least 1",
        )  # fmt: skip
        config = dict(config or {})
        if image_size is not None and model_type is not None:
            config["image_size"] = image_size
        self.model = _hf_model(pretrained_dir, model_type, config, "image_tower")
        self.pool = pool
        self.width = self.model.config.hidden_size

        built_size = self.model.config.image_size
        self.image_size = image_size or built_size
        self.interpolate = self.image_size != built_size
        self.data_config = self._data_config(pretrained_dir, image_mean, image_std)

    def _data_config(self, pretrained_dir, image_mean, image_std) -> dict[str, Any]:
        config = {
            "input_size": (3, self.image_size, self.image_size),
            "interpolation": "bicubic",
            "mean": tuple(image_mean),
            "std": tuple(image_std),
            "crop_pct": 1.0,
            "crop_mode": "center",
        }
        if (
            pretrained_dir is None
            or not (Path(pretrained_dir) / "preprocessor_config.json").is_file()
        ):
            return config

        with _naming_failures(f"image_tower.pretrained_dir: cannot read {pretrained_dir}"):
            processor = AutoImageProcessor.from_pretrained(pretrained_dir, local_files_only=True)
        config["mean"] = tuple(processor.image_mean)
        config["std"] = tuple(processor.image_std)
        resample = getattr(processor, "resample", None)
        config["interpolation"] = (
            _RESAMPLE_NAMES.get(int(resample), "bicubic") if resample is not None else "bicubic"
        )
        resize = getattr(processor, "size", None) or {}
        shortest = resize.get("shortest_edge") or resize.get("height")
        if shortest and getattr(processor, "do_center_crop", False):
            config["crop_pct"] = self.image_size / shortest
        return config

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, D)."""
        kwargs = {"interpolate_pos_encoding": True} if self.interpolate else {}
        output = self.model(pixel_values=images, **kwargs)
        if self.pool == "pooler":
            return output.pooler_output
        tokens = output.last_hidden_state  # (B, N, D)
        return tokens[:, 0] if self.pool == "cls" else tokens.mean(dim=1)


class HFTextBackbone(HFBackbone):
    """A Hugging Face AutoModel: (B, L) tokens -> (B, L, D) token states and (B, D) pooler.

    Either `pretrained_dir` (a local directory with weights, config and tokenizer) or
    `model_type` plus `config` (random weights) selects the model. Nothing is downloaded.
    """

    def __init__(
        self,
        pretrained_dir: str | None = None,
        model_type: str | None = None,
        config: dict[str, Any] | None = None,
        tokenizer_dir: str | None = None,
    ):
        super().__init__()
        # the tokenizer is loaded first, so check the sources before touching it
        _require_one_source(pretrained_dir, model_type, "text_tower")
        tokenizer_dir = tokenizer_dir or pretrained_dir
        if tokenizer_dir is None:
            raise ValueError("text_tower.tokenizer_dir: required when building from model_type")
        key = "tokenizer_dir" if tokenizer_dir != pretrained_dir else "pretrained_dir"
        if not Path(tokenizer_dir).is_dir():
            raise ValueError(f"text_tower.{key}: no such directory {tokenizer_dir!r}")

        with _naming_failures(f"text_tower.{key}: cannot load a tokenizer from {tokenizer_dir}"):
            self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(
                tokenizer_dir, local_files_only=True
            )
        config = dict(config or {})
        if model_type is not None:
            # the embedding table must cover every id the tokenizer can produce
            config = {"vocab_size": len(self.tokenizer), **config}
            if config["vocab_size"] < len(self.tokenizer):
                raise ValueError(
                    f"text_tower.config.vocab_size={config['vocab_size']} is smaller than the "
                    f"tokenizer's vocabulary ({len(self.tokenizer)})"
                )
        self.model = _hf_model(pretrained_dir, model_type, config, "text_tower")

        self.width = self.model.config.hidden_size
        self.pad_token_id = self.tokenizer.pad_token_id

    def forward(self, tokens: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """(B, L) tokens -> ((B, L, D) token states, (B, D) pooler output or None)."""
        output = self.model(input_ids=tokens, attention_mask=attention_mask)
        return output.last_hidden_state, getattr(output, "pooler_output", None)
