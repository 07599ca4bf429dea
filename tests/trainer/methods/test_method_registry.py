"""The method registry: one name per method, typed settings, listings."""

from __future__ import annotations

import pytest
from personsearch_train.commands.train import format_methods
from personsearch_train.errors import ConfigError
from personsearch_train.methods import (
    TrainingMethod,
    available_methods,
    build_method,
    get_method,
    register_method,
)
from personsearch_train.methods.seqnet_oim import SeqNetOIM, SeqNetOIMArgs


def test_a_name_is_registered_once() -> None:
    class Again(TrainingMethod):
        name = "seqnet_oim"

    with pytest.raises(ValueError, match="'seqnet_oim' is already registered"):
        register_method(Again)
    assert get_method("seqnet_oim") is SeqNetOIM


def test_a_method_needs_a_name_and_dataclass_settings() -> None:
    class Nameless(TrainingMethod):
        pass

    class LooseArgs(TrainingMethod):
        name = "test_loose_args"
        Args = dict  # type: ignore[assignment]

    with pytest.raises(ValueError, match="has no 'name'"):
        register_method(Nameless)
    with pytest.raises(ValueError, match="Args must be a dataclass"):
        register_method(LooseArgs)
    with pytest.raises(ValueError, match="TrainingMethod subclass"):
        register_method(object)  # type: ignore[arg-type]
    assert "test_loose_args" not in available_methods()


def test_settings_are_typed_and_defaults_are_the_papers() -> None:
    method = build_method("seqnet_oim", {"queue_size": 500, "scale": 20})
    assert method.args == SeqNetOIMArgs(queue_size=500, scale=20.0)
    assert isinstance(method.args.scale, float)
    # SeqNet's OIM (methods.md 1.3): CUHK-SYSU queue 5000, scale 30, momentum 0.5.
    assert SeqNetOIMArgs() == SeqNetOIMArgs(num_labelled=None, queue_size=5000, scale=30.0, momentum=0.5)
    with pytest.raises(ConfigError, match=r"method_args\.queue_size: expected an integer"):
        build_method("seqnet_oim", {"queue_size": 1.5})
    with pytest.raises(ConfigError, match="method_args: expected a mapping"):
        build_method("seqnet_oim", [1, 2])  # type: ignore[arg-type]


def test_settings_of_a_method_without_any_must_be_empty() -> None:
    class Plain(TrainingMethod):
        name = "test_plain_no_args"

    register_method(Plain)
    assert build_method("test_plain_no_args").args == Plain.Args()
    with pytest.raises(ConfigError, match=r"unknown setting 'method_args\.lr'"):
        build_method("test_plain_no_args", {"lr": 0.1})


def test_list_methods_shows_each_method_with_its_settings() -> None:
    text = format_methods()
    assert "seqnet_oim: supervised baseline" in text
    assert "method_args.queue_size: int = 5000" in text
    assert "reads identity labels and boxes" in text
