"""End to end, through a real mitmdump: a changed file becomes a new generation of its stored record
(store/engine/renewal.py), streamed to the client that asked while others keep the old one, never
mixed; the old one's bytes go once its last reader is done."""

import hashlib
import json
import threading

import httpx

from harness.poll import eventually
from harness.proxy import curl
from store.db import schema

MiB = 1 << 20


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_etag(proxy, reg_id: str) -> str:
    """The ETag of the response the store serves for the registration's first record."""
    (record,) = proxy.api("GET", f"/api/fetches/{reg_id}/records").json()["records"]
    return dict((k.lower(), v) for k, v in record["response"]["headers"])["etag"]


def chunk_generations(proxy) -> set[int]:
    conn = schema.connect(str(proxy.db), readonly=True)  # the chunks are in the bodies file beside it
    try:
        return {row[0] for row in conn.execute("SELECT DISTINCT generation FROM chunks")}
    finally:
        conn.close()


def test_a_changed_file_is_served_new_a_304_serves_it_again_and_offline_it_is_served(origin, proxy):
    origin.add("/pkg.tar", size=2 * MiB, headers={"Cache-Control": "no-cache"})
    url = origin.url("/pkg.tar")
    first = curl(proxy, url, "-H", 'Background-Fetch: id="pkg"')
    assert sha256(first.stdout) == origin.sha256("/pkg.tar")
    proxy.wait_for("pkg", result="success")
    origin.change("/pkg.tar")
    changed = curl(proxy, url)  # stale: revalidated, and the origin has another version
    assert changed.returncode == 0 and sha256(changed.stdout) == origin.sha256("/pkg.tar")
    eventually(lambda: stored_etag(proxy, "pkg"), 10, until=lambda etag: etag == origin.etag("/pkg.tar"),
               what="the new version to be stored")
    before = origin.count("/pkg.tar")
    confirmed = curl(proxy, url, "-D", "/dev/stderr")  # a 304: the stored one again
    assert sha256(confirmed.stdout) == origin.sha256("/pkg.tar") and origin.count("/pkg.tar") == before + 1
    assert origin.body_bytes_sent("/pkg.tar") == 4 * MiB  # the first version and the second, once each
    origin.stop()
    offline = curl(proxy, url)
    assert offline.returncode == 0 and sha256(offline.stdout) == origin.sha256("/pkg.tar")
    assert proxy.registration("pkg")["result"] == "success" and chunk_generations(proxy) == {1}


def test_a_reader_of_the_old_generation_is_never_given_mixed_bytes(origin, proxy):
    size = 24 * MiB  # far more than the sockets and mitmproxy hold: the old reader reads from the store throughout
    origin.add("/big.iso", size=size, headers={"Cache-Control": "max-age=3600"})
    url = origin.url("/big.iso")
    proxy.background(url, 'id="big"')
    proxy.wait_for("big", result="success")
    old, old_etag = origin.data("/big.iso"), origin.etag("/big.iso")
    origin.change("/big.iso")
    origin.behave("/big.iso", throttle=8 * MiB)
    new = origin.data("/big.iso")
    with httpx.Client(proxy=proxy.url, timeout=30) as slow, slow.stream("GET", url) as old_reader:
        assert old_reader.headers["etag"] == old_etag  # fresh by max-age: the stored one, unasked
        pieces = old_reader.iter_raw(64 * 1024)
        got = bytearray(next(pieces))
        renewed = {}

        def insist() -> None:  # a client that asks for the origin's word: streamed the new version
            with httpx.Client(proxy=proxy.url, timeout=60) as client:
                renewed["response"] = client.get(url, headers={"Cache-Control": "no-cache"})

        asking = threading.Thread(target=insist)
        asking.start()
        eventually(lambda: origin.body_bytes_sent("/big.iso"), 10, until=lambda sent: sent > size + MiB,
                   what="the new version to be on its way")
        with proxy.client() as client:  # meanwhile, a request that does not insist gets the old one, whole
            meanwhile = client.get(url)
        assert meanwhile.headers["etag"] == old_etag and meanwhile.content == old
        asking.join(30)
        assert sha256(renewed["response"].content) == sha256(new)
        eventually(lambda: stored_etag(proxy, "big"), 10, until=lambda etag: etag != old_etag,
                   what="the new version to take the old one's place")
        assert chunk_generations(proxy) == {0, 1}  # the old one is still being read
        for piece in pieces:
            got += piece
    assert len(got) == size and got == old  # the whole old version, not a byte of the new one
    eventually(lambda: chunk_generations(proxy), 10, until=lambda generations: generations == {1},
               what="the old version's bytes to go after its last reader")
    with proxy.client() as client:
        assert sha256(client.get(url).content) == sha256(new)


def test_a_new_version_cut_short_is_given_up_and_the_stored_one_stays(origin, proxy):
    origin.add("/cut.bin", size=4 * MiB, headers={"Cache-Control": "no-cache"})
    url = origin.url("/cut.bin")
    proxy.background(url, 'id="cut"')
    proxy.wait_for("cut", result="success")
    old = origin.data("/cut.bin")
    origin.change("/cut.bin")
    origin.behave("/cut.bin", cut_after=MiB, cuts=1)
    cut = curl(proxy, url)
    if cut.returncode == 0:  # given up before its first bytes were sent: a problem naming it, not a body
        problem = json.loads(cut.stdout)
        assert problem["status"] == 502 and problem["type"].endswith("version-gone") and url in problem["detail"]
    else:  # cut short: what was sent is the new version's beginning
        assert origin.data("/cut.bin").startswith(cut.stdout) and len(cut.stdout) < 4 * MiB
    eventually(lambda: chunk_generations(proxy), 10, until=lambda generations: generations == {0},
               what="the broken new version to be given up")
    assert stored_etag(proxy, "cut") == f'"{sha256(old)}"'
    origin.stop()
    assert sha256(curl(proxy, url).stdout) == sha256(old)


def test_the_new_version_is_stored_when_its_client_leaves(origin, proxy):
    origin.add("/left.bin", size=6 * MiB, headers={"Cache-Control": "no-cache"})
    url = origin.url("/left.bin")
    proxy.background(url, 'id="left"')
    proxy.wait_for("left", result="success")
    origin.change("/left.bin")
    origin.behave("/left.bin", throttle=6 * MiB)
    with proxy.client() as client, client.stream("GET", url) as leaving:
        next(leaving.iter_raw(64 * 1024))  # and away
    eventually(lambda: stored_etag(proxy, "left"), 15, until=lambda etag: etag == origin.etag("/left.bin"),
               what="the new version to be stored without its client")
    origin.stop()
    assert sha256(curl(proxy, url).stdout) == origin.sha256("/left.bin")
