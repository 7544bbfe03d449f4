"""mkdocs hooks: the home page is README.md, whose links are relative to the repository root.

``docs/index.md`` holds the include line ``--8<-- "README.md"``; this hook inlines README.md there
itself (instead of pymdownx.snippets, which runs after page hooks) and rewrites ``](docs/...``
links to be relative to docs/.
"""

import os

INCLUDE = '--8<-- "README.md"'


def on_page_markdown(markdown, page, config, **kwargs):
    if page.file.src_uri != "index.md" or INCLUDE not in markdown:
        return markdown
    readme = os.path.join(os.path.dirname(config["docs_dir"]), "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read().replace("](docs/", "](")
    return markdown.replace(INCLUDE, text)
