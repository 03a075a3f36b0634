"""Dependencies point one way: pipeline → flows → tasks → core, and serving → core only; the test
harness (fake services, project helpers) is used by tests and benchmarks, never by the product.

The gateway's image holds core/ and serving/ and nothing else, so an import of flows or tasks
from serving would fail only there, in a container, at start. These tests fail here first.
"""

import ast
import subprocess
import sys

import pytest

from harness.project import REPO

PACKAGES = ("core", "serving", "tasks", "flows", "harness")
ALLOWED = {"core": set(), "serving": {"core"}, "tasks": {"core"}, "flows": {"core", "tasks"},
           "harness": {"core", "tasks", "serving", "flows"}}


def project_imports(package: str) -> dict[str, set[str]]:
    """file → the project packages it imports (anywhere in the file, functions included)."""
    found = {}
    for path in sorted((REPO / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(REPO))] = names & set(PACKAGES)
    return found


# tasks/ is one room per stage, mirroring flows/, over the pieces they share; a room imports only those below it
ROOMS = {"common": set(), "llm": {"common"}, "collect": {"common"}, "process": {"common"},
         "dataset": {"common", "llm"}, "finetune": {"common", "llm"}, "release": {"common", "finetune"},
         "report": {"common", "finetune"}}


def room_imports(room: str) -> dict[str, set[str]]:
    """file → the rooms of tasks/ it imports."""
    found = {}
    for path in sorted((REPO / "tasks" / room).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("tasks."):
                names.add(node.module.split(".")[1])
            elif isinstance(node, ast.Import):
                names |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("tasks.")}
        found[str(path.relative_to(REPO))] = names - {room}
    return found


def test_tasks_holds_rooms_only():
    loose = sorted(p.name for p in (REPO / "tasks").glob("*.py") if p.name != "__init__.py")
    rooms = sorted(p.name for p in (REPO / "tasks").iterdir() if p.is_dir() and p.name != "__pycache__")
    assert loose == [] and rooms == sorted(ROOMS)


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_each_room_of_tasks_imports_only_the_rooms_below_it(room):
    wrong = {file: sorted(names - ROOMS[room]) for file, names in room_imports(room).items() if names - ROOMS[room]}
    assert wrong == {}, f"tasks/{room} may import only {sorted(ROOMS[room])}"


@pytest.mark.parametrize("package", PACKAGES)
def test_each_package_imports_only_what_is_below_it(package):
    wrong = {file: sorted(names - ALLOWED[package] - {package})
             for file, names in project_imports(package).items() if names - ALLOWED[package] - {package}}
    assert wrong == {}, f"{package} may import only {sorted(ALLOWED[package])}"


def test_the_gateway_runs_from_core_and_serving_alone():
    """Importing every gateway module (the CLI too) loads nothing from flows or tasks."""
    modules = [f"serving.{p.relative_to(REPO / 'serving').with_suffix('').as_posix().replace('/', '.')}"
               for p in (REPO / "serving").rglob("*.py") if p.name != "__init__.py"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + "print(sorted({n.split('.')[0] for n in sys.modules} & {'flows', 'tasks'}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_gateway_image_copies_core_and_serving_only():
    copies = [line.split()[1:-1] for line in (REPO / "Dockerfile.api").read_text().splitlines()
              if line.startswith("COPY")]
    code = [src for sources in copies for src in sources if src.rstrip("/") in PACKAGES or (src.endswith(".py")
            and not src.startswith("scripts/"))]
    assert sorted(code) == ["core/", "serving/"]


def _decorators(path) -> list[str]:
    """The decorators of a module's top-level functions, by name (``task``, ``flow``, ``threaded_flow``, …)."""
    names = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in node.decorator_list:
                target = decorator.func if isinstance(decorator, ast.Call) else decorator
                names.append(target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", ""))
    return names


def test_flows_wire_tasks_and_define_none():
    """A flow module calls the work in tasks/ (Prefect tasks and plain functions); a task defined in flows/ would be
    work that no notebook, test or other flow can reach without Prefect's wiring around it."""
    defining = {str(p.relative_to(REPO)): names for p in sorted((REPO / "flows").glob("*.py"))
                if (names := [n for n in _decorators(p) if n == "task"])}
    assert defining == {}


FILE_WORK = {"json", "shutil", "os", "tempfile", "pickle", "core.files"}


def test_flows_do_no_file_work_of_their_own():
    """A flow hands files between stages only through the work it calls (core.results' models, core.artifacts' paths
    and tasks/): a flow that parsed, wrote or deleted a file itself would hold a decision no unit test reaches."""
    found = {}
    for path in sorted((REPO / "flows").glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        if names & FILE_WORK:
            found[str(path.relative_to(REPO))] = sorted(names & FILE_WORK)
    assert found == {}
