"""The Generator protocol: the MCM and the Med-VAE both meet it, with its exact signatures."""

from __future__ import annotations

import inspect

import pytest

from fedsynth.model.generator import Generator
from fedsynth.model.mcm import MCM
from fedsynth.model.medvae import MedVAE

METHODS = ["build", "fit", "sample", "sample_chunks", "save", "load"]


@pytest.mark.parametrize("cls", [MCM, MedVAE])
def test_each_generator_satisfies_the_protocol(cls: type) -> None:
    model = cls()
    assert isinstance(model, Generator)
    assert model.schema_ is None and model.differentially_private_ is False
    assert isinstance(inspect.getattr_static(cls, "load"), classmethod)


@pytest.mark.parametrize("cls", [MCM, MedVAE])
@pytest.mark.parametrize("method", METHODS)
def test_each_method_takes_the_protocols_parameters_and_defaults(cls: type, method: str) -> None:
    # isinstance checks names only; callers pass these keywords, so they must match too.
    expected = inspect.signature(getattr(Generator, method)).parameters
    actual = inspect.signature(getattr(cls, method)).parameters
    assert [(p.name, p.default) for p in actual.values()] == [(p.name, p.default) for p in expected.values()]


def test_an_object_missing_a_method_is_not_a_generator() -> None:
    class SampleOnly:
        schema_ = None
        differentially_private_ = False

        def sample(self, n: int, conditions=None, seed: int = 0): ...

    assert not isinstance(SampleOnly(), Generator)
