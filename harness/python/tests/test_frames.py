def test_modules_since_a_mark_are_the_newer_ones_or_all_when_the_mark_is_gone() -> None:
    import sys
    import types

    from harness_worker.frames import modules_mark, modules_since

    sys.modules["_harness_test_marked"] = types.ModuleType("_harness_test_marked")
    mark = modules_mark()
    try:
        assert modules_since(mark) == []
        sys.modules["_harness_test_a"] = types.ModuleType("_harness_test_a")
        sys.modules["_harness_test_b"] = types.ModuleType("_harness_test_b")
        assert modules_since(mark) == ["_harness_test_a", "_harness_test_b"]
        del sys.modules["_harness_test_marked"]  # the mark is gone: every module, a superset
        assert modules_since(mark) == list(sys.modules)
    finally:
        for name in ("_harness_test_marked", "_harness_test_a", "_harness_test_b"):
            sys.modules.pop(name, None)
