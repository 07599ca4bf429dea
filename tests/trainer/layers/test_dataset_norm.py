"""Dataset-specific batch norm (PPS intra-task alignment): batch-norm parity, per-source
statistics, conversion of whole models, folding back to a plain model, and errors."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from personsearch_train.layers import (
    DatasetSpecificBatchNorm,
    active_source,
    convert_to_dataset_norm,
    fold_dataset_norm,
    set_active_source,
)
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _randomised_bn(kind: type[nn.Module], channels: int, momentum: float | None = 0.1) -> nn.Module:
    """A batch norm whose affine and running statistics are not the defaults."""
    bn = kind(channels, momentum=momentum)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)
        bn.num_batches_tracked.fill_(7)
    return bn


def _source_batch(source: int, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Two clearly different input distributions: N(0, 1) for source 0, N(3, 2^2) for source 1."""
    x = torch.randn(shape, generator=generator)
    return x if source == 0 else 3.0 + 2.0 * x


class _SmallNet(nn.Module):
    """Conv net with every kind of normalisation layer the conversion must tell apart."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1),
            FrozenBatchNorm2d(8),
            nn.GroupNorm(2, 8),
            nn.Conv2d(8, 6, 3, stride=2, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.LayerNorm(5), nn.Linear(5, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def _small_net() -> _SmallNet:
    torch.manual_seed(0)
    return _SmallNet()


def _train_two_sources(model: nn.Module, sources: list[int], seed: int = 1) -> None:
    """A few SGD steps, each batch from one source."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    for source in sources:
        x = _source_batch(source, (6, 3, 8, 8), generator)
        with active_source(model, source):
            loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


# --- the layer ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "shape"),
    [(nn.BatchNorm1d, (8, 5)), (nn.BatchNorm1d, (8, 5, 7)), (nn.BatchNorm2d, (4, 5, 6, 7))],
)
def test_training_output_is_batch_norm_with_batch_statistics(kind: type[nn.Module], shape: tuple) -> None:
    torch.manual_seed(0)
    layer = DatasetSpecificBatchNorm.from_batch_norm(_randomised_bn(kind, 5), num_sources=3).train()
    x = torch.randn(shape) * 2 + 1
    with active_source(layer, 2):
        out = layer(x)
    expected = F.batch_norm(x, None, None, layer.weight, layer.bias, training=True, eps=layer.eps)
    torch.testing.assert_close(out, expected)
    assert out.shape == x.shape and out.dtype == x.dtype


def test_affine_gradients_are_shared_across_sources() -> None:
    layer = DatasetSpecificBatchNorm.from_batch_norm(nn.BatchNorm2d(4), num_sources=2).train()
    generator = torch.Generator().manual_seed(0)
    for source in (0, 1):
        with active_source(layer, source):
            layer(_source_batch(source, (3, 4, 5, 5), generator)).sum().backward()
    assert layer.weight.grad is not None and layer.weight.grad.shape == (4,)
    names = {name for name, _ in layer.named_parameters()}
    assert names == {"weight", "bias"}


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_only_the_active_sources_statistics_move_like_batch_norm(momentum: float | None) -> None:
    torch.manual_seed(0)
    original = _randomised_bn(nn.BatchNorm2d, 4, momentum=momentum)
    layer = DatasetSpecificBatchNorm.from_batch_norm(original, num_sources=3).train()
    # Reference: one plain batch norm per source, each starting where the original was and
    # fed only that source's batches (counts start at 0: they count the source's own batches).
    references = [copy.deepcopy(original).train() for _ in range(3)]
    for reference in references:
        reference.num_batches_tracked.zero_()
    generator = torch.Generator().manual_seed(1)
    for source in [0, 0, 1, 0, 1]:
        x = _source_batch(source, (5, 4, 6, 6), generator)
        untouched = [s for s in range(3) if s != source]
        before = layer.running_mean[untouched].clone(), layer.running_var[untouched].clone()
        with active_source(layer, source):
            layer(x)
        references[source](x)
        assert torch.equal(layer.running_mean[untouched], before[0])
        assert torch.equal(layer.running_var[untouched], before[1])
    for source, reference in enumerate(references):
        torch.testing.assert_close(layer.running_mean[source], reference.running_mean)
        torch.testing.assert_close(layer.running_var[source], reference.running_var)
    assert layer.num_batches_tracked.tolist() == [3, 2, 0]
    # Source 2 was never trained on: it still holds the original statistics.
    torch.testing.assert_close(layer.running_mean[2], original.running_mean)
    torch.testing.assert_close(layer.running_var[2], original.running_var)


def test_eval_uses_the_active_sources_statistics() -> None:
    torch.manual_seed(0)
    original = _randomised_bn(nn.BatchNorm2d, 4)
    layer = DatasetSpecificBatchNorm.from_batch_norm(original, num_sources=2).train()
    references = [copy.deepcopy(original).train() for _ in range(2)]
    generator = torch.Generator().manual_seed(2)
    for _ in range(20):
        for source in (0, 1):
            x = _source_batch(source, (8, 4, 4, 4), generator)
            with active_source(layer, source):
                layer(x)
            references[source](x)
    layer.eval()
    x = torch.randn(3, 4, 5, 5, generator=generator)
    outputs = []
    for source, reference in enumerate(references):
        with active_source(layer, source):
            outputs.append(layer(x))
        torch.testing.assert_close(outputs[-1], reference.eval()(x))
    # Source 1's data is shifted by 3 and scaled by 2, so its statistics normalise differently.
    assert (outputs[0] - outputs[1]).abs().mean() > 0.5
    # Eval does not touch the statistics.
    assert layer.num_batches_tracked.tolist() == [20, 20]


def test_from_batch_norm_copies_and_keeps_mode_dtype_and_frozen_affine() -> None:
    bn = _randomised_bn(nn.BatchNorm1d, 6).double().eval()
    bn.weight.requires_grad_(False)
    layer = DatasetSpecificBatchNorm.from_batch_norm(bn, num_sources=2, layer_name="head.1")
    assert layer.plain_type is nn.BatchNorm1d and not layer.training
    assert layer.running_mean.shape == (2, 6) and layer.running_mean.dtype == torch.float64
    assert layer.num_batches_tracked.shape == (2,) and layer.num_batches_tracked.dtype == torch.int64
    assert not layer.weight.requires_grad and layer.bias.requires_grad
    for source in range(2):
        torch.testing.assert_close(layer.running_mean[source], bn.running_mean)
        torch.testing.assert_close(layer.running_var[source], bn.running_var)
    torch.testing.assert_close(layer.weight, bn.weight)
    assert layer.weight is not bn.weight  # a copy: training the new layer leaves bn alone
    assert "num_sources=2" in repr(layer) and "BatchNorm1d" in repr(layer)


# --- conversion ---------------------------------------------------------------------------


def test_convert_replaces_every_batch_norm_and_nothing_else() -> None:
    model = _small_net()
    before = dict(model.named_modules())
    assert convert_to_dataset_norm(model, num_sources=2) is model
    after = dict(model.named_modules())
    assert after.keys() == before.keys()
    converted = {name for name, m in after.items() if isinstance(m, DatasetSpecificBatchNorm)}
    assert converted == {"features.1", "features.7", "head.1"}
    for name, module in after.items():
        if name in converted:
            assert module.layer_name == name and module.num_sources == 2
            assert module.plain_type is type(before[name])
        else:
            assert type(module) is type(before[name])
            if name:  # the container itself is the same object; its children too
                assert module is before[name]
    assert not any(type(m) in (nn.BatchNorm1d, nn.BatchNorm2d) for m in model.modules())


def test_convert_leaves_sync_and_stat_free_batch_norms_and_shares_shared_ones() -> None:
    shared = nn.BatchNorm2d(3)
    sync = nn.SyncBatchNorm(3)
    no_stats = nn.BatchNorm2d(3, track_running_stats=False)
    model = nn.Sequential(shared, sync, no_stats, shared)
    convert_to_dataset_norm(model, num_sources=2)
    assert isinstance(model[0], DatasetSpecificBatchNorm) and model[3] is model[0]
    assert model[1] is sync and model[2] is no_stats


def test_convert_and_fold_a_bare_layer_return_the_new_layer() -> None:
    bn = nn.BatchNorm2d(3)
    layer = convert_to_dataset_norm(bn, num_sources=2)
    assert isinstance(layer, DatasetSpecificBatchNorm)
    plain = fold_dataset_norm(layer, source=1)
    assert type(plain) is nn.BatchNorm2d


def test_converted_model_trains_exactly_like_the_plain_model_on_one_source() -> None:
    plain = _small_net()
    converted = convert_to_dataset_norm(copy.deepcopy(plain), num_sources=2)
    generator = torch.Generator().manual_seed(3)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (plain, converted)]
    for _ in range(3):
        x = torch.randn(6, 3, 8, 8, generator=generator)
        with active_source(converted, 1):
            outputs = [m.train()(x) for m in (plain, converted)]
        torch.testing.assert_close(outputs[1], outputs[0])
        for optimizer, output in zip(optimizers, outputs, strict=True):
            optimizer.zero_grad()
            output.square().mean().backward()
            optimizer.step()
    x = torch.randn(2, 3, 8, 8, generator=generator)
    with active_source(converted, 1):
        torch.testing.assert_close(converted.eval()(x), plain.eval()(x))


def test_every_source_fed_the_same_data_reproduces_the_plain_model() -> None:
    plain = _small_net()
    converted = convert_to_dataset_norm(copy.deepcopy(plain), num_sources=3)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for _ in range(4):
            x = torch.randn(6, 3, 8, 8, generator=generator)
            plain.train()(x)
            for source in range(3):
                with active_source(converted, source):
                    converted.train()(x)
    x = torch.randn(2, 3, 8, 8, generator=generator)
    expected = plain.eval()(x)
    for source in range(3):
        with active_source(converted, source):
            torch.testing.assert_close(converted.eval()(x), expected)


def test_convert_resnet18() -> None:
    torch.manual_seed(0)
    plain = torchvision.models.resnet18(num_classes=3)
    with torch.no_grad():  # give the statistics something other than 0 / 1
        plain.train()(torch.rand(2, 3, 32, 32))
    plain_names = {name for name, m in plain.named_modules() if isinstance(m, nn.BatchNorm2d)}
    converted = convert_to_dataset_norm(copy.deepcopy(plain), num_sources=2)
    layers = {name for name, m in converted.named_modules() if isinstance(m, DatasetSpecificBatchNorm)}
    assert layers == plain_names and len(layers) == 20
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = plain.eval()(x)
        for source in range(2):
            with active_source(converted, source):
                torch.testing.assert_close(converted.eval()(x), expected)


# --- folding ------------------------------------------------------------------------------


@pytest.fixture
def trained_pair() -> tuple[nn.Module, nn.Module]:
    """(plain model before conversion, converted model trained on sources 0, 0, 1, 0, 1, 0)."""
    plain = _small_net()
    converted = convert_to_dataset_norm(copy.deepcopy(plain), num_sources=2)
    _train_two_sources(converted, [0, 0, 1, 0, 1, 0])
    return plain, converted.eval()


@pytest.mark.parametrize("source", [0, 1])
def test_fold_one_source_reproduces_the_converted_model(
    trained_pair: tuple[nn.Module, nn.Module], source: int
) -> None:
    plain, converted = trained_pair
    folded = fold_dataset_norm(copy.deepcopy(converted), source=source).eval()
    assert not any(isinstance(m, DatasetSpecificBatchNorm) for m in folded.modules())
    x = _source_batch(source, (3, 3, 8, 8), torch.Generator().manual_seed(5))
    with torch.no_grad(), active_source(converted, source):
        expected = converted(x)
    torch.testing.assert_close(folded(x), expected, atol=1e-6, rtol=0)
    # The two sources' statistics really differ, so the choice of source matters.
    other = fold_dataset_norm(copy.deepcopy(converted), source=1 - source).eval()
    assert not torch.allclose(other(x), expected, atol=1e-3)


@pytest.mark.parametrize("source", [0, None])
def test_folded_model_is_the_plain_models_architecture(
    trained_pair: tuple[nn.Module, nn.Module], source: int | None
) -> None:
    plain, converted = trained_pair
    folded = fold_dataset_norm(converted, source=source)
    folded_state, plain_state = folded.state_dict(), plain.state_dict()
    assert list(folded_state) == list(plain_state)
    for key, value in plain_state.items():
        assert folded_state[key].shape == value.shape and folded_state[key].dtype == value.dtype, key
    assert [type(m) for m in folded.modules()] == [type(m) for m in plain.modules()]
    fresh = _small_net()
    fresh.load_state_dict(folded_state)  # strict: every key and shape matches
    plain_norms = [m for m in folded.modules() if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d)]
    # Source 0's count is its own 4 batches; pooled, all 6.
    assert {int(m.num_batches_tracked) for m in plain_norms} == ({4} if source == 0 else {6})


def test_pooled_fold_is_the_weighted_mixture(trained_pair: tuple[nn.Module, nn.Module]) -> None:
    _, converted = trained_pair
    layers = {n: m for n, m in converted.named_modules() if isinstance(m, DatasetSpecificBatchNorm)}
    for weights, shares in [(None, (4 / 6, 2 / 6)), ([1.0, 3.0], (0.25, 0.75))]:
        folded = dict(fold_dataset_norm(copy.deepcopy(converted), weights=weights).named_modules())
        for name, layer in layers.items():
            assert layer.num_batches_tracked.tolist() == [4, 2]
            m, v = layer.running_mean.double(), layer.running_var.double()
            mean = shares[0] * m[0] + shares[1] * m[1]
            var = shares[0] * (v[0] + m[0] ** 2) + shares[1] * (v[1] + m[1] ** 2) - mean**2
            torch.testing.assert_close(folded[name].running_mean, mean.float())
            torch.testing.assert_close(folded[name].running_var, var.float())
            torch.testing.assert_close(folded[name].weight, layer.weight)


def test_pooled_statistics_are_those_of_the_union_of_the_data() -> None:
    # Law of total variance: with each source's exact (population) statistics and weights
    # equal to the sources' sizes, pooling gives the statistics of the concatenated data.
    generator = torch.Generator().manual_seed(6)
    data = [torch.randn(50, 3, generator=generator), 4.0 + 3.0 * torch.randn(150, 3, generator=generator)]
    layer = DatasetSpecificBatchNorm(3, 2, plain_type=nn.BatchNorm1d)
    with torch.no_grad():
        for source, values in enumerate(data):
            layer.running_mean[source] = values.mean(0)
            layer.running_var[source] = values.var(0, unbiased=False)
    mean, var = layer.pooled_statistics([50, 150])
    union = torch.cat(data)
    torch.testing.assert_close(mean, union.mean(0))
    torch.testing.assert_close(var, union.var(0, unbiased=False))


def test_pooled_fold_of_untrained_sources_keeps_the_original_statistics() -> None:
    original = _randomised_bn(nn.BatchNorm2d, 4)
    plain = fold_dataset_norm(convert_to_dataset_norm(copy.deepcopy(original), num_sources=3))
    torch.testing.assert_close(plain.running_mean, original.running_mean)
    torch.testing.assert_close(plain.running_var, original.running_var)


# --- active source and errors -------------------------------------------------------------


def test_active_source_restores_each_layers_previous_value() -> None:
    model = convert_to_dataset_norm(_small_net(), num_sources=3)
    layers = [m for m in model.modules() if isinstance(m, DatasetSpecificBatchNorm)]
    layers[0].active_source = 2
    with active_source(model, 1):
        assert all(layer.active_source == 1 for layer in layers)
        with active_source(model, 0):
            assert all(layer.active_source == 0 for layer in layers)
        assert all(layer.active_source == 1 for layer in layers)
    assert [layer.active_source for layer in layers] == [2, None, None]
    with pytest.raises(KeyError), active_source(model, 1):
        raise KeyError("boom")
    assert [layer.active_source for layer in layers] == [2, None, None]
    assert set_active_source(model, torch.tensor(1)) == 3  # 0-d integer tensors are accepted
    assert set_active_source(nn.Linear(2, 2), 5) == 0  # nothing to set: a no-op


def test_forward_without_an_active_source_raises() -> None:
    model = convert_to_dataset_norm(_small_net(), num_sources=2)
    with pytest.raises(RuntimeError, match=r"'features\.1' with 2 sources has no active source"):
        model(torch.randn(2, 3, 8, 8))


@pytest.mark.parametrize("index", [2, -1, True, 0.0])
def test_bad_source_index_raises_and_changes_nothing(index: object) -> None:
    model = convert_to_dataset_norm(_small_net(), num_sources=2)
    set_active_source(model, 1)
    with pytest.raises(ValueError, match=r"'features\.1' with 2 sources"):
        with active_source(model, index):
            pass
    with pytest.raises(ValueError, match="with 2 sources"):
        set_active_source(model, index)
    assert all(m.active_source == 1 for m in model.modules() if isinstance(m, DatasetSpecificBatchNorm))


def test_fold_errors_leave_the_model_converted() -> None:
    model = convert_to_dataset_norm(_small_net(), num_sources=2)
    with pytest.raises(ValueError, match="out of range"):
        fold_dataset_norm(model, source=2)
    with pytest.raises(ValueError, match="need 2 weights, one per source; got 3"):
        fold_dataset_norm(model, weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="not all zero"):
        fold_dataset_norm(model, weights=[0.0, 0.0])
    with pytest.raises(ValueError, match="non-negative"):
        fold_dataset_norm(model, weights=[-1.0, 2.0])
    with pytest.raises(ValueError, match="only used when pooling"):
        fold_dataset_norm(model, source=0, weights=[1.0, 1.0])
    assert sum(isinstance(m, DatasetSpecificBatchNorm) for m in model.modules()) == 3


def test_construction_and_input_errors() -> None:
    with pytest.raises(ValueError, match="num_sources"):
        convert_to_dataset_norm(_small_net(), num_sources=0)
    with pytest.raises(ValueError, match="track_running_stats=False"):
        DatasetSpecificBatchNorm.from_batch_norm(nn.BatchNorm2d(3, track_running_stats=False), 2)
    with pytest.raises(TypeError, match="SyncBatchNorm"):
        DatasetSpecificBatchNorm.from_batch_norm(nn.SyncBatchNorm(3), 2)
    with pytest.raises(ValueError, match="plain_type"):
        DatasetSpecificBatchNorm(3, 2, plain_type=nn.BatchNorm3d)
    layer = DatasetSpecificBatchNorm(3, 2, plain_type=nn.BatchNorm1d)
    layer.active_source = 0
    with pytest.raises(ValueError, match="expects 2D or 3D input; got 4D"):
        layer(torch.randn(2, 3, 4, 4))


def test_the_crop_branch_freeze_covers_dataset_specific_norms() -> None:
    from personsearch_train.weak_supervision.crops import frozen_running_statistics

    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    model = convert_to_dataset_norm(plain, num_sources=2).train()
    norm = model[1]
    before = norm.running_mean.clone(), norm.running_var.clone()
    with active_source(model, 1), frozen_running_statistics(model):
        model(torch.rand(4, 3, 8, 8))
    assert torch.equal(norm.running_mean, before[0]) and torch.equal(norm.running_var, before[1])
    with active_source(model, 1):
        model(torch.rand(4, 3, 8, 8))  # outside the freeze the active source's statistics move
    assert not torch.equal(norm.running_mean[1], before[0][1])
