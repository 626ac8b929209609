"""One plain-text table for the numbers a lecture measures: a list of rows in, aligned columns out.

Plain text, not HTML, so that it reads the same in JupyterLab, Colab, VS Code, on the course
website and in a terminal, and so that no lecture hand-aligns its own f-strings."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Integral, Real


def _cell(value, spec: str | None) -> str:
    if spec is not None:
        return format(value, spec)
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, Integral):
        return f"{value:,}"
    if isinstance(value, Real):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3f}"
    return str(value)


def format_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None,
                 formats: Mapping[str, str] | None = None, title: str | None = None) -> str:
    """``rows`` as aligned text: one line per row, one column per key (``columns`` picks and
    orders them; by default the first row's keys). ``formats`` maps a column to a format spec
    such as ``".4f"`` or ``".1%"``; otherwise integers get thousands separators and floats three
    decimals. Numbers are right-aligned, text left-aligned."""
    if not rows:
        raise ValueError("format_table got no rows: pass a list of dicts, one per row")
    columns = list(columns if columns is not None else rows[0].keys())
    missing = [(i, c) for i, row in enumerate(rows) for c in columns if c not in row]
    if missing:
        i, c = missing[0]
        raise KeyError(f"row {i} has no column {c!r} (it has {sorted(rows[i])}); "
                       "give every row the same keys or pick columns= that all rows have")
    formats = dict(formats or {})
    cells = [[_cell(row[c], formats.get(c)) for c in columns] for row in rows]
    numeric = [all(isinstance(row[c], Real) and not isinstance(row[c], bool) for row in rows)
               for c in columns]
    widths = [max(len(c), *(len(r[j]) for r in cells)) for j, c in enumerate(columns)]

    def line(values):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [title] if title else []
    out += [line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells]
    return "\n".join(out)


def show_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None,
               formats: Mapping[str, str] | None = None, title: str | None = None) -> None:
    """Print :func:`format_table` (the form a lecture cell uses)."""
    print(format_table(rows, columns, formats, title))
