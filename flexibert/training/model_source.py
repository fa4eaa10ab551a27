"""Where a run's model and tokenizer come from: a model of a graph library, a model dict, or a saved FlexiBERT folder.

Pretraining builds a fresh model (optionally warm-started from a saved one); fine-tuning loads a saved
one. Both go through :func:`saved_model_config`, so a folder that holds no model, or a model of another
kind (a BERT checkpoint), gives the same clear settings error wherever it is named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase, set_seed

from embeddings.graph import model_hash as compute_model_hash
from embeddings.library import Library, LibraryFileError
from embeddings.model_dict import parse_model_dict
from flexibert.data.tokenization import load_tokenizer
from flexibert.models import modeling_flexibert
from flexibert.models.configuration_flexibert import FlexiBERTConfig
from flexibert.models.modeling_flexibert import FlexiBERTForMaskedLM, FlexiBERTPreTrainedModel
from flexibert.models.weight_transfer import TransferReport
from flexibert.training.settings import ConfigurationError
from flexibert.utils.cli import setting


@dataclass(kw_only=True)
class ModelSource:
    """Which model to build (a library hash or a model dict) and where its first weights come from."""

    model_hash: str | None = setting(None, "hash of the model in the graph library --dataset_file")
    dataset_file: str | None = setting(None, "graph library JSON (from embeddings/generate_library.py) listing --model_hash")
    model_dict: str | None = setting(None, "the model dict as JSON text or the path of a JSON file")
    init_from: str | None = setting(None, "warm-start by weight transfer from this trained FlexiBERT model", metavar="DIR")
    transfer_mode: str = setting("RP", "weight transfer for --init_from: RP random projection, OD ordered slicing", choices=["RP", "OD"])
    max_position_embeddings: int = setting(514, "longest input the model accepts (keep it equal across models that share weights)")


def read_model_dict(text_or_path: str) -> dict:
    """A model dict given on the command line as JSON text (starting with ``{``) or as the path of a JSON file."""
    if text_or_path.lstrip().startswith("{"):
        source, text = "--model_dict", text_or_path
    elif Path(text_or_path).is_file():
        source, text = f"file {text_or_path}", Path(text_or_path).read_text()
    else:
        raise ConfigurationError(f"--model_dict {text_or_path!r} is neither a JSON object nor an existing file")
    try:
        model_dict = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigurationError(
            f"{source} is not valid JSON: {err}; give a JSON object such as "
            '\'{"l": 2, "o": ["sa", "sa"], "h": [128, 128], "n": [2, 2], "f": [[512], [512]], "p": ["sdp", "sdp"]}\''
        ) from None
    if not isinstance(model_dict, dict):
        raise ConfigurationError(f"{source} must hold a JSON object (a model dict), not a {type(model_dict).__name__}")
    try:
        parse_model_dict(model_dict)
    except ValueError as err:
        raise ConfigurationError(f"{source}: {err}") from None
    return model_dict


def resolve_model_dict(model_hash: str | None, dataset_file: str | None, model_dict: str | None) -> tuple[dict, str]:
    """The model dict and its hash, from ``--model_hash`` + ``--dataset_file`` (a graph library) or ``--model_dict``."""
    if (model_hash is None) == (model_dict is None):
        raise ConfigurationError("give exactly one of --model_hash (with --dataset_file) and --model_dict")
    if model_dict is not None:
        parsed = read_model_dict(model_dict)
        return parsed, compute_model_hash(parsed)
    if dataset_file is None:
        raise ConfigurationError("--model_hash needs --dataset_file, the graph library JSON that lists the model "
                                 "(built with embeddings/generate_library.py)")
    try:
        library = Library.load(dataset_file)
    except LibraryFileError as err:
        raise ConfigurationError(str(err)) from None
    if model_hash not in library:
        raise ConfigurationError(f"model {model_hash} is not in {dataset_file} ({len(library)} models); "
                                 "check the hash, or pass the architecture itself with --model_dict")
    return library.model_dict(model_hash), model_hash


def saved_model_config(path: str | Path, flag: str) -> FlexiBERTConfig:
    """The configuration of the saved FlexiBERT model in ``path`` (named by ``flag``); anything else there is a settings error."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise ConfigurationError(f"{flag} {path} holds no saved model: cannot read a model config (no config.json); give a folder "
                                 "written by save_pretrained (config.json and model.safetensors), e.g. the --output_dir of a "
                                 "finished pretraining run")
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
        config = FlexiBERTConfig.from_pretrained(path) if model_type == "flexibert" else None
    except (OSError, ValueError, AttributeError) as err:  # unreadable JSON, not an object, or an invalid FlexiBERT config
        raise ConfigurationError(f"{flag} {path}: cannot read a model config ({err}); give a folder written by save_pretrained, "
                                 "e.g. the --output_dir of a finished pretraining run") from None
    if config is None:
        raise ConfigurationError(f"{flag} {path} holds a {model_type!r} model, not a FlexiBERT one; convert BERT checkpoints "
                                 "with `python flexibert/save_pretrained_models.py --model DIR --output_dir OUT`")
    return config


def load_flexibert_model(path: str | Path, flag: str = "--init_from") -> FlexiBERTPreTrainedModel:
    """A saved FlexiBERT model with the class it was saved as (MLM, classification or base), so no head is made up at random."""
    config = saved_model_config(path, flag)
    names = config.architectures or ["FlexiBERTModel"]
    model_class = getattr(modeling_flexibert, names[0], None)
    if not isinstance(model_class, type) or not issubclass(model_class, FlexiBERTPreTrainedModel):
        raise ConfigurationError(f"{path}/config.json names an unknown architecture {names[0]!r}")
    return model_class.from_pretrained(path, config=config)


def open_tokenizer(name_or_path: str | Path, hint: str = "") -> PreTrainedTokenizerBase:
    """The run's tokenizer; one that cannot be loaded is a settings error (``hint`` adds where the flag looks by default)."""
    try:
        return load_tokenizer(name_or_path)
    except (OSError, ValueError) as err:
        raise ConfigurationError(f"{err}{hint}") from None


@dataclass
class BuiltModel:
    """A freshly built model with what the results file records about where it came from."""

    model: FlexiBERTPreTrainedModel
    model_dict: dict
    model_hash: str
    transfer: TransferReport | None = None


def build_model(
    source: ModelSource,
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    model_class: type[FlexiBERTPreTrainedModel] = FlexiBERTForMaskedLM,
    **config_kwargs: Any,
) -> BuiltModel:
    """Build ``model_class`` for ``source`` (library hash or model dict) with the tokenizer's vocabulary.

    The seed is set first, so the same command builds the same initial weights (a resumed or re-run
    job rebuilds exactly the model it started from). With ``source.init_from`` the weights are then
    transferred from that saved FlexiBERT model (``source.transfer_mode``: OD or RP). ``config_kwargs``
    go to ``FlexiBERTConfig`` (e.g. ``num_labels`` for classification).
    """
    model_dict, model_hash = resolve_model_dict(source.model_hash, source.dataset_file, source.model_dict)
    config = FlexiBERTConfig.from_model_dict(
        model_dict,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        max_position_embeddings=source.max_position_embeddings,
        **config_kwargs,
    )
    set_seed(seed)
    model = model_class(config, transfer_mode=source.transfer_mode)
    if source.init_from is None:
        return BuiltModel(model, model_dict, model_hash)
    warm = load_flexibert_model(source.init_from)
    if warm.config.vocab_size != config.vocab_size:
        raise ConfigurationError(
            f"--init_from {source.init_from} was trained with a vocabulary of {warm.config.vocab_size} tokens but the tokenizer "
            f"has {config.vocab_size}; use the tokenizer it was trained with (it is saved in {source.init_from})"
        )
    report = model.load_model_from_source(warm, seed=seed)
    return BuiltModel(model, model_dict, model_hash, report)
