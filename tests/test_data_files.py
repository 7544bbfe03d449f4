"""A user's own data: arrays and .npy/.npz/.csv/.tsv files as Datasets, in Python and the CLI."""

import json
import os

import numpy as np
import pytest

from genlearn.cli import main
from genlearn.data import from_array, load_file, load_source, read_array

COV = np.array([[1.0, 0.6, 0.3], [0.6, 2.0, -0.5], [0.3, -0.5, 0.5]])
ENTROPY = 0.5 * np.linalg.slogdet(2 * np.pi * np.e * COV)[1]  # true differential entropy, nats


def gaussian(n, seed=1):
    return np.random.default_rng(seed).multivariate_normal([1.0, -2.0, 0.5], COV, size=n).astype(np.float32)


def write_csv(path, x, header=("u", "v", "w"), sep=","):
    with open(path, "w") as fh:
        if header:
            fh.write(sep.join(header) + "\n")
        np.savetxt(fh, x, delimiter=sep, fmt="%.9g")
    return str(path)


def test_from_array_splits_by_a_seeded_permutation():
    x = np.arange(60, dtype=np.float64).reshape(20, 3) ** 1.5
    d = from_array(x, test_fraction=0.25, seed=3, name="mine")
    assert (d.name, d.train.shape, d.test.shape, d.train.dtype) == ("mine", (15, 3), (5, 3), np.float32)
    perm = np.random.default_rng(3).permutation(20)
    np.testing.assert_array_equal(d.test, x[np.sort(perm[:5])].astype(np.float32))
    np.testing.assert_array_equal(d.train, x[np.sort(perm[5:])].astype(np.float32))
    assert d.discrete_levels is None and d.centers is None and d.log_prob is None
    assert d.source == {"kind": "array", "test_fraction": 0.25, "seed": 3, "levels": None}
    assert not np.array_equal(from_array(x, seed=4).test, from_array(x, seed=3).test)
    pixels = from_array(np.arange(40).reshape(10, 4) % 7, discrete_levels=8)
    assert pixels.discrete_levels == 8 and pixels.name == "array"


@pytest.mark.parametrize("x, kwargs, message", [
    (np.zeros(10), {}, r"expected an \(n, d\) array, got shape \(10,\); for one feature"),
    (np.ones((3, 2)), {"test_fraction": 0.5}, "2 training rows"),
    (np.c_[np.arange(10.0), np.full(10, 2.0)], {}, "column.* 1 have zero variance"),
    (np.c_[np.arange(10.0), np.arange(10.0)] * 0.5, {"discrete_levels": 256},
     r"integer in \[0, 256\).*row 1 \(value 0.5\)"),
    (np.arange(20.0).reshape(10, 2), {"discrete_levels": 8}, "the first is row 4"),
    (np.where(np.eye(6, 2) > 0, np.nan, 1.0), {}, "contain NaN or inf"),
    (np.ones((10, 2)), {"test_fraction": 1.0}, r"test_fraction must be in \(0, 1\)"),
])
def test_from_array_rejects_bad_input(x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        from_array(x, **kwargs)


def test_files_of_every_kind_give_the_same_dataset(tmp_path):
    x = gaussian(50)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", data=x, labels=np.arange(50))
    write_csv(tmp_path / "x.csv", x)
    write_csv(tmp_path / "x.tsv", x, header=None, sep="\t")
    ref = from_array(x, seed=2)
    for name, kw in (("x.npy", {}), ("x.npz", {"key": "data"}), ("x.csv", {}), ("x.tsv", {})):
        d = load_file(tmp_path / name, seed=2, **kw)
        np.testing.assert_allclose(d.train, ref.train, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(d.test, ref.test, rtol=1e-6, err_msg=name)
        assert d.source["sha256"] and d.source["size"] == os.path.getsize(tmp_path / name)
    assert load_file(tmp_path / "x.npz", key="data").name == "x-data"
    assert isinstance(read_array(tmp_path / "x.npy")[0], np.memmap)  # memory-mapped, not copied
    # --columns: by header name (in the order given), by 0-based index without a header
    d = load_file(tmp_path / "x.csv", columns=["w", "u"], seed=2)
    np.testing.assert_allclose(d.train, ref.train[:, [2, 0]], rtol=1e-6)
    np.testing.assert_allclose(load_file(tmp_path / "x.tsv", columns=["1"], seed=2).train, ref.train[:, [1]], rtol=1e-6)
    np.testing.assert_allclose(read_array(tmp_path / "x.npy", columns=[2])[0], x[:, [2]])
    # a reloaded source is the same split; a changed file is refused
    again = load_source(d.source)
    np.testing.assert_array_equal(again.train, d.train)
    with open(tmp_path / "x.csv", "a") as fh:
        fh.write("1,2,3\n")
    with pytest.raises(ValueError, match="changed since the run was trained"):
        load_source(d.source)
    os.remove(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="is gone"):
        load_source(d.source)
    with pytest.raises(ValueError, match="in-memory array"):
        load_source(ref.source)


def test_a_nonnumeric_column_is_fine_when_not_chosen(tmp_path):
    (tmp_path / "iris.csv").write_text("a,species,b\n1,setosa,2\n3,virginica,5\n4,setosa,1\n7,x,0\n")
    d = load_file(tmp_path / "iris.csv", columns=["a", "b"], test_fraction=0.25)
    assert d.train.shape == (3, 2)
    with pytest.raises(ValueError, match="column 'species' is not numeric: line 2 has 'setosa'"):
        load_file(tmp_path / "iris.csv")


def test_fit_gmm_on_a_csv_learns_the_gaussian_entropy_and_eval_reloads_it(tmp_path, capsys):
    data = write_csv(tmp_path / "my.csv", gaussian(5000))
    out = str(tmp_path / "run")
    assert main(["fit", "gmm", "--data", data, "--out", out, "--components", "2", "--no-progress"]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["data"] == "my" and metrics["num_test"] == 1000
    assert abs(metrics["test_nll"] - ENTROPY) < 0.1, (metrics["test_nll"], ENTROPY)
    source = json.load(open(os.path.join(out, "config.json")))["data_source"]
    assert source["path"] == os.path.abspath(data) and source["size"] == os.path.getsize(data)
    assert (source["test_fraction"], source["seed"], source["columns"], source["levels"]) == (0.2, 0, None, None)
    capsys.readouterr()
    assert main(["eval", "--run", out, "--num-samples", "300"]) == 0  # the same split: the same test NLL
    np.testing.assert_allclose(json.load(open(os.path.join(out, "metrics.json")))["test_nll"], metrics["test_nll"],
                               rtol=1e-5)
    with open(data, "a") as fh:
        fh.write("0,0,0\n")
    assert main(["eval", "--run", out]) == 2
    assert "changed since the run was trained" in capsys.readouterr().err
    os.remove(data)
    assert main(["eval", "--run", out]) == 2
    assert "is gone" in capsys.readouterr().err
    # sampling needs only the saved model, not the data
    assert main(["sample", "--run", out, "-n", "10", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (10, 3)


def test_fit_maf_on_an_npy_learns_the_gaussian_entropy(tmp_path):
    np.save(tmp_path / "my.npy", gaussian(5000))
    out = str(tmp_path / "maf")
    assert main(["fit", "maf", "--data", str(tmp_path / "my.npy"), "--out", out, "--steps", "1500",
                 "--layers", "2", "--hidden", "32,32", "--no-progress"]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert abs(metrics["test_nll"] - ENTROPY) < 0.1, (metrics["test_nll"], ENTROPY)


def test_levels_drop_nonfinite_eval_files_and_compare(tmp_path, capsys):
    pix = np.random.default_rng(0).integers(0, 4, size=(300, 4))
    np.save(tmp_path / "pix.npy", pix)
    out = str(tmp_path / "pix-run")
    assert main(["fit", "gmm", "--data", str(tmp_path / "pix.npy"), "--levels", "4", "--components", "1",
                 "--out", out]) == 0
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert 0 < metrics["test_bits_per_dim"] < 3  # dequantised: at most log2(4) bits per uniform pixel, plus slack
    x = gaussian(200)
    x[[3, 17], 1] = np.nan
    data = write_csv(tmp_path / "holes.csv", x)
    capsys.readouterr()
    assert main(["fit", "gmm", "--data", data, "--drop-nonfinite", "--components", "1",
                 "--out", str(tmp_path / "holes")]) == 0
    assert "dropped 2 rows with NaN or inf" in capsys.readouterr().err
    assert main(["eval", "--run", str(tmp_path / "holes")]) == 0  # reloaded with the same rows dropped
    # eval --samples/--reference read every format with the same reader
    write_csv(tmp_path / "fake.csv", gaussian(200, seed=5))
    np.savez(tmp_path / "real.npz", x=gaussian(200, seed=6))
    assert main(["eval", "--samples", str(tmp_path / "fake.csv"), "--reference", str(tmp_path / "real.npz"),
                 "--out", str(tmp_path / "m.json")]) == 0
    assert json.load(open(tmp_path / "m.json"))["num_samples"] == 200
    capsys.readouterr()
    cmp_out = str(tmp_path / "cmp")
    assert main(["compare", "--data", data, "--drop-nonfinite", "--models", "gmm", "--num-samples", "200",
                 "--out", cmp_out, "--no-progress"]) == 0
    board = json.load(open(os.path.join(cmp_out, "leaderboard.json")))
    assert board["data"] == "holes" and board["rows"][0]["status"] == "ok"


def _bad_files(tmp):
    x = gaussian(40)
    np.save(tmp / "flat.npy", x[:, 0])
    np.save(tmp / "small.npy", x[:20])
    np.save(tmp / "const.npy", np.c_[x[:, :2], np.full(40, 7.0)])
    np.savez(tmp / "two.npz", a=x, b=x)
    (tmp / "junk.npy").write_bytes(b"not an array at all")
    (tmp / "latin.csv").write_bytes(b"a,b\n1,\xff\n")
    (tmp / "data.txt").write_text("1,2\n3,4\n")
    (tmp / "ragged.csv").write_text("1,2,3\n4,5,6\n7,8\n1,1,1\n")
    (tmp / "words.csv").write_text("x,label\n1,2\n3,cat\n")
    y = x.copy()
    y[[5, 9], 0] = np.inf
    write_csv(tmp / "inf.csv", y)


@pytest.mark.parametrize("data, extra, message", [
    ("missing.csv", [], "missing.csv: no such file"),
    ("data.txt", [], "data.txt: unsupported file type '.txt'"),
    ("junk.npy", [], "junk.npy: not a readable .npy array"),
    ("latin.csv", [], "latin.csv: cannot read the file"),
    ("words.csv", [], "column 'label' is not numeric: line 3 has 'cat'"),
    ("ragged.csv", [], "ragged rows: line 3 has 2 fields, expected 3"),
    ("inf.csv", [], "2 of 40 rows contain NaN or inf (first: line 7, line 11)"),
    ("flat.npy", [], r"expected an (n, d) array, got shape (40,)"),
    ("small.npy", ["--batch-size", "64"], "16 training rows, fewer than a batch of 64"),
    ("const.npy", [], "column(s) 2 have zero variance"),
    ("two.npz", [], "holds the arrays ['a', 'b']; choose one with --key"),
    ("two.npz", ["--key", "c"], "no array 'c'"),
    ("flat.npy", ["--key", "a"], "only selects an array of a .npz file"),
    ("words.csv", ["--columns", "x,y"], "no column(s) ['y']"),
    ("small.npy", ["--levels", "10"], "with 10 discrete levels every value must be an integer"),
    ("moons", ["--columns", "0"], "--columns: only for a data file"),
])
def test_bad_files_exit_2_before_writing_anything(data, extra, message, tmp_path, capsys):
    _bad_files(tmp_path)
    out = tmp_path / "run"
    path = data if data == "moons" else str(tmp_path / data)
    model = "ebm" if "--batch-size" in extra else "gmm"
    assert main(["fit", model, "--data", path, "--out", str(out), "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists()  # nothing written before the data validate


def test_unknown_names_and_bad_flags_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "gmm", "--data", "mnist"])
    assert exc.value.code == 2 and "or a data file (.npy, .npz, .csv, .tsv)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["fit", "gmm", "--data", "x.csv", "--test-fraction", "1.5"])
    assert exc.value.code == 2 and "--test-fraction: must be a number in (0, 1)" in capsys.readouterr().err
