"""The triage console: people finish what the router could not decide, and their decisions teach it.

Served under ``/console/`` on the API's HTTP server with its own sign-in (see ``app``). Pure parts:
``passwords`` (hashes), ``session`` (signed cookies, CSRF tokens), ``decide`` (a person's decision as
the events it publishes, and who wins a race), ``inbox`` (the bounded index and its filters),
``overview`` (figures and charts from the router's metrics). I/O: ``reader`` and ``app``.
"""
