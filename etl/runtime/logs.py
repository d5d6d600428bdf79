"""Libraries whose INFO lines say nothing to the ops team: WARNING and above only.

great-expectations' "ephemeral docs site" and Alembic's "Context impl" lines used to fill every
task log and every ``entsync`` run. The module great-expectations logs from sets its own logger
to INFO when imported (after this may have run), so a filter on those loggers drops the lines
whatever their level. Used by the CLI and by the DAGs' shared module."""

from __future__ import annotations

import logging

#: the CLI's log line (its reader processes' too): no record's values, ever
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

QUIET_LOGGERS = ("great_expectations", "great_expectations.data_context.types.base",
                 "alembic", "alembic.runtime.migration", "py.warnings")


def _below_warning(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


def quiet_loggers() -> None:
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(logging.WARNING)
        if _below_warning not in logger.filters:
            logger.addFilter(_below_warning)
