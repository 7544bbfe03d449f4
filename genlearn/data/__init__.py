"""Data sets for genlearn: seeded 2-D toys, the 8x8 digits, and data helpers.

* ``toys``: pure JAX generators ``name(key, n, **params) -> (n, 2) float32``.
* ``digits``: the scikit-learn digits split, uniform dequantization, bits/dim.
* ``registry``: ``load_dataset(name, seed=...)`` for every named data set.
* ``files``: your own data: ``from_array(x)``, ``load_file(path)`` (.npy, .npz, .csv, .tsv).
* ``scaling``: standardisation as a bijection with its log-determinant.
* ``validation``: ``check_data``, the gate for every data matrix.
"""

from genlearn.data.digits import (
    DIGITS_DIM,
    DIGITS_LEVELS,
    DIGITS_NUM_EXAMPLES,
    digits_split_indices,
    load_digits_split,
    nats_to_bits_per_dim,
    quantize,
    uniform_dequantize,
)
from genlearn.data.files import FILE_SUFFIXES, from_array, load_file, load_source, read_array
from genlearn.data.registry import (
    DATASETS,
    TOY_N_TEST,
    TOY_N_TRAIN,
    Dataset,
    load_dataset,
)
from genlearn.data.scaling import standardize, standardize_stats, unstandardize
from genlearn.data.toys import (
    checkerboard,
    circles,
    circles_log_prob,
    grid25,
    grid25_centers,
    grid25_log_prob,
    pinwheel,
    ring8,
    ring8_centers,
    ring8_log_prob,
    swiss_roll,
    two_moons,
    two_moons_log_prob,
    two_spirals,
)
from genlearn.data.validation import as_integer, check_data, check_positive

__all__ = [
    # toys
    "two_moons",
    "circles",
    "ring8",
    "ring8_centers",
    "grid25",
    "grid25_centers",
    "checkerboard",
    "pinwheel",
    "two_spirals",
    "swiss_roll",
    "two_moons_log_prob",
    "circles_log_prob",
    "ring8_log_prob",
    "grid25_log_prob",
    # digits
    "DIGITS_LEVELS",
    "DIGITS_NUM_EXAMPLES",
    "DIGITS_DIM",
    "digits_split_indices",
    "load_digits_split",
    "quantize",
    "uniform_dequantize",
    "nats_to_bits_per_dim",
    # registry
    "DATASETS",
    "Dataset",
    "load_dataset",
    "TOY_N_TRAIN",
    "TOY_N_TEST",
    # files
    "FILE_SUFFIXES",
    "from_array",
    "read_array",
    "load_file",
    "load_source",
    # scaling
    "standardize_stats",
    "standardize",
    "unstandardize",
    # validation
    "check_data",
    "as_integer",
    "check_positive",
]
