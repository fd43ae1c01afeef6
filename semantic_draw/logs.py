"""Quiet for what does not concern a user of this package: transformers announces, at every start, that image
processors (which diffusers' pipelines import for their safety checkers, and which this package never uses) fall
back to PIL without torchvision. That one notice is dropped; every other message stays."""
from __future__ import annotations

import logging


class _NotOurs(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_NotOurs())
