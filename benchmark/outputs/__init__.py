"""Floor 4, the outputs: the paper's tables, figures and the report, built from the CSV files, ``provenance.json``
and the stores alone; no model is loaded."""
