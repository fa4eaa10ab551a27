"""Saved models load without the package: ``save_pretrained`` writes the code and ``auto_map`` beside the weights.

The models of three flavours and three heads are saved here, then loaded with
``AutoModel*.from_pretrained(folder, trust_remote_code=True)`` in a clean interpreter (``-I -S``: no
working directory, no PYTHONPATH, no .pth files such as the editable install's, so its ``sys.path`` is
the standard library plus site-packages and neither ``flexibert`` nor ``embeddings`` can be imported),
and their outputs must match the originals'.
"""

import json
import os
import site
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification
from transformers.dynamic_module_utils import get_imports, get_relative_import_files

from flexibert import FlexiBERTConfig, FlexiBERTForMaskedLM, FlexiBERTForSequenceClassification, FlexiBERTModel
from flexibert.models.modeling_flexibert import FlexiBERTPreTrainedModel

DICTS = {
    "sa": ({"l": 2, "o": ["sa", "sa"], "h": [16, 16], "n": [2, 4], "f": [[24], [24]], "p": ["sdp", "wma"]}, "absolute"),
    "mixed": ({"l": 3, "o": ["sa", "l", "c"], "h": [16, 24, 16], "n": [2, 4, 4], "f": [[24], [32], [24]], "p": ["sdp", "dct", 5]},
              "relative_key"),
    "hetero": ({"l": 2, "o": [["sa_sdp_8", "sa_wma_8", "l_dft_8", "l_dct_8", "c_5_8"], ["c_3_8", "sa_sdp_8"]], "h": [24, 16],
                "f": [[32], [24, 24]]}, "relative_key"),
}
HEADS = {FlexiBERTModel: AutoModel, FlexiBERTForMaskedLM: AutoModelForMaskedLM,
         FlexiBERTForSequenceClassification: AutoModelForSequenceClassification}
CASES = [(flavour, cls) for flavour in DICTS for cls in HEADS]
CODE_FILES = {"modeling_flexibert.py", "configuration_flexibert.py", "model_dict.py"}
ALLOWED_IMPORTS = {"torch", "transformers", "__future__"} | set(sys.stdlib_module_names)

# Run with -I -S: sys.path is the standard library; the site-packages folders come as the first argument.
CLEAN_LOADER = textwrap.dedent("""
    import importlib.util, json, sys
    sys.path.extend(json.loads(sys.argv[1]))
    job = json.loads(open(sys.argv[2]).read())
    for name in ("flexibert", "embeddings"):
        assert importlib.util.find_spec(name) is None, f"{name} is importable: the interpreter is not clean"
    import torch
    import transformers

    inputs = torch.load(job["inputs"])
    results = {}
    for case in job["cases"]:
        model = getattr(transformers, case["auto"]).from_pretrained(case["folder"], trust_remote_code=True).eval()
        with torch.no_grad():
            outputs = model(**inputs).to_tuple()
        results[case["name"]] = {"class": f"{type(model).__module__}.{type(model).__name__}", "outputs": outputs}
    # A model loaded from saved code saves its code again, and that folder loads too.
    model.save_pretrained(job["resaved"])
    again = transformers.AutoModel.from_pretrained(job["resaved"], trust_remote_code=True)
    results["resaved"] = {"class": f"{type(again).__module__}.{type(again).__name__}"}
    results["modules"] = sorted(m for m in sys.modules if m.split(".")[0] in ("flexibert", "embeddings"))
    torch.save(results, job["output"])
""")


def _model(flavour: str, cls):
    model_dict, position = DICTS[flavour]
    torch.manual_seed(0)
    config = FlexiBERTConfig(model_dict=model_dict, position_embedding_type=position, vocab_size=60, max_position_embeddings=16,
                             pad_token_id=1, num_labels=3)
    return cls(config).eval()


def _name(flavour: str, cls) -> str:
    return f"{flavour}-{cls.__name__}"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every case saved to its folder, with the original's outputs on fixed inputs and the clean interpreter's."""
    root = tmp_path_factory.mktemp("remote_code")
    ids = torch.randint(2, 60, (2, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[-1, -2:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    torch.save(inputs, root / "inputs.pt")
    expected, cases = {}, []
    for flavour, cls in CASES:
        model, folder = _model(flavour, cls), root / _name(flavour, cls)
        model.save_pretrained(folder)
        with torch.no_grad():
            expected[_name(flavour, cls)] = model(**inputs).to_tuple()
        cases.append({"name": _name(flavour, cls), "auto": HEADS[cls].__name__, "folder": str(folder)})
    job = {"inputs": str(root / "inputs.pt"), "cases": cases, "output": str(root / "results.pt"), "resaved": str(root / "resaved")}
    (root / "job.json").write_text(json.dumps(job))
    (root / "loader.py").write_text(CLEAN_LOADER)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTHON", "HF_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(root / "hf_home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    site_dirs = [path for path in site.getsitepackages() if os.path.isdir(path)]
    run = subprocess.run([sys.executable, "-I", "-S", str(root / "loader.py"), json.dumps(site_dirs), str(root / "job.json")],
                         cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return root, expected, torch.load(root / "results.pt")


@pytest.mark.parametrize("flavour,cls", CASES, ids=[_name(f, c) for f, c in CASES])
def test_saved_code_loads_without_the_package_and_gives_the_same_outputs(saved, flavour, cls):
    root, expected, results = saved
    result = results[_name(flavour, cls)]
    assert result["class"].startswith("transformers_modules.") and result["class"].endswith(f"modeling_flexibert.{cls.__name__}")
    assert len(result["outputs"]) == len(expected[_name(flavour, cls)])
    for got, want in zip(result["outputs"], expected[_name(flavour, cls)], strict=True):
        torch.testing.assert_close(got, want)


def test_the_clean_interpreter_never_imported_the_package_and_resaves_the_code(saved):
    root, _, results = saved
    assert results["modules"] == []
    assert results["resaved"]["class"].endswith("modeling_flexibert.FlexiBERTModel")
    assert CODE_FILES <= {path.name for path in (root / "resaved").iterdir()}


@pytest.mark.parametrize("flavour,cls", CASES, ids=[_name(f, c) for f, c in CASES])
def test_the_folder_holds_auto_map_and_a_closed_set_of_code_files(saved, flavour, cls):
    folder = saved[0] / _name(flavour, cls)
    auto_map = json.loads((folder / "config.json").read_text())["auto_map"]
    assert auto_map == {"AutoConfig": "configuration_flexibert.FlexiBERTConfig", "AutoModel": "modeling_flexibert.FlexiBERTModel",
                        "AutoModelForMaskedLM": "modeling_flexibert.FlexiBERTForMaskedLM",
                        "AutoModelForSequenceClassification": "modeling_flexibert.FlexiBERTForSequenceClassification"}
    assert CODE_FILES <= {path.name for path in folder.iterdir()}
    for name in CODE_FILES:
        # What transformers checks before running saved code: every library it needs is installed wherever torch is.
        assert set(get_imports(folder / name)) <= ALLOWED_IMPORTS, name
    needed = {os.path.basename(path) for path in get_relative_import_files(folder / "modeling_flexibert.py")}
    assert needed == CODE_FILES - {"modeling_flexibert.py"}


@pytest.mark.parametrize("flavour,cls", CASES, ids=[_name(f, c) for f, c in CASES])
def test_with_the_package_from_pretrained_needs_no_trust_remote_code(saved, flavour, cls):
    folder = saved[0] / _name(flavour, cls)
    assert type(AutoConfig.from_pretrained(folder)) is FlexiBERTConfig
    loaded = HEADS[cls].from_pretrained(folder).eval()
    assert type(loaded) is cls  # our registered class, not the saved code
    inputs = torch.load(saved[0] / "inputs.pt")
    with torch.no_grad():
        assert torch.equal(loaded(**inputs)[0], saved[1][_name(flavour, cls)][0])


def test_save_code_false_writes_no_code_and_such_folders_still_load(tmp_path):
    model = _model("mixed", FlexiBERTForMaskedLM)
    model.save_pretrained(tmp_path / "with_code")
    assert "auto_map" in json.loads((tmp_path / "with_code" / "config.json").read_text())
    reloaded = FlexiBERTForMaskedLM.from_pretrained(tmp_path / "with_code")
    reloaded.save_pretrained(tmp_path / "plain", save_code=False)  # a stale auto_map from the loaded config is dropped
    assert "auto_map" not in json.loads((tmp_path / "plain" / "config.json").read_text())
    assert not CODE_FILES & {path.name for path in (tmp_path / "plain").iterdir()}
    # A folder without auto_map, e.g. saved before the code was saved with models, loads with the package.
    assert type(AutoModel.from_pretrained(tmp_path / "plain")) is FlexiBERTModel
    assert type(AutoModelForMaskedLM.from_pretrained(tmp_path / "plain")) is FlexiBERTForMaskedLM


def test_save_code_class_attribute_and_push_timestamps(tmp_path, monkeypatch):
    model = _model("sa", FlexiBERTModel)
    monkeypatch.setattr(FlexiBERTPreTrainedModel, "save_code", False)
    model.save_pretrained(tmp_path / "off")
    assert not CODE_FILES & {path.name for path in (tmp_path / "off").iterdir()}
    model.save_pretrained(tmp_path / "on", save_code=True)  # the call's argument wins
    assert CODE_FILES <= {path.name for path in (tmp_path / "on").iterdir()}
    # A save_pretrained(push_to_hub=True) uploads what changed since its start: the code files always count as changed.
    assert set(model._get_files_timestamps(tmp_path / "on")) == {"config.json", "model.safetensors"}
