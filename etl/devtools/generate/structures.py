"""The BEE_NOMENCLATURES (MEFs, subjects) and BEE_STRUCTURES (divisions, groups) writers."""

from __future__ import annotations

import datetime
from typing import IO

from etl.devtools.generate.catalog import _SUBJECTS
from etl.devtools.generate.records import _School
from etl.devtools.generate.xmltext import ISO, _attr, _esc, _siecle_header, _text


def _write_nomenclature(
    binary: IO[bytes], school: _School, year: int, when: datetime.datetime
) -> None:
    i = "        "
    with _text(binary, ISO) as out:
        out.write(_siecle_header("BEE_NOMENCLATURES", "3.1", school.uai, year, when))
        out.write("    <MEFS>\n")
        for level in school.levels:
            out.write(
                f'      <MEF CODE_MEF="{level.mef}">\n'
                f"{i}<FORMATION>{_esc(level.formation)}</FORMATION>\n"
                f"{i}<LIBELLE_LONG>{_esc(level.label)}</LIBELLE_LONG>\n"
                f"{i}<LIBELLE_EDITION>{_esc(level.edition)}</LIBELLE_EDITION>\n"
                f"{i}<MEF_RATTACHEMENT>{level.mef}</MEF_RATTACHEMENT>\n"
                f"{i}<CODE_MEFSTAT>{level.mefstat}</CODE_MEFSTAT>\n"
                "      </MEF>\n"
            )
        out.write("    </MEFS>\n    <MATIERES>\n")
        for code in school.subjects:
            s = _SUBJECTS[code]
            out.write(
                f'      <MATIERE CODE_MATIERE="{s.code}">\n'
                f"{i}<CODE_GESTION>{_esc(s.gestion)}</CODE_GESTION>\n"
                f"{i}<LIBELLE_COURT>{_esc(s.short)}</LIBELLE_COURT>\n"
                f"{i}<LIBELLE_LONG>{_esc(s.long)}</LIBELLE_LONG>\n"
                f"{i}<LIBELLE_EDITION>{_esc(s.long.capitalize())}</LIBELLE_EDITION>\n"
                "      </MATIERE>\n"
            )
        out.write("    </MATIERES>\n  </DONNEES>\n</BEE_NOMENCLATURES>\n")


def _write_structures(
    binary: IO[bytes], school: _School, year: int, when: datetime.datetime
) -> None:
    i = "        "
    with _text(binary, ISO) as out:
        out.write(_siecle_header("BEE_STRUCTURES", "3.0", school.uai, year, when))
        out.write("    <DIVISIONS>\n")
        for code, level in school.divisions:
            out.write(
                f'      <DIVISION CODE_STRUCTURE="{_attr(code)}">\n'
                f"{i}<LIBELLE_LONG>{_esc(level.label)} {_esc(code)}</LIBELLE_LONG>\n"
                f"{i}<MEFS_APPARTENANCE>\n{i}  <MEF_APPARTENANCE>\n"
                f"{i}    <CODE_MEF>{level.mef}</CODE_MEF>\n"
                f"{i}  </MEF_APPARTENANCE>\n{i}</MEFS_APPARTENANCE>\n"
                "      </DIVISION>\n"
            )
        out.write("    </DIVISIONS>\n    <GROUPES>\n")
        for group in school.groups:
            links = "".join(
                f"{i}  <DIVISION_APPARTENANCE>\n{i}    <CODE_STRUCTURE>{_esc(d)}</CODE_STRUCTURE>\n"
                f"{i}  </DIVISION_APPARTENANCE>\n"
                for d in group.divisions
            )
            out.write(
                f'      <GROUPE CODE_STRUCTURE="{_attr(group.code)}">\n'
                f"{i}<LIBELLE_LONG>{_esc(group.label)}</LIBELLE_LONG>\n"
                f"{i}<DIVISIONS_APPARTENANCE>\n{links}{i}</DIVISIONS_APPARTENANCE>\n"
                "      </GROUPE>\n"
            )
        out.write("    </GROUPES>\n  </DONNEES>\n</BEE_STRUCTURES>\n")
