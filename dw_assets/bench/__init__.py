"""`dw bench`: every stage measured against its physical limit or the bare library, median of several runs."""
