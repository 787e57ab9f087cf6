"""The Willshaw associative memory (hdsim.assoc_memory) and its bench, against independent oracles:
Python loops over the formula, hand-derived matrices, exhaustive enumeration of small memories."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hdsim.assoc_memory import (AssocMemoryClassifier, LabelCode, analytic_capacity, analytic_recall,
                                codes_from_indices, memory_bits, random_wta_codes, recall, recall_scores, store, wta,
                                wta_indices)
from hdsim.bench.assoc_memory import AssocMemoryBenchConfig, run_assoc_memory_bench
from hdsim.errors import HdsimError

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- oracles (plain loops)

def loop_store(X, Y):
    """W[j, k] = 1 iff some pair has y_j = 1 and x_k = 1, by three loops."""
    P, n_in = X.shape
    n_out = Y.shape[1]
    W = [[0] * n_in for _ in range(n_out)]
    for i in range(P):
        for j in range(n_out):
            for k in range(n_in):
                if Y[i, j] and X[i, k]:
                    W[j][k] = 1
    return np.array(W, dtype=bool)


def loop_recall(W, x, l):
    """Counts by loops; per cluster the first unit with the largest count."""
    s = [sum(int(W[j, k]) * int(x[k]) for k in range(len(x))) for j in range(W.shape[0])]
    y = [0] * len(s)
    for b in range(len(s) // l):
        best = b * l
        for j in range(b * l, (b + 1) * l):
            if s[j] > s[best]:  # strict: an equal count never replaces an earlier unit
                best = j
        y[best] = 1
    return np.array(y, dtype=np.uint8)


def one_line_error(excinfo, field):
    msg = str(excinfo.value)
    assert "\n" not in msg and msg.startswith(field), msg


# --------------------------------------------------------------------------- store / recall

def test_hand_derived_three_pairs():
    # x: 2 clusters of 3; y: 2 clusters of 2.  Active units: x1 {0, 4}, x2 {1, 4}, x3 {2, 3};
    # y1 {0, 3}, y2 {1, 3}, y3 {0, 2}.  Row j of W is the OR of the inputs of the pairs with y_j = 1:
    # row 0: x1 | x3, row 1: x2, row 2: x3, row 3: x1 | x2.
    X = np.array([[1, 0, 0, 0, 1, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 1, 0, 0]])
    Y = np.array([[1, 0, 0, 1], [0, 1, 0, 1], [1, 0, 1, 0]])
    W_hand = np.array([[1, 0, 1, 1, 1, 0],
                       [0, 1, 0, 0, 1, 0],
                       [0, 0, 1, 1, 0, 0],
                       [1, 1, 0, 0, 1, 0]], dtype=bool)
    W = store(X, Y)
    assert W.dtype == np.bool_ and np.array_equal(W, W_hand)
    # x1 counts (2, 1 | 0, 2), x2 (1, 2 | 0, 2), x3 (2, 0 | 2, 0): every pair comes back
    assert recall_scores(W, X).tolist() == [[2, 1, 0, 2], [1, 2, 0, 2], [2, 0, 2, 0]]
    assert np.array_equal(recall(W, X, l=2), Y)
    # an unstored probe {1, 3} counts (1, 1 | 1, 1): ties in both clusters go to the first unit
    assert recall(W, np.array([0, 1, 0, 1, 0, 0]), l=2).tolist() == [1, 0, 1, 0]
    assert memory_bits(W) == 24


@pytest.mark.parametrize("kind", ["wta", "variable"])
def test_store_and_scores_match_loops(kind):
    rng = np.random.default_rng(5)
    if kind == "wta":  # equal activity: the scatter / gather path
        X, Y = random_wta_codes(40, 3, 4, seed=1), random_wta_codes(40, 2, 5, seed=2)
    else:  # unequal activity (an all-zero row too): the float32 product path
        X = (rng.random((40, 12)) < 0.3).astype(np.uint8)
        Y = (rng.random((40, 10)) < 0.2).astype(np.uint8)
        X[3] = 0
    W = store(X, Y)
    assert np.array_equal(W, loop_store(X, Y))
    probes = (rng.random((15, X.shape[1])) < 0.4).astype(np.uint8)
    for probes_ in (X[:15], probes):
        want_s = np.array([[sum(int(W[j, k]) * int(x[k]) for k in range(len(x))) for j in range(W.shape[0])]
                           for x in probes_])
        assert np.array_equal(recall_scores(W, probes_), want_s)
        assert np.array_equal(recall(W, probes_, l=5), np.array([loop_recall(W, x, 5) for x in probes_]))


def test_or_semantics():
    X, Y = random_wta_codes(30, 4, 6, seed=3), random_wta_codes(30, 3, 4, seed=4)
    # W = max_i (y_i x_i^T), entry-wise
    outer = np.maximum.reduce([np.outer(Y[i], X[i]) for i in range(30)])
    W = store(X, Y)
    assert np.array_equal(W, outer.astype(bool))
    # incremental store (in place) equals one store; a pair stored twice changes nothing
    W2 = store(X[:10], Y[:10])
    same = store(X[10:], Y[10:], W2)
    assert same is W2 and np.array_equal(W2, W)
    assert np.array_equal(store(X[:5], Y[:5], W2.copy()), W)
    # bool, float and uint8 inputs are the same pairs
    assert np.array_equal(store(X.astype(bool), Y.astype(np.float64)), W)


def test_ties_go_to_the_lowest_index():
    assert wta(np.array([1, 1, 1, 0, 2, 2]), l=3).tolist() == [1, 0, 0, 0, 1, 0]
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 3, size=(50, 12))  # many ties
    want = np.zeros_like(scores)
    for n, b in itertools.product(range(50), range(3)):
        grp = list(scores[n, 4 * b:4 * b + 4])
        want[n, 4 * b + grp.index(max(grp))] = 1  # list.index: the first maximum
    assert np.array_equal(wta(scores, l=4), want)
    # an empty memory recalls the first unit of every cluster
    assert recall(np.zeros((6, 4), dtype=bool), np.array([1, 0, 0, 1]), l=3).tolist() == [1, 0, 0, 1, 0, 0]


def test_exact_recall_below_capacity():
    c, l, P = 8, 32, 60  # far below capacity (analytic exact recall 1 - 1e-9)
    X, Y = random_wta_codes(P, c, l, seed=11), random_wta_codes(P, c, l, seed=12)
    W = store(X, Y)
    for x, y in zip(X, Y):
        assert np.array_equal(loop_recall(W, x, l), y)
    assert np.array_equal(recall(W, X, l), Y)


def test_wta_codes_round_trip_and_checks():
    codes = random_wta_codes(20, 5, 7, seed=9)
    idx = wta_indices(codes, 7)
    assert idx.shape == (20, 5) and np.array_equal(codes_from_indices(idx, 7), codes)
    assert (codes.reshape(20, 5, 7).sum(axis=2) == 1).all()


def test_determinism_with_a_seed(tmp_path):
    assert np.array_equal(random_wta_codes(10, 4, 8, seed=7), random_wta_codes(10, 4, 8, seed=7))
    assert not np.array_equal(random_wta_codes(10, 4, 8, seed=7), random_wta_codes(10, 4, 8, seed=8))
    cfg = dict(c_in=4, l_in=8, c_out=4, l_out=8, grid=(20, 60, 200), timing=False, plot=False, progress=False)
    a = run_assoc_memory_bench(AssocMemoryBenchConfig(seed=3, out=str(tmp_path / "a"), **cfg))
    b = run_assoc_memory_bench(AssocMemoryBenchConfig(seed=3, out=str(tmp_path / "b"), **cfg))
    c = run_assoc_memory_bench(AssocMemoryBenchConfig(seed=4, out=str(tmp_path / "c"), **cfg))
    assert a["rows"] == b["rows"] and a["rows"] != c["rows"]


# --------------------------------------------------------------------------- capacity

@pytest.mark.parametrize("c_in,l_in,P", [(2, 2, 3), (1, 3, 4), (3, 2, 2)])
def test_analytic_recall_is_exact_for_one_wrong_unit(c_in, l_in, P):
    # c_out = 1, l_out = 2: one wrong unit per probe, so the formula has no independence step.
    # Enumerate every set of P pairs (each x one of l_in^c_in codes, each y one of 2) and recall pair 0.
    xs = [codes_from_indices(np.array([d]), l_in)[0] for d in itertools.product(range(l_in), repeat=c_in)]
    ys = [np.array([1, 0]), np.array([0, 1])]
    right = total = 0
    for pairs in itertools.product(itertools.product(range(len(xs)), range(2)), repeat=P):
        X = np.array([xs[a] for a, _ in pairs])
        Y = np.array([ys[b] for _, b in pairs])
        right += int(np.array_equal(loop_recall(loop_store(X, Y), X[0], 2), Y[0]))
        total += 1
    r = analytic_recall(P, c_in, l_in, 1, 2)
    assert float(r.exact_recall) == pytest.approx(right / total, abs=1e-12)


def test_analytic_hand_values():
    # one input unit: a wrong unit is full iff another pair chose it, q = 1 - (1 - 1/l_out)^(P-1);
    # the right unit loses iff a full unit precedes it: mean over its position r of 1 - (1-q)^r
    l_out, P = 3, 4
    q = 1 - (1 - 1 / l_out) ** (P - 1)
    right = np.mean([(1 - q) ** r for r in range(l_out)])
    r = analytic_recall(P, 1, 1, 2, l_out)
    assert float(r.unit_full) == pytest.approx(q, rel=1e-12)
    assert float(r.cluster_error) == pytest.approx(1 - right, rel=1e-12)
    assert float(r.exact_recall) == pytest.approx(right**2, rel=1e-12)
    assert float(analytic_recall(1, 8, 64, 8, 64).exact_recall) == 1.0  # one pair: nothing to confuse


def test_measured_recall_follows_the_analytic_curve_and_degrades(tmp_path):
    c, l = 6, 24
    cap = analytic_capacity(c, l, c, l)
    grid = (cap // 4, cap, 2 * cap, 4 * cap)
    out = run_assoc_memory_bench(AssocMemoryBenchConfig(c_in=c, l_in=l, c_out=c, l_out=l, grid=grid, seed=1,
                                                        timing=False, plot=False, progress=False,
                                                        out=str(tmp_path)))
    rows = {r["P"]: r for r in out["rows"]}
    assert rows[cap // 4]["exact_recall"] == 1.0
    for r in out["rows"]:  # binomial noise of a fraction over >= 100 pairs, plus the independence steps
        assert r["exact_recall"] == pytest.approx(r["analytic_exact_recall"], abs=0.06)
        assert r["density"] == pytest.approx(r["analytic_density"], abs=0.01)
    # beyond capacity the memory fails: most pairs come back wrong at 4x
    assert rows[4 * cap]["exact_recall"] < 0.5 and rows[4 * cap]["analytic_exact_recall"] < 0.5
    assert rows[2 * cap]["exact_recall"] < out["target"]
    assert out["capacity"] == cap and out["analytic_capacity"] == cap


# --------------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("call,field", [
    (lambda: store(np.array([[0, 2]]), np.array([[1, 0]])), "X"),
    (lambda: store(np.array([[0, 1]]), np.array([[0.5, 0]])), "Y"),
    (lambda: store(np.array([[0, -1]]), np.array([[1, 0]])), "X"),
    (lambda: store(np.array([[0, 1], [1, 0]]), np.array([[1, 0]])), "Y"),
    (lambda: store(np.zeros((1, 2, 2)), np.array([[1, 0]])), "X"),
    (lambda: store(np.array([["a", "b"]]), np.array([[1, 0]])), "X"),
    (lambda: store(np.zeros((0, 3)), np.zeros((0, 2))), "X"),
    (lambda: store(np.array([[0, 1]]), np.array([[1, 0]]), np.zeros((2, 3), dtype=bool)), "W"),
    (lambda: store(np.array([[0, 1]]), np.array([[1, 0]]), np.zeros((2, 2), dtype=np.uint8)), "W"),
    (lambda: recall(np.zeros((6, 4), dtype=bool), np.array([1, 0, 0, 1]), l=4), "l"),
    (lambda: recall(np.zeros((6, 4), dtype=bool), np.array([1, 0, 1]), l=3), "W"),
    (lambda: recall(np.zeros((6, 4), dtype=bool), np.array([1, 0, 3, 0]), l=3), "X"),
    (lambda: recall(np.zeros((6, 4), dtype=bool), np.array([1, 0, 1, 0]), l=0), "l"),
    (lambda: wta(np.zeros(6), l=4), "l"),
    (lambda: wta_indices(np.array([1, 1, 0, 0, 1, 0]), l=3), "codes"),
    (lambda: wta_indices(np.array([0, 0, 0, 0, 1, 0]), l=3), "codes"),
    (lambda: codes_from_indices(np.array([[3]]), l=3), "indices"),
    (lambda: random_wta_codes(2, 2, 2, seed=-1), "seed"),
    (lambda: analytic_recall(0, 2, 2, 2, 2), "P"),
    (lambda: LabelCode(n_classes=10, l=3, clusters=2), "clusters"),
    (lambda: LabelCode(n_classes=10, l=1), "l"),
    (lambda: LabelCode(n_classes=4, l=2).encode(np.array([4])), "labels"),
    (lambda: LabelCode(n_classes=4, l=2).decode(np.array([1, 1, 0, 1])), "codes"),
    (lambda: AssocMemoryClassifier(3, LabelCode(2, 2)).fit(np.eye(3), np.array([0, 1])), "labels"),
    (lambda: AssocMemoryBenchConfig(grid=(0, 5)), "grid"),
    (lambda: AssocMemoryBenchConfig(l_out=0), "l_out"),
])
def test_bad_inputs_are_one_line_errors(call, field):
    with pytest.raises(HdsimError) as e:
        call()
    one_line_error(e, field)


# --------------------------------------------------------------------------- classifier head

def test_label_code_is_mixed_radix():
    code = LabelCode(n_classes=10, l=4)
    assert code.clusters == 2 and code.n_out == 8
    # 7 = 3 + 1 * 4: unit 3 of cluster 0, unit 1 of cluster 1
    assert code.encode(np.array([7])).tolist() == [[0, 0, 0, 1, 0, 1, 0, 0]]
    assert code.decode(code.encode(np.arange(10))).tolist() == list(range(10))
    # 11 = 3 + 2 * 4 >= 10: no class
    assert code.decode(np.array([0, 0, 0, 1, 0, 0, 1, 0])) == -1


def test_classifier_abstains_on_a_code_of_no_class():
    # l = 3, 5 classes over 2 clusters; class c = (c % 3, c // 3).  Features: class 2 owns {0, 1, 2},
    # class 3 owns {3, 4}, class 4 owns {5, 6}, class 0 owns {7}, class 1 owns {8}.
    # Cluster 0: unit 0 <- classes 0, 3 = {7, 3, 4}; unit 1 <- classes 1, 4 = {8, 5, 6}; unit 2 <- class 2.
    # Cluster 1: unit 0 <- classes 0, 1, 2 = {7, 8, 0, 1, 2}; unit 1 <- classes 3, 4 = {3, 4, 5, 6}.
    # Probe {0..6}: cluster 0 counts (2, 2, 3) -> 2; cluster 1 counts (3, 4, 0) -> 1; 2 + 1 * 3 = 5: no class.
    n_in = 9
    owned = {0: [7], 1: [8], 2: [0, 1, 2], 3: [3, 4], 4: [5, 6]}
    X = np.zeros((5, n_in), dtype=np.uint8)
    for c, units in owned.items():
        X[c, units] = 1
    head = AssocMemoryClassifier(n_in, LabelCode(n_classes=5, l=3)).fit(X, np.arange(5))
    probe = np.array([[1, 1, 1, 1, 1, 1, 1, 0, 0]])
    assert recall_scores(head.W, probe).tolist() == [[2, 2, 3, 3, 4, 0]]
    assert head.predict(probe).tolist() == [-1]
    assert head.predict(X).tolist() == [0, 1, 2, 3, 4]
    ev = head.evaluate(np.concatenate([X, probe]), np.array([0, 1, 2, 3, 4, 0]))
    assert ev == {"accuracy": 5 / 6, "abstained": 1 / 6, "samples": 6, "memory_bits": 6 * 9}


def test_classifier_on_separated_prototypes_with_noise():
    # 10 classes, each a random WTA prototype (32 clusters of 16); samples redraw 2 clusters at random.
    # Below capacity a sample keeps >= 30 of its prototype's units, all connected to its class units,
    # while another class's units see about a third of them: every sample is classified right.
    c, l, classes = 32, 16, 10
    rng = np.random.default_rng(21)
    protos = rng.integers(0, l, size=(classes, c))

    def samples(n_per_class):
        labels = np.repeat(np.arange(classes), n_per_class)
        idx = protos[labels].copy()
        for row in idx:
            row[rng.choice(c, size=2, replace=False)] = rng.integers(0, l, size=2)
        return codes_from_indices(idx, l), labels

    Xtr, ytr = samples(20)
    Xte, yte = samples(50)
    head = AssocMemoryClassifier(c * l, LabelCode(n_classes=classes, l=4))
    head.fit(Xtr[:100], ytr[:100]).fit(Xtr[100:], ytr[100:])  # incremental fit
    ev = head.evaluate(Xte, yte)
    assert ev == {"accuracy": 1.0, "abstained": 0.0, "samples": 500, "memory_bits": 8 * 512}
    # the same head with one-hot class codes (l >= classes: one cluster)
    one_hot = AssocMemoryClassifier(c * l, LabelCode(n_classes=classes, l=classes)).fit(Xtr, ytr)
    assert one_hot.evaluate(Xte, yte)["accuracy"] == 1.0


# --------------------------------------------------------------------------- bench and CLI

def test_bench_command_writes_csv_png_json(monkeypatch, capsys, tmp_path):
    from conftest import run_cli

    code, out, err = run_cli(monkeypatch, capsys, "bench", "assoc-memory", "--c-in", "4", "--l-in", "16",
                             "--c-out", "4", "--l-out", "16", "--grid", "20,80", "--grid", "300",
                             "--repeats", "1", "--seed", "2", "--out", str(tmp_path))
    assert code == 0, err
    s = json.loads(out)
    assert [r["P"] for r in s["rows"]] == [20, 80, 300]
    assert s["memory_bits"] == 64 * 64 and s["bits_per_pair"] == 16.0
    assert s["capacity"] == max([r["P"] for r in s["rows"] if r["exact_recall"] >= 0.99], default=0)
    assert s["timing"]["pairs"] == 300 and "store_speedup" in s["timing"]  # a timing: reported, not compared
    for f in ("csv", "png", "json"):
        assert Path(s["files"][f]).is_file()
    assert Path(s["files"]["csv"]).read_text().splitlines()[0].startswith("P,exact_recall,cluster_error")
    assert "P=" in err  # progress on stderr
    code, _, err = run_cli(monkeypatch, capsys, "bench", "assoc-memory", "--l-out", "0", "--out", str(tmp_path))
    assert code == 2 and err.startswith("error: l_out") and err.count("\n") == 1


def test_the_module_imports_no_torch():
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.modules['torch'] = None; "
                           "import hdsim.assoc_memory, hdsim.bench.assoc_memory"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
