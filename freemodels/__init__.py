"""Building blocks of Free Model Discovery: settings, the OpenRouter client, records, the failure
taxonomy, storage and the sandbox server. Nothing here imports Prefect."""

__version__ = "0.1.0"
