"""Build plots/offline.html: DVC's HTML page with vega, vega-lite and vega-embed inlined, so that
`dvc plots show` renders without a network. Run once after `npm pack vega@5 vega-lite@5 vega-embed@6`
in a directory and extracting each tarball into a folder named after it:

    python plots/build_template.py /tmp/vega_pack > plots/offline.html
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PACKAGES = (("vega", "vega.min.js"), ("vega-lite", "vega-lite.min.js"), ("vega-embed", "vega-embed.min.js"))

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>kdpipe plots</title>
<!--
Offline template for `dvc plots show` (configured as plots.html_template in .dvc/config).
Inlined below, unmodified: {versions}.
Their licence texts follow.
{licenses}
-->
{scripts}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def package_dir(root: Path, name: str) -> Path:
    """The extracted `npm pack` folder of one package, e.g. <root>/vega-lite-5.23.0/package."""
    found = [
        d / "package" for d in root.iterdir() if d.name.rsplit("-", 1)[0] == name and (d / "package").is_dir()
    ]
    if len(found) != 1:
        sys.exit(f"expected one extracted {name}-<version> folder under {root}, found {len(found)}")
    return found[0]


def license_text(pkg: Path, meta: dict) -> str:
    """The package's LICENSE file, else its package.json licence field and repository (vega ships no file)."""
    if (pkg / "LICENSE").is_file():
        return (pkg / "LICENSE").read_text(encoding="utf8")
    repo = meta.get("repository", {})
    url = repo.get("url", "") if isinstance(repo, dict) else str(repo)
    url = url if "://" in url else f"https://github.com/{url}"  # npm shorthand owner/name
    return (
        f"License: {meta.get('license', 'unknown')} (the package.json licence field; this npm package "
        f"ships no LICENSE file; full text in the repository {url})"
    )


def build(root: Path) -> str:
    versions, licenses, scripts = [], [], []
    for name, js in PACKAGES:
        pkg = package_dir(root, name)
        meta = json.loads((pkg / "package.json").read_text())
        version = meta["version"]
        code = (pkg / "build" / js).read_text(encoding="utf8")
        if "</script" in code or "{plot_divs}" in code or "{scripts}" in code:
            sys.exit(f"{name} {version}: cannot inline (contains a closing script tag or a DVC placeholder)")
        versions.append(f"{name} {version}")
        text = license_text(pkg, meta).replace("--", "- -")  # no '--' inside an HTML comment
        licenses.append(f"\n===== {name} {version} =====\n{text.strip()}")
        scripts.append(f"<script>/* {name} {version} */\n{code}\n</script>")
    return PAGE.format(versions=", ".join(versions), licenses="\n".join(licenses), scripts="\n".join(scripts))


if __name__ == "__main__":
    sys.stdout.write(build(Path(sys.argv[1])))
