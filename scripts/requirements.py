"""Print the dependencies declared in pyproject.toml (plus the named extras), one per line.

The project runs from its checkout and is not installed into the environment, so one
environment can be cached and reused across checkouts (CI) without stale copies of the code.
``--gateway`` prints only the serving gateway's dependencies (``[tool.domain-llm] gateway``),
with the same pins, for the slim gateway image.
"""

import re
import sys
import tomllib
from pathlib import Path

pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
project = pyproject["project"]
if sys.argv[1:] == ["--gateway"]:
    wanted = set(pyproject["tool"]["domain-llm"]["gateway"])
    print("\n".join(d for d in project["dependencies"] if re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0] in wanted))
    sys.exit()
print("\n".join(project["dependencies"]))
for extra in sys.argv[1:]:
    print("\n".join(project["optional-dependencies"][extra]))
