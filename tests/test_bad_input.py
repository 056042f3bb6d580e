"""Hostile input, by class: every damaged or mismatched file a user can hand accel gives one line on
stderr, exit status 2, and nothing written. Each class is tried on several commands and several
kinds of damage."""

import json
import pickle
import shutil

import numpy as np
import onnx
import pytest
from safetensors.torch import load_file, save_file

import accel
from conftest import make_tiny_unet, refused, tiny_calib
from conftest import run_cli as run

OUT = "written"  # every command below is pointed at this output; it must never appear


def commands(model, tmp_path):
    """One of each kind: a report folder, a sample file, an artifact, an exported file, and a plain
    look."""
    out = str(tmp_path / OUT)
    quick = ["--n", "2", "--steps", "1"]
    return [
        ["info", "--model", model],
        ["eval", "--model", model, *quick, "--out", out],
        ["sample", "--model", model, *quick, "--out", out + ".npz"],
        ["quantize", "--model", model, "--bits", "8", *quick, "--calib-samples", "1", "--out", out],
        ["export", "onnx", "--model", model, "--out", out + ".onnx"],
    ]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """A weight-only W8 artifact of the tiny UNet (it has every file an artifact has)."""
    model = accel.load(make_tiny_unet())
    accel.quantize_(model, accel.QuantConfig(w_bits=8, a_bits=None), None, progress=False)
    folder = tmp_path_factory.mktemp("artifact") / "w8"
    accel.save(model, folder)
    return folder


def damaged_copy(artifact, tmp_path, name: str, text: str):
    folder = tmp_path / "damaged"
    shutil.copytree(artifact, folder)
    (folder / name).write_text(text)
    return folder


def _edit(artifact, name: str, change) -> str:
    data = json.loads((artifact / name).read_text())
    change(data)
    return json.dumps(data)


# (file, damage): JSON that is not JSON, JSON of the wrong type, and objects whose fields are wrong
DAMAGE = {
    "corrupt": lambda artifact, name: '{"format": 2, "transforms": [',
    "a list": lambda artifact, name: "[1, 2, 3]",
    "a number": lambda artifact, name: "3",
}
ACCEL_JSON_FIELDS = {
    "format": lambda d: d.update(format="two"),
    "transforms not a list": lambda d: d.update(transforms={"name": "quantize"}),
    "transform without a name": lambda d: d["transforms"][0].pop("name"),
    "config of the wrong type": lambda d: d["transforms"][0]["config"].update(w_bits="eight"),
    "unknown config key": lambda d: d["transforms"][0]["config"].update(w_bitz=8),
    "record without its layers": lambda d: d["transforms"][0].pop("layers"),
    "layers of the wrong type": lambda d: d["transforms"][0].update(layers=[1, 2]),
    "sampler with no steps": lambda d: d["sampling"].update(steps=0),
    "sampler not an object": lambda d: d.update(sampling="ddim"),
    "no weights hash": lambda d: d.pop("weights_sha256"),
}
CONFIG_JSON_FIELDS = {
    "class name a list": lambda d: d.update(_class_name=["UNet2DModel"]),
    "another class": lambda d: d.update(_class_name="AutoencoderKL"),
    "widths that build no network": lambda d: d.update(block_out_channels="wide"),
}
SCHEDULER_FIELDS = {
    "timesteps a string": lambda d: d.update(num_train_timesteps="many"),
    "unknown beta schedule": lambda d: d.update(beta_schedule="wiggly"),
}


@pytest.mark.parametrize("name", ["accel.json", "config.json", "scheduler_config.json"])
@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
@pytest.mark.slow
def test_json_that_is_not_an_object_is_one_line_for_every_command(
    artifact, tmp_path, capsys, name, damage
):
    folder = damaged_copy(artifact, tmp_path, name, DAMAGE[damage](artifact, name))
    for argv in commands(str(folder), tmp_path):
        assert name in refused(capsys, tmp_path, *argv)


@pytest.mark.parametrize(
    "name,change",
    [
        *(("accel.json", c) for c in ACCEL_JSON_FIELDS.values()),
        *(("config.json", c) for c in CONFIG_JSON_FIELDS.values()),
        *(("scheduler_config.json", c) for c in SCHEDULER_FIELDS.values()),
    ],
    ids=[*ACCEL_JSON_FIELDS, *CONFIG_JSON_FIELDS, *SCHEDULER_FIELDS],
)
def test_json_with_wrong_fields_is_one_line(artifact, tmp_path, capsys, name, change):
    folder = damaged_copy(artifact, tmp_path, name, _edit(artifact, name, change))
    for argv in commands(str(folder), tmp_path)[:2]:
        assert name in refused(capsys, tmp_path, *argv)  # the message names the file to fix


def test_weights_of_another_model_or_recipe_are_refused(artifact, tmp_path, capsys):
    """Same keys and shapes (a W4 model's codes in a W8 artifact) or other ones: the recorded hash
    says no."""
    w4 = accel.load(make_tiny_unet())
    weight_only = accel.QuantConfig(w_bits=4, a_bits=None, rounding="nearest")
    accel.quantize_(w4, weight_only, None, progress=False)
    accel.save(w4, tmp_path / "w4")
    other = accel.load(make_tiny_unet(block_out_channels=(16, 16)))
    accel.save(other, tmp_path / "other")
    for donor in ("w4", "other"):
        folder = tmp_path / f"with-{donor}-weights"
        shutil.copytree(artifact, folder)
        shutil.copy(tmp_path / donor / "model.safetensors", folder / "model.safetensors")
        for argv in commands(str(folder), tmp_path)[:3]:
            assert "SHA-256 differs" in refused(capsys, tmp_path, *argv)


def test_weights_that_do_not_fit_an_artifact_without_a_hash_are_refused(tmp_path, capsys):
    """accel 0.1 artifacts carry no hash: a strict load catches weights of another structure."""
    folder = tmp_path / "old"
    shutil.copytree("tests/data/v0.1/tiny-w4a8", folder)
    shutil.copy("tests/data/v0.1/tiny-optimized/model.safetensors", folder / "model.safetensors")
    for argv in commands(str(folder), tmp_path)[:3]:
        assert "does not fit the model its folder describes" in refused(capsys, tmp_path, *argv)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from accel.export.onnx import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    export_onnx(accel.load(make_tiny_unet()), path)
    return path


ONNX_METADATA = {
    "corrupt": "{",
    "a list": "[1]",
    "wrong types": json.dumps({"kind": 3}),
    "no sample shape": None,
    "another dtype": None,
}


@pytest.mark.parametrize("damage", ONNX_METADATA)
def test_damaged_onnx_metadata_is_one_line(exported, tmp_path, capsys, damage):
    model = onnx.load(str(exported))
    entry = next(p for p in model.metadata_props if p.key == "accel")
    meta = json.loads(entry.value)
    edits = {
        "no sample shape": lambda: meta.pop("sample_shape"),
        "another dtype": lambda: meta.update(dtype="int8"),
    }
    if damage in edits:
        edits[damage]()
    entry.value = ONNX_METADATA[damage] or json.dumps(meta)
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, str(damaged))
    for argv in [commands(str(damaged), tmp_path)[i] for i in (0, 1, 4)]:
        assert "damaged.onnx" in refused(capsys, tmp_path, *argv)


def test_exporting_an_exported_model_is_one_line(exported, tmp_path, capsys):
    assert "it went through export" in refused(
        capsys, tmp_path, *commands(str(exported), tmp_path)[4]
    )


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "set.safetensors"
    tiny_calib(accel.load(make_tiny_unet())).save(path)
    return path


CALIBRATION_DAMAGE = {
    "corrupt metadata": ("x t", {"accel_calibration": "{"}),
    "metadata a list": ("x t", {"accel_calibration": "[]"}),
    "no metadata": ("x t", {}),
    "no t tensor": ("x", None),
    "no x tensor": ("t", None),
}


@pytest.mark.parametrize("damage", CALIBRATION_DAMAGE)
def test_damaged_calibration_sets_are_one_line(
    calibration, tmp_path, tiny_unet_dir, capsys, damage
):
    keep, metadata = CALIBRATION_DAMAGE[damage]
    tensors = {k: v for k, v in load_file(str(calibration)).items() if k in keep.split()}
    if metadata is None:
        from safetensors import safe_open

        with safe_open(str(calibration), framework="pt") as handle:
            metadata = handle.metadata()
    damaged = tmp_path / "damaged.safetensors"
    save_file(tensors, str(damaged), metadata=metadata)
    err = refused(
        capsys,
        tmp_path,
        "quantize",
        "--model",
        str(tiny_unet_dir),
        "--bits",
        "8",
        "--n",
        "2",
        "--steps",
        "1",
        "--calib",
        str(damaged),
        "--out",
        str(tmp_path / OUT),
    )
    assert "damaged.safetensors" in err


def test_fid_inputs_that_cannot_work_are_one_line(tmp_path, capsys):
    quick = ["eval", "--n", "2", "--steps", "1", "--out", str(tmp_path / OUT)]
    assert "--fid-ref" in refused(
        capsys, tmp_path, *quick, "--fid-ref", str(tmp_path / "missing.npz")
    )
    for images in (np.zeros((4, 2, 8, 8), np.uint8), np.zeros((1, 3, 8, 8), np.uint8)):
        np.savez(tmp_path / "real.npz", images=images)
        err = refused(
            capsys,
            tmp_path,
            *quick,
            "--inception-weights",
            str(tmp_path / "none.pth"),
            "--fid-ref",
            str(tmp_path / "real.npz"),
        )
        assert "at least 2 images with 1 or 3 channels" in err


class Planted:
    """Unpickling this creates a file: what a planted checkpoint could do if training unpickled
    it."""

    def __reduce__(self):
        return (open, ("PLANTED", "w"))


def test_training_never_unpickles_a_planted_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    work = tmp_path / "m.partial"
    work.mkdir()
    (work / "checkpoint.pt").write_bytes(pickle.dumps(Planted()))
    (work / "checkpoint").mkdir()
    (work / "checkpoint" / "tensors.safetensors").write_bytes(pickle.dumps(Planted()))
    code, _, err = run(capsys, "train-reference", "--out", "m", "--steps", "2")
    assert code == 2 and "checkpoint" in err and "damaged" in err and err.count("\n") == 1
    assert not (tmp_path / "PLANTED").exists() and not (tmp_path / "m").exists()


def test_train_reference_refuses_a_non_empty_out_without_overwrite(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for extra in ([], ["--classifier"]):
        code, _, err = run(capsys, "train-reference", "--out", str(out), "--steps", "1", *extra)
        assert (
            code == 2 and "--overwrite" in err and [p.name for p in out.iterdir()] == ["keep.txt"]
        )


def test_python_callers_get_accel_errors_for_wrong_types_too():
    with pytest.raises(accel.AccelError, match="quantize takes a QuantConfig, got dict"):
        accel.quantize_(accel.load(make_tiny_unet()), {"w_bits": 8}, None)
    with pytest.raises(accel.ConfigError, match="must be a JSON object"):
        accel.QuantConfig.from_dict([8, 8])
