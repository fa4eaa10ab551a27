"""Design spaces: YAML schema errors, op vocabulary, counts and enumeration order."""

import itertools
import json
import random
import time
from pathlib import Path

import pytest
import yaml

from embeddings.design_space import DesignSpaceError, load_design_space, parse_design_space
from embeddings.graph import model_hash

SPACES = Path(__file__).resolve().parents[1] / "design_space"
TEST_YAML = SPACES / "design_space_test.yaml"
SMALL_YAML = SPACES / "design_space_small.yaml"
FULL_YAML = SPACES / "design_space.yaml"
TINY_YAML = SPACES / "design_space_tiny.yaml"
GLUE = ["CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI-mm", "QNLI", "RTE", "WNLI"]


def raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


# ------------------------------------------------------------------------------------------
# Independent reference enumerator (loop nest n -> h -> o -> nff -> p -> f)
# ------------------------------------------------------------------------------------------


def reference_enumerate(arch: dict, lps: int, heterogeneous_ff: bool = False) -> list[dict]:
    heads, hidden, ops = arch["num_heads"], arch["hidden_size"], arch["operation_types"]
    nffs, widths, params = arch["number_of_feed-forward_stacks"], arch["feed-forward_hidden"], arch["operation_parameters"]
    models = []
    for depth in arch["encoder_layers"]:
        assert depth % lps == 0
        s = depth // lps

        def rep(per_stack):
            out = []
            for value in per_stack:
                out.extend([value] * lps)
            return out

        for n in itertools.product(heads, repeat=s):
            for h in itertools.product(hidden, repeat=s):
                for o in itertools.product(ops, repeat=s):
                    for nff in itertools.product(nffs, repeat=s):
                        for p in itertools.product(*[params[op] for op in o]):
                            if heterogeneous_ff:
                                ff_options = itertools.product(*[itertools.product(widths, repeat=k) for k in nff])
                            else:
                                ff_options = ([[w] * k for w, k in zip(f, nff, strict=True)] for f in itertools.product(widths, repeat=s))
                            for ff in ff_options:
                                models.append({
                                    "l": depth,
                                    "h": rep(h),
                                    "n": rep(n),
                                    "o": rep(o),
                                    "f": [list(x) for x in rep(ff)],
                                    "p": rep(p),
                                })
    return models


@pytest.fixture(scope="module")
def test_space():
    return load_design_space(TEST_YAML)


@pytest.fixture(scope="module")
def test_lps2(test_space):
    return list(test_space.enumerate(2))


@pytest.fixture(scope="module")
def test_lps2_het(test_space):
    return list(test_space.enumerate(2, heterogeneous_ff=True))


# ------------------------------------------------------------------------------------------
# Loading the shipped files
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [TEST_YAML, SMALL_YAML, FULL_YAML, TINY_YAML], ids=lambda p: p.name)
def test_shipped_files_load(path):
    space = load_design_space(path)
    data = raw(path)
    assert space.architecture() == data["architecture"]
    assert list(space.datasets) == data["datasets"] == GLUE


def test_test_space_fields(test_space):
    assert test_space.hidden_size == (128, 256)
    assert test_space.num_heads == (2, 4)
    assert test_space.encoder_layers == (2, 4)
    assert test_space.operation_types == ("sa", "l", "c")
    assert test_space.feed_forward_stacks == (1, 3)
    assert test_space.feed_forward_hidden == (512, 1024)
    assert test_space.operation_parameters == {"sa": ("sdp", "wma"), "l": ("dft", "dct"), "c": (5, 9)}
    assert all(isinstance(k, int) for k in test_space.operation_parameters["c"])


def test_load_accepts_str_path():
    assert load_design_space(str(TINY_YAML)) == load_design_space(TINY_YAML)


def test_datasets_default_when_absent():
    data = raw(TINY_YAML)
    del data["datasets"]
    assert list(parse_design_space(data).datasets) == GLUE


def test_odd_heads_allowed_without_convolution():
    data = raw(TINY_YAML)
    data["architecture"].update(num_heads=[3], hidden_size=[96], operation_types=["sa", "l"])
    del data["architecture"]["operation_parameters"]["c"]
    space = parse_design_space(data)
    assert space.num_heads == (3,)
    assert space.count(1) == len(list(space.enumerate(1))) == 16


# ------------------------------------------------------------------------------------------
# ops_list
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path, size", [(TEST_YAML, 17), (SMALL_YAML, 20), (FULL_YAML, 28), (TINY_YAML, 11)], ids=lambda x: str(x))
def test_ops_list_sizes(path, size):
    ops = load_design_space(path).ops_list()
    assert len(ops) == size
    assert len(set(ops)) == size
    assert ops[0] == "input" and ops[-2:] == ["add_norm", "output"]


def test_ops_list_order_test_space(test_space):
    assert test_space.ops_list() == [
        "input",
        "sa_h128_p-sdp", "sa_h128_p-wma", "sa_h256_p-sdp", "sa_h256_p-wma",
        "l_h128_p-dft", "l_h128_p-dct", "l_h256_p-dft", "l_h256_p-dct",
        "c_h128_p-5", "c_h128_p-9", "c_h256_p-5", "c_h256_p-9",
        "f512", "f1024",
        "add_norm", "output",
    ]  # fmt: skip


def test_ops_list_follows_yaml_order():
    data = raw(TINY_YAML)
    data["architecture"].update(operation_types=["c", "sa", "l"], hidden_size=[128, 64], **{"feed-forward_hidden": [512, 256]})
    ops = parse_design_space(data).ops_list()
    assert ops == ["input", "c_h128_p-5", "c_h64_p-5", "sa_h128_p-sdp", "sa_h64_p-sdp", "l_h128_p-dct", "l_h64_p-dct",
                   "f512", "f256", "add_norm", "output"]


# ------------------------------------------------------------------------------------------
# Counts, checked against Σ_L c^(L/lps) written out here
# ------------------------------------------------------------------------------------------


def formula(arch: dict, lps: int, heterogeneous_ff: bool = False) -> int:
    ops = sum(len(arch["operation_parameters"][o]) for o in arch["operation_types"])
    w = len(arch["feed-forward_hidden"])
    ff = sum(w**k for k in arch["number_of_feed-forward_stacks"]) if heterogeneous_ff else len(arch["number_of_feed-forward_stacks"]) * w
    c = len(arch["num_heads"]) * len(arch["hidden_size"]) * ops * ff
    return sum(c ** (depth // lps) for depth in arch["encoder_layers"])


def test_count_test_lps2(test_space, test_lps2):
    assert test_space.count(2) == 9312 == 96 + 96**2
    assert len(test_lps2) == 9312


def test_count_small_lps2():
    space = load_design_space(SMALL_YAML)
    assert space.count(2) == 63756 == 252 + 252**2 == formula(raw(SMALL_YAML)["architecture"], 2)
    start = time.perf_counter()
    total = 0
    for _ in space.enumerate(2):
        total += 1
        if time.perf_counter() - start > 5:
            pytest.skip("enumerating the small space takes more than 5 s here; the count was checked by formula")
    assert total == 63756


def test_count_test_lps2_heterogeneous_ff(test_space, test_lps2_het):
    assert len(test_lps2_het) == test_space.count(2, heterogeneous_ff=True) == 57840 == 240 + 240**2


def test_count_large_spaces(test_space):
    assert test_space.count(1) == 84_943_872 == 96**2 + 96**4
    assert test_space.count(1, heterogeneous_ff=True) == 3_317_817_600 == 240**2 + 240**4
    full = load_design_space(FULL_YAML)
    assert full.count(2) == 432_653_508 == 756 + 756**2 + 756**3
    arch = raw(FULL_YAML)["architecture"]
    exact = formula(arch, 1, heterogeneous_ff=True)
    assert exact == 5292**2 + 5292**4 + 5292**6
    assert full.count(1, heterogeneous_ff=True) == exact
    assert f"{exact:.2e}" == "2.20e+22"


@pytest.mark.parametrize("path", [TEST_YAML, SMALL_YAML, FULL_YAML, TINY_YAML], ids=lambda p: p.name)
@pytest.mark.parametrize("lps", [1, 2])
@pytest.mark.parametrize("het", [False, True])
def test_count_matches_formula(path, lps, het):
    assert load_design_space(path).count(lps, heterogeneous_ff=het) == formula(raw(path)["architecture"], lps, het)


def test_count_tiny():
    space = load_design_space(TINY_YAML)
    assert space.count(2) == len(list(space.enumerate(2))) == 12
    assert space.count(1) == len(list(space.enumerate(1))) == 144


# ------------------------------------------------------------------------------------------
# Enumeration order
# ------------------------------------------------------------------------------------------


def test_enumeration_matches_reference_test_lps2(test_lps2):
    assert test_lps2 == reference_enumerate(raw(TEST_YAML)["architecture"], 2)


@pytest.mark.parametrize("lps", [1, 2])
def test_enumeration_matches_reference_tiny(lps):
    models = list(load_design_space(TINY_YAML).enumerate(lps))
    assert models == reference_enumerate(raw(TINY_YAML)["architecture"], lps)


def test_enumeration_matches_reference_heterogeneous_ff(test_lps2_het):
    assert test_lps2_het == reference_enumerate(raw(TEST_YAML)["architecture"], 2, heterogeneous_ff=True)


def test_enumeration_matches_reference_tiny_lps1_heterogeneous_ff():
    data = raw(TINY_YAML)
    data["architecture"]["number_of_feed-forward_stacks"] = [1, 2]
    models = list(parse_design_space(data).enumerate(1, heterogeneous_ff=True))
    assert models == reference_enumerate(data["architecture"], 1, heterogeneous_ff=True)
    assert len(models) == (6 * (2 + 4)) ** 2


def test_key_order(test_lps2):
    assert all(list(d) == ["l", "h", "n", "o", "f", "p"] for d in test_lps2)


def test_specific_entries_test_lps2(test_lps2):
    # index = mixed radix over (n, h, o, nff, p, f) for depth 2 (one stack at lps 2)
    assert test_lps2[0] == {"l": 2, "h": [128, 128], "n": [2, 2], "o": ["sa", "sa"], "f": [[512], [512]], "p": ["sdp", "sdp"]}
    assert test_lps2[1] == {"l": 2, "h": [128, 128], "n": [2, 2], "o": ["sa", "sa"], "f": [[1024], [1024]], "p": ["sdp", "sdp"]}
    assert test_lps2[2] == {"l": 2, "h": [128, 128], "n": [2, 2], "o": ["sa", "sa"], "f": [[512], [512]], "p": ["wma", "wma"]}
    assert test_lps2[4] == {"l": 2, "h": [128, 128], "n": [2, 2], "o": ["sa", "sa"], "f": [[512] * 3, [512] * 3], "p": ["sdp", "sdp"]}
    # n=4 (1), h=128 (0), o=l (1), nff=3 (1), p=dct (1), f=512 (0)
    assert ((((1 * 2 + 0) * 3 + 1) * 2 + 1) * 2 + 1) * 2 + 0 == 62
    assert test_lps2[62] == {"l": 2, "h": [128, 128], "n": [4, 4], "o": ["l", "l"], "f": [[512] * 3] * 2, "p": ["dct", "dct"]}
    assert test_lps2[95] == {"l": 2, "h": [256, 256], "n": [4, 4], "o": ["c", "c"], "f": [[1024] * 3] * 2, "p": [9, 9]}
    assert test_lps2[96] == {"l": 4, "h": [128] * 4, "n": [2] * 4, "o": ["sa"] * 4, "f": [[512]] * 4, "p": ["sdp"] * 4}
    # second model of depth 4: the last stack's FF width varies fastest
    assert test_lps2[97] == {"l": 4, "h": [128] * 4, "n": [2] * 4, "o": ["sa"] * 4, "f": [[512], [512], [1024], [1024]], "p": ["sdp"] * 4}
    assert test_lps2[98]["f"] == [[1024], [1024], [512], [512]]
    assert test_lps2[100]["p"] == ["sdp", "sdp", "wma", "wma"]
    assert test_lps2[-1] == {"l": 4, "h": [256] * 4, "n": [4] * 4, "o": ["c"] * 4, "f": [[1024] * 3] * 4, "p": [9] * 4}
    # heads are the outermost loop: the first 48 depth-2 models have 2 heads, the next 48 have 4
    assert [d["n"][0] for d in test_lps2[:96]] == [2] * 48 + [4] * 48
    assert all(d["l"] == 2 for d in test_lps2[:96]) and all(d["l"] == 4 for d in test_lps2[96:])


def test_stacks_share_all_choices(test_lps2):
    for d in test_lps2:
        for key in "hnofp":
            values = d[key]
            assert len(values) == d["l"]
            assert all(values[2 * k] == values[2 * k + 1] for k in range(d["l"] // 2)), (key, d)
        assert all(len(set(ff)) == 1 for ff in d["f"])  # homogeneous FF inside a layer


def test_parameters_coupled_to_op(test_lps2):
    allowed = {"sa": {"sdp", "wma"}, "l": {"dft", "dct"}, "c": {5, 9}}
    assert all(p in allowed[o] for d in test_lps2 for o, p in zip(d["o"], d["p"], strict=True))


def test_models_unique_and_fresh_lists(test_space, test_lps2):
    assert len({json.dumps(d) for d in test_lps2}) == 9312
    d = next(test_space.enumerate(2))
    d["f"][0].append(1)
    assert d["f"][1] == [512]  # layers of a stack do not alias one FF list
    assert next(test_space.enumerate(2))["f"] == [[512], [512]]


def test_tiny_lps1_entries():
    models = list(load_design_space(TINY_YAML).enumerate(1))
    assert models[0] == {"l": 2, "h": [64, 64], "n": [2, 2], "o": ["sa", "sa"], "f": [[256], [256]], "p": ["sdp", "sdp"]}
    assert models[1]["f"] == [[256], [512]]
    assert models[2]["f"] == [[512], [256]]
    # o loop is inside h: index (h=(64,64), o=(sa,l), f=(256,256)) = 1 * 4
    assert models[4] == {"l": 2, "h": [64, 64], "n": [2, 2], "o": ["sa", "l"], "f": [[256], [256]], "p": ["sdp", "dct"]}
    assert models[7 * 4 + 3] == {"l": 2, "h": [64, 64], "n": [2, 2], "o": ["c", "l"], "f": [[512], [512]], "p": [5, "dct"]}
    assert models[36] == {"l": 2, "h": [64, 128], "n": [2, 2], "o": ["sa", "sa"], "f": [[256], [256]], "p": ["sdp", "sdp"]}


# ------------------------------------------------------------------------------------------
# Heterogeneous feed-forward
# ------------------------------------------------------------------------------------------


def test_heterogeneous_ff_entries(test_lps2, test_lps2_het):
    models = test_lps2_het
    # depth 2: per (n, h, o, nff=1, p) 2 FF choices; per (n, h, o, nff=3, p) 8 choices
    assert [d["f"] for d in models[:10]] == [
        [[512], [512]], [[1024], [1024]],
        [[512], [512]], [[1024], [1024]],  # p = wma
        [[512, 512, 512]] * 2, [[512, 512, 1024]] * 2, [[512, 1024, 512]] * 2, [[512, 1024, 1024]] * 2,
        [[1024, 512, 512]] * 2, [[1024, 512, 1024]] * 2,
    ]  # fmt: skip
    assert [d["p"][0] for d in models[:12]] == ["sdp"] * 2 + ["wma"] * 2 + ["sdp"] * 8
    assert models[19]["p"] == ["wma", "wma"] and models[19]["f"] == [[1024, 1024, 1024]] * 2
    assert models[20] == {"l": 2, "h": [128, 128], "n": [2, 2], "o": ["l", "l"], "f": [[512], [512]], "p": ["dft", "dft"]}
    assert models[239] == {"l": 2, "h": [256, 256], "n": [4, 4], "o": ["c", "c"], "f": [[1024] * 3] * 2, "p": [9, 9]}
    assert models[240]["l"] == 4 and models[240]["f"] == [[512]] * 4
    # every FF sub-layer picks its own width; the layers of a stack share the tuple
    assert any(len(set(ff)) > 1 for d in models for ff in d["f"])
    assert all(d["f"][2 * k] == d["f"][2 * k + 1] for d in models for k in range(d["l"] // 2))
    widths = {tuple(ff) for d in models for ff in d["f"]}
    assert widths == {(512,), (1024,)} | set(itertools.product((512, 1024), repeat=3))
    # the homogeneous models are exactly the hetero models with one width per layer, in the same order
    assert [d for d in models if all(len(set(ff)) == 1 for ff in d["f"])] == test_lps2


def test_heterogeneous_ff_hashes_unique(test_lps2_het):
    models = test_lps2_het
    depth2 = models[:240]
    sample = depth2 + random.Random(0).sample(models[240:], 1000)
    hashes = {model_hash(d) for d in sample}
    assert len(hashes) == len(sample)
    # FF order matters: [512, 1024, 512] and [1024, 512, 512] are different models with different hashes
    a = next(d for d in depth2 if d["f"][0] == [512, 1024, 512])
    b = next(d for d in depth2 if d["f"][0] == [1024, 512, 512] and all(d[k] == a[k] for k in "hnop"))
    assert model_hash(a) != model_hash(b)


# ------------------------------------------------------------------------------------------
# Schema validation errors
# ------------------------------------------------------------------------------------------


def _write(tmp_path: Path, data, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _good() -> dict:
    return raw(TEST_YAML)


def _set(key, value):
    def change(data):
        data["architecture"][key] = value

    return change


def _set_params(op, value):
    def change(data):
        data["architecture"]["operation_parameters"][op] = value

    return change


def _delete(key):
    def change(data):
        del data["architecture"][key]

    return change


def _top(key, value):
    def change(data):
        data[key] = value

    return change


def _only_sa_l(data):
    data["architecture"]["operation_types"] = ["sa", "l"]


def _no_l_params(data):
    del data["architecture"]["operation_parameters"]["l"]


def _odd_heads_with_c(data):
    data["architecture"].update(hidden_size=[192, 384], num_heads=[2, 3])


def _mixed_unknown_keys(data):
    data[1] = "x"
    data["extra"] = "y"


BAD_SPACES = [
    # (id, change, key named in the message, fragments naming what is allowed / what is wrong)
    ("unknown-top-level", _top("searchspace", {}), "key 'searchspace'", ["unknown top-level key", "'architecture', 'datasets'"]),
    ("mixed-unknown-top-level", _mixed_unknown_keys, "key '1'", ["unknown top-level key", "'architecture', 'datasets'"]),
    ("unknown-arch-key", _set("dropout", [0.1]), "'architecture.dropout'", ["unknown key", "'hidden_size'", "'operation_parameters'"]),
    ("missing-key", _delete("num_heads"), "'architecture.num_heads'", ["missing", "'encoder_layers'", "'feed-forward_hidden'"]),
    ("missing-ff-stacks", _delete("number_of_feed-forward_stacks"), "'architecture.number_of_feed-forward_stacks'", ["missing"]),
    ("empty-list", _set("hidden_size", []), "'architecture.hidden_size'", ["non-empty list of positive integers", "got []"]),
    ("empty-ops", _set("operation_types", []), "'architecture.operation_types'", ["non-empty list", "['sa', 'l', 'c']"]),
    ("empty-params", _set_params("sa", []), "'architecture.operation_parameters.sa'", ["non-empty list"]),
    ("string-not-list", _set("hidden_size", "128, 256"), "'architecture.hidden_size'", ["list of positive integers", "'128, 256'"]),
    ("scalar-not-list", _set("encoder_layers", 4), "'architecture.encoder_layers'", ["list of positive integers", "got 4"]),
    ("ops-string", _set("operation_types", "sa"), "'architecture.operation_types'", ["list of unique values", "['sa', 'l', 'c']"]),
    ("bool-in-ints", _set("num_heads", [2, True]), "'architecture.num_heads'", ["positive integers", "[2, True]"]),
    ("float-in-ints", _set("feed-forward_hidden", [512, 1024.0]), "'architecture.feed-forward_hidden'", ["positive integers", "1024.0"]),
    ("zero-in-ints", _set("encoder_layers", [0, 2]), "'architecture.encoder_layers'", ["positive integers"]),
    ("duplicate-ints", _set("hidden_size", [128, 128]), "'architecture.hidden_size'", ["unique"]),
    ("unknown-op", _set("operation_types", ["sa", "rnn"]), "'architecture.operation_types'", ["['sa', 'l', 'c']", "'rnn'"]),
    ("params-for-absent-op", _only_sa_l, "'architecture.operation_parameters.c'", ["not in operation_types", "['sa', 'l']"]),
    ("params-missing-for-op", _no_l_params, "'architecture.operation_parameters.l'", ["non-empty list", "None"]),
    ("params-not-mapping", _set("operation_parameters", ["sdp"]), "'architecture.operation_parameters'", ["mapping"]),
    ("unknown-sa-param", _set_params("sa", ["sdp", "flash"]), "'architecture.operation_parameters.sa'", ["['sdp', 'wma']", "'flash'"]),
    ("unknown-l-param", _set_params("l", ["fft"]), "'architecture.operation_parameters.l'", ["['dft', 'dct']", "'fft'"]),
    ("even-kernel", _set_params("c", [5, 8]), "'architecture.operation_parameters.c'", ["odd positive integers", "[5, 8]"]),
    ("string-kernel", _set_params("c", [5, "9"]), "'architecture.operation_parameters.c'", ["odd positive integers"]),
    ("heads-not-dividing", _set("hidden_size", [128, 130]), "'architecture.num_heads'",
     ["4 heads cannot divide hidden sizes [130]", "every head count must divide every hidden size"]),
    ("odd-heads-with-c", _odd_heads_with_c, "'architecture.num_heads'", ["3 is odd", "'c'", "even head counts"]),
    ("unknown-task", _top("datasets", ["CoLA", "SQuAD"]), "key 'datasets'", ["GLUE task names", "'MNLI-mm'", "'SQuAD'"]),
    ("datasets-string", _top("datasets", "CoLA"), "key 'datasets'", ["list of GLUE task names"]),
    ("architecture-not-mapping", _top("architecture", [1, 2]), "key 'architecture'", ["expected a mapping"]),
]


def test_design_space_error_is_value_error():
    assert issubclass(DesignSpaceError, ValueError)


@pytest.mark.parametrize("change, key, fragments", [case[1:] for case in BAD_SPACES], ids=[case[0] for case in BAD_SPACES])
def test_schema_errors(tmp_path, change, key, fragments):
    data = _good()
    change(data)
    path = _write(tmp_path, data)
    with pytest.raises(DesignSpaceError) as info:
        load_design_space(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert key in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("text", ["", "- just\n- a list\n", "datasets: [CoLA]\n"], ids=["empty", "list", "no-architecture"])
def test_not_a_design_space_mapping(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(DesignSpaceError, match="expected a mapping with keys 'architecture'") as info:
        load_design_space(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(DesignSpaceError, match="no such design-space file") as info:
        load_design_space(path)
    assert str(path) in str(info.value)
    with pytest.raises(DesignSpaceError, match="no such design-space file"):
        load_design_space(tmp_path)  # a directory is not a file


def test_invalid_yaml(tmp_path):
    path = _write(tmp_path, "architecture: [unclosed\n  hidden_size: {\n")
    with pytest.raises(DesignSpaceError, match="not valid YAML") as info:
        load_design_space(path)
    assert str(info.value).startswith(f"{path}: ")
    assert isinstance(info.value.__cause__, yaml.YAMLError)


def test_parse_names_given_path():
    data = _good()
    data["architecture"]["hidden_size"] = []
    with pytest.raises(DesignSpaceError, match=r"^my/space\.yaml: key 'architecture\.hidden_size'"):
        parse_design_space(data, "my/space.yaml")


@pytest.mark.parametrize("lps, bad", [(3, "[2, 4]"), (4, "[2]"), (0, "[2, 4]")])
def test_depth_not_divisible_by_layers_per_stack(test_space, lps, bad):
    expected = f"layers_per_stack={lps} must divide every encoder depth; {bad} in 'encoder_layers'"
    with pytest.raises(DesignSpaceError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        test_space.count(lps)
    with pytest.raises(DesignSpaceError, match="must divide every encoder depth"):
        test_space.count(lps, heterogeneous_ff=True)
    with pytest.raises(DesignSpaceError, match="must divide every encoder depth"):
        next(test_space.enumerate(lps))


def test_depth_not_divisible_from_file(tmp_path):
    data = _good()
    data["architecture"]["encoder_layers"] = [2, 3]
    space = load_design_space(_write(tmp_path, data))  # the file itself is valid: lps is chosen later
    assert space.count(1) == 96**2 + 96**3
    with pytest.raises(DesignSpaceError, match=r"\[3\] in 'encoder_layers'"):
        space.count(2)
    with pytest.raises(DesignSpaceError, match=r"\[3\] in 'encoder_layers'"):
        list(space.enumerate(2))
