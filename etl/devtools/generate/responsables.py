"""The BEE_RESPONSABLES writer: a school's guardians, their links to pupils and addresses."""

from __future__ import annotations

import datetime
import random
from collections.abc import Sequence
from typing import IO

from etl.devtools.generate.records import _Family, _School, _SchoolDraws
from etl.devtools.generate.xmltext import ISO, _esc, _leaf, _siecle_header, _text, _upper


def _draw_guardian_ids(
    rng: random.Random, school: _School, families: Sequence[_Family]
) -> tuple[list[int], dict[int, list[int]], dict[int, list[int]]]:
    """Per-school database ids: each family met in this school gets its own PERSONNE_IDs.

    Returns the families in the order the school meets them, their PERSONNE_IDs and their
    ADRESSE_IDs (one draw stream, before anything is written).
    """
    person_ids: dict[int, list[int]] = {}
    address_ids: dict[int, list[int]] = {}
    next_person = rng.randint(100000, 900000)
    next_address = rng.randint(100000, 900000)
    family_order: list[int] = []
    for pupil in school.pupils:
        if pupil.family not in person_ids:
            family_order.append(pupil.family)
            ids: list[int] = []
            addresses: list[int] = []
            seen: dict[tuple[str, str, str, str], int] = {}
            for guardian in families[pupil.family].guardians:
                next_person += rng.randint(1, 4)
                ids.append(next_person)
                if guardian.address not in seen:
                    next_address += rng.randint(1, 3)
                    seen[guardian.address] = next_address
                addresses.append(seen[guardian.address])
            person_ids[pupil.family] = ids
            address_ids[pupil.family] = addresses
    return family_order, person_ids, address_ids


def _write_responsables(
    binary: IO[bytes],
    school: _School,
    families: Sequence[_Family],
    draws: _SchoolDraws,
    year: int,
    when: datetime.datetime,
) -> int:
    """Stream BEE_RESPONSABLES for one school. Returns the number of PERSONNE written."""
    family_order = draws.family_order
    person_ids, address_ids = draws.person_ids, draws.address_ids
    version = "2.1" if school.resp_legal else "3.0"
    count = 0
    with _text(binary, ISO) as out:
        out.write(_siecle_header("BEE_RESPONSABLES", version, school.uai, year, when))
        out.write("    <PERSONNES>\n")
        i = "        "
        for family_index in family_order:
            family = families[family_index]
            for g, pid, aid in zip(
                family.guardians, person_ids[family_index], address_ids[family_index], strict=True
            ):
                rows = [
                    f'      <PERSONNE PERSONNE_ID="{pid}">\n',
                    f"{i}<LC_CIVILITE>{g.civility}</LC_CIVILITE>\n",
                    f"{i}<LL_CIVILITE>{'MADAME' if g.civility == 'MME' else 'MONSIEUR'}"
                    "</LL_CIVILITE>\n",
                    f"{i}<NOM_DE_FAMILLE>{_esc(_upper(g.last))}</NOM_DE_FAMILLE>\n",
                ]
                if g.usage is not None:
                    rows.append(f"{i}<NOM_USAGE>{_esc(_upper(g.usage))}</NOM_USAGE>\n")
                rows.append(f"{i}<PRENOM>{_esc(g.first)}</PRENOM>\n")
                _leaf(rows, i, "TEL_PERSONNEL", g.home)
                _leaf(rows, i, "TEL_PORTABLE", g.mobile)
                rows.append(f"{i}<ACCEPTE_SMS>{1 if g.mobile else 0}</ACCEPTE_SMS>\n")
                rows.append(f"{i}<TEL_PROFESSIONNEL></TEL_PROFESSIONNEL>\n")
                _leaf(rows, i, "MEL", g.email)
                rows.append(f"{i}<ADRESSE_ID>{aid}</ADRESSE_ID>\n")
                rows.append(f"{i}<CODE_PROFESSION>{g.profession}</CODE_PROFESSION>\n")
                rows.append("      </PERSONNE>\n")
                out.write("".join(rows))
                count += 1
        out.write("    </PERSONNES>\n    <RESPONSABLES>\n")
        for pupil in school.pupils:
            family = families[pupil.family]
            legal_rank = 0
            for g, pid in zip(family.guardians, person_ids[pupil.family], strict=True):
                if g.legal:
                    legal_rank += 1
                if school.resp_legal:
                    level = f"{i}<RESP_LEGAL>{min(legal_rank, 2) if g.legal else 0}</RESP_LEGAL>\n"
                else:
                    level = (
                        f"{i}<NIVEAU_RESPONSABILITE>{1 if g.legal else 3}</NIVEAU_RESPONSABILITE>\n"
                    )
                hosts = "true" if g.hosts else "false"
                priority = "true" if g.priority else "false"
                out.write(
                    "      <RESPONSABLE_ELEVE>\n"
                    f"{i}<ELEVE_ID>{pupil.eleve_id}</ELEVE_ID>\n"
                    f"{i}<PERSONNE_ID>{pid}</PERSONNE_ID>\n"
                    f"{level}"
                    f"{i}<CODE_PARENTE>{g.parente}</CODE_PARENTE>\n"
                    f"{i}<PAIE_FRAIS_SCOLAIRES>{1 if g.pays else 0}</PAIE_FRAIS_SCOLAIRES>\n"
                    f"{i}<HEBERGE_ELEVE>{hosts}</HEBERGE_ELEVE>\n"
                    f"{i}<A_CONTACTER_EN_PRIORITE>{priority}</A_CONTACTER_EN_PRIORITE>\n"
                    "      </RESPONSABLE_ELEVE>\n"
                )
        out.write("    </RESPONSABLES>\n    <ADRESSES>\n")
        for family_index in family_order:
            family = families[family_index]
            written: set[int] = set()
            for g, aid in zip(family.guardians, address_ids[family_index], strict=True):
                if aid in written:
                    continue
                written.add(aid)
                line1, postcode, insee, label = g.address
                out.write(
                    f'      <ADRESSE ADRESSE_ID="{aid}">\n'
                    f"{i}<LIGNE1_ADRESSE>{_esc(line1)}</LIGNE1_ADRESSE>\n"
                    f"{i}<LIGNE2_ADRESSE></LIGNE2_ADRESSE>\n"
                    f"{i}<CODE_POSTAL>{postcode}</CODE_POSTAL>\n"
                    f"{i}<CODE_PAYS>100</CODE_PAYS>\n"
                    f"{i}<CODE_COMMUNE_INSEE>{insee}</CODE_COMMUNE_INSEE>\n"
                    f"{i}<LL_PAYS>FRANCE</LL_PAYS>\n"
                    f"{i}<CODE_DEPARTEMENT>0{postcode[:2]}</CODE_DEPARTEMENT>\n"
                    f"{i}<LIBELLE_POSTAL>{_esc(label)}</LIBELLE_POSTAL>\n"
                    "      </ADRESSE>\n"
                )
        out.write("    </ADRESSES>\n  </DONNEES>\n</BEE_RESPONSABLES>\n")
    return count
