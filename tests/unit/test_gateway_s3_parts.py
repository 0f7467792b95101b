"""``gateway.blobs_s3_parts``: which part objects make up an S3-stored log, and which a new part
merges (pure; the S3 behaviour is in test_gateway_s3.py against a real server)."""

from __future__ import annotations

import pytest

from gateway.blobs_s3_parts import Part, chain, merge_run, parse_part, part_name

MIB = 1 << 20


def p(offset: int, end: int) -> Part:
    return Part(offset, end - offset, part_name(offset, end))


@pytest.mark.parametrize(
    "name, size, expected",
    [
        pytest.param(part_name(0, 10), 10, Part(0, 10, part_name(0, 10)), id="range"),
        pytest.param(f"{5:020d}", 7, Part(5, 7, f"{5:020d}"), id="legacy-offset-only"),
        pytest.param(part_name(0, 10), 9, None, id="size-contradicts-range"),
        pytest.param(part_name(0, 10), 0, None, id="empty-object"),
        pytest.param("x-1", 3, None, id="not-ours"),
        pytest.param(f"{0:020d}-", 3, None, id="no-end"),
    ],
)
def test_parse_part(name: str, size: int, expected: Part | None) -> None:
    assert parse_part(name, size) == expected


@pytest.mark.parametrize(
    "parts, limit, expected",
    [
        pytest.param([p(0, 5), p(5, 9)], None, [p(0, 5), p(5, 9)], id="plain"),
        pytest.param([p(5, 9), p(0, 5)], None, [p(0, 5), p(5, 9)], id="any-order"),
        pytest.param([p(0, 5), p(6, 9)], None, [p(0, 5)], id="gap-ends-it"),
        pytest.param([p(5, 9)], None, [], id="no-first"),
        pytest.param([p(0, 5), p(5, 7), p(7, 9), p(5, 9)], None, [p(0, 5), p(5, 9)], id="merged-wins"),
        pytest.param([p(0, 5), p(5, 7), p(5, 12), p(7, 12)], None, [p(0, 5), p(5, 12)], id="merged-with-new-bytes"),
        pytest.param([p(0, 5), p(5, 7), p(5, 12)], 7, [p(0, 5), p(5, 7)], id="merged-past-ack-ignored"),
        pytest.param([p(0, 5), p(5, 7), p(5, 12)], 6, [p(0, 5)], id="ack-inside-a-part"),
        pytest.param([p(0, 5), p(5, 7), p(5, 12), p(12, 20)], 12, [p(0, 5), p(5, 12)], id="ack-at-merged-end"),
    ],
)
def test_chain(parts: list[Part], limit: int | None, expected: list[Part]) -> None:
    assert chain(parts, limit) == expected


@pytest.mark.parametrize(
    "sizes, new, expected",
    [
        pytest.param([], 1, 0, id="first-part"),
        pytest.param([8 * MIB], 1, 0, id="whole-parts-stay"),
        pytest.param([8 * MIB, 100], 100, 1, id="equal-merges"),
        pytest.param([8 * MIB, 200], 100, 0, id="larger-tail-stays"),
        pytest.param([8 * MIB, 400, 200, 100], 100, 3, id="cascade"),
        pytest.param([8 * MIB, 3 * MIB, 2 * MIB], 4 * MIB, 2, id="up-to-a-whole-part"),
    ],
)
def test_merge_run(sizes: list[int], new: int, expected: int) -> None:
    parts, pos = [], 0
    for size in sizes:
        parts.append(p(pos, pos + size))
        pos += size
    assert merge_run(parts, new, 8 * MIB) == expected


def test_many_small_uploads_stay_few_objects() -> None:
    """A log shipped as 100,000 requests of 1 KiB (100 MiB) with 8 MiB parts: the binary counter
    keeps at most log2(8 MiB / 1 KiB) + 1 small parts beside the whole ones, and each byte is
    rewritten at most that many times."""
    target, request = 8 * MIB, 1024
    parts: list[Part] = []
    rewritten = 0
    for _ in range(100_000):
        n = merge_run(parts, request, target)
        run = parts[len(parts) - n :] if n else []
        rewritten += sum(x.size for x in run)
        start = run[0].offset if run else (parts[-1].end if parts else 0)
        parts = parts[: len(parts) - n] + [p(start, (parts[-1].end if parts else 0) + request)]
        assert chain(parts) == parts
    small = [x for x in parts if x.size < target]
    assert len(small) <= 14 and len(parts) <= 100 * MIB // target + 14, [x.size for x in parts]
    assert rewritten <= 14 * 100 * MIB
