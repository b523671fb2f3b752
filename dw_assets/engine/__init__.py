"""The Spark engine (DW_ENGINE=spark): the apply step's statements over Spark Connect (Sail locally, Databricks)."""
