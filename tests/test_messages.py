from noprop_bench.run.messages import first_line


def test_first_line_keeps_type_and_first_line_only():
    assert first_line(ValueError("bad value\n  more detail\n")) == "ValueError: bad value"


def test_first_line_of_an_empty_message_is_the_type():
    assert first_line(RuntimeError()) == "RuntimeError"
    assert first_line(KeyError("")) == "KeyError: ''"
    assert first_line(OSError("   \n")) == "OSError"
