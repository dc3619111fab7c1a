"""Shared test helper: run a Segmenter.iter_segment generator to its end."""


def events_and_result(gen):
    """``(list of the yielded Progress events, the generator's return value)``."""
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            return events, stop.value
