"""Directory entries -> GAR records (pure): who is exported, with which schools and profiles."""

from __future__ import annotations

from etl.gar.read import (
    GarPerson,
    designated_members,
    group_code,
    person_mef,
    person_records,
    resp_aff,
)

BASE = "dc=ent,dc=test"
A, B, C = "0510001Z", "0080002Y", "0100003X"
EXPORTED = {A: "A", B: "B"}


def sdn(uai: str) -> str:
    return f"ENTStructureUAI={uai},ou=structures,{BASE}"


def teacher(**over: list[str]) -> dict[str, list[str]]:
    attrs = {
        "uid": ["t1"], "sn": ["LEBLANC"], "givenName": ["Henri"], "entSyncStatus": ["ACTIVE"],
        "ENTPersonProfils": ["National_ENS"], "ENTPersonStructRattach": [sdn(A)],
        "ENTPersonJointure": [f"AC-REIMS$STS${A}$9001", f"AC-REIMS$STS${B}$7001"],
        "ENTPersonFonctions": [f"{sdn(A)}$ENS", f"{sdn(B)}$DOC"],
        "ENTAuxEnsClasses": [f"{sdn(A)}$3A", f"{sdn(B)}$6A"],
        "ENTPersonDateNaissance": ["12/03/1975"], "mail": ["h@ac.fr"],
    }
    attrs.update(over)
    return attrs


def test_a_teacher_in_two_schools_is_one_record_with_each_school_and_its_profile() -> None:
    [p] = person_records("uid=t1", "t1", teacher(), EXPORTED, BASE)
    assert not p.pupil and p.schools == (B, A) == tuple(sorted((A, B)))
    # the function in each school decides the profile there (DOC in B)
    assert p.profiles == ((B, "National_doc"), (A, "National_ens"))
    assert p.main == A and p.mails == ("h@ac.fr",)


def test_only_exported_schools_and_active_accounts() -> None:
    assert person_records("d", "t1", teacher(entSyncStatus=["DISABLED"]), EXPORTED, BASE) == []
    assert person_records("d", "t1", teacher(), {C: "C"}, BASE) == []
    [p] = person_records("d", "t1", teacher(), {B: "B"}, BASE)
    assert p.schools == (B,) and p.main is None  # the main school is not exported


def test_guardians_are_never_exported_and_pupils_keep_their_mef() -> None:
    guardian = {"uid": ["g"], "entSyncStatus": ["ACTIVE"], "ENTPersonProfils": ["National_TUT"],
                "ENTPersonStructRattach": [sdn(A)], "sn": ["X"], "givenName": ["Y"]}
    assert person_records("d", "g", guardian, EXPORTED, BASE) == []
    pupil = {"uid": ["e"], "entSyncStatus": ["ACTIVE"], "ENTPersonProfils": ["National_ELV"],
             "ENTPersonStructRattach": [sdn(A)], "sn": ["X"], "givenName": ["Y"],
             "ENTEleveMEF": ["10310019110"], "ENTEleveClasses": [f"{sdn(A)}$3A"],
             "mail": ["parent@example.org"]}
    [p] = person_records("d", "e", pupil, EXPORTED, BASE)
    assert p.pupil and p.profiles == ((A, "National_elv"),) and p.mails == ()
    m = person_mef(p)
    assert m is not None and (m.uai, m.uid, m.mef) == (A, "e", "10310019110")


def test_staff_without_function_take_their_directory_profile() -> None:
    [p] = person_records("d", "t1", teacher(ENTPersonFonctions=[],
                                            ENTPersonProfils=["National_EVS"]), EXPORTED, BASE)
    assert {prof for _, prof in p.profiles} == {"National_evs"}


def staff(profiles: tuple[tuple[str, str], ...]) -> GarPerson:
    return GarPerson("u", "uid=u", False, "N", "P", profiles, tuple(sorted({u for u, _ in
                                                                          profiles})),
                     mails=("m@x",))


def test_resp_aff_heads_by_default_and_the_designated_group_members() -> None:
    head = staff(((A, "National_dir"), (B, "National_ens")))
    r = resp_aff(head, ("DIR",), {})
    assert r is not None and r.schools == (A,)
    assert resp_aff(staff(((A, "National_ens"),)), ("DIR",), {}) is None
    designated = designated_members({B: [f"uid=u,ou=people,{BASE}", f"uid=nobody,ou=people,"
                                         f"{BASE}", "cn=other,dc=x"]}, BASE)
    assert designated == {"u": {B}}
    r = resp_aff(head, ("DIR",), designated)
    assert r is not None and r.schools == (B, A)  # sorted UAIs
    # a group of a school the person is not exported in gives nothing there
    assert resp_aff(staff(((A, "National_ens"),)), (), {"u": {B}}) is None


def test_a_group_apart_keeps_its_own_code() -> None:
    assert group_code("class", ["3A"]) == "3A"
    assert group_code("group", ["3A", "3A (groupe)"]) == "3A (groupe)"
    assert group_code("group", ["3LV2"]) == "3LV2"
