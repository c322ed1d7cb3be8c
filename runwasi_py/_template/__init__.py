"""The pod daemon template: a warm process that forks pod daemons for ``start`` (docs/template.md).

``client.py`` is ``start``'s side (standard library only: it is on the start path);
``serve.py`` is the template process.
"""
