"""The AAF reader: academy feed files (``ficAlimMENESR``) into records, then into the
canonical tables of each school.

- ``records``: ``iter_aaf_records`` streams one file part into ``AafRecord``s (add, modify,
  delete requests), malformed requests reported as ``RecordRejected``;
- ``tables``: ``aaf_school_tables`` turns the current state of an academy's records (the
  caller applied Complets and Deltas) into one ``ReadResult`` per school, as the SIECLE and
  STS-web readers produce them.
"""

from etl.read.aaf.records import PERSON_CATEGORIES, REQUESTS, ROOT, AafRecord, iter_aaf_records
from etl.read.aaf.tables import AafSchools, aaf_school_tables

__all__ = ["PERSON_CATEGORIES", "REQUESTS", "ROOT", "AafRecord", "AafSchools",
           "aaf_school_tables", "iter_aaf_records"]
