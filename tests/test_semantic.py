"""Semantic synthesis (SPADE): the model family, its weights file, its export and the ``semantic`` op.

A tiny randomly initialised generator (ngf 8, with a style encoder) goes the whole way: saved
with its label table, exported by the real pipeline (ONNX, fp32/fp16 parity, TensorRT report)
into a temporary model repository, and run by ``impasto semantic`` on ONNX Runtime.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from impasto.runtime.cli import main
from impasto.train.data.labels import LANDSCAPE, Label, LabelTable
from impasto.train.models.spade import (
    SPADE,
    SemanticConfig,
    count_parameters,
    fold_spectral_norm,
    has_spectral_norm,
    kl_divergence,
    matched_pix2pixhd_config,
    one_hot,
    pix2pixhd_generator,
    reparameterize,
    spade_generator,
    style_encoder,
)
from impasto.train.models.weights_io import (
    load_semantic,
    load_semantic_encoder,
    require_shipped_semantic,
    save_semantic,
)

torch.set_num_threads(2)
# the registered model's interface (9 landscape classes, z_dim 64, stride 32) at a tiny width
TINY = SemanticConfig(ngf=8, spade_hidden=8, use_encoder=True, nef=8, encoder_layers=3)


def _labels(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, TINY.num_classes, (1, 1, h // 8, w // 8), generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3)


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return spade_generator(TINY).eval(), style_encoder(TINY).eval()


# -- the model ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(64, 64), (64, 96), (128, 96)])
def test_generators_and_encoder_give_the_label_maps_size(tiny, size):
    generator, encoder = tiny
    h, w = size
    x = one_hot(_labels(h, w), TINY.num_classes).expand(2, -1, -1, -1)
    with torch.no_grad():
        image = generator(x, torch.randn(2, TINY.z_dim))
        base = pix2pixhd_generator(TINY)(x, torch.randn(2, TINY.z_dim))
        mu, logvar = encoder(torch.rand(2, 3, h, w) * 2 - 1)
    assert image.shape == base.shape == (2, 3, h, w)
    assert image.abs().max() <= 1 and base.abs().max() <= 1
    assert mu.shape == logvar.shape == (2, TINY.z_dim)


def test_one_hot_and_configs_refuse_what_they_cannot_take():
    labels = torch.tensor([[[[0, 2], [8, 9]]]])
    hot = one_hot(labels, 9)
    assert hot.shape == (1, 9, 2, 2) and hot[0, 2, 0, 1] == 1 and hot[0, :, 1, 1].sum() == 0  # 9: no class
    with pytest.raises(ValueError, match="multiple of the generator's stride 32"):
        SemanticConfig(image_size=100)
    with pytest.raises(ValueError, match="z_dim > 0"):
        SemanticConfig(use_encoder=True, z_dim=0)


def test_spade_modulates_by_label_locally():
    torch.manual_seed(1)
    spade = SPADE(4, 3, hidden=8).eval()
    x = torch.randn(1, 4, 16, 16)
    labels = torch.zeros(1, 1, 16, 16, dtype=torch.long)
    changed = labels.clone()
    changed[..., 2:6, 2:6] = 2
    with torch.no_grad():
        a, b = spade(x, one_hot(labels, 3)), spade(x, one_hot(changed, 3))
    diff = (a - b).abs().amax(1)[0]
    assert diff[2:6, 2:6].min() > 1e-3  # the new label changes gamma/beta where it is
    far = torch.ones(16, 16, dtype=torch.bool)
    far[:8, :8] = False  # two 3x3 convs reach 2 px around the change
    assert diff[far].max() == 0  # and nowhere else


def test_folding_spectral_norm_keeps_the_outputs(tiny):
    torch.manual_seed(2)
    generator = spade_generator(TINY).train()  # its own: folding a deep copy would break the fixture's original
    x, z = one_hot(_labels(64, 64), TINY.num_classes), torch.randn(1, TINY.z_dim)
    with torch.no_grad():
        generator(x, z)  # power iterations move the singular vectors away from their start
        expected = generator.eval()(x, z)
        assert has_spectral_norm(generator)
        fold_spectral_norm(generator)
        assert not has_spectral_norm(generator)
        torch.testing.assert_close(generator(x, z), expected, atol=1e-5, rtol=1e-5)


def test_pix2pixhd_baseline_matches_the_parameter_count_and_demo_fits_8_mb():
    for config in (SemanticConfig(), TINY):
        spade = count_parameters(spade_generator(config))
        base = count_parameters(pix2pixhd_generator(matched_pix2pixhd_config(config)))
        assert abs(base - spade) / spade < 0.10, (config.ngf, spade, base)
    assert count_parameters(spade_generator(SemanticConfig())) * 2 <= 8_000_000  # fp16 bytes


def test_kl_and_reparameterize():
    mu, logvar = torch.zeros(4, 8), torch.zeros(4, 8)
    assert kl_divergence(mu, logvar) == 0
    assert kl_divergence(mu + 1, logvar) == pytest.approx(4.0)  # 0.5 * sum(mu^2) per sample
    z = reparameterize(mu, torch.full((4, 8), -20.0), torch.Generator().manual_seed(0))
    assert z.abs().max() < 1e-3  # sigma = e^-10: the code collapses to mu


# -- weights ------------------------------------------------------------------------------------------


def test_weights_round_trip_with_config_and_labels(tiny, tmp_path):
    generator, encoder = tiny
    path = save_semantic(tmp_path / "w.safetensors", generator, TINY, LANDSCAPE, encoder=encoder, fp16=False)
    loaded, config, table = load_semantic(path)
    assert table == LANDSCAPE and config.ngf == 8 and config.spectral is False
    assert not has_spectral_norm(loaded) and has_spectral_norm(generator)  # the caller's module is left alone
    x, z = one_hot(_labels(64, 96), TINY.num_classes), torch.randn(1, TINY.z_dim)
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, z), generator(x, z), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(load_semantic_encoder(path)(image)[0], encoder(image)[0], atol=1e-5, rtol=1e-5)
    half = save_semantic(tmp_path / "h.safetensors", generator, TINY, LANDSCAPE, encoder=encoder)
    assert half.stat().st_size < path.stat().st_size * 0.6
    with pytest.raises(ValueError, match="2 labels but the model has 9 classes"):
        save_semantic(tmp_path / "x.safetensors", generator, TINY, LabelTable((Label("a", "#000000"), Label("b", "#ffffff"))),
                      encoder=encoder)
    plain = SemanticConfig(ngf=8, spade_hidden=8)
    save_semantic(tmp_path / "p.safetensors", spade_generator(plain), plain, LANDSCAPE)
    with pytest.raises(ValueError, match="holds no style encoder"):
        load_semantic_encoder(tmp_path / "p.safetensors")


def test_missing_shipped_weights_say_how_to_train_them():
    with pytest.raises(FileNotFoundError, match="impasto train semantic"):
        require_shipped_semantic("nowhere")


# -- export and the op --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tiny, tmp_path_factory):
    from impasto.export.pipeline import export_model

    folder = tmp_path_factory.mktemp("semantic")
    weights = save_semantic(folder / "tiny.safetensors", tiny[0], TINY, LANDSCAPE, encoder=tiny[1])
    repo = folder / "models"
    results = {name: export_model(name, repo, checkpoint=weights, seed=0)
               for name in ("semantic_landscape", "semantic_landscape_encoder")}
    return repo, weights, results


def test_export_holds_parity_passes_the_tensorrt_check_and_carries_the_table(exported):
    from impasto.export.repository import read_model

    repo, _, results = exported
    for result in results.values():
        assert result.parity.ok and result.parity_fp16.ok and result.compatibility.ok
        assert result.fp16_nodes["fp16"] > result.fp16_nodes["fp32"] > 0  # normalisations stay fp32
    info = read_model(repo, "semantic_landscape")
    assert LabelTable.from_json(info.parameters["impasto.labels"]) == LANDSCAPE
    assert [(t.name, t.dtype, t.dims) for t in info.inputs] == [("labels", "INT32", (1, -1, -1)), ("z", "FP32", (64,))]
    assert info.parameters["impasto.stride"] == "32"


def test_exported_graph_takes_any_multiple_of_the_stride(exported):
    import onnxruntime as ort

    from impasto.export.families.spade import SemanticExport

    repo, weights, _ = exported
    session = ort.InferenceSession(str(repo / "semantic_landscape" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    generator, config, _ = load_semantic(weights)
    module = SemanticExport(generator, config.num_classes).eval()
    for h, w in ((64, 64), (96, 160)):
        labels, z = _labels(h, w, seed=h).to(torch.int32), torch.randn(2, 64)
        labels = labels.expand(2, -1, -1, -1).contiguous()
        (got,) = session.run(["image"], {"labels": labels.numpy(), "z": z.numpy()})
        with torch.no_grad():
            expected = module(labels, z).numpy()
        assert got.shape == (2, 3, h, w) and 0 <= got.min() and got.max() <= 1
        assert np.abs(got - expected).max() < 1e-3


@pytest.fixture(scope="module")
def maps(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("maps")
    index = np.zeros((64, 96), np.uint8)
    index[32:] = 4
    index[20:40, 30:60] = 2
    index[:10, :20] = 1
    Image.fromarray(index).save(folder / "index.png")
    Image.fromarray(LANDSCAPE.colorize(index)).save(folder / "color.png")
    stray = LANDSCAPE.colorize(index)
    stray[5, 7] = (255, 0, 255)
    Image.fromarray(stray).save(folder / "stray.png")
    Image.fromarray(index[:, :70]).save(folder / "size.png")
    unknown = index.copy()
    unknown[3, 3] = 12
    Image.fromarray(unknown).save(folder / "unknown.png")
    Image.fromarray((np.random.default_rng(0).random((80, 80, 3)) * 255).astype(np.uint8)).save(folder / "style.png")
    return folder


def _impasto(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_op_runs_from_the_command_line_on_index_and_colour_maps(exported, maps, tmp_path, capsys):
    repo = str(exported[0])
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "semantic", str(maps / "color.png"), "-o",
                          str(tmp_path / "color.png"), "--repo", repo, "--seed", "3"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    code, _, err = _impasto(capsys, "semantic", str(maps / "index.png"), "-o", str(tmp_path / "index.png"), "--repo", repo,
                            "--seed", "3")
    assert code == 0, err
    color, index = np.asarray(Image.open(tmp_path / "color.png")), np.asarray(Image.open(tmp_path / "index.png"))
    assert color.shape == (64, 96, 3) and color.std() > 0
    np.testing.assert_array_equal(color, index)
    _impasto(capsys, "semantic", str(maps / "index.png"), "-o", str(tmp_path / "seed4.png"), "--repo", repo, "--seed", "4")
    code, _, err = _impasto(capsys, "semantic", str(maps / "index.png"), "-o", str(tmp_path / "style.png"), "--repo", repo,
                            "--style", str(maps / "style.png"))
    assert code == 0, err
    for other in ("seed4.png", "style.png"):  # another code, another picture
        assert np.abs(np.asarray(Image.open(tmp_path / other), np.int16) - index).max() > 0


@pytest.mark.parametrize("name, words", [
    ("stray.png", "colour #ff00ff at x=7, y=5 that is not in the label table"),
    ("size.png", "labels is 70x64 px; model 'semantic_landscape' needs sides that are multiples of 32"),
    ("unknown.png", "uses class index 12, but the table has 9 labels"),
])
def test_bad_label_maps_exit_2_with_one_line(exported, maps, tmp_path, capsys, name, words):
    code, _, err = _impasto(capsys, "semantic", str(maps / name), "-o", str(tmp_path / "o.png"), "--repo", str(exported[0]))
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "o.png").exists()


def test_style_is_refused_without_an_encoder(exported, maps, tmp_path, capsys):
    repo = tmp_path / "models"
    shutil.copytree(exported[0] / "semantic_landscape", repo / "semantic_landscape")
    code, _, err = _impasto(capsys, "semantic", str(maps / "index.png"), "-o", str(tmp_path / "o.png"), "--repo", str(repo),
                            "--style", str(maps / "style.png"))
    assert code == 2 and "has no style encoder" in err and err.count("\n") == 1, err


def test_labels_command_prints_the_table(exported, capsys):
    repo, weights, _ = exported
    code, out, _ = _impasto(capsys, "labels", "semantic_landscape", "--repo", str(repo))
    assert code == 0 and out.splitlines()[4].split() == ["4", "grass", "#7bc800"] and len(out.splitlines()) == 9
    code, out, _ = _impasto(capsys, "labels", str(weights), "--json")
    assert code == 0 and LabelTable.from_json(out) == LANDSCAPE
    code, _, err = _impasto(capsys, "labels", "nothing_here", "--repo", str(repo))
    assert code == 2 and "not in repository" in err


# -- the same op through the server, KServe and batch ----------------------------------------------


def test_semantic_runs_alike_over_grpc_http_batch_and_locally(exported, maps, tmp_path, capsys):
    """One label map, seed 3: gRPC Run, HTTP /v1/ops, `impasto batch` and local `impasto semantic` agree.

    Capabilities carries the model's label table (what the add-ons offer as a palette), KServe
    serves the raw model, and a stray colour is INVALID_ARGUMENT with the server still serving.
    """
    import tritonclient.grpc as triton

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "addons" / "common"))
    from impasto_http import ImpastoClient

    from impasto.runtime.client import JobFailed, StudioClient
    from serving import RunningServer

    repo = str(exported[0])
    code, _, err = _impasto(capsys, "semantic", str(maps / "color.png"), "-o", str(tmp_path / "local.png"), "--repo", repo,
                            "--seed", "3")
    assert code == 0, err
    local = (tmp_path / "local.png").read_bytes()
    color = (maps / "color.png").read_bytes()
    server = RunningServer("--repo", repo)
    try:
        with StudioClient(server.grpc) as client:
            caps = client.capabilities()
            result = client.run("semantic", {"labels": color}, {"seed": 3})
            with pytest.raises(JobFailed) as info:  # pixels are read when the job runs: the job ends with the error
                client.run("semantic", {"labels": (maps / "stray.png").read_bytes()}, {})
            assert info.value.code == "INVALID_ARGUMENT"
            assert "colour #ff00ff at x=7, y=5 that is not in the label table" in str(info.value)
            with pytest.raises(JobFailed) as info:
                client.run("semantic", {"labels": (maps / "size.png").read_bytes()}, {})
            assert info.value.code == "INVALID_ARGUMENT" and "multiples of 32" in str(info.value)
        model = next(m for m in caps.models if m.name == "semantic_landscape")
        assert LabelTable.from_json(model.parameters["impasto.labels"]) == LANDSCAPE
        op = next(o for o in caps.ops if o.name == "semantic")
        assert op.runs_in == "engine" and list(op.models) == ["semantic_landscape"]
        assert result.images["image"].encoded == local
        web = ImpastoClient(server.http).run("semantic", {"labels": color}, {"seed": 3})
        assert web["images"]["image"] == local
        kserve = triton.InferenceServerClient(server.grpc)
        labels = np.asarray(Image.open(maps / "index.png"), np.int32)[None, None]
        inputs = [triton.InferInput("labels", labels.shape, "INT32"), triton.InferInput("z", (1, 64), "FP32")]
        inputs[0].set_data_from_numpy(labels)
        inputs[1].set_data_from_numpy(np.zeros((1, 64), np.float32))
        image = kserve.infer("semantic_landscape", inputs).as_numpy("image")
        assert image.shape == (1, 3, 64, 96) and 0 <= image.min() <= image.max() <= 1
    finally:
        server.stop()
    jobs = tmp_path / "job"
    (jobs / "maps").mkdir(parents=True)
    shutil.copy(maps / "color.png", jobs / "maps" / "a.png")
    shutil.copy(maps / "index.png", jobs / "maps" / "b.png")
    (jobs / "job.toml").write_text('op = "semantic"\ninputs = "maps/*.png"\noutput = "out/{stem}.png"\n[params]\nseed = 3\n')
    run = subprocess.run([sys.executable, "-m", "impasto.runtime.cli", "batch", str(jobs / "job.toml"), "--repo", repo],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (jobs / "out" / "a.png").read_bytes() == local
    np.testing.assert_array_equal(np.asarray(Image.open(jobs / "out" / "b.png")), np.asarray(Image.open(jobs / "out" / "a.png")))
