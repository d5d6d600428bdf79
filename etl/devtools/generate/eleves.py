"""The BEE_ELEVES writer: pupils streamed out, their STRUCTURES spooled and appended."""

from __future__ import annotations

import datetime
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from typing import IO

from etl.devtools.generate.records import _Pupil
from etl.devtools.generate.xmltext import ISO, _esc, _fr, _leaf, _siecle_header, _text, _upper


def _pupil_xml(p: _Pupil, uai: str, mef: str, export: datetime.date) -> str:
    i = "        "
    out = [f'      <ELEVE ELEVE_ID="{p.eleve_id}">\n']
    _leaf(out, i, "ID_NATIONAL", p.ine)
    out.append(f"{i}<ELENOET>{p.elenoet}</ELENOET>\n")
    out.append(f"{i}<ID_ELEVE_ETAB>{p.elenoet:05d}{uai[1:7]}</ID_ELEVE_ETAB>\n")
    out.append(f"{i}<NOM_DE_FAMILLE>{_esc(_upper(p.last))}</NOM_DE_FAMILLE>\n")
    if p.usage is not None:
        out.append(f"{i}<NOM_USAGE>{_esc(_upper(p.usage))}</NOM_USAGE>\n")
    out.append(f"{i}<PRENOM>{_esc(p.first)}</PRENOM>\n")
    _leaf(out, i, "PRENOM2", p.first2)
    out.append(
        f"{i}<DATE_NAISS>{_fr(p.birth)}</DATE_NAISS>\n"
        f"{i}<DOUBLEMENT>0</DOUBLEMENT>\n"
        f"{i}<CODE_PAYS>100</CODE_PAYS>\n"
        f"{i}<ACCEPTE_SMS>0</ACCEPTE_SMS>\n"
        f"{i}<DATE_MODIFICATION>{_fr(p.entry or export)}</DATE_MODIFICATION>\n"
        f"{i}<CODE_SEXE>{p.sex}</CODE_SEXE>\n"
        f"{i}<CODE_PAYS_NAT>100</CODE_PAYS_NAT>\n"
        f"{i}<CODE_MEF>{mef}</CODE_MEF>\n"
        f"{i}<CODE_REGIME>{p.regime}</CODE_REGIME>\n"
        f"{i}<CODE_STATUT>ST</CODE_STATUT>\n"
    )
    if p.entry is not None:
        out.append(f"{i}<DATE_ENTREE>{_fr(p.entry)}</DATE_ENTREE>\n")
    if p.left is not None:
        out.append(f"{i}<DATE_SORTIE>{_fr(p.left)}</DATE_SORTIE>\n")
        out.append(f"{i}<CODE_MOTIF_SORTIE>02</CODE_MOTIF_SORTIE>\n")
    _leaf(out, i, "MEL", p.mel)
    out.append(
        f"{i}<CODE_DEPARTEMENT_NAISS>0{uai[1:3]}</CODE_DEPARTEMENT_NAISS>\n"
        f"{i}<VILLE_NAISS></VILLE_NAISS>\n"
        f"{i}<ADHESION_TRANSPORT>0</ADHESION_TRANSPORT>\n"
        f"{i}<CODE_PROVENANCE>1</CODE_PROVENANCE>\n"
    )
    if p.previous is not None:
        out.append(
            f"{i}<SCOLARITE_AN_DERNIER>\n"
            f"{i}  <CODE_MEF>{p.previous[0]}</CODE_MEF>\n"
            f"{i}  <CODE_STRUCTURE>{_esc(p.previous[1])}</CODE_STRUCTURE>\n"
            f"{i}  <CODE_RNE>{uai}</CODE_RNE>\n"
            f"{i}</SCOLARITE_AN_DERNIER>\n"
        )
    out.append("      </ELEVE>\n")
    return "".join(out)


def _structures_xml(p: _Pupil) -> str:
    out = [f'      <STRUCTURES_ELEVE ELEVE_ID="{p.eleve_id}">\n']
    for code, kind in ((p.division, "D"), *((g, "G") for g in p.groups)):
        out.append(
            "        <STRUCTURE>\n"
            f"          <CODE_STRUCTURE>{_esc(code)}</CODE_STRUCTURE>\n"
            f"          <TYPE_STRUCTURE>{kind}</TYPE_STRUCTURE>\n"
            "        </STRUCTURE>\n"
        )
    out.append("      </STRUCTURES_ELEVE>\n")
    return "".join(out)


def _write_eleves(
    binary: IO[bytes],
    uai: str,
    year: int,
    when: datetime.datetime,
    pupils: Iterable[_Pupil],
    mefs: Sequence[str],
) -> int:
    """Stream BEE_ELEVES; STRUCTURES go to a spooled temp file and follow ELEVES. Returns count."""
    count = 0
    with (
        _text(binary, ISO) as out,
        tempfile.SpooledTemporaryFile(
            max_size=8 << 20, mode="w+", encoding="utf-8", newline="\n"
        ) as structures,
    ):
        out.write(_siecle_header("BEE_ELEVES", "3.0", uai, year, when))
        out.write("    <ELEVES>\n")
        for pupil in pupils:
            out.write(_pupil_xml(pupil, uai, mefs[pupil.level], when.date()))
            structures.write(_structures_xml(pupil))
            count += 1
        out.write("    </ELEVES>\n    <STRUCTURES>\n")
        structures.seek(0)
        shutil.copyfileobj(structures, out, 1 << 20)
        out.write(
            "    </STRUCTURES>\n    <BOURSES />\n    <ADRESSES />\n  </DONNEES>\n</BEE_ELEVES>\n"
        )
    return count
