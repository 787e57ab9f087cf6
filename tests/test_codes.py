"""Seeded SBC codebooks and the GSBC query check (``hdsim.codes``, SPEC section 1).

Oracles: torch's own seeded ``Generator`` drawn by hand in the documented order, sums of offsets
modulo ``L`` written out per block, and hand-picked shapes, bounds and messages.
"""

import re

import numpy as np
import pytest
import torch

from hdsim.codes import (
    BlockCodebooks,
    check_gsbc,
    codebook_sizes,
    random_codebooks,
    random_sbc,
    seeded_generator,
)
from hdsim.errors import HdsimError
from hdsim.export_folder import CodebookArrays


def torch_generator(seed: int) -> torch.Generator:
    """The oracle's generator: a plain CPU ``torch.Generator`` seeded by hand."""
    g = torch.Generator(device="cpu")
    g.manual_seed(seed)
    return g


def test_seeded_generator_is_a_cpu_generator_with_that_seed():
    for seed in (0, 1, 12345, 2**32, 2**63, 2**64 - 1):  # the whole 64-bit range is accepted
        g = seeded_generator(seed)
        assert isinstance(g, torch.Generator) and g.device == torch.device("cpu")
        assert g.initial_seed() == seed
        assert torch.equal(torch.randint(0, 1000, (20,), generator=g),
                           torch.randint(0, 1000, (20,), generator=torch_generator(seed)))
    # two seeds, two streams (torch's generator: a collision of 20 draws in 1000 is ~1e-60)
    assert not torch.equal(torch.randint(0, 1000, (20,), generator=seeded_generator(1)),
                           torch.randint(0, 1000, (20,), generator=seeded_generator(2)))


@pytest.mark.parametrize("seed", [-1, 2**64, True, 1.0, "1", None])
def test_seeded_generator_rejects_seeds_outside_64_bits(seed):
    with pytest.raises(HdsimError, match=re.escape(f"seed: must be an integer in [0, 2^64 - 1], got {seed!r}")):
        seeded_generator(seed)


def test_random_sbc_draws_offsets_from_the_given_generator():
    x = random_sbc(200, 3, 4, seeded_generator(7))
    assert x.shape == (200, 3) and x.dtype == torch.int64 and x.device == torch.device("cpu")
    # every offset of [0, L) occurs and none outside (600 draws of 4 values: all occur)
    assert sorted(x.unique().tolist()) == [0, 1, 2, 3]
    # the draw is torch.randint(0, L, (n, B)) from that generator, in that order
    assert torch.equal(x, torch.randint(0, 4, (200, 3), generator=torch_generator(7)))
    # and consumes it: the next draw from the same generator continues the stream
    g = seeded_generator(7)
    random_sbc(200, 3, 4, g)
    oracle = torch_generator(7)
    torch.randint(0, 4, (200, 3), generator=oracle)
    assert torch.equal(random_sbc(5, 2, 9, g), torch.randint(0, 9, (5, 2), generator=oracle))
    # L = 1: one offset only
    assert torch.equal(random_sbc(3, 2, 1, seeded_generator(0)), torch.zeros(3, 2, dtype=torch.int64))


def test_random_codebooks_one_generator_in_factor_order():
    cb = random_codebooks(2, (3, 5), D=12, B=4, seed=11)
    assert cb.F == 2 and cb.sizes == (3, 5) and cb.B == 4 and cb.L == 3 and type(cb.L) is int
    assert cb.D == 12 and cb.problem_size == 15
    g = torch_generator(11)  # factor 0 then factor 1, from one generator seeded with the seed
    want = [torch.randint(0, 3, (3, 4), generator=g), torch.randint(0, 3, (5, 4), generator=g)]
    for got, w in zip(cb.indices, want):
        assert got.dtype == torch.int64 and torch.equal(got, w)
    # one M for every factor; the smallest valid shapes (D = B = 1: one block of one position)
    cb = random_codebooks(3, 2, D=8, B=2, seed=0)
    assert cb.sizes == (2, 2, 2) and cb.L == 4
    cb = random_codebooks(1, 1, D=1, B=1, seed=0)
    assert cb.sizes == (1,) and cb.L == 1 and torch.equal(cb.indices[0], torch.zeros(1, 1, dtype=torch.int64))
    # same seed, same codebooks; another seed, others
    a, b, c = (random_codebooks(2, 4, D=64, B=8, seed=s) for s in (5, 5, 6))
    assert all(torch.equal(x, y) for x, y in zip(a.indices, b.indices))
    assert not torch.equal(a.indices[0], c.indices[0])


@pytest.mark.parametrize("F, M, D, B, message", [
    (0, 3, 8, 2, "F: expected at least 1 factor, got 0"),
    (-1, 3, 8, 2, "F: expected at least 1 factor, got -1"),
    (2, (3, 4, 5), 8, 2, "M: expected 2 codebook sizes (one per factor), got 3"),
    (2, (3,), 8, 2, "M: expected 2 codebook sizes (one per factor), got 1"),
    (2, (3, 0), 8, 2, "M: codebook size must be >= 1, got 0"),
    (1, -2, 8, 2, "M: codebook size must be >= 1, got -2"),
    (2, 3, 8, 0, "B: number of blocks must be >= 1, got 0"),
    (2, 3, 8, -4, "B: number of blocks must be >= 1, got -4"),
    (2, 3, 0, 1, "D: dimension 0 is not divisible by the number of blocks B=1"),
    (2, 3, -2, 2, "D: dimension -2 is not divisible by the number of blocks B=2"),
    (2, 3, 10, 4, "D: dimension 10 is not divisible by the number of blocks B=4"),
])
def test_random_codebooks_rejects_parameters_out_of_range(F, M, D, B, message):
    with pytest.raises(HdsimError, match=re.escape(message)):
        random_codebooks(F, M, D=D, B=B, seed=0)


def test_codebook_sizes():
    assert codebook_sizes(1, 1) == (1,)
    assert codebook_sizes(3, 2) == (2, 2, 2)
    assert codebook_sizes(2, (1, 4)) == (1, 4) and codebook_sizes(2, [6, 5]) == (6, 5)
    assert codebook_sizes(1, (7,)) == (7,)


def test_product_adds_offsets_per_block_modulo_L():
    L = 5
    cb = BlockCodebooks((torch.tensor([[0, 1, 4], [2, 3, 3]]),
                         torch.tensor([[4, 4, 0], [1, 0, 2], [3, 2, 1]]),
                         torch.tensor([[1, 2, 3], [4, 0, 4]])), L)
    assert cb.problem_size == 2 * 3 * 2 and cb.D == 15
    idx = torch.tensor([[0, 0, 0], [1, 2, 1], [1, 1, 0], [0, 2, 1]])
    # by hand: row [1, 2, 1] is (2+3+4, 3+2+0, 3+1+4) mod 5 = (4, 0, 3)
    assert cb.product(idx).tolist() == [[0, 2, 2], [4, 0, 3], [4, 0, 3], [2, 3, 4]]
    # the same, written out block by block over every combination of the factors
    for i in range(2):
        for j in range(3):
            for k in range(2):
                got = cb.product(torch.tensor([[i, j, k]]))[0].tolist()
                want = [(int(cb.indices[0][i, b]) + int(cb.indices[1][j, b]) + int(cb.indices[2][k, b])) % L
                        for b in range(3)]
                assert got == want
    # one factor: the codevectors themselves
    one = BlockCodebooks((torch.tensor([[3, 1], [0, 4]]),), L)
    assert one.product(torch.tensor([[1], [0], [1]])).tolist() == [[0, 4], [3, 1], [0, 4]]


def test_from_arrays_as_numpy_and_to():
    arrays = CodebookArrays((np.array([[0, 2], [1, 1]], dtype=np.int32), np.array([[2, 0]], dtype=np.uint8)),
                            np.int64(3))
    cb = BlockCodebooks.from_arrays(arrays)
    assert type(cb.L) is int and cb.L == 3 and cb.sizes == (2, 1) and cb.B == 2
    assert all(x.dtype == torch.int64 for x in cb.indices)  # widened, whatever the arrays' integer type
    assert cb.indices[0].tolist() == [[0, 2], [1, 1]] and cb.indices[1].tolist() == [[2, 0]]
    back = cb.as_numpy()
    assert len(back) == 2 and all(isinstance(x, np.ndarray) and x.dtype == np.int64 for x in back)
    assert back[0].tolist() == [[0, 2], [1, 1]] and back[1].tolist() == [[2, 0]]
    # to(device): every factor moves, L is kept ("meta" is a device every torch build has)
    meta = cb.to("meta")
    assert meta.L == 3 and meta.F == 2 and all(x.device.type == "meta" for x in meta.indices)
    assert meta.sizes == (2, 1)
    same = cb.to(torch.device("cpu"))
    assert same.L == 3 and all(torch.equal(x, y) for x, y in zip(same.indices, cb.indices))


def test_check_gsbc_shapes_and_dtype():
    B, L = 2, 3
    flat = torch.arange(12, dtype=torch.float64).reshape(2, 6)
    q = check_gsbc(flat, B, L)
    assert q.shape == (2, 2, 3) and q.dtype == torch.float64  # a float dtype is kept
    assert torch.equal(q.reshape(2, 6), flat)
    assert check_gsbc(torch.ones(6, dtype=torch.float16), B, L).shape == (1, 2, 3)
    assert check_gsbc(torch.ones(2, 3), B, L).shape == (1, 2, 3)
    ints = check_gsbc(torch.tensor([[0, 1, 2, 3, 4, 5]]), B, L)  # integers become float32
    assert ints.dtype == torch.float32 and ints.reshape(-1).tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    # zeros are non-negative: an all-zero query (and a block of zeros) is accepted
    assert torch.equal(check_gsbc(torch.zeros(1, 6), B, L), torch.zeros(1, 2, 3))
    small = torch.full((1, 6), 0.5)
    assert torch.equal(check_gsbc(small, B, L), small.reshape(1, 2, 3))


@pytest.mark.parametrize("bad, message", [
    (float("nan"), "query: contains NaN or infinite values"),
    (float("inf"), "query: contains NaN or infinite values"),
    (float("-inf"), "query: contains NaN or infinite values"),
    (-0.25, "query: GSBC entries must be non-negative, found -0.25"),
    (-1e-30, "query: GSBC entries must be non-negative, found -1e-30"),
])
def test_check_gsbc_rejects_one_bad_entry(bad, message):
    q = torch.rand(3, 2, 4, generator=seeded_generator(0))  # finite, non-negative
    q[1, 1, 2] = bad  # one bad entry among valid ones
    with pytest.raises(HdsimError, match=re.escape(message)):
        check_gsbc(q, 2, 4)


def test_check_gsbc_names_the_argument():
    with pytest.raises(HdsimError, match=re.escape("query: expected a torch.Tensor, got ndarray")):
        check_gsbc(np.zeros((1, 6)), 2, 3)
    with pytest.raises(HdsimError, match=re.escape("probe: expected a torch.Tensor, got list")):
        check_gsbc([0.0] * 6, 2, 3, name="probe")
    with pytest.raises(HdsimError, match=re.escape("probe: expected shape (N, 6) or (N, 2, 3), got (1, 7)")):
        check_gsbc(torch.zeros(1, 7), 2, 3, name="probe")
    with pytest.raises(HdsimError, match=re.escape("probe: GSBC entries must be non-negative, found -2")):
        check_gsbc(torch.tensor([[0.0, 0.0, 0.0, 0.0, -2.0, 0.0]]), 2, 3, name="probe")
    with pytest.raises(HdsimError, match=re.escape("probe: contains NaN or infinite values")):
        check_gsbc(torch.tensor([[0.0, 0.0, float("nan"), 0.0, 0.0, 0.0]]), 2, 3, name="probe")
