"""`GET /api/fetches` a page at a time: limit, order, cursor and details, over a store of thousands."""

import pytest

from harness.proxy import Proxy
from harness.seed import seed

COUNT = 2500


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    """A proxy on a store of COUNT finished registrations (seed-0 the oldest), written before it starts."""
    workdir = tmp_path_factory.mktemp("paging")
    proxy = Proxy(workdir)
    seed(str(proxy.db), COUNT)
    proxy.start()
    yield proxy
    proxy.stop()


def pages(proxy: Proxy, query: str) -> list[dict]:
    """Every answer from the first page to the one without `next`."""
    answers = [proxy.api("GET", f"/api/fetches?{query}").json()]
    while "next" in answers[-1]:
        assert len(answers) <= COUNT, "the cursor never ends"
        answers.append(proxy.api("GET", f"/api/fetches?{query}&cursor={answers[-1]['next']}").json())
    return answers


def test_every_id_once_in_the_order_made_a_page_at_a_time(seeded):
    answers = pages(seeded, "all=1")
    assert [len(a["ids"]) for a in answers] == [1000, 1000, 500]  # 1000 without a limit
    assert [i for a in answers for i in a["ids"]] == [f"seed-{n}" for n in range(COUNT)]
    small = pages(seeded, "all=1&limit=700")
    assert [len(a["ids"]) for a in small] == [700, 700, 700, 400]
    assert seeded.api("GET", "/api/fetches?limit=5").json() == {"ids": []}  # none active


def test_newest_first_with_details_as_a_downloads_page_reads_them(seeded):
    first = seeded.api("GET", "/api/fetches?all=1&order=newest&limit=50&details=1").json()
    assert first["ids"] == [f"seed-{n}" for n in range(COUNT - 1, COUNT - 51, -1)]
    assert [r["id"] for r in first["registrations"]] == first["ids"]
    assert {(r["result"], r["state"], r["records"]) for r in first["registrations"]} == {("success", "done", 1)}
    assert first["registrations"][0] == seeded.registration(f"seed-{COUNT - 1}")
    second = seeded.api("GET", f"/api/fetches?all=1&limit=50&cursor={first['next']}").json()  # the cursor keeps the order
    assert second["ids"][0] == f"seed-{COUNT - 51}" and "registrations" not in second
    newest = pages(seeded, "all=1&order=newest&limit=1000")
    assert [i for a in newest for i in a["ids"]] == [f"seed-{n}" for n in reversed(range(COUNT))]


def test_a_registration_made_meanwhile_comes_on_a_later_page(seeded, origin):
    origin.add("/new.bin", size=100)
    cursor = pages(seeded, "all=1")[1]["next"]  # after the second page of 1000
    seeded.background(origin.url("/new.bin"), 'id="newcomer"')
    seeded.wait_for("newcomer", result="success")
    try:
        assert seeded.api("GET", "/api/fetches?all=1&limit=3&order=newest").json()["ids"][0] == "newcomer"
        rest = seeded.api("GET", f"/api/fetches?all=1&cursor={cursor}").json()
        assert rest == {"ids": [*(f"seed-{n}" for n in range(2000, COUNT)), "newcomer"]}
    finally:
        seeded.api("DELETE", "/api/fetches/newcomer")


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"), ("limit=-1", "limit"),
    ("order=sideways", "order"), ("cursor=bm90LWEtY3Vyc29y", "cursor"), ("cursor=%25%25", "cursor"),
    ("cursor=" + "A" * 100, "cursor"), ("details=2", "details"),
])
def test_a_bad_parameter_is_a_400_naming_it(seeded, query, field):
    answer = seeded.api("GET", f"/api/fetches?{query}")
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["field"] == field


def test_a_cursor_continues_its_own_order_only(seeded):
    newest = seeded.api("GET", "/api/fetches?all=1&order=newest&limit=10").json()["next"]
    answer = seeded.api("GET", f"/api/fetches?all=1&order=oldest&cursor={newest}")
    assert (answer.status_code, answer.json()["field"]) == (400, "cursor")
    assert "order=newest" in answer.json()["detail"]
