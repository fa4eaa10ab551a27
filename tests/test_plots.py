"""Plots say what was measured (metric, tasks, data), count axes in whole numbers, and keep their legends off the points.

The figures are checked as matplotlib objects (titles, tick positions, legend and axes extents after drawing),
built from real searches (inline executor, synthetic benchmark) and from settings parsed as run_boshnas.py parses them.
"""

import argparse
import contextlib
import copy
import importlib.util
import io
import itertools
import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from embeddings.design_space import load_design_space
from embeddings.library import Library
from flexibert import compare_strategies, run_boshnas, synthetic_benchmark
from flexibert.data.demo_corpus import prepare_demo_data
from flexibert.search import report
from flexibert.search.settings import parse_args as search_args
from flexibert.search.settings import search_config

REPO = Path(__file__).resolve().parents[1]
BUDGET = 3  # few evaluations: matplotlib's default ticks would be 1, 1.25, 1.5, ...


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The tiny design space's 144 models, embedded, with a synthetic benchmark (flexibert/synthetic_benchmark.py)."""
    work = tmp_path_factory.mktemp("plots")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        library = Library.from_design_space(load_design_space(REPO / "design_space" / "design_space_tiny.yaml"), layers_per_stack=1)
        library.build_embeddings(num_neighbors=5, seed=0)
        library.save(work / "library.json")
        synthetic_benchmark.main(["--dataset_file", str(work / "library.json"), "--output", str(work / "synthetic.json")])
    return {"library": work / "library.json", "benchmark": work / "synthetic.json", "work": work}


@pytest.fixture(scope="module")
def searched(files):
    """A finished two-objective search (score and parameters) of BUDGET models: its state and library."""
    with contextlib.redirect_stdout(io.StringIO()):
        state = run_boshnas.main(["--dataset_file", str(files["library"]), "--benchmark_file", str(files["benchmark"]),
                                  "--executor", "inline", "--run_dir", str(files["work"] / "run"), "--strategy", "random",
                                  "--budget", str(BUDGET), "--num_init", str(BUDGET), "--objectives", "glue", "params"])
    assert len(state.finished) == BUDGET
    return state, Library.load(files["library"])


def figures(state, library) -> dict:
    return {"best_score": report.best_score_figure(state), "score_vs_parameters": report.size_figure(state, library),
            "library_map": report.library_map_figure(state, library), "pareto": report.front_figure(state, library)}


def whole_ticks(ax, axis: str) -> list[float]:
    """The tick positions matplotlib draws inside the axis's view (after a draw, as in the saved file)."""
    ax.figure.canvas.draw()
    low, high = sorted(getattr(ax, f"get_{axis}lim")())
    ticks = [t for t in getattr(ax, f"get_{axis}ticks")() if low <= t <= high]
    assert ticks, f"no {axis} ticks"
    return ticks


def test_every_run_plot_says_what_was_measured(searched):
    state, library = searched
    for name, fig in figures(state, library).items():
        title = fig.axes[0].get_title()
        assert "score: glue from the benchmark synthetic.json (synthetic scores, NOT GLUE)" in title, (name, title)
        plt.close(fig)


def test_count_axes_have_only_whole_number_ticks(searched):
    state, library = searched
    for name, fig in figures(state, library).items():
        ax = fig.axes[0]
        if name != "library_map":  # the map's axes are principal components, not counts
            xs = whole_ticks(ax, "x")
            assert all(float(t).is_integer() for t in xs), (name, xs)
        plt.close(fig)
    fig = report.best_score_figure(state)
    assert len(whole_ticks(fig.axes[0], "x")) <= BUDGET  # 1, 2, 3: no 1.5 models
    plt.close(fig)


def test_parameter_axes_write_each_tick_in_full_without_a_separate_exponent(searched):
    state, library = searched
    for name in ("score_vs_parameters", "pareto"):
        fig = figures(state, library)[name]
        ax = fig.axes[0]
        ax.figure.canvas.draw()
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert ax.xaxis.get_offset_text().get_text() == "", (name, ax.xaxis.get_offset_text().get_text())
        assert labels and all(label[-1] in "kMG" or label == "0" for label in labels), (name, labels)  # 250k, 1.5M
        plt.close("all")


def test_library_map_legend_sits_outside_the_axes(searched):
    state, library = searched
    fig = report.library_map_figure(state, library)
    ax = fig.axes[0]
    fig.canvas.draw()
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert not legend.overlaps(axes), (legend, axes)
    assert legend.y1 < axes.y0  # below the axes (and so on the saved image: bbox_inches="tight" keeps it)
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {"library (144 models)", f"evaluated ({BUDGET}), colour: score"}
    plt.close(fig)


def test_write_plots_writes_every_file(searched, files):
    state, library = searched
    paths = report.write_plots(report.RunLayout(files["work"] / "run"), state, library)
    assert [p.name for p in paths] == ["best_score.png", "score_vs_parameters.png", "library_map.png", "pareto.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


@pytest.fixture(scope="module")
def data_folders(tmp_path_factory) -> dict[str, Path]:
    """The offline demo's GLUE-layout tasks (synthetic labels) and a GLUE TSV folder that is not the demo's."""
    work = tmp_path_factory.mktemp("data")
    prepare_demo_data(work / "demo", 4, 4, seed=1)
    (work / "glue" / "RTE").mkdir(parents=True)
    return {"demo": work / "demo" / "glue", "glue": work / "glue"}


def described(files: dict, *flags: str) -> str:
    """report.measured() of the settings a search records for these run_boshnas.py flags."""
    return report.measured(search_config(search_args(["--dataset_file", str(files["library"]), *flags])))


def test_measured_names_the_metric_tasks_and_data(files, data_folders):
    demo = described(files, "--glue_dir", str(data_folders["demo"]), "--glue_tasks", "cola", "rte")
    assert demo.splitlines() == ["score: GLUE score, mean of cola (MCC), rte (acc)",
                                 "data: synthetic demo tasks, NOT GLUE (demo/glue)"]
    assert described(files, "--glue_dir", str(data_folders["glue"]), "--task", "rte").splitlines() == [
        "score: rte (acc)", f"data: dev sets of the GLUE TSVs in {data_folders['glue'].parent.name}/glue"]
    hub = described(files, "--glue_tasks", "mrpc", "stsb")
    assert hub == "score: GLUE score, mean of mrpc (acc+F1), stsb (Pearson+Spearman)\ndata: GLUE dev sets from the hub (nyu-mll/glue)"
    # --glue_dir passed on in --finetune_args wins, as it does in the job's own flags
    passed = described(files, "--glue_dir", str(data_folders["glue"]), "--finetune_args", f"--glue_dir {data_folders['demo']}")
    assert "synthetic demo tasks" in passed


def test_a_training_run_plot_names_the_demo_data(searched, files, data_folders):
    state, library = searched
    trained = copy.copy(state)
    trained.config = search_config(search_args(["--dataset_file", str(files["library"]), "--glue_dir", str(data_folders["demo"]),
                                                "--glue_tasks", "cola", "rte"]))
    fig = report.best_score_figure(trained)
    assert "boshnas search: 3 models evaluated" in fig.axes[0].get_title()  # the settings given here
    assert "data: synthetic demo tasks, NOT GLUE" in fig.axes[0].get_title()
    plt.close(fig)


def test_benchmark_that_is_not_synthetic_is_named_as_looked_up(files, tmp_path):
    bench = tmp_path / "measured.json"
    bench.write_text(json.dumps({"source": "NAS-Bench-BERT", "entries": []}))
    assert report.measured({"benchmark_file": str(bench), "benchmark_metric": "glue"}) == \
        "score: glue from the benchmark measured.json (looked up, not trained)"


def test_strategy_comparison_plot_says_what_was_measured(files):
    args, passed_on = compare_strategies.parse_args(["--dataset_file", str(files["library"]), "--benchmark_file", str(files["benchmark"]),
                                                     "--strategies", "random", "boshnas", "--seeds", "1", "2", "--budget", str(BUDGET)])
    measure = compare_strategies.Measure(args, passed_on)
    curves = {"random": np.array([[50.0, 55, 55], [48, 48, 60]]), "boshnas": np.array([[50.0, 58, 61], [52, 52, 62]])}
    fig = compare_strategies.comparison_figure(curves, args, measure)
    title = fig.axes[0].get_title()
    assert "best glue score so far (2 seeds per strategy" in title and "synthetic.json (synthetic scores, NOT GLUE)" in title
    assert all(float(t).is_integer() for t in whole_ticks(fig.axes[0], "x"))
    plt.close(fig)


def load_benchmark_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_plots_count_evaluations_in_whole_numbers():
    efficiency = load_benchmark_script("search_efficiency")
    fig, ax = plt.subplots()
    efficiency.plot(ax, "synthetic", {"random": [[50.0, 55, 52], [40.0, 60, 61]]}, np.array([40.0, 50, 55, 60, 61]), BUDGET)
    assert all(float(t).is_integer() for t in whole_ticks(ax, "x"))
    plt.close(fig)
    objective = load_benchmark_script("multi_objective")
    every = np.array([[60.0, 4e6], [70.0, 9e6], [65.0, 5e6], [50.0, 3e6]])
    fig = objective.figure({"random": np.array([[0.2, 0.4, 0.5]])}, every, every[:2], BUDGET)
    assert all(float(t).is_integer() for t in whole_ticks(fig.axes[0], "x"))
    assert "GLUE score" in fig.axes[0].get_title()
    plt.close(fig)


def test_the_front_table_says_how_large_a_difference_is_noise():
    objective = load_benchmark_script("multi_objective")
    shares = {"boshnas": np.array([0.5, 0.7, 0.6]), "random": np.array([0.6, 0.8, 1.0])}  # three seeds each
    text = objective.front_table({name: np.tile(s[:, None], (1, 10)) for name, s in shares.items()}, 10)
    largest = np.std(shares["random"], ddof=1) / np.sqrt(3)  # the larger of the two standard errors
    assert "| boshnas (3 seeds) | 0.600 ± 0.100 |" in text and f"up to {largest:.3f} here" in text
    every = np.stack([np.linspace(60, 75, 40), np.linspace(1e6, 2e7, 40)[::-1]], axis=1)  # 40 models, all on the front
    expected = objective.random_expected_hypervolume_share(every, [True, False], 10)
    assert 0 < expected < 1 and f"| random search, exact expectation | {expected:.3f} |" in objective.front_table({}, 10, every)


def test_the_front_benchmark_says_how_much_of_a_share_rides_on_the_best_scoring_model():
    objective = load_benchmark_script("multi_objective")
    # reference point: GLUE 71 (the median), cost 9.45M (1.05 x the largest); the true front's area is
    # 1 x 4.45M (72 at 5M) + 3 x 0.45M (75 at 9M) = 5.8M
    every = np.array([[70.0, 1e6], [75.0, 9e6], [72.0, 5e6], [60.0, 3e6]])
    without_best = np.array([[70.0, 1e6], [72.0, 5e6]])  # 4.45M of it
    with_best = np.array([[75.0, 9e6], [60.0, 3e6]])  # 3 x 0.45M + 1 x 0.45M = 1.8M
    line = objective.one_model_line({"boshnas": [without_best, with_best]}, every, 2)
    as_found, added = (4.45 / 5.8 + 1.8 / 5.8) / 2, (1 + 1.8 / 5.8) / 2
    assert f"boshnas {as_found:.3f} -> {added:.3f} (it found the model in 1 of 2 runs)" in line, line
    assert "(GLUE 75.00)" in line and "after 2 evaluations" in line
    fig = objective.figure({"boshnas": np.array([[0.2, 0.4]])}, every, with_best, 2, "flops", "tpe, seed 11")
    assert fig.axes[0].get_title().endswith("x FLOPs per token") and fig.axes[1].get_xlabel() == "FLOPs per token"
    assert "tpe, seed 11: 2 evaluated" in [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    plt.close(fig)


def test_the_cap_table_says_how_many_models_are_near_the_best_under_the_cap():
    objective = load_benchmark_script("multi_objective")
    under_cap = np.array([74.3, 74.1, 73.9, np.nan, 70.0])  # two within 0.3 of 74.3; the NaN model has no score
    text = objective.cap_table({"tpe": [74.3, 73.9]}, under_cap, 1000, 20)
    assert "74.30; 2 of the 4 models under it are within 0.3 of that" in text
    assert "| tpe | 74.10 ± 0.28 | 0.20 | 1/2 |" in text


def test_the_transfer_benchmark_says_how_well_the_closeness_ranks_what_a_warm_start_saves():
    transfer = load_benchmark_script("transfer_benefit")
    args = transfer.parse_args(["--steps", "100", "--fractions", "0.1", "0.5"])

    def row(closeness, scalar, reach, warm):  # scratch @ S is 5.0 on every target
        return {"closeness": closeness, "scalar_fraction": scalar, "reach": [reach], "scratch": [5.0],
                "warm": {"0.1": [warm[0]], "0.5": [warm[1]]}}

    rows = [row(1.0, 0.5, None, (5.0, 4.9)),  # a loss scratch never reaches: worth all 100 steps
            row(0.8, 0.9, 60, (5.2, 5.0)), row(0.3, 0.7, 20, (5.3, 5.2))]  # the last needs more than 0.5 S
    text = transfer.ranking_line(args, rows, noise=0.05)
    assert "closeness: 1.00 and 1.00; scalar fraction: -0.50 and -0.50" in text, text
    assert transfer.ranking_line(args, rows[:2], noise=0.05) == ""  # two targets rank nothing


def test_the_search_benchmark_says_how_soon_a_ranking_from_90_percent_of_the_benchmark_gets_to_the_top(nasbench):
    efficiency = load_benchmark_script("search_efficiency")
    scores = np.arange(200.0)  # the top 1% is the best two
    assert efficiency.greedy_by_prediction(scores, scores) == (1, 199.0)  # a perfect ranking: the best first
    assert efficiency.greedy_by_prediction(-scores, scores) == (199, 29.0)  # the worst first
    line = efficiency.what_the_data_allows(nasbench["library"], nasbench["file"], shuffles=3)
    first, low, high = (int(n) for n in re.search(r"number (\d+) \((\d+)-(\d+) over 3 shuffles", line).groups())
    assert 1 <= low <= first <= high <= 491 and "the benchmark's best, 75.13" in line, line
    low, high = (float(n) for n in re.search(r"tenth of the models it ranks with Spearman (-?[\d.]+)-(-?[\d.]+)", line).groups())
    assert -1 <= low <= high <= 1 and "(9 architectures trained twice)" in line, line


def test_the_search_benchmark_judges_rankings_among_the_top_tenth_and_the_noise_of_a_training(tmp_path):
    efficiency = load_benchmark_script("search_efficiency")
    scores = np.arange(100.0)  # the best tenth: 90-99
    assert efficiency.top_tenth_agreement(scores, scores) == pytest.approx(1.0)
    inside_reversed = np.where(scores >= 90, 189 - scores, scores)  # still above every other model, in reverse
    assert efficiency.top_tenth_agreement(inside_reversed, scores) == pytest.approx(-1.0)
    entries = [{"model_dict": {"l": k}, "scores": {"glue": v}} for k, v in ((2, 70.0), (2, 71.0), (4, 73.0), (4, 76.0), (6, 1.0))]
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"entries": entries}))
    assert efficiency.training_noise(bench) == (pytest.approx(np.sqrt((1 + 9) / 2 / 2)), 2)  # differences 1 and 3
    bench.write_text(json.dumps({"entries": entries[4:]}))  # nothing trained twice
    assert efficiency.training_noise(bench) is None


def test_knowing_the_best_tenth_is_computed_exactly_as_every_draw_of_such_a_search_averages():
    efficiency = load_benchmark_script("search_efficiency")
    scores = np.arange(30.0)  # the best tenth: 27, 28, 29; the top 1%: 29
    draws = []  # (evaluations to 29, 29 within 3, best of 3), each initial pair's orders averaged: the pairs are equally likely
    for first, second in itertools.permutations(range(30), 2):  # every ordered pair of initial models
        rest = [i for i in (27, 28, 29) if i not in (first, second)]
        runs = [[first, second, *order] for order in itertools.permutations(rest)]  # then the tenth in every order
        draws.append(np.mean([(run.index(29) + 1, 29 in run[:3], max(run[:3])) for run in runs], axis=0))
    exact = efficiency.knowing_the_best_tenth(scores, num_init=2, budget=3)
    assert exact == pytest.approx(tuple(np.mean(draws, axis=0)))
    assert efficiency.knowing_the_best_tenth(np.arange(10.0), num_init=2, budget=2)[1:] == pytest.approx((0.2, 285 / 45))
    assert "after 2.7 evaluations on average, within 30 with chance 100%, and best@30 9.00" in (
        efficiency.knowing_the_best_tenth_line(np.arange(10.0), num_init=2))  # 0.1 x 1 + 0.1 x 2 + 0.8 x 3


def test_the_search_table_counts_best_tenth_models_and_says_where_the_top_one_percent_ends():
    efficiency = load_benchmark_script("search_efficiency")
    scores = np.arange(200.0)  # the top 1%: 198 and 199; the best tenth: 180 and above
    tail = [0.0] * 6
    runs = {"edge": [[10.0, 198, 185, 181, *tail], [10.0, 20, 198, 30, *tail]],  # the top 1%'s last model; 3 and 1 good
            "best": [[199.0, 10, 20, 30, *tail], [10.0, 20, 30, 40, *tail]]}  # the best model once, nothing else good
    text = efficiency.table("toy", runs, scores, argparse.Namespace(budget=10))
    assert "| edge | 198.00 ± 0.00 | 2.5 (2/2 seeds) | 2/2 | 2/2 | 2.0 ± 1.4 |" in text, text
    random_row = next(line for line in text.splitlines() if line.startswith("| random search"))
    assert random_row.endswith(f"| {10 * 20 / 200:.1f} |"), random_row  # 10 draws x 20 good models of 200
    assert "best 1 / 2 / 3 / 4 models within 10 evaluations: edge 0 / 2 / 2 / 2 of 2; best 1 / 1 / 1 / 1 of 2." in text
    assert efficiency.good_models_found([181.0, 179, 199], good=180.0, evaluations=2) == 1  # only the first two count


def test_the_front_reference_with_benchmark_predictions_beats_random_picks(nasbench):
    from flexibert.search.comparison import known_values, random_expected_hypervolume_share
    from flexibert.search.objectives import ObjectiveSet, ParameterCount, Score

    objective = load_benchmark_script("multi_objective")
    library = Library.load(nasbench["library"])
    every = known_values(ObjectiveSet([Score("glue", True), ParameterCount("params", False, "total")]), library,
                         str(nasbench["file"]), "glue")
    curves = objective.informed_reference(library, every, [1, 2, 3], num_init=5, budget=30)  # each seed: five cuts' mean
    assert curves.shape == (3, 30) and np.all(np.diff(curves, axis=1) >= -1e-12)  # a share never falls
    first_cut = objective.informed_reference(library, every, [1, 2, 3], num_init=5, budget=30, shuffles=1)
    assert not np.allclose(curves, first_cut)  # which tenth a model falls in changes the picks: one cut is not the row
    random = random_expected_hypervolume_share(every, [True, False], 30)
    assert curves[:, -1].mean() > random + 0.05, (curves[:, -1], random)
    line = objective.additivity_line(library, every, cuts=1)
    ridge, trees = (float(x) for x in re.findall(r"RMSE (\d+\.\d+), and .* choices, (\d+\.\d+)\.", line)[0])
    # Held out: in-sample predictions would fit far closer than one training's noise, and trees far closer than a ridge.
    assert 1.5 < ridge < 2.5 and abs(trees - ridge) < 0.25, line


def test_the_search_benchmark_can_add_seeded_noise_to_a_copy_of_nasbench(nasbench, tmp_path):
    import shutil

    efficiency = load_benchmark_script("search_efficiency")
    shutil.copy(nasbench["library"], tmp_path / "nasbench_library.json")  # the library the benchmark would build
    argv = ["--nasbench_file", str(nasbench["file"]), "--output_dir", str(tmp_path), "--score_noise", "1"]
    args = efficiency.parse_args(argv)
    _, noisy = efficiency.noisy_nasbench_files(args)
    read = [[e["scores"]["glue"] for e in json.loads(Path(f).read_text())["entries"]] for f in (nasbench["file"], noisy)]
    drawn = np.array(read[1]) - np.array(read[0])
    assert noisy.parent == tmp_path and 0.9 < drawn.std() < 1.1  # the shared file itself is left as it was
    again = efficiency.noisy_nasbench_files(efficiency.parse_args(argv))[1]
    assert [e["scores"] for e in json.loads(again.read_text())["entries"]][0]["glue"] == read[1][0]  # seeded
    assert efficiency.runs_folder(args, "nasbench") == "nasbench_noise1_seed0"  # never mixed with the plain runs
    assert efficiency.runs_folder(efficiency.parse_args([]), "nasbench") == "nasbench"
