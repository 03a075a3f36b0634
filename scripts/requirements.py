"""Print the dependencies declared in pyproject.toml (plus the named extras), one per line.

The project runs from its checkout and is not installed into the environment, so one
environment can be cached and reused across checkouts (CI) without stale copies of the code.
"""

import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
print("\n".join(project["dependencies"]))
for extra in sys.argv[1:]:
    print("\n".join(project["optional-dependencies"][extra]))
