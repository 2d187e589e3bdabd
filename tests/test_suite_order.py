"""The suite's order (tests/helpers/shared_cluster.py): the modules that share the session's Ray cluster
run one after another, so that it starts once; a module that starts Ray of its own gets it shut down."""

from tests.helpers.shared_cluster import order_modules, sharing_modules, starts_its_own


class Item:
    def __init__(self, nodeid: str, fixtures=(), integration: bool = False):
        self.nodeid, self.fixturenames, self.integration = nodeid, list(fixtures), integration

    def get_closest_marker(self, name: str):
        return object() if name == "integration" and self.integration else None


def test_sharing_modules_run_together_after_the_quick_tests_and_before_the_ones_with_their_own_ray():
    items = [
        Item("tests/a/test_own.py::test_x", ["demo_dir"], integration=True),
        Item("tests/a/test_quick.py::test_1"),
        Item("tests/b/test_shared.py::test_1", ["base_root", "ray_cluster"], integration=True),
        Item("tests/b/test_shared.py::test_2", ["demo_dir"], integration=True),  # same module: stays with it
        Item("tests/c/test_quick.py::test_2"),
        Item("tests/d/test_shared.py::test_1", ["ray_cluster"], integration=True),
    ]
    order = [i.nodeid for i in order_modules(items)]
    assert order == ["tests/a/test_quick.py::test_1", "tests/c/test_quick.py::test_2",
                     "tests/b/test_shared.py::test_1", "tests/b/test_shared.py::test_2",
                     "tests/d/test_shared.py::test_1", "tests/a/test_own.py::test_x"]
    sharing = sharing_modules(items)
    assert sharing == {"tests/b/test_shared.py", "tests/d/test_shared.py"}
    assert [starts_its_own(i, sharing) for i in items] == [True, False, False, False, False, False]
