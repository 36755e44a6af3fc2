"""The one text-table renderer (`tfreg.summary` and the command line's reports)."""


def render(header, rows, markdown=False):
    """`rows` (sequences of cells, printed with str) under `header`.

    Text: left-aligned columns two spaces apart, a rule of dashes under the
    header, no trailing spaces. Markdown: a pipe table.

    >>> from tfreg._table import render
    >>> print(render(("name", "value"), [("a", 1), ("bb", 22)]))
    name  value
    ----  -----
    a     1
    bb    22
    >>> print(render(("name", "value"), [("a", 1)], markdown=True))
    | name | value |
    |---|---|
    | a | 1 |
    """
    header = [str(cell) for cell in header]
    rows = [[str(cell) for cell in row] for row in rows]
    if markdown:
        return "\n".join(["| " + " | ".join(header) + " |",
                          "|" + "|".join("---" for _ in header) + "|"]
                         + ["| " + " | ".join(row) + " |" for row in rows])
    widths = [max(len(cell) for cell in column)
              for column in zip(header, *rows)]

    def line(cells):
        return "  ".join(cell.ljust(width)
                         for cell, width in zip(cells, widths)).rstrip()

    return "\n".join([line(header), line(["-" * width for width in widths])]
                     + [line(row) for row in rows])
