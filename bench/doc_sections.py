"""How a benchmark writes its figures into docs/performance.md: one section per benchmark."""

from pathlib import Path

PERFORMANCE_DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def write_section(heading: str, body: str, *, after: str | None = None, doc: Path = PERFORMANCE_DOC) -> None:
    """Replace the section under `heading` (up to the next `## `) with `body`.

    A section the document does not have yet goes after the section `after`
    when there is one, else at the end.
    """
    text = doc.read_text() if doc.exists() else "# Performance\n\n"
    section = f"{heading}\n\n{body.strip()}\n"
    if heading in text:
        head, _, rest = text.partition(heading)
        text = head + section + (rest[rest.find("\n## "):] if "\n## " in rest else "")
    elif after and after in text:
        head, _, rest = text.partition(after)
        end = rest.find("\n## ")
        text = head + after + (rest + "\n\n" + section if end == -1 else rest[:end].rstrip("\n") + "\n\n" + section + rest[end:])
    else:
        text = text.rstrip() + "\n\n" + section
    doc.parent.mkdir(exist_ok=True)
    doc.write_text(text)
