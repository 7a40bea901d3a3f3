"""store/process.py: the malloc settings the store always gets are the ones `make run` gives mitmdump."""

from pathlib import Path

from store import process


def test_make_run_gives_mitmdump_the_stores_malloc_settings():
    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    run = makefile[makefile.index("\nrun:"):makefile.index("\ntest:")]
    assert f"GLIBC_TUNABLES=$${{GLIBC_TUNABLES:-{process.MALLOC_TUNABLES}}}" in run
