"""Academy feedback: per school, a short French report of the records the sync set aside.

Why: the fix is always in the school's own software (SIECLE, STS-web), never in the ENT. An
academy forwards this page to the school; it tells the school's whole night: its name, the
run's date, the exports received (kind, export date, records read), what became of them (taken
into account, set aside, held for the academy's approval, an export that did not come), and
for each rule what the problem means and on which SIECLE or STS-web screen the school
corrects it. Each record is named the way the secretary finds it in SIECLE (the pupil's class
and INE, a guardian's child's), each file by its SIECLE export name and date; file, line and
record number stay as a technical detail. It never shows a name, a birth date or an address,
and every value is HTML-escaped.

Input: the ``validation_<uai>.json`` that ``etl.validate.rules.write_validation_report`` writes
(``ValidationOutcome.as_dict``, with ``locators``: ``record_locators``), and once the run has
ended the night's facts (``night``: ``etl.report.schools.school_night``).
"""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final


@dataclass(frozen=True)
class Advice:
    """What a rule means to a school, and where in SIECLE / STS-web it is fixed."""

    title: str
    meaning: str
    where: str


# Screens as the schools know them (SIECLE "Base élèves" = BEE, STS-web for staff/services).
_BEE_IDENTITE: Final = "SIECLE › Base élèves (BEE) › fiche de l'élève › onglet Identité"
_BEE_SCOLARITE: Final = "SIECLE › Base élèves (BEE) › fiche de l'élève › onglet Scolarité"
_BEE_RESP: Final = "SIECLE › Base élèves (BEE) › fiche de l'élève › onglet Responsables"
_BEE_FICHE_RESP: Final = "SIECLE › Base élèves (BEE) › Responsables › fiche du responsable"
_STRUCTURES: Final = ("SIECLE › Structures (divisions et groupes) ; pour les services des "
                      "enseignants : STS-web › Structures")
_STS_INDIVIDU: Final = "STS-web › Individus (fiche du personnel)"
_STS_SERVICES: Final = "STS-web › Services d'enseignement"
_EXPORT: Final = ("refaire l'export XML (SIECLE › Exploitation › Exports XML, ou STS-web › "
                  "Exports) ; si le problème persiste, le signaler à l'assistance académique")

#: (rule, column or "") -> advice; the column narrows rules that apply to several fields
ADVICE: Final[dict[tuple[str, str], Advice]] = {
    ("ine_format", ""): Advice(
        "INE invalide",
        "L'identifiant national élève (INE) n'a pas la forme d'un INE. L'élève a son compte "
        "ENT, mais sans INE : il n'a pas accès aux ressources numériques (GAR).",
        _BEE_SCOLARITE + " : vérifier l'INE"),
    ("unknown_division", ""): Advice(
        "Division ou groupe inconnu",
        "L'élève est inscrit dans une division ou un groupe qui ne figure pas dans l'export "
        "des structures : il n'apparaît pas dans cette classe de l'ENT.",
        _STRUCTURES + " ; puis " + _BEE_SCOLARITE + " (division, groupes)"),
    ("unknown_structure", ""): Advice(
        "Enseignant rattaché à une classe inconnue",
        "Un service d'enseignement vise une division ou un groupe absent des structures de "
        "l'établissement : l'enseignant n'est pas rattaché à cette classe dans l'ENT.",
        _STS_SERVICES + " ; et " + _STRUCTURES),
    ("teacher_without_service", ""): Advice(
        "Enseignant sans service",
        "L'enseignant n'a aucun service d'enseignement : il n'est rattaché à aucune classe.",
        _STS_SERVICES),
    ("unknown_person", ""): Advice(
        "Rattachement à une personne absente",
        "Une inscription dans une classe ou un service vise un élève ou un enseignant qui "
        "n'est pas dans l'export (sorti, ou écarté pour une autre raison ci-dessus).",
        _BEE_SCOLARITE + " ; " + _STS_SERVICES),
    ("unknown_pupil", ""): Advice(
        "Responsable sans élève",
        "Le lien de responsabilité vise un élève absent de l'export des élèves : le "
        "responsable n'est rattaché à aucun élève et n'obtient pas de compte pour lui.",
        _BEE_RESP + " (l'élève est-il bien inscrit dans l'établissement ?)"),
    ("unknown_guardian", ""): Advice(
        "Responsable introuvable",
        "L'élève est lié à un responsable qui ne figure pas dans l'export des responsables.",
        _BEE_RESP + " ; " + _BEE_FICHE_RESP),
    ("level_code", ""): Advice(
        "Niveau de responsabilité incorrect",
        "Le niveau de responsabilité n'est ni 1 (responsable légal), ni 2, ni 3.",
        _BEE_RESP + " : case « responsable légal » / niveau de responsabilité"),
    ("required", "level"): Advice(
        "Niveau de responsabilité manquant",
        "Le lien élève-responsable n'indique pas si la personne est responsable légal.",
        _BEE_RESP + " : case « responsable légal » / niveau de responsabilité"),
    ("required", "birth_date"): Advice(
        "Date de naissance manquante",
        "La date de naissance de l'élève est vide : l'élève n'a pas de compte ENT.",
        _BEE_IDENTITE + " : date de naissance"),
    ("date_format", "birth_date"): Advice(
        "Date de naissance invalide",
        "La date de naissance n'est pas une date valide : la personne n'a pas de compte ENT "
        "tant qu'elle n'est pas corrigée.",
        "élève : " + _BEE_IDENTITE + " : date de naissance ; personnel : " + _STS_INDIVIDU
        + " : date de naissance"),
    ("date_format", ""): Advice(
        "Date invalide",
        "Une date de l'élève (naissance, entrée ou sortie) n'est pas au format jj/mm/aaaa "
        "(par exemple 2012-05-03 au lieu de 03/05/2012) : l'élève n'a pas de compte ENT, ni "
        "ses inscriptions et ses liens avec ses responsables, tant qu'elle n'est pas corrigée.",
        _BEE_IDENTITE + " : date de naissance ; " + _BEE_SCOLARITE
        + " : dates d'entrée et de sortie"),
    ("date_format", "entry_date"): Advice(
        "Date d'entrée invalide",
        "La date d'entrée de l'élève dans l'établissement n'est pas au format jj/mm/aaaa : "
        "l'élève n'a pas de compte ENT tant qu'elle n'est pas corrigée.",
        _BEE_SCOLARITE + " : date d'entrée"),
    ("date_format", "leave_date"): Advice(
        "Date de sortie invalide",
        "La date de sortie de l'élève n'est pas au format jj/mm/aaaa : l'élève n'a pas de "
        "compte ENT tant qu'elle n'est pas corrigée.",
        _BEE_SCOLARITE + " : date de sortie"),
    ("one_division", ""): Advice(
        "Élève dans deux divisions",
        "L'élève est inscrit dans plusieurs divisions : seule la première est prise, il "
        "n'apparaît pas dans les autres classes de l'ENT.",
        _BEE_SCOLARITE + " : une seule division par élève (les autres en groupes)"),
    ("required", "source_id"): Advice(
        "Identifiant manquant",
        "L'enregistrement n'a pas son identifiant SIECLE (ELEVE_ID, PERSONNE_ID) ou STS-web "
        "(ID) : il ne peut être rattaché à personne et n'est pas pris en compte.",
        _EXPORT),
    ("unique", "source_id"): Advice(
        "Identifiant en double",
        "Le même identifiant apparaît deux fois dans le fichier : seul le premier "
        "enregistrement est pris, le second est ignoré.",
        _EXPORT + " ; pour le personnel : " + _STS_INDIVIDU),
    ("required", "last_name"): Advice(
        "Nom manquant", "La personne n'a pas de nom : elle n'a pas de compte ENT.",
        "élève : " + _BEE_IDENTITE + " ; responsable : " + _BEE_FICHE_RESP
        + " ; personnel : " + _STS_INDIVIDU),
    ("not_empty", "last_name"): Advice(
        "Nom vide", "Le nom de la personne est vide : elle n'a pas de compte ENT.",
        "élève : " + _BEE_IDENTITE + " ; responsable : " + _BEE_FICHE_RESP
        + " ; personnel : " + _STS_INDIVIDU),
    ("required", "first_name"): Advice(
        "Prénom manquant", "La personne n'a pas de prénom : elle n'a pas de compte ENT.",
        "élève : " + _BEE_IDENTITE + " ; responsable : " + _BEE_FICHE_RESP
        + " ; personnel : " + _STS_INDIVIDU),
    ("not_empty", "first_name"): Advice(
        "Prénom vide", "Le prénom de la personne est vide : elle n'a pas de compte ENT.",
        "élève : " + _BEE_IDENTITE + " ; responsable : " + _BEE_FICHE_RESP
        + " ; personnel : " + _STS_INDIVIDU),
    ("sex_code", ""): Advice(
        "Sexe non renseigné",
        "Le sexe n'est ni masculin ni féminin : le compte est créé sans cette information.",
        "élève : " + _BEE_IDENTITE + " ; personnel : " + _STS_INDIVIDU),
    ("email_format", ""): Advice(
        "Adresse électronique invalide",
        "L'adresse mél n'a pas la forme d'une adresse : le compte est créé sans adresse.",
        _BEE_FICHE_RESP + " : coordonnées (mél)"),
    ("code_length", ""): Advice(
        "Code de division ou de groupe trop long",
        "Le code d'une division ou d'un groupe dépasse 8 caractères.", _STRUCTURES),
    ("required", "code"): Advice(
        "Code de division ou de groupe manquant",
        "Une division, un groupe ou un service n'a pas de code.", _STRUCTURES),
    ("unique", ""): Advice(
        "Identifiant en double",
        "Le même identifiant apparaît deux fois dans le fichier : seul le premier est pris.",
        _EXPORT),
    ("ine_conflict", ""): Advice(
        "Même INE pour deux élèves différents",
        "Le même identifiant national élève (INE) figure sur des élèves dont la date de "
        "naissance ou le nom diffèrent : ce ne peut pas être le même enfant (l'autre élève "
        "peut être inscrit dans un autre établissement de l'académie, la référence le dit). "
        "Les comptes ne sont pas fusionnés : chaque élève a son propre compte ENT, mais l'INE "
        "ne reste qu'au compte qui le portait déjà (aucun s'il est nouveau) ; les autres n'ont "
        "pas accès aux ressources numériques (GAR) tant que l'INE n'est pas corrigé.",
        _BEE_SCOLARITE + " : vérifier l'INE ; " + _BEE_IDENTITE + " : vérifier la date de "
        "naissance et le nom ; un INE attribué à tort se corrige avec l'assistance académique "
        "(répertoire national des INE, RNIE)"),
    ("wrong_school", ""): Advice(
        "Enregistrement d'un autre établissement",
        "Le fichier contient des données d'un autre établissement (autre UAI).",
        "vérifier que l'export a été fait depuis l'établissement concerné ; " + _EXPORT),
}
#: warnings: what was read anyway, worked around, and should still be fixed
WARNING_ADVICE: Final[dict[str, Advice]] = {
    "unknown_group": Advice(
        "Groupe absent de la liste des groupes",
        "L'élève est inscrit dans un groupe que la liste des groupes de l'établissement "
        "(export des structures, STS-web) ne contient pas. L'élève est bien mis dans ce "
        "groupe dans l'ENT ; vérifier que le groupe existe et qu'il est exporté.",
        _STRUCTURES + " ; puis " + _BEE_SCOLARITE + " (groupes)"),
    "group_code_is_division": Advice(
        "Groupe portant le code d'une division",
        "Un groupe a le même code qu'une division. Les deux sont bien dans l'ENT, distincts : "
        "la classe sous son code, le groupe sous « <code> (groupe) ». Donner au groupe un "
        "code à lui évite toute confusion pour les utilisateurs.",
        _STRUCTURES),
    "unknown_element": Advice(
        "Élément XML inconnu ignoré",
        "Le fichier contient, là où l'export SIECLE ou STS-web met des éléments connus, un "
        "élément d'un autre nom (par exemple <RESPONSABLE> au lieu de <RESPONSABLE_ELEVE>, "
        "<MEF> au lieu de <MEF_APPARTENANCE>) : son contenu n'a pas été lu (liens avec les "
        "responsables, MEF de la classe...). Le fichier a sans doute été produit ou modifié "
        "par un autre outil.",
        "déposer l'export tel que SIECLE ou STS-web le produit, sans le retoucher ; "
        + _EXPORT),
    "invisible_characters": Advice(
        "Caractères invisibles retirés d'un nom",
        "Le nom ou le prénom contenait des caractères invisibles (espace de largeur nulle, "
        "caractères de contrôle du sens d'écriture...) qui peuvent faire afficher un nom "
        "pour un autre : ils ont été retirés, le compte ENT porte le nom sans eux.",
        "ressaisir le nom : élève : " + _BEE_IDENTITE + " ; responsable : "
        + _BEE_FICHE_RESP + " ; personnel : " + _STS_INDIVIDU),
}
_WARNING_FALLBACK: Final = Advice(
    "Avertissement", "L'enregistrement a été lu, mais une partie n'a pas pu l'être.", _EXPORT)
_FALLBACK: Final = Advice(
    "Enregistrement non conforme",
    "L'enregistrement ne respecte pas le format attendu de l'export.", _EXPORT)
_CASCADE: Final = Advice(
    "Conséquences des problèmes ci-dessus",
    "Ces inscriptions dans une classe ou ces liens avec un responsable visent un "
    "enregistrement écarté plus haut : ils sont repris d'eux-mêmes quand il est corrigé. "
    "Rien d'autre à corriger.",
    "voir le problème de l'enregistrement visé, plus haut")
_COLUMNS: Final = ("birth_date", "last_name", "first_name", "level", "code", "person_key",
                   "pupil_key", "guardian_key", "email", "sex", "uai", "kind", "role",
                   "source_id")
#: the XML names the readers' messages use, as the column they fill
_XML_NAMES: Final = {"DATE_NAISS": "birth_date", "DATE_NAISSANCE": "birth_date",
                     "CODE_STRUCTURE": "code", "CODE": "code", "ELEVE_ID": "source_id",
                     "PERSONNE_ID": "source_id", "ID": "source_id"}
#: what the readers' and the validation's messages add to a record removed only because of
#: another one (reports written before ``cascade`` was recorded)
_CASCADE_SUFFIX: Final = "(what it points at was rejected or quarantined)"
_ELEMENT_LABEL: Final = {"ELEVE": "élève", "PERSONNE": "responsable", "INDIVIDU": "personnel",
                         "RESPONSABLE_ELEVE": "lien élève-responsable",
                         "STRUCTURE": "inscription de l'élève", "ENSEIGNANT": "service",
                         "DIVISION": "division", "GROUPE": "groupe"}
# A source key names a record by its SIECLE/STS number: show that number, nothing else.
_KEY_REF: Final = (
    (re.compile(r"SIECLE-RESP\$[0-9A-Z]{8}\$([0-9A-Za-z_-]{1,32})\b"), "PERSONNE_ID"),
    (re.compile(r"SIECLE\$[0-9A-Z]{8}\$([0-9A-Za-z_-]{1,32})\b"), "ELEVE_ID"),
    (re.compile(r"STS\$[0-9A-Z]{8}\$([0-9A-Za-z_-]{1,32})\b"), "INDIVIDU"),
    (re.compile(r"\b(ELEVE_ID|PERSONNE_ID|INDIVIDU ID) ([0-9A-Za-z_-]{1,32})\b"), ""),
    (re.compile(r"\bINDIVIDU (?!ID\b)([0-9A-Za-z_-]{1,32})\b"), "INDIVIDU"),
)


def _column_of(message: str) -> str:
    """The field a message is about (the validation messages name it after the record, the
    readers' by its XML name)."""
    text = message.split(": ", 1)[-1]
    for col in _COLUMNS:
        if re.search(rf"\b{col}\b", text):
            return col
    for name, col in _XML_NAMES.items():
        if re.search(rf"\b{name}\b", text):
            return col
    return ""


def advice_for(rule: str, message: str = "", field: str = "") -> Advice:
    """The advice for a rule, narrowed by the field the record names (``field``) or its
    message does."""
    return (ADVICE.get((rule, field or _column_of(message))) or ADVICE.get((rule, ""))
            or _FALLBACK)


def record_reference(message: str) -> str:
    """The SIECLE/STS numbers a validation message names, in order ("" when none)."""
    found: dict[int, str] = {}
    for rx, label in _KEY_REF:
        for m in rx.finditer(message):
            found[m.start()] = f"{label} {m.group(1)}" if label else f"{m.group(1)} {m.group(2)}"
    return " → ".join(found[k] for k in sorted(found))


def is_cascade(r: dict[str, Any]) -> bool:
    """Whether a rejected record was removed only because what it points at was."""
    return bool(r.get("cascade")) or _CASCADE_SUFFIX in str(r.get("message", ""))


def _group(rejected: list[dict[str, Any]]) -> dict[Advice, list[dict[str, Any]]]:
    out: dict[Advice, list[dict[str, Any]]] = defaultdict(list)
    for r in rejected:
        out[advice_for(str(r.get("rule", "")), str(r.get("message", "")),
                       str(r.get("field") or ""))].append(r)
    return dict(sorted(out.items(), key=lambda kv: (-len(kv[1]), kv[0].title)))


def warning_advice(rule: str) -> Advice:
    return WARNING_ADVICE.get(rule, _WARNING_FALLBACK)


@dataclass(frozen=True)
class _Labels:
    """How the page names records and files: ``locators`` (``record_locators``), and each
    file's SIECLE export name and date (``export_label``) when the night's exports are known."""

    locators: dict[str, dict[str, Any]]
    files: dict[str, str]

    def file(self, name: str) -> str:
        return self.files.get(name) or export_label({"file": name})

    def who(self, r: dict[str, Any], ref: str) -> str:
        """The record as the school finds it in SIECLE: a pupil's class and INE, a guardian's
        child's; a record the exports do not say more of by its kind."""
        el = str(r.get("element", ""))
        refs = [x.strip() for x in ref.split("→") if x.strip()]
        pupils = [x for x in refs if x.startswith("ELEVE_ID ")]
        found = [w for w in (locator_text(self.locators.get(x))
                             for x in (pupils[:1] if len(refs) > 1 and pupils else refs)) if w]
        if found:
            label = _ELEMENT_LABEL.get(el, el)
            text = " ; ".join(found)
            return f"{label} : {text}" if label and el not in ("ELEVE", "PERSONNE") else text
        if el == "INDIVIDU" or ref.startswith("INDIVIDU"):
            return "personnel (STS-web)"
        return _ELEMENT_LABEL.get(el, el) or "enregistrement"


def _rows_table(rows: list[dict[str, Any]], count: bool = False,
                labels: _Labels | None = None) -> list[str]:
    """The records of one section: who (class and INE where known, never a name), the
    export, and as a technical detail the file, line, element and SIECLE/STS number."""
    e = html.escape
    lab = labels or _Labels({}, {})
    out = ["<table><tr><th>Enregistrement (à retrouver dans SIECLE ou STS-web)</th>"
           "<th>Export</th>" + ("<th>Occurrences</th>" if count else "")
           + "<th>Détail technique</th></tr>"]
    for r in sorted(rows, key=lambda r: (str(r.get("file")), r.get("line") or 0)):
        ref = record_reference(str(r.get("message", "")))
        n = ""
        if count:
            m = re.search(r"\b([0-9]+) time\(s\)", str(r.get("message", "")))
            n = f"<td>{e(m.group(1) if m else '1')}</td>"
        out.append(f"<tr><td>{e(lab.who(r, ref))}</td><td>{e(lab.file(str(r.get('file', ''))))}"
                   f"</td>{n}<td class=tech>{_technical(r, ref)}</td></tr>")
    out.append("</table>")
    return out


def _technical(r: dict[str, Any], ref: str) -> str:
    """File, line, element and record number: for the academy's support, not the school."""
    e = html.escape
    el = str(r.get("element", ""))
    parts = [f"<code>{e(str(r.get('file') or ''))}</code>"]
    if r.get("line"):
        parts.append(f"ligne <span class=line>{e(str(r['line']))}</span>")
    if el:
        parts.append(f"<code>{e(el)}</code>")
    if ref:
        parts.append(e(ref))
    return ", ".join(parts)


_STYLE: Final = (
    "<style>body{font-family:sans-serif;max-width:62em;margin:1em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #bbb;"
    "padding:.2em .5em;text-align:left;vertical-align:top}.where{background:#eef5ff;"
    "padding:.4em}.todo{background:#fff4e0;padding:.4em}.tech{font-size:.85em;color:#555}"
    ".ok{background:#e3f5e1;padding:.4em}.meta{color:#444}</style>")


def render_school_feedback(report: dict[str, Any], school_name: str | None = None,
                           night: dict[str, Any] | None = None) -> str:
    """The HTML page (French) for one school: its validation report and, once the run has
    ended, the night's facts (``night``: exports received, held plan, missing exports...).

    "Rien à corriger" is said only when nothing at all is to be done: no record set aside, no
    file set aside, no warning, no held plan, no export missing, nothing to check."""
    e = html.escape
    night = night or {}
    uai = str(report.get("uai") or night.get("uai") or "")
    name = night.get("name") or school_name
    who = f"{name} ({uai})" if name else uai
    everything = list(report.get("rejected") or [])
    rejected = [r for r in everything if not is_cascade(r)]
    cascades = [r for r in everything if is_cascade(r)]
    warnings = list(report.get("warnings") or [])
    quarantine = dict(report.get("quarantine") or {})
    for q in night.get("quarantined") or []:  # a school not read: its files from the summary
        quarantine.setdefault(str(q.get("file")), str(q.get("reason") or ""))
    identity = list(report.get("identity") or [])  # kept records: ``add_identity_findings``
    labels = _Labels(dict(report.get("locators") or {}),
                     {str(x.get("file")): export_label(x) for x in night.get("exports") or []})
    held = night.get("held") or None
    missing = list(night.get("missing") or [])
    p = ['<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8">',
         f"<title>Synchronisation ENT : retours pour {e(who)}</title>", _STYLE,
         "</head><body>",
         f"<h1>Synchronisation ENT : retours pour l'établissement {e(who)}</h1>"]
    if night.get("date"):
        p.append(f"<p class=meta>Synchronisation du {e(str(night['date']))}"
                 + (f", académie {e(str(night['academy_name']))}"
                    if night.get("academy_name") else "") + "</p>")
    if night:
        p += _outcome(night)
        p += _exports_section(night, quarantine)
        p += _missing_section(missing)
        if held:
            p += _held_section(held, night.get("decision"))
    nothing = (not everything and not quarantine and not warnings and not identity
               and not held and not missing and night.get("status") not in _NOT_DONE)
    if nothing:
        p.append("<p class=ok>Aucun enregistrement écarté : rien à corriger.</p></body></html>")
        return "\n".join(p)
    if everything or warnings:
        p.append(f"<p>{len(rejected)} enregistrement(s) n'ont pas pu être pris en compte dans "
                 "l'annuaire de l'ENT"
                 + (f" (et {len(cascades)} inscription(s) ou lien(s) qui en dépendent)"
                    if cascades else "")
                 + (f" ; {len(warnings)} avertissement(s)" if warnings else "")
                 + ". Pour chaque problème : ce qu'il signifie et l'écran où l'établissement "
                 "le corrige. La correction sera prise en compte au prochain export.</p>")
    if quarantine:
        p.append("<h2>Fichiers non traités</h2><p>Ces fichiers n'ont pas été utilisés du "
                 "tout : les comptes qu'ils concernent restent inchangés tant qu'un export "
                 "corrigé n'est pas déposé.</p><table><tr><th>Export</th><th>Pourquoi</th>"
                 "<th>Que faire</th><th>Détail technique</th></tr>")
        for f, why in sorted(quarantine.items()):
            fr, todo = quarantine_reason(str(why))
            p.append(f"<tr><td>{e(labels.file(str(f)))}</td><td>{e(fr)}</td><td>{e(todo)}</td>"
                     f"<td class=tech><code>{e(str(f))}</code> : {e(str(why))}</td></tr>")
        p.append("</table>")
    for adv, rows in _group(rejected).items():
        p.append(f"<h2>{e(adv.title)} ({len(rows)})</h2><p>{e(adv.meaning)}</p>"
                 f'<p class="where">Où corriger : {e(adv.where)}</p>')
        p += _rows_table(rows, labels=labels)
    by_rule: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for w in warnings:
        by_rule[str(w.get("rule", ""))].append(w)
    for rule, rows in sorted(by_rule.items()):
        adv = warning_advice(rule)
        p.append(f"<h2>Avertissement : {e(adv.title)} ({len(rows)})</h2>"
                 f"<p>{e(adv.meaning)}</p>"
                 f'<p class="where">Où corriger : {e(adv.where)}</p>')
        p += _rows_table(rows, count=rule == "unknown_element", labels=labels)
    if cascades:
        p.append(f"<h2>{e(_CASCADE.title)} ({len(cascades)})</h2><p>{e(_CASCADE.meaning)}</p>")
        p += _rows_table(cascades, labels=labels)
    p += _identity_section(identity, labels)
    p.append("</body></html>")
    return "\n".join(p)


#: school statuses with which the night did not go through (nothing to fix is not said)
_NOT_DONE: Final = ("quarantined", "error", "file_changed", "awaiting_approval", "held",
                    "partial", "failed")
#: what became of the school's exports tonight, by its status in the run
_OUTCOME: Final = {
    "ok": "Les exports de ce soir ont été pris en compte dans l'ENT.",
    "collateral": "Les exports de ce soir ont été pris en compte dans l'ENT.",
    "unchanged": "Les exports de ce soir contiennent les mêmes données que ceux déjà pris en "
                 "compte : rien n'a changé dans l'ENT.",
    "already_applied": "Les exports reçus ce soir avaient déjà été pris en compte : rien n'a "
                       "changé dans l'ENT.",
    "quarantined": "Un export au moins n'a pas pu être utilisé (voir « Fichiers non traités ») "
                   ": rien n'a été modifié dans l'ENT pour l'établissement ce soir. Les autres "
                   "exports seront repris avec l'export corrigé.",
    "awaiting_approval": "Les changements de ce soir sont inhabituels : ils attendent la "
                         "validation de l'académie et n'ont pas encore été appliqués dans "
                         "l'ENT (voir « Changements en attente de validation »).",
    "held": "Les changements de ce soir attendent la validation de l'académie et n'ont pas "
            "encore été appliqués dans l'ENT (voir « Changements en attente de validation »).",
    "error": "L'établissement n'a pas pu être traité ce soir (incident technique, suivi par "
             "l'académie) : rien n'a été modifié dans l'ENT ; il sera repris à la prochaine "
             "synchronisation. Rien à faire de la part de l'établissement.",
    "file_changed": "Un fichier a été remplacé pendant la synchronisation : l'établissement "
                    "n'a pas été traité ce soir, il le sera à la prochaine synchronisation. "
                    "Rien à faire de la part de l'établissement.",
    "partial": "Une partie des changements n'a pas pu être écrite dans l'ENT (incident "
               "technique, suivi par l'académie) : elle sera reprise. Rien à faire de la part "
               "de l'établissement.",
    "failed": "Les changements n'ont pas pu être écrits dans l'ENT (incident technique, suivi "
              "par l'académie) : ils seront repris. Rien à faire de la part de "
              "l'établissement.",
}
#: the summary's categories, in French (counts of directory entries: accounts, classes...)
CATEGORY_FR: Final = {"created": "création(s)", "updated": "modification(s)",
                      "disabled": "désactivation(s)", "restored": "réactivation(s)",
                      "deleted": "suppression(s)"}


def _counts_fr(counts: dict[str, Any]) -> str:
    return ", ".join(f"{int(counts.get(k) or 0)} {v}" for k, v in CATEGORY_FR.items()
                     if counts.get(k)) or "aucun changement"


def _outcome(night: dict[str, Any]) -> list[str]:
    e = html.escape
    status = str(night.get("status") or "")
    p = ["<h2>Résultat de la nuit</h2>"]
    text = _OUTCOME.get(status, "")
    if night.get("dry_run"):
        text = ("Simulation (rien n'a été écrit dans l'ENT) : voici ce que la synchronisation "
                "aurait fait. " + text)
    p.append(f"<p>{e(text)}</p>")
    written = night.get("written") or {}
    if status in ("ok", "collateral", "partial") and any(written.get(k) for k in CATEGORY_FR):
        p.append(f"<p>Dans l'annuaire de l'ENT (comptes, classes, groupes) : "
                 f"{e(_counts_fr(written))}.</p>")
    return p


#: export kinds in words
KIND_FR: Final = {"ELEVES": "élèves", "RESPONSABLES": "responsables",
                  "STRUCTURES": "structures (divisions et groupes)",
                  "NOMENCLATURES": "nomenclatures", "STS": "personnels et services (STS-web)"}
#: the names SIECLE and STS-web give their exports, as found in a file's name
_EXPORT_NAMES: Final = ("ElevesSansAdresses", "ElevesAvecAdresses",
                        "ResponsablesSansAdresses", "ResponsablesAvecAdresses", "Structures",
                        "Nomenclature", "sts_emp")
_STATE_FR: Final = {"read": "pris en compte", "quarantined": "non traité",
                    "refused": "refusé à l'arrivée", "superseded": "remplacé par un plus récent",
                    "held": "en attente de validation", "already_applied": "déjà pris en compte",
                    "not_applied": "lu, non appliqué ce soir"}


def _fr_date(iso: str | None) -> str:
    """``2026-10-01T08:30:00`` -> ``01/10/2026``."""
    m = re.match(r"(\d{4})-(\d{2})-(\d{2})", str(iso or ""))
    return f"{m.group(3)}/{m.group(2)}/{m.group(1)}" if m else ""


def export_label(x: dict[str, Any]) -> str:
    """A file as the school knows it: its SIECLE/STS-web export name and date,
    ``ElevesSansAdresses (export SIECLE du 01/10/2026)``; a file of another name by its kind
    and name."""
    f = str(x.get("file") or "")
    base = re.split(r"[!/]", f)[-1]
    kind = str(x.get("kind") or "")
    found = next((n for n in _EXPORT_NAMES if n.lower() in f.lower()), None)
    if found == "sts_emp" or (found is None and kind == "STS"):
        what, soft = "emploi du temps STS-web (sts_emp)", "STS-web"
    elif found:
        what, soft = found, "SIECLE"
    else:
        what = f"export {KIND_FR.get(kind, kind.lower() or 'inconnu')} ({base})"
        soft = "STS-web" if kind == "STS" else "SIECLE"
    date = _fr_date(x.get("export_date"))
    return f"{what} (export {soft} du {date})" if date else what


def _exports_section(night: dict[str, Any], quarantine: dict[str, str]) -> list[str]:
    e = html.escape
    exports = list(night.get("exports") or [])
    if not exports:
        return ["<h2>Exports reçus ce soir</h2><p>Aucun export reçu ce soir.</p>"]
    p = ["<h2>Exports reçus ce soir</h2><table><tr><th>Export</th><th>Contenu</th>"
         "<th>Date de l'export</th><th>Enregistrements lus</th><th>État</th></tr>"]
    for x in exports:
        state = str(x.get("state") or "read")
        if str(x.get("file")) in quarantine and state != "refused":
            state = "quarantined"
        n = x.get("records")
        p.append(f"<tr><td>{e(export_label({**x, 'export_date': None}))}</td>"
                 f"<td>{e(KIND_FR.get(str(x.get('kind') or ''), str(x.get('kind') or '?')))}"
                 f"</td><td>{e(_fr_date(x.get('export_date')) or '?')}</td>"
                 f"<td>{'' if n is None else e(str(n))}</td>"
                 f"<td>{e(_STATE_FR.get(state, state))}</td></tr>")
    p.append("</table>")
    return p


def _missing_section(missing: list[dict[str, Any]]) -> list[str]:
    if not missing:
        return []
    e = html.escape
    p = ["<h2>Export manquant</h2><p>L'établissement envoie d'habitude ces exports ; ils "
         "n'ont pas été reçus ce soir. Les comptes qu'ils décrivent restent tels quels (ni "
         "créés, ni modifiés, ni désactivés) jusqu'au prochain export reçu.</p><ul>"]
    for m in missing:
        kind = str(m.get("kind") or "")
        last = _fr_date(m.get("last_export_date"))
        soft = "STS-web › Exports" if kind == "STS" else "SIECLE › Exploitation › Exports XML"
        p.append(f"<li>Export {e(KIND_FR.get(kind, kind))}"
                 + (f" (le dernier pris en compte date du {e(last)})" if last else "")
                 + f" : le déposer de nouveau ({e(soft)}).</li>")
    p.append("</ul>")
    return p


def guard_reason(g: dict[str, Any]) -> str:
    """Why a guard held the school's changes, in French (``etl.plan.guards``)."""
    name = str(g.get("guard") or "")
    detail = str(g.get("detail") or "")
    nums = [int(x) for x in re.findall(r"\b\d+\b", detail)]

    def pct(v: Any) -> str:
        try:
            return f"{round(float(v) * 100):d} %"
        except (TypeError, ValueError):
            return "?"

    if name == "pupil_drop" and len(nums) >= 2:
        return (f"{pct(g.get('value'))} des élèves ont disparu de l'export : il compte "
                f"{nums[0]} élèves, le dernier pris en compte en comptait {nums[1]} (au-delà "
                f"de {pct(g.get('limit'))}, l'académie vérifie avant d'appliquer)")
    if name == "pupil_drop":
        return f"{pct(g.get('value'))} des élèves ont disparu de l'export"
    if name == "disable_share" and len(nums) >= 2:
        return (f"{nums[0]} des {nums[1]} comptes de l'établissement seraient désactivés "
                f"({pct(g.get('value'))}, au-delà de {pct(g.get('limit'))})")
    if name == "disable_count" and nums:
        return f"{nums[0]} comptes seraient désactivés (au-delà de {g.get('limit')})"
    if name == "update_share" and len(nums) >= 2:
        return (f"{nums[0]} des {nums[1]} comptes de l'établissement seraient modifiés "
                f"({pct(g.get('value'))}, au-delà de {pct(g.get('limit'))})")
    if name == "school_year":
        return (f"l'année scolaire de l'export ({g.get('value')}) est antérieure à celle déjà "
                f"prise en compte ({g.get('limit')})")
    if name == "school_year_advance":
        return (f"l'export commence l'année scolaire {g.get('value')} hors de la période de "
                f"rentrée : l'académie vérifie avant d'appliquer")
    if name == "older_export":
        dates = re.findall(r"export of (\S+) is older than the (\w+) export of (\S+)", detail)
        if dates:
            return "; ".join(
                f"l'export {KIND_FR.get(k, k)} du {_fr_date(a)} est plus ancien que celui du "
                f"{_fr_date(b)} déjà pris en compte" for a, k, b in dates)
        return "un export est plus ancien que celui déjà pris en compte"
    return f"contrôle « {name} » : {detail}"


_DECISION_FR: Final = {"approved": "validés par l'académie et appliqués",
                       "rejected": "refusés par l'académie : rien n'a été appliqué"}


def _held_section(held: dict[str, Any], decision: dict[str, Any] | None) -> list[str]:
    e = html.escape
    p = ["<h2>Changements en attente de validation</h2>",
         f"<p>Ce que la synchronisation de ce soir changerait dans l'ENT : "
         f"{e(_counts_fr(held.get('counts') or {}))}.</p><p>Pourquoi ils attendent :</p><ul>"]
    p += [f"<li>{e(guard_reason(g))}</li>" for g in held.get("guards") or []]
    p.append("</ul>")
    if decision:
        d = str(decision.get("decision") or "")
        p.append(f"<p class=ok>Ces changements ont été {e(_DECISION_FR.get(d, d))}"
                 + (f" le {e(_fr_date(str(decision.get('at'))))}" if decision.get("at") else "")
                 + ".</p>")
    else:
        p.append("<p class=todo>Que faire : si l'export de ce soir est incomplet ou ancien "
                 "(élèves manquants, mauvais établissement, mauvaise période), refaire un export "
                 "complet (SIECLE › Exploitation › Exports XML, ou STS-web › Exports) et le "
                 "signaler à l'assistance académique. Sinon, rien à faire : l'académie valide "
                 "ou refuse ces changements ; sans validation, ils ne sont pas appliqués.</p>")
    return p


#: a quarantine reason (English, from the readers and the validation) -> what it means to
#: the school, and what to do, in French
_QUARANTINE_FR: Final = (
    (r"in the future", "La date de l'export est dans le futur (horloge du poste qui a fait "
     "l'export ?).", "vérifier la date et l'heure du poste, puis refaire l'export."),
    (r"rejected by an operator", "Cet export, plus ancien que celui déjà pris en compte, a "
     "été refusé par l'académie : il ne sera plus proposé.", "déposer un export récent."),
    (r"DOCTYPE|ENTITY", "Le fichier contient une déclaration (DOCTYPE) que SIECLE et STS-web "
     "ne produisent pas : il a été refusé par sécurité.",
     "déposer l'export tel que SIECLE ou STS-web le produit, sans l'ouvrir ni le retoucher."),
    (r"error budget exceeded", "Trop d'enregistrements de ce fichier ne sont pas conformes "
     "({0} sur {1}) : le fichier entier a été mis de côté.",
     "corriger dans SIECLE ou STS-web les enregistrements listés plus bas, puis refaire "
     "l'export."),
    (r"blocking check failed", "Le fichier ne passe pas un contrôle bloquant (par exemple de "
     "nombreux identifiants en double) : il a été mis de côté en entier.",
     "refaire l'export ; si le problème persiste, le signaler à l'assistance académique."),
    (r"truncated|no root element|empty file|malformed",
     "Le fichier est incomplet ou abîmé (XML coupé ou mal formé) : il a sans doute été "
     "tronqué pendant le dépôt.", "refaire l'export et le déposer de nouveau, sans le modifier."),
    (r"zip", "L'archive zip est illisible ou abîmée.",
     "refaire l'export et déposer le fichier zip tel que SIECLE le produit."),
    (r"not an XML|unreadable|encoding", "Le fichier n'est pas un export XML lisible (format "
     "ou encodage inattendu).", "déposer l'export tel que SIECLE ou STS-web le produit."),
    (r"unknown root element", "Le fichier n'est pas un export SIECLE ou STS-web reconnu.",
     "vérifier que le bon export a été déposé."),
    (r"UAJ|UAI", "Le fichier n'indique pas l'établissement (UAI), ou pas le bon.",
     "vérifier que l'export a été fait depuis l'établissement concerné."),
)


def quarantine_reason(reason: str) -> tuple[str, str]:
    """(why, what to do) in French for a file set aside."""
    for rx, why, todo in _QUARANTINE_FR:
        if re.search(rx, reason, re.IGNORECASE):
            nums = re.findall(r"\b(\d+) of (\d+)\b", reason)
            return (why.format(*nums[0]) if nums else why.replace(" ({0} sur {1})", "")), todo
    return ("Le fichier n'a pas pu être utilisé.",
            "refaire l'export ; si le problème persiste, le signaler à l'assistance "
            "académique.")


def locator_text(loc: dict[str, Any] | None) -> str:
    """``élève de 3A, INE 070876696HA``; a guardian by the pupils he is linked to:
    ``responsable d'un élève de 3A, INE 070876696HA``."""
    if not loc:
        return ""
    if loc.get("eleves"):
        kids = [_pupil_text(k) for k in loc["eleves"]]
        return "responsable d'un élève " + " ; d'un élève ".join(k for k in kids if k)
    text = _pupil_text(loc)
    return f"élève {text}" if text else ""


def _pupil_text(loc: dict[str, Any]) -> str:
    parts = [f"de {loc['classe']}"] if loc.get("classe") else []
    if loc.get("ine"):
        parts.append(f"INE {loc['ine']}")
    return ", ".join(parts)


def _identity_section(findings: list[dict[str, Any]],
                      labels: _Labels | None = None) -> list[str]:
    """Records kept (each has its account) whose identity contradicts another record's."""
    if not findings:
        return []
    e = html.escape
    lab = labels or _Labels({}, {})
    p = ["<h2>Identités à vérifier</h2><p>Ces élèves ont bien un compte ENT, mais leurs "
         "données d'identité en contredisent d'autres : à corriger pour que chacun garde "
         "l'accès à ses ressources.</p>"]
    for adv, rows in _group(findings).items():
        p.append(f"<h3>{e(adv.title)} ({len(rows)})</h3><p>{e(adv.meaning)}</p>"
                 f'<p class="where">Où corriger : {e(adv.where)}</p>')
        p.append("<table><tr><th>Export</th><th>Enregistrement</th>"
                 "<th>Référence</th><th>Détail technique</th></tr>")
        for r in sorted(rows, key=lambda r: (str(r.get("file")), r.get("line") or 0)):
            el = str(r.get("element", ""))
            ref = _conflict_reference(r) or record_reference(str(r.get("message", "")))
            p.append(f"<tr><td>{e(lab.file(str(r.get('file') or '')))}</td>"
                     f"<td>{e(_ELEMENT_LABEL.get(el, el))}</td>"
                     f"<td>{e(ref)}</td><td class=tech>{_technical(r, '')}</td></tr>")
        p.append("</table>")
    return p


def write_school_feedback(validation_json: Path | None, out_dir: Path,
                          school_name: str | None = None,
                          night: dict[str, Any] | None = None) -> Path:
    """Write ``retours_<uai>.html`` for the school of a validation report (None: a school not
    validated tonight, its page from ``night`` alone); return its path."""
    report: dict[str, Any] = (json.loads(Path(validation_json).read_text("utf-8"))
                              if validation_json is not None else {})
    uai = re.sub(r"[^0-9A-Za-z]", "_",
                 str(report.get("uai") or (night or {}).get("uai") or "inconnu"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"retours_{uai}.html"
    path.write_text(render_school_feedback(report, school_name, night), "utf-8")
    return path


def add_report_keys(json_path: Path, **keys: Any) -> None:
    """Add keys to a validation report (``locators``...)."""
    report = json.loads(Path(json_path).read_text("utf-8"))
    report.update(keys)
    Path(json_path).write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str),
                               "utf-8")


def record_locators(tables: Any, records: list[dict[str, Any]],
                    stored_ine: Any = None) -> dict[str, dict[str, Any]]:
    """How the school finds each record the page names, by its reference
    (``record_reference``: ``ELEVE_ID 1002``): a pupil by class (division) and INE, a
    guardian by the pupils he is linked to. From the school's tables as read, before
    validation (a pupil a reader rejected has no row there: his class comes from his
    inscriptions, his INE from the directory, ``stored_ine``: jointures -> INE). Never a name.

    ``tables``: ``etl.read.canonical.Tables``; only the records named are looked up."""
    refs = {x.strip() for r in records
            for x in record_reference(str(r.get("message", ""))).split("→") if x.strip()}
    pupils = {x.split(" ", 1)[1] for x in refs if x.startswith("ELEVE_ID ")}
    guardians = {x.split(" ", 1)[1] for x in refs if x.startswith("PERSONNE_ID ")}
    if not pupils and not guardians:
        return {}
    persons = tables["persons"]
    members = tables["memberships"]
    links = tables["guardian_links"]

    def tail(key: Any) -> str:
        return str(key).rsplit("$", 1)[-1]

    ine: dict[str, str] = {}
    key_of: dict[str, str] = {}
    if not persons.empty:
        p = persons[persons["profile"].astype("string") == "ELV"]
        for k, sid, v in zip(p["person_key"], p["source_id"], p["ine"], strict=True):
            key_of[str(sid)] = str(k)
            if isinstance(v, str) and v:
                ine[str(sid)] = v
    division: dict[str, str] = {}
    if not members.empty:
        m = members[(members["kind"].astype("string") == "D")
                    & (members["role"].astype("string") == "pupil")]
        for k, code in zip(m["person_key"], m["code"], strict=True):
            division.setdefault(tail(k), str(code))
            key_of.setdefault(tail(k), str(k))
    children: dict[str, list[str]] = defaultdict(list)
    if guardians and not links.empty:
        for pk, gk in zip(links["pupil_key"], links["guardian_key"], strict=True):
            if tail(gk) in guardians:
                children[tail(gk)].append(tail(pk))
                key_of.setdefault(tail(pk), str(pk))
    wanted = pupils | {c for cs in children.values() for c in cs}
    lacking = sorted(key_of[x] for x in wanted if x not in ine and x in key_of)
    if lacking and stored_ine is not None:
        for k, v in (stored_ine(lacking) or {}).items():
            ine.setdefault(tail(k), v)

    def pupil(x: str) -> dict[str, Any]:
        return {k: v for k, v in (("classe", division.get(x)), ("ine", ine.get(x))) if v}

    out: dict[str, dict[str, Any]] = {}
    for x in sorted(pupils):
        if pupil(x):
            out[f"ELEVE_ID {x}"] = pupil(x)
    for g in sorted(guardians):
        kids = [pupil(c) for c in sorted(set(children.get(g, []))) if pupil(c)]
        if kids:
            out[f"PERSONNE_ID {g}"] = {"eleves": kids}
    return out


_REASON: Final = {"birth_date": "date de naissance différente",
                  "name": "même date de naissance, nom différent"}


def _conflict_reference(finding: dict[str, Any]) -> str:
    """``ELEVE_ID 600002 ; même INE que ELEVE_ID 600001 (0671234X) : date de naissance
    différente``: record numbers and school codes only."""
    def ref(key: str) -> str:
        parts = str(key).split("$")
        return f"ELEVE_ID {parts[-1]} ({parts[-2]})" if len(parts) >= 4 else ""

    others = [x for x in (ref(k) for k in finding.get("others") or []) if x]
    if not finding.get("person_key") or not (others or finding.get("stored")):
        return ""
    mine = str(finding["person_key"]).split("$")[-1]
    what = ("même INE qu'un compte existant" + (f", {', '.join(others)}" if others else "")
            if finding.get("stored") else "même INE que " + ", ".join(others))
    return f"ELEVE_ID {mine} ; {what} : {_REASON.get(str(finding.get('reason')), '')}"


_IDENTITY_MARK: Final = ("<!-- entsync:identity -->", "<!-- /entsync:identity -->")


def add_identity_findings(json_path: Path, html_path: Path | None, feedback_path: Path,
                          findings: list[dict[str, Any]], school_name: str | None = None) -> None:
    """Add what matching found about a school's records (INE conflicts: the records were
    kept, each has its account) to its validation report (``identity`` in the JSON, a section
    of the HTML page) and rewrite its French page. Idempotent: a second call replaces the
    first one's findings."""
    e = html.escape
    report = json.loads(Path(json_path).read_text("utf-8"))
    report["identity"] = findings
    Path(json_path).write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str),
                               "utf-8")
    Path(feedback_path).write_text(render_school_feedback(report, school_name), "utf-8")
    if html_path is None or not Path(html_path).exists():
        return
    page = Path(html_path).read_text("utf-8")
    start, end = _IDENTITY_MARK
    if start in page:
        page = page[:page.index(start)] + page[page.index(end) + len(end):]
    rows = "".join(
        f"<tr><td>{e(str(f.get('file') or ''))}</td><td>{e(str(f.get('line') or ''))}</td>"
        f"<td>{e(str(f.get('element', '')))}</td><td>{e(str(f.get('rule', '')))}</td>"
        f"<td>{e(str(f.get('message', '')))}</td></tr>" for f in findings)
    section = (f"{start}<h2>Identity conflicts (records kept)</h2>"
               + (f"<table><thead><tr><th>file</th><th>line</th><th>element</th><th>rule</th>"
                  f"<th>message</th></tr></thead><tbody>{rows}</tbody></table>"
                  if findings else "<p>None.</p>") + end)
    at = page.rfind("</body>")
    page = page[:at] + section + page[at:] if at >= 0 else page + section
    Path(html_path).write_text(page, "utf-8")
