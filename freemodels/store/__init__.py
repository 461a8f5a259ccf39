"""Storage internals: the run folder on disk (:mod:`.files`), the DuckDB file (:mod:`.db`) and the
read queries (:mod:`.queries`). Import the public names from :mod:`freemodels.storage`."""
