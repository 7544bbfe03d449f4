"""mkdocs hooks: the home page is README.md, whose links are relative to the repository root.

``docs/index.md`` holds the include line ``--8<-- "README.md"``; this hook inlines README.md there
itself (instead of pymdownx.snippets, which runs after page hooks) and rewrites ``](docs/...``
links to be relative to docs/. The benchmark figures README shows (``benchmarks/results/*.png``)
are added to the site at the same relative paths.
"""

import glob
import os

from mkdocs.structure.files import File

INCLUDE = '--8<-- "README.md"'


def _root(config):
    return os.path.dirname(config["docs_dir"])


def on_files(files, config, **kwargs):
    root = _root(config)
    for path in sorted(glob.glob(os.path.join(root, "benchmarks", "results", "*.png"))):
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        files.append(File.generated(config, rel, abs_src_path=path))
    return files


def on_page_markdown(markdown, page, config, **kwargs):
    if page.file.src_uri != "index.md" or INCLUDE not in markdown:
        return markdown
    with open(os.path.join(_root(config), "README.md"), encoding="utf-8") as f:
        text = f.read().replace("](docs/", "](")
    return markdown.replace(INCLUDE, text)
