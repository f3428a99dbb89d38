"""Export to ONNX, the fp16 variant, the TensorRT report, the model repository and the backends."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from google.protobuf import text_format
from onnx import TensorProto, helper
from torch import nn
from tritonclient.grpc import model_config_pb2

from impasto.export import registry
from impasto.export.compatibility import check_tensorrt
from impasto.export.fp16 import convert_to_fp16
from impasto.export.onnx import ExportError
from impasto.export.pipeline import export_model
from impasto.export.registry import ExportableModel, TensorSpec, get_model
from impasto.export.repository import RepositoryError, read_model
from impasto.export.tensorrt import GpuInfo, engine_key, find_engine, onnx_for
from impasto.runtime.backends import InferenceInputError, load_backend
from impasto.train.brushes import BRUSHES

RENDERERS = [f"renderer_{b}" for b in BRUSHES]
SHIPPED = [*RENDERERS, "semantic_landscape", "sketch_demo", "colorize_demo", "colorize_demo_style", "warp_demo",
           *[f"stroke_{b}" for b in BRUSHES]]  # what `export --all` exports: every model whose weights ship


def impasto(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "impasto.runtime.cli", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> tuple[Path, dict]:
    """Every shipped model exported once, through the real command line."""
    path = tmp_path_factory.mktemp("repo") / "models"
    run = impasto("export", "--all", "--repo", str(path), "--seed", "7", "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    return path, {m["model"]: m for m in report["models"]}


def test_every_shipped_model_exports_with_parity_in_fp32_and_fp16(repo):
    path, results = repo
    assert sorted(results) == sorted(SHIPPED)
    for name, r in results.items():
        assert r["parity_fp32"]["ok"] and r["parity_fp32"]["max_abs"] < 1e-4, name
        assert r["parity_fp16"]["ok"] and r["parity_fp16"]["max_abs"] < 5e-2, name
        assert r["fp16_nodes"]["fp16"] > 0, name  # the fp16 variant really computes in fp16
        assert r["tensorrt"]["ok"] and r["tensorrt"]["opset"] == 18, name
        graph = onnx.load(str(path / name / "1" / "model.onnx"))
        onnx.checker.check_model(graph)
        assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
        half = onnx.load(str(path / name / "1" / "model.fp16.onnx"))
        for edge, full in zip([*half.graph.input, *half.graph.output], [*graph.graph.input, *graph.graph.output]):
            assert edge.type.tensor_type.elem_type == full.type.tensor_type.elem_type, f"{name}: {edge.name} must keep its type"
            if full.type.tensor_type.elem_type != TensorProto.INT32:  # label maps stay integer indices
                assert edge.type.tensor_type.elem_type == TensorProto.FLOAT, f"{name}: {edge.name} must stay fp32"


def test_config_pbtxt_parses_with_tritons_schema(repo):
    path, _ = repo
    for name in RENDERERS:
        config = text_format.Parse((path / name / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        n = get_model(name).inputs[0].dims[0]
        assert config.name == name and config.platform == "onnxruntime_onnx"
        assert config.max_batch_size == 64
        assert [(i.name, list(i.dims), i.data_type) for i in config.input] == [("params", [n], model_config_pb2.TYPE_FP32)]
        assert [o.name for o in config.output] == ["foreground", "alpha"]
        assert list(config.output[0].dims) == [3, 128, 128]
        assert list(config.dynamic_batching.preferred_batch_size) == [8, 32]
        assert config.dynamic_batching.max_queue_delay_microseconds > 0
        assert len(config.instance_group) == 1 and config.instance_group[0].count == 1
        assert config.parameters["impasto.profile.params"].string_value == f"1x{n};32x{n};64x{n}"


def test_onnxruntime_backend_returns_what_torch_returns(repo):
    path, _ = repo
    for name in ("renderer_oil", "renderer_tape"):
        backend = load_backend(path, name, "onnxruntime")
        assert backend.describe()["providers"][-1] == "CPUExecutionProvider"
        spec = get_model(name)
        module = spec.build(None)
        (params,) = spec.sample(6, torch.Generator().manual_seed(3))
        with torch.inference_mode():
            fg, alpha = module(params)
        out = backend.infer({"params": params.numpy()})
        assert np.abs(out["foreground"] - fg.numpy()).max() < 1e-4
        assert np.abs(out["alpha"] - alpha.numpy()).max() < 1e-4
        assert out["alpha"].std() > 0.05  # strokes drawn, not an empty canvas


def test_backend_names_the_input_when_a_request_does_not_fit(repo):
    path, _ = repo
    backend = load_backend(path, "renderer_oil", "onnxruntime")
    cases = {
        "batch size 65 is outside 1..64": {"params": np.zeros((65, 12), np.float32)},
        "axis 1 must be 12": {"params": np.zeros((2, 11), np.float32)},
        "has no input 'paint'": {"paint": np.zeros((2, 12), np.float32)},
        "NaN": {"params": np.full((1, 12), np.nan, np.float32)},
    }
    for message, request in cases.items():
        with pytest.raises(InferenceInputError, match=message):
            backend.infer(request)
    assert backend.infer({"params": np.zeros((1, 12), np.float64)})["alpha"].dtype == np.float32  # still serving


def test_bad_model_names_files_and_checkpoints_get_clear_errors(repo, tmp_path):
    path, _ = repo
    for bad in ("../etc", "a/b", "Renderer", ""):
        run = impasto("export", bad, "--repo", str(tmp_path / "r"))
        assert run.returncode == 2 and "is not allowed" in run.stderr, run.stderr
    run = impasto("export", "renderer_nope", "--repo", str(tmp_path / "r"))
    assert run.returncode == 2 and "unknown model 'renderer_nope'" in run.stderr
    run = impasto("export", "--all", "--skip", "renderer_nope", "--repo", str(tmp_path / "r"))
    assert run.returncode == 2 and "--skip renderer_nope: not a shipped model" in run.stderr
    run = impasto("export", "renderer_oil", "--skip", "renderer_tape", "--repo", str(tmp_path / "r"))
    assert run.returncode == 2 and "--skip applies to --all" in run.stderr
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00" * 64)
    run = impasto("export", "renderer_oil", "--checkpoint", str(corrupt), "--repo", str(tmp_path / "r"))
    assert run.returncode == 2 and str(corrupt) in run.stderr and len(run.stderr.strip().splitlines()) == 1
    run = impasto("export", "renderer_oil", "--checkpoint", str(tmp_path / "missing.safetensors"), "--repo", str(tmp_path / "r"))
    assert run.returncode == 2 and "missing.safetensors" in run.stderr
    assert not (tmp_path / "r" / "renderer_oil").exists()  # nothing half-written
    # a damaged graph in a repository: the backend names the file
    broken = tmp_path / "broken"
    (broken / "renderer_oil" / "1").mkdir(parents=True)
    (broken / "renderer_oil" / "config.pbtxt").write_text((path / "renderer_oil" / "config.pbtxt").read_text())
    (broken / "renderer_oil" / "1" / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(RepositoryError, match="model.onnx"):
        load_backend(broken, "renderer_oil", "onnxruntime")
    with pytest.raises(RepositoryError, match="not in repository"):
        read_model(path, "renderer_nope")


def test_a_renderer_trained_elsewhere_exports_from_its_checkpoint(tmp_path):
    from impasto.train.models.weights_io import shipped_renderer_path

    result = export_model("renderer_tape", tmp_path, checkpoint=shipped_renderer_path("tape"), fp16=False, seed=0)
    assert result.parity.ok and result.parity_fp16 is None
    assert read_model(tmp_path, "renderer_tape").parameters["impasto.source"].endswith("renderer_tape.safetensors")
    with pytest.raises(ExportError, match="'oil' renderer, not 'tape'"):
        export_model("renderer_tape", tmp_path / "x", checkpoint=shipped_renderer_path("oil"))


# --- a model with dynamic spatial axes and a normalisation, registered like any future model ---


class _TinyImageNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.InstanceNorm2d(8, affine=True), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(image))


def _tiny(upsample_mode: str = "nearest") -> ExportableModel:
    class Net(_TinyImageNet):
        def forward(self, image):
            y = super().forward(image)
            return nn.functional.interpolate(y, scale_factor=2, mode=upsample_mode)

    return ExportableModel(
        name="test_tiny",
        description="test model",
        build=lambda checkpoint: Net().eval(),
        inputs=(TensorSpec("image", (3, -1, -1), profile=((16, 64, 256), (16, 64, 256))),),
        outputs=(TensorSpec("image2x", (3, -1, -1)),),
        sample=lambda n, rng: (torch.rand(n, 3, 24, 32, generator=rng),),
        max_batch_size=4,
        preferred_batch_sizes=(2,),
    )


@pytest.fixture
def tiny_registered():
    registry.register("test_tiny", _tiny)
    yield
    registry._REGISTRY.pop("test_tiny", None)


def test_a_new_model_family_plugs_in_with_dynamic_spatial_axes(tiny_registered, tmp_path):
    result = export_model("test_tiny", tmp_path, seed=1)
    assert result.parity.ok and result.parity_fp16.ok
    model = read_model(tmp_path, "test_tiny")
    assert model.inputs[0].dims == (3, -1, -1) and model.max_batch_size == 4
    assert model.profile("image") == ((1, 3, 16, 16), (2, 3, 64, 64), (4, 3, 256, 256))
    backend = load_backend(tmp_path, "test_tiny", "onnxruntime")
    for h, w in ((16, 20), (40, 64)):
        out = backend.infer({"image": np.random.rand(2, 3, h, w).astype(np.float32)})["image2x"]
        assert out.shape == (2, 3, 2 * h, 2 * w)
    with pytest.raises(InferenceInputError, match="axis 2 is 300, outside the profile's 16..256"):
        backend.infer({"image": np.zeros((1, 3, 300, 32), np.float32)})
    # normalisations stay fp32 in the fp16 variant; the convolutions run in fp16
    half = onnx.shape_inference.infer_shapes(onnx.load(str(model.onnx_path("fp16"))))
    types = {v.name: v.type.tensor_type.elem_type for v in half.graph.value_info}
    by_op = {n.op_type: types.get(n.output[0]) for n in half.graph.node}
    assert by_op["InstanceNormalization"] == TensorProto.FLOAT
    assert by_op["Conv"] == TensorProto.FLOAT16


def test_export_refuses_a_construct_tensorrt_cannot_parse_unless_allowed(tmp_path):
    registry.register("test_tiny", lambda: _tiny("bicubic"))
    try:
        with pytest.raises(ExportError, match="Resize"):
            export_model("test_tiny", tmp_path, seed=0)
        assert not (tmp_path / "test_tiny").exists()
        result = export_model("test_tiny", tmp_path, seed=0, allow=["Resize"], fp16=False)
        assert result.compatibility.allowed and (tmp_path / "test_tiny" / "1" / "model.onnx").is_file()
    finally:
        registry._REGISTRY.pop("test_tiny", None)


def _graph(op: str, opset: int = 18, domain: str = "", **attrs) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    node = helper.make_node(op, ["x"], ["y"], domain=domain, **attrs)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    return helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=opsets)


def test_compatibility_report_flags_unsupported_operators_attributes_and_opsets():
    assert check_tensorrt(_graph("Relu")).ok
    unique = check_tensorrt(_graph("Unique"))
    assert not unique.ok and "does not support Unique" in unique.problems[0]
    assert [u.status for u in unique.ops] == ["unsupported"]
    assert check_tensorrt(_graph("Unique"), allow=["Unique"]).ok
    custom = check_tensorrt(_graph("FancyOp", domain="com.studio"))
    assert not custom.ok and "not known" in custom.problems[0]
    resize = _graph("Resize", mode="cubic", antialias=1)
    report = check_tensorrt(resize)
    assert not report.ok and any("antialias=1" in p for p in report.problems)
    assert not check_tensorrt(_graph("Relu", opset=25)).ok  # beyond the parser's opset range
    assert "Relu" in check_tensorrt(_graph("Relu")).table()


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    return {v.name: v.type.tensor_type.elem_type for v in [*g.value_info, *g.input, *g.output]}


def _heavy_nodes_by_scope(model: onnx.ModelProto) -> dict[str, list[onnx.NodeProto]]:
    """MatMul/Gemm/ConvTranspose nodes (most of the FLOPs) by top-level module: encoder, decoder, shading."""
    from impasto.export.fp16 import node_scopes

    by_scope: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        if n.op_type in ("MatMul", "Gemm", "ConvTranspose"):
            scopes = node_scopes(n)
            by_scope.setdefault(scopes[1] if len(scopes) > 1 else "", []).append(n)
    return by_scope


def test_fp16_conversion_keeps_inputs_outputs_and_scopes_in_fp32(repo):
    path, _ = repo
    folder = path / "renderer_oil" / "1"
    # the variant written to the repository: fp16 compute inside, fp32 at the edges
    half = onnx.load(str(folder / "model.fp16.onnx"))
    types = _value_types(half)
    for edge in [*half.graph.input, *half.graph.output]:
        assert edge.type.tensor_type.elem_type == TensorProto.FLOAT, f"{edge.name} must stay fp32"
    fp16_nodes = [n for n in half.graph.node if n.op_type not in ("Cast", "Constant")
                  and any(types.get(v) == TensorProto.FLOAT16 for v in n.output)]
    assert len(fp16_nodes) > 0, "no node of model.fp16.onnx computes in fp16"
    assert any(t.data_type == TensorProto.FLOAT16 for t in half.graph.initializer)  # weights stored in fp16
    # the registered fp32 scopes (encoder, decoder) stayed fp32; the shading branch's products went fp16
    heavy = _heavy_nodes_by_scope(half)
    assert heavy.get("encoder") and heavy.get("decoder") and heavy.get("shading"), sorted(heavy)
    for scope in ("encoder", "decoder"):
        assert all(types[n.output[0]] == TensorProto.FLOAT for n in heavy[scope]), scope
    assert all(types[n.output[0]] == TensorProto.FLOAT16 for n in heavy["shading"])

    # converting again with every branch kept: no matrix product in fp16, edges still fp32
    graph = onnx.load(str(folder / "model.onnx"))
    kept = convert_to_fp16(graph, keep_scopes=("encoder", "decoder", "shading"))
    kept_types = _value_types(kept)
    products = [n for nodes in _heavy_nodes_by_scope(kept).values() for n in nodes]
    assert len(products) == 12  # 7 Gemm, 2 MatMul, 3 ConvTranspose: none lost in the conversion
    assert all(kept_types[n.output[0]] == TensorProto.FLOAT for n in products)
    for edge in [*kept.graph.input, *kept.graph.output]:
        assert edge.type.tensor_type.elem_type == TensorProto.FLOAT, f"{edge.name} must stay fp32"


# --- TensorRT: engines keyed by GPU, TensorRT version and graph ---------------------------------


def test_an_engine_built_for_another_gpu_version_or_graph_is_never_loaded(repo):
    path, _ = repo
    model = read_model(path, "renderer_marker")
    key = engine_key(model, "fp16", GpuInfo(0, "NVIDIA H100 80GB HBM3", "sm90"), "10.8.0")
    assert onnx_for(model, "fp16", "10.8.0").name == "model.fp16.onnx"  # TensorRT 10: strongly typed graph
    assert onnx_for(model, "fp16", "8.6.1").name == "model.onnx"  # 8.6: FP16 flag, fp32 layers pinned
    folder = model.version_folder / "engines"
    folder.mkdir(exist_ok=True)
    plan = folder / key.filename()
    plan.write_bytes(b"engine")
    plan.with_suffix(".json").write_text(json.dumps(asdict(key)))
    assert find_engine(model, key) == plan
    for other in (
        replace(key, compute_capability="sm89"),
        replace(key, gpu="NVIDIA H200"),  # same sm90, another GPU model
        replace(key, tensorrt="10.9.0"),
        replace(key, onnx_sha256="0" * 64),
    ):
        assert find_engine(model, other) is None
    # a plan whose recorded key disagrees with its name (copied by hand) is refused too
    plan.with_suffix(".json").write_text(json.dumps({**asdict(key), "tensorrt": "10.0.0"}))
    assert find_engine(model, key) is None


def test_build_engine_without_tensorrt_says_why_with_exit_code_2(repo):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    path, _ = repo
    run = impasto("build-engine", "renderer_oil", "--repo", str(path))
    assert run.returncode == 2 and "TensorRT is not installed" in run.stderr


def _tensorrt_gpu() -> None:
    pytest.importorskip("tensorrt", reason="TensorRT cannot be installed on this machine (NVIDIA's index, no GPU)")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")


def test_tensorrt_engine_matches_torch_and_is_reused(repo):
    _tensorrt_gpu()
    from impasto.export.tensorrt import build_engine

    path, _ = repo
    model = read_model(path, "renderer_oil")
    plan = build_engine(model, "fp16")
    assert build_engine(model, "fp16") == plan  # cached, same key
    backend = load_backend(path, "renderer_oil", "tensorrt")
    spec = get_model("renderer_oil")
    (params,) = spec.sample(8, torch.Generator().manual_seed(5))
    with torch.inference_mode():
        fg, alpha = spec.build(None)(params)
    out = backend.infer({"params": params.numpy()})
    assert np.abs(out["foreground"] - fg.numpy()).max() < 5e-2
    assert np.abs(out["alpha"] - alpha.numpy()).max() < 5e-2
    with pytest.raises(InferenceInputError):
        backend.infer({"params": np.zeros((65, 12), np.float32)})


def test_infer_command_runs_a_model_and_honours_the_backend_setting(repo, tmp_path):
    path, _ = repo
    params = np.random.default_rng(0).random((3, 12), dtype=np.float32)
    np.save(tmp_path / "p.npy", params)
    run = impasto("infer", "renderer_oil", "--repo", str(path), "--input", f"params={tmp_path / 'p.npy'}",
                  "-o", str(tmp_path / "out.npz"), "--backend", "onnxruntime", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["backend"] == "onnxruntime"
    with np.load(tmp_path / "out.npz") as out:
        assert out["foreground"].shape == (3, 3, 128, 128) and out["alpha"].shape == (3, 1, 128, 128)
    np.save(tmp_path / "bad.npy", params[:, :11])
    run = impasto("infer", "renderer_oil", "--repo", str(path), "--input", f"params={tmp_path / 'bad.npy'}", "-o", str(tmp_path / "bad.npz"))
    assert run.returncode == 2 and "input 'params'" in run.stderr and not (tmp_path / "bad.npz").exists()


def test_onnxruntime_providers_are_tried_tensorrt_then_cuda_then_cpu():
    from impasto.runtime.backends.onnxruntime import choose_providers

    everything = ["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider", "OpenVINOExecutionProvider"]
    assert choose_providers(everything) == ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert choose_providers(everything, ["CUDAExecutionProvider"]) == ["CUDAExecutionProvider"]
    with pytest.raises(ValueError, match="CUDAExecutionProvider is not available"):
        choose_providers(["CPUExecutionProvider"], ["CUDAExecutionProvider"])
