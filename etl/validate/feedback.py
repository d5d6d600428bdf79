"""Academy feedback: per school, a short French report of the records the sync set aside.

Why: the fix is always in the school's own software (SIECLE, STS-web), never in the ENT. An
academy forwards this page to the school; for each rule it says what the problem means and
on which SIECLE or STS-web screen the school corrects it, then lists the file, line and XML
element of each record, with the record's SIECLE/STS number when there is one. It never
shows a name, a birth date, an address or an INE, only what the validation report holds
(keys and codes), and every value is HTML-escaped.

Input: the ``validation_<uai>.json`` that ``etl.validate.rules.write_validation_report`` writes
(``ValidationOutcome.as_dict``).
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


def _rows_table(rows: list[dict[str, Any]], count: bool = False) -> list[str]:
    """The records of one section: file, line, element, SIECLE/STS number (never a name)."""
    e = html.escape
    out = ["<table><tr><th>Fichier</th><th>Ligne</th><th>Enregistrement</th>"
           "<th>Référence</th>" + ("<th>Occurrences</th>" if count else "") + "</tr>"]
    for r in sorted(rows, key=lambda r: (str(r.get("file")), r.get("line") or 0)):
        el = str(r.get("element", ""))
        n = ""
        if count:
            m = re.search(r"\b([0-9]+) time\(s\)", str(r.get("message", "")))
            n = f"<td>{e(m.group(1) if m else '1')}</td>"
        out.append(f"<tr><td>{e(str(r.get('file', '')))}</td>"
                   f"<td>{e(str(r.get('line') or ''))}</td>"
                   f"<td>{e(_ELEMENT_LABEL.get(el, el))} (<code>{e(el)}</code>)</td>"
                   f"<td>{e(record_reference(str(r.get('message', ''))))}</td>{n}</tr>")
    out.append("</table>")
    return out


def render_school_feedback(report: dict[str, Any], school_name: str | None = None) -> str:
    """The HTML page (French) for one school's validation report."""
    e = html.escape
    uai = str(report.get("uai", ""))
    who = f"{school_name} ({uai})" if school_name else uai
    everything = list(report.get("rejected") or [])
    rejected = [r for r in everything if not is_cascade(r)]
    cascades = [r for r in everything if is_cascade(r)]
    warnings = list(report.get("warnings") or [])
    quarantine = dict(report.get("quarantine") or {})
    identity = list(report.get("identity") or [])  # kept records: ``add_identity_findings``
    p = ['<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8">',
         f"<title>Synchronisation ENT : retours pour {e(who)}</title>",
         "<style>body{font-family:sans-serif;max-width:60em;margin:1em auto}"
         "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:.2em .5em;"
         "text-align:left}.where{background:#eef5ff;padding:.4em}</style></head><body>",
         f"<h1>Synchronisation ENT : retours pour l'établissement {e(who)}</h1>"]
    if not everything and not quarantine and not warnings and not identity:
        p.append("<p>Aucun enregistrement écarté : rien à corriger.</p></body></html>")
        return "\n".join(p)
    if everything or quarantine or warnings:
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
                 "corrigé n'est pas déposé.</p><ul>")
        p += [f"<li><code>{e(str(f))}</code> : {e(str(why))}</li>"
              for f, why in sorted(quarantine.items())]
        p.append(f"</ul><p class=\"where\">Où corriger : {e(_EXPORT)}</p>")
    for adv, rows in _group(rejected).items():
        p.append(f"<h2>{e(adv.title)} ({len(rows)})</h2><p>{e(adv.meaning)}</p>"
                 f'<p class="where">Où corriger : {e(adv.where)}</p>')
        p += _rows_table(rows)
    by_rule: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for w in warnings:
        by_rule[str(w.get("rule", ""))].append(w)
    for rule, rows in sorted(by_rule.items()):
        adv = warning_advice(rule)
        p.append(f"<h2>Avertissement : {e(adv.title)} ({len(rows)})</h2>"
                 f"<p>{e(adv.meaning)}</p>"
                 f'<p class="where">Où corriger : {e(adv.where)}</p>')
        p += _rows_table(rows, count=rule == "unknown_element")
    if cascades:
        p.append(f"<h2>{e(_CASCADE.title)} ({len(cascades)})</h2><p>{e(_CASCADE.meaning)}</p>")
        p += _rows_table(cascades)
    p += _identity_section(identity)
    p.append("</body></html>")
    return "\n".join(p)


def _identity_section(findings: list[dict[str, Any]]) -> list[str]:
    """Records kept (each has its account) whose identity contradicts another record's."""
    if not findings:
        return []
    e = html.escape
    p = ["<h2>Identités à vérifier</h2><p>Ces élèves ont bien un compte ENT, mais leurs "
         "données d'identité en contredisent d'autres : à corriger pour que chacun garde "
         "l'accès à ses ressources.</p>"]
    for adv, rows in _group(findings).items():
        p.append(f"<h3>{e(adv.title)} ({len(rows)})</h3><p>{e(adv.meaning)}</p>"
                 f'<p class="where">Où corriger : {e(adv.where)}</p>')
        p.append("<table><tr><th>Fichier</th><th>Ligne</th><th>Enregistrement</th>"
                 "<th>Référence</th></tr>")
        for r in sorted(rows, key=lambda r: (str(r.get("file")), r.get("line") or 0)):
            el = str(r.get("element", ""))
            ref = _conflict_reference(r) or record_reference(str(r.get("message", "")))
            p.append(f"<tr><td>{e(str(r.get('file') or ''))}</td>"
                     f"<td>{e(str(r.get('line') or ''))}</td>"
                     f"<td>{e(_ELEMENT_LABEL.get(el, el))} (<code>{e(el)}</code>)</td>"
                     f"<td>{e(ref)}</td></tr>")
        p.append("</table>")
    return p


def write_school_feedback(validation_json: Path, out_dir: Path,
                          school_name: str | None = None) -> Path:
    """Write ``retours_<uai>.html`` for the school of a validation report; return its path."""
    report = json.loads(Path(validation_json).read_text("utf-8"))
    uai = re.sub(r"[^0-9A-Za-z]", "_", str(report.get("uai") or "inconnu"))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"retours_{uai}.html"
    path.write_text(render_school_feedback(report, school_name), "utf-8")
    return path


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
