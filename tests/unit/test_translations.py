"""The Spanish catalog covers every string in the code and templates.

Pure tests: no app, no database. They extract messages from the source in
process (the same mapping and keywords as `make messages`), so a string added
to a template or a view fails here until it is translated in
protect/translations/es/LC_MESSAGES/messages.po.

To fix a failure: `make messages`, translate the new entries in the es catalog
(remove any `#, fuzzy` flag once checked), then `make translations`.
"""
from __future__ import annotations

import io
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path

import pytest
from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo, write_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
TRANSLATIONS = ROOT / "protect" / "translations"
ES_PO = TRANSLATIONS / "es" / "LC_MESSAGES" / "messages.po"
EN_PO = TRANSLATIONS / "en" / "LC_MESSAGES" / "messages.po"

# Same keywords as the Makefile's `pybabel extract -k _l -k lazy_gettext`.
KEYWORDS = {**DEFAULT_KEYWORDS, "_l": None, "lazy_gettext": None}

# printf-style placeholders: %(name)s, %d, %.2f, and the literal %%.
PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.\d+)?[diouxXeEfFgGcrsa%]")


def _key(msgid) -> str:
    return msgid if isinstance(msgid, str) else msgid[0]


def _forms(value) -> tuple[str, ...]:
    if value is None:
        return ("",)
    return (value,) if isinstance(value, str) else tuple(value)


@lru_cache(maxsize=None)
def extracted() -> dict[str, str]:
    """msgid -> "file:line" of its first use, straight from the source tree."""
    with open(ROOT / "babel.cfg", encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    found: dict[str, str] = {}
    for filename, lineno, message, _comments, context in extract_from_dir(
            str(ROOT), method_map, options_map, keywords=KEYWORDS):
        assert context is None, f"{filename}:{lineno}: msgctxt is not supported by the catalogs"
        found.setdefault(_key(message), f"{filename}:{lineno}")
    return found


def load_po(path: Path, locale: str):
    with open(path, "rb") as f:
        # abort_invalid: a syntax error in the .po fails instead of being skipped.
        return read_po(f, locale=locale, abort_invalid=True)


@pytest.fixture(scope="module")
def es():
    return load_po(ES_PO, "es")


def test_extraction_finds_messages():
    # Guards the other tests against a broken babel.cfg that extracts nothing.
    found = extracted()
    assert "Sign out" in found
    assert any(where.startswith("templates") for where in found.values())
    assert any(where.startswith("protect") for where in found.values())


def test_every_message_has_a_spanish_translation(es):
    problems = []
    for msgid, where in sorted(extracted().items(), key=lambda item: item[1]):
        entry = es.get(msgid)
        if entry is None:
            problems.append(f"  not in catalog  {where}: {msgid!r}")
        elif entry.fuzzy:
            problems.append(f"  fuzzy           {where}: {msgid!r}")
        elif not all(form.strip() for form in _forms(entry.string)):
            problems.append(f"  untranslated    {where}: {msgid!r}")
    assert not problems, (
        f"{len(problems)} message(s) lack a Spanish translation in {ES_PO.relative_to(ROOT)}.\n"
        "Run `make messages`, translate them, then `make translations`:\n" + "\n".join(problems))


def test_catalog_has_no_fuzzy_entries(es):
    # pybabel compile skips fuzzy entries, and a fuzzy header skips the whole catalog.
    assert not es.fuzzy, "the es catalog header is marked fuzzy; it would not be compiled"
    fuzzy = [_key(m.id) for m in es if m.id and m.fuzzy]
    assert not fuzzy, f"fuzzy entries in the es catalog: {fuzzy}"


def test_english_catalog_does_not_mistranslate():
    # msgids are English: the en catalog keeps msgstr empty so the msgid shows.
    en = load_po(EN_PO, "en")
    assert not en.fuzzy
    bad = [_key(m.id) for m in en
           if m.id and (m.fuzzy or any(form and form != msgid
                                       for form, msgid in zip(_forms(m.string), _forms(m.id))))]
    assert not bad, f"en entries that are fuzzy or differ from the English msgid: {bad}"


def test_translations_keep_placeholders(es):
    problems = []
    for m in es:
        if not m.id or m.fuzzy:
            continue
        ids = _forms(m.id)
        for index, form in enumerate(_forms(m.string)):
            if not form:
                continue
            source = ids[min(index, len(ids) - 1)]
            want = Counter(PLACEHOLDER.findall(source))
            got = Counter(PLACEHOLDER.findall(form))
            if want != got:
                problems.append(f"  {source!r}\n    -> {form!r}\n    placeholders "
                                f"{sorted(want.elements())} != {sorted(got.elements())}")
    assert not problems, "Spanish translations change the %-placeholders:\n" + "\n".join(problems)


def test_babel_catalog_checks_pass(es):
    # Babel's own checkers (python-format consistency, plural form count).
    errors = [f"{_key(m.id)!r}: {[str(e) for e in errs]}" for m, errs in es.check()]
    assert not errors, "\n".join(errors)


def test_catalog_compiles_and_translates(es):
    buf = io.BytesIO()
    write_mo(buf, es)
    buf.seek(0)
    compiled = read_mo(buf)
    assert compiled.get("Sign out").string == "Cerrar sesión"
    assert compiled.get("Use at least %(n)d characters.").string % {"n": 12} == "Usa al menos 12 caracteres."


def test_compiled_catalog_on_disk_is_current(es):
    mo_path = ES_PO.with_suffix(".mo")
    if not mo_path.exists():
        pytest.skip("es messages.mo not compiled; `make test` runs `make translations` first")
    def pairs(messages):
        # Plural entries come back as lists from .mo and tuples from .po.
        as_key = lambda v: v if isinstance(v, str) else tuple(v)
        return {(as_key(m.id), as_key(m.string)) for m in messages if m.id and m.string and not m.fuzzy}

    with open(mo_path, "rb") as f:
        on_disk = pairs(read_mo(f))
    wanted = pairs(es)
    assert on_disk == wanted, (
        f"{mo_path.relative_to(ROOT)} is stale ({len(wanted ^ on_disk)} differing entries): "
        "run `make translations`")
