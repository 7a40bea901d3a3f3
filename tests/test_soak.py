"""bench/soak.py in miniature: a dozen fetches, a third of them cut, all whole, nothing fetched twice."""

from bench import soak


def test_a_small_soak_passes(capsys):
    assert soak.main(["--count", "12", "--max", "1MiB", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert "succeeded            12 / 12   corrupt: 0" in out
    assert "4 armed; mitmproxy killed 0 times; 4 resumes with Range" in out
