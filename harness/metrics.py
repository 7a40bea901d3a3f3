"""A scrape of the store's /metrics, read with prometheus_client's own parser: `Scrape(text)(name, **labels)`."""

from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    """The samples of one scrape; `scrape(name, **labels)` is one sample's value (KeyError if
    there is no such series), `scrape.total(name)` the sum over every series of `name`."""

    def __init__(self, text: str) -> None:
        families = list(text_string_to_metric_families(text))  # a name without a TYPE may come in pieces
        self.families = {family.name: family for family in families}
        self.samples = {
            (sample.name, frozenset(sample.labels.items())): sample.value for family in families for sample in family.samples
        }

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]

    def total(self, name: str) -> float:
        return sum(value for (sample, _), value in self.samples.items() if sample == name)

    def series(self) -> set[tuple[str, frozenset]]:
        """Every series: its name and labels."""
        return set(self.samples)


def moved(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    """How much a series moved from one scrape to the next."""
    return after(name, **labels) - before(name, **labels)
