"""Progress on stderr when it is redirected: tqdm's bars become whole lines, so a message written
after a bar (an error from another process of the run) starts a line of its own."""
import io

from tqdm import tqdm

from clp_cli.main import LineProgress


def test_bar_refreshes_become_lines_and_the_next_message_starts_its_own():
    log = io.StringIO()
    stream = LineProgress(log)
    for _ in tqdm(range(3), desc="train", file=stream, mininterval=0):
        pass
    bar = tqdm(range(5), desc="killed mid-run", file=stream, mininterval=0)
    next(iter(bar))  # a bar left open, as by a process killed mid-run
    print("clp: error: one line", file=stream)
    lines = log.getvalue().splitlines()
    assert lines[-1] == "clp: error: one line"
    assert lines[0].startswith("train:") and all("\r" not in line for line in lines)
    assert "" not in lines  # no empty line where a bar closed


def test_plain_prints_pass_unchanged():
    log = io.StringIO()
    stream = LineProgress(log)
    print("a", file=stream)
    print("", file=stream)
    stream.write("b\n")
    assert log.getvalue() == "a\n\nb\n"
